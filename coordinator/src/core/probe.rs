//! Under-delivery detection: is a node's count of verified shares consistent with the rate it
//! announces?
//!
//! While a node holds work, every hash it does at its announced rate finds a share with
//! probability 1/w (w: the expected hashes of its share target), so its accepted shares over
//! a stretch of time are Poisson with mean μ = Σ rate·dt / w. A node is *under standard* when
//! the shares it delivered are too few even for a node doing only `min_rate_ratio` of its
//! announced rate: P(K ≤ k | mean = ratio·μ) < `alpha`.
//!
//! Two allowances keep honest nodes from being judged on too little: work and shares count
//! only from `startup_ms` after a node was given work, or after the evidence started over (a
//! node needs time to receive a range, start its devices and send a batch's shares, so the
//! shares it sends lag the hashing they come from; the allowance lets that lag pass before
//! anything is counted), and no verdict on the rate is given before μ
//! reaches `min_expected`, where the test has the power to tell a slow node from noise. At
//! hundreds of shares a second, μ grows by tens in the first tick; without them an honest
//! node that had not yet sent a share would be failed within 100 ms of joining.
//!
//! A node is also under standard when more than `max_reject_ratio` of at least `min_rejects`
//! shares are rejected (the core counts only rejections for bad work). The evidence restarts
//! after `window_shares` expected shares, so an old good record does not hide a node that has
//! since slowed down.

/// The thresholds of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    /// A node delivering less than this fraction of its announced rate is under standard.
    pub min_rate_ratio: f64,
    /// The false-alarm probability accepted for one verdict.
    pub alpha: f64,
    /// A node whose rejected shares exceed this fraction of its shares is under standard.
    pub max_reject_ratio: f64,
    /// Rejections needed before the reject ratio is judged.
    pub min_rejects: u64,
    /// Expected shares after which the evidence starts over (more than `min_expected`).
    pub window_shares: f64,
    /// Expected shares before the rate is judged. At the default 100 (and the default ratio and
    /// alpha) the test flags a node delivering nothing with certainty, one at a tenth of its
    /// rate with probability 0.99998 and one at a quarter about half the time, while an honest
    /// node's chance of a false alarm is below 10^-18.
    pub min_expected: f64,
    /// Work a node has held for less than this is not yet expected to yield shares.
    pub startup_ms: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            min_rate_ratio: 0.5,
            alpha: 1e-4,
            max_reject_ratio: 0.5,
            min_rejects: 20,
            window_shares: 2000.0,
            min_expected: 100.0,
            startup_ms: 2000,
        }
    }
}

/// Why a node is under standard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shortfall {
    /// `accepted` shares where `expected` were due at the announced rate.
    Rate { accepted: u64, expected: f64 },
    /// `rejected` of `accepted + rejected` shares refused.
    Rejects { accepted: u64, rejected: u64 },
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::Rate { accepted, expected } => {
                write!(
                    f,
                    "under standard: {accepted} shares delivered where {expected:.1} were due at the announced rate"
                )
            }
            Shortfall::Rejects { accepted, rejected } => {
                write!(f, "under standard: {rejected} of {} shares rejected", accepted + rejected)
            }
        }
    }
}

/// The evidence about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    expected: f64,
    accepted: u64,
    rejected: u64,
    last_ms: u64,
    /// From when the node's work and shares count (`None`: it holds no work).
    counting_from: Option<u64>,
}

impl Probe {
    pub fn new(now_ms: u64) -> Self {
        Probe { last_ms: now_ms, ..Probe::default() }
    }

    /// Accounts for the time since the last call: a node working on a share target of
    /// `share_work` expected hashes at `announced` hashes per second (no work: `None`). Work
    /// first seen now, like evidence started over, counts from `startup_ms` after now.
    pub fn advance(&mut self, now_ms: u64, announced: f64, share_work: Option<u128>, config: &ProbeConfig) {
        let from = self.last_ms;
        self.last_ms = self.last_ms.max(now_ms);
        let Some(w) = share_work.filter(|&w| w > 0) else {
            self.counting_from = None;
            return;
        };
        let counting_from = *self.counting_from.get_or_insert(self.last_ms.saturating_add(config.startup_ms));
        let counted_from = from.max(counting_from);
        if announced.is_finite() && announced > 0.0 && self.last_ms > counted_from {
            let dt = (self.last_ms - counted_from) as f64 / 1000.0;
            self.expected += announced * dt / w as f64;
        }
        if self.expected >= config.window_shares {
            *self = Probe {
                counting_from: Some(self.last_ms.saturating_add(config.startup_ms)),
                ..Probe::new(self.last_ms)
            };
        }
    }

    /// A share of the node was accepted at `now_ms`: evidence once its work counts (shares
    /// arriving during the start-up allowance were found before the expectation began).
    pub fn accepted(&mut self, now_ms: u64) {
        if self.counting_from.is_some_and(|from| now_ms >= from) {
            self.accepted += 1;
        }
    }

