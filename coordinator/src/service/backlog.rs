//! The bound on shares taken from nodes and not yet answered (`max_unacknowledged_shares`).
//!
//! A share is taken when its node's connection hands it to the core thread, and answered when
//! the acknowledgement thread delivers the group that holds its verdict, i.e. after the
//! commit that holds its credit. While the store cannot commit (a PostgreSQL database lost with
//! `on_store_loss = "retry"`), answers stop, and without a bound the shares read meanwhile
//! would queue in memory for as long as the outage lasts.
//!
//! `Backlog::take` reserves room for a node's shares, at most the cap in all, and waits while
//! there is none: the connection then stops reading, QUIC's flow control stops the node's
//! writes, and the node keeps its unanswered shares (it re-sends them after a reconnect, as
//! after any outage). `Backlog::answered` gives the room back and wakes the waiting
//! connections. The count is the `hashgrid_shares_unacknowledged` gauge; it never exceeds the
//! cap.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// The default `max_unacknowledged_shares`: 64 full share batches.
pub const DEFAULT_MAX_UNACKNOWLEDGED: usize = 64 * hashgrid_common::message::MAX_BATCH_SHARES;

/// Shares taken and not yet answered, and the most there may be.
#[derive(Debug)]
pub struct Backlog {
    /// Shares taken and not answered (shared with the metric).
    pending: Gauge,
    cap: i64,
    room: Notify,
}

impl Backlog {
    /// A backlog of at most `cap` shares (at least 1), counted in `pending`.
    pub fn new(cap: usize, pending: Gauge) -> Backlog {
        let cap = i64::try_from(cap.max(1)).unwrap_or(i64::MAX);
        Backlog { pending, cap, room: Notify::new() }
    }

    /// Shares taken and not yet answered.
    pub fn pending(&self) -> usize {
        usize::try_from(self.pending.get()).unwrap_or(0)
    }

    /// Reserves room for up to `want` shares (at least 1), waiting while there is none; how
    /// many were reserved.
    pub async fn take(&self, want: usize) -> usize {
        let want = i64::try_from(want.max(1)).unwrap_or(i64::MAX);
        loop {
            // Registered before the look, so an `answered` in between is not missed.
            let freed = self.room.notified();
            let counter = self.pending.inner();
            let mut now = counter.load(Ordering::Acquire);
            while now < self.cap {
                let taken = want.min(self.cap - now);
                match counter.compare_exchange_weak(now, now + taken, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return taken as usize,
                    Err(actual) => now = actual,
                }
            }
            freed.await;
        }
    }

    /// `n` shares were answered: their room is given back.
    pub fn answered(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let counter = self.pending.inner();
        let mut now = counter.load(Ordering::Acquire);
        loop {
            let left = now.saturating_sub(n).max(0);
            match counter.compare_exchange_weak(now, left, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn takes_stop_at_the_cap_and_resume_when_shares_are_answered() {
        let gauge = Gauge::default();
        let backlog = Arc::new(Backlog::new(10, gauge.clone()));
        assert_eq!(backlog.take(4).await, 4);
        // Only the room left is reserved: a batch is split at the cap.
        assert_eq!(backlog.take(1024).await, 6);
        assert_eq!((backlog.pending(), gauge.get()), (10, 10));

        // Full: the next take waits until shares are answered.
        let waiting = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.take(5).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "a take went past the cap");
        assert_eq!(backlog.pending(), 10);
        backlog.answered(3);
        assert_eq!(waiting.await.unwrap(), 3, "only the room given back");
        assert_eq!(backlog.pending(), 10);
        backlog.answered(10);
        assert_eq!(backlog.pending(), 0);
        backlog.answered(1);
        assert_eq!(backlog.pending(), 0, "never below zero");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_takers_never_exceed_the_cap_and_all_finish() {
        let backlog = Arc::new(Backlog::new(7, Gauge::default()));
        let mut takers = Vec::new();
        for i in 0..16usize {
            let backlog = backlog.clone();
            takers.push(tokio::spawn(async move {
                let mut left = 20 + i;
                while left > 0 {
                    let taken = backlog.take(left).await;
                    assert!(backlog.pending() <= 7, "{} pending", backlog.pending());
                    left -= taken;
                    tokio::task::yield_now().await;
                    backlog.answered(taken);
                }
            }));
        }
        for taker in takers {
            taker.await.unwrap();
        }
        assert_eq!(backlog.pending(), 0);
    }
}
