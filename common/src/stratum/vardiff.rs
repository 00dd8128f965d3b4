//! Per-miner variable difficulty, sans I/O: the Stratum server session keeps one [`Vardiff`]
//! per miner connection and asks it, on each accepted share and at its deadline, whether the
//! miner's difficulty should change.
//!
//! # What it aims at
//! A share rate that depends on the miner's measured hashrate ([`VardiffConfig::aimed_rate`]):
//! `slow.shares_per_sec` at or below `slow.hashrate` (a CPU miner answers a few times a second,
//! so its rate is known quickly), `fast.shares_per_sec` at or above `fast.hashrate` (an ASIC
//! sends a few shares a minute, so the server is not flooded), and in between the rate moves
//! log-linearly. The difficulty aimed at is `hashrate / (2^32 · rate)`, clamped to
//! `[min, max]`, rounded to three significant digits (so a pool difficulty prints as a short
//! decimal).
//!
//! # How it measures
//! The hashrate is the maximum-likelihood estimate from the shares accepted in the last
//! `window_ms`: `H = N · 2^32 / Σ(duration / difficulty)`, the sum running over the stretches of
//! time each difficulty was in force (so an empty stretch at a high difficulty weighs little,
//! and shares at a low difficulty count for little work). Times are whole milliseconds, so a
//! raise decided on a stretch shorter than a second (a miner flooding at far too low a
//! difficulty) starts the estimate afresh.
//!
//! # When it retargets
//! It looks after `retarget_shares` accepted shares since the last look, or
//! `retarget_interval_ms` after it, whichever comes first ([`Vardiff::poll_timeout`]). It moves
//! only when even the cautious end of the estimate calls for it: up when the count less one
//! standard deviation (`N − √N`) aims more than `hysteresis` times higher, down when the count
//! plus one (`N + √N + 1`) aims more than `hysteresis` times lower; and then to the aim of the
//! count itself (half a share when there is none, so an idle miner's difficulty keeps falling).
//! A few shares cannot make it swing; many make it precise. The difficulty never leaves
//! `[min, max]`.
//!
//! Times are milliseconds on the caller's monotonic clock; nothing here reads a clock.

use std::collections::VecDeque;

use super::StratumError;
use super::difficulty::share_target;

/// Hashes per share at difficulty 1.
const HASHES_PER_DIFFICULTY_1: f64 = 4_294_967_296.0;
/// Share times kept for the estimate, at most (the line rate limit keeps far fewer).
const MAX_SHARES_KEPT: usize = 16_384;
/// A stretch of one difficulty shorter than this is weak evidence: after raising on it, the
/// estimate starts afresh.
const SHORT_EVIDENCE_MS: u64 = 1000;

/// A share rate aimed at, and the hashrate it applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    /// Hashes per second.
    pub hashrate: f64,
    pub shares_per_sec: f64,
}

/// How a miner's difficulty is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct VardiffConfig {
    /// The difficulty a new miner starts at.
    pub start: f64,
    pub min: f64,
    pub max: f64,
    /// The rate aimed at for slow miners, at or below `slow.hashrate`.
    pub slow: RatePoint,
    /// The rate aimed at for fast miners, at or above `fast.hashrate`.
    pub fast: RatePoint,
    /// How far back accepted shares count in the estimate.
    pub window_ms: u64,
    pub retarget_shares: u32,
    pub retarget_interval_ms: u64,
    /// The aimed difficulty must differ from the current one by more than this factor (> 1).
    pub hysteresis: f64,
}

impl Default for VardiffConfig {
    /// A CPU miner at 10 MH/s aims at 2 shares/s; an ASIC at 10 TH/s and above at 6 a minute.
    fn default() -> Self {
        VardiffConfig {
            start: 1.0,
            min: 1e-6,
            max: 1e9,
            slow: RatePoint { hashrate: 1e7, shares_per_sec: 2.0 },
            fast: RatePoint { hashrate: 1e13, shares_per_sec: 0.1 },
            window_ms: 300_000,
            retarget_shares: 16,
            retarget_interval_ms: 60_000,
            hysteresis: 1.5,
        }
    }
}

