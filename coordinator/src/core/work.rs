//! Work sources and the share check: header templates from the built-in local chain, from
//! submitted jobs or from an account's pool, BIP 320 version rolling when a template's nonces run out, and the checks a
//! share passes before it earns credit.
//!
//! Version groups: a range can span k = 2^bits versions (`Job::issue`'s `bits`; protocol-3
//! nodes take k = 4, older ones k = 1). The rolls of a template (roll r is the template's
//! version with r shifted into the mask's low bits) are handed out in aligned groups of k, each
//! with one range book keyed by its first version: a range of that book is its nonces under
//! all k versions. Groups never share a roll, so no two nodes get the same (header, nonce);
//! a group is aligned to k, so rolls skipped to align one (only when sizes mix) stay unused.
//!
//! The share check runs in a fixed order, each failure with its own reason: unknown job, stale
//! job, time outside the window, version bits outside the rollable mask, hash above the share
//! target, duplicate. Duplicates are keyed on the values (version, time, nonce) within a job,
//! never on any hex spelling; the seen-set lives and dies with its job.

use std::collections::{BTreeMap, HashSet};

use hashgrid_common::message::{JobHit, JobId, RejectReason};
use hashgrid_common::stratum::{ExtranonceSpace, Notify};
use hashgrid_common::{BlockHash, CompactTarget, Hash256, Header, Target};

use super::ranges::{Coverage, RangeBook};

/// The BIP 320 version bits a miner may roll.
pub use hashgrid_common::message::VERSION_ROLLING_MASK;
/// Rolled versions available per template: 2^16.
pub const VERSION_ROLLS: u32 = 1 << 16;

/// Where a job's templates come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// A template of the coordinator's own chain at `height`.
    LocalChain { height: u64 },
    /// A header submitted by an operator, searched for hashes meeting `target`.
    Submitted { target: Target, hits: Vec<JobHit> },
    /// A template of the account's pool job `pool_job`, with `extranonce2` (slot 0 of the
    /// coordinator's carving) in its coinbase. Shares meeting `pool_target` (the difficulty in
    /// force when the job came) go to the pool, with the version bits inside `version_mask`.
    Upstream { pool_job: String, extranonce2: Vec<u8>, pool_target: Target, version_mask: u32 },
}

/// One header template and the state of its search.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub account: String,
    pub kind: JobKind,
    /// The base header (version before rolling; nonce ignored).
    pub template: Header,
    /// Roll version bits once the nonces of a version are all issued.
    pub roll_versions: bool,
    /// One range book per group of rolled versions, keyed by the group's first version.
    pub books: BTreeMap<u32, RangeBook>,
    next_roll: u32,
    /// The group issuing fresh nonces for each group size (by `bits`): its first version.
    fresh: BTreeMap<u32, u32>,
    pub stale: bool,
    seen: HashSet<(u32, u32, u32)>,
}

/// A range a node holds: the nonces `start..start + count` of header version `version` with
/// any combination of the `rolled` bits flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRange {
    pub version: u32,
    pub rolled: u32,
    pub start: u32,
    pub count: u64,
}

impl HeldRange {
    pub fn contains(&self, version: u32, nonce: u32) -> bool {
        (version ^ self.version) & !self.rolled == 0
            && (self.start as u64..self.start as u64 + self.count).contains(&(nonce as u64))
    }
}

/// A range taken from a job's books: nonces `start..start + count` of `version` with every
/// combination of the `rolled` bits (`count` nonces, `count << rolled.count_ones()` hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub version: u32,
    pub rolled: u32,
    pub start: u32,
    pub count: u64,
}

/// A share that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    pub hash: BlockHash,
}

impl Job {
    pub fn new(id: JobId, account: String, kind: JobKind, template: Header, roll_versions: bool) -> Self {
        Job {
            id,
            account,
            kind,
            template,
            roll_versions,
            books: BTreeMap::new(),
            next_roll: 0,
            fresh: BTreeMap::new(),
            stale: false,
            seen: HashSet::new(),
        }
    }

