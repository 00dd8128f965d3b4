//! Which store a coordinator runs on (`StoreLocation`: the data dir's SQLite file, or a
//! PostgreSQL database), and the two interfaces both stores implement: `Durable`, the write
//! path (the snapshot at start, group commits, maintenance between them), and `Records`, the
//! operator API's reads. The service only talks to these; `Store`/`Reader` (SQLite) and
//! `PgStore`/`PgReader` (PostgreSQL) keep the same rule: nothing is acknowledged before the
//! commit that holds it has returned.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hashgrid_common::message::{JobId, JobStatus, LedgerEntry, LedgerVerdict, PageRequest, Receipt, ReceiptCut};

use super::pg::{PgReader, PgStore, blocking};
use super::{Checkpointer, Store, StoreError, WalSync};
use crate::core::{Snapshot, StoreOp};
use crate::service::lease::{Holder, Lease};
use crate::service::records::Reader;

/// The SQLite file in the data dir.
pub const SQLITE_FILE: &str = "hashgrid.db";

/// Where the coordinator keeps its records: `sqlite` (the data dir's `hashgrid.db`, the
/// default) or a `postgres://` (or `postgresql://`) URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    #[default]
    Sqlite,
    Postgres(String),
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "sqlite" => Ok(StoreLocation::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(url.to_string()))
            }
            other => Err(format!("{other:?} is not a store: use \"sqlite\" or a postgres:// URL")),
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite => f.write_str("sqlite"),
            StoreLocation::Postgres(url) => f.write_str(&super::pg::redact(url)),
        }
    }
}

impl StoreLocation {
    /// Opens the store (creating or migrating its schema).
    pub fn open(&self, data_dir: &Path) -> Result<Box<dyn Durable>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite => Box::new(Store::open(&data_dir.join(SQLITE_FILE))?),
            StoreLocation::Postgres(url) => Box::new(blocking(|| PgStore::open(url))?),
        })
    }

    /// Opens the store as the active coordinator, reachable at `address`: on PostgreSQL, waits
    /// (standby) until it holds the lease (`service::lease`), whose epoch fences its writes.
    /// While it waits, its session stays open and its snapshot warm (`PgStore::keep_warm`): call
    /// `load` first after this returns, before any write, for the warm one to be used.
    /// `waiting` is told who holds the lease meanwhile, each time that changes. `on_loss`: what
    /// a PostgreSQL store does when the database is lost while running (SQLite's errors stop
    /// the service: its file is on this host).
    pub fn open_active(
        &self,
        data_dir: &Path,
        address: &str,
        ttl: Duration,
        on_loss: OnStoreLoss,
        mut waiting: impl FnMut(&Holder) + Send,
    ) -> Result<Box<dyn Durable>, StoreError> {
        let StoreLocation::Postgres(url) = self else { return self.open(data_dir) };
        let holder = format!("{}@{address}", std::process::id());
        blocking(|| {
            // Warm before the first look at the lease: a standby is ready when it takes over.
            let mut store = PgStore::open(url)?;
            let mut ledger_seq = store.keep_warm()?;
            let mut last: Option<Holder> = None;
            let lease = Lease::acquire(url, &holder, address, ttl, |held| {
                match store.keep_warm() {
                    Ok(seq) => ledger_seq = seq,
                    Err(e) => tracing::warn!("standby: cannot refresh the snapshot: {e}"),
                }
                if last.as_ref() != Some(held) {
                    tracing::info!(epoch = held.epoch, active = %held.address, "standby: waiting for the active coordinator's lease; snapshot at ledger seq {ledger_seq}");
                    waiting(held);
                    last = Some(held.clone());
                }
            })?;
            tracing::info!(epoch = lease.epoch, "took the lease: this coordinator is the active one");
            store.hold(lease, ttl, on_loss)?;
            Ok(Box::new(store) as Box<dyn Durable>)
        })
    }

    /// Opens a connection for reads (the store must exist: open it first).
    pub fn reader(&self, data_dir: &Path) -> Result<Box<dyn Records>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite => Box::new(Reader::open(&data_dir.join(SQLITE_FILE))?),
            StoreLocation::Postgres(url) => Box::new(blocking(|| PgReader::open(url))?),
        })
    }
}

/// What an active coordinator does when its database is lost while running (`on_store_loss`,
/// `--on-store-loss`). Either way nothing more is acknowledged until a commit succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStoreLoss {
    /// Stop (exit 2): a supervisor restarts the process, which comes back as the active or the
    /// standby coordinator.
    #[default]
    Exit,
    /// Keep the batch, reconnect with backoff, and commit it once the database is back
    /// (PostgreSQL; `store::pg`). A takeover meanwhile still fences this coordinator.
    Retry,
}

impl FromStr for OnStoreLoss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exit" => Ok(OnStoreLoss::Exit),
            "retry" => Ok(OnStoreLoss::Retry),
            other => Err(format!("{other:?} is not a choice: use \"exit\" or \"retry\"")),
        }
    }
}

impl fmt::Display for OnStoreLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnStoreLoss::Exit => "exit",
            OnStoreLoss::Retry => "retry",
        })
    }
}