impl VardiffConfig {
    /// Checks the bounds (each a usable pool difficulty, `min ≤ start ≤ max`), the rates and
    /// the timings.
    pub fn check(&self) -> Result<(), StratumError> {
        let bad = |what: &'static str| Err(StratumError::Config(what));
        for d in [self.min, self.start, self.max] {
            share_target(d)?;
        }
        if !(self.min <= self.start && self.start <= self.max) {
            return bad("vardiff: min ≤ start ≤ max does not hold");
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if ![self.slow.hashrate, self.slow.shares_per_sec, self.fast.hashrate, self.fast.shares_per_sec]
            .into_iter()
            .all(positive)
        {
            return bad("vardiff: hashrates and share rates must be positive");
        }
        if self.slow.hashrate > self.fast.hashrate {
            return bad("vardiff: the slow hashrate must not exceed the fast one");
        }
        if !(self.hysteresis.is_finite() && self.hysteresis > 1.0) {
            return bad("vardiff: hysteresis must be above 1");
        }
        if self.window_ms == 0 || self.retarget_interval_ms == 0 || self.retarget_shares == 0 {
            return bad("vardiff: window, interval and share count must be positive");
        }
        Ok(())
    }

    /// The share rate aimed at for a miner of `hashrate` hashes per second.
    pub fn aimed_rate(&self, hashrate: f64) -> f64 {
        let (slow, fast) = (self.slow, self.fast);
        if hashrate <= slow.hashrate || fast.hashrate <= slow.hashrate {
            return slow.shares_per_sec;
        }
        if hashrate >= fast.hashrate {
            return fast.shares_per_sec;
        }
        let t = (hashrate / slow.hashrate).ln() / (fast.hashrate / slow.hashrate).ln();
        (slow.shares_per_sec.ln() + t * (fast.shares_per_sec / slow.shares_per_sec).ln()).exp()
    }

    /// The difficulty aimed at for a miner of `hashrate`, rounded and within the bounds.
    pub fn aimed_difficulty(&self, hashrate: f64) -> f64 {
        let ideal = hashrate / (HASHES_PER_DIFFICULTY_1 * self.aimed_rate(hashrate));
        self.clamp(round_3(ideal))
    }

    /// `d` within `[min, max]` (NaN reads as `min`).
    pub fn clamp(&self, d: f64) -> f64 {
        if d.is_nan() { self.min } else { d.clamp(self.min, self.max) }
    }
}

/// Three significant decimal digits, read back as the nearest `f64` (so it prints short).
fn round_3(d: f64) -> f64 {
    if !d.is_finite() || d <= 0.0 {
        return d;
    }
    format!("{d:.2e}").parse().unwrap_or(d)
}

/// One miner's difficulty and the evidence for it.
#[derive(Debug, Clone)]
pub struct Vardiff {
    config: VardiffConfig,
    difficulty: f64,
    /// When the estimate's evidence starts (creation, or the last upward retarget).
    origin_ms: u64,
    /// `(from, difficulty)`: the difficulty in force from each time on, oldest first.
    stretches: VecDeque<(u64, f64)>,
    /// Times of the accepted shares in the window.
    shares: VecDeque<u64>,
    since_retarget: u32,
    last_retarget_ms: u64,
}

impl Vardiff {
    /// Starts at `config.start` (clamped), at `now_ms`.
    pub fn new(config: VardiffConfig, now_ms: u64) -> Self {
        let difficulty = config.clamp(config.start);
        Vardiff {
            config,
            difficulty,
            origin_ms: now_ms,
            stretches: VecDeque::from([(now_ms, difficulty)]),
            shares: VecDeque::new(),
            since_retarget: 0,
            last_retarget_ms: now_ms,
        }
    }

    // Getters.

    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    pub fn config(&self) -> &VardiffConfig {
        &self.config
    }

    /// The hashrate measured over the window, in hashes per second (0 before any share).
    pub fn hashrate(&self, now_ms: u64) -> f64 {
        if self.shares.is_empty() { 0.0 } else { self.estimate(now_ms, self.shares.len() as f64) }
    }

    // Inputs.

    /// An accepted share at `now_ms`. Returns the new difficulty when it retargets.
    pub fn on_share(&mut self, now_ms: u64) -> Option<f64> {
        if self.shares.len() >= MAX_SHARES_KEPT {
            self.shares.pop_front();
        }
        self.shares.push_back(now_ms);
        self.since_retarget = self.since_retarget.saturating_add(1);
        if self.since_retarget >= self.config.retarget_shares { self.retarget(now_ms) } else { None }
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) passed. Returns the new
    /// difficulty when it retargets.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<f64> {
        if now_ms >= self.poll_timeout() { self.retarget(now_ms) } else { None }
    }

    /// Sets the difficulty from outside (a miner's `mining.suggest_difficulty`, the
    /// coordinator), clamped to the bounds; the estimate starts afresh. Returns the value set.
    pub fn set(&mut self, now_ms: u64, difficulty: f64) -> f64 {
        let difficulty = self.config.clamp(difficulty);
        self.restart(now_ms, difficulty);
        difficulty
    }

    // Outputs.

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> u64 {
        self.last_retarget_ms.saturating_add(self.config.retarget_interval_ms)
    }

