//! SHA-NI kernel: `LANES` nonces side by side with the SHA extensions (`sha256rnds2` does two
//! rounds, `sha256msg1`/`sha256msg2` four schedule words), one `__m128i` state pair per nonce.
//!
//! On Zen 4, `sha256rnds2` takes 4 cycles and issues once a cycle, and a nonce's 62 of them
//! form one dependency chain, so the kernel keeps four nonces in flight. The rounds of each
//! group of four run with the expansion of the group four ahead (its newest word carried in a
//! register, the rest of the schedule in memory, off the critical path), so that the eight
//! state vectors stay in registers: SHA instructions reach only xmm0-15, and a state spilled
//! between rounds puts a store and a load on the chain. The function is compiled with AVX2
//! so that the other vector instructions take the VEX three-operand forms (fewer copies):
//! 1.2-1.3 times the rate of the plain SSE build on Zen 4. Three lanes, five lanes and an
//! AVX-512 build measured no faster.
//!
//! The same savings as the lane kernels where two-round granularity allows: the first
//! compression starts from the state after rounds 0 and 1 (`JobConsts::state2`), and the
//! second stops after round 61, whose `f` word is the `h` of round 63: the top hash word is
//! `IV7 + f`, checked against the target's top word (every hit is a candidate).
//!
//! A state is held as SHA-NI wants it: `abef` = lanes `[f, e, b, a]`, `cdgh` = `[h, g, d, c]`
//! (lane 0 first); a schedule is 16 vectors of four words, `W[4g..4g + 4]` in vector `g`.
//!
//! Invariant: `scan` has `#[target_feature(enable = "sha,avx2")]` and may only be called once
//! `is_x86_feature_detected!` has confirmed both (the dispatcher in `cpu.rs` checks it when
//! the backend is built); the helpers are `unsafe`, `#[inline(always)]` into it.

use std::arch::x86_64::*;

use hashgrid_common::sha256::{IV, K};

use super::kernel::{DIGEST_BITS, HEADER_BITS, JobConsts, PAD, scan_batches};

/// Nonces hashed side by side: enough independent `sha256rnds2` chains to fill its pipe.
pub(super) const LANES: usize = 4;

/// A message schedule: `W[4g..4g + 4]` in vector `g`.
type Schedule = [__m128i; 16];

/// Hashes nonces `first..first + count` (`first + count <= 2^32`) and appends to `out`, in
/// order, every nonce whose top hash word could meet the target: a superset of the hits, for
/// the caller to finish with `JobConsts::meets`.
#[target_feature(enable = "sha,avx2")]
pub(super) fn scan(job: &JobConsts, first: u32, count: u64, out: &mut Vec<u32>) {
    // One schedule per lane for all batches: groups 4-15 are rewritten before they are read.
    let mut w = [[_mm_setzero_si128(); 16]; LANES];
    // SAFETY: this function has the target features the helpers need.
    scan_batches(first, count, LANES, out, |base| unsafe { top_word_candidates(job, base, &mut w) });
}

/// The nonces `base..base + LANES` (bit `i` = nonce `base + i`) whose top hash word is at or
/// below the target's.
///
/// # Safety
/// As every helper here: the CPU must have SHA-NI and AVX2, and the caller must be compiled
/// with both (`#[target_feature(enable = "sha,avx2")]`), so that the intrinsics inline.
#[inline(always)]
unsafe fn top_word_candidates(job: &JobConsts, base: u32, w: &mut [Schedule; LANES]) -> u32 {
    // SAFETY: the caller has the target features.
    unsafe {
        // First compression: the header's second block, from the state after round 1.
        let [t0, t1, t2] = job.tail.map(|x| x as i32);
        for (lane, w) in w.iter_mut().enumerate() {
            let nonce = base.wrapping_add(lane as u32).swap_bytes() as i32;
            w[0] = _mm_setr_epi32(t0, t1, t2, nonce);
            w[1] = _mm_setr_epi32(PAD as i32, 0, 0, 0);
            w[2] = _mm_setzero_si128();
            w[3] = _mm_setr_epi32(0, 0, 0, HEADER_BITS as i32);
        }
        let (abef, cdgh) = pack(&job.state2);
        let (mut abef, mut cdgh) = ([abef; LANES], [cdgh; LANES]);
        for lane in 0..LANES {
            // Rounds 2 and 3 (0 and 1 are in `state2`).
            let wk = _mm_shuffle_epi32::<0x0e>(_mm_add_epi32(w[lane][0], k4(0)));
            let next = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], wk);
            cdgh[lane] = abef[lane];
            abef[lane] = next;
        }
        let mut last: [__m128i; LANES] = std::array::from_fn(|lane| w[lane][3]);
        for lane in 0..LANES {
            last[lane] = expand_one(&mut w[lane], 0, last[lane]);
        }
        compress(&mut abef, &mut cdgh, w, last, 1..16);

        // Second compression: the first hash (plus the midstate), padded, from the IV.
        let (mid_abef, mid_cdgh) = pack(&job.midstate);
        for lane in 0..LANES {
            let abef = _mm_add_epi32(abef[lane], mid_abef);
            let cdgh = _mm_add_epi32(cdgh[lane], mid_cdgh);
            let w = &mut w[lane];
            // [d, c, b, a] and [h, g, f, e], reversed.
            w[0] = _mm_shuffle_epi32::<0x1b>(_mm_unpackhi_epi64(cdgh, abef));
            w[1] = _mm_shuffle_epi32::<0x1b>(_mm_unpacklo_epi64(cdgh, abef));
            w[2] = _mm_setr_epi32(PAD as i32, 0, 0, 0);
            w[3] = _mm_setr_epi32(0, 0, 0, DIGEST_BITS as i32);
        }
        let (iv_abef, iv_cdgh) = pack(&IV);
        let (mut abef, mut cdgh) = ([iv_abef; LANES], [iv_cdgh; LANES]);
        let last: [__m128i; LANES] = std::array::from_fn(|lane| w[lane][3]);
        compress(&mut abef, &mut cdgh, w, last, 0..15);
        let mut bits = 0;
        for lane in 0..LANES {
            // Rounds 60 and 61 only: their `f` (lane 0) is the `h` of round 63.
            let wk = _mm_add_epi32(w[lane][15], k4(15));
            let f = _mm_cvtsi128_si32(_mm_sha256rnds2_epu32(cdgh[lane], abef[lane], wk)) as u32;
            bits |= ((IV[7].wrapping_add(f).swap_bytes() <= job.top()) as u32) << lane;
        }
        bits
    }
}

