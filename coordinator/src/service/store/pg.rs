//! The PostgreSQL store (`--store postgres://…`): the same records, snapshot and durability
//! rule as the SQLite `Store`, for operators who run their databases on PostgreSQL.
//!
//! - Schema: the one migration list, `store::MIGRATIONS`, translated by `dialect` (BLOB is
//!   BYTEA, INTEGER is BIGINT, REAL is DOUBLE PRECISION, an `INTEGER PRIMARY KEY` is an
//!   identity column, no STRICT, `json_extract` is `->>`). The version is the one row of
//!   `schema_version` (SQLite keeps it in `PRAGMA user_version`); the steps run under an
//!   advisory lock, so two coordinators starting at once migrate once.
//! - Durability: `PgStore::apply` writes a whole batch in ONE transaction and returns only once
//!   COMMIT has returned (`synchronous_commit = on`, set on the session: the commit record is
//!   flushed), so what is acknowledged after it survives a crash of either process. A failing
//!   op rolls the whole batch back. Credits read an account row once per batch and write it
//!   once at the end, as in SQLite.
//! - Fencing: a store that holds the lease (`PgStore::hold`, see `service::lease`) marks every
//!   write transaction in the lease row (`commits`, the batch's number, set only while the
//!   epoch is still its own, the row locked until the commit); if another coordinator took the
//!   lease, the transaction fails with `StoreError::Fenced` and commits nothing.
//! - A database lost while running (`StoreError::is_connection_loss`): with `OnStoreLoss::Exit`
//!   the error ends the service; with `Retry` the batch waits, unacknowledged, while the store
//!   reconnects with backoff (`RETRY_MIN` doubling to `RETRY_MAX`). A COMMIT whose answer was
//!   lost may or may not have happened: the lease row's `commits` says which, so the batch is
//!   written again only if it was not (never twice), and never after a takeover (fenced).
//! - A warm standby (`PgStore::keep_warm`, called at each look at the lease while it waits):
//!   the snapshot is loaded before the lease is taken, and loaded again (at most every
//!   `WARM_EVERY`) when the lease row's change marker, `(epoch, commits)`, moved. Every write of
//!   a coordinator that holds the lease moves it (`mark_commit`: batches, and the ranges and
//!   submits closed at start). At takeover, `load` hands the warm snapshot over only when the
//!   marker it was read at is the one the lease was taken at (`epoch - 1`, and `commits`
//!   unchanged since `hold`): nothing was written since, so it is what a cold load reads.
//!   Otherwise it loads cold, on the session already open.
//! - Text that orders (names) is compared `COLLATE "C"`: byte order, as SQLite's BINARY.
//! - TLS when the URL asks (`sslmode=verify-full`, `sslrootcert=PATH`): see `pg_tls`.
//! - `postgres::Client` runs its own small runtime and may not be created or dropped on a tokio
//!   worker thread: `Conn` connects and drops its client on a thread of its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hashgrid_common::message::{
    ChainParams, JobHit, JobId, LedgerEntry, LedgerVerdict, PageRequest, Policy, Receipt, ReceiptCut, ReceiptShare,
    StandardBasis,
};
use hashgrid_common::{BlockHash, Hash256, Header, Target};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};

use super::backend::OnStoreLoss;
use super::pg_tls;
use super::{MIGRATIONS, SCHEMA_VERSION, StoreError, fixed, parse_u128, to_i64, to_u64};
use crate::core::ledger::{self, LedgerRecord};
use crate::core::{Account, Snapshot, StoreOp, SubmittedJob, Work};
use crate::service::admin::Pager;
use crate::service::{history, records};

/// The advisory lock key (first half) under which migrations run.
const MIGRATE_LOCK: i32 = 0x6867_0001;

/// How long a new connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keepalives on every connection: a peer lost in a partition is noticed in about
/// `KEEPALIVE_IDLE` plus a few probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);

/// A client that is dropped off any tokio runtime (see the module docs); connect through
/// `blocking`.
pub(crate) struct Conn(Option<Client>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Conn(open)" } else { "Conn(closed)" })
    }
}

impl Conn {
    /// Connects to `url` (a `postgres://` URL or a `key=value` string), over TLS when it asks
    /// (`pg_tls`).
    pub(crate) fn connect(url: &str) -> Result<Conn, StoreError> {
        let bad = |e: String| StoreError::Connect(format!("{}: {e}", redact(url)));
        let (conninfo, tls) = pg_tls::split(url).map_err(bad)?;
        let mut config: postgres::Config = conninfo.parse().map_err(|e: postgres::Error| bad(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE).keepalives_interval(Duration::from_secs(1));
        config.keepalives_retries(3);
        let connected = match tls {
            pg_tls::Tls::Off => config.connect(NoTls),
            pg_tls::Tls::Verified { root_cert } => config.connect(pg_tls::connector(root_cert.as_ref()).map_err(bad)?),
        };
        let client = connected.map_err(|e| {
            // The client's message is generic ("error connecting to server"): add its causes.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            StoreError::Connect(format!("{}: {why}", redact(url)))
        })?;
        Ok(Conn(Some(client)))
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        self.0.as_mut().expect("only taken by drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Closing blocks on the client's runtime, which may not nest in the caller's.
            let _ = std::thread::Builder::new().name("hashgrid-pg-close".into()).spawn(move || drop(client));
        }
    }
}

/// Runs `f` where the client may block: on this thread, or on a thread of its own when this
/// one is inside a tokio runtime (a worker or a blocking-pool thread: the client's own runtime
/// may not nest there).
pub(crate) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() { off_runtime(f) } else { f() }
}

