//! The nonce-search kernel shared by every lane width: the per-job precomputations
//! (`JobConsts`) and `lane_kernel!`, which expands into a lane module's `scan` given that
//! module's lane type `V` and its word operations.
//!
//! What a nonce costs, after the precomputations (W3 is the byte-swapped nonce):
//!
//! * First compression (header block 2 = `[t0, t1, t2, W3, 0x80000000, 0 x 10, 640]`, from
//!   the midstate): rounds 0-2 see only job constants, so the state after them is computed
//!   once per job; round 3 adds W3 to both `a` and `e` and nothing else depends on it, so it
//!   is two adds. W4-W15 are padding and W16-W17 depend only on t0-t2, so they are job
//!   constants (and `K + W` of rounds 4-7 is folded); W18-W31 lose their zero and constant
//!   terms.
//! * Second compression (block `[H0..H7, 0x80000000, 0 x 6, 256]`, from the IV): round 0
//!   is again two adds, W8-W15 are constants, W16-W31 lose their zero and constant terms.
//! * Early exit: the top hash word is `IV7 + h` after 64 rounds, and `h` after round 63 is the
//!   `e` produced by round 60, so rounds 61-63 (and W61-W63) are skipped, and rounds 57-60
//!   compute only `e`. A lane is a candidate when that word, byte-swapped into the target's
//!   word order, is at or below the target's top word: every hit is a candidate (no hit is
//!   missed, whatever the target), and the caller finishes each candidate with the reference
//!   hash and `state_meets`.
//!
//! Rounds 8-63 run as loops of eight unrolled rounds: the fully unrolled kernel measured no
//! faster and was 2.5 times the code.
//!
//! Version rolling: headers that differ only in their version share their second block, so
//! the first compression's schedule (W16-W63: the tail words and the nonce) is the same for
//! all k versions of a nonce. `scan_versions` computes it once per batch of nonces and runs
//! the rounds of both compressions once per version, from that version's `JobConsts`
//! (`midstate` and `state4` differ; everything derived from the tail is the same).
//!
//! Invariants: `JobConsts` describes exactly one (header, target) pair; the kernel never looks
//! at the header's own nonce; lanes are consecutive nonces, lane `i` of a batch being
//! `base + i` (wrapping; the caller masks lanes past its range).

use hashgrid_common::sha256::{IV, K, compress, header_tail_block, second_hash};
use hashgrid_common::target::state_meets;
use hashgrid_common::{Header, Target};

/// The padding word that follows a message's last word.
pub(super) const PAD: u32 = 0x8000_0000;
/// The bit length of an 80-byte header: the last word of its second block.
pub(super) const HEADER_BITS: u32 = 640;
/// The bit length of a 32-byte digest: the last word of the second hash's block.
pub(super) const DIGEST_BITS: u32 = 256;

pub(super) const fn bsig0(x: u32) -> u32 {
    x.rotate_right(2) ^ x.rotate_right(13) ^ x.rotate_right(22)
}
pub(super) const fn bsig1(x: u32) -> u32 {
    x.rotate_right(6) ^ x.rotate_right(11) ^ x.rotate_right(25)
}
pub(super) const fn ssig0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}
pub(super) const fn ssig1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

/// One SHA-256 round on scalar words with `kw = K[i] + W[i]` (a `const fn` so the second
/// hash's first round can be folded at compile time).
const fn scalar_round(s: [u32; 8], kw: u32) -> [u32; 8] {
    let [a, b, c, d, e, f, g, h] = s;
    let ch = (e & f) ^ (!e & g);
    let maj = (a & b) ^ (a & c) ^ (b & c);
    let t1 = h.wrapping_add(bsig1(e)).wrapping_add(ch).wrapping_add(kw);
    let t2 = bsig0(a).wrapping_add(maj);
    [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g]
}

/// The second hash's state after round 0, computed with W0 = 0: the real `a` and `e` are
/// these plus H0 (the first hash's word 0), every other word is exact.
pub(super) const SECOND_STATE1: [u32; 8] = scalar_round(IV, K[0]);