    /// Issues up to `count` nonces under 2^`bits` versions (2^`bits` times the nonces under one
    /// version when the job does not roll): abandoned ranges of a group that size first, then fresh nonces of the newest
    /// group that size, rolling a new group when those run out. `None` when the job has
    /// nothing left to issue at that size.
    pub fn issue(&mut self, count: u64, assignment: u64, bits: u32) -> Option<Issued> {
        // A job that does not roll gives as many hashes in one version.
        let (count, bits) = if self.roll_versions { (count, bits) } else { (count.saturating_mul(1 << bits), 0) };
        let issued = |version: u32, book: &RangeBook, (start, count): (u32, u64)| Issued {
            version,
            rolled: book.rolled(),
            start,
            count,
        };
        for (&version, book) in self.books.iter_mut() {
            if book.rolled().count_ones() == bits
                && book.coverage().abandoned > 0
                && let Some(range) = book.issue(count, assignment)
            {
                return Some(issued(version, book, range));
            }
        }
        if let Some(&version) = self.fresh.get(&bits)
            && let Some(book) = self.books.get_mut(&version)
            && let Some(range) = book.issue(count, assignment)
        {
            return Some(issued(version, book, range));
        }
        let rolls = if self.roll_versions { VERSION_ROLLS } else { 1 };
        let k = 1u32 << bits;
        let first = self.next_roll.next_multiple_of(k);
        if first >= rolls || rolls - first < k {
            return None;
        }
        self.next_roll = first + k;
        let version = self.template.version ^ (first << 13);
        self.fresh.insert(bits, version);
        let book = self.books.entry(version).or_insert_with(|| RangeBook::for_group((k - 1) << 13));
        let range = book.issue(count, assignment)?;
        Some(issued(version, book, range))
    }

    pub fn book_mut(&mut self, version: u32) -> Option<&mut RangeBook> {
        self.books.get_mut(&version)
    }

    /// True when nothing more can be issued (every version rolled and every nonce issued).
    pub fn is_exhausted(&self) -> bool {
        let rolls = if self.roll_versions { VERSION_ROLLS } else { 1 };
        self.next_roll >= rolls && self.books.values().all(RangeBook::is_exhausted)
    }

    /// The (version, nonce) pairs of the groups rolled so far by fate: a group's nonce counts
    /// once per version.
    pub fn coverage(&self) -> Coverage {
        let mut total = Coverage::default();
        for book in self.books.values() {
            let c = book.coverage();
            let k = book.rolled().count_ones();
            total.done += c.done << k;
            total.in_flight += c.in_flight << k;
            total.abandoned += c.abandoned << k;
            total.unissued += c.unissued << k;
            total.reassigned += c.reassigned << k;
        }
        total
    }

    /// The (version, nonce) pairs of the groups rolled so far (at least one version's nonces).
    pub fn space(&self) -> u64 {
        self.books
            .values()
            .map(|b| super::ranges::NONCE_SPACE << b.rolled().count_ones())
            .sum::<u64>()
            .max(super::ranges::NONCE_SPACE)
    }

    /// The checks after the job is found: current, time window, version mask, within the
    /// range `held` its node holds (`None`: none), the hash against `share_target`,
    /// duplicates. Records the share as seen when it passes.
    pub fn check_share(
        &mut self,
        version: u32,
        time: u32,
        nonce: u32,
        held: Option<&HeldRange>,
        share_target: &Target,
        time_window_secs: u32,
    ) -> Result<Verified, RejectReason> {
        if self.stale {
            return Err(RejectReason::StaleJob);
        }
        if time < self.template.time || time - self.template.time > time_window_secs {
            return Err(RejectReason::TimeOutOfWindow);
        }
        if (version ^ self.template.version) & !VERSION_ROLLING_MASK != 0 {
            return Err(RejectReason::VersionOutsideMask);
        }
        if !held.is_some_and(|h| h.contains(version, nonce)) {
            return Err(RejectReason::RangeNotHeld);
        }
        let header = Header { version, time, nonce, ..self.template };
        let hash = header.block_hash();
        if !share_target.is_met_by(&hash) {
            return Err(RejectReason::AboveTarget);
        }
        if !self.seen.insert((version, time, nonce)) {
            return Err(RejectReason::Duplicate);
        }
        Ok(Verified { header, hash })
    }

