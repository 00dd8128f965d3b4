//! Shared helpers for the cross-process tests in `tests/tests/`.
//!
//! Everything runs as real processes on loopback: the `hashgrid-coordinator`, `hashgrid` and
//! `hashgrid-node` binaries that `cargo build --workspace` puts next to the test executables
//! (checked to exist and to be newer than their sources).
//! A `Site` is one test's temporary directory (the coordinator's data dir and every process's
//! log); a `Process` is a child that is killed when dropped, so a failing test never leaves
//! processes behind (and prints the tail of their logs to help). Every wait has a deadline.
//!
//! [`pool`] is a test Stratum V1 pool (real TCP) that verifies every share with its own code.
//! [`postgres`] starts a throwaway PostgreSQL cluster: with `HASHGRID_TEST_STORE=postgres`
//! every `Site`'s coordinator keeps its records there instead of SQLite (`Database` reads
//! either).

pub mod pool;
pub mod postgres;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The longest any one `hashgrid` or `hashgrid-node` command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a coordinator may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two looks at the farm while waiting for something.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The path of a workspace binary: next to the test executable's `deps` directory. Checked
/// once per test process: it must exist and be newer than every source it was built from.
pub fn binary(name: &str) -> PathBuf {
    static RESOLVED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut resolved = RESOLVED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    resolved.entry(name.to_string()).or_insert_with(|| locate_binary(name)).clone()
}

fn locate_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: build the workspace binaries first with `cargo build --workspace`",
        path.display()
    );
    if let Some(source) = newer_source(&path, &dir.join(format!("{name}.d"))) {
        // Only a hint: cargo also decides by content hashes of some inputs, so a touched but
        // unchanged file makes this fire although the binary is current.
        eprintln!(
            "warning: {} may be older than {}, one of its sources; if a test fails, run `cargo build --workspace`",
            path.display(),
            source.display()
        );
    }
    path
}

/// A source file of `binary` modified after it was built, from the dep-info file cargo writes
/// next to it (`target/debug/NAME.d`: "BINARY: SOURCE SOURCE ..."), if there is one.
fn newer_source(binary: &Path, dep_info: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let text = std::fs::read_to_string(dep_info).ok()?;
    let (_, sources) = text.lines().next()?.split_once(": ")?;
    // Spaces inside paths are escaped as "\ ".
    let sources = sources.replace("\\ ", "\u{0}");
    sources
        .split_whitespace()
        .map(|s| PathBuf::from(s.replace('\u{0}', " ")))
        .find(|source| std::fs::metadata(source).and_then(|m| m.modified()).is_ok_and(|modified| modified > built))
}

