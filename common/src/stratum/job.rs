//! The job builder: a `mining.notify` plus the session's extranonces and difficulty → the
//! coinbase, the merkle root and the 80-byte [`Header`].
//!
//! - coinbase = coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2;
//! - merkle root = sha256d(coinbase), folded with each branch entry on the right:
//!   `root = sha256d(root ‖ branch[i])`;
//! - header: the notify's version, nbits and ntime (big-endian hex on the wire, held as
//!   numbers, written little-endian by [`Header::to_bytes`]) and its previous-block hash
//!   (word-swapped back by [`Notify`]'s decoder).
//!
//! A [`Job`] also records the difficulty and version mask in force when it arrived: a later
//! `mining.set_difficulty` applies only to the jobs that follow it.

use super::StratumError;
use super::difficulty::share_target;
use super::method::{MAX_COINBASE, MAX_EXTRANONCE, Notify};
use crate::header::{Hash256, Header};
use crate::target::Target;

/// A job as one session holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub notify: Notify,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    /// The pool difficulty in force when the job arrived, and its share target.
    pub difficulty: f64,
    pub share_target: Target,
    /// The version bits a share may roll (0: no version rolling).
    pub version_mask: u32,
}

impl Job {
    /// Checks the sizes (extranonces, whole coinbase) and the difficulty.
    pub fn new(
        notify: Notify,
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
        difficulty: f64,
        version_mask: u32,
    ) -> Result<Self, StratumError> {
        for len in [extranonce1.len(), extranonce2_size] {
            if len > MAX_EXTRANONCE {
                return Err(StratumError::ExtranonceTooLong { len, max: MAX_EXTRANONCE });
            }
        }
        let len = notify.coinb1.len() + notify.coinb2.len();
        if len > MAX_COINBASE {
            return Err(StratumError::CoinbaseTooLarge { len, max: MAX_COINBASE });
        }
        let share_target = share_target(difficulty)?;
        Ok(Job { notify, extranonce1, extranonce2_size, difficulty, share_target, version_mask })
    }

    pub fn id(&self) -> &str {
        &self.notify.job_id
    }

    /// coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2; `extranonce2` must have the job's size.
    pub fn coinbase(&self, extranonce2: &[u8]) -> Result<Vec<u8>, StratumError> {
        if extranonce2.len() != self.extranonce2_size {
            return Err(StratumError::Extranonce2Size { expected: self.extranonce2_size, got: extranonce2.len() });
        }
        let n = &self.notify;
        let mut coinbase =
            Vec::with_capacity(n.coinb1.len() + self.extranonce1.len() + extranonce2.len() + n.coinb2.len());
        coinbase.extend_from_slice(&n.coinb1);
        coinbase.extend_from_slice(&self.extranonce1);
        coinbase.extend_from_slice(extranonce2);
        coinbase.extend_from_slice(&n.coinb2);
        Ok(coinbase)
    }

    /// The merkle root (hash order) for this extranonce2.
    pub fn merkle_root(&self, extranonce2: &[u8]) -> Result<Hash256, StratumError> {
        Ok(fold_branch(Hash256::sha256d(&self.coinbase(extranonce2)?), &self.notify.merkle_branch))
    }

    /// The header for a share: the notify's fields with this extranonce2's merkle root, the
    /// given time and nonce, and `version` (already combined with any rolled bits).
    pub fn header(&self, extranonce2: &[u8], ntime: u32, nonce: u32, version: u32) -> Result<Header, StratumError> {
        Ok(Header {
            version,
            prev_blockhash: self.notify.prev_blockhash,
            merkle_root: self.merkle_root(extranonce2)?,
            time: ntime,
            bits: self.notify.nbits,
            nonce,
        })
    }

    /// The header to search for this extranonce2: the notify's own version and time, nonce 0.
    pub fn template(&self, extranonce2: &[u8]) -> Result<Header, StratumError> {
        self.header(extranonce2, self.notify.ntime, 0, self.notify.version)
    }

    /// The header version of a share rolling `version_bits` (BIP 310): the job's version with
    /// the mask's bits taken from `version_bits`.
    pub fn rolled_version(&self, version_bits: u32) -> u32 {
        (self.notify.version & !self.version_mask) | (version_bits & self.version_mask)
    }
}

/// Folds a merkle branch: `root = sha256d(root ‖ entry)` for each entry in order.
pub fn fold_branch(leaf: Hash256, branch: &[Hash256]) -> Hash256 {
    branch.iter().fold(leaf, |acc, entry| {
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&acc.0);
        pair[32..].copy_from_slice(&entry.0);
        Hash256::sha256d(&pair)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::CompactTarget;

    fn notify() -> Notify {
        Notify {
            job_id: "j".into(),
            prev_blockhash: Hash256([7; 32]),
            coinb1: vec![1, 2],
            coinb2: vec![9],
            merkle_branch: vec![Hash256([3; 32])],
            version: 0x2000_0000,
            nbits: CompactTarget(0x1d00ffff),
            ntime: 100,
            clean_jobs: false,
        }
    }

    #[test]
    fn coinbase_and_root() {
        let job = Job::new(notify(), vec![0xaa], 2, 1.0, 0x1fff_e000).unwrap();
        assert_eq!(job.coinbase(&[0xb0, 0xb1]).unwrap(), vec![1, 2, 0xaa, 0xb0, 0xb1, 9]);
        assert_eq!(job.coinbase(&[0xb0]), Err(StratumError::Extranonce2Size { expected: 2, got: 1 }));
        let leaf = Hash256::sha256d(&[1, 2, 0xaa, 0xb0, 0xb1, 9]);
        let mut pair = leaf.0.to_vec();
        pair.extend_from_slice(&[3; 32]);
        assert_eq!(job.merkle_root(&[0xb0, 0xb1]).unwrap(), Hash256::sha256d(&pair));
        assert_eq!(fold_branch(leaf, &[]), leaf);
        assert_eq!(job.rolled_version(0xffff_ffff), 0x3fff_e000);
        assert_eq!(job.rolled_version(0), 0x2000_0000);
    }

    #[test]
    fn caps() {
        assert!(matches!(
            Job::new(notify(), vec![0; MAX_EXTRANONCE + 1], 2, 1.0, 0),
            Err(StratumError::ExtranonceTooLong { .. })
        ));
        assert!(matches!(
            Job::new(notify(), vec![], MAX_EXTRANONCE + 1, 1.0, 0),
            Err(StratumError::ExtranonceTooLong { .. })
        ));
        let big = Notify { coinb1: vec![0; MAX_COINBASE + 1], ..notify() };
        assert!(matches!(Job::new(big, vec![], 2, 1.0, 0), Err(StratumError::CoinbaseTooLarge { .. })));
        assert!(matches!(Job::new(notify(), vec![], 2, 0.0, 0), Err(StratumError::Difficulty(_))));
    }
}
