//! AVX-512 kernel: the shared kernel on 16 lanes (16 consecutive nonces per 512-bit vector),
//! with native rotates (`vprord`) and three-input logic (`vpternlogd`) for the sigmas, `ch`
//! and `maj`.
//!
//! Invariant: every function here has `#[target_feature(enable = "avx512f,avx512bw")]`;
//! `scan` may only be called once `is_x86_feature_detected!` has confirmed both features
//! (the dispatcher in `cpu.rs` checks it when the backend is built).

use std::arch::x86_64::*;

use hashgrid_common::sha256::{IV, K};

use super::kernel::{
    DIGEST_BITS, FIRST_W30_CONST, HEADER_BITS, JobConsts, MAX_VERSIONS, PAD, SECOND_STATE1, SECOND_W17_CONST,
    SECOND_W23_CONST, SECOND_W30_CONST, const_rounds, eight_rounds, lane_kernel, round, round_e_only, scan_batches,
    scan_batches_versions, word_rounds,
};

type V = __m512i;
const LANES: usize = 16;

/// `vpternlogd` truth tables (bit `4a + 2b + c` of the immediate is the result).
const XOR3: i32 = 0x96;
const CHOOSE: i32 = 0xca;
const MAJORITY: i32 = 0xe8;

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn splat(x: u32) -> V {
    _mm512_set1_epi32(x as i32)
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn add(a: V, b: V) -> V {
    _mm512_add_epi32(a, b)
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn bsig0(x: V) -> V {
    _mm512_ternarylogic_epi32::<XOR3>(_mm512_ror_epi32::<2>(x), _mm512_ror_epi32::<13>(x), _mm512_ror_epi32::<22>(x))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn bsig1(x: V) -> V {
    _mm512_ternarylogic_epi32::<XOR3>(_mm512_ror_epi32::<6>(x), _mm512_ror_epi32::<11>(x), _mm512_ror_epi32::<25>(x))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn ssig0(x: V) -> V {
    _mm512_ternarylogic_epi32::<XOR3>(_mm512_ror_epi32::<7>(x), _mm512_ror_epi32::<18>(x), _mm512_srli_epi32::<3>(x))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn ssig1(x: V) -> V {
    _mm512_ternarylogic_epi32::<XOR3>(_mm512_ror_epi32::<17>(x), _mm512_ror_epi32::<19>(x), _mm512_srli_epi32::<10>(x))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn ch(e: V, f: V, g: V) -> V {
    _mm512_ternarylogic_epi32::<CHOOSE>(e, f, g)
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn maj(a: V, b: V, c: V) -> V {
    _mm512_ternarylogic_epi32::<MAJORITY>(a, b, c)
}
/// Reverses the bytes of every lane.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn bswap(x: V) -> V {
    let order = _mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    _mm512_shuffle_epi8(x, _mm512_broadcast_i32x4(order))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn nonce_words(base: u32) -> V {
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    bswap(add(splat(base), lanes))
}
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn top_word_meets(h7: V, top: u32) -> u32 {
    _mm512_cmple_epu32_mask(bswap(h7), splat(top)) as u32
}

lane_kernel!(#[target_feature(enable = "avx512f,avx512bw")]);
