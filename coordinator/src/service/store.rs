//! The SQLite store (the default; `backend` says which store a coordinator runs on and holds
//! the interface both implement, `pg` is the PostgreSQL one): the durable record behind the core's `Command::Persist(StoreOp)`s, and the
//! `Snapshot` the core is restored from at start-up.
//!
//! Durability rule: `Store::apply` writes a whole batch of ops in ONE transaction and returns
//! only once it is committed with `synchronous=FULL` (the WAL is fsynced at every commit), so
//! an acknowledgement sent after `apply` returns survives kill -9 and power loss. The shell
//! batches the ops of many shares into one call (group commit); if any op fails, nothing of
//! the batch is written.
//!
//! Schema (version tracked in `PRAGMA user_version`, raised by `MIGRATIONS`, one transaction
//! per step; a database newer than this build is refused). `u128` amounts of work are TEXT
//! decimals (SQLite integers are i64) and are added in Rust inside the transaction; hashes
//! are 32-byte BLOBs in hash order, headers 80-byte BLOBs in wire order, targets 32-byte
//! BLOBs big-endian.
//!
//! - `accounts(name PK, standard, period_ms NULL = one-off, sort_order, delivered, period_start_ms, shares)`
//! - `shares(id PK, account, period_start_ms, node, job, header, share_target, work, at_ms)`,
//!   indexed by `(account, period_start_ms)` and by `job`: every credited share, the delivery
//!   receipt. `period_start_ms` is the account's period it was credited in. Since migration 7 a
//!   row holds no `version`, `time`, `nonce` or `hash`: the header holds the first three (readers
//!   take them from it) and the hash is its sha256d (a smaller row is fewer pages written per
//!   commit and checkpointed after it). Since migration 2 there is no UNIQUE (job, version,
//!   time, nonce) index: it cost most of the credit SQL (one index leaf dirtied per active
//!   range and commit, see docs/bench-intake.md). A share is credited once because the core
//!   refuses duplicates, and `load` rebuilds each submitted job's seen set from these rows, so
//!   that holds across restarts; `apply` also refuses the same share twice within one call.
//! - `settings(key PK, value)`: `policy`.
//! - `jobs(id PK, account, header, target)` and `job_hits(job, version, time, nonce, hash)`:
//!   submitted jobs and the headers found meeting their targets.
//! - `assignments(id, node, account, job, version, start, count, at_ms)`: issued ranges, a
//!   history for audit only (never read back into the core).
//! - The tables of schema step 6 (`account_pools`, `account_basis`, `upstream_submits`) are
//!   described in `upstream_store`.
//! - The tables of schema step 3 (`chains`, `chain_blocks`, `node_chains`, `ledger`) are
//!   described in `records` (`blocks` of step 1 became `chain_blocks` there), those of job
//!   history (`templates`, `range_fates`) in `history`.
//!
//! Hashes, headers and targets are read and written as themselves (the `ToSql`/`FromSql` of
//! `hashgrid_common`'s `sqlite` feature), never through hex.
//!
//! Inside one `apply`, credits do not touch the `accounts` row one by one: the row is read
//! once when a credit first names the account (`Batch::account`) and written once at the end
//! (`Batch::flush_all`). An op that reads or writes `accounts.delivered` or `accounts.shares`
//! must call `Batch::flush` for that account first (as `PeriodRenewed` does).
//!
//! Checkpoints: `apply` never checkpoints the WAL (`wal_autocheckpoint = 0`), so no commit pays
//! for copying pages into the database file. A `Checkpointer` (its own connection and thread,
//! from `Store::checkpointer`) runs a PASSIVE checkpoint about every second (repeated while
//! that catches up), and a TRUNCATE one when the store is idle. A PASSIVE checkpoint never
//! blocks the writer, but under a steady load it never completes either, and only a complete
//! one lets the next commit write the WAL from its start: so once the WAL is longer than
//! `WAL_RESTART_FRAMES` and nearly all of it is copied, the checkpointer asks the store, and
//! the store's owner calls `Store::maintain` between batches (after their acknowledgements),
//! which runs a RESTART checkpoint of the small remainder on the store connection. Dropping the
//! `Checkpointer` stops its thread. A store without one (tests, tools) lets the WAL grow until
//! the last connection closes, which checkpoints it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use hashgrid_common::message::JobId;
use hashgrid_common::message::{Policy, ReceiptShare};
use rusqlite::{CachedStatement, Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{history, records};

pub mod backend;
pub mod pg;
mod pg_tls;
use crate::core::{Account, Snapshot, StoreOp, SubmittedJob, Work};

/// Schema migrations: step `i` takes the database from version `i` to `i + 1` (public for the
/// tests that build an old database and open it with this build).
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE accounts (
        name TEXT PRIMARY KEY,
        standard TEXT NOT NULL,
        period_ms INTEGER,
        sort_order INTEGER NOT NULL,
        delivered TEXT NOT NULL,
        period_start_ms INTEGER NOT NULL,
        shares INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE shares (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(name),
        period_start_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        job INTEGER NOT NULL,
        version INTEGER NOT NULL,
        time INTEGER NOT NULL,
        nonce INTEGER NOT NULL,
        header BLOB NOT NULL CHECK (length(header) = 80),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        share_target BLOB NOT NULL CHECK (length(share_target) = 32),
        work TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        UNIQUE (job, version, time, nonce)
    ) STRICT;
    CREATE INDEX shares_by_account ON shares(account, period_start_ms);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(name),
        header BLOB NOT NULL CHECK (length(header) = 80),
        target BLOB NOT NULL CHECK (length(target) = 32)
    ) STRICT;
    CREATE TABLE job_hits (
        job INTEGER NOT NULL REFERENCES jobs(id),
        version INTEGER NOT NULL,
        time INTEGER NOT NULL,
        nonce INTEGER NOT NULL,
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (job, version, time, nonce)
    ) STRICT;
    CREATE TABLE blocks (
        height INTEGER PRIMARY KEY,
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        account TEXT NOT NULL REFERENCES accounts(name)
    ) STRICT;
    CREATE TABLE assignments (
        id INTEGER NOT NULL,
        node TEXT NOT NULL,
        account TEXT NOT NULL,
        job INTEGER NOT NULL,
        version INTEGER NOT NULL,
        start INTEGER NOT NULL,
        count INTEGER NOT NULL,
        at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX assignments_by_id ON assignments(id);",
    // 2: `shares` without UNIQUE (job, version, time, nonce) (the core refuses duplicates),
    // with an index on `job` for `load`.
    "CREATE TABLE shares_new (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(name),
        period_start_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        job INTEGER NOT NULL,
        version INTEGER NOT NULL,
        time INTEGER NOT NULL,
        nonce INTEGER NOT NULL,
        header BLOB NOT NULL CHECK (length(header) = 80),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        share_target BLOB NOT NULL CHECK (length(share_target) = 32),
        work TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    ) STRICT;
    INSERT INTO shares_new (id, account, period_start_ms, node, job, version, time, nonce, header, hash,
                            share_target, work, at_ms)
        SELECT id, account, period_start_ms, node, job, version, time, nonce, header, hash,
               share_target, work, at_ms
        FROM shares;
    DROP TABLE shares;
    ALTER TABLE shares_new RENAME TO shares;
    CREATE INDEX shares_by_account ON shares(account, period_start_ms);
    CREATE INDEX shares_by_job ON shares(job);",
    // 3: chains, the balancer's node table, the ledger (see `records`).
    super::records::MIGRATION,
    // 4: the ledger's `account` column (see `records`).
    super::records::LEDGER_ACCOUNT_MIGRATION,
    // 5: job history: local-chain templates and range fates (see `history`).
    super::history::MIGRATION,
    // 6: accounts at pools: their pools, standard basis and upstream submits (see `upstream_store`).
    super::upstream_store::MIGRATION,
    // 7: thinner `shares` rows: `version`, `time`, `nonce` and `hash` go, as the `header` holds
    // the first three and `hash` is its sha256d (readers take them from the header). DROP COLUMN
    // rewrites the rows in SQLite and runs as it is in PostgreSQL (no index names them since 2).
    "ALTER TABLE shares DROP COLUMN version;
    ALTER TABLE shares DROP COLUMN time;
    ALTER TABLE shares DROP COLUMN nonce;
    ALTER TABLE shares DROP COLUMN hash;",
];

