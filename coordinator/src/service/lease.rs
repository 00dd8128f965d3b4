//! Exactly one active coordinator per PostgreSQL database: the lease.
//!
//! The one row of `lease` (made by `store::pg`'s schema) names the active coordinator: its
//! `epoch`, `holder`, `address` and `expires_at` (the database's clock). A coordinator becomes
//! active by raising the epoch; every write transaction of its store then checks, with the row
//! locked `FOR SHARE`, that the epoch is still its own (`pg::check_epoch`): one that lost the
//! lease, or was paused and woke up after a takeover, commits nothing (`StoreError::Fenced`).
//!
//! The active one holds, on a session of its own, the advisory lock `(LEASE_LOCK, epoch)`, and
//! renews `expires_at` every `ttl / 3`. A waiting (standby) coordinator tries every
//! `POLL_EVERY` to take the row `FOR UPDATE`, and takes over:
//! - at once when the advisory lock of the current epoch is free: the holder's session died
//!   with its process (kill -9, crash, host gone and its TCP connection reset);
//! - after `expires_at` when the holder is alive but silent (paused, partitioned: keepalives
//!   and `idle_in_transaction_session_timeout = ttl` on the store session end its sessions, and
//!   with them any transaction that holds the row).
//!
//! The new epoch's advisory lock is taken in the transaction that raises the epoch, so no
//! other standby can see it free in between.
//!
//! While it waits, a standby keeps its own session: one lost (the database restarted, the
//! session terminated) is replaced at the next look, so the standby stays connected.
//!
//! When the lease's session is lost (the database restarted, the session terminated) while the
//! process lives, the renewing thread reconnects and takes its epoch's lock again if the epoch
//! is still its own (`reattach`); if a standby took over meanwhile, the lease is lost and the
//! store's next commit is fenced.

use std::sync::mpsc;
use std::time::Duration;

use super::store::StoreError;
use super::store::pg::Conn;

/// The advisory lock key (first half; the second is the epoch) of the active coordinator.
const LEASE_LOCK: i32 = 0x6867_0002;

/// How often a standby looks at the lease.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// The default time a silent active coordinator keeps the lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The lease, held: renewed on its own session and thread until dropped (or lost).
#[derive(Debug)]
pub struct Lease {
    pub epoch: i64,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Who holds the lease while this coordinator waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub epoch: i64,
    pub address: String,
}