/// Runs `f` on a thread of its own and waits for it (see the module docs).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// One SQLite migration step in PostgreSQL's dialect (see the module docs).
pub fn dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_alphabetic() || c == '_' {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let (word, after) = rest.split_at(end);
            rest = after;
            match word {
                "BLOB" => out.push_str("BYTEA"),
                "REAL" => out.push_str("DOUBLE PRECISION"),
                "INTEGER" if rest.starts_with(" PRIMARY KEY") => {
                    out.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY")
                }
                "INTEGER" => out.push_str("BIGINT"),
                // `) STRICT;`: SQLite's type checking, PostgreSQL's always.
                "STRICT" if out.trim_end().ends_with(')') => {
                    out.truncate(out.trim_end().len());
                }
                "json_extract" if rest.starts_with('(') => {
                    // json_extract(COLUMN, '$.KEY') → (COLUMN::jsonb ->> 'KEY')
                    let close = rest.find(')').unwrap_or(rest.len() - 1);
                    let args = &rest[1..close];
                    let (column, path) = args.split_once(',').unwrap_or((args, "'$'"));
                    let key = path.trim().trim_matches('\'').trim_start_matches("$.");
                    out.push_str(&format!("({}::jsonb ->> '{key}')", column.trim()));
                    rest = &rest[close + 1..];
                }
                _ => out.push_str(word),
            }
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Prepared statements of one connection, by their SQL.
#[derive(Default)]
struct Statements(HashMap<&'static str, Statement>);

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Statements({})", self.0.len())
    }
}

impl Statements {
    fn get(&mut self, client: &mut impl GenericClient, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

/// The first wait before reconnecting to a lost database (`OnStoreLoss::Retry`).
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often a standby at most loads its warm snapshot again (when the marker moved).
pub const WARM_EVERY: Duration = Duration::from_secs(1);

/// The lease row's change marker: `(epoch, commits)`; `None` before any lease.
type Marker = Option<(i64, i64)>;

/// A standby's snapshot, and the marker and ledger head it was read at.
#[derive(Debug)]
struct Warm {
    snapshot: Snapshot,
    marker: Marker,
    ledger_seq: u64,
    loaded_at: Instant,
}

/// The coordinator's database on PostgreSQL: the write path and the snapshot.
#[derive(Debug)]
pub struct PgStore {
    conn: Conn,
    /// Where to reconnect.
    url: String,
    statements: Statements,
    /// The lease every write must still hold (`hold`); `None`: not fenced (tools, tests).
    lease: Option<Held>,
    /// A standby's snapshot (`keep_warm`), until the first `load` after the takeover.
    warm: Option<Warm>,
}

/// A lease held by the store, and how its batches are counted.
#[derive(Debug)]
struct Held {
    lease: crate::service::lease::Lease,
    ttl: Duration,
    on_loss: OnStoreLoss,
    /// The lease row's `commits` as of this store's last commit.
    commits: i64,
}

impl PgStore {
    /// Connects to `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let mut conn = Conn::connect(url)?;
        conn.client().batch_execute("SET synchronous_commit = on")?;
        migrate(conn.client())?;
        Ok(PgStore { conn, url: url.to_string(), statements: Statements::default(), lease: None, warm: None })
    }

    /// The schema version of the database.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        schema_version(self.conn.client())
    }

    /// Keeps `lease` (renewed while the store lives); from now on every write checks, in its
    /// transaction, that the lease's epoch is still this one, and a transaction left idle
    /// longer than `ttl` (a paused process) is ended by the server, releasing the lease row.
    /// `on_loss` says what `apply` does when the database is lost (see the module docs).
    pub fn hold(
        &mut self,
        lease: crate::service::lease::Lease,
        ttl: Duration,
        on_loss: OnStoreLoss,
    ) -> Result<(), StoreError> {
        let settle = |conn: &mut Conn| -> Result<i64, StoreError> {
            set_idle_timeout(conn.client(), ttl)?;
            Ok(conn.client().query_one("SELECT commits FROM lease WHERE id = 1", &[])?.get(0))
        };
        // A standby's session may have been lost since its last look at the lease.
        let commits = match settle(&mut self.conn) {
            Err(e) if e.is_connection_loss() => {
                self.reopen()?;
                settle(&mut self.conn)?
            }
            other => other?,
        };
        self.lease = Some(Held { lease, ttl, on_loss, commits });
        Ok(())
    }

    /// The epoch of the lease it holds, if any.
    pub fn epoch(&self) -> Option<i64> {
        self.lease.as_ref().map(|held| held.lease.epoch)
    }

    /// Makes `ops` durable, all or nothing, in one transaction. With `OnStoreLoss::Retry`, a
    /// lost database is waited for (see the module docs): this returns once the batch is
    /// committed, or with an error that is not a lost connection (fenced, among others).
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut delay = RETRY_MIN;
        loop {
            let mut err = match self.commit(ops) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !self.lease.as_ref().is_some_and(|held| held.on_loss == OnStoreLoss::Retry) {
                return Err(err);
            }
            // Reconnects until the database answers, then learns whether the batch committed.
            loop {
                if !err.is_connection_loss() {
                    return Err(err);
                }
                tracing::warn!(retry_in_ms = delay.as_millis() as u64, "database lost; acknowledgements wait: {err}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MAX);
                match self.reconnect() {
                    Ok(true) => {
                        tracing::info!("database back; the batch had committed");
                        return Ok(());
                    }
                    Ok(false) => {
                        tracing::info!("database back; writing the batch again");
                        break;
                    }
                    Err(e) => err = e,
                }
            }
        }
    }