/// Four rounds with `wk = K + W` of them.
///
/// # Safety
/// As `top_word_candidates`.
#[inline(always)]
unsafe fn four_rounds(abef: &mut __m128i, cdgh: &mut __m128i, wk: __m128i) {
    // SAFETY: the caller has the target features.
    unsafe {
        let mid = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
        let next = _mm_sha256rnds2_epu32(*abef, mid, _mm_shuffle_epi32::<0x0e>(wk));
        *cdgh = mid;
        *abef = next;
    }
}

/// The rounds of the schedule groups `groups` (`W[4g..4g + 4]` for each `g`) of every lane,
/// expanding each lane's schedule four groups ahead as they go (`last[lane]` = its newest
/// group, kept in a register; the others stay in memory). Groups below `groups.start + 4`
/// must be there already.
///
/// # Safety
/// As `top_word_candidates`.
#[inline(always)]
#[expect(clippy::needless_range_loop, reason = "the group index also picks the round constants")]
unsafe fn compress(
    abef: &mut [__m128i; LANES],
    cdgh: &mut [__m128i; LANES],
    w: &mut [Schedule; LANES],
    mut last: [__m128i; LANES],
    groups: std::ops::Range<usize>,
) {
    // SAFETY: the caller has the target features.
    unsafe {
        for g in groups.start..12 {
            for lane in 0..LANES {
                four_rounds(&mut abef[lane], &mut cdgh[lane], _mm_add_epi32(w[lane][g], k4(g)));
                last[lane] = expand_one(&mut w[lane], g, last[lane]);
            }
        }
        for g in 12..groups.end {
            for lane in 0..LANES {
                four_rounds(&mut abef[lane], &mut cdgh[lane], _mm_add_epi32(w[lane][g], k4(g)));
            }
        }
    }
}

/// `w[g + 4]` from `w[g..g + 3]` and `last` (= `w[g + 3]`); stores and returns it.
///
/// # Safety
/// As `top_word_candidates`.
#[inline(always)]
unsafe fn expand_one(w: &mut Schedule, g: usize, last: __m128i) -> __m128i {
    // SAFETY: the caller has the target features.
    unsafe {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w[g], w[g + 1]), _mm_alignr_epi8::<4>(last, w[g + 2]));
        let next = _mm_sha256msg2_epu32(t, last);
        w[g + 4] = next;
        next
    }
}

/// A scalar state `[a, b, c, d, e, f, g, h]` as `(abef, cdgh)`.
///
/// # Safety
/// As `top_word_candidates`.
#[inline(always)]
unsafe fn pack(s: &[u32; 8]) -> (__m128i, __m128i) {
    let [a, b, c, d, e, f, g, h] = s.map(|x| x as i32);
    // SAFETY: the caller has the target features.
    unsafe { (_mm_set_epi32(a, b, e, f), _mm_set_epi32(c, d, g, h)) }
}

/// `K[4g..4g + 4]` as a vector.
///
/// # Safety
/// As `top_word_candidates`.
#[inline(always)]
unsafe fn k4(g: usize) -> __m128i {
    let k = &K[4 * g..4 * g + 4];
    // SAFETY: the caller has the target features.
    unsafe { _mm_setr_epi32(k[0] as i32, k[1] as i32, k[2] as i32, k[3] as i32) }
}
