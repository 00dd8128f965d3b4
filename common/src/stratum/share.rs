//! The share verifier: rebuilds a submitted share from coinbase to hash and checks it, in this
//! order: job known and current, extranonce2 size, time window, version bits inside the mask,
//! hash against the job's share target, duplicate. Duplicates are keyed on the decoded values
//! (job, extranonce2 bytes, time, nonce, version), never on the hex spelling.
//!
//! Rejections carry the Stratum V1 error codes as ckpool and the pools that follow it use them:
//! 20 other (time window, version bits, malformed), 21 job not found or stale, 22 duplicate,
//! 23 low difficulty, 24 unauthorized worker, 25 not subscribed. The server session answers
//! 24 and 25 itself; the verifier never needs them.
//!
//! Jobs are kept up to a bound: a new job that has `clean_jobs` or a new previous block makes
//! every older job stale, and the oldest job is dropped (with its duplicate set) when the bound
//! is reached, so memory stays bounded.

use std::collections::{HashSet, VecDeque};

use super::codec::RpcError;
use super::job::Job;
use super::method::Submit;
use crate::header::{BlockHash, Header};
use crate::message::RejectReason;
use crate::target::Target;

/// How far a share's time may run ahead of its job's (ckpool allows about two hours less a
/// margin; Bitcoin nodes refuse blocks more than two hours ahead).
pub const DEFAULT_TIME_WINDOW_SECS: u32 = 7000;
/// Jobs kept for late shares, current one included.
pub const DEFAULT_KEPT_JOBS: usize = 8;

/// Why a share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    JobNotFound,
    Stale,
    Duplicate,
    LowDifficulty,
    Unauthorized,
    NotSubscribed,
    TimeOutOfWindow,
    VersionOutsideMask,
    Extranonce2Size,
}

impl Reject {
    /// The Stratum V1 error code.
    pub fn code(self) -> i64 {
        match self {
            Reject::JobNotFound | Reject::Stale => 21,
            Reject::Duplicate => 22,
            Reject::LowDifficulty => 23,
            Reject::Unauthorized => 24,
            Reject::NotSubscribed => 25,
            Reject::TimeOutOfWindow | Reject::VersionOutsideMask | Reject::Extranonce2Size => 20,
        }
    }

    /// The reason text sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::JobNotFound => "Job not found",
            Reject::Stale => "Stale share",
            Reject::Duplicate => "Duplicate share",
            Reject::LowDifficulty => "Low difficulty share",
            Reject::Unauthorized => "Unauthorized worker",
            Reject::NotSubscribed => "Not subscribed",
            Reject::TimeOutOfWindow => "Ntime out of range",
            Reject::VersionOutsideMask => "Invalid version bits",
            Reject::Extranonce2Size => "Invalid extranonce2 size",
        }
    }

    pub fn to_error(self) -> RpcError {
        RpcError::new(self.code(), self.reason())
    }

    /// The reason a QUIC node's share would be rejected for, so a miner's rejections are
    /// counted beside the nodes' (`node list`, metrics, the under-delivery probe). `None` for
    /// lines refused before the connection is a miner at all (not authorized, not subscribed).
    pub fn counted_as(self) -> Option<RejectReason> {
        match self {
            Reject::JobNotFound => Some(RejectReason::UnknownJob),
            Reject::Stale => Some(RejectReason::StaleJob),
            Reject::Duplicate => Some(RejectReason::Duplicate),
            Reject::LowDifficulty => Some(RejectReason::AboveTarget),
            Reject::TimeOutOfWindow => Some(RejectReason::TimeOutOfWindow),
            Reject::VersionOutsideMask => Some(RejectReason::VersionOutsideMask),
            // An extranonce2 of the wrong size rolls space outside the miner's slot.
            Reject::Extranonce2Size => Some(RejectReason::RangeNotHeld),
            Reject::Unauthorized | Reject::NotSubscribed => None,
        }
    }
}