impl Lease {
    /// Waits until this coordinator (`holder`, reachable at `address`) is the active one and
    /// returns the lease; `waiting` is told who holds it at every look (every `POLL_EVERY`),
    /// the standby's moment to keep its snapshot warm.
    pub fn acquire(
        url: &str,
        holder: &str,
        address: &str,
        ttl: Duration,
        mut waiting: impl FnMut(&Holder),
    ) -> Result<Lease, StoreError> {
        let mut conn = lease_session(url)?;
        let ttl_ms = ttl.as_millis() as f64;
        let epoch = loop {
            match try_take(conn.client(), holder, address, ttl_ms) {
                Ok(Ok(epoch)) => break epoch,
                Ok(Err(held)) => waiting(&held),
                // 55P03: lock_timeout (a paused holder's transaction still holds the row).
                Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {}
                Err(e) => {
                    let e = StoreError::from(e);
                    if !e.is_connection_loss() {
                        return Err(e);
                    }
                    tracing::warn!("standby: the lease's database session was lost; reconnecting: {e}");
                    match lease_session(url) {
                        Ok(new) => conn = new,
                        Err(e) => tracing::warn!("standby: cannot reconnect yet: {e}"),
                    }
                }
            }
            std::thread::sleep(POLL_EVERY);
        };
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hashgrid-lease".into())
            .spawn({
                let url = url.to_string();
                move || renew(conn, &url, epoch, ttl, &stopped)
            })
            .map_err(StoreError::Checkpointer)?;
        Ok(Lease { epoch, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A session to look at (and take) the lease on; makes the lease row if there is none.
fn lease_session(url: &str) -> Result<Conn, StoreError> {
    let mut conn = Conn::connect(url)?;
    let client = conn.client();
    client.batch_execute("SET lock_timeout = '1s'")?;
    client.execute(
        "INSERT INTO lease (id, epoch, holder, address, expires_at) VALUES (1, 0, '', '', '-infinity')
         ON CONFLICT (id) DO NOTHING",
        &[],
    )?;
    Ok(conn)
}

/// One look at the lease: `Ok(epoch)` when taken, else who holds it.
fn try_take(
    client: &mut postgres::Client,
    holder: &str,
    address: &str,
    ttl_ms: f64,
) -> Result<Result<i64, Holder>, postgres::Error> {
    let mut tx = client.transaction()?;
    let row =
        tx.query_one("SELECT epoch, address, expires_at < clock_timestamp() FROM lease WHERE id = 1 FOR UPDATE", &[])?;
    let (epoch, held_by, expired): (i64, String, bool) = (row.get(0), row.get(1), row.get(2));
    // Free: nobody holds the current epoch's lock, so its holder's session is gone.
    let free: bool =
        tx.query_one("SELECT pg_try_advisory_lock($1, $2::INTEGER)", &[&LEASE_LOCK, &epoch_key(epoch)])?.get(0);
    if free {
        tx.execute("SELECT pg_advisory_unlock($1, $2::INTEGER)", &[&LEASE_LOCK, &epoch_key(epoch)])?;
    }
    if !(free || expired) {
        return Ok(Err(Holder { epoch, address: held_by }));
    }
    let next = epoch + 1;
    tx.execute("SELECT pg_advisory_lock($1, $2::INTEGER)", &[&LEASE_LOCK, &epoch_key(next)])?;
    tx.execute(
        "UPDATE lease SET epoch = $1, holder = $2, address = $3,
                          expires_at = clock_timestamp() + $4 * INTERVAL '1 millisecond'
         WHERE id = 1",
        &[&next, &holder, &address, &ttl_ms],
    )?;
    tx.commit()?;
    Ok(Ok(next))
}

/// The epoch as the advisory lock's second key (it wraps after 2^31 takeovers).
fn epoch_key(epoch: i64) -> i32 {
    epoch as i32
}

/// Renews the lease every `ttl / 3` until told to stop, or until it is lost (then it says so
/// and stops: the store's next commit is fenced). A lost session is replaced (`reattach`).
fn renew(mut conn: Conn, url: &str, epoch: i64, ttl: Duration, stopped: &mpsc::Receiver<()>) {
    let ttl_ms = ttl.as_millis() as f64;
    let lost = || tracing::error!(epoch, "lost the lease to another coordinator: this one commits nothing more");
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(ttl / 3) {
        let renewed = conn.client().execute(
            "UPDATE lease SET expires_at = clock_timestamp() + $2 * INTERVAL '1 millisecond'
             WHERE id = 1 AND epoch = $1",
            &[&epoch, &ttl_ms],
        );
        match renewed {
            Ok(1) => {}
            Ok(_) => return lost(),
            Err(_) if conn.client().is_closed() => match reattach(url, epoch, ttl_ms) {
                Ok(Some(new)) => {
                    tracing::info!(epoch, "the lease's database session was lost; holding the lease again");
                    conn = new;
                }
                Ok(None) => return lost(),
                Err(e) => tracing::warn!(epoch, "cannot renew the lease (database lost): {e}"),
            },
            Err(e) => tracing::warn!(epoch, "cannot renew the lease: {e}"),
        }
    }
}

/// A new session holding `epoch`'s advisory lock again, if `epoch` is still the lease's; `None`
/// when another coordinator took it.
fn reattach(url: &str, epoch: i64, ttl_ms: f64) -> Result<Option<Conn>, StoreError> {
    let mut conn = Conn::connect(url)?;
    let client = conn.client();
    client.batch_execute("SET lock_timeout = '1s'")?;
    let mut tx = client.transaction()?;
    let current: i64 = tx.query_one("SELECT epoch FROM lease WHERE id = 1 FOR UPDATE", &[])?.get(0);
    if current != epoch {
        return Ok(None);
    }
    // A standby looking at the lease holds the lock for a moment: try again at the next renewal.
    let locked: bool =
        tx.query_one("SELECT pg_try_advisory_lock($1, $2::INTEGER)", &[&LEASE_LOCK, &epoch_key(epoch)])?.get(0);
    if !locked {
        return Err(StoreError::Connect("the lease's lock is busy".into()));
    }
    tx.execute(
        "UPDATE lease SET expires_at = clock_timestamp() + $2 * INTERVAL '1 millisecond' WHERE id = 1 AND epoch = $1",
        &[&epoch, &ttl_ms],
    )?;
    tx.commit()?;
    Ok(Some(conn))
}
