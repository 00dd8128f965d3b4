//! Pool difficulty → share target, as the pool meant it.
//!
//! A pool writes its difficulty in decimal (`0.0001`) and means `DIFFICULTY_1 / 0.0001`
//! exactly. [`Target::from_difficulty`] is exact for the binary `f64` it is given, and the
//! `f64` nearest 0.0001 is a little above it, so the two differ in the low bits
//! (`…270fd8efffffff79…` against the pool's `…270fd8f0000000…`). [`share_target`] therefore
//! reads the shortest decimal that round-trips the `f64` (what the pool wrote, for any
//! difficulty of at most 17 significant digits) and divides exactly in integers. For
//! difficulties that are exact binary fractions (1, 0.5, 65536) both agree.

use ruint::aliases::U512;

use super::StratumError;
use crate::target::Target;

/// The share target of pool difficulty `difficulty`: `floor(DIFFICULTY_1 / d)` with `d` the
/// decimal the float prints as. Refuses non-finite, non-positive and out-of-range values.
pub fn share_target(difficulty: f64) -> Result<Target, StratumError> {
    let err = || StratumError::Difficulty(difficulty.to_string());
    // DIFFICULTY_1 / d must lie in 1..2^256: d in roughly [2.3e-10, 2.7e67].
    if !difficulty.is_finite() || !(1e-11..=1e68).contains(&difficulty) {
        return Err(err());
    }
    // Rust prints the shortest decimal that reads back as the same f64, without an exponent.
    let text = difficulty.to_string();
    let (int_part, frac_part) = text.split_once('.').unwrap_or((&text, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let mantissa = U512::from_str_radix(&digits, 10).map_err(|_| err())?;
    if mantissa.is_zero() {
        return Err(err());
    }
    let scale = U512::from(10u8).pow(U512::from(frac_part.len()));
    let diff1 = U512::from_le_slice(&Target::DIFFICULTY_1.value().to_le_bytes::<32>());
    let value = diff1.checked_mul(scale).ok_or_else(err)? / mantissa;
    if value.bit_len() > 256 {
        return Err(err());
    }
    Target::new(ruint::aliases::U256::from_le_slice(&value.to_le_bytes::<64>()[..32])).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_difficulties_are_exact() {
        assert_eq!(share_target(0.0001).unwrap().to_hex(), format!("0000270fd8f{}", "0".repeat(53)));
        assert_eq!(share_target(0.0002).unwrap().to_hex(), format!("00001387ec78{}", "0".repeat(52)));
        assert_eq!(share_target(1.0).unwrap(), Target::DIFFICULTY_1);
        // The binary f64 nearest 0.0001 gives a slightly smaller target: the reason this exists.
        assert!(Target::from_difficulty(0.0001).unwrap() < share_target(0.0001).unwrap());
    }

    #[test]
    fn out_of_range() {
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 1e70, f64::MIN_POSITIVE, f64::MAX] {
            assert!(share_target(d).is_err(), "{d}");
        }
        // The edges inside the range still give a target in 1..2^256, or a clear error.
        for d in [1e-11, 2.3e-10, 2.4e-10, 2.7e67, 1e68] {
            let _ = share_target(d);
        }
        assert!(share_target(2.4e-10).is_ok());
        assert!(share_target(2.6e67).is_ok());
    }

    proptest! {
        /// Binary fractions k / 2^s with at most 15 significant decimal digits print exactly, so both
        /// conversions agree.
        #[test]
        fn agrees_with_target_on_binary_fractions(k in 1u64..100_000, s in 0i32..8) {
            let d = k as f64 / 2f64.powi(s);
            prop_assert_eq!(share_target(d).unwrap(), Target::from_difficulty(d).unwrap());
        }

        #[test]
        fn never_panics(bits in any::<u64>()) {
            let _ = share_target(f64::from_bits(bits));
        }
    }
}