    /// One attempt at `apply`.
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.marked(|tx, statements| write_ops(tx, statements, ops))
    }

    /// What a start writes, in one transaction (one commit to wait for at a takeover): `ops`
    /// (the takeover record), then `close_open_ranges` and `close_pending_submits`.
    pub fn start_up(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.marked(|tx, statements| {
            write_ops(tx, statements, ops)?;
            close_ranges(tx)?;
            upstream::close_pending(tx).map(drop)
        })
    }

    /// Runs `write` in one transaction, marked in the lease row when the store holds the lease
    /// (fenced otherwise; see `mark_commit`).
    fn marked<T>(
        &mut self,
        write: impl FnOnce(&mut Transaction<'_>, &mut Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let PgStore { conn, statements, lease, .. } = self;
        let mut tx = conn.client().transaction()?;
        if let Some(held) = lease {
            mark_commit(&mut tx, held.lease.epoch, held.commits + 1)?;
        }
        let out = write(&mut tx, statements)?;
        tx.commit()?;
        if let Some(held) = lease {
            held.commits += 1;
        }
        Ok(out)
    }

    /// A new session in place of a lost one (a standby's, before it holds the lease).
    fn reopen(&mut self) -> Result<(), StoreError> {
        let mut conn = Conn::connect(&self.url)?;
        conn.client().batch_execute("SET synchronous_commit = on")?;
        self.conn = conn;
        self.statements = Statements::default();
        Ok(())
    }

    /// A standby's upkeep, at each look at the lease: checks the session (a lost one is
    /// replaced) and the lease row's marker, and loads the snapshot again when the marker moved
    /// and the last load is `WARM_EVERY` old. Returns the ledger head the snapshot is at.
    pub fn keep_warm(&mut self) -> Result<u64, StoreError> {
        let marker = match lease_marker(self.conn.client()) {
            Ok(marker) => marker,
            Err(e) if e.is_connection_loss() => {
                tracing::warn!("standby: the store's database session was lost; reconnecting: {e}");
                self.reopen()?;
                lease_marker(self.conn.client())?
            }
            Err(e) => return Err(e),
        };
        let stale = self.warm.as_ref().is_none_or(|w| w.marker != marker && w.loaded_at.elapsed() >= WARM_EVERY);
        if stale {
            self.warm = None;
            let (snapshot, marker, ledger_seq) = self.load_marked()?;
            self.warm = Some(Warm { snapshot, marker, ledger_seq, loaded_at: Instant::now() });
            tracing::debug!(ledger_seq, ?marker, "standby: snapshot loaded");
        }
        Ok(self.warm.as_ref().map_or(0, |w| w.ledger_seq))
    }

    /// A new session after a lost one: true when the batch whose commit was under way did
    /// commit (the lease row counts it), false when it must be written again.
    fn reconnect(&mut self) -> Result<bool, StoreError> {
        let held = self.lease.as_mut().expect("only a store that holds the lease retries");
        let mut conn = Conn::connect(&self.url)?;
        conn.client().batch_execute("SET synchronous_commit = on")?;
        set_idle_timeout(conn.client(), held.ttl)?;
        let row = conn.client().query_one("SELECT epoch, commits FROM lease WHERE id = 1", &[])?;
        let (epoch, commits): (i64, i64) = (row.get(0), row.get(1));
        if epoch != held.lease.epoch {
            return Err(StoreError::Fenced { mine: held.lease.epoch, current: epoch });
        }
        self.conn = conn;
        self.statements = Statements::default();
        let committed = commits == held.commits + 1;
        if committed {
            held.commits = commits;
        }
        Ok(committed)
    }

    /// Gives the ranges a previous process left in flight their fate (`history::RESTARTED`).
    /// Marked like a batch (it moves the standby's marker).
    pub fn close_open_ranges(&mut self) -> Result<usize, StoreError> {
        self.marked(|tx, _| close_ranges(tx))
    }

    /// Gives the submits to pools a previous process left unanswered the outcome `unknown`.
    /// Marked like a batch: the snapshot's pool counts change.
    pub fn close_pending_submits(&mut self) -> Result<usize, StoreError> {
        self.marked(|tx, _| upstream::close_pending(tx))
    }

    /// The state the core restarts from, read in one snapshot: right after a takeover, the warm
    /// one when nothing was written since it was read (see the module docs).
    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        if let (Some(warm), Some(held)) = (self.warm.take(), &self.lease) {
            if warm.marker == Some((held.lease.epoch - 1, held.commits)) {
                tracing::info!(ledger_seq = warm.ledger_seq, "took over with the warm snapshot");
                return Ok(warm.snapshot);
            }
            tracing::info!(ledger_seq = warm.ledger_seq, "the warm snapshot is behind: loading it again");
        }
        Ok(self.load_marked()?.0)
    }

    /// The snapshot, with the lease row's marker and the ledger head read in its transaction.
    fn load_marked(&mut self) -> Result<(Snapshot, Marker, u64), StoreError> {
        let mut tx = self.conn.client().build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
        let marker = lease_marker(&mut tx)?;
        let ledger_seq: Option<i64> = tx.query_one("SELECT max(seq) FROM ledger", &[])?.get(0);
        let ledger_seq = to_u64("ledger.seq", ledger_seq.unwrap_or(0))?;
        let setting = |tx: &mut Transaction<'_>, key: &str| -> Result<Option<String>, StoreError> {
            Ok(tx.query_opt("SELECT value FROM settings WHERE key = $1", &[&key])?.map(|r| r.get(0)))
        };
        let policy = match setting(&mut tx, "policy")? {
            Some(p) => p.parse().map_err(|detail| StoreError::Corrupt { what: "settings.policy", detail })?,
            None => Policy::default(),
        };
        let rollout = setting(&mut tx, "rollout")?
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| StoreError::Corrupt { what: "settings.rollout", detail: e.to_string() })?;

        let mut accounts = Vec::new();
        for r in tx.query(
            "SELECT name, standard, period_ms, sort_order, delivered, period_start_ms, shares, chain
             FROM accounts ORDER BY sort_order, name COLLATE \"C\"",
            &[],
        )? {
            accounts.push(Account {
                name: r.get(0),
                standard: Work(parse_u128("accounts.standard", r.get(1))?),
                period_ms: r.get::<_, Option<i64>>(2).map(|p| to_u64("accounts.period_ms", p)).transpose()?,
                order: r.get(3),
                delivered: Work(parse_u128("accounts.delivered", r.get(4))?),
                period_start_ms: to_u64("accounts.period_start_ms", r.get(5))?,
                shares: to_u64("accounts.shares", r.get(6))?,
                issued: 0,
                chain: r.get(7),
                basis: StandardBasis::default(),
                accepted_upstream: Work(0),
            });
        }

        let tip = |tx: &mut Transaction<'_>, chain: &str| -> Result<Option<(u64, BlockHash)>, StoreError> {
            tx.query_opt(
                "SELECT height, hash FROM chain_blocks WHERE chain = $1 ORDER BY height DESC LIMIT 1",
                &[&chain],
            )?
            .map(|r| Ok((to_u64("chain_blocks.height", r.get(0))?, Hash256(fixed("chain_blocks.hash", r.get(1))?))))
            .transpose()
        };
        let chain = tip(&mut tx, crate::core::accounts::DEFAULT_CHAIN)?;
        let mut chains = Vec::new();
        for r in tx.query(
            "SELECT name, tx_per_template, bit_rate, difficulty, weight FROM chains
             ORDER BY added_ms, name COLLATE \"C\"",
            &[],
        )? {
            let params = ChainParams {
                name: r.get(0),
                tx_per_template: to_u32("chains.tx_per_template", r.get(1))?,
                bit_rate: to_u64("chains.bit_rate", r.get(2))?,
                difficulty: r.get(3),
                weight: r.get(4),
            };
            let t = tip(&mut tx, &params.name)?;
            chains.push((params, t));
        }
        let node_chains = tx
            .query("SELECT node, chain FROM node_chains ORDER BY node COLLATE \"C\"", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();

        let mut jobs = Vec::new();
        for r in tx.query("SELECT id, account, header, target FROM jobs ORDER BY id", &[])? {
            let job = to_u64("jobs.id", r.get(0))?;
            jobs.push(SubmittedJob {
                job,
                account: r.get(1),
                header: header("jobs.header", &r, 2)?,
                target: target("jobs.target", &r, 3)?,
                hits: hits(&mut tx, job)?,
                shares: Vec::new(),
            });
        }
        let shares = tx.prepare("SELECT header FROM shares WHERE job = $1 ORDER BY id")?;
        for job in &mut jobs {
            job.shares = tx
                .query(&shares, &[&to_i64("jobs.id", job.job)?])?
                .iter()
                .map(|r| header("shares.header", r, 0).map(|h| (h.version, h.time, h.nonce)))
                .collect::<Result<_, StoreError>>()?;
        }
        let pools = upstream::load(&mut tx, &mut accounts)?;
        let rows = tx.query(crate::service::upstream_store::COUNTS, &[])?;
        let pool_counts =
            crate::service::upstream_store::counts(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))?;
        tx.commit()?;
        let snapshot = Snapshot { policy, accounts, chain, jobs, chains, node_chains, rollout, pools, pool_counts };
        Ok((snapshot, marker, ledger_seq))
    }
}

