//! The 80-byte Bitcoin block header and 32-byte hashes.
//!
//! A `Header` is parsed from and printed as hex in wire order (the bytes as they are hashed).
//! A `Hash256` keeps bytes in hash order and displays them reversed, as block explorers and
//! Bitcoin Core show block hashes. All hex goes in and out through this module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::sha256::{self, Midstate};
use crate::target::CompactTarget;

/// Why a header or hash could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeaderError {
    #[error("expected {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("invalid hex: {0}")]
    Hex(#[from] hex::FromHexError),
}

/// A 32-byte SHA-256d result in hash (internal) byte order; `Display` and `FromStr` use the
/// reversed order that Bitcoin shows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Hash256(pub [u8; 32]);

/// The hash of a block header.
pub type BlockHash = Hash256;

impl Hash256 {
    pub const ZERO: Hash256 = Hash256([0; 32]);

    /// The sha256d of `data`.
    pub fn sha256d(data: &[u8]) -> Self {
        Hash256(sha256::sha256d(data))
    }

    /// From SHA-256 state words (the digest is their big-endian serialization).
    pub fn from_state(state: &[u32; 8]) -> Self {
        Hash256(sha256::state_bytes(state))
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reversed = self.0;
        reversed.reverse();
        f.write_str(&hex::encode(reversed))
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

impl FromStr for Hash256 {
    type Err = HeaderError;
    /// Parses the displayed (reversed) form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes: [u8; 32] = decode_exact(s)?;
        bytes.reverse();
        Ok(Hash256(bytes))
    }
}

fn decode_exact<const N: usize>(s: &str) -> Result<[u8; N], HeaderError> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(HeaderError::Length { expected: 2 * N, got: s.len() });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)?;
    Ok(out)
}

/// A Bitcoin block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// Block version; BIP 320 miners roll bits 13..28 of it.
    pub version: u32,
    pub prev_blockhash: BlockHash,
    pub merkle_root: Hash256,
    /// Block time, seconds since the Unix epoch.
    pub time: u32,
    pub bits: CompactTarget,
    pub nonce: u32,
}

impl Header {
    pub const SIZE: usize = 80;

    /// Decodes the 80 wire bytes.
    pub fn from_bytes(b: &[u8; 80]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let hash_at = |i: usize| Hash256(b[i..i + 32].try_into().expect("32 bytes"));
        Header {
            version: u32_at(0),
            prev_blockhash: hash_at(4),
            merkle_root: hash_at(36),
            time: u32_at(68),
            bits: CompactTarget(u32_at(72)),
            nonce: u32_at(76),
        }
    }

    /// The 80 wire bytes.
    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..36].copy_from_slice(&self.prev_blockhash.0);
        b[36..68].copy_from_slice(&self.merkle_root.0);
        b[68..72].copy_from_slice(&self.time.to_le_bytes());
        b[72..76].copy_from_slice(&self.bits.0.to_le_bytes());
        b[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    /// Parses 160 hex characters in wire order.
    pub fn from_hex(s: &str) -> Result<Self, HeaderError> {
        Ok(Self::from_bytes(&decode_exact::<80>(s)?))
    }

    /// 160 hex characters in wire order.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// The header's sha256d.
    pub fn block_hash(&self) -> BlockHash {
        Hash256::sha256d(&self.to_bytes())
    }

    /// This header with another nonce.
    pub fn with_nonce(self, nonce: u32) -> Self {
        Header { nonce, ..self }
    }

    /// The SHA-256 state after the first 64 bytes, shared by every nonce.
    pub fn midstate(&self) -> Midstate {
        Midstate::of_header_bytes(&self.to_bytes())
    }

    /// The three big-endian words of bytes 64..76 (end of the merkle root, time, bits): with
    /// the nonce they make the second SHA-256 block of the header.
    pub fn tail_words(&self) -> [u32; 3] {
        let b = self.to_bytes();
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        [be(64), be(68), be(72)]
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Header {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sha256::{compress, header_tail_block, second_hash};

    /// The genesis block header (mainnet), wire order.
    pub const GENESIS_HEX: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

    #[test]
    fn genesis_hash() {
        let header = Header::from_hex(GENESIS_HEX).unwrap();
        assert_eq!(header.nonce, 2083236893);
        assert_eq!(header.bits, CompactTarget(0x1d00ffff));
        assert_eq!(header.time, 1231006505);
        assert_eq!(header.block_hash().to_string(), "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
        assert_eq!(header.merkle_root.to_string(), "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(header.to_hex(), GENESIS_HEX);
    }

    #[test]
    fn block_125552_hash() {
        // A mainnet header with a non-zero previous hash and version 1.
        let hex = "01000000\
            81cd02ab7e569e8bcd9317e2fe99f2de44d49ab2b8851ba4a308000000000000\
            e320b6c2fffc8d750423db8b1eb942ae710e951ed797f7affc8892b0f1fc122b\
            c7f5d74d\
            f2b9441a\
            42a14695";
        let header = Header::from_hex(hex).unwrap();
        assert_eq!(header.block_hash().to_string(), "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d");
    }

    #[test]
    fn midstate_path_finds_genesis_hash() {
        let header = Header::from_hex(GENESIS_HEX).unwrap();
        let mut state = header.midstate().0;
        compress(&mut state, &header_tail_block(&header.tail_words(), header.nonce));
        assert_eq!(Hash256::from_state(&second_hash(&state)), header.block_hash());
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert_eq!(Header::from_hex("00"), Err(HeaderError::Length { expected: 160, got: 2 }));
        let bad = GENESIS_HEX.replace('1', "g");
        assert!(matches!(Header::from_hex(&bad), Err(HeaderError::Hex(_))));
        let odd = &GENESIS_HEX[..159];
        assert!(Header::from_hex(odd).is_err());
        assert!(Header::from_hex("é".repeat(80).as_str()).is_err());
        assert!("zz".parse::<Hash256>().is_err());
    }

    #[test]
    fn hash_display_round_trip() {
        let s = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
        let h: Hash256 = s.parse().unwrap();
        assert_eq!(h.0[31], 0);
        assert_eq!(h.to_string(), s);
    }
}
