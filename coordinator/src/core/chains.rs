//! The chains the farm serves and the load the balancer weighs for each.
//!
//! - **Local chains**, named by the operator, each with its own parameters (transactions per
//!   template, bit rate, difficulty, weight): the work of the accounts without a pool.
//! - **Pool chains**, found from the pools' job streams: accounts whose pools' jobs build on
//!   the same previous block mine the same chain ([`pool_chain`] groups them), named
//!   `pool:ACCOUNT` after the account that first mined it. Its load is measured from the job
//!   stream of one of its accounts (the busiest), so it counts once however many accounts
//!   share it.
//!
//! A chain's load is `weight × (1 + tx_per_template / 1000 + bit_rate / 125,000)` ([`load`]),
//! with `bit_rate` the larger of the declared rate and the measured one (bytes of work updates
//! per second over the last minute, [`WorkUpdates`]: each new local template's 80-byte header
//! plus 32 bytes per transaction id; each pool job as received), and `tx_per_template` the
//! larger of the declared count and the one estimated from the merkle branch of the latest
//! pool job. One transaction per thousand and one megabit per second each count as much as
//! the chain's base load. A pool chain has weight 1 and declares nothing.

use std::collections::{BTreeMap, VecDeque};

use hashgrid_common::header::Hash256;
use hashgrid_common::message::ChainParams;
use hashgrid_common::{CompactTarget, Target};

use super::accounts::DEFAULT_CHAIN;
use super::work::LocalChain;

/// Most transactions a template may carry.
pub const MAX_TX_PER_TEMPLATE: u32 = 100_000;
/// Window of the measured bit rate.
const MEASURE_MS: u64 = 60_000;

/// One chain: its parameters, its local chain, and its measured work updates.
#[derive(Debug, Clone)]
pub struct Chain {
    pub params: ChainParams,
    pub local: LocalChain,
    /// Its new templates.
    updates: WorkUpdates,
}

/// A stream of work updates, measured: bytes per second over the last minute, and the
/// transactions per template estimated from the latest pool job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkUpdates {
    /// (time, bytes) of each work update in the measuring window.
    updates: VecDeque<(u64, u64)>,
    txs: u32,
}

impl WorkUpdates {
    /// Records a work update of `bytes` at `now_ms`.
    pub fn record(&mut self, now_ms: u64, bytes: u64) {
        self.updates.push_back((now_ms, bytes));
        while self.updates.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > MEASURE_MS) {
            self.updates.pop_front();
        }
    }

    /// Records a pool job received at `now_ms`: its `bytes` (header fields, coinbase parts and
    /// merkle branch) count as a work update, and its branch of `branch_len` hashes estimates
    /// the transactions per template: a branch of n hashes folds a tree of more than 2^(n-1)
    /// and at most 2^n leaves, the coinbase among them, so about 3·2^(n-2) transactions.
    pub fn record_pool_job(&mut self, now_ms: u64, bytes: u64, branch_len: usize) {
        self.record(now_ms, bytes);
        self.txs = match branch_len {
            0 => 0,
            n => ((3u64 << n.min(40)) / 4).min(MAX_TX_PER_TEMPLATE as u64) as u32,
        };
    }

    /// Transactions per template of the latest pool job (0 when none).
    pub fn tx_per_template(&self) -> u32 {
        self.txs
    }

    /// Bytes per second over the last minute.
    pub fn bit_rate(&self, now_ms: u64) -> f64 {
        let bytes: u64 =
            self.updates.iter().filter(|(t, _)| now_ms.saturating_sub(*t) <= MEASURE_MS).map(|(_, b)| b).sum();
        bytes as f64 / (MEASURE_MS as f64 / 1000.0)
    }

    /// The load of a chain of weight 1 that declares nothing and has this job stream.
    pub fn load(&self, now_ms: u64) -> f64 {
        load(1.0, self.txs, self.bit_rate(now_ms))
    }
}

/// The load of a chain of `weight` with `tx_per_template` and `bit_rate` (bytes per second).
pub fn load(weight: f64, tx_per_template: u32, bit_rate: f64) -> f64 {
    weight * (1.0 + tx_per_template as f64 / 1000.0 + bit_rate / 125_000.0)
}

/// The pool chain of an account whose pool sent a job on `prev` (the previous block):
/// - the chain of another account whose latest job is on `prev` (the same chain);
/// - else its own chain, while every other account on it is still on the account's former
///   previous block (the account is the first to see a new block of its chain);
/// - else `None`: a chain of its own, new.
///
/// `own` and `others` are (chain, previous block of the latest job) per account.
pub fn pool_chain<'a>(
    own: (Option<&'a str>, Option<Hash256>),
    prev: Hash256,
    others: impl Iterator<Item = (Option<&'a str>, Option<Hash256>)> + Clone,
) -> Option<&'a str> {
    if let Some(chain) = others.clone().find(|(c, p)| c.is_some() && *p == Some(prev)).and_then(|(c, _)| c) {
        return Some(chain);
    }
    let (chain, former) = own;
    let chain = chain?;
    others.filter(|(c, _)| *c == Some(chain)).all(|(_, p)| p == former).then_some(chain)
}

