//! SHA-256 compression, the header midstate and the reference sha256d.
//!
//! `sha256d` (the double SHA-256 of Bitcoin) is computed with the `sha2` crate and is the
//! reference every search result is checked against. `compress` is a plain, portable
//! compression function used where the mining precomputations need access to the state
//! (the midstate of the first 64 header bytes, the CPU search's inner loop); it is tested
//! against `sha2` below.

use sha2::{Digest, Sha256};

/// The SHA-256 round constants.
pub const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// The SHA-256 initial hash value.
pub const IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Double SHA-256 of `data`, as Bitcoin hashes headers and transactions (bytes in hash order,
/// i.e. not reversed for display).
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// One SHA-256 compression of a 16-word (big-endian) block into `state`.
#[inline(always)]
pub fn compress(state: &mut [u32; 8], block: &[u32; 16]) {
    let mut w = [0u32; 64];
    w[..16].copy_from_slice(block);
    for i in 16..64 {
        w[i] =
            small_sigma1(w[i - 2]).wrapping_add(w[i - 7]).wrapping_add(small_sigma0(w[i - 15])).wrapping_add(w[i - 16]);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..64 {
        let t1 = h.wrapping_add(big_sigma1(e)).wrapping_add(ch(e, f, g)).wrapping_add(K[i]).wrapping_add(w[i]);
        let t2 = big_sigma0(a).wrapping_add(maj(a, b, c));
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

#[inline(always)]
pub fn ch(x: u32, y: u32, z: u32) -> u32 {
    (x & y) ^ (!x & z)
}
#[inline(always)]
pub fn maj(x: u32, y: u32, z: u32) -> u32 {
    (x & y) ^ (x & z) ^ (y & z)
}
#[inline(always)]
pub fn big_sigma0(x: u32) -> u32 {
    x.rotate_right(2) ^ x.rotate_right(13) ^ x.rotate_right(22)
}
#[inline(always)]
pub fn big_sigma1(x: u32) -> u32 {
    x.rotate_right(6) ^ x.rotate_right(11) ^ x.rotate_right(25)
}
#[inline(always)]
pub fn small_sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}
#[inline(always)]
pub fn small_sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

/// Reads 64 bytes as 16 big-endian words, as SHA-256 does.
pub fn block_words(bytes: &[u8; 64]) -> [u32; 16] {
    std::array::from_fn(|i| u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]))
}

/// The SHA-256 state after the first 64 bytes of an 80-byte header. Every nonce of a header
/// shares it, so a search starts each hash from here and compresses only the second block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Midstate(pub [u32; 8]);

impl Midstate {
    /// The midstate of the first 64 bytes of `header` (wire order).
    pub fn of_header_bytes(header: &[u8; 80]) -> Self {
        let mut state = IV;
        let first: &[u8; 64] = header[..64].try_into().expect("80 > 64");
        compress(&mut state, &block_words(first));
        Midstate(state)
    }
}

/// The second SHA-256 of sha256d: hashes the 32-byte first digest, given as 8 state words.
/// Returns the final state words; the digest bytes are their big-endian serialization.
#[inline(always)]
pub fn second_hash(first: &[u32; 8]) -> [u32; 8] {
    let mut block = [0u32; 16];
    block[..8].copy_from_slice(first);
    block[8] = 0x8000_0000;
    block[15] = 256;
    let mut state = IV;
    compress(&mut state, &block);
    state
}

/// The second padded block of an 80-byte header: the last 16 bytes as words, then padding
/// and the 640-bit length. `nonce` is the header's nonce field (little-endian on the wire).
#[inline(always)]
pub fn header_tail_block(tail: &[u32; 3], nonce: u32) -> [u32; 16] {
    let mut block = [0u32; 16];
    block[..3].copy_from_slice(tail);
    block[3] = nonce.swap_bytes();
    block[4] = 0x8000_0000;
    block[15] = 640;
    block
}

/// Serializes state words as digest bytes (big-endian words).
pub fn state_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha256_via_compress(data: &[u8]) -> [u8; 32] {
        let mut padded = data.to_vec();
        padded.push(0x80);
        while padded.len() % 64 != 56 {
            padded.push(0);
        }
        padded.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
        let mut state = IV;
        for chunk in padded.chunks_exact(64) {
            compress(&mut state, &block_words(chunk.try_into().unwrap()));
        }
        state_bytes(&state)
    }

    #[test]
    fn nist_abc_vector() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            hex::encode(sha256_via_compress(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn nist_two_block_vector() {
        // FIPS 180-2, appendix B.2.
        assert_eq!(
            hex::encode(sha256_via_compress(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    proptest! {
        #[test]
        fn compress_matches_sha2(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sha256_via_compress(&data), <[u8; 32]>::from(Sha256::digest(&data)));
        }

        #[test]
        fn midstate_path_matches_sha256d(header in proptest::array::uniform32(any::<u8>()), rest in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform16(any::<u8>())) {
            let mut bytes = [0u8; 80];
            bytes[..32].copy_from_slice(&header);
            bytes[32..64].copy_from_slice(&rest);
            bytes[64..].copy_from_slice(&tail);
            let mid = Midstate::of_header_bytes(&bytes);
            let words = block_words(bytes[16..80].try_into().unwrap());
            let tail_words = [words[12], words[13], words[14]];
            let nonce = u32::from_le_bytes(bytes[76..80].try_into().unwrap());
            let mut state = mid.0;
            compress(&mut state, &header_tail_block(&tail_words, nonce));
            prop_assert_eq!(state_bytes(&second_hash(&state)), sha256d(&bytes));
        }
    }
}