/// Repeats `probe` every `POLL_INTERVAL` until it yields a value; panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A finished command: exit code and what it printed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics unless the command succeeded; returns its stdout.
    pub fn expect_success(self, what: &str) -> String {
        assert_eq!(self.code, Some(0), "{what} failed: {self:#?}");
        self.stdout
    }

    /// Asserts the documented failure shape of every hashgrid binary: exit code 2 and exactly
    /// one line on stderr, no panic; returns that line.
    pub fn expect_one_line_error(&self, what: &str) -> String {
        assert_eq!(self.code, Some(2), "{what}: expected exit code 2: {self:#?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{what}: panicked: {self:#?}"
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line on stderr: {self:#?}");
        lines[0].to_string()
    }
}

/// Runs `cmd` to completion, killing it and panicking if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `hashgrid-node ARGS` to completion.
///
/// Commands that enumerate GPU adapters load the system's Vulkan drivers, and Mesa's window
/// system layer prints "error: XDG_RUNTIME_DIR is invalid or not set" to stderr when that
/// variable is missing (as it is in bare CI containers, unlike a login session). That line
/// is the environment's, not the node's, so the command gets a private runtime dir.
pub fn node_command(args: &[&str]) -> Outcome {
    let runtime_dir = tempfile::tempdir().expect("a runtime dir");
    let mut cmd = Command::new(binary("hashgrid-node"));
    cmd.args(args).env("RUST_LOG", "warn").env("XDG_RUNTIME_DIR", runtime_dir.path());
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with its stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Process {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Process { name: name.to_string(), child, log: log.to_path_buf() }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `patience` for it to exit; its exit code (`None`: it did
    /// not exit in time, or a signal ended it).
    pub fn terminate(&mut self, patience: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last lines of its stderr log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- last lines of {} ({}) ----\n{}", self.name, self.log.display(), self.log_tail(40));
        }
    }
}

/// One test's temporary directory: the coordinator's data dir and the processes' logs.
/// Declare it first in a test so it is removed after every process in it is gone.
#[derive(Debug)]
pub struct Site {
    dir: tempfile::TempDir,
    /// The store its coordinators run on (`HASHGRID_TEST_STORE`).
    pub store: crate::postgres::TestStore,
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

impl Site {
    /// A site on the store `HASHGRID_TEST_STORE` names (SQLite by default).
    pub fn new() -> Site {
        Site::with_store(crate::postgres::TestStore::from_env())
    }

    pub fn with_store(store: crate::postgres::TestStore) -> Site {
        let dir = tempfile::Builder::new().prefix("hashgrid-test-").tempdir().expect("a temporary directory");
        Site { dir, store }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The coordinator's data dir (created by the coordinator on first start).
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A log file for the process called `name`, not yet used by another process.
    pub fn log_file(&self, name: &str) -> PathBuf {
        (0..).map(|i| self.path().join(format!("{name}.{i}.log"))).find(|p| !p.exists()).expect("a free name")
    }

    /// Starts `hashgrid-coordinator serve` on this site's data dir, listening on `listen`
    /// (`127.0.0.1:0` for a free port).
    pub fn start_coordinator(&self, listen: &str, policy: &str) -> Coordinator {
        self.start_coordinator_with(listen, policy, &["--failover-after", "3s"])
    }

    /// `start_coordinator` with other `serve` flags (`--failover-after` among them).
    pub fn start_coordinator_with(&self, listen: &str, policy: &str, flags: &[&str]) -> Coordinator {
        Coordinator::start(self, &binary("hashgrid-coordinator"), listen, policy, flags)
    }

    /// `start_coordinator_with` running another build of `hashgrid-coordinator` (an older
    /// one, to measure a change).
    pub fn start_coordinator_binary(&self, binary: &Path, listen: &str, policy: &str, flags: &[&str]) -> Coordinator {
        Coordinator::start(self, binary, listen, policy, flags)
    }

    /// Starts `hashgrid-node run` for `coordinator`: one CPU thread, warnings only.
    pub fn start_node(&self, coordinator: &Coordinator, name: &str) -> Process {
        self.start_node_with(coordinator, name, &[])
    }

    /// `start_node` with more `run` flags (`--standby`, `--announce-rate`).
    pub fn start_node_with(&self, coordinator: &Coordinator, name: &str, flags: &[&str]) -> Process {
        let mut cmd = self.node_run(coordinator, name, flags);
        cmd.stdout(Stdio::null());
        Process::spawn(name, cmd, &self.log_file(name))
    }

    /// `hashgrid-node run` for `coordinator` with this site's certificate and token, one CPU
    /// thread, warnings only, and `flags`.
    pub fn node_run(&self, coordinator: &Coordinator, name: &str, flags: &[&str]) -> Command {
        let data = self.data_dir();
        let mut cmd = Command::new(binary("hashgrid-node"));
        cmd.arg("run")
            .arg("--coordinator")
            .arg(coordinator.addr.to_string())
            .arg("--ca")
            .arg(data.join("cert.pem"))
            .arg("--token-file")
            .arg(data.join("node.token"))
            .args(["--name", name, "--backend", "cpu", "--threads", "1"])
            .args(flags)
            .env("RUST_LOG", "warn");
        cmd
    }
}

/// A running `hashgrid-coordinator serve`.
#[derive(Debug)]
pub struct Coordinator {
    /// The address it printed ("listening on ADDR").
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The HTTP address it printed ("http on ADDR"), when started with `--http`.
    pub http: Option<SocketAddr>,
    /// The store it runs on.
    pub store: crate::postgres::TestStore,
    /// The Stratum address it printed ("stratum on ADDR"), when started with `--stratum`.
    pub stratum: Option<SocketAddr>,
    /// Its `stratum+ssl://` address ("stratum+ssl on ADDR"), when started with `--stratum-tls`.
    pub stratum_tls: Option<SocketAddr>,
    process: Process,
}

/// A `hashgrid-coordinator serve` started but not yet listening: a standby waits for the lease.
#[derive(Debug)]
pub struct Starting {
    process: Process,
    lines: mpsc::Receiver<String>,
    data_dir: PathBuf,
    http: bool,
    stratum: bool,
    stratum_tls: bool,
    store: crate::postgres::TestStore,
}

impl Starting {
    /// Waits until it listens (at most `timeout`).
    pub fn listening(self, timeout: Duration) -> Coordinator {
        let deadline = Instant::now() + timeout;
        let addr = loop {
            match self.lines.recv_timeout(Duration::from_millis(10)) {
                Ok(line) => {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        break addr
                            .trim()
                            .parse::<SocketAddr>()
                            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the coordinator exited before listening:\n{}", self.process.log_tail(20))
                }
            }
            assert!(Instant::now() < deadline, "the coordinator did not start within {timeout:?}");
        };
        let stratum = self.stratum.then(|| printed_addr(&self.lines, "stratum on ", "the coordinator", &self.process));
        let stratum_tls =
            self.stratum_tls.then(|| printed_addr(&self.lines, "stratum+ssl on ", "the coordinator", &self.process));
        let http = self.http.then(|| printed_http_addr(&self.lines, "the coordinator", &self.process));
        let Starting { process, data_dir, store, .. } = self;
        let coordinator = Coordinator { addr, data_dir, http, stratum, stratum_tls, store, process };
        wait_for("the coordinator's certificate and tokens", START_TIMEOUT, || {
            ["cert.pem", "key.pem", "node.token", "admin.token"]
                .iter()
                .all(|f| coordinator.data_dir.join(f).is_file())
                .then_some(())
        });
        coordinator
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl Site {
    /// Starts `hashgrid-coordinator serve` (as `start_coordinator_with`) without waiting for
    /// it to listen.
    pub fn spawn_coordinator(&self, listen: &str, policy: &str, flags: &[&str]) -> Starting {
        Coordinator::spawn(self, &binary("hashgrid-coordinator"), listen, policy, flags)
    }
}

impl Coordinator {
    fn start(site: &Site, binary: &Path, listen: &str, policy: &str, flags: &[&str]) -> Coordinator {
        Coordinator::spawn(site, binary, listen, policy, flags).listening(START_TIMEOUT)
    }

    fn spawn(site: &Site, binary: &Path, listen: &str, policy: &str, flags: &[&str]) -> Starting {
        let data_dir = site.data_dir();
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", listen, "--policy", policy])
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped());
        // Only named for PostgreSQL: older builds (tests/tests/upgrade.rs) know no --store.
        if let crate::postgres::TestStore::Postgres(url) = &site.store {
            cmd.args(["--store", url]);
        }
        let mut process = Process::spawn("coordinator", cmd, &site.log_file("coordinator"));
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        // Reads stdout to its end, so the coordinator never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Starting {
            process,
            lines,
            data_dir,
            http: flags.contains(&"--http"),
            stratum: flags.contains(&"--stratum"),
            stratum_tls: flags.contains(&"--stratum-tls"),
            store: site.store.clone(),
        }
    }

    /// The operator CLI, pointed at this coordinator with its certificate and admin token.
    pub fn operator(&self) -> Operator {
        Operator { addr: self.addr, ca: self.data_dir.join("cert.pem"), token_file: self.data_dir.join("admin.token") }
    }

    /// The coordinator's database.
    pub fn database(&self) -> Database {
        match &self.store {
            crate::postgres::TestStore::Sqlite => Database::Sqlite(self.data_dir.join("hashgrid.db")),
            crate::postgres::TestStore::Postgres(url) => Database::Postgres(url.clone()),
        }
    }

    /// `kill -9`: no drain, no flush.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then its exit code once it has drained and exited (see `Process::terminate`).
    pub fn terminate(&mut self, patience: Duration) -> Option<i32> {
        self.process.terminate(patience)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Its process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Its resident memory (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
    }

    /// Sends `signal` (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// Waits up to `patience` for it to exit on its own: its exit code and its log's tail.
    pub fn exited(&mut self, patience: Duration) -> Option<(Option<i32>, String)> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Some((status.code(), self.process.log_tail(10)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The `hashgrid` operator CLI with its connection flags.
#[derive(Debug, Clone)]
pub struct Operator {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub token_file: PathBuf,
}

impl Operator {
    /// Runs `hashgrid --coordinator ADDR --ca CA --token-file TOKEN ARGS`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_within(args, COMMAND_TIMEOUT)
    }

    /// `run`, with a safety net other than `COMMAND_TIMEOUT` (for a command whose work grows
    /// with the test's data, not a performance bound).
    pub fn run_within(&self, args: &[&str], timeout: Duration) -> Outcome {
        let mut cmd = Command::new(binary("hashgrid"));
        cmd.arg("--coordinator")
            .arg(self.addr.to_string())
            .arg("--ca")
            .arg(&self.ca)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args);
        run_with_timeout(cmd, timeout)
    }

    /// `account add NAME --standard AMOUNT --order N`.
    pub fn add_account(&self, name: &str, standard: &str, order: i64) {
        let out = self.run(&["account", "add", name, "--standard", standard, "--order", &order.to_string()]);
        out.expect_success(&format!("account add {name}"));
    }

    /// `status --json`.
    pub fn status(&self) -> Status {
        let out = self.run(&["status", "--json"]).expect_success("status --json");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not a status ({e}): {out}"))
    }

    /// `account list --json`.
    pub fn accounts(&self) -> Vec<AccountRow> {
        let out = self.run(&["account", "list", "--json"]).expect_success("account list --json");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("account list --json is not a list ({e}): {out}"))
    }

    /// `node list --json`.
    pub fn nodes(&self) -> Vec<NodeRow> {
        let out = self.run(&["node", "list", "--json"]).expect_success("node list --json");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("node list --json is not a list ({e}): {out}"))
    }

    /// `ledger show --since SINCE --json`: every entry from `since` on (every page).
    pub fn ledger(&self, since: u64) -> Vec<LedgerRow> {
        let since = since.to_string();
        let out = self.run(&["ledger", "show", "--since", &since, "--json"]).expect_success("ledger show");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ledger show --json is not a list ({e}): {out}"))
    }

    /// `account list --json` once two reads `POLL_INTERVAL * 3` apart agree: no share is
    /// still being credited. Call after the nodes are stopped.
    pub fn settled_accounts(&self) -> Vec<AccountRow> {
        let mut last = self.accounts();
        wait_for("the credited totals to settle", Duration::from_secs(10), || {
            std::thread::sleep(POLL_INTERVAL * 3);
            let now = self.accounts();
            let settled = now == last;
            last = now;
            settled.then(|| last.clone())
        })
    }
}

/// `status --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    pub policy: String,
    pub accounts: Vec<AccountRow>,
    pub nodes: Vec<NodeRow>,
}

impl Status {
    pub fn account(&self, name: &str) -> &AccountRow {
        self.accounts.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no account {name} in {self:#?}"))
    }

    /// Nodes the coordinator counts as active.
    pub fn active_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.state == "active").count()
    }

    pub fn all_up_to_standard(&self) -> bool {
        self.accounts.iter().all(|a| a.up_to_standard)
    }
}

/// One account in `status --json` and `account list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountRow {
    pub name: String,
    pub order: i64,
    pub standard: u128,
    pub delivered: u128,
    pub up_to_standard: bool,
    pub shares: u64,
}

/// One node in `status --json` and `node list --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub state: String,
    pub account: Option<String>,
    pub hashrate: f64,
    pub chain: Option<String>,
    pub accepted: u64,
    pub rejected: u64,
}