/// A share that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub header: Header,
    pub hash: BlockHash,
    /// The job's share target, and whether the hash also meets the header's own (block) target.
    pub share_target: Target,
    pub meets_block_target: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ShareKey {
    extranonce2: Vec<u8>,
    ntime: u32,
    nonce: u32,
    version: u32,
}

#[derive(Debug)]
struct Kept {
    job: Job,
    stale: bool,
    seen: HashSet<ShareKey>,
}

/// The jobs one session has handed out, and the shares seen on them.
#[derive(Debug)]
pub struct ShareVerifier {
    jobs: VecDeque<Kept>,
    kept: usize,
    time_window_secs: u32,
}

impl Default for ShareVerifier {
    fn default() -> Self {
        Self::new(DEFAULT_KEPT_JOBS, DEFAULT_TIME_WINDOW_SECS)
    }
}

impl ShareVerifier {
    pub fn new(kept: usize, time_window_secs: u32) -> Self {
        ShareVerifier { jobs: VecDeque::new(), kept: kept.max(1), time_window_secs }
    }

    /// Adds a job. Returns true when it revoked the older jobs (`clean_jobs`, or a previous
    /// block different from the newest job's). A job id seen before replaces the old job.
    pub fn add_job(&mut self, job: Job) -> bool {
        let revokes = job.notify.clean_jobs
            || self.jobs.back().is_some_and(|k| k.job.notify.prev_blockhash != job.notify.prev_blockhash);
        if revokes {
            for k in &mut self.jobs {
                k.stale = true;
                k.seen = HashSet::new();
            }
        }
        self.jobs.retain(|k| k.job.id() != job.id());
        while self.jobs.len() >= self.kept {
            self.jobs.pop_front();
        }
        self.jobs.push_back(Kept { job, stale: false, seen: HashSet::new() });
        revokes
    }

    /// The newest job.
    pub fn current(&self) -> Option<&Job> {
        self.jobs.back().map(|k| &k.job)
    }

    /// A kept job that is not stale.
    pub fn live_job(&self, job_id: &str) -> Option<&Job> {
        self.jobs.iter().find(|k| !k.stale && k.job.id() == job_id).map(|k| &k.job)
    }