/// The page cache of the store connection, in KiB (SQLite's default is 2 MiB; the share
/// indexes outgrow that quickly, and every miss is a `pread` in the commit path).
const CACHE_KIB: i64 = 64 * 1024;

/// How often the `Checkpointer` runs.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL frames (pages) beyond which the `Checkpointer` asks for a RESTART checkpoint (16 MiB
/// with 4 KiB pages): with a writer always appending, PASSIVE ones never complete, and the WAL
/// would otherwise grow without bound.
const WAL_RESTART_FRAMES: i64 = 4096;

/// WAL frames not yet in the database that a RESTART may be left to copy (it blocks the store
/// meanwhile); PASSIVE passes repeat until at most this many remain.
const RESTART_BACKLOG_FRAMES: i64 = 256;

/// PASSIVE passes in one round at most, while they catch up.
const PASSIVE_PASSES: usize = 8;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database has schema version {found}, newer than this build knows ({known}): use a newer coordinator")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("share credited twice: job {job}, version {version:#010x}, time {time}, nonce {nonce}")]
    DuplicateShare { job: u64, version: u32, time: u32, nonce: u32 },
    #[error("no account named {0:?} in the store")]
    UnknownAccount(String),
    #[error("corrupt value in the store ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("cannot start the WAL checkpointer thread: {0}")]
    Checkpointer(#[source] std::io::Error),
    #[error("{what} = {value} does not fit a SQLite integer")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("cannot connect to the database {0}")]
    Connect(String),
    #[error("cannot flush the WAL to disk: {0}")]
    Sync(#[source] std::io::Error),
    #[error("fenced: this coordinator's lease (epoch {mine}) was taken over (epoch {current}); nothing was committed")]
    Fenced { mine: i64, current: i64 },
}

impl StoreError {
    /// Whether the database connection was lost (the server gone, shut down, or this session
    /// terminated), so that a new connection may succeed; not an error the database answered.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Postgres(e) => {
                // 08: connection exception; 57P01..03: admin or crash shutdown, cannot connect now.
                let lost_code = e.code().is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"));
                let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
                e.is_closed() || lost_code || io
            }
            _ => false,
        }
    }
}

/// The coordinator's database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Set by the `Checkpointer` when `maintain` should restart the WAL.
    restart_wanted: Arc<AtomicBool>,
    /// Whether the connection runs with `synchronous=FULL` (each commit flushed before it
    /// returns, `apply`) rather than `NORMAL` (flushed by a `WalSync`, `apply_unsynced`).
    full_sync: bool,
}

/// A commit written to the WAL but perhaps not yet on disk (`Store::apply_unsynced`). `sync`
/// flushes the WAL file, which makes that commit and every commit before it durable: nothing
/// that depends on them may be acknowledged before it returns `Ok`.
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
}