/// One entry of `ledger show --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LedgerRow {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Milliseconds since the Unix epoch, as the coordinator stamps ledger entries.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// What the database holds for one account: its stored totals and the receipts behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredAccount {
    /// `accounts.delivered`.
    pub delivered: u128,
    /// `accounts.shares`.
    pub shares: u64,
    /// Rows in `shares` for the account's current period.
    pub share_rows: u64,
    /// Sum of those rows' `work`.
    pub share_work: u128,
}

/// A coordinator's database, SQLite or PostgreSQL, for tests that look behind the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// Its URL.
    Postgres(String),
}

impl Database {
    /// The rows of `sql` (SQL both databases read alike), every column as text (`CAST(x AS
    /// TEXT)` where it is not) or NULL. SQLite is opened read-only (the coordinator may still be
    /// running; the database is in WAL mode).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Database::Sqlite(path) => {
                use rusqlite::{Connection, OpenFlags};
                let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .unwrap_or_else(|e| panic!("cannot open {} read-only: {e}", path.display()));
                conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let columns = stmt.column_count();
                stmt.query_map([], |r| (0..columns).map(|i| r.get::<_, Option<String>>(i)).collect())
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Database::Postgres(url) => {
                let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("the test database");
                let rows = client.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
            }
        }
    }

    /// Runs one statement; the rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("the test database");
                conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
                conn.execute(sql, []).unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            Database::Postgres(url) => {
                let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("the test database");
                client.execute(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// The coordinator's `--store` for it, given its data dir.
    pub fn store_flag(&self) -> &str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(url) => url,
        }
    }
}

