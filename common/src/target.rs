//! Proof-of-work targets: the compact `bits` encoding, 256-bit targets, pool difficulty and the
//! expected work of a share.
//!
//! All conversions use exact integer arithmetic (`ruint`'s 256- and 512-bit integers); only
//! `Target::difficulty` returns a float, for display. A hash meets a target when, read as a
//! little-endian 256-bit number, it is less than or equal to the target.

use std::fmt;
use std::str::FromStr;

use ruint::aliases::{U256, U512};
use serde::{Deserialize, Serialize};

use crate::header::Hash256;

/// Why a target, compact encoding or difficulty was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("compact target {0:#010x} is negative")]
    Negative(u32),
    #[error("compact target {0:#010x} is zero")]
    Zero(u32),
    #[error("compact target {0:#010x} overflows 256 bits")]
    Overflow(u32),
    #[error("target must be 64 hex characters (display order)")]
    Hex,
    #[error("target is zero")]
    ZeroTarget,
    #[error("difficulty {0} is out of range (must be finite, > 0, and give a target in 1..2^256)")]
    Difficulty(String),
}

/// The compact `bits` encoding of a target, as stored in a header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct CompactTarget(pub u32);

impl fmt::Debug for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactTarget({:08x})", self.0)
    }
}

impl fmt::Display for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for CompactTarget {
    type Err = TargetError;
    /// Parses 1 to 8 hex digits, with or without `0x`, and checks the encoding is a valid target.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let digits = s.strip_prefix("0x").unwrap_or(s);
        if digits.is_empty() || digits.len() > 8 {
            return Err(TargetError::Hex);
        }
        let bits = u32::from_str_radix(digits, 16).map_err(|_| TargetError::Hex)?;
        Target::from_compact(CompactTarget(bits))?;
        Ok(CompactTarget(bits))
    }
}

/// A 256-bit proof-of-work target; never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(U256);

impl Target {
    /// The largest target, met by every hash.
    pub const MAX: Target = Target(U256::MAX);
    /// The difficulty-1 target, 0x00000000ffff0000…0000 (compact 0x1d00ffff).
    pub const DIFFICULTY_1: Target = Target(U256::from_limbs([0, 0, 0, 0x0000_0000_ffff_0000]));

    /// A target from its value; zero is rejected (no hash could meet it).
    pub fn new(value: U256) -> Result<Self, TargetError> {
        if value.is_zero() { Err(TargetError::ZeroTarget) } else { Ok(Target(value)) }
    }

    pub fn value(&self) -> U256 {
        self.0
    }

    /// Decodes compact bits like Bitcoin Core's `arith_uint256::SetCompact`, rejecting negative,
    /// zero and overflowing encodings.
    pub fn from_compact(bits: CompactTarget) -> Result<Self, TargetError> {
        let raw = bits.0;
        let exponent = raw >> 24;
        let mantissa = raw & 0x007f_ffff;
        if mantissa != 0 && raw & 0x0080_0000 != 0 {
            return Err(TargetError::Negative(raw));
        }
        if mantissa != 0
            && (exponent > 34 || (mantissa > 0xff && exponent > 33) || (mantissa > 0xffff && exponent > 32))
        {
            return Err(TargetError::Overflow(raw));
        }
        let value = if exponent <= 3 {
            U256::from(mantissa >> (8 * (3 - exponent)))
        } else {
            U256::from(mantissa) << (8 * (exponent as usize - 3))
        };
        Target::new(value).map_err(|_| TargetError::Zero(raw))
    }

    /// The compact encoding (Bitcoin Core's `GetCompact`); it rounds the target down to 23
    /// significant bits.
    pub fn to_compact(&self) -> CompactTarget {
        let mut size = self.0.bit_len().div_ceil(8) as u32;
        let mut mantissa: u32 = if size <= 3 {
            (self.0.to::<u64>() << (8 * (3 - size))) as u32
        } else {
            (self.0 >> (8 * (size as usize - 3))).to::<u64>() as u32
        };
        if mantissa & 0x0080_0000 != 0 {
            mantissa >>= 8;
            size += 1;
        }
        CompactTarget(mantissa | (size << 24))
    }

