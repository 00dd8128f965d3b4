//! Portable one-lane kernels: `scan` (the shared kernel on plain `u32` words, with every
//! precomputation and the early exit; the fallback everywhere) and `scan_baseline` (the
//! straightforward midstate + two compressions per nonce, kept as the benchmark baseline).
//!
//! Invariant: both append, in order, a superset of the hits in their range (`scan_baseline`
//! exactly the hits).

use hashgrid_common::sha256::{IV, K, compress, header_tail_block, second_hash};
use hashgrid_common::target::state_meets;

use super::kernel::{
    DIGEST_BITS, FIRST_W30_CONST, HEADER_BITS, JobConsts, MAX_VERSIONS, PAD, SECOND_STATE1, SECOND_W17_CONST,
    SECOND_W23_CONST, SECOND_W30_CONST, bsig0, bsig1, const_rounds, eight_rounds, lane_kernel, round, round_e_only,
    scan_batches, scan_batches_versions, ssig0, ssig1, word_rounds,
};

type V = u32;
const LANES: usize = 1;

#[inline(always)]
fn splat(x: u32) -> V {
    x
}
#[inline(always)]
fn add(a: V, b: V) -> V {
    a.wrapping_add(b)
}
#[inline(always)]
fn ch(e: V, f: V, g: V) -> V {
    g ^ (e & (f ^ g))
}
#[inline(always)]
fn maj(a: V, b: V, c: V) -> V {
    b ^ ((a ^ b) & (b ^ c))
}
#[inline(always)]
fn nonce_words(base: u32) -> V {
    base.swap_bytes()
}
#[inline(always)]
fn top_word_meets(h7: V, top: u32) -> u32 {
    (h7.swap_bytes() <= top) as u32
}

lane_kernel!();

/// The baseline: midstate, then the full second-block compression and the full second hash
/// for every nonce, compared with `state_meets`. Appends exactly the hits.
pub(super) fn scan_baseline(job: &JobConsts, first: u32, count: u64, out: &mut Vec<u32>) {
    for offset in 0..count {
        let nonce = first.wrapping_add(offset as u32);
        let mut state = job.midstate;
        compress(&mut state, &header_tail_block(&job.tail, nonce));
        if state_meets(&second_hash(&state), &job.target) {
            out.push(nonce);
        }
    }
}