/// The constant term of the first compression's W30 (`ssig0(W15)`).
pub(super) const FIRST_W30_CONST: u32 = ssig0(HEADER_BITS);

/// The constant terms of the second hash's W17, W23, W24, W30 and W31.
pub(super) const SECOND_W17_CONST: u32 = ssig1(DIGEST_BITS);
pub(super) const SECOND_W23_CONST: u32 = ssig0(PAD);
pub(super) const SECOND_W30_CONST: u32 = ssig0(DIGEST_BITS);

/// Everything about a job the kernel needs that does not depend on the nonce.
#[derive(Debug, Clone)]
pub(super) struct JobConsts {
    /// The SHA-256 state after the header's first 64 bytes.
    pub midstate: [u32; 8],
    /// Header words 16-18 (big-endian bytes 64..76): W0-W2 of the first compression.
    pub tail: [u32; 3],
    /// The target as little-endian words (`Target::to_le_words`).
    pub target: [u32; 8],
    /// The first compression's state after round 3, computed with W3 = 0: the real `a`
    /// (index 0) and `e` (index 4) are these plus W3; the other words are exact.
    pub state4: [u32; 8],
    /// The first compression's state after rounds 0 and 1 (job constants): where the SHA-NI
    /// kernel starts, two rounds at a time.
    pub state2: [u32; 8],
    /// `K + W` of the first compression's rounds 4-7 (index = round; 0-3 unused).
    pub kw: [u32; 8],
    /// The first compression's W16 and W17 (nonce-independent).
    pub w16: u32,
    pub w17: u32,
    /// W18 = `w18_const + ssig0(W3)`, W19 = `w19_const + W3`, W31 = `ssig1(W29) + W24 +
    /// w31_const`.
    pub w18_const: u32,
    pub w19_const: u32,
    pub w31_const: u32,
}

impl JobConsts {
    pub fn new(header: &Header, target: &Target) -> Self {
        let midstate = header.midstate().0;
        let tail = header.tail_words();
        let mut block = [0u32; 16];
        block[..3].copy_from_slice(&tail);
        block[4] = PAD;
        block[15] = HEADER_BITS;
        let mut state = midstate;
        let mut state2 = midstate;
        for (i, &word) in block.iter().enumerate().take(4) {
            // block[3] is 0 here: round 3 runs without the nonce word (see `state4`).
            state = scalar_round(state, K[i].wrapping_add(word));
            if i == 1 {
                state2 = state;
            }
        }
        let w16 = ssig0(tail[1]).wrapping_add(tail[0]);
        let w17 = ssig1(HEADER_BITS).wrapping_add(ssig0(tail[2])).wrapping_add(tail[1]);
        let mut kw = [0u32; 8];
        for i in 4..8 {
            kw[i] = K[i].wrapping_add(block[i]);
        }
        JobConsts {
            midstate,
            tail,
            target: target.to_le_words(),
            state2,
            state4: state,
            kw,
            w16,
            w17,
            w18_const: ssig1(w16).wrapping_add(tail[2]),
            w19_const: ssig1(w17).wrapping_add(ssig0(PAD)),
            w31_const: ssig0(w16).wrapping_add(HEADER_BITS),
        }
    }

    /// The target's top word (bits 224..256): a candidate's top hash word must not exceed it.
    pub fn top(&self) -> u32 {
        self.target[7]
    }

    /// Whether `nonce` meets the target, by the full portable sha256d (no shortcuts): how
    /// candidates are finished, and the reference the lane kernels are tested against.
    pub fn meets(&self, nonce: u32) -> bool {
        let mut state = self.midstate;
        compress(&mut state, &header_tail_block(&self.tail, nonce));
        state_meets(&second_hash(&state), &self.target)
    }
}

/// The most versions `scan_versions` takes at once (2^`MAX_ROLLED_BITS`).
pub(super) const MAX_VERSIONS: usize = 1 << crate::search::MAX_ROLLED_BITS;