/// Writes `ops` in `tx` (a batch's body).
fn write_ops(tx: &mut Transaction<'_>, statements: &mut Statements, ops: &[StoreOp]) -> Result<(), StoreError> {
    let mut batch = PgBatch::default();
    for op in ops {
        apply_one(tx, statements, &mut batch, op)?;
    }
    batch.flush_all(tx, statements)
}

/// Gives the ranges left in flight the fate `history::RESTARTED`; how many.
fn close_ranges(tx: &mut Transaction<'_>) -> Result<usize, StoreError> {
    let changed = tx.execute(
        "INSERT INTO range_fates (assignment, fate, handed)
         SELECT id, $1, 0 FROM assignments WHERE id NOT IN (SELECT assignment FROM range_fates)",
        &[&history::RESTARTED],
    )?;
    Ok(changed as usize)
}

/// The lease row's change marker (`None`: no lease row yet).
fn lease_marker(client: &mut impl GenericClient) -> Result<Marker, StoreError> {
    Ok(client.query_opt("SELECT epoch, commits FROM lease WHERE id = 1", &[])?.map(|r| (r.get(0), r.get(1))))
}

/// Numbers this transaction's batch `commits` in the lease row, and fails with `Fenced` unless
/// `mine` is still the lease's epoch. The row stays locked until the transaction ends (a
/// takeover, which updates the row, waits for it).
pub(crate) fn mark_commit(tx: &mut Transaction<'_>, mine: i64, commits: i64) -> Result<(), StoreError> {
    let marked = tx.execute("UPDATE lease SET commits = $2 WHERE id = 1 AND epoch = $1", &[&mine, &commits])?;
    if marked != 1 {
        let current: Option<i64> = tx.query_opt("SELECT epoch FROM lease WHERE id = 1", &[])?.map(|r| r.get(0));
        return Err(StoreError::Fenced { mine, current: current.unwrap_or(0) });
    }
    Ok(())
}

/// A transaction left idle longer than `ttl` (a paused process) is ended by the server,
/// releasing the lease row.
fn set_idle_timeout(client: &mut Client, ttl: Duration) -> Result<(), StoreError> {
    let ms = ttl.as_millis().max(1);
    Ok(client.batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))?)
}

fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    Ok(client.query_opt("SELECT version FROM schema_version", &[])?.map_or(0, |r| r.get(0)))
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&MIGRATE_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS lease (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             epoch BIGINT NOT NULL,
             holder TEXT NOT NULL,
             address TEXT NOT NULL,
             expires_at TIMESTAMPTZ NOT NULL
         );
         ALTER TABLE lease ADD COLUMN IF NOT EXISTS commits BIGINT NOT NULL DEFAULT 0;",
    )?;
    let found = schema_version(&mut tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { found, known: SCHEMA_VERSION });
    }
    for sql in MIGRATIONS.iter().skip(found.max(0) as usize) {
        tx.batch_execute(&dialect(sql))?;
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION])?;
    }
    tx.commit()?;
    Ok(())
}

fn to_u32(what: &'static str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt { what, detail: format!("{value} is not a u32") })
}

fn header(what: &'static str, row: &Row, i: usize) -> Result<Header, StoreError> {
    Ok(Header::from_bytes(&fixed::<80>(what, row.get(i))?))
}