/// The load of each pool chain, given each account's chain and job stream: the largest of
/// its accounts' measured loads, so that a chain is counted once however many accounts share
/// it.
pub fn pool_chain_loads<'a>(
    members: impl Iterator<Item = (&'a str, &'a WorkUpdates)>,
    now_ms: u64,
) -> BTreeMap<String, f64> {
    let mut loads: BTreeMap<String, f64> = BTreeMap::new();
    for (chain, updates) in members {
        let load = updates.load(now_ms);
        let entry = loads.entry(chain.to_string()).or_insert(load);
        *entry = entry.max(load);
    }
    loads
}

/// Why chain parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chain: {0}")]
pub struct InvalidChain(pub String);

impl Chain {
    /// A chain from validated parameters, at `tip` (height and hash) if it has blocks.
    pub fn new(params: ChainParams, tip: Option<(u64, hashgrid_common::BlockHash)>) -> Result<Self, InvalidChain> {
        let bits = validate(&params)?;
        let local = match tip {
            Some((height, hash)) => LocalChain::at(height, hash, bits),
            None => LocalChain::new(bits),
        }
        .with_txs(params.tx_per_template);
        Ok(Chain { params, local, updates: WorkUpdates::default() })
    }

    /// The built-in chain every account uses unless it names another.
    pub fn default_chain(bits: CompactTarget, tip: Option<(u64, hashgrid_common::BlockHash)>) -> Self {
        let difficulty = Target::from_compact(bits).map(|t| t.difficulty()).unwrap_or(1.0);
        let params =
            ChainParams { name: DEFAULT_CHAIN.into(), tx_per_template: 0, bit_rate: 0, difficulty, weight: 1.0 };
        let local = match tip {
            Some((height, hash)) => LocalChain::at(height, hash, bits),
            None => LocalChain::new(bits),
        };
        Chain { params, local, updates: WorkUpdates::default() }
    }

    /// Records a new template (a work update) made at `now_ms`.
    pub fn record_update(&mut self, now_ms: u64) {
        self.updates.record(now_ms, 80 + 32 * (self.params.tx_per_template as u64 + 1));
    }

    /// Measured work updates, bytes per second over the last minute.
    pub fn measured_bit_rate(&self, now_ms: u64) -> f64 {
        self.updates.bit_rate(now_ms)
    }

    /// The load the balancer weighs.
    pub fn load(&self, now_ms: u64) -> f64 {
        let bit_rate = (self.params.bit_rate as f64).max(self.measured_bit_rate(now_ms));
        load(self.params.weight, self.params.tx_per_template, bit_rate)
    }
}