    /// Checks a submitted share and, when it passes, remembers it for duplicate detection.
    pub fn check(&mut self, submit: &Submit) -> Result<Accepted, Reject> {
        let kept = self.jobs.iter_mut().rev().find(|k| k.job.id() == submit.job_id).ok_or(Reject::JobNotFound)?;
        if kept.stale {
            return Err(Reject::Stale);
        }
        let job = &kept.job;
        if submit.extranonce2.len() != job.extranonce2_size {
            return Err(Reject::Extranonce2Size);
        }
        let start = job.notify.ntime;
        if submit.ntime < start || submit.ntime - start > self.time_window_secs {
            return Err(Reject::TimeOutOfWindow);
        }
        let version = match submit.version_bits {
            None => job.notify.version,
            Some(bits) if bits & !job.version_mask != 0 => return Err(Reject::VersionOutsideMask),
            Some(bits) => job.rolled_version(bits),
        };
        let header = job
            .header(&submit.extranonce2, submit.ntime, submit.nonce, version)
            .map_err(|_| Reject::Extranonce2Size)?;
        let hash = header.block_hash();
        if !job.share_target.is_met_by(&hash) {
            return Err(Reject::LowDifficulty);
        }
        let key =
            ShareKey { extranonce2: submit.extranonce2.clone(), ntime: submit.ntime, nonce: submit.nonce, version };
        if !kept.seen.insert(key) {
            return Err(Reject::Duplicate);
        }
        let meets_block_target = Target::from_compact(header.bits).is_ok_and(|t| t.is_met_by(&hash));
        Ok(Accepted { header, hash, share_target: job.share_target, meets_block_target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Hash256;
    use crate::stratum::method::Notify;
    use crate::target::CompactTarget;

    fn job(id: &str, prev: u8, clean: bool) -> Job {
        let notify = Notify {
            job_id: id.into(),
            prev_blockhash: Hash256([prev; 32]),
            coinb1: vec![1],
            coinb2: vec![2],
            merkle_branch: vec![],
            version: 0x2000_0000,
            nbits: CompactTarget(0x1d00ffff),
            ntime: 1000,
            clean_jobs: clean,
        };
        // Difficulty 2^-24: about one hash in 256 meets it.
        Job::new(notify, vec![0xee], 2, 1.0 / 16_777_216.0, 0x1fff_e000).unwrap()
    }

    fn submit(id: &str, nonce: u32) -> Submit {
        Submit {
            worker: "w".into(),
            job_id: id.into(),
            extranonce2: vec![0, 1],
            ntime: 1000,
            nonce,
            version_bits: None,
        }
    }

    /// The first nonce whose share meets the job's target, and one that does not.
    fn nonces(v: &mut ShareVerifier, id: &str) -> (u32, u32) {
        let job = v.live_job(id).unwrap().clone();
        let meets = |n: u32| {
            job.share_target.is_met_by(&job.header(&[0, 1], 1000, n, job.notify.version).unwrap().block_hash())
        };
        ((0..).find(|&n| meets(n)).unwrap(), (0..).find(|&n| !meets(n)).unwrap())
    }

    #[test]
    fn checks_in_order_with_codes() {
        let mut v = ShareVerifier::new(4, 600);
        v.add_job(job("a", 1, true));
        let (good, bad) = nonces(&mut v, "a");
        assert_eq!(v.check(&submit("zz", good)), Err(Reject::JobNotFound));
        assert_eq!(v.check(&Submit { extranonce2: vec![0], ..submit("a", good) }), Err(Reject::Extranonce2Size));
        assert_eq!(v.check(&Submit { ntime: 999, ..submit("a", good) }), Err(Reject::TimeOutOfWindow));
        assert_eq!(v.check(&Submit { ntime: 1601, ..submit("a", good) }), Err(Reject::TimeOutOfWindow));
        assert_eq!(v.check(&Submit { version_bits: Some(1), ..submit("a", good) }), Err(Reject::VersionOutsideMask));
        assert_eq!(v.check(&submit("a", bad)), Err(Reject::LowDifficulty));
        let accepted = v.check(&submit("a", good)).unwrap();
        assert!(accepted.share_target.is_met_by(&accepted.hash));
        assert_eq!(v.check(&submit("a", good)), Err(Reject::Duplicate));
        assert_eq!(Reject::Duplicate.to_error(), RpcError::new(22, "Duplicate share"));
        for (r, code) in [
            (Reject::JobNotFound, 21),
            (Reject::LowDifficulty, 23),
            (Reject::Unauthorized, 24),
            (Reject::NotSubscribed, 25),
        ] {
            assert_eq!(r.code(), code);
        }
    }

    #[test]
    fn clean_jobs_and_new_prevhash_make_older_jobs_stale() {
        let mut v = ShareVerifier::new(4, 600);
        assert!(v.add_job(job("a", 1, true)));
        let (good_a, _) = nonces(&mut v, "a");
        assert!(!v.add_job(job("b", 1, false)), "same block, not clean: a stays live");
        assert!(v.live_job("a").is_some());
        assert!(v.add_job(job("c", 2, false)), "a new previous block revokes");
        assert_eq!(v.check(&submit("a", good_a)), Err(Reject::Stale));
        assert!(v.add_job(job("d", 2, true)));
        assert!(v.live_job("c").is_none());
        v.add_job(job("e", 2, false));
        v.add_job(job("f", 2, false));
        assert_eq!(v.check(&submit("a", good_a)), Err(Reject::JobNotFound), "dropped past the bound");
    }
}