fn target(what: &'static str, row: &Row, i: usize) -> Result<Target, StoreError> {
    Target::from_be_bytes(fixed(what, row.get(i))?).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

/// The hits of a job, in the order they were found (`job_hits` rows are never updated, so
/// their physical order is their insertion order).
fn hits(client: &mut impl GenericClient, job: JobId) -> Result<Vec<JobHit>, StoreError> {
    client
        .query("SELECT version, time, nonce, hash FROM job_hits WHERE job = $1 ORDER BY ctid", &[&to_i64("job", job)?])?
        .iter()
        .map(|r| {
            Ok(JobHit {
                version: to_u32("job_hits.version", r.get(0))?,
                time: to_u32("job_hits.time", r.get(1))?,
                nonce: to_u32("job_hits.nonce", r.get(2))?,
                hash: Hash256(fixed("job_hits.hash", r.get(3))?),
            })
        })
        .collect()
}

/// What one `apply` keeps across its ops (as SQLite's `Batch`): accounts changed by credits,
/// written once at the end, and the shares credited (no share twice in one call), inserted at
/// the end with one statement (one round trip instead of one per share).
#[derive(Debug, Default)]
struct PgBatch {
    /// Account → (delivered, period_start_ms, shares added).
    accounts: HashMap<String, (u128, i64, i64)>,
    seen: super::SeenShares,
    shares: Vec<ShareRow>,
    /// The ledger's last entry as of this batch's last append (`None`: not read yet).
    ledger_head: Option<LedgerHead>,
    /// The entries appended, with their `account` column, inserted at the end with one
    /// statement.
    ledger: Vec<(LedgerEntry, Option<String>)>,
}

/// The ledger's last entry, `(seq, hash)`; `None` when it is empty.
type LedgerHead = Option<(u64, [u8; 32])>;

/// One `shares` row to insert: `bytes` is (header, share_target).
#[derive(Debug)]
struct ShareRow {
    account: String,
    period_start_ms: i64,
    node: String,
    job: i64,
    bytes: [Vec<u8>; 2],
    work: String,
    at_ms: i64,
}

impl PgBatch {
    fn account(
        &mut self,
        tx: &mut Transaction<'_>,
        statements: &mut Statements,
        name: &str,
    ) -> Result<&mut (u128, i64, i64), StoreError> {
        if !self.accounts.contains_key(name) {
            let s = statements.get(tx, "SELECT delivered, period_start_ms FROM accounts WHERE name = $1")?;
            let row = tx.query_opt(&s, &[&name])?.ok_or_else(|| StoreError::UnknownAccount(name.to_string()))?;
            let delivered = parse_u128("accounts.delivered", row.get(0))?;
            self.accounts.insert(name.to_string(), (delivered, row.get(1), 0));
        }
        Ok(self.accounts.get_mut(name).expect("inserted above"))
    }

    fn flush(&mut self, tx: &mut Transaction<'_>, statements: &mut Statements, name: &str) -> Result<(), StoreError> {
        if let Some(delta) = self.accounts.remove(name) {
            write_account(tx, statements, name, delta)?;
        }
        Ok(())
    }

    /// Appends one entry to the ledger, linked to the last one (as `records::append_ledger`):
    /// the head is read from the table at the batch's first entry, then kept.
    fn append_ledger(
        &mut self,
        tx: &mut Transaction<'_>,
        st: &mut Statements,
        at_ms: u64,
        record: &LedgerRecord,
    ) -> Result<(), StoreError> {
        let prev = match self.ledger_head {
            Some(head) => head,
            None => {
                let s = st.get(tx, "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")?;
                match tx.query_opt(&s, &[])? {
                    Some(r) => Some((to_u64("ledger.seq", r.get(0))?, fixed("ledger.hash", r.get(1))?)),
                    None => None,
                }
            }
        };
        let (kind, payload) = record.encode();
        let e = ledger::next_entry(prev, at_ms, &kind, &payload);
        self.ledger_head = Some(Some((e.seq, e.hash)));
        self.ledger.push((e, record.account().map(str::to_string)));
        Ok(())
    }

    fn flush_all(self, tx: &mut Transaction<'_>, statements: &mut Statements) -> Result<(), StoreError> {
        for (name, delta) in &self.accounts {
            write_account(tx, statements, name, *delta)?;
        }
        if !self.ledger.is_empty() {
            let entries = &self.ledger;
            let number = |f: &dyn Fn(&LedgerEntry) -> u64, what| {
                entries.iter().map(|(e, _)| to_i64(what, f(e))).collect::<Result<Vec<i64>, _>>()
            };
            exec(
                tx,
                statements,
                "INSERT INTO ledger (seq, at_ms, kind, payload, prev_hash, hash, account)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::BYTEA[],
                                      $7::TEXT[])",
                &[
                    &number(&|e| e.seq, "ledger.seq")?,
                    &number(&|e| e.at_ms, "ledger.at_ms")?,
                    &entries.iter().map(|(e, _)| e.kind.as_str()).collect::<Vec<_>>(),
                    &entries.iter().map(|(e, _)| e.payload.as_str()).collect::<Vec<_>>(),
                    &entries.iter().map(|(e, _)| &e.prev_hash[..]).collect::<Vec<_>>(),
                    &entries.iter().map(|(e, _)| &e.hash[..]).collect::<Vec<_>>(),
                    &entries.iter().map(|(_, account)| account.as_deref()).collect::<Vec<_>>(),
                ],
            )?;
        }
        if self.shares.is_empty() {
            return Ok(());
        }
        // In credit order: the identity column numbers them as they come.
        let rows = &self.shares;
        let column = |f: &dyn Fn(&ShareRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let text = |f: &dyn Fn(&ShareRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let bytes = |i: usize| rows.iter().map(|r| &r.bytes[i][..]).collect::<Vec<&[u8]>>();
        exec(
            tx,
            statements,
            "INSERT INTO shares (account, period_start_ms, node, job, header, share_target, work, at_ms)
             SELECT a, p, n, j, h, g, w, m FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[],
                                  $5::BYTEA[], $6::BYTEA[], $7::TEXT[], $8::BIGINT[])
             WITH ORDINALITY AS s(a, p, n, j, h, g, w, m, i) ORDER BY i",
            &[
                &text(&|r| &r.account),
                &column(&|r| r.period_start_ms),
                &text(&|r| &r.node),
                &column(&|r| r.job),
                &bytes(0),
                &bytes(1),
                &text(&|r| &r.work),
                &column(&|r| r.at_ms),
            ],
        )?;
        Ok(())
    }
}

fn write_account(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    name: &str,
    (delivered, _, added): (u128, i64, i64),
) -> Result<(), StoreError> {
    let s = statements.get(tx, "UPDATE accounts SET delivered = $1, shares = shares + $2 WHERE name = $3")?;
    tx.execute(&s, &[&delivered.to_string(), &added, &name])?;
    Ok(())
}

fn exec(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let s = statements.get(tx, sql)?;
    Ok(tx.execute(&s, params)?)
}

fn apply_one(
    tx: &mut Transaction<'_>,
    st: &mut Statements,
    batch: &mut PgBatch,
    op: &StoreOp,
) -> Result<(), StoreError> {
    match op {
        StoreOp::AccountAdded { name, standard, period_ms, order, period_start_ms, chain } => {
            let period_ms = period_ms.map(|p| to_i64("period_ms", p)).transpose()?;
            exec(
                tx,
                st,
                "INSERT INTO accounts (name, standard, period_ms, sort_order, delivered, period_start_ms, shares, chain)
                 VALUES ($1, $2, $3, $4, '0', $5, 0, $6)",
                &[name, &standard.to_string(), &period_ms, order, &to_i64("period_start_ms", *period_start_ms)?, chain],
            )?;
        }
        StoreOp::Credit { account, work, node, job, header, share_target, at_ms } => {
            super::credit_once(&mut batch.seen, *job, header)?;
            let entry = batch.account(tx, st, account)?;
            // Saturating, as the core adds.
            entry.0 = entry.0.saturating_add(work.0);
            entry.2 += 1;
            let period_start_ms = entry.1;
            batch.shares.push(ShareRow {
                account: account.clone(),
                period_start_ms,
                node: node.clone(),
                job: to_i64("job", *job)?,
                bytes: [header.to_bytes().to_vec(), share_target.to_be_bytes().to_vec()],
                work: work.to_string(),
                at_ms: to_i64("at_ms", *at_ms)?,
            });
        }
        StoreOp::PeriodRenewed { account, period_start_ms } => {
            batch.flush(tx, st, account)?;
            let changed = exec(
                tx,
                st,
                "UPDATE accounts SET delivered = '0', shares = 0, period_start_ms = $1 WHERE name = $2",
                &[&to_i64("period_start_ms", *period_start_ms)?, account],
            )?;
            if changed == 0 {
                return Err(StoreError::UnknownAccount(account.clone()));
            }
        }
        StoreOp::PolicySet(policy) => set_setting(tx, st, "policy", policy.as_str())?,
        StoreOp::RolloutSet(Some(rollout)) => {
            let value = serde_json::to_string(rollout)
                .map_err(|e| StoreError::Corrupt { what: "settings.rollout", detail: e.to_string() })?;
            set_setting(tx, st, "rollout", &value)?;
        }
        StoreOp::RolloutSet(None) => {
            exec(tx, st, "DELETE FROM settings WHERE key = 'rollout'", &[])?;
        }
        StoreOp::JobSubmitted { job, account, header, target } => {
            exec(
                tx,
                st,
                "INSERT INTO jobs (id, account, header, target) VALUES ($1, $2, $3, $4)",
                &[&to_i64("job", *job)?, account, &&header.to_bytes()[..], &&target.to_be_bytes()[..]],
            )?;
        }
        StoreOp::JobHit { job, hit } => {
            exec(
                tx,
                st,
                "INSERT INTO job_hits (job, version, time, nonce, hash) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &to_i64("job", *job)?,
                    &i64::from(hit.version),
                    &i64::from(hit.time),
                    &i64::from(hit.nonce),
                    &&hit.hash.0[..],
                ],
            )?;
        }
        StoreOp::BlockFound { chain, height, hash, account } => {
            exec(
                tx,
                st,
                "INSERT INTO chain_blocks (chain, height, hash, account) VALUES ($1, $2, $3, $4)",
                &[chain, &to_i64("chain_blocks.height", *height)?, &&hash.0[..], account],
            )?;
        }
        StoreOp::ChainAdded { params, at_ms } => {
            exec(
                tx,
                st,
                "INSERT INTO chains (name, tx_per_template, bit_rate, difficulty, weight, added_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &params.name,
                    &i64::from(params.tx_per_template),
                    &to_i64("chains.bit_rate", params.bit_rate)?,
                    &params.difficulty,
                    &params.weight,
                    &to_i64("chains.added_ms", *at_ms)?,
                ],
            )?;
        }
        StoreOp::NodeChain { node, chain: Some(chain), at_ms } => {
            exec(
                tx,
                st,
                "INSERT INTO node_chains (node, chain, since_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (node) DO UPDATE SET chain = excluded.chain, since_ms = excluded.since_ms",
                &[node, chain, &to_i64("node_chains.since_ms", *at_ms)?],
            )?;
        }
        StoreOp::NodeChain { node, chain: None, .. } => {
            exec(tx, st, "DELETE FROM node_chains WHERE node = $1", &[node])?;
        }
        StoreOp::TemplateMade { job, account, header, target } => {
            exec(
                tx,
                st,
                "INSERT INTO templates (job, account, header, target) VALUES ($1, $2, $3, $4)",
                &[&to_i64("job", *job)?, account, &&header.to_bytes()[..], &&target.to_be_bytes()[..]],
            )?;
        }
        StoreOp::RangeFate { assignment, fate, handed } => {
            exec(
                tx,
                st,
                "INSERT INTO range_fates (assignment, fate, handed) VALUES ($1, $2, $3)
                 ON CONFLICT (assignment) DO UPDATE SET fate = excluded.fate, handed = excluded.handed",
                &[&to_i64("assignment", *assignment)?, fate, &to_i64("handed", *handed)?],
            )?;
        }
        StoreOp::Ledger { at_ms, record } => batch.append_ledger(tx, st, *at_ms, record)?,
        StoreOp::AccountPoolSet { account, pool, basis } => upstream::set_pool(tx, account, pool.as_ref(), *basis)?,
        StoreOp::UpstreamSubmitted { account, hash, url, pool_job, work, at_ms } => {
            upstream::submitted(tx, account, hash, url, pool_job, *work, *at_ms)?
        }
        StoreOp::UpstreamOutcome { hash, outcome, at_ms } => upstream::outcome(tx, hash, outcome, *at_ms)?,
        StoreOp::AssignmentIssued { assignment, node, account, job, version, start, count, at_ms } => {
            exec(
                tx,
                st,
                "INSERT INTO assignments (id, node, account, job, version, start, count, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &to_i64("assignment", *assignment)?,
                    node,
                    account,
                    &to_i64("job", *job)?,
                    &i64::from(*version),
                    &i64::from(*start),
                    &to_i64("count", *count)?,
                    &to_i64("at_ms", *at_ms)?,
                ],
            )?;
        }
    }
    Ok(())
}