    /// The target of a pool difficulty: `DIFFICULTY_1 / difficulty`, rounded down, computed
    /// exactly from the float's mantissa and exponent.
    pub fn from_difficulty(difficulty: f64) -> Result<Self, TargetError> {
        let err = || TargetError::Difficulty(difficulty.to_string());
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return Err(err());
        }
        // difficulty = mantissa * 2^exponent exactly, with mantissa a 53-bit integer.
        let bits = difficulty.to_bits();
        let raw_exponent = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mantissa, exponent) =
            if raw_exponent == 0 { (fraction, -1074) } else { (fraction | (1u64 << 52), raw_exponent - 1075) };
        let diff1 = U512::from_le_slice(&Self::DIFFICULTY_1.0.to_le_bytes::<32>());
        let value = if exponent >= 0 {
            if exponent > 256 {
                return Err(err());
            }
            diff1 / (U512::from(mantissa) << exponent as usize)
        } else {
            let shift = (-exponent) as usize;
            if shift > 300 {
                return Err(err());
            }
            (diff1 << shift) / U512::from(mantissa)
        };
        if value.bit_len() > 256 {
            return Err(err());
        }
        Target::new(U256::from_le_slice(&value.to_le_bytes::<64>()[..32])).map_err(|_| err())
    }

    /// The pool difficulty of this target, `DIFFICULTY_1 / target`, as a float for display.
    pub fn difficulty(&self) -> f64 {
        to_f64(Self::DIFFICULTY_1.0) / to_f64(self.0)
    }

    /// The expected number of hashes to find one meeting this target: 2^256 / (target + 1),
    /// rounded down, exactly (as Bitcoin Core's `GetBlockProof`).
    pub fn expected_hashes(&self) -> U256 {
        if self.0 == U256::MAX {
            return U256::from(1u8);
        }
        (!self.0 / (self.0 + U256::from(1u8))) + U256::from(1u8)
    }

    /// `expected_hashes` as the `u128` the accounting uses, saturating (a target that hard is
    /// worth more than 2^128 hashes, far beyond any real share).
    pub fn work(&self) -> u128 {
        let w = self.expected_hashes();
        if w.bit_len() > 128 { u128::MAX } else { w.to::<u128>() }
    }

    /// The target whose shares are each worth about `work` expected hashes: floor((2^256 - 1) /
    /// work), so `expected_hashes` is within one of `work`. Used to set a node's share
    /// difficulty from its rate.
    pub fn from_expected_hashes(work: u128) -> Target {
        if work <= 1 { Target::MAX } else { Target(U256::MAX / U256::from(work)) }
    }

    /// Whether `hash` (read as a little-endian number) is at or below this target.
    pub fn is_met_by(&self, hash: &Hash256) -> bool {
        U256::from_le_bytes(hash.0) <= self.0
    }

    /// The target as eight 32-bit words, least significant first: word `i` holds bits
    /// `32i..32i+32`. Searches compare hashes word by word from word 7 down.
    pub fn to_le_words(&self) -> [u32; 8] {
        let limbs = self.0.as_limbs();
        std::array::from_fn(|i| (limbs[i / 2] >> (32 * (i % 2))) as u32)
    }

    /// 64 hex characters, most significant first (the display order of hashes).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_be_bytes::<32>())
    }

    pub fn from_hex(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(TargetError::Hex);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| TargetError::Hex)?;
        Target::from_be_bytes(bytes)
    }

    /// The target whose 32 big-endian bytes (most significant first) these are; zero is
    /// rejected.
    pub fn from_be_bytes(bytes: [u8; 32]) -> Result<Self, TargetError> {
        Target::new(U256::from_be_bytes(bytes))
    }

    /// The 32 big-endian bytes, most significant first.
    pub fn to_be_bytes(&self) -> [u8; 32] {
        self.0.to_be_bytes::<32>()
    }
}