/// Reads every account's totals and receipts from the coordinator's database.
pub fn read_accounts(database: &Database) -> BTreeMap<String, StoredAccount> {
    let amount = |what: &str, text: Option<String>| -> u128 {
        let text = text.unwrap_or_else(|| panic!("{what} is NULL"));
        text.parse().unwrap_or_else(|e| panic!("{what} {text:?} is not a decimal amount: {e}"))
    };
    let mut ledgers = BTreeMap::new();
    for row in database.rows("SELECT name, delivered, CAST(shares AS TEXT) FROM accounts") {
        let [name, delivered, shares] = <[Option<String>; 3]>::try_from(row).expect("three columns");
        let ledger = StoredAccount {
            delivered: amount("accounts.delivered", delivered),
            shares: amount("accounts.shares", shares) as u64,
            ..StoredAccount::default()
        };
        ledgers.insert(name.expect("accounts.name"), ledger);
    }
    // `work` is a TEXT decimal (a u128 does not fit SQLite's integers): summed here.
    let shares = database.rows(
        "SELECT s.account, s.work FROM shares s
         JOIN accounts a ON a.name = s.account AND a.period_start_ms = s.period_start_ms",
    );
    for row in shares {
        let [account, work] = <[Option<String>; 2]>::try_from(row).expect("two columns");
        let account = account.expect("shares.account");
        let ledger = ledgers.get_mut(&account).unwrap_or_else(|| panic!("share for unknown account {account}"));
        ledger.share_rows += 1;
        ledger.share_work += amount("shares.work", work);
    }
    ledgers
}