/// The write path of a store (see `Store` for the rules both keep).
pub trait Durable: Send + fmt::Debug {
    /// The state the core restarts from.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Makes `ops` durable, all or nothing, in one transaction.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Commits `ops` like `apply`, but may return before the commit is on disk; it then returns
    /// the `WalSync` that makes it durable, to run before anything that depends on it is
    /// acknowledged. By default: `apply` (durable on return, nothing to sync).
    fn apply_unsynced(&mut self, ops: &[StoreOp]) -> Result<Option<WalSync>, StoreError> {
        self.apply(ops).map(|()| None)
    }
    /// Gives the ranges a previous process left in flight their fate; call before issuing.
    fn close_open_ranges(&mut self) -> Result<usize, StoreError>;
    /// Gives the submits to pools a previous process left unanswered the outcome `unknown`
    /// (never accepted); call before the core starts.
    fn close_pending_submits(&mut self) -> Result<usize, StoreError>;
    /// What a start writes once the snapshot is loaded: `ops` (the takeover record), then
    /// `close_open_ranges` and `close_pending_submits`. PostgreSQL does it in one transaction.
    fn start_up(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if !ops.is_empty() {
            self.apply(ops)?;
        }
        self.close_open_ranges()?;
        self.close_pending_submits().map(drop)
    }
    /// The lease's epoch when this store holds one (PostgreSQL, `open_active`).
    fn epoch(&self) -> Option<i64> {
        None
    }
    /// Background upkeep for as long as the handle lives (SQLite's WAL checkpoints).
    fn checkpointer(&self) -> Result<Option<Checkpointer>, StoreError> {
        Ok(None)
    }
    /// Work between batches, after their acknowledgements are out.
    fn maintain(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The operator API's reads (see `records::Reader`).
pub trait Records: Send + fmt::Debug {
    fn ledger(&mut self, since: u64, account: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, StoreError>;
    fn last_seq(&mut self) -> Result<u64, StoreError>;
    fn verify_ledger(&mut self) -> Result<LedgerVerdict, StoreError>;
    fn job(&mut self, job: JobId) -> Result<Option<JobStatus>, StoreError>;
    fn receipt(
        &mut self,
        account: &str,
        cut: Option<ReceiptCut>,
        page: PageRequest,
    ) -> Result<Option<Receipt>, StoreError>;
}

impl Durable for Store {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Store::load(self)
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        Store::apply(self, ops)
    }
    fn apply_unsynced(&mut self, ops: &[StoreOp]) -> Result<Option<WalSync>, StoreError> {
        Store::apply_unsynced(self, ops).map(Some)
    }
    fn close_open_ranges(&mut self) -> Result<usize, StoreError> {
        Store::close_open_ranges(self)
    }
    fn close_pending_submits(&mut self) -> Result<usize, StoreError> {
        Store::close_pending_submits(self)
    }
    fn checkpointer(&self) -> Result<Option<Checkpointer>, StoreError> {
        Store::checkpointer(self).map(Some)
    }
    fn maintain(&mut self) -> Result<(), StoreError> {
        Store::maintain(self)
    }
}

impl Durable for PgStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        blocking(|| PgStore::load(self))
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        blocking(|| PgStore::apply(self, ops))
    }
    fn close_open_ranges(&mut self) -> Result<usize, StoreError> {
        blocking(|| PgStore::close_open_ranges(self))
    }
    fn close_pending_submits(&mut self) -> Result<usize, StoreError> {
        blocking(|| PgStore::close_pending_submits(self))
    }
    fn start_up(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        blocking(|| PgStore::start_up(self, ops))
    }
    fn epoch(&self) -> Option<i64> {
        PgStore::epoch(self)
    }
}

impl Records for Reader {
    fn ledger(&mut self, since: u64, account: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        Reader::ledger(self, since, account, limit)
    }
    fn last_seq(&mut self) -> Result<u64, StoreError> {
        Reader::last_seq(self)
    }
    fn verify_ledger(&mut self) -> Result<LedgerVerdict, StoreError> {
        Reader::verify_ledger(self)
    }
    fn job(&mut self, job: JobId) -> Result<Option<JobStatus>, StoreError> {
        Reader::job(self, job)
    }
    fn receipt(
        &mut self,
        account: &str,
        cut: Option<ReceiptCut>,
        page: PageRequest,
    ) -> Result<Option<Receipt>, StoreError> {
        Reader::receipt(self, account, cut, page)
    }
}

impl Records for PgReader {
    fn ledger(&mut self, since: u64, account: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        blocking(|| self.again_if_lost(|r| PgReader::ledger(r, since, account, limit)))
    }
    fn last_seq(&mut self) -> Result<u64, StoreError> {
        blocking(|| self.again_if_lost(PgReader::last_seq))
    }
    fn verify_ledger(&mut self) -> Result<LedgerVerdict, StoreError> {
        blocking(|| self.again_if_lost(PgReader::verify_ledger))
    }
    fn job(&mut self, job: JobId) -> Result<Option<JobStatus>, StoreError> {
        blocking(|| self.again_if_lost(|r| PgReader::job(r, job)))
    }
    fn receipt(
        &mut self,
        account: &str,
        cut: Option<ReceiptCut>,
        page: PageRequest,
    ) -> Result<Option<Receipt>, StoreError> {
        blocking(|| self.again_if_lost(|r| PgReader::receipt(r, account, cut, page)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse() {
        assert_eq!("sqlite".parse(), Ok(StoreLocation::Sqlite));
        assert_eq!("postgres://hg@db/hg".parse(), Ok(StoreLocation::Postgres("postgres://hg@db/hg".into())));
        assert_eq!(("exit".parse(), "retry".parse()), (Ok(OnStoreLoss::Exit), Ok(OnStoreLoss::Retry)));
        assert!("again".parse::<OnStoreLoss>().unwrap_err().contains("\"retry\""));
        let err = "mysql://db".parse::<StoreLocation>().unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
        assert_eq!(StoreLocation::Postgres("postgres://hg:pw@db/hg".into()).to_string(), "postgres://hg:***@db/hg");
    }
}