/// Compares a hash given as SHA-256 state words (digest = big-endian words) with target words
/// from `Target::to_le_words`: the hash number's word `i` is `state[i].swap_bytes()`.
#[inline(always)]
pub fn state_meets(state: &[u32; 8], target_words: &[u32; 8]) -> bool {
    for i in (0..8).rev() {
        let h = state[i].swap_bytes();
        if h != target_words[i] {
            return h < target_words[i];
        }
    }
    true
}

fn to_f64(x: U256) -> f64 {
    let bits = x.bit_len();
    if bits <= 64 {
        x.to::<u64>() as f64
    } else {
        let shift = bits - 64;
        (x >> shift).to::<u64>() as f64 * 2f64.powi(shift as i32)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.to_hex())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_be_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Target::from_be_bytes(<[u8; 32]>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(bits: u32) -> Target {
        Target::from_compact(CompactTarget(bits)).unwrap()
    }

    #[test]
    fn big_endian_bytes_round_trip_and_zero_is_refused() {
        let mut bytes = [0u8; 32];
        bytes[4] = 0xff;
        bytes[5] = 0xff;
        assert_eq!(Target::from_be_bytes(bytes).unwrap(), Target::DIFFICULTY_1);
        assert_eq!(Target::DIFFICULTY_1.to_be_bytes(), bytes);
        assert_eq!(Target::from_be_bytes([0xff; 32]).unwrap(), Target::MAX);
        assert!(matches!(Target::from_be_bytes([0; 32]), Err(TargetError::ZeroTarget)));
    }

    #[test]
    fn difficulty_one() {
        assert_eq!(t(0x1d00ffff), Target::DIFFICULTY_1);
        assert_eq!(Target::DIFFICULTY_1.to_hex(), format!("00000000ffff{}", "0".repeat(52)));
        assert_eq!(t(0x1d00ffff).difficulty(), 1.0);
        assert_eq!(t(0x1c00ffff).difficulty(), 256.0);
        assert_eq!(t(0x1b00ffff).difficulty(), 65536.0);
        assert_eq!(Target::from_difficulty(1.0).unwrap(), Target::DIFFICULTY_1);
        assert_eq!(Target::from_difficulty(256.0).unwrap(), t(0x1c00ffff));
        assert_eq!(Target::from_difficulty(65536.0).unwrap(), t(0x1b00ffff));
        assert_eq!(Target::DIFFICULTY_1.to_compact(), CompactTarget(0x1d00ffff));
    }

    #[test]
    fn expected_hashes_of_difficulty_one() {
        // 2^256 / (0xffff * 2^208 + 1) = 4295032833.000015…
        assert_eq!(Target::DIFFICULTY_1.work(), 4_295_032_833);
        assert_eq!(Target::MAX.work(), 1);
        assert_eq!(Target::new(U256::from(1u8) << 255).unwrap().work(), 1);
        assert_eq!(Target::new((U256::from(1u8) << 255) - U256::from(1u8)).unwrap().work(), 2);
        assert_eq!(Target::new(U256::from(1u8)).unwrap().work(), u128::MAX);
    }

    #[test]
    fn bad_compact_encodings() {
        assert_eq!(Target::from_compact(CompactTarget(0x04923456)), Err(TargetError::Negative(0x04923456)));
        assert_eq!(Target::from_compact(CompactTarget(0x1d000000)), Err(TargetError::Zero(0x1d000000)));
        assert_eq!(Target::from_compact(CompactTarget(0x01003456)), Err(TargetError::Zero(0x01003456)));
        assert_eq!(Target::from_compact(CompactTarget(0xff123456)), Err(TargetError::Overflow(0xff123456)));
        assert_eq!(Target::from_compact(CompactTarget(0x21010000)), Err(TargetError::Overflow(0x21010000)));
        assert!("zz".parse::<CompactTarget>().is_err());
        assert!("123456789".parse::<CompactTarget>().is_err());
        assert!("1d000000".parse::<CompactTarget>().is_err());
        assert_eq!("0x1d00ffff".parse::<CompactTarget>().unwrap(), CompactTarget(0x1d00ffff));
    }

    #[test]
    fn bitcoin_core_compact_vectors() {
        // From Bitcoin Core's arith_uint256_tests (SetCompact / GetCompact).
        assert_eq!(t(0x01123456).value(), U256::from(0x12u8));
        assert_eq!(t(0x01123456).to_compact(), CompactTarget(0x01120000));
        assert_eq!(t(0x02123456).value(), U256::from(0x1234u16));
        assert_eq!(t(0x03123456).value(), U256::from(0x123456u32));
        assert_eq!(t(0x04123456).value(), U256::from(0x12345600u32));
        assert_eq!(t(0x05009234).value(), U256::from(0x92340000u32));
        assert_eq!(t(0x05009234).to_compact(), CompactTarget(0x05009234));
        assert_eq!(t(0x20123456).value(), U256::from(0x123456u32) << 232);
        assert_eq!(t(0x20123456).to_compact(), CompactTarget(0x20123456));
    }

    #[test]
    fn hash_equal_to_target_meets_it() {
        let target = Target::DIFFICULTY_1;
        let hash = Hash256(target.value().to_le_bytes::<32>());
        assert!(target.is_met_by(&hash));
        let below = Target::new(target.value() - U256::from(1u8)).unwrap();
        assert!(!below.is_met_by(&hash));
        let above = Hash256((target.value() + U256::from(1u8)).to_le_bytes::<32>());
        assert!(!target.is_met_by(&above));
    }

    #[test]
    fn target_from_work() {
        for work in [2u128, 3, 1000, 4_295_032_833, 1 << 40, u128::MAX] {
            let got = Target::from_expected_hashes(work).work();
            assert!(got.abs_diff(work) <= 1, "{work} -> {got}");
        }
        assert_eq!(Target::from_expected_hashes(0), Target::MAX);
    }

    #[test]
    fn bad_difficulties() {
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, 1e300] {
            assert!(Target::from_difficulty(d).is_err(), "{d}");
        }
        assert!(Target::from_hex("00").is_err());
        assert!(Target::from_hex(&"0".repeat(64)).is_err());
    }

    proptest! {
        #[test]
        fn state_meets_agrees_with_is_met_by(hash in proptest::array::uniform32(any::<u8>()), target in proptest::array::uniform32(any::<u8>()), shared_top in 0usize..32) {
            let mut target = target;
            // Make the top bytes equal often so the word-by-word comparison is exercised.
            target[32 - shared_top..].copy_from_slice(&hash[32 - shared_top..]);
            prop_assume!(target.iter().any(|&b| b != 0));
            let target = Target::new(U256::from_le_bytes(target)).unwrap();
            let h = Hash256(hash);
            let state: [u32; 8] = std::array::from_fn(|i| u32::from_be_bytes(hash[4*i..4*i+4].try_into().unwrap()));
            prop_assert_eq!(state_meets(&state, &target.to_le_words()), target.is_met_by(&h));
        }

        #[test]
        fn compact_round_trip(bits in any::<u32>()) {
            if let Ok(target) = Target::from_compact(CompactTarget(bits)) {
                let again = Target::from_compact(target.to_compact()).unwrap();
                prop_assert_eq!(again, target);
            }
        }

        #[test]
        fn difficulty_round_trip(d in 0.001f64..1e12) {
            let target = Target::from_difficulty(d).unwrap();
            prop_assert!((target.difficulty() / d - 1.0).abs() < 1e-9);
        }

        #[test]
        fn expected_hashes_is_floor(value in proptest::array::uniform32(any::<u8>())) {
            let v = U256::from_le_bytes(value);
            prop_assume!(!v.is_zero());
            let target = Target::new(v).unwrap();
            let w = U512::from_le_slice(&target.expected_hashes().to_le_bytes::<32>());
            let t1 = U512::from_le_slice(&v.to_le_bytes::<32>()) + U512::from(1u8);
            let two256 = U512::from(1u8) << 256;
            prop_assert!(w * t1 <= two256);
            prop_assert!((w + U512::from(1u8)) * t1 > two256);
        }
    }
}
