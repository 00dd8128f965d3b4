//! AVX2 kernel: the shared kernel on 8 lanes (8 consecutive nonces per 256-bit vector).
//! Rotations are two shifts and an or (AVX2 has no vector rotate, and none of SHA-256's
//! rotations is a whole number of bytes, so `vpshufb` cannot stand in).
//!
//! Hand-shaped variants of this kernel (`maj` in three instructions, no zeroed schedule
//! arrays, `K + W` tables shared across versions, two groups of 8 lanes interleaved, a scalar
//! BMI2 companion lane) measured no faster on Zen 4, or slower; the kernel issues about 3
//! vector instructions a cycle, near what the core sustains for this mix (BENCHMARKS.md, "CPU
//! on machines without AVX-512 or SHA-NI").
//!
//! Invariant: every function here has `#[target_feature(enable = "avx2")]`; `scan` may only
//! be called once `is_x86_feature_detected!("avx2")` has returned true (the dispatcher in
//! `cpu.rs` checks it when the backend is built).

use std::arch::x86_64::*;

use hashgrid_common::sha256::{IV, K};

use super::kernel::{
    DIGEST_BITS, FIRST_W30_CONST, HEADER_BITS, JobConsts, MAX_VERSIONS, PAD, SECOND_STATE1, SECOND_W17_CONST,
    SECOND_W23_CONST, SECOND_W30_CONST, const_rounds, eight_rounds, lane_kernel, round, round_e_only, scan_batches,
    scan_batches_versions, word_rounds,
};

type V = __m256i;
const LANES: usize = 8;

/// Rotates every lane right by `$n` bits.
macro_rules! ror {
    ($x:expr, $n:literal) => {
        _mm256_or_si256(_mm256_srli_epi32::<$n>($x), _mm256_slli_epi32::<{ 32 - $n }>($x))
    };
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat(x: u32) -> V {
    _mm256_set1_epi32(x as i32)
}
#[target_feature(enable = "avx2")]
#[inline]
fn add(a: V, b: V) -> V {
    _mm256_add_epi32(a, b)
}
#[target_feature(enable = "avx2")]
#[inline]
fn xor3(a: V, b: V, c: V) -> V {
    _mm256_xor_si256(_mm256_xor_si256(a, b), c)
}
#[target_feature(enable = "avx2")]
#[inline]
fn bsig0(x: V) -> V {
    xor3(ror!(x, 2), ror!(x, 13), ror!(x, 22))
}
#[target_feature(enable = "avx2")]
#[inline]
fn bsig1(x: V) -> V {
    xor3(ror!(x, 6), ror!(x, 11), ror!(x, 25))
}
#[target_feature(enable = "avx2")]
#[inline]
fn ssig0(x: V) -> V {
    xor3(ror!(x, 7), ror!(x, 18), _mm256_srli_epi32::<3>(x))
}
#[target_feature(enable = "avx2")]
#[inline]
fn ssig1(x: V) -> V {
    xor3(ror!(x, 17), ror!(x, 19), _mm256_srli_epi32::<10>(x))
}
#[target_feature(enable = "avx2")]
#[inline]
fn ch(e: V, f: V, g: V) -> V {
    _mm256_xor_si256(g, _mm256_and_si256(e, _mm256_xor_si256(f, g)))
}
#[target_feature(enable = "avx2")]
#[inline]
fn maj(a: V, b: V, c: V) -> V {
    _mm256_xor_si256(b, _mm256_and_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(b, c)))
}
/// Reverses the bytes of every lane.
#[target_feature(enable = "avx2")]
#[inline]
fn bswap(x: V) -> V {
    let order = _mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    _mm256_shuffle_epi8(x, _mm256_broadcastsi128_si256(order))
}
#[target_feature(enable = "avx2")]
#[inline]
fn nonce_words(base: u32) -> V {
    bswap(add(splat(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
}
#[target_feature(enable = "avx2")]
#[inline]
fn top_word_meets(h7: V, top: u32) -> u32 {
    let word = bswap(h7);
    // Unsigned `word <= top` as `min(word, top) == word`.
    let at_most = _mm256_cmpeq_epi32(_mm256_min_epu32(word, splat(top)), word);
    _mm256_movemask_ps(_mm256_castsi256_ps(at_most)) as u32
}

lane_kernel!(#[target_feature(enable = "avx2")]);