/// Asserts that the credit is exact: for every account, the database's delivered total is
/// the sum of the work of its accepted shares, and equals what the CLI reports.
pub fn assert_credit_matches_receipts(database: &Database, reported: &[AccountRow]) {
    let ledgers = read_accounts(database);
    assert_eq!(ledgers.len(), reported.len(), "accounts in the database {ledgers:#?} vs reported {reported:#?}");
    for account in reported {
        let ledger = ledgers.get(&account.name).unwrap_or_else(|| panic!("{} missing from the database", account.name));
        assert_eq!(ledger.share_work, ledger.delivered, "{}: sum of share work vs stored delivered", account.name);
        assert_eq!(ledger.share_rows, ledger.shares, "{}: share rows vs stored share count", account.name);
        assert_eq!(ledger.delivered, account.delivered, "{}: stored vs reported delivered", account.name);
        assert_eq!(ledger.shares, account.shares, "{}: stored vs reported shares", account.name);
    }
}

/// When things happened during a run, as seen by polling `status --json`.
#[derive(Debug, Clone)]
pub struct Timeline {
    started: Instant,
    /// When some account first had credit.
    pub first_credit: Option<Duration>,
    /// When each account was first seen up to standard.
    pub up_to_standard: BTreeMap<String, Duration>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// Starts the clock.
    pub fn new() -> Timeline {
        Timeline { started: Instant::now(), first_credit: None, up_to_standard: BTreeMap::new() }
    }