impl WalSync {
    /// Flushes the WAL file's data to disk (`fdatasync`).
    pub fn sync(self) -> Result<(), StoreError> {
        std::fs::File::open(&self.wal).and_then(|wal| wal.sync_data()).map_err(StoreError::Sync)
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let mut store = Store { conn, path: path.to_path_buf(), restart_wanted: Arc::default(), full_sync: true };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found, known: SCHEMA_VERSION });
        }
        for (version, sql) in (1..).zip(MIGRATIONS).skip(found.max(0) as usize) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Makes `ops` durable, all or nothing, in one transaction.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.set_full_sync(true)?;
        self.write(ops)
    }

    /// Commits `ops`, all or nothing, in one transaction, without waiting for the disk: the
    /// commit is in the WAL file (so in the OS's cache) when this returns, and durable once
    /// the returned `WalSync` has run. The caller may commit the next batch meanwhile
    /// (pipelining), as long as it acknowledges nothing of this one before the sync. SQLite
    /// itself flushes the WAL before every checkpoint copies it into the database.
    pub fn apply_unsynced(&mut self, ops: &[StoreOp]) -> Result<WalSync, StoreError> {
        self.set_full_sync(false)?;
        self.write(ops)?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(WalSync { wal: wal.into() })
    }

    /// `synchronous=FULL` (`full`) or `NORMAL` on the connection, outside any transaction.
    fn set_full_sync(&mut self, full: bool) -> Result<(), StoreError> {
        if self.full_sync != full {
            self.conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.full_sync = full;
        }
        Ok(())
    }

    fn write(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut batch = Batch::default();
        for op in ops {
            apply_one(&tx, &mut batch, op)?;
        }
        batch.flush_all(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Gives the ranges a previous process left in flight their fate (`history::RESTARTED`);
    /// call before the core starts issuing.
    pub fn close_open_ranges(&self) -> Result<usize, StoreError> {
        history::close_open_ranges(&self.conn)
    }

    /// Gives the submits to pools a previous process left unanswered the outcome `unknown`;
    /// call before the core starts.
    pub fn close_pending_submits(&self) -> Result<usize, StoreError> {
        super::upstream_store::close_pending(&self.conn)
    }

    /// Starts checkpointing this store's WAL on its own connection and thread, until the
    /// returned handle is dropped.
    pub fn checkpointer(&self) -> Result<Checkpointer, StoreError> {
        Checkpointer::start(&self.path, self.restart_wanted.clone())
    }

    /// Work between batches, outside any transaction: when the `Checkpointer` asked for it, a
    /// RESTART checkpoint (the few frames it has not copied yet, then the next commit writes
    /// the WAL from its start). Call it after a batch's acknowledgements are out.
    pub fn maintain(&mut self) -> Result<(), StoreError> {
        if self.restart_wanted.swap(false, Ordering::Relaxed) {
            checkpoint(&self.conn, "RESTART")?;
        }
        Ok(())
    }

    /// The state the core restarts from (`issued` is zero: proportional's clock restarts).
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let policy = match self.setting("policy")? {
            Some(p) => p.parse().map_err(|detail| StoreError::Corrupt { what: "settings.policy", detail })?,
            None => Policy::default(),
        };
        let rollout = self
            .setting("rollout")?
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| StoreError::Corrupt { what: "settings.rollout", detail: e.to_string() })?;

        let mut stmt = self.conn.prepare(
            "SELECT name, standard, period_ms, sort_order, delivered, period_start_ms, shares, chain
             FROM accounts ORDER BY sort_order, name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut accounts = Vec::new();
        for row in rows {
            let (name, standard, period_ms, order, delivered, period_start_ms, shares, chain) = row?;
            accounts.push(Account {
                name,
                standard: Work(parse_u128("accounts.standard", &standard)?),
                period_ms: period_ms.map(|p| to_u64("accounts.period_ms", p)).transpose()?,
                order,
                delivered: Work(parse_u128("accounts.delivered", &delivered)?),
                period_start_ms: to_u64("accounts.period_start_ms", period_start_ms)?,
                shares: to_u64("accounts.shares", shares)?,
                issued: 0,
                chain,
                basis: Default::default(),
                accepted_upstream: Work::ZERO,
            });
        }

        let records::ChainRecords { chains, local_tip: chain, node_chains } = records::load_chains(&self.conn)?;

        let mut stmt = self.conn.prepare("SELECT id, account, header, target FROM jobs ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, account, header, target) = row?;
            jobs.push(SubmittedJob {
                job: to_u64("jobs.id", id)?,
                account,
                header,
                target,
                hits: Vec::new(),
                shares: Vec::new(),
            });
        }
        let mut hits =
            self.conn.prepare("SELECT version, time, nonce, hash FROM job_hits WHERE job = ?1 ORDER BY rowid")?;
        let mut shares = self.conn.prepare("SELECT header FROM shares WHERE job = ?1 ORDER BY id")?;
        for job in &mut jobs {
            let id = to_i64("jobs.id", job.job)?;
            let rows = hits.query_map([id], |r| {
                Ok(hashgrid_common::message::JobHit {
                    version: r.get(0)?,
                    time: r.get(1)?,
                    nonce: r.get(2)?,
                    hash: r.get(3)?,
                })
            })?;
            job.hits = rows.collect::<Result<_, _>>()?;
            job.shares = shares
                .query_map([id], |r| r.get::<_, hashgrid_common::Header>(0).map(|h| (h.version, h.time, h.nonce)))?
                .collect::<Result<_, _>>()?;
        }

        let pools = super::upstream_store::load(&self.conn, &mut accounts)?;
        let pool_counts = super::upstream_store::load_counts(&self.conn)?;
        Ok(Snapshot { policy, accounts, chain, jobs, chains, node_chains, rollout, pools, pool_counts })
    }

    /// The delivery receipt of `account`'s current period: every share credited to it, oldest
    /// first.
    pub fn receipt(&self, account: &str) -> Result<Vec<ReceiptShare>, StoreError> {
        let period_start_ms: i64 = self
            .conn
            .query_row("SELECT period_start_ms FROM accounts WHERE name = ?1", [account], |r| r.get(0))
            .optional()?
            .unwrap_or(-1);
        let mut out = Vec::new();
        if let Ok(period_start_ms) = u64::try_from(period_start_ms) {
            receipt_shares(&self.conn, account, period_start_ms, (0, i64::MAX as u64), |_, share| {
                out.push(share);
                true
            })?;
        }
        Ok(out)
    }

    /// The work of the shares credited to `account` in its current period, summed from the
    /// share rows (it equals the account's `delivered` unless that saturated).
    pub fn credited_total(&self, account: &str) -> Result<u128, StoreError> {
        self.receipt(account)?.iter().try_fold(0u128, |sum, row| {
            sum.checked_add(row.work)
                .ok_or_else(|| StoreError::Corrupt { what: "shares.work", detail: "the sum overflows u128".into() })
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }
}

/// Checkpoints a store's WAL from its own connection and thread (the store connection has
/// `wal_autocheckpoint = 0`). Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, restart_wanted: Arc<AtomicBool>) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        // Short: a TRUNCATE waits for the writer, and is simply retried a second later.
        conn.busy_timeout(Duration::from_millis(100))?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hashgrid-ckpt".into())
            .spawn(move || checkpoint_loop(&conn, &stopped, &restart_wanted))
            .map_err(StoreError::Checkpointer)?;
        Ok(Checkpointer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every `CHECKPOINT_EVERY`: PASSIVE passes (never blocking the writer) until at most
/// `RESTART_BACKLOG_FRAMES` remain; then TRUNCATE if nothing was written since the last round
/// (idle), or a request for a RESTART if the WAL is longer than `WAL_RESTART_FRAMES`.
fn checkpoint_loop(conn: &Connection, stopped: &mpsc::Receiver<()>, restart_wanted: &AtomicBool) {
    let mut last_log = -1;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        let mut frames = None;
        for _ in 0..PASSIVE_PASSES {
            match checkpoint(conn, "PASSIVE") {
                Ok(Some((log, done))) => {
                    frames = Some((log, done));
                    if log - done <= RESTART_BACKLOG_FRAMES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("WAL checkpoint failed: {e}");
                    break;
                }
            }
        }
        let Some((log, done)) = frames else { continue };
        if log > 0 && log == done && log == last_log {
            match checkpoint(conn, "TRUNCATE") {
                Ok(Some((log, _))) => last_log = log,
                Ok(None) => {}
                Err(e) => tracing::warn!("WAL checkpoint (truncate) failed: {e}"),
            }
            continue;
        }
        if log >= WAL_RESTART_FRAMES && log - done <= RESTART_BACKLOG_FRAMES {
            restart_wanted.store(true, Ordering::Relaxed);
        }
        last_log = log;
    }
}

/// Runs one `wal_checkpoint(mode)`: the WAL's frames and those now in the database, or
/// `None` when it could not run (busy).
fn checkpoint(conn: &Connection, mode: &str) -> Result<Option<(i64, i64)>, StoreError> {
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok((busy == 0).then_some((log, done)))
}

/// The shares one `apply` credited, by (job, version, time, nonce) (no share twice in one call).
/// foldhash (seeded per process), not std's SipHash: one insert per credit, and the keys are
/// shares the core verified, each worth its proof of work, so no peer picks them freely.
pub(super) type SeenShares = HashSet<(JobId, u32, u32, u32), foldhash::fast::RandomState>;

/// What one `apply` keeps across its ops: the accounts its credits changed, written back
/// once at the end, the shares it credited, and its share `INSERT` (prepared once per call,
/// not looked up in the statement cache per credit).
#[derive(Default)]
struct Batch<'tx> {
    accounts: HashMap<String, AccountDelta, foldhash::fast::RandomState>,
    seen: SeenShares,
    insert_share: Option<CachedStatement<'tx>>,
}

/// An account row as this batch's credits left it: `delivered` is the new total, `added` the
/// shares to add to `accounts.shares`.
#[derive(Debug)]
struct AccountDelta {
    delivered: u128,
    period_start_ms: i64,
    added: i64,
}

impl<'tx> Batch<'tx> {
    /// The account's row, read from the database the first time this batch names it.
    fn account(&mut self, tx: &Transaction<'_>, name: &str) -> Result<&mut AccountDelta, StoreError> {
        if !self.accounts.contains_key(name) {
            let (delivered, period_start_ms): (String, i64) = tx
                .prepare_cached("SELECT delivered, period_start_ms FROM accounts WHERE name = ?1")?
                .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::UnknownAccount(name.to_string()))?;
            let delivered = parse_u128("accounts.delivered", &delivered)?;
            self.accounts.insert(name.to_string(), AccountDelta { delivered, period_start_ms, added: 0 });
        }
        Ok(self.accounts.get_mut(name).expect("inserted above"))
    }

    /// Writes the account's row back and forgets it (the next credit reads it again).
    fn flush(&mut self, tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
        if let Some(delta) = self.accounts.remove(name) {
            write_account(tx, name, &delta)?;
        }
        Ok(())
    }

    /// The share `INSERT`, prepared the first time this batch credits a share.
    fn insert_share(&mut self, tx: &'tx Transaction<'_>) -> Result<&mut CachedStatement<'tx>, StoreError> {
        if self.insert_share.is_none() {
            self.insert_share = Some(tx.prepare_cached(
                "INSERT INTO shares (account, period_start_ms, node, job, header, share_target, work, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?);
        }
        Ok(self.insert_share.as_mut().expect("prepared above"))
    }

    fn flush_all(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        for (name, delta) in &self.accounts {
            write_account(tx, name, delta)?;
        }
        Ok(())
    }
}

fn write_account(tx: &Transaction<'_>, name: &str, delta: &AccountDelta) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE accounts SET delivered = ?1, shares = shares + ?2 WHERE name = ?3")?.execute(params![
        delta.delivered.to_string(),
        delta.added,
        name
    ])?;
    Ok(())
}

