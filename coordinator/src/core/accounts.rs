//! Sub-accounts, their computing-capability standards, credit, periods, and the allocation
//! policies that choose which account the next range of work serves.
//!
//! Invariants: `delivered` only grows within a period (by the work of accepted shares) and is
//! reset to zero when a period renews, as is `accepted_upstream` (the pool's difficulty as
//! work of the shares its pool accepted); an account is up to standard when the figure of its
//! basis (`delivered` by default) reaches `standard`. Policies only ever choose accounts below standard.

use hashgrid_common::Target;
use hashgrid_common::message::{AccountStatus, Policy, StandardBasis};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of work in expected hashes: contracted as a standard, credited for shares. Kept
/// apart from counts of nonces (range sizes, `Account::issued`), which are hashes to do, not
/// work done. Written as a decimal string (in the ledger's JSON, where a number loses
/// precision past 2^53); the wire and the store's rows carry the plain `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Work(pub u128);

impl Work {
    pub const ZERO: Work = Work(0);

    /// The work of a share meeting `target`.
    pub fn of(target: &Target) -> Work {
        Work(target.work())
    }

    pub fn saturating_add(self, other: Work) -> Work {
        Work(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Work) -> Work {
        Work(self.0.saturating_sub(other.0))
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Work {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Work {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Work, D::Error> {
        String::deserialize(d)?.parse().map(Work).map_err(serde::de::Error::custom)
    }
}

/// One sub-account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// Contracted work per period, in expected hashes.
    pub standard: Work,
    /// Renewal period in milliseconds; `None`: a one-off standard.
    pub period_ms: Option<u64>,
    /// Lower orders are served first by `sequential`.
    pub order: i64,
    /// Credited work in the current period.
    pub delivered: Work,
    /// Start of the current period, Unix milliseconds.
    pub period_start_ms: u64,
    /// Accepted shares in the current period.
    pub shares: u64,
    /// Nonces issued to this account since the policy last changed (proportional's clock).
    pub issued: u128,
    /// The chain its work comes from.
    pub chain: String,
    /// The figure the standard is measured on.
    pub basis: StandardBasis,
    /// The pool's difficulty as work of its accepted shares in the current period.
    pub accepted_upstream: Work,
}

/// Whether `name` may name an account or a chain: 1-64 ASCII letters, digits, '-', '_' or '.'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The chain of accounts added without one: the built-in local chain.
pub const DEFAULT_CHAIN: &str = "local";

impl Account {
    pub fn new(name: String, standard: Work, period_ms: Option<u64>, order: i64, now_ms: u64) -> Self {
        Account {
            name,
            standard,
            period_ms,
            order,
            delivered: Work::ZERO,
            period_start_ms: now_ms,
            shares: 0,
            issued: 0,
            chain: DEFAULT_CHAIN.into(),
            basis: StandardBasis::Delivered,
            accepted_upstream: Work::ZERO,
        }
    }

    /// The work the standard is measured on: `delivered`, or `accepted_upstream` when the
    /// contract counts only pool-accepted work.
    pub fn counted(&self) -> Work {
        match self.basis {
            StandardBasis::Delivered => self.delivered,
            StandardBasis::Accepted => self.accepted_upstream,
        }
    }

    pub fn up_to_standard(&self) -> bool {
        self.counted() >= self.standard
    }

    /// The work still missing to reach the standard.
    pub fn lacking(&self) -> Work {
        self.standard.saturating_sub(self.counted())
    }

    /// Renews the period if it has ended by `now_ms`; returns whether it did.
    pub fn renew_if_due(&mut self, now_ms: u64) -> bool {
        let Some(period) = self.period_ms.filter(|&p| p > 0) else { return false };
        if now_ms < self.period_start_ms.saturating_add(period) {
            return false;
        }
        let periods = (now_ms - self.period_start_ms) / period;
        self.period_start_ms += periods * period;
        self.delivered = Work::ZERO;
        self.accepted_upstream = Work::ZERO;
        self.shares = 0;
        self.issued = 0;
        true
    }

    pub fn status(&self) -> AccountStatus {
        AccountStatus {
            name: self.name.clone(),
            chain: self.chain.clone(),
            order: self.order,
            standard: self.standard.0,
            delivered: self.delivered.0,
            period_secs: self.period_ms.map(|p| p / 1000),
            up_to_standard: self.up_to_standard(),
            shares: self.shares,
        }
    }
}

/// The index of the account the next range should serve, among `accounts` (any order),
/// skipping those `excluded` (e.g. with no work available). `None`: every account is up to
/// standard.
///
/// - `Sequential`: the account with the lowest (order, name) below its standard.
/// - `Proportional`: weighted fair queuing: the account below standard whose nonces issued so
///   far, plus this range, are smallest relative to the work it lacks, so issued work tracks
///   the lacking-work ratio.
pub fn choose(policy: Policy, accounts: &[Account], count: u64, excluded: impl Fn(usize) -> bool) -> Option<usize> {
    let eligible = accounts.iter().enumerate().filter(|(i, a)| !a.up_to_standard() && !excluded(*i));
    match policy {
        Policy::Sequential => {
            eligible.min_by(|(_, a), (_, b)| (a.order, &a.name).cmp(&(b.order, &b.name))).map(|(i, _)| i)
        }
        Policy::Proportional => eligible
            .min_by(|(_, a), (_, b)| {
                // (issued_a + count) / lacking_a  <  (issued_b + count) / lacking_b, exactly.
                // One nonce issued is one expected hash of work.
                let lhs = mul_u128(a.issued + count as u128, b.lacking().0);
                let rhs = mul_u128(b.issued + count as u128, a.lacking().0);
                lhs.cmp(&rhs).then((a.order, &a.name).cmp(&(b.order, &b.name)))
            })
            .map(|(i, _)| i),
    }
}

/// Full 256-bit product of two u128, as (high, low), for exact ratio comparisons.
fn mul_u128(a: u128, b: u128) -> (u128, u128) {
    let (a_hi, a_lo) = (a >> 64, a & u64::MAX as u128);
    let (b_hi, b_lo) = (b >> 64, b & u64::MAX as u128);
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let mid = (lo_lo >> 64) + (hi_lo & u64::MAX as u128) + (lo_hi & u64::MAX as u128);
    let low = (mid << 64) | (lo_lo & u64::MAX as u128);
    let high = hi_hi + (hi_lo >> 64) + (lo_hi >> 64) + (mid >> 64);
    (high, low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn account(name: &str, standard: u128, order: i64) -> Account {
        Account::new(name.into(), Work(standard), None, order, 0)
    }

    #[test]
    fn sequential_takes_the_first_below_standard() {
        let mut accounts = vec![account("b", 10, 2), account("a", 10, 1), account("c", 10, 3)];
        assert_eq!(choose(Policy::Sequential, &accounts, 1, |_| false), Some(1));
        accounts[1].delivered = Work(10);
        assert_eq!(choose(Policy::Sequential, &accounts, 1, |_| false), Some(0));
        assert_eq!(choose(Policy::Sequential, &accounts, 1, |i| i == 0), Some(2));
        accounts[0].delivered = Work(11);
        accounts[2].delivered = Work(10);
        assert_eq!(choose(Policy::Sequential, &accounts, 1, |_| false), None);
    }

    #[test]
    fn periods_renew() {
        let mut a = Account::new("a".into(), Work(10), Some(1000), 0, 500);
        a.delivered = Work(12);
        assert!(!a.renew_if_due(1499));
        assert!(a.renew_if_due(3600));
        assert_eq!((a.delivered, a.period_start_ms), (Work::ZERO, 3500));
    }

    #[test]
    fn wide_multiplication() {
        assert_eq!(mul_u128(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_u128(1 << 64, 1 << 64), (1, 0));
        assert_eq!(mul_u128(3, 5), (0, 15));
    }

    proptest! {
        /// Proportional issues work within 1% of the lacking-work ratio.
        #[test]
        fn proportional_tracks_lacking_ratio(lacking in proptest::collection::vec(1_000u128..1_000_000_000, 2..6), count in 1u64..1000) {
            let mut accounts: Vec<Account> = lacking.iter().enumerate().map(|(i, &l)| account(&format!("a{i}"), l, i as i64)).collect();
            let total_lacking: u128 = lacking.iter().sum();
            let rounds = 2000;
            for _ in 0..rounds {
                let i = choose(Policy::Proportional, &accounts, count, |_| false).unwrap();
                accounts[i].issued += count as u128;
            }
            let issued: u128 = accounts.iter().map(|a| a.issued).sum();
            for a in &accounts {
                let want = a.standard.0 as f64 / total_lacking as f64;
                let got = a.issued as f64 / issued as f64;
                // Within 1% of all issued work (one range is 1/2000 of it).
                prop_assert!((got - want).abs() <= 0.01, "{} want {want} got {got}", a.name);
            }
        }

        /// Sequential never serves account k+1 while an earlier one is below standard.
        #[test]
        fn sequential_respects_order(delivered in proptest::collection::vec(0u128..20, 1..8)) {
            let accounts: Vec<Account> = delivered.iter().enumerate().map(|(i, &d)| Account { delivered: Work(d), ..account(&format!("a{i}"), 10, i as i64) }).collect();
            match choose(Policy::Sequential, &accounts, 1, |_| false) {
                Some(k) => {
                    prop_assert!(!accounts[k].up_to_standard());
                    prop_assert!(accounts[..k].iter().all(Account::up_to_standard));
                }
                None => prop_assert!(accounts.iter().all(Account::up_to_standard)),
            }
        }
    }
}