    // Internals.

    fn restart(&mut self, now_ms: u64, difficulty: f64) {
        self.difficulty = difficulty;
        self.origin_ms = now_ms;
        self.stretches = VecDeque::from([(now_ms, difficulty)]);
        self.shares.clear();
        self.since_retarget = 0;
        self.last_retarget_ms = now_ms;
    }

    fn retarget(&mut self, now_ms: u64) -> Option<f64> {
        let window_start = now_ms.saturating_sub(self.config.window_ms).max(self.origin_ms);
        while self.shares.front().is_some_and(|&t| t < window_start) {
            self.shares.pop_front();
        }
        while self.stretches.len() > 1 && self.stretches[1].0 <= window_start {
            self.stretches.pop_front();
        }
        self.since_retarget = 0;
        self.last_retarget_ms = now_ms;
        // The count and one standard deviation either side (Poisson): move only when even the
        // cautious end of the estimate calls for it, and then to the middle.
        let n = self.shares.len() as f64;
        let spread = n.sqrt();
        let aimed = |count: f64| self.config.aimed_difficulty(self.estimate(now_ms, count));
        let h = self.config.hysteresis;
        let current = self.difficulty;
        let stretch_ms = now_ms.saturating_sub(self.stretches.back().map_or(now_ms, |&(from, _)| from));
        if aimed((n - spread).max(0.0)) > current * h {
            let up = aimed(n);
            // Evidence from under a second is skewed by whole-millisecond times: start afresh.
            if stretch_ms < SHORT_EVIDENCE_MS {
                self.restart(now_ms, up);
            } else {
                self.change(now_ms, up);
            }
            Some(up)
        } else if aimed(n + spread + 1.0) < current / h {
            let down = aimed(n.max(0.5));
            self.change(now_ms, down);
            Some(down)
        } else {
            None
        }
    }

    fn change(&mut self, now_ms: u64, difficulty: f64) {
        self.difficulty = difficulty;
        self.stretches.push_back((now_ms, difficulty));
    }

