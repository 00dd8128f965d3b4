//! A throwaway PostgreSQL cluster for the tests, and which store a test's coordinator runs on.
//!
//! `TestStore::from_env()`: `HASHGRID_TEST_STORE=postgres` runs every `Site`'s coordinator on
//! PostgreSQL (default: SQLite), so the whole e2e suite runs on either store unchanged.
//!
//! `Cluster::shared()` starts one cluster per test process, on first use: `initdb` in a
//! temporary directory, `postgres` listening on a free loopback port (and a socket in that
//! directory), run as the `postgres` user when the tests run as root (CI does: PostgreSQL
//! refuses to run as root), with TLS on (a certificate for `127.0.0.1` and `localhost` signed
//! by a CA made for the run, `Cluster::ca_pem`; clients that do not ask for TLS do not get
//! it). Each `Site` gets a database of its own in it. The binaries are
//! found with `pg_config --bindir`, else under `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package), else on `PATH`. A watchdog shell stops the server and removes its
//! directory when the test process is gone, however it ended.
//!
//! Without PostgreSQL, `available()` is false and the PostgreSQL tests print "SKIPPED" and
//! pass, unless `HASHGRID_REQUIRE_POSTGRES=1` (CI sets it), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The store a test's coordinator runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    /// A fresh database in the shared cluster: its URL.
    Postgres(String),
}

impl TestStore {
    /// `HASHGRID_TEST_STORE`: `postgres` (a fresh database), else SQLite.
    pub fn from_env() -> TestStore {
        match std::env::var("HASHGRID_TEST_STORE").as_deref() {
            Ok("postgres") => TestStore::Postgres(Cluster::shared().create_database()),
            Ok("sqlite") | Ok("") | Err(_) => TestStore::Sqlite,
            Ok(other) => panic!("HASHGRID_TEST_STORE={other:?}: use sqlite or postgres"),
        }
    }

    /// The `serve --store` value.
    pub fn flag(&self) -> &str {
        match self {
            TestStore::Sqlite => "sqlite",
            TestStore::Postgres(url) => url,
        }
    }
}

/// Whether PostgreSQL's server binaries are installed. Missing with
/// `HASHGRID_REQUIRE_POSTGRES=1`: a panic, not a skip.
pub fn available() -> bool {
    let found = bindir().is_some();
    if !found && std::env::var("HASHGRID_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("HASHGRID_REQUIRE_POSTGRES=1 but PostgreSQL is not installed (apt-get install postgresql)");
    }
    found
}

/// The directory holding `initdb` and `postgres`.
fn bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(|d| d.ok()).map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    // The newest version first (directory names are major versions).
    debian.sort_by_key(|d| std::cmp::Reverse(d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())));
    let path = std::env::var_os("PATH").unwrap_or_default();
    from_pg_config.into_iter().chain(debian).chain(std::env::split_paths(&path)).find(|d| has_server(d))
}

/// A running cluster of this test process.
#[derive(Debug)]
pub struct Cluster {
    /// Its directory (data, socket, log), removed by the watchdog.
    dir: PathBuf,
    pub port: u16,
    databases: AtomicU32,
    /// Outlives this process on purpose (it stops the server once this process is gone).
    _watchdog: std::process::Child,
}

impl Cluster {
    /// The process's cluster, started on first use.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            assert!(available(), "PostgreSQL is not installed (apt-get install postgresql)");
            Cluster::start()
        })
    }

    fn start() -> Cluster {
        let bin = bindir().expect("checked by available()");
        let dir = tempfile::Builder::new().prefix("hashgrid-pg-").tempdir().expect("a temporary directory").keep();
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        write_tls_files(&dir);
        if as_root {
            let chown = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir).status();
            assert!(chown.is_ok_and(|s| s.success()), "chown postgres {}", dir.display());
        }
        let as_owner = |program: &Path| {
            let mut cmd = if as_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            cmd.current_dir(&dir);
            cmd
        };
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

        let port = free_port();
        // The server, and a watchdog (this user: it must see this process) that stops it at
        // once when this process is gone, then removes the directory.
        let owner = if as_root { "runuser -u postgres -- " } else { "" };
        let (dir_s, data_s, bin_s) = (dir.display(), data.display(), bin.display());
        let script = format!(
            "{owner}'{bin_s}/postgres' -D '{data_s}' -p {port} -k '{dir_s}' -c listen_addresses=127.0.0.1 \
               -c max_connections=400 -c shared_buffers=32MB \
               -c ssl=on -c ssl_cert_file='{dir_s}/server.crt' -c ssl_key_file='{dir_s}/server.key' \
               > '{dir_s}/server.log' 2>&1 &
             while kill -0 {me} 2>/dev/null; do sleep 0.5; done
             {owner}'{bin_s}/pg_ctl' stop -D '{data_s}' -m immediate > /dev/null 2>&1
             rm -rf '{dir_s}'",
            me = std::process::id(),
        );
        let watchdog = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the PostgreSQL server starts");
        let cluster = Cluster { dir, port, databases: AtomicU32::new(0), _watchdog: watchdog };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.connect("postgres").is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The PEM file of the CA that signed the server's certificate (for `sslrootcert`).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The URL of `database` over TCP on loopback.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A client of `database`.
    pub fn connect(&self, database: &str) -> Result<::postgres::Client, ::postgres::Error> {
        ::postgres::Client::connect(&self.url(database), ::postgres::NoTls)
    }

    /// A new empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!("site{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let mut admin = self.connect("postgres").expect("the cluster accepts connections");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        self.url(&name)
    }
}

/// The server's TLS files in `dir`: `ca.pem` (a CA made for this cluster), `server.crt` (for
/// `127.0.0.1` and `localhost`, signed by it) and `server.key` (mode 0600, as the server
/// requires).
fn write_tls_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "hashgrid test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("a server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server parameters");
    let cert = params.signed_by(&key, &issuer).expect("the server certificate");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("server.crt");
    let key_file = dir.join("server.key");
    std::fs::write(&key_file, key.serialize_pem()).expect("server.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod server.key");
}

/// A TCP port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