/// `scan_batches` for k versions at once: `candidates(base, bits)` fills `bits[j]` (bit `i` =
/// nonce `base + i`) for version `j`, and version `j`'s nonces in the range go to `out[j]`.
#[inline(always)]
pub(super) fn scan_batches_versions(
    first: u32,
    count: u64,
    batch: usize,
    out: &mut [Vec<u32>],
    mut candidates: impl FnMut(u32, &mut [u32]),
) {
    let mut bits = [0u32; MAX_VERSIONS];
    let bits = &mut bits[..out.len()];
    let mut done = 0u64;
    while done < count {
        let base = first.wrapping_add(done as u32);
        candidates(base, bits);
        for (&lanes, out) in bits.iter().zip(out.iter_mut()) {
            push_lanes(base, lanes, count - done, batch, out);
        }
        done += batch as u64;
    }
}

/// Appends to `out` the nonces `base + i` of the set bits `i` of `lanes`, less the lanes at or
/// past `left` (past the range: they may have wrapped past nonce 2^32 - 1).
#[inline(always)]
fn push_lanes(base: u32, mut lanes: u32, left: u64, batch: usize, out: &mut Vec<u32>) {
    if left < batch as u64 {
        lanes &= (1u32 << left) - 1;
    }
    while lanes != 0 {
        out.push(base.wrapping_add(lanes.trailing_zeros()));
        lanes &= lanes - 1;
    }
}

/// Runs `candidates` on the batches of `batch` consecutive nonces (`batch <= 32`) that cover
/// `first..first + count` (`first + count <= 2^32`), and appends to `out`, in order, the nonces
/// of the bits it returns (bit `i` = nonce `base + i`) that lie in the range.
#[inline(always)]
pub(super) fn scan_batches(
    first: u32,
    count: u64,
    batch: usize,
    out: &mut Vec<u32>,
    mut candidates: impl FnMut(u32) -> u32,
) {
    let mut done = 0u64;
    while done < count {
        let base = first.wrapping_add(done as u32);
        push_lanes(base, candidates(base), count - done, batch, out);
        done += batch as u64;
    }
}

/// One full round on lane vectors: `$s` is an `[V; 8]` state, `$kw` the round's `K + W`.
/// `maj` is written `b ^ ((a ^ b) & (b ^ c))` by the lane modules, so the `a ^ b` of one
/// round is the `b ^ c` of the next and the compiler shares it.
macro_rules! round {
    ($s:ident, $kw:expr) => {{
        let [a, b, c, d, e, f, g, h] = $s;
        let t1 = add(add(add(h, $kw), ch(e, f, g)), bsig1(e));
        let t2 = add(bsig0(a), maj(a, b, c));
        $s = [add(t1, t2), a, b, c, add(d, t1), e, f, g];
    }};
}

/// A round that computes only the new `e` (its `a` is never read again): the last rounds
/// before the early exit. The slot of `a` gets a placeholder.
macro_rules! round_e_only {
    ($s:ident, $kw:expr) => {{
        let [a, b, c, d, e, f, g, h] = $s;
        let t1 = add(add(add(h, $kw), ch(e, f, g)), bsig1(e));
        $s = [a, a, b, c, add(d, t1), e, f, g];
    }};
}

/// Rounds whose `K + W` is a precomputed scalar: `$kw[i]` for each listed round `i`.
macro_rules! const_rounds {
    ($s:ident, $kw:expr; $($i:literal)*) => {
        $( round!($s, splat($kw[$i])); )*
    };
}

/// Rounds with lane words: `K[i] + $w[i]` for each listed round `i`.
macro_rules! word_rounds {
    ($round:ident, $s:ident, $w:ident; $($i:literal)*) => {
        $( $round!($s, add(splat(K[$i]), $w[$i])); )*
    };
}