/// Checks the parameters and returns the chain's block target in compact form.
pub fn validate(params: &ChainParams) -> Result<CompactTarget, InvalidChain> {
    let name = &params.name;
    if !super::accounts::valid_name(name) {
        return Err(InvalidChain(format!("{name:?}: use 1-64 letters, digits, '-', '_' or '.'")));
    }
    if params.tx_per_template > MAX_TX_PER_TEMPLATE {
        return Err(InvalidChain(format!("at most {MAX_TX_PER_TEMPLATE} transactions per template")));
    }
    if !(params.weight.is_finite() && params.weight > 0.0) {
        return Err(InvalidChain(format!("the weight must be a positive number, not {}", params.weight)));
    }
    if !(params.difficulty.is_finite() && params.difficulty > 0.0) {
        return Err(InvalidChain(format!("the difficulty must be a positive number, not {}", params.difficulty)));
    }
    let target = Target::from_difficulty(params.difficulty)
        .map_err(|e| InvalidChain(format!("difficulty {}: {e}", params.difficulty)))?;
    Ok(target.to_compact())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str, tx: u32, bit_rate: u64, weight: f64) -> ChainParams {
        ChainParams { name: name.into(), tx_per_template: tx, bit_rate, difficulty: 1.0, weight }
    }

    #[test]
    fn load_weighs_transactions_bit_rate_and_weight() {
        let base = Chain::new(params("a", 0, 0, 1.0), None).unwrap();
        assert_eq!(base.load(0), 1.0);
        let busy = Chain::new(params("b", 2000, 250_000, 2.0), None).unwrap();
        assert_eq!(busy.load(0), 2.0 * (1.0 + 2.0 + 2.0));
    }

    #[test]
    fn measured_updates_raise_the_load_above_the_declared() {
        let mut c = Chain::new(params("a", 999, 0, 1.0), None).unwrap();
        for i in 0..600 {
            c.record_update(i * 100);
        }
        // 600 templates of 80 + 32 000 bytes in a minute.
        let rate = c.measured_bit_rate(60_000);
        assert!((rate - 600.0 * 32_080.0 / 60.0).abs() < 1.0, "{rate}");
        assert!(c.load(60_000) > Chain::new(params("a", 999, 0, 1.0), None).unwrap().load(60_000));
        assert_eq!(c.measured_bit_rate(200_000), 0.0, "old updates age out");
    }

    #[test]
    fn pool_jobs_are_measured_as_load() {
        let mut stream = WorkUpdates::default();
        assert_eq!(stream.load(0), 1.0);
        // A branch of 12 hashes: between 2049 and 4096 leaves; 3072 estimated.
        stream.record_pool_job(0, 125_000 * 60, 12);
        assert_eq!(stream.tx_per_template(), 3072);
        assert_eq!(stream.load(0), 1.0 + 3.072 + 1.0);
        stream.record_pool_job(1, 0, 0);
        assert_eq!(stream.tx_per_template(), 0, "the latest job counts");
        assert_eq!(stream.load(200_000), 1.0, "old updates age out");
    }

    fn h(b: u8) -> Option<Hash256> {
        Some(Hash256([b; 32]))
    }

    #[test]
    fn accounts_on_the_same_previous_block_share_a_chain() {
        // The first account of a chain has none yet: a new one.
        assert_eq!(pool_chain((None, None), Hash256([1; 32]), [].into_iter()), None);
        // Another account on the same block joins it; one on another block does not.
        let others = [(Some("pool:a"), h(1))];
        assert_eq!(pool_chain((None, None), Hash256([1; 32]), others.into_iter()), Some("pool:a"));
        assert_eq!(pool_chain((None, None), Hash256([2; 32]), others.into_iter()), None);
        // The first to see a new block keeps the chain; the others follow it there.
        let others = [(Some("pool:a"), h(1)), (Some("pool:a"), h(1))];
        assert_eq!(pool_chain((Some("pool:a"), h(1)), Hash256([2; 32]), others.into_iter()), Some("pool:a"));
        // An account whose chain mates are elsewhere leaves them: a new chain.
        let others = [(Some("pool:a"), h(3))];
        assert_eq!(pool_chain((Some("pool:a"), h(1)), Hash256([2; 32]), others.into_iter()), None);
    }

    proptest::proptest! {
        /// However many accounts share a chain, and in whatever order their pools' jobs come,
        /// they end up on one chain after each block, and its load is one job stream's.
        #[test]
        fn a_chain_is_counted_once_however_many_accounts_share_it(
            accounts in 1usize..6,
            blocks in proptest::collection::vec((1u8..=255, 0usize..13, 100u64..5000, proptest::prelude::any::<u64>()), 1..12),
        ) {
            let mut chain: Vec<Option<String>> = vec![None; accounts];
            let mut prev: Vec<Option<Hash256>> = vec![None; accounts];
            let mut streams = vec![WorkUpdates::default(); accounts];
            let mut alone = WorkUpdates::default();
            for (i, &(block, branch, bytes, order)) in blocks.iter().enumerate() {
                let now = i as u64 * 1000;
                alone.record_pool_job(now, bytes, branch);
                // The accounts hear of the block in an order of their own.
                let mut turn: Vec<usize> = (0..accounts).collect();
                turn.rotate_left(order as usize % accounts);
                for a in turn {
                    let others: Vec<(Option<String>, Option<Hash256>)> =
                        (0..accounts).filter(|&b| b != a).map(|b| (chain[b].clone(), prev[b])).collect();
                    let found = pool_chain(
                        (chain[a].as_deref(), prev[a]),
                        Hash256([block; 32]),
                        others.iter().map(|(c, p)| (c.as_deref(), *p)),
                    )
                    .map(str::to_string);
                    chain[a] = Some(found.unwrap_or_else(|| format!("pool:{a}")));
                    prev[a] = Some(Hash256([block; 32]));
                    streams[a].record_pool_job(now, bytes, branch);
                }
                let names: std::collections::BTreeSet<_> = chain.iter().collect();
                proptest::prop_assert_eq!(names.len(), 1, "{:?}", chain);
                let loads = pool_chain_loads(chain.iter().map(|c| c.as_deref().unwrap()).zip(&streams), now);
                proptest::prop_assert_eq!(loads.len(), 1);
                proptest::prop_assert_eq!(loads.values().next().copied(), Some(alone.load(now)));
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Chain::new(params("", 0, 0, 1.0), None).is_err());
        assert!(Chain::new(params("a b", 0, 0, 1.0), None).is_err());
        assert!(Chain::new(params("a", MAX_TX_PER_TEMPLATE + 1, 0, 1.0), None).is_err());
        assert!(Chain::new(params("a", 0, 0, 0.0), None).is_err());
        assert!(Chain::new(params("a", 0, 0, f64::NAN), None).is_err());
        assert!(Chain::new(ChainParams { difficulty: -1.0, ..params("a", 0, 0, 1.0) }, None).is_err());
    }

    #[test]
    fn difficulty_sets_the_block_target() {
        let c = Chain::new(ChainParams { difficulty: 256.0, ..params("a", 0, 0, 1.0) }, None).unwrap();
        assert_eq!(c.local.bits, CompactTarget(0x1c00ffff));
    }
}