    /// `n` of the node's shares were rejected for its own fault.
    pub fn rejected(&mut self, n: u64) {
        self.rejected += n;
    }

    /// Starts the evidence over (e.g. after the node was promoted or its rate changed a lot).
    pub fn reset(&mut self, now_ms: u64) {
        *self = Probe::new(now_ms);
    }

    /// `Some` when the evidence says the node is under standard.
    pub fn verdict(&self, config: &ProbeConfig) -> Option<Shortfall> {
        let total = self.accepted + self.rejected;
        if self.rejected >= config.min_rejects && self.rejected as f64 > config.max_reject_ratio * total as f64 {
            return Some(Shortfall::Rejects { accepted: self.accepted, rejected: self.rejected });
        }
        if self.expected < config.min_expected {
            return None;
        }
        let floor_mean = config.min_rate_ratio * self.expected;
        // At or above the mean the tail probability is at least about a half: no need to sum.
        if self.accepted as f64 >= floor_mean {
            return None;
        }
        (poisson_cdf(self.accepted, floor_mean) < config.alpha)
            .then_some(Shortfall::Rate { accepted: self.accepted, expected: self.expected })
    }
}

/// P(K ≤ k) for K Poisson with the given mean, summed in log space so large means do not
/// underflow.
pub fn poisson_cdf(k: u64, mean: f64) -> f64 {
    if mean.is_nan() || mean <= 0.0 {
        return 1.0;
    }
    let ln_mean = mean.ln();
    let mut ln_term = -mean;
    let mut ln_max = ln_term;
    let mut terms = Vec::with_capacity(k as usize + 1);
    terms.push(ln_term);
    for i in 1..=k {
        ln_term += ln_mean - (i as f64).ln();
        ln_max = ln_max.max(ln_term);
        terms.push(ln_term);
    }
    let sum: f64 = terms.iter().map(|t| (t - ln_max).exp()).sum();
    (ln_max + sum.ln()).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poisson_cdf_matches_known_values() {
        assert!((poisson_cdf(0, 2.0) - (-2.0f64).exp()).abs() < 1e-12);
        // P(K <= 3 | 3) = e^-3 (1 + 3 + 4.5 + 4.5)
        assert!((poisson_cdf(3, 3.0) - 13.0 * (-3.0f64).exp()).abs() < 1e-12);
        assert_eq!(poisson_cdf(5, 0.0), 1.0);
        // A large mean does not underflow: the median of Poisson(1000) is about 1000.
        let mid = poisson_cdf(1000, 1000.0);
        assert!((0.49..0.52).contains(&mid), "{mid}");
        assert!(poisson_cdf(400, 500.0) < 1e-5);
    }

    fn run(delivered_ratio: f64, seconds: u64, seed: u64) -> Option<Shortfall> {
        // A node announcing 1 MH/s with shares of 200k hashes: 5 expected shares a second.
        let config = ProbeConfig::default();
        let mut probe = Probe::new(0);
        let mut rng = seed;
        let p = delivered_ratio * 5.0 / 100.0; // chance of a share per 10 ms step
        for step in 1..=seconds * 100 {
            probe.advance(step * 10, 1e6, Some(200_000), &config);
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if ((rng >> 11) as f64 / (1u64 << 53) as f64) < p {
                probe.accepted(step * 10);
            }
            if step % 10 == 0
                && let Some(s) = probe.verdict(&config)
            {
                return Some(s);
            }
        }
        None
    }

    #[test]
    fn a_node_far_below_its_rate_is_caught_once_the_test_has_power() {
        // 5 shares a second: 100 expected shares take 20 s after the 2 s start-up allowance.
        for seed in 0..20 {
            assert_eq!(run(0.0, 21, seed), None, "not before 100 shares are expected");
            assert!(run(0.0, 23, seed).is_some(), "a node delivering nothing is flagged at once then");
        }
        let flagged = (0..20).filter(|&s| run(0.1, 25, s).is_some()).count();
        assert_eq!(flagged, 20, "a node at 10% is flagged within 25 s");
    }

    #[test]
    fn the_judgement_waits_for_power() {
        // At `min_expected` the test tells a node at a tenth of its rate from the floor.
        let config = ProbeConfig::default();
        let floor_mean = config.min_rate_ratio * config.min_expected;
        let flagged_up_to = (0..).take_while(|&k| poisson_cdf(k, floor_mean) < config.alpha).last().unwrap();
        assert!(poisson_cdf(flagged_up_to, 0.1 * config.min_expected) > 0.9999, "power against a tenth");
        assert!(poisson_cdf(flagged_up_to, config.min_expected) < 1e-18, "no false alarm at the full rate");
        assert!(config.window_shares > config.min_expected, "the evidence lasts long enough to judge");
    }

    #[test]
    fn a_few_missing_shares_are_noise() {
        // Honest nodes (100%, and 80% as on a loaded machine) for ten minutes: never flagged.
        for seed in 0..10 {
            assert_eq!(run(1.0, 600, seed), None);
            assert_eq!(run(0.8, 600, seed), None);
        }
        // Early on, no shares at all is not yet evidence.
        let config = ProbeConfig::default();
        let mut probe = Probe::new(0);
        probe.advance(1000, 1e6, Some(200_000), &config);
        assert_eq!(probe.verdict(&config), None, "5 expected, 0 seen: P = e^-2.5 is not rare enough");
    }

    #[test]
    fn rejects_over_the_bound_are_a_shortfall() {
        let config = ProbeConfig::default();
        let mut probe = Probe::new(0);
        for _ in 0..19 {
            probe.rejected(1);
        }
        assert_eq!(probe.verdict(&config), None, "too few to judge");
        probe.rejected(1);
        assert_eq!(probe.verdict(&config), Some(Shortfall::Rejects { accepted: 0, rejected: 20 }));
        let mut mixed = Probe::new(0);
        mixed.advance(0, 1e6, Some(1 << 30), &config);
        for _ in 0..30 {
            mixed.rejected(1);
            mixed.accepted(config.startup_ms);
            mixed.accepted(config.startup_ms);
        }
        assert_eq!(mixed.verdict(&config), None, "a third rejected is under the bound");
    }

    #[test]
    fn no_work_no_expectation() {
        let config = ProbeConfig::default();
        let mut probe = Probe::new(0);
        probe.advance(60_000, 1e9, None, &config);
        assert_eq!(probe.verdict(&config), None);
    }

    /// A node announcing 1 GH/s with share targets for `sps` shares a second, whose devices
    /// find shares at `ratio` of that rate (a Poisson process) from `startup_ms` after it is
    /// given work, and send each batch of `batch_ms`'s shares at the batch's end. The probe is
    /// judged every 100 ms, as the shell's tick does, for `seconds`. Returns the verdict and
    /// when it came.
    fn simulate(
        sps: f64,
        ratio: f64,
        startup_ms: u64,
        batch_ms: u64,
        seconds: u64,
        seed: u64,
    ) -> Option<(u64, Shortfall)> {
        const RATE: f64 = 1e9;
        let config = ProbeConfig::default();
        let share_work = (RATE / sps) as u128;
        let mut probe = Probe::new(0);
        let mut rng = seed | 1;
        let mut uniform = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            ((rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        // Found times, in ms, of the shares still to be sent.
        let found_rate = ratio * RATE / share_work as f64 / 1000.0;
        let mut next_found = startup_ms as f64 - uniform().ln() / found_rate;
        for tick in 1..=seconds * 10 {
            let now = tick * 100;
            // Shares found in batches that ended by now arrive before the tick.
            let sent_until =
                if now < startup_ms { 0.0 } else { (startup_ms + (now - startup_ms) / batch_ms * batch_ms) as f64 };
            while ratio > 0.0 && next_found < sent_until {
                probe.accepted(now);
                next_found -= uniform().ln() / found_rate;
            }
            probe.advance(now, RATE, Some(share_work), &config);
            if let Some(s) = probe.verdict(&config) {
                return Some((now, s));
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Honest nodes at any share rate from 0.1 to 1,000 a second, starting up to a second
        /// late and sending their shares in batches of up to 250 ms, are never flagged.
        #[test]
        fn honest_nodes_are_never_flagged(
            log_sps in -1.0f64..=3.0,
            ratio in 0.8f64..=1.0,
            startup_ms in 0u64..=1000,
            batch_ms in 1u64..=250,
            seed in any::<u64>(),
        ) {
            let sps = 10f64.powf(log_sps);
            // Long enough for three judgements' worth of shares, and at least a minute.
            let seconds = (3.0 * ProbeConfig::default().min_expected / sps).max(60.0) as u64;
            prop_assert_eq!(simulate(sps, ratio, startup_ms, batch_ms, seconds, seed), None);
        }

        /// A node delivering a tenth of its rate or less is caught at any share rate, as soon as
        /// twice `min_expected` shares were due.
        #[test]
        fn a_liar_is_caught_at_any_share_rate(
            log_sps in -1.0f64..=3.0,
            ratio in 0.0f64..=0.1,
            seed in any::<u64>(),
        ) {
            let sps = 10f64.powf(log_sps);
            let config = ProbeConfig::default();
            let due_ms = config.startup_ms + (2000.0 * config.min_expected / sps) as u64 + 100;
            let verdict = simulate(sps, ratio, 0, 100, due_ms / 1000 + 1, seed);
            prop_assert!(matches!(verdict, Some((at, Shortfall::Rate { .. })) if at <= due_ms), "{:?}", verdict);
        }

        #[test]
        fn cdf_is_a_probability_and_grows_with_k(mean in 0.01f64..5000.0, k in 0u64..3000) {
            let a = poisson_cdf(k, mean);
            let b = poisson_cdf(k + 1, mean);
            prop_assert!((0.0..=1.0).contains(&a));
            prop_assert!(b >= a - 1e-12);
        }
    }
}