    /// Makes the job stale and drops its search state: its shares are refused from now on.
    pub fn retire(&mut self) {
        self.stale = true;
        self.books.clear();
        self.seen = HashSet::new();
    }

    /// Marks a share as already credited (restoring from the store after a restart).
    pub fn mark_seen(&mut self, version: u32, time: u32, nonce: u32) {
        self.seen.insert((version, time, nonce));
    }
}

/// The local chain's coinbase extranonce: 8 bytes, carved as a pool's extranonce2 is (2 bytes
/// of slot, 6 of counter): slot 0's counter makes the QUIC nodes' templates, slots 1.. are the
/// Stratum miners' (extranonce1 = the slot, extranonce2 = the counter they roll).
pub const LOCAL_EXTRANONCE_SIZE: usize = 8;

/// The coordinator's built-in chain: real 80-byte headers whose coinbase carries the height,
/// the account's name and an extranonce, at a configurable difficulty. A share that also
/// meets the block target extends the chain and makes every template built on the old tip
/// stale.
///
/// The coinbase is `coinb1 ‖ extranonce ‖ coinb2`, as a pool's is, so a Stratum miner can be
/// sent a local template ([`LocalChain::miner_notify`]) and roll its own slot of the extranonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChain {
    pub height: u64,
    pub tip: BlockHash,
    pub bits: CompactTarget,
    /// Transactions besides the coinbase in each template.
    pub txs: u32,
    /// The coinbase extranonce's carving: slot 0's counter and the miners' slots.
    pub slots: ExtranonceSpace,
}

impl LocalChain {
    pub fn new(bits: CompactTarget) -> Self {
        Self::at(0, Hash256::ZERO, bits)
    }

    pub fn at(height: u64, tip: BlockHash, bits: CompactTarget) -> Self {
        LocalChain { height, tip, bits, txs: 0, slots: ExtranonceSpace::new(LOCAL_EXTRANONCE_SIZE) }
    }

    /// The same chain with `txs` transactions besides the coinbase in each template.
    pub fn with_txs(self, txs: u32) -> Self {
        LocalChain { txs, ..self }
    }

    /// A fresh template for `account` on the current tip (slot 0's next extranonce each call):
    /// the merkle root covers the coinbase and `txs` transactions.
    pub fn template(&mut self, account: &str, now_secs: u32) -> Header {
        // 2^48 templates on one chain (9,000 years at a thousand a second) would repeat slot
        // 0's first extranonce.
        let carving = self.slots.carving();
        let extranonce = self.slots.next_own().unwrap_or_else(|_| carving.extranonce2(0, 0));
        let (coinb1, coinb2) = coinbase_parts(self.height + 1, account);
        let mut txids = vec![Hash256::sha256d(&[coinb1, extranonce, coinb2].concat())];
        txids.extend(self.transactions());
        Header {
            version: 0x2000_0000,
            prev_blockhash: self.tip,
            merkle_root: merkle_root(txids),
            time: now_secs,
            bits: self.bits,
            nonce: 0,
        }
    }