/// Eight rounds: `$k` and `$w` are `[_; 8]` of their round constants and words.
macro_rules! eight_rounds {
    ($s:ident, $k:expr, $w:expr) => {
        let (k, w) = ($k, $w);
        round!($s, add(splat(k[0]), w[0]));
        round!($s, add(splat(k[1]), w[1]));
        round!($s, add(splat(k[2]), w[2]));
        round!($s, add(splat(k[3]), w[3]));
        round!($s, add(splat(k[4]), w[4]));
        round!($s, add(splat(k[5]), w[5]));
        round!($s, add(splat(k[6]), w[6]));
        round!($s, add(splat(k[7]), w[7]));
    };
}

/// Expands into a lane module's `scan`, given, in that module: `type V` (one word per lane),
/// `const LANES`, and `splat`, `add`, `bsig0`, `bsig1`, `ssig0`, `ssig1`, `ch`, `maj`,
/// `nonce_words` (the byte-swapped nonces `base + lane`) and `top_word_meets` (the lanes,
/// as a bit mask, whose top hash word is at or below the target's). The attributes (the
/// module's `#[target_feature]`) go on every function it defines.
macro_rules! lane_kernel {
    ($(#[$attr:meta])*) => {
        /// Hashes nonces `first..first + count` (`first + count <= 2^32`) and appends to
        /// `out`, in order, every nonce whose top hash word could meet the target: a superset
        /// of the hits, for the caller to finish with `JobConsts::meets`.
        $(#[$attr])*
        pub(super) fn scan(job: &JobConsts, first: u32, count: u64, out: &mut Vec<u32>) {
            scan_batches(first, count, LANES, out, |base| {
                let nonce = nonce_words(base);
                top_word_candidates(job, nonce, &first_schedule(job, nonce))
            });
        }

        /// `scan` for k versions of one header (`jobs[j]` = version `j`, k <= `MAX_VERSIONS`;
        /// they differ only in the version): the first compression's schedule is computed once
        /// per batch and shared. Version `j`'s candidates go to `out[j]`.
        $(#[$attr])*
        pub(super) fn scan_versions(jobs: &[JobConsts], first: u32, count: u64, out: &mut [Vec<u32>]) {
            debug_assert!(jobs.len() == out.len() && jobs.len() <= MAX_VERSIONS);
            scan_batches_versions(first, count, LANES, out, |base, bits| {
                let nonce = nonce_words(base);
                let w = first_schedule(&jobs[0], nonce);
                for (job, bits) in jobs.iter().zip(bits.iter_mut()) {
                    *bits = top_word_candidates(job, nonce, &w);
                }
            });
        }

        /// The first compression's schedule W0-W63 of the lanes' `nonce` words (byte-swapped):
        /// the same for every version of the header. W0-W7 are not read (rounds 0-7 use the
        /// job's precomputed state and `K + W`).
        $(#[$attr])*
        #[inline]
        fn first_schedule(job: &JobConsts, nonce: V) -> [V; 64] {
            // W8-W14 are zero.
            let mut w = [splat(0); 64];
            w[15] = splat(HEADER_BITS);
            w[16] = splat(job.w16);
            w[17] = splat(job.w17);
            w[18] = add(splat(job.w18_const), ssig0(nonce));
            w[19] = add(splat(job.w19_const), nonce);
            w[20] = add(ssig1(w[18]), splat(PAD));
            w[21] = ssig1(w[19]);
            w[22] = add(ssig1(w[20]), splat(HEADER_BITS));
            w[23] = add(ssig1(w[21]), w[16]);
            w[24] = add(ssig1(w[22]), w[17]);
            w[25] = add(ssig1(w[23]), w[18]);
            w[26] = add(ssig1(w[24]), w[19]);
            w[27] = add(ssig1(w[25]), w[20]);
            w[28] = add(ssig1(w[26]), w[21]);
            w[29] = add(ssig1(w[27]), w[22]);
            w[30] = add(add(ssig1(w[28]), w[23]), splat(FIRST_W30_CONST));
            w[31] = add(add(ssig1(w[29]), w[24]), splat(job.w31_const));
            for i in 32..64 {
                w[i] = add(add(ssig1(w[i - 2]), w[i - 7]), add(ssig0(w[i - 15]), w[i - 16]));
            }
            w
        }

        /// The sha256d of the lanes' `nonce` words (byte-swapped) up to round 60 of the second
        /// compression, given the first compression's schedule `w`; the lanes (bit `i` = lane
        /// `i`) whose top hash word is at or below the target's.
        $(#[$attr])*
        #[inline]
        fn top_word_candidates(job: &JobConsts, nonce: V, w: &[V; 64]) -> u32 {
            // First compression, from the state after round 3 (precomputed less W3).
            let st = &job.state4;
            let mut s = [
                add(splat(st[0]), nonce),
                splat(st[1]),
                splat(st[2]),
                splat(st[3]),
                add(splat(st[4]), nonce),
                splat(st[5]),
                splat(st[6]),
                splat(st[7]),
            ];
            const_rounds!(s, job.kw; 4 5 6 7);
            for (k, w) in K[8..64].as_chunks::<8>().0.iter().zip(w[8..64].as_chunks::<8>().0) {
                eight_rounds!(s, k, w);
            }

            // Second compression: its block starts with the first hash.
            let m = &job.midstate;
            let mut w = [splat(0); 64];
            for i in 0..8 {
                w[i] = add(s[i], splat(m[i]));
            }
            let mut s = [
                add(splat(SECOND_STATE1[0]), w[0]),
                splat(SECOND_STATE1[1]),
                splat(SECOND_STATE1[2]),
                splat(SECOND_STATE1[3]),
                add(splat(SECOND_STATE1[4]), w[0]),
                splat(SECOND_STATE1[5]),
                splat(SECOND_STATE1[6]),
                splat(SECOND_STATE1[7]),
            ];
            word_rounds!(round, s, w; 1 2 3 4 5 6 7);
            w[8] = splat(PAD);
            w[15] = splat(DIGEST_BITS);
            w[16] = add(ssig0(w[1]), w[0]);
            w[17] = add(add(ssig0(w[2]), w[1]), splat(SECOND_W17_CONST));
            w[18] = add(add(ssig1(w[16]), ssig0(w[3])), w[2]);
            w[19] = add(add(ssig1(w[17]), ssig0(w[4])), w[3]);
            w[20] = add(add(ssig1(w[18]), ssig0(w[5])), w[4]);
            w[21] = add(add(ssig1(w[19]), ssig0(w[6])), w[5]);
            w[22] = add(add(ssig1(w[20]), ssig0(w[7])), add(w[6], splat(DIGEST_BITS)));
            w[23] = add(add(ssig1(w[21]), w[16]), add(w[7], splat(SECOND_W23_CONST)));
            w[24] = add(add(ssig1(w[22]), w[17]), splat(PAD));
            w[25] = add(ssig1(w[23]), w[18]);
            w[26] = add(ssig1(w[24]), w[19]);
            w[27] = add(ssig1(w[25]), w[20]);
            w[28] = add(ssig1(w[26]), w[21]);
            w[29] = add(ssig1(w[27]), w[22]);
            w[30] = add(add(ssig1(w[28]), w[23]), splat(SECOND_W30_CONST));
            w[31] = add(add(ssig1(w[29]), w[24]), add(ssig0(w[16]), splat(DIGEST_BITS)));
            for i in 32..61 {
                w[i] = add(add(ssig1(w[i - 2]), w[i - 7]), add(ssig0(w[i - 15]), w[i - 16]));
            }
            for (k, w) in K[8..56].as_chunks::<8>().0.iter().zip(w[8..56].as_chunks::<8>().0) {
                eight_rounds!(s, k, w);
            }
            word_rounds!(round, s, w; 56);
            word_rounds!(round_e_only, s, w; 57 58 59 60);

            // h after round 63 is this e; the top hash word is IV7 + h.
            top_word_meets(add(s[4], splat(IV[7])), job.top())
        }
    };
}

pub(super) use {const_rounds, eight_rounds, lane_kernel, round, round_e_only, word_rounds};