fn apply_one<'tx>(tx: &'tx Transaction<'_>, batch: &mut Batch<'tx>, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::AccountAdded { name, standard, period_ms, order, period_start_ms, chain } => {
            let period_ms = period_ms.map(|p| to_i64("period_ms", p)).transpose()?;
            tx.prepare_cached(
                "INSERT INTO accounts (name, standard, period_ms, sort_order, delivered, period_start_ms, shares, chain)
                 VALUES (?1, ?2, ?3, ?4, '0', ?5, 0, ?6)",
            )?
            .execute(params![
                name,
                standard.to_string(),
                period_ms,
                order,
                to_i64("period_start_ms", *period_start_ms)?,
                chain
            ])?;
        }
        StoreOp::Credit { account, work, node, job, header, share_target, at_ms } => {
            credit_once(&mut batch.seen, *job, header)?;
            let entry = batch.account(tx, account)?;
            // Saturating, as the core adds.
            entry.delivered = entry.delivered.saturating_add(work.0);
            entry.added += 1;
            let period_start_ms = entry.period_start_ms;
            // Bound from the stack: no allocation per credit for the blobs or the decimal.
            let (header_bytes, target_bytes) = (header.to_bytes(), share_target.to_be_bytes());
            let mut decimal = itoa::Buffer::new();
            batch.insert_share(tx)?.execute(params![
                account,
                period_start_ms,
                node,
                to_i64("job", *job)?,
                &header_bytes[..],
                &target_bytes[..],
                decimal.format(work.0),
                to_i64("at_ms", *at_ms)?,
            ])?;
        }
        StoreOp::PeriodRenewed { account, period_start_ms } => {
            batch.flush(tx, account)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE accounts SET delivered = '0', shares = 0, period_start_ms = ?1 WHERE name = ?2",
                )?
                .execute(params![to_i64("period_start_ms", *period_start_ms)?, account])?;
            if changed == 0 {
                return Err(StoreError::UnknownAccount(account.clone()));
            }
        }
        StoreOp::PolicySet(policy) => {
            tx.prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('policy', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([policy.as_str()])?;
        }
        StoreOp::RolloutSet(Some(rollout)) => {
            let value = serde_json::to_string(rollout)
                .map_err(|e| StoreError::Corrupt { what: "settings.rollout", detail: e.to_string() })?;
            tx.prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('rollout', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([value])?;
        }
        StoreOp::RolloutSet(None) => {
            tx.prepare_cached("DELETE FROM settings WHERE key = 'rollout'")?.execute([])?;
        }
        StoreOp::JobSubmitted { job, account, header, target } => {
            tx.prepare_cached("INSERT INTO jobs (id, account, header, target) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![to_i64("job", *job)?, account, header, target])?;
        }
        StoreOp::JobHit { job, hit } => {
            tx.prepare_cached("INSERT INTO job_hits (job, version, time, nonce, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![to_i64("job", *job)?, hit.version, hit.time, hit.nonce, hit.hash])?;
        }
        StoreOp::BlockFound { chain, height, hash, account } => records::add_block(tx, chain, *height, hash, account)?,
        StoreOp::ChainAdded { params, at_ms } => records::add_chain(tx, params, *at_ms)?,
        StoreOp::NodeChain { node, chain, at_ms } => records::set_node_chain(tx, node, chain.as_deref(), *at_ms)?,
        StoreOp::TemplateMade { job, account, header, target } => {
            history::add_template(tx, *job, account, header, target)?
        }
        StoreOp::RangeFate { assignment, fate, handed } => history::set_fate(tx, *assignment, fate, *handed)?,
        StoreOp::Ledger { at_ms, record } => records::append_ledger(tx, *at_ms, record)?,
        StoreOp::AccountPoolSet { account, pool, basis } => {
            super::upstream_store::set_pool(tx, account, pool.as_ref(), *basis)?
        }
        StoreOp::UpstreamSubmitted { account, hash, url, pool_job, work, at_ms } => {
            super::upstream_store::submitted(tx, account, hash, url, pool_job, *work, *at_ms)?
        }
        StoreOp::UpstreamOutcome { hash, outcome, at_ms } => super::upstream_store::outcome(tx, hash, outcome, *at_ms)?,
        StoreOp::AssignmentIssued { assignment, node, account, job, version, start, count, at_ms } => {
            tx.prepare_cached(
                "INSERT INTO assignments (id, node, account, job, version, start, count, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                to_i64("assignment", *assignment)?,
                node,
                account,
                to_i64("job", *job)?,
                version,
                start,
                to_i64("count", *count)?,
                to_i64("at_ms", *at_ms)?,
            ])?;
        }
    }
    Ok(())
}

/// The shares credited to `account` in the period that started at `period_start_ms`, numbered
/// (`shares.id`) after `after` and at most `last`, oldest first, each with its number, handed
/// to `take` until it returns `false`. Re-hash each `header`, check the hash meets
/// `share_target` and that `work` is `share_target.work()`; the works of a period sum to its
/// delivered total.
pub(super) fn receipt_shares(
    conn: &Connection,
    account: &str,
    period_start_ms: u64,
    (after, last): (u64, u64),
    mut take: impl FnMut(u64, ReceiptShare) -> bool,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, header, share_target, work, node, at_ms FROM shares
         WHERE account = ?1 AND period_start_ms = ?2 AND id > ?3 AND id <= ?4 ORDER BY id",
    )?;
    let bounds = (to_i64("period_start_ms", period_start_ms)?, to_i64("after", after)?, to_i64("last", last)?);
    let mut rows = stmt.query(params![account, bounds.0, bounds.1, bounds.2])?;
    while let Some(r) = rows.next()? {
        let share = ReceiptShare {
            header: r.get(1)?,
            share_target: r.get(2)?,
            work: parse_u128("shares.work", &r.get::<_, String>(3)?)?,
            node: r.get(4)?,
            at_ms: to_u64("shares.at_ms", r.get(5)?)?,
            upstream: None,
        };
        if !take(to_u64("shares.id", r.get(0)?)?, share) {
            break;
        }
    }
    Ok(())
}