    /// The template for `account` on the current tip as a Stratum job: the coinbase split
    /// around its 8-byte extranonce ([`LOCAL_EXTRANONCE_SIZE`]) and the merkle branch of the
    /// other transactions. Its job id names the height; `clean_jobs` is set (a new tip or a new
    /// account replaces the miner's old work).
    pub fn miner_notify(&self, account: &str, now_secs: u32) -> Notify {
        let (coinb1, coinb2) = coinbase_parts(self.height + 1, account);
        let mut leaves = vec![Hash256::ZERO];
        leaves.extend(self.transactions());
        Notify {
            job_id: format!("local-{}", self.height + 1),
            prev_blockhash: self.tip,
            coinb1,
            coinb2,
            merkle_branch: merkle_branch(leaves),
            version: 0x2000_0000,
            nbits: self.bits,
            ntime: now_secs,
            clean_jobs: true,
        }
    }

    /// The ids of the transactions besides the coinbase in the next block.
    fn transactions(&self) -> impl Iterator<Item = Hash256> {
        let height = self.height + 1;
        (0..self.txs).map(move |i| {
            let mut tx = b"hashgrid:tx:".to_vec();
            tx.extend_from_slice(&height.to_le_bytes());
            tx.extend_from_slice(&i.to_le_bytes());
            Hash256::sha256d(&tx)
        })
    }

    /// The block target.
    pub fn target(&self) -> Target {
        Target::from_compact(self.bits).unwrap_or(Target::DIFFICULTY_1)
    }

    /// Extends the chain with the block whose hash is `hash`.
    pub fn extend(&mut self, hash: BlockHash) {
        self.height += 1;
        self.tip = hash;
    }
}

/// Bitcoin's merkle root: hash pairs with sha256d level by level, pairing the last hash with
/// itself when a level has an odd count.
pub fn merkle_root(mut level: Vec<Hash256>) -> Hash256 {
    if level.is_empty() {
        return Hash256::ZERO;
    }
    while level.len() > 1 {
        level = next_level(level);
    }
    level[0]
}

/// The merkle branch of the first leaf (the coinbase, whose own value is not used): the
/// sibling at each level, so that folding the coinbase's txid with it
/// (`stratum::job::fold_branch`) gives [`merkle_root`].
pub fn merkle_branch(mut level: Vec<Hash256>) -> Vec<Hash256> {
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().expect("non-empty"));
        }
        branch.push(level[1]);
        level = next_level(level);
    }
    branch
}

/// One level up a merkle tree: pairs hashed with sha256d, the last hash paired with itself
/// when the count is odd.
fn next_level(mut level: Vec<Hash256>) -> Vec<Hash256> {
    if level.len() % 2 == 1 {
        level.push(*level.last().expect("non-empty"));
    }
    level
        .chunks(2)
        .map(|pair| {
            let mut both = [0u8; 64];
            both[..32].copy_from_slice(&pair[0].0);
            both[32..].copy_from_slice(&pair[1].0);
            Hash256::sha256d(&both)
        })
        .collect()
}