fn set_setting(tx: &mut Transaction<'_>, st: &mut Statements, key: &str, value: &str) -> Result<(), StoreError> {
    exec(
        tx,
        st,
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// A connection for the operator API's reads (as SQLite's `records::Reader`). A read that finds
/// the connection lost (the database restarted, the session terminated) is tried once more on
/// a new one (`again_if_lost`).
#[derive(Debug)]
pub struct PgReader {
    conn: Conn,
    url: String,
}

impl PgReader {
    pub fn open(url: &str) -> Result<PgReader, StoreError> {
        Ok(PgReader { conn: Conn::connect(url)?, url: url.to_string() })
    }

    /// `read`, and once more on a new connection if the connection was lost.
    pub fn again_if_lost<T>(&mut self, read: impl Fn(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match read(self) {
            Err(e) if e.is_connection_loss() => {
                self.conn = Conn::connect(&self.url)?;
                read(self)
            }
            other => other,
        }
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        Ok(self.conn.client())
    }

    /// Entries with `seq >= since`, oldest first, at most `limit`; with `account`, only those
    /// about that account.
    pub fn ledger(&mut self, since: u64, account: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        let since = to_i64("since", since)?;
        let rows = self.client()?.query(
            "SELECT seq, at_ms, kind, payload, prev_hash, hash FROM ledger
             WHERE ($3::TEXT IS NULL OR account = $3) AND seq >= $1 ORDER BY seq LIMIT $2",
            &[&since, &i64::from(limit), &account],
        )?;
        rows.iter().map(|r| records::entry(raw_entry(r))).collect()
    }

    /// The last entry's sequence number; 0 when empty.
    pub fn last_seq(&mut self) -> Result<u64, StoreError> {
        let seq: Option<i64> = self.client()?.query_one("SELECT max(seq) FROM ledger", &[])?.get(0);
        to_u64("ledger.seq", seq.unwrap_or(0))
    }

    /// As `records::Reader::verify_ledger`.
    pub fn verify_ledger(&mut self) -> Result<LedgerVerdict, StoreError> {
        let rows = self
            .client()?
            .query("SELECT seq, at_ms, kind, payload, prev_hash, hash, account FROM ledger ORDER BY seq", &[])?;
        records::verdict(rows.iter().map(|r| Ok((raw_entry(r), r.get(6)))))
    }

    /// The job's status, every run; `None`: no such job.
    pub fn job(&mut self, job: JobId) -> Result<Option<hashgrid_common::message::JobStatus>, StoreError> {
        let id = to_i64("job", job)?;
        let mut tx = self.client()?.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
        let Some(found) = tx.query_opt(
            "SELECT account, header, target FROM jobs WHERE id = $1
             UNION ALL SELECT account, header, target FROM templates WHERE job = $1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let record = (found.get(0), header("jobs.header", &found, 1)?, target("jobs.target", &found, 2)?);
        let hits = hits(&mut tx, job)?;
        let ranges = tx.query(
            "SELECT a.version, a.start, a.count, f.fate, f.handed FROM assignments a
             LEFT JOIN range_fates f ON f.assignment = a.id WHERE a.job = $1 ORDER BY a.id",
            &[&id],
        )?;
        let ranges = ranges.iter().map(|r| {
            Ok(history::IssuedRange {
                version: to_u32("assignments.version", r.get(0))?,
                start: to_u32("assignments.start", r.get(1))?,
                count: r.get(2),
                fate: r.get(3),
                handed: r.get(4),
            })
        });
        history::status_of(job, record, hits, ranges).map(Some)
    }

    /// As `records::Reader::receipt`: one page, read in one snapshot.
    pub fn receipt(
        &mut self,
        account: &str,
        cut: Option<ReceiptCut>,
        page: PageRequest,
    ) -> Result<Option<Receipt>, StoreError> {
        let mut tx = self.client()?.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
        let Some(row) =
            tx.query_opt("SELECT standard, delivered, period_start_ms FROM accounts WHERE name = $1", &[&account])?
        else {
            return Ok(None);
        };
        let (standard, delivered): (String, String) = (row.get(0), row.get(1));
        let period_start_ms = to_u64("accounts.period_start_ms", row.get(2))?;
        let cut = match cut {
            Some(cut) => cut,
            None => {
                let last: Option<i64> = tx
                    .query_one(
                        "SELECT max(id) FROM shares WHERE account = $1 AND period_start_ms = $2",
                        &[&account, &to_i64("period_start_ms", period_start_ms)?],
                    )?
                    .get(0);
                ReceiptCut { period_start_ms, last_share: to_u64("shares.id", last.unwrap_or(0))? }
            }
        };
        let mut pager = Pager::new(page);
        let rows = tx.query(
            "SELECT id, header, share_target, work, node, at_ms FROM shares
             WHERE account = $1 AND period_start_ms = $2 AND id > $3 AND id <= $4 ORDER BY id LIMIT $5",
            &[
                &account,
                &to_i64("period_start_ms", cut.period_start_ms)?,
                &to_i64("after", page.after)?,
                &to_i64("last", cut.last_share)?,
                &i64::from(pager.rows_wanted()),
            ],
        )?;
        for r in &rows {
            let share = ReceiptShare {
                header: header("shares.header", r, 1)?,
                share_target: target("shares.share_target", r, 2)?,
                work: parse_u128("shares.work", r.get(3))?,
                node: r.get(4),
                at_ms: to_u64("shares.at_ms", r.get(5))?,
                upstream: None,
            };
            if !pager.offer(to_u64("shares.id", r.get(0))?, share) {
                break;
            }
        }
        let receipt = records::receipt_page(account, (standard.as_str(), delivered.as_str()), cut, pager, |hashes| {
            upstream::share_outcomes(&mut tx, hashes)
        })?;
        tx.commit()?;
        Ok(Some(receipt))
    }
}

/// The records of accounts at pools (schema step 6; see `service::upstream_store`, whose SQL
/// these mirror in PostgreSQL's placeholders).
mod upstream {
    use hashgrid_common::BlockHash;
    use hashgrid_common::message::{PoolSettings, StandardBasis};
    use postgres::{GenericClient, Transaction};

    use super::{StoreError, parse_u128, to_i64};
    use crate::core::{Account, Work};

    /// `StoreOp::AccountPoolSet`.
    pub(super) fn set_pool(
        tx: &mut Transaction<'_>,
        account: &str,
        pool: Option<&PoolSettings>,
        basis: StandardBasis,
    ) -> Result<(), StoreError> {
        tx.execute("DELETE FROM account_pools WHERE account = $1", &[&account])?;
        if let Some(pool) = pool {
            for (position, url) in pool.urls.iter().enumerate() {
                tx.execute(
                    "INSERT INTO account_pools (account, position, url, user_name, password, extranonce_subscribe)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &account,
                        &(position as i64),
                        url,
                        &pool.user,
                        &pool.password,
                        &i64::from(pool.extranonce_subscribe_to(position)),
                    ],
                )?;
            }
        }
        tx.execute("DELETE FROM account_basis WHERE account = $1", &[&account])?;
        tx.execute("INSERT INTO account_basis (account, basis) VALUES ($1, $2)", &[&account, &basis.as_str()])?;
        Ok(())
    }

    /// `StoreOp::UpstreamSubmitted`.
    pub(super) fn submitted(
        tx: &mut Transaction<'_>,
        account: &str,
        hash: &BlockHash,
        url: &str,
        pool_job: &str,
        work: Work,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO upstream_submits (hash, account, url, pool_job, work, outcome, at_ms)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
            &[&hash.0.as_slice(), &account, &url, &pool_job, &work.to_string(), &to_i64("at_ms", at_ms)?],
        )?;
        Ok(())
    }

    /// `StoreOp::UpstreamOutcome`.
    pub(super) fn outcome(
        tx: &mut Transaction<'_>,
        hash: &BlockHash,
        outcome: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        tx.execute(
            "UPDATE upstream_submits SET outcome = $1, answered_ms = $2 WHERE hash = $3 AND outcome = 'pending'",
            &[&outcome, &to_i64("answered_ms", at_ms)?, &hash.0.as_slice()],
        )?;
        Ok(())
    }

    /// Every account's pool settings; and, into `accounts`, each one's basis and accepted
    /// upstream work of its current period.
    pub(super) fn load(
        client: &mut impl GenericClient,
        accounts: &mut [Account],
    ) -> Result<Vec<(String, PoolSettings)>, StoreError> {
        let mut pools: Vec<(String, PoolSettings)> = Vec::new();
        for r in client.query(
            "SELECT account, url, user_name, password, extranonce_subscribe FROM account_pools
             ORDER BY account COLLATE \"C\", position",
            &[],
        )? {
            let (account, url): (String, String) = (r.get(0), r.get(1));
            match pools.last_mut().filter(|(a, _)| *a == account) {
                Some((_, p)) => {
                    p.urls.push(url);
                    p.backup_extranonce_subscribe = r.get::<_, i64>(4) != 0;
                }
                None => pools.push((
                    account,
                    PoolSettings {
                        urls: vec![url],
                        user: r.get(2),
                        password: r.get(3),
                        extranonce_subscribe: r.get::<_, i64>(4) != 0,
                        backup_extranonce_subscribe: false,
                    },
                )),
            }
        }
        for a in accounts.iter_mut() {
            if let Some(r) = client.query_opt("SELECT basis FROM account_basis WHERE account = $1", &[&a.name])? {
                a.basis = r
                    .get::<_, String>(0)
                    .parse()
                    .map_err(|detail| StoreError::Corrupt { what: "account_basis.basis", detail })?;
            }
            for r in client.query(
                "SELECT work FROM upstream_submits WHERE account = $1 AND answered_ms >= $2 AND outcome = 'accepted'",
                &[&a.name, &to_i64("period_start_ms", a.period_start_ms)?],
            )? {
                a.accepted_upstream =
                    a.accepted_upstream.saturating_add(Work(parse_u128("upstream_submits.work", r.get(0))?));
            }
        }
        Ok(pools)
    }

    /// Submits a previous process left unanswered: `unknown` (never accepted).
    pub(super) fn close_pending(client: &mut impl GenericClient) -> Result<usize, StoreError> {
        Ok(client.execute("UPDATE upstream_submits SET outcome = 'unknown' WHERE outcome = 'pending'", &[])? as usize)
    }

    /// The upstream outcomes of the shares `hashes`, in their order (`None`: never sent to a
    /// pool), in one query.
    pub(super) fn share_outcomes(
        client: &mut impl GenericClient,
        hashes: &[BlockHash],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let keys: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
        let mut found: std::collections::HashMap<Vec<u8>, String> = std::collections::HashMap::new();
        for r in client.query("SELECT hash, outcome FROM upstream_submits WHERE hash = ANY($1)", &[&keys])? {
            found.insert(r.get(0), r.get(1));
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }
}

fn raw_entry(r: &Row) -> records::RawEntry {
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_translates_to_postgres_words() {
        for sql in MIGRATIONS {
            let pg = dialect(sql);
            for sqlite_only in ["BLOB", "STRICT", "REAL", "INTEGER", "json_extract", "$."] {
                assert!(!pg.contains(sqlite_only), "{sqlite_only} left in {pg}");
            }
        }
        assert_eq!(
            dialect("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, r REAL) STRICT;"),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, b BYTEA, r DOUBLE PRECISION);"
        );
        assert_eq!(
            dialect("SET account = json_extract(payload, '$.from') END"),
            "SET account = (payload::jsonb ->> 'from') END"
        );
    }

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(redact("postgres://hg:secret@db/hashgrid"), "postgres://hg:***@db/hashgrid");
        assert_eq!(redact("postgres://hg@db/hashgrid"), "postgres://hg@db/hashgrid");
        assert_eq!(redact("host=db user=hg"), "host=db user=hg");
    }
}
