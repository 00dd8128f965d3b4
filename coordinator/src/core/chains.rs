//! The chains the farm serves: each a local chain with its own parameters (transactions per
//! template, bit rate, difficulty, weight) and the load the balancer weighs.
//!
//! A chain's load is `weight × (1 + tx_per_template / 1000 + bit_rate / 125,000)`, with
//! `bit_rate` the larger of the declared rate and the measured one (bytes of work updates per
//! second over the last minute: each new local template's 80-byte header plus 32 bytes per
//! transaction id, and each pool job of an account on the chain as received), and
//! `tx_per_template` the larger of the declared count and the one estimated from the merkle
//! branch of the latest pool job. One transaction per thousand and one megabit per second each count as much as the
//! chain's base load.

use std::collections::VecDeque;

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
    /// (time, bytes) of each work update in the measuring window.
    updates: VecDeque<(u64, u64)>,
    /// Transactions per template estimated from the pool jobs of its accounts (the latest).
    measured_txs: u32,
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
        Ok(Chain { params, local, updates: VecDeque::new(), measured_txs: 0 })
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
        Chain { params, local, updates: VecDeque::new(), measured_txs: 0 }
    }

    /// Records a new template (a work update) made at `now_ms`.
    pub fn record_update(&mut self, now_ms: u64) {
        self.record_bytes(now_ms, 80 + 32 * (self.params.tx_per_template as u64 + 1));
    }

    /// Records a pool job of an account on this chain, received at `now_ms`: its `bytes`
    /// (header fields, coinbase parts and merkle branch) count as a work update, and its
    /// branch of `branch_len` hashes estimates the transactions per template: a branch of n
    /// hashes folds a tree of more than 2^(n-1) and at most 2^n leaves, the coinbase among
    /// them, so about 3·2^(n-2) transactions.
    pub fn record_pool_job(&mut self, now_ms: u64, bytes: u64, branch_len: usize) {
        self.record_bytes(now_ms, bytes);
        self.measured_txs = match branch_len {
            0 => 0,
            n => ((3u64 << n.min(40)) / 4).min(MAX_TX_PER_TEMPLATE as u64) as u32,
        };
    }

    fn record_bytes(&mut self, now_ms: u64, bytes: u64) {
        self.updates.push_back((now_ms, bytes));
        while self.updates.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > MEASURE_MS) {
            self.updates.pop_front();
        }
    }

    /// Transactions per template as the balancer weighs them: declared, or measured from pool
    /// jobs when that is more.
    pub fn tx_per_template(&self) -> u32 {
        self.params.tx_per_template.max(self.measured_txs)
    }

    /// Measured work updates, bytes per second over the last minute.
    pub fn measured_bit_rate(&self, now_ms: u64) -> f64 {
        let bytes: u64 =
            self.updates.iter().filter(|(t, _)| now_ms.saturating_sub(*t) <= MEASURE_MS).map(|(_, b)| b).sum();
        bytes as f64 / (MEASURE_MS as f64 / 1000.0)
    }

    /// The load the balancer weighs.
    pub fn load(&self, now_ms: u64) -> f64 {
        let bit_rate = (self.params.bit_rate as f64).max(self.measured_bit_rate(now_ms));
        self.params.weight * (1.0 + self.tx_per_template() as f64 / 1000.0 + bit_rate / 125_000.0)
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
        let mut c = Chain::new(params("a", 0, 0, 1.0), None).unwrap();
        assert_eq!(c.load(0), 1.0);
        // A branch of 12 hashes: between 2049 and 4096 leaves; 3072 estimated.
        c.record_pool_job(0, 125_000 * 60, 12);
        assert_eq!(c.tx_per_template(), 3072);
        assert_eq!(c.load(0), 1.0 + 3.072 + 1.0);
        c.record_pool_job(1, 0, 0);
        assert_eq!(c.tx_per_template(), 0, "the latest job counts");
        let declared = Chain::new(params("b", 5000, 0, 1.0), None).unwrap();
        assert_eq!(declared.tx_per_template(), 5000, "never below the declared count");
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