/// Refuses the same share twice within one `apply` (either store's batch keeps `seen`).
pub(super) fn credit_once(
    seen: &mut SeenShares,
    job: JobId,
    header: &hashgrid_common::Header,
) -> Result<(), StoreError> {
    if !seen.insert((job, header.version, header.time, header.nonce)) {
        return Err(StoreError::DuplicateShare {
            job,
            version: header.version,
            time: header.time,
            nonce: header.nonce,
        });
    }
    Ok(())
}

pub(super) fn to_i64(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

pub(super) fn to_u64(what: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt { what, detail: format!("{value} is negative") })
}

pub(super) fn parse_u128(what: &'static str, s: &str) -> Result<u128, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { what, detail: format!("{s:?} is not a u128") })
}

pub(super) fn fixed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt { what, detail: format!("{} bytes, expected {N}", bytes.len()) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hashgrid_common::message::JobHit;
    use hashgrid_common::{CompactTarget, Hash256, Header, Target};

    const T0: u64 = 1_700_000_000_000;

    fn template(seed: u8) -> Header {
        Header {
            version: 0x2000_0000,
            prev_blockhash: Hash256([seed; 32]),
            merkle_root: Hash256::sha256d(&[seed]),
            time: 1_700_000_000,
            bits: CompactTarget(0x1d00ffff),
            nonce: 0,
        }
    }

    /// `n` real shares of `template` meeting a target worth `work` hashes each.
    fn mine(template: Header, work: u128, n: usize) -> Vec<(Header, Target)> {
        let target = Target::from_expected_hashes(work);
        (0..u32::MAX)
            .map(|nonce| template.with_nonce(nonce))
            .filter(|h| target.is_met_by(&h.block_hash()))
            .take(n)
            .map(|h| (h, target))
            .collect()
    }

    /// The first column of every row of `sql`.
    fn names(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn credit(account: &str, job: u64, header: Header, share_target: Target, at_ms: u64) -> StoreOp {
        StoreOp::Credit {
            account: account.into(),
            work: Work(share_target.work()),
            node: "rig-1".into(),
            job,
            header,
            share_target,
            at_ms,
        }
    }

    fn added(name: &str, standard: u128, period_ms: Option<u64>, order: i64) -> StoreOp {
        StoreOp::AccountAdded {
            name: name.into(),
            standard: Work(standard),
            period_ms,
            order,
            period_start_ms: T0,
            chain: "local".into(),
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("hashgrid.db")).expect("open")
    }

    #[test]
    fn a_batch_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let local = template(1);
        let submitted = template(2);
        let job_target = Target::from_expected_hashes(4);
        let local_shares = mine(local, 16, 5);
        let job_shares = mine(submitted, 4, 3);
        let hit = JobHit {
            version: job_shares[0].0.version,
            time: job_shares[0].0.time,
            nonce: job_shares[0].0.nonce,
            hash: job_shares[0].0.block_hash(),
        };
        let block = local_shares[4].0.block_hash();

        let mut ops = vec![
            added("bob", 1_000_000, None, 2),
            added("alice", 5_000, Some(60_000), 1),
            StoreOp::PolicySet(Policy::Proportional),
            StoreOp::JobSubmitted { job: 7, account: "bob".into(), header: submitted, target: job_target },
            StoreOp::AssignmentIssued {
                assignment: 8,
                node: "rig-1".into(),
                account: "alice".into(),
                job: 3,
                version: local.version,
                start: 0,
                count: 1 << 20,
                at_ms: T0,
            },
        ];
        // Two of alice's shares, then her period renews, then three more.
        ops.extend(local_shares[..2].iter().map(|&(h, t)| credit("alice", 3, h, t, T0 + 10)));
        ops.push(StoreOp::PeriodRenewed { account: "alice".into(), period_start_ms: T0 + 60_000 });
        ops.extend(local_shares[2..].iter().map(|&(h, t)| credit("alice", 3, h, t, T0 + 60_010)));
        ops.extend(job_shares.iter().map(|&(h, t)| credit("bob", 7, h, t, T0 + 20)));
        ops.push(StoreOp::JobHit { job: 7, hit });
        ops.push(StoreOp::BlockFound { chain: "local".into(), height: 1, hash: block, account: "alice".into() });

        open(&dir).apply(&ops).unwrap();
        let snap = open(&dir).load().unwrap();

        assert_eq!(snap.policy, Policy::Proportional);
        let alice_work: u128 = local_shares[2..].iter().map(|(_, t)| t.work()).sum();
        let bob_work: u128 = job_shares.iter().map(|(_, t)| t.work()).sum();
        assert_eq!(
            snap.accounts,
            vec![
                Account {
                    name: "alice".into(),
                    standard: Work(5_000),
                    period_ms: Some(60_000),
                    order: 1,
                    delivered: Work(alice_work),
                    period_start_ms: T0 + 60_000,
                    shares: 3,
                    issued: 0,
                    chain: "local".into(),
                    basis: Default::default(),
                    accepted_upstream: Work::ZERO,
                },
                Account {
                    name: "bob".into(),
                    standard: Work(1_000_000),
                    period_ms: None,
                    order: 2,
                    delivered: Work(bob_work),
                    period_start_ms: T0,
                    shares: 3,
                    issued: 0,
                    chain: "local".into(),
                    basis: Default::default(),
                    accepted_upstream: Work::ZERO,
                },
            ]
        );
        assert_eq!(snap.chain, Some((1, block)));
        assert_eq!(snap.jobs.len(), 1);
        let job = &snap.jobs[0];
        assert_eq!((job.job, job.account.as_str(), job.header, job.target), (7, "bob", submitted, job_target));
        assert_eq!(job.hits, vec![hit]);
        assert_eq!(job.shares, job_shares.iter().map(|(h, _)| (h.version, h.time, h.nonce)).collect::<Vec<_>>());
    }

    /// The tables the module docs of `store` and `records` name with their columns are the
    /// tables the migrations make.
    #[test]
    fn the_schema_docs_name_every_table_and_no_other() {
        let documented: std::collections::BTreeSet<String> = [
            include_str!("store.rs"),
            include_str!("records.rs"),
            include_str!("history.rs"),
            include_str!("upstream_store.rs"),
        ]
        .iter()
        .flat_map(|src| src.lines().take_while(|l| l.starts_with("//!")))
        .flat_map(|l| l.split('`'))
        .filter_map(|quoted| quoted.split_once('(').map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(String::from)
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tables =
            names(&store.conn, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
        assert_eq!(documented, tables.into_iter().collect());
    }

    #[test]
    fn an_empty_store_loads_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(&dir).load().unwrap();
        assert_eq!(snap.policy, Policy::Sequential);
        assert!(snap.accounts.is_empty() && snap.jobs.is_empty() && snap.chain.is_none());
    }

    /// The store's own guard: the same share twice within one `apply` (one group commit, which
    /// may merge several core batches) fails the whole call and writes nothing of it.
    #[test]
    fn a_duplicate_share_in_one_batch_rolls_the_whole_batch_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let shares = mine(template(1), 8, 3);
        store.apply(&[added("alice", 1000, None, 0), credit("alice", 3, shares[0].0, shares[0].1, T0)]).unwrap();
        let before = store.load().unwrap().accounts;

        let batch = [
            credit("alice", 3, shares[1].0, shares[1].1, T0),
            credit("alice", 3, shares[2].0, shares[2].1, T0),
            credit("alice", 3, shares[1].0, shares[1].1, T0),
        ];
        let err = store.apply(&batch).unwrap_err();
        assert!(matches!(err, StoreError::DuplicateShare { job: 3, nonce, .. } if nonce == shares[1].0.nonce), "{err}");
        assert_eq!(store.load().unwrap().accounts, before);
        assert_eq!(store.receipt("alice").unwrap().len(), 1);
        // The batch without the duplicate goes through, crediting each share once.
        store.apply(&batch[..2]).unwrap();
        let alice = &store.load().unwrap().accounts[0];
        assert_eq!(alice.shares, 3);
        assert_eq!(alice.delivered.0, shares.iter().map(|(_, t)| t.work()).sum::<u128>());
    }

    /// A 1 MH/s CPU node's hello.
    pub(crate) fn node_hello(name: &str) -> hashgrid_common::message::NodeHello {
        use hashgrid_common::message::{DeviceInfo, NodeHello};
        NodeHello {
            token: String::new(),
            name: name.into(),
            software_version: "test".into(),
            standby: false,
            devices: vec![DeviceInfo { kind: "cpu".into(), name: "test".into(), hashrate: 1e6 }],
            hashrate: 1e6,
        }
    }

    /// Runs `f` on the core, makes its records durable and returns what it sent.
    pub(crate) fn step(
        core: &mut crate::core::Core,
        store: &mut Store,
        f: &dyn Fn(&mut crate::core::Core),
    ) -> Vec<hashgrid_common::message::CoordinatorMessage> {
        use crate::core::Command;
        f(core);
        let mut sent = Vec::new();
        let mut ops = Vec::new();
        for c in core.drain_commands() {
            match c {
                Command::Persist(op) => ops.push(op),
                Command::Send { msg, .. } => sent.push(msg),
                _ => {}
            }
        }
        store.apply(&ops).unwrap();
        sent
    }

    /// Across batches and restarts the core refuses duplicates: `load` gives each submitted
    /// job the shares already credited, and a restored core rejects them as duplicates, so no
    /// second `Credit` ever reaches the store.
    #[test]
    fn a_share_credited_before_a_restart_is_refused_after_it() {
        use crate::core::{Core, CoreConfig};
        use hashgrid_common::message::{CoordinatorMessage, NodeMessage, RejectReason, Share, ShareOutcome};

        let config = CoreConfig { min_share_work: 16, shares_per_second: 1e9, id_base: 1, ..CoreConfig::default() };
        let hello = node_hello("rig-1");
        // The share of the submitted job that node 1 sends: found in its first range of the job.
        let share_of = |sent: &[CoordinatorMessage], job: u64| {
            sent.iter()
                .find_map(|m| match m {
                    CoordinatorMessage::Assign(a) if a.job == job => Some(*a),
                    _ => None,
                })
                .map(|a| {
                    let nonce = (a.start..=u32::MAX)
                        .find(|&n| a.share_target.is_met_by(&a.header.with_nonce(n).block_hash()))
                        .unwrap();
                    Share { id: 1, assignment: a.id, job, version: a.header.version, time: a.header.time, nonce }
                })
                .expect("an assignment of the submitted job")
        };
        let outcome = |sent: &[CoordinatorMessage]| {
            sent.iter()
                .find_map(|m| match m {
                    CoordinatorMessage::ShareResult { outcome, .. } => Some(*outcome),
                    _ => None,
                })
                .unwrap()
        };

        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let mut core = Core::new(config.clone());
        let job = std::cell::Cell::new(0);
        step(&mut core, &mut store, &|core| {
            core.add_account(T0, "bob", u128::MAX, None, Some(1), None).unwrap();
            job.set(core.submit_job(T0, "bob", template(2), Target::from_expected_hashes(1 << 40)).unwrap());
        });
        let sent = step(&mut core, &mut store, &|core| {
            core.handle_node_joined(T0, 1, &hello, hashgrid_common::message::PROTOCOL_VERSION)
        });
        let share = share_of(&sent, job.get());
        let sent = step(&mut core, &mut store, &|core| core.handle_node_message(T0, 1, NodeMessage::Share(share)));
        assert!(matches!(outcome(&sent), ShareOutcome::Accepted { .. }), "{sent:?}");
        drop((core, store));

        // Restart: the same share, in the node's new range of the same job, is a duplicate.
        let mut store = open(&dir);
        let mut core = Core::restore(config, store.load().unwrap());
        let sent = step(&mut core, &mut store, &|core| {
            core.handle_node_joined(T0 + 1, 1, &hello, hashgrid_common::message::PROTOCOL_VERSION)
        });
        let again = Share { assignment: share_of(&sent, job.get()).assignment, ..share };
        let sent = step(&mut core, &mut store, &|core| core.handle_node_message(T0 + 1, 1, NodeMessage::Share(again)));
        assert_eq!(outcome(&sent), ShareOutcome::Rejected(RejectReason::Duplicate));
        assert_eq!(store.load().unwrap().accounts[0].shares, 1);
        assert_eq!(store.receipt("bob").unwrap().len(), 1);
    }

    #[test]
    fn migrations_keep_the_shares_and_drop_the_unique_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let shares = mine(template(1), 8, 2);
        {
            // A version-1 database with two credited shares.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            old_account_and_job(&conn, 3);
            for &(header, target) in &shares {
                old_credit(&conn, 3, header, target);
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let snap = store.load().unwrap();
        assert_eq!(snap.accounts[0].shares, 2);
        assert_eq!(snap.accounts[0].chain, "local", "step 3 puts old accounts on the built-in chain");
        assert_eq!(store.receipt("alice").unwrap().len(), 2);
        let indexes = names(
            &store.conn,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'shares' ORDER BY name",
        );
        assert_eq!(indexes, ["shares_by_account", "shares_by_job"]);
    }

    /// An account "alice" (period from `T0`) and job `job` in a database of schema 1 to 6.
    fn old_account_and_job(conn: &Connection, job: i64) {
        conn.execute(
            "INSERT INTO accounts (name, standard, period_ms, sort_order, delivered, period_start_ms, shares)
             VALUES ('alice', '1000', NULL, 0, '0', ?1, 0)",
            [T0 as i64],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO jobs (id, account, header, target) VALUES (?1, 'alice', ?2, ?3)",
            params![job, template(1), Target::MAX],
        )
        .unwrap();
    }

    /// A share credited to "alice" as schemas 1 to 6 wrote it (with `version`, `time`,
    /// `nonce` and `hash` columns).
    fn old_credit(conn: &Connection, job: i64, header: Header, target: Target) {
        conn.execute(
            "INSERT INTO shares (account, period_start_ms, node, job, version, time, nonce, header, hash,
                                 share_target, work, at_ms)
             VALUES ('alice', ?1, 'rig-1', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                T0 as i64,
                job,
                header.version,
                header.time,
                header.nonce,
                header,
                header.block_hash(),
                target,
                target.work().to_string(),
                T0 as i64 + 5
            ],
        )
        .unwrap();
        conn.execute(
            "UPDATE accounts SET delivered = delivered + ?1, shares = shares + 1",
            [target.work().to_string()],
        )
        .unwrap();
    }

    /// Step 7 drops `version`, `time`, `nonce` and `hash` from `shares`: a version-6 database
    /// keeps every share, its receipt row and the duplicate check's seen set after it.
    #[test]
    fn thinner_share_rows_keep_every_share_its_receipt_and_its_seen_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let shares: Vec<_> = mine(template(1), 8, 5).into_iter().chain(mine(template(2), 64, 4)).collect();
        {
            let conn = Connection::open(&path).unwrap();
            for (version, sql) in (1..=6).zip(MIGRATIONS) {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            old_account_and_job(&conn, 3);
            for &(header, target) in &shares {
                old_credit(&conn, 3, header, target);
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let columns = names(&store.conn, "SELECT name FROM pragma_table_info('shares') ORDER BY cid");
        assert_eq!(
            columns,
            ["id", "account", "period_start_ms", "node", "job", "header", "share_target", "work", "at_ms"]
        );

        let receipt = store.receipt("alice").unwrap();
        let got: Vec<_> =
            receipt.iter().map(|r| (r.header, r.share_target, r.work, r.node.as_str(), r.at_ms)).collect();
        let want: Vec<_> = shares.iter().map(|&(h, t)| (h, t, t.work(), "rig-1", T0 + 5)).collect();
        assert_eq!(got, want, "every share, in order, with its columns");
        let snap = store.load().unwrap();
        let seen: Vec<_> = shares.iter().map(|(h, _)| (h.version, h.time, h.nonce)).collect();
        assert_eq!(snap.jobs[0].shares, seen, "the job's seen set, read from the headers");
        let total: u128 = shares.iter().map(|(_, t)| t.work()).sum();
        assert_eq!((snap.accounts[0].delivered.0, snap.accounts[0].shares), (total, shares.len() as u64));
    }

    #[test]
    fn the_checkpointer_empties_the_wal_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let shares = mine(template(1), 2, 50);
        store.apply(&[added("alice", 1000, None, 0)]).unwrap();
        for &(h, t) in &shares {
            store.apply(&[credit("alice", 1, h, t, T0)]).unwrap();
        }
        let wal = dir.path().join("hashgrid.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0, "no automatic checkpoint in the store connection");
        let checkpointer = store.checkpointer().unwrap();
        let start = std::time::Instant::now();
        while std::fs::metadata(&wal).unwrap().len() > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the WAL was not truncated");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(checkpointer);
        assert_eq!(store.load().unwrap().accounts[0].shares, 50);
        // A restart the checkpointer asked for runs between batches, and the store goes on.
        store.restart_wanted.store(true, Ordering::Relaxed);
        store.maintain().unwrap();
        assert!(!store.restart_wanted.load(Ordering::Relaxed));
        store.apply(&[credit("alice", 2, shares[0].0, shares[0].1, T0)]).unwrap();
        assert_eq!(store.load().unwrap().accounts[0].shares, 51);
    }

    #[test]
    fn a_credit_to_an_unknown_account_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shares = mine(template(1), 2, 1);
        let err = open(&dir).apply(&[credit("nobody", 1, shares[0].0, shares[0].1, T0)]).unwrap_err();
        assert!(matches!(err, StoreError::UnknownAccount(ref n) if n == "nobody"), "{err}");
    }

    #[test]
    fn migrations_run_once_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.apply(&[added("alice", 10, None, 0)]).unwrap();
        drop(store);
        // Reopening does not re-run the migrations (they would fail on existing tables).
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.load().unwrap().accounts.len(), 1);
        store.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(store);
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION)
        );
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }

    #[test]
    fn u128_amounts_near_2_pow_127_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let big = (1u128 << 127) + 12_345;
        let shares = mine(template(1), 2, 2);
        let op = |i: usize, work: u128| StoreOp::Credit {
            account: "whale".into(),
            work: Work(work),
            node: "rig-1".into(),
            job: 1,
            header: shares[i].0,
            share_target: shares[i].1,
            at_ms: T0,
        };
        open(&dir).apply(&[added("whale", big, None, 0), op(0, (1 << 127) - 1), op(1, (1 << 127) - 7)]).unwrap();
        let store = open(&dir);
        let whale = &store.load().unwrap().accounts[0];
        assert_eq!(whale.standard.0, big);
        assert_eq!(whale.delivered.0, u128::MAX - 7);
        assert_eq!(store.credited_total("whale").unwrap(), whale.delivered.0);
    }

    #[test]
    fn receipts_rehash_and_sum_to_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let old = mine(template(1), 32, 2);
        let new: Vec<_> = mine(template(2), 32, 4).into_iter().chain(mine(template(3), 1000, 2)).collect();
        let mut ops = vec![added("alice", 1 << 30, Some(1000), 0)];
        ops.extend(old.iter().map(|&(h, t)| credit("alice", 1, h, t, T0 + 1)));
        ops.push(StoreOp::PeriodRenewed { account: "alice".into(), period_start_ms: T0 + 1000 });
        ops.extend(new.iter().enumerate().map(|(i, &(h, t))| credit("alice", 2 + i as u64 / 4, h, t, T0 + 1001)));
        store.apply(&ops).unwrap();

        let receipt = store.receipt("alice").unwrap();
        assert_eq!(receipt.len(), new.len(), "only the current period");
        for row in &receipt {
            let hash = row.header.block_hash();
            assert!(row.share_target.is_met_by(&hash));
            assert_eq!(row.work, row.share_target.work());
            assert_eq!((row.node.as_str(), row.at_ms), ("rig-1", T0 + 1001));
        }
        let total: u128 = receipt.iter().map(|r| r.work).sum();
        assert_eq!(total, store.load().unwrap().accounts[0].delivered.0);
        assert_eq!(store.credited_total("alice").unwrap(), total);
        assert_eq!(store.credited_total("nobody").unwrap(), 0);
    }

    /// Across other ops between credits, two works and two accounts, every share row holds
    /// its own share's columns, rows keep the ops' order, and each is in the period it was
    /// credited in.
    #[test]
    fn share_rows_keep_each_shares_columns_order_and_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let shares: Vec<_> = mine(template(1), 4, 60).into_iter().chain(mine(template(2), 16, 50)).collect();
        let (first, then) = shares.split_at(69);
        let account = |i: usize| if i % 7 == 3 { "bob" } else { "alice" };
        let mut ops = vec![added("alice", u128::MAX, Some(1000), 0), added("bob", u128::MAX, None, 1)];
        let mut expected = Vec::new();
        for (i, &(h, t)) in first.iter().enumerate() {
            ops.push(credit(account(i), 1 + i as u64 / 60, h, t, T0 + i as u64));
            expected.push((account(i), T0, h, t, T0 + i as u64));
        }
        ops.push(StoreOp::PeriodRenewed { account: "alice".into(), period_start_ms: T0 + 1000 });
        for (i, &(h, t)) in then.iter().enumerate() {
            let i = i + first.len();
            ops.push(credit(account(i), 1 + i as u64 / 60, h, t, T0 + i as u64));
            let period = if account(i) == "alice" { T0 + 1000 } else { T0 };
            expected.push((account(i), period, h, t, T0 + i as u64));
        }
        store.apply(&ops).unwrap();

        let mut stmt = store
            .conn
            .prepare(
                "SELECT account, period_start_ms, node, job, header, share_target, work, at_ms FROM shares ORDER BY id",
            )
            .unwrap();
        type Row = (String, i64, String, i64, Header, Target, String, i64);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), expected.len());
        for (i, (row, &(account, period, h, t, at_ms))) in rows.iter().zip(&expected).enumerate() {
            let want = (
                account.to_string(),
                period as i64,
                "rig-1".to_string(),
                1 + i as i64 / 60,
                h,
                t,
                t.work().to_string(),
                at_ms as i64,
            );
            assert_eq!(row, &want, "row {i}");
        }
        let alice: u128 = expected.iter().filter(|e| e.0 == "alice" && e.1 == T0 + 1000).map(|e| e.3.work()).sum();
        let bob: u128 = expected.iter().filter(|e| e.0 == "bob").map(|e| e.3.work()).sum();
        let snap = store.load().unwrap();
        let got: Vec<(u128, u64)> = snap.accounts.iter().map(|a| (a.delivered.0, a.shares)).collect();
        let count = |name, period| expected.iter().filter(|e| e.0 == name && e.1 == period).count() as u64;
        assert_eq!(got, vec![(alice, count("alice", T0 + 1000)), (bob, count("bob", T0))]);
        assert_eq!(store.credited_total("alice").unwrap(), alice);
    }

    /// Credit throughput of one 1000-op batch with synchronous=FULL. Run by hand:
    /// `cargo test -p hashgrid-coordinator --release store::tests::credit_throughput -- --ignored --nocapture`
    /// (`HASHGRID_BENCH_DIR` picks the disk; the default temp dir may be a RAM disk).
    #[test]
    #[ignore]
    fn credit_throughput() {
        let dir = match std::env::var_os("HASHGRID_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut store = open(&dir);
        store.apply(&[added("alice", u128::MAX, None, 0)]).unwrap();
        let target = Target::MAX;
        let batches = 20u32;
        let mut elapsed = Duration::ZERO;
        for b in 0..batches {
            let ops: Vec<_> =
                (0..1000).map(|n| credit("alice", 1, template(1).with_nonce(b * 1000 + n), target, T0)).collect();
            let start = std::time::Instant::now();
            store.apply(&ops).unwrap();
            elapsed += start.elapsed();
        }
        let ops = f64::from(batches) * 1000.0;
        println!(
            "{} batches of 1000 credits: {:.1} ms per batch, {:.0} credits/s",
            batches,
            elapsed.as_secs_f64() * 1000.0 / f64::from(batches),
            ops / elapsed.as_secs_f64()
        );
        // For comparison: one credit per transaction (the cost of a durable commit).
        let start = std::time::Instant::now();
        for n in 0..100 {
            store.apply(&[credit("alice", 2, template(2).with_nonce(n), target, T0)]).unwrap();
        }
        println!("single-credit batches: {:.0} credits/s", 100.0 / start.elapsed().as_secs_f64());
    }
}