    /// Records what `status` shows, now.
    pub fn observe(&mut self, status: &Status) {
        let now = self.started.elapsed();
        if self.first_credit.is_none() && status.accounts.iter().any(|a| a.delivered > 0) {
            self.first_credit = Some(now);
        }
        for a in status.accounts.iter().filter(|a| a.up_to_standard) {
            self.up_to_standard.entry(a.name.clone()).or_insert(now);
        }
    }

    /// When `account` was first seen up to standard.
    pub fn finished(&self, account: &str) -> Duration {
        *self.up_to_standard.get(account).unwrap_or_else(|| panic!("{account} never reached its standard: {self:#?}"))
    }
}

/// Reads printed lines until "http on ADDR" and returns ADDR (the HTTP endpoint of a process
/// started with `--http`).
fn printed_http_addr(lines: &mpsc::Receiver<String>, who: &str, process: &Process) -> SocketAddr {
    printed_addr(lines, "http on ", who, process)
}

/// The address on the first line starting with `prefix` that `who` prints.
fn printed_addr(lines: &mpsc::Receiver<String>, prefix: &str, who: &str, process: &Process) -> SocketAddr {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    return addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{who} exited before printing {prefix:?}:\n{}", process.log_tail(20))
            }
        }
        assert!(Instant::now() < deadline, "{who} did not print {prefix:?} within {START_TIMEOUT:?}");
    }
}

impl Site {
    /// Starts `hashgrid-node run` (as `start_node_with`) with `--http 127.0.0.1:0`; the node
    /// and the HTTP address it printed.
    pub fn start_node_http(&self, coordinator: &Coordinator, name: &str, flags: &[&str]) -> (Process, SocketAddr) {
        let mut cmd = self.node_run(coordinator, name, flags);
        cmd.args(["--http", "127.0.0.1:0"]).stdout(Stdio::piped());
        let mut process = Process::spawn(name, cmd, &self.log_file(name));
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let addr = printed_http_addr(&lines, name, &process);
        (process, addr)
    }
}

/// `GET path` over HTTP/1.1 on loopback: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to http://{addr}: {e}"));
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or_else(|| panic!("no status in {head:?}")), body.to_string())
}

/// The value of the Prometheus sample `series` (name and labels exactly as printed, e.g.
/// `hashgrid_node_state{node="a",state="active"}`) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// Headless Chromium for tests of what a page shows (Debian's `chromium`), if installed.
/// Missing with `HASHGRID_REQUIRE_CHROMIUM=1` (as CI sets): a panic, not a skip.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() && std::env::var("HASHGRID_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
        panic!("HASHGRID_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// The DOM Chromium renders for `url` (`--headless --dump-dom`), with a private profile.
pub fn chromium_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile dir");
    let mut cmd = Command::new(chromium);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .env("XDG_RUNTIME_DIR", profile.path());
    run_with_timeout(cmd, Duration::from_secs(60)).expect_success("chromium --dump-dom")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a source.rs");
        let binary = dir.path().join("bin");
        let dep_info = dir.path().join("bin.d");
        std::fs::write(&source, "fn main() {}").unwrap();
        std::fs::write(&binary, "").unwrap();
        let escaped = source.display().to_string().replace(' ', "\\ ");
        std::fs::write(&dep_info, format!("{}: {escaped} /nonexistent.rs\n", binary.display())).unwrap();
        let at = |path: &Path, secs: u64| {
            let time = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
        };
        at(&source, 1_000);
        at(&binary, 2_000);
        assert_eq!(newer_source(&binary, &dep_info), None);
        at(&source, 3_000);
        assert_eq!(newer_source(&binary, &dep_info), Some(source));
        assert_eq!(newer_source(&binary, &dir.path().join("missing.d")), None);
    }
}