/// The first transaction of a local-chain block, split around its extranonce: a coinbase
/// whose input script carries the height (BIP 34), the account's name and an 8-byte
/// extranonce pushed last.
fn coinbase_parts(height: u64, account: &str) -> (Vec<u8>, Vec<u8>) {
    let tag = format!("hashgrid:{account}");
    let tag = &tag.as_bytes()[..tag.len().min(75)];
    let script_len = 1 + 8 + 1 + tag.len() + 1 + LOCAL_EXTRANONCE_SIZE;

    let mut coinb1 = Vec::new();
    coinb1.extend_from_slice(&1u32.to_le_bytes()); // version
    coinb1.push(1); // one input
    coinb1.extend_from_slice(&[0; 32]); // null outpoint
    coinb1.extend_from_slice(&u32::MAX.to_le_bytes());
    coinb1.push(script_len as u8);
    coinb1.push(8);
    coinb1.extend_from_slice(&height.to_le_bytes());
    coinb1.push(tag.len() as u8);
    coinb1.extend_from_slice(tag);
    coinb1.push(LOCAL_EXTRANONCE_SIZE as u8);

    let mut coinb2 = Vec::new();
    coinb2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
    coinb2.push(1); // one output
    coinb2.extend_from_slice(&5_000_000_000u64.to_le_bytes());
    coinb2.push(1);
    coinb2.push(0x51); // OP_TRUE
    coinb2.extend_from_slice(&0u32.to_le_bytes()); // lock time
    (coinb1, coinb2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(roll: bool) -> Job {
        let mut chain = LocalChain::new(CompactTarget(0x1d00ffff));
        let template = chain.template("alice", 1_700_000_000);
        Job::new(1, "alice".into(), JobKind::LocalChain { height: 1 }, template, roll)
    }

    #[test]
    fn merkle_root_matches_bitcoin_block_100000() {
        // Block 100000: four transactions (txids in internal byte order).
        let txid = |hex: &str| {
            let mut b = [0u8; 32];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            b.reverse();
            Hash256(b)
        };
        let txs = vec![
            txid("8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87"),
            txid("fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4"),
            txid("6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4"),
            txid("e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d"),
        ];
        assert_eq!(merkle_root(txs), txid("f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"));
    }

    #[test]
    fn transactions_change_the_merkle_root() {
        let mut plain = LocalChain::new(CompactTarget(0x1d00ffff));
        let mut busy = LocalChain::new(CompactTarget(0x1d00ffff)).with_txs(3);
        assert_ne!(plain.template("alice", 1).merkle_root, busy.template("alice", 1).merkle_root);
    }

    #[test]
    fn templates_differ_by_account_and_extranonce() {
        let mut chain = LocalChain::new(CompactTarget(0x1d00ffff));
        let a = chain.template("alice", 1);
        let b = chain.template("alice", 1);
        let c = chain.template("bob", 1);
        assert_ne!(a.merkle_root, b.merkle_root);
        assert_ne!(b.merkle_root, c.merkle_root);
    }

    #[test]
    fn the_branch_folds_to_the_root_for_any_count() {
        for n in 1..12u8 {
            let leaves: Vec<Hash256> = (0..n).map(|i| Hash256::sha256d(&[i])).collect();
            let branch = merkle_branch(leaves.clone());
            let folded = hashgrid_common::stratum::job::fold_branch(leaves[0], &branch);
            assert_eq!(folded, merkle_root(leaves), "{n} leaves");
        }
    }

    #[test]
    fn a_miners_local_job_rebuilds_the_template_of_its_extranonce() {
        // A miner's coinbase with extranonce slot 0, counter 1 is the first template's.
        let mut chain = LocalChain::at(7, Hash256([9; 32]), CompactTarget(0x1d00ffff)).with_txs(5);
        let notify = chain.miner_notify("alice", 1_700_000_000);
        let template = chain.template("alice", 1_700_000_000);
        let carving = chain.slots.carving();
        let job = hashgrid_common::stratum::Job::new(notify, vec![], LOCAL_EXTRANONCE_SIZE, 1.0, 0).unwrap();
        assert_eq!(job.template(&carving.extranonce2(0, 0)).unwrap(), template);
        assert_eq!(job.notify.job_id, "local-8");
        assert_eq!(job.notify.prev_blockhash, Hash256([9; 32]));
    }

    #[test]
    fn share_checks_run_in_order() {
        let mut j = job(true);
        let easy = Target::MAX;
        let t = j.template;
        let rolled = t.version ^ (5 << 13);
        let all = HeldRange { version: t.version, rolled: 0, start: 0, count: 1 << 32 };
        let held = Some(&all);
        assert_eq!(j.check_share(t.version, t.time - 1, 0, held, &easy, 600), Err(RejectReason::TimeOutOfWindow));
        assert_eq!(j.check_share(t.version, t.time + 601, 0, held, &easy, 600), Err(RejectReason::TimeOutOfWindow));
        assert_eq!(j.check_share(t.version ^ 1, t.time, 0, held, &easy, 600), Err(RejectReason::VersionOutsideMask));
        // Outside the held range: another version, nonces past either end, or no range held.
        let part = HeldRange { version: rolled, rolled: 0, start: 5, count: 3 };
        assert_eq!(j.check_share(t.version, t.time, 6, Some(&part), &easy, 600), Err(RejectReason::RangeNotHeld));
        assert_eq!(j.check_share(rolled, t.time, 4, Some(&part), &easy, 600), Err(RejectReason::RangeNotHeld));
        assert_eq!(j.check_share(rolled, t.time, 8, Some(&part), &easy, 600), Err(RejectReason::RangeNotHeld));
        assert_eq!(j.check_share(rolled, t.time, 7, None, &easy, 600), Err(RejectReason::RangeNotHeld));
        let hard = Target::from_expected_hashes(u128::MAX);
        assert_eq!(j.check_share(t.version, t.time, 0, held, &hard, 600), Err(RejectReason::AboveTarget));
        let ok = j.check_share(rolled, t.time + 1, 7, Some(&part), &easy, 600).unwrap();
        assert_eq!(ok.hash, Header { version: rolled, time: t.time + 1, nonce: 7, ..t }.block_hash());
        assert_eq!(j.check_share(rolled, t.time + 1, 7, Some(&part), &easy, 600), Err(RejectReason::Duplicate));
        j.stale = true;
        assert_eq!(j.check_share(t.version, t.time, 8, held, &easy, 600), Err(RejectReason::StaleJob));
    }

    #[test]
    fn versions_roll_when_nonces_run_out() {
        let mut j = job(true);
        let base = j.template.version;
        let one = |version, start, count| Some(Issued { version, rolled: 0, start, count });
        assert_eq!(j.issue(1 << 32, 1, 0), one(base, 0, 1 << 32));
        assert_eq!(j.issue(10, 2, 0), one(base ^ (1 << 13), 0, 10));
        let mut fixed = job(false);
        assert!(fixed.issue(1 << 32, 1, 0).is_some());
        assert_eq!(fixed.issue(10, 2, 2), None, "a job that does not roll has one version");
        assert!(fixed.is_exhausted());
    }

    #[test]
    fn groups_of_versions_are_aligned_and_disjoint() {
        let mut j = job(true);
        let base = j.template.version;
        let r = |roll: u32| base ^ (roll << 13);
        // A group of 4 (rolls 0-3), then one version (roll 4), then a group of 4 (rolls 8-11:
        // aligned, 5-7 stay unused), then a group of 2 (rolls 12-13).
        assert_eq!(j.issue(100, 1, 2), Some(Issued { version: r(0), rolled: 0x6000, start: 0, count: 100 }));
        assert_eq!(j.issue(100, 2, 0), Some(Issued { version: r(4), rolled: 0, start: 0, count: 100 }));
        assert_eq!(j.issue(100, 3, 2), Some(Issued { version: r(0), rolled: 0x6000, start: 100, count: 100 }));
        assert_eq!(j.issue(u64::MAX, 4, 2).map(|i| i.count), Some((1 << 32) - 200));
        assert_eq!(j.issue(100, 5, 2), Some(Issued { version: r(8), rolled: 0x6000, start: 0, count: 100 }));
        assert_eq!(j.issue(100, 6, 1), Some(Issued { version: r(12), rolled: 0x2000, start: 0, count: 100 }));
        // An abandoned range of a group goes to the next range of that size, not another.
        assert!(j.books.get_mut(&r(0)).unwrap().abandon(100, 3, super::super::ranges::Abandon::NodeFailed));
        assert_eq!(j.issue(100, 7, 0), Some(Issued { version: r(4), rolled: 0, start: 100, count: 100 }));
        assert_eq!(j.issue(1000, 8, 2), Some(Issued { version: r(0), rolled: 0x6000, start: 100, count: 100 }));
        // Coverage counts every (version, nonce) pair.
        let c = j.coverage();
        assert_eq!(c.in_flight, 4 * (1u64 << 32) + 200 + 4 * 100 + 2 * 100);
        // A share of any version of a held group is in the range; one outside is not.
        let held = HeldRange { version: r(0), rolled: 0x6000, start: 100, count: 100 };
        assert!(held.contains(r(3), 150) && held.contains(r(1), 100) && held.contains(r(0), 199));
        assert!(!held.contains(r(4), 150) && !held.contains(r(3), 200) && !held.contains(r(0) ^ (1 << 28), 150));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Issue { count: u64, bits: u32 },
            Complete(usize),
            Abandon(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => ((1u64..(1 << 33)), 0u32..=3).prop_map(|(count, bits)| Op::Issue { count, bits }),
                1 => any::<usize>().prop_map(Op::Complete),
                1 => any::<usize>().prop_map(Op::Abandon),
            ]
        }

        proptest! {
            /// Whatever the mix of group sizes, abandons and completions, no (version, nonce)
            /// is ever held by two live or done ranges, every range's versions lie inside the
            /// BIP 320 mask, and abandoned work is issued again before fresh work of its size.
            #[test]
            fn no_two_ranges_share_a_version_and_nonce(ops in proptest::collection::vec(op(), 1..120)) {
                let mut j = job(true);
                let base = j.template.version;
                // (id, range, live); abandoned ranges are dropped (their nonces are free again).
                let mut held: Vec<(u64, Issued, bool)> = Vec::new();
                for (id, op) in ops.into_iter().enumerate() {
                    let id = id as u64 + 1;
                    match op {
                        Op::Issue { count, bits } => {
                            let abandoned: Vec<(u32, u64)> = j
                                .books
                                .iter()
                                .filter(|(_, b)| b.rolled().count_ones() == bits)
                                .flat_map(|(&v, b)| {
                                    b.ranges()
                                        .filter(|r| matches!(r.2, super::super::super::ranges::Fate::Abandoned(_)))
                                        .map(move |r| (v, r.0))
                                })
                                .collect();
                            if let Some(range) = j.issue(count, id, bits) {
                                prop_assert_eq!(range.rolled.count_ones(), bits);
                                prop_assert_eq!((range.version ^ base) & !VERSION_ROLLING_MASK, 0);
                                prop_assert_eq!(range.rolled & !VERSION_ROLLING_MASK, 0);
                                if !abandoned.is_empty() {
                                    prop_assert!(abandoned.contains(&(range.version, range.start as u64)), "abandoned work first");
                                }
                                held.push((id, range, true));
                            }
                        }
                        Op::Complete(i) | Op::Abandon(i) if !held.iter().any(|h| h.2) => { let _ = i; }
                        Op::Complete(i) => {
                            let live: Vec<usize> = (0..held.len()).filter(|&k| held[k].2).collect();
                            let k = live[i % live.len()];
                            let (id, r, _) = held[k];
                            prop_assert!(j.books.get_mut(&r.version).unwrap().complete(r.start, id));
                            held[k].2 = false;
                        }
                        Op::Abandon(i) => {
                            let live: Vec<usize> = (0..held.len()).filter(|&k| held[k].2).collect();
                            let k = live[i % live.len()];
                            let (id, r, _) = held[k];
                            prop_assert!(j.books.get_mut(&r.version).unwrap().abandon(r.start, id, super::super::super::ranges::Abandon::NodeFailed));
                            held.remove(k);
                        }
                    }
                }
                // Per version, the nonce intervals held are disjoint.
                let mut by_version: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
                for (_, r, _) in &held {
                    for v in hashgrid_common::message::rolled_versions(r.version, r.rolled) {
                        by_version.entry(v).or_default().push((r.start as u64, r.start as u64 + r.count));
                    }
                }
                for (v, mut spans) in by_version {
                    spans.sort();
                    for w in spans.windows(2) {
                        prop_assert!(w[0].1 <= w[1].0, "version {:#x}: {:?} overlaps {:?}", v, w[0], w[1]);
                    }
                }
            }
        }
    }
}