    /// `count · 2^32 / exposure`, the exposure being the sum of each stretch's milliseconds
    /// in the window over its difficulty, the current stretch reaching one millisecond past
    /// `now_ms` (the current millisecond is part of it).
    fn estimate(&self, now_ms: u64, count: f64) -> f64 {
        let window_start = now_ms.saturating_sub(self.config.window_ms).max(self.origin_ms);
        let end = now_ms + 1;
        let mut exposure_ms = 0.0;
        for (i, &(from, difficulty)) in self.stretches.iter().enumerate() {
            let to = self.stretches.get(i + 1).map_or(end, |&(next, _)| next);
            let (from, to) = (from.max(window_start), to.min(end));
            if to > from {
                exposure_ms += (to - from) as f64 / difficulty;
            }
        }
        if exposure_ms <= 0.0 {
            return 0.0;
        }
        count * HASHES_PER_DIFFICULTY_1 * 1000.0 / exposure_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_aimed_rate_falls_log_linearly_between_the_points() {
        let c = VardiffConfig::default();
        assert_eq!(c.aimed_rate(1e6), 2.0);
        assert_eq!(c.aimed_rate(1e15), 0.1);
        let mid = c.aimed_rate(1e10);
        assert!((mid - (2.0f64 * 0.1).sqrt()).abs() < 1e-9, "{mid}");
        // 1 MH/s at 2 shares/s: 1e6 / (2^32 · 2) ≈ 0.000116; 100 TH/s at 0.1/s ≈ 232831.
        assert_eq!(c.aimed_difficulty(1e6), 0.000116);
        assert_eq!(c.aimed_difficulty(1e14), 233_000.0);
        assert_eq!(c.aimed_difficulty(1e30), c.max);
        assert_eq!(c.aimed_difficulty(0.0), c.min);
        c.check().unwrap();
        for bad in [
            VardiffConfig { min: 2.0, ..c.clone() },
            VardiffConfig { hysteresis: 1.0, ..c.clone() },
            VardiffConfig { min: 0.0, ..c.clone() },
            VardiffConfig { window_ms: 0, ..c.clone() },
            VardiffConfig { fast: RatePoint { hashrate: 1.0, shares_per_sec: 1.0 }, ..c.clone() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_shares_lowers_the_difficulty_and_a_flood_raises_it() {
        let mut v = Vardiff::new(VardiffConfig::default(), 0);
        assert_eq!(v.poll_timeout(), 60_000);
        assert_eq!(v.handle_timeout(59_999), None);
        let lower = v.handle_timeout(60_000).unwrap();
        assert!(lower < 0.01, "{lower}");
        let mut v = Vardiff::new(VardiffConfig::default(), 0);
        let raised: Vec<f64> = (0..16).filter_map(|i| v.on_share(i)).collect();
        assert_eq!(raised.len(), 1, "16 shares in 16 ms at difficulty 1");
        assert!(raised[0] > 100.0);
        assert_eq!(v.set(100, 1e20), 1e9, "clamped");
        assert_eq!(v.set(100, f64::NAN), 1e-6);
    }

    /// A miner of `hashrate` whose shares arrive exactly every `difficulty · 2^32 / hashrate`
    /// seconds: runs for `secs` of virtual time and returns the difficulties it was given,
    /// with their times.
    fn simulate(config: &VardiffConfig, hashrate: f64, secs: f64) -> Vec<(f64, f64)> {
        let mut v = Vardiff::new(config.clone(), 0);
        let mut changes = vec![(0.0, v.difficulty())];
        let mut next_share = v.difficulty() * HASHES_PER_DIFFICULTY_1 / hashrate;
        loop {
            let deadline = v.poll_timeout() as f64 / 1000.0;
            let (t, change) = if next_share < deadline {
                let t = next_share;
                let change = v.on_share((t * 1000.0) as u64);
                next_share = t + v.difficulty() * HASHES_PER_DIFFICULTY_1 / hashrate;
                (t, change)
            } else {
                (deadline, v.handle_timeout(v.poll_timeout()))
            };
            if t > secs {
                return changes;
            }
            if let Some(d) = change {
                changes.push((t, d));
                // The miner works at the new difficulty from now on.
                next_share = t + d * HASHES_PER_DIFFICULTY_1 / hashrate;
            }
        }
    }

    /// Shares as a Poisson process (seeded, so the test is the same every run): from the
    /// default start, miners from 1 MH/s to 100 TH/s spend the last two hours of four within
    /// 4x of the aim, retargeting less than once an hour on average.
    #[test]
    fn poisson_shares_settle_without_oscillating() {
        let config = VardiffConfig::default();
        let (mut worst, mut late_retargets, mut runs) = (1.0f64, 0, 0);
        for seed in 1..40u64 {
            for log_rate in [6.0, 8.0, 10.0, 12.0, 14.0] {
                let hashrate = 10f64.powf(log_rate);
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut exponential = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    -(((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64).ln()
                };
                let mut v = Vardiff::new(config.clone(), 0);
                let aimed = config.aimed_difficulty(hashrate);
                let (mut t, mut next) = (0.0, exponential() * v.difficulty() * HASHES_PER_DIFFICULTY_1 / hashrate);
                while t < 4.0 * 3600.0 {
                    let deadline = v.poll_timeout() as f64 / 1000.0;
                    let change = if next < deadline {
                        t = next;
                        v.on_share((t * 1000.0) as u64)
                    } else {
                        t = deadline;
                        v.handle_timeout(v.poll_timeout())
                    };
                    if change.is_some() || next <= t {
                        next = t + exponential() * v.difficulty() * HASHES_PER_DIFFICULTY_1 / hashrate;
                    }
                    if t > 2.0 * 3600.0 {
                        let ratio = v.difficulty() / aimed;
                        worst = worst.max(ratio.max(1.0 / ratio));
                        late_retargets += usize::from(change.is_some());
                    }
                }
                runs += 1;
            }
        }
        assert!(worst < 4.0, "{worst}");
        assert!(late_retargets < 2 * runs, "{late_retargets} retargets in {runs} runs of two hours");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// From any starting difficulty, miners from 1 MH/s to 100 TH/s end within a factor of
        /// two of the aimed difficulty (the hysteresis and the estimate's caution) and stay there
        /// for the last hour of four; no difficulty ever leaves the bounds.
        #[test]
        fn converges_and_stays_in_bounds(log_rate in 6.0f64..14.0, log_start in -6.0f64..9.0) {
            let config = VardiffConfig { start: round_3(10f64.powf(log_start)), ..VardiffConfig::default() };
            let hashrate = 10f64.powf(log_rate);
            let changes = simulate(&config, hashrate, 4.0 * 3600.0);
            for &(_, d) in &changes {
                prop_assert!((config.min..=config.max).contains(&d), "{d} out of bounds");
            }
            let &(last_change, last) = changes.last().unwrap();
            let aimed = config.aimed_difficulty(hashrate);
            // The hysteresis, widened by the estimate's one-sigma caution.
            let ratio = last / aimed;
            prop_assert!(ratio < 2.0 && ratio > 0.5, "{hashrate} H/s: ended at {last}, aimed {aimed}; changes {changes:?}");
            prop_assert!(last_change < 3.0 * 3600.0, "still retargeting at {last_change} s: {changes:?}");
        }
    }
}
