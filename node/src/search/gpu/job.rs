//! The job uniform the WGSL kernels read (`JobUniform`, laid out as the shaders' `Job`), and
//! the host-side mining precomputations that go into it.
//!
//! One layout serves both entry points of `shaders/sha256d.wgsl` and the reference shader:
//! what every version of a header shares (tail words, target, dispatch limits, the
//! nonce-independent schedule terms), then one `VersionUniform` per version searched (its
//! midstate and its state after round 3), the header's own version first. A single-version
//! job fills one; a version-rolled job k = 2^bits <= `MAX_VERSIONS`.

use bytemuck::{Pod, Zeroable};
use hashgrid_common::sha256::{K, big_sigma0, big_sigma1, ch, maj, small_sigma0, small_sigma1};

use crate::search::{MAX_ROLLED_BITS, SearchJob};

/// The most versions one dispatch tests per nonce: the length of the shaders' `versions`.
pub const MAX_VERSIONS: usize = 1 << MAX_ROLLED_BITS;

/// What differs between a header's versions, laid out as the shaders' `Version` struct.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(super) struct VersionUniform {
    midstate: [u32; 8],
    /// The first hash's state after round 3, less the nonce word (see `round3_state`).
    round3: [u32; 8],
}

/// The job uniform, laid out as the shaders' `Job` struct (six `vec4<u32>` and
/// `MAX_VERSIONS` versions of four).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(super) struct JobUniform {
    tail: [u32; 3],
    /// The dispatch's first nonce.
    pub first_nonce: u32,
    target: [u32; 8],
    /// Nonces in the dispatch.
    pub count: u32,
    capacity: u32,
    /// Versions tested per nonce: 1, or k for `search_rolled`.
    versions: u32,
    zero: u32,
    /// The nonce-independent message schedule terms (see `schedule_terms`).
    schedule: [u32; 8],
    version: [VersionUniform; MAX_VERSIONS],
}

/// The uniform buffer's size in bytes.
pub(super) const UNIFORM_SIZE: u64 = std::mem::size_of::<JobUniform>() as u64;

impl JobUniform {
    /// The uniform for `job` under each of its versions (`SearchJob::versions`, at most
    /// `MAX_VERSIONS`), with room for `capacity` hits.
    pub fn new(job: &SearchJob, capacity: u32) -> Self {
        let tail = job.header.tail_words();
        let mut uniform = JobUniform {
            tail,
            first_nonce: job.start,
            target: job.target.to_le_words(),
            count: 0,
            capacity,
            versions: 0,
            zero: 0,
            schedule: schedule_terms(&tail),
            version: [VersionUniform::zeroed(); MAX_VERSIONS],
        };
        for (slot, version) in uniform.version.iter_mut().zip(job.versions()) {
            let midstate = hashgrid_common::Header { version, ..job.header }.midstate().0;
            *slot = VersionUniform { midstate, round3: round3_state(&midstate, &tail) };
            uniform.versions += 1;
        }
        uniform
    }

    /// Versions tested per nonce: more than one runs the `search_rolled` entry point.
    pub fn versions(&self) -> u32 {
        self.versions
    }
}

/// Rounds 0-2 of the header's second block use only the tail words, so they run once per job
/// here. Round 3 adds the nonce word W3 to both new registers; everything else in it is
/// constant too. Returns the state after round 3 with W3 left out of `a` and `e`: the shader
/// adds the byte-swapped nonce to words 0 and 4.
fn round3_state(midstate: &[u32; 8], tail: &[u32; 3]) -> [u32; 8] {
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *midstate;
    for (i, &w) in tail.iter().enumerate() {
        let t1 = h.wrapping_add(big_sigma1(e)).wrapping_add(ch(e, f, g)).wrapping_add(K[i]).wrapping_add(w);
        let t2 = big_sigma0(a).wrapping_add(maj(a, b, c));
        (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
    }
    let t1 = h.wrapping_add(big_sigma1(e)).wrapping_add(ch(e, f, g)).wrapping_add(K[3]);
    let t2 = big_sigma0(a).wrapping_add(maj(a, b, c));
    [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g]
}

/// The second block's words are W0..W2 = tail, W3 = nonce, then constant padding (W4 =
/// 0x80000000, W15 = 640, zeros). The message schedule terms that involve no nonce are
/// computed here once per job (all versions share them):
/// `[W16, W17, K16 + W16, K17 + W17, σ1(W16) + W2, σ1(W17) + σ0(W4), σ0(W16) + W15,
/// σ0(W17) + W16]`; the shader completes W18, W19, W31 and W32 from the last four.
fn schedule_terms(tail: &[u32; 3]) -> [u32; 8] {
    let [w0, w1, w2] = *tail;
    let (w4, w15) = (0x8000_0000u32, 640u32);
    let w16 = small_sigma0(w1).wrapping_add(w0);
    let w17 = small_sigma1(w15).wrapping_add(small_sigma0(w2)).wrapping_add(w1);
    [
        w16,
        w17,
        K[16].wrapping_add(w16),
        K[17].wrapping_add(w17),
        small_sigma1(w16).wrapping_add(w2),
        small_sigma1(w17).wrapping_add(small_sigma0(w4)),
        small_sigma0(w16).wrapping_add(w15),
        small_sigma0(w17).wrapping_add(w16),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashgrid_common::sha256::header_tail_block;
    use hashgrid_common::{Header, Target};

    /// The full message schedule of a block.
    fn schedule(block: &[u32; 16]) -> [u32; 64] {
        let mut w = [0u32; 64];
        w[..16].copy_from_slice(block);
        for i in 16..64 {
            w[i] = small_sigma1(w[i - 2])
                .wrapping_add(w[i - 7])
                .wrapping_add(small_sigma0(w[i - 15]))
                .wrapping_add(w[i - 16]);
        }
        w
    }

    fn headers() -> impl Iterator<Item = Header> {
        (0u32..50).map(|i| {
            let mut bytes = [0u8; 80];
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = (i.wrapping_mul(2_654_435_761).wrapping_add(j as u32 * 40_503)).to_le_bytes()[j % 4];
            }
            Header::from_bytes(&bytes)
        })
    }

    #[test]
    fn precomputed_schedule_terms_complete_the_schedule() {
        for header in headers() {
            let tail = header.tail_words();
            let terms = schedule_terms(&tail);
            for nonce in [0u32, 1, 0x1234_5678, u32::MAX] {
                let n = nonce.swap_bytes();
                let w = schedule(&header_tail_block(&tail, nonce));
                assert_eq!([terms[0], terms[1]], [w[16], w[17]]);
                assert_eq!([terms[2], terms[3]], [K[16].wrapping_add(w[16]), K[17].wrapping_add(w[17])]);
                assert_eq!(terms[4].wrapping_add(small_sigma0(n)), w[18]);
                assert_eq!(terms[5].wrapping_add(n), w[19]);
                assert_eq!(small_sigma1(w[29]).wrapping_add(w[24]).wrapping_add(terms[6]), w[31]);
                assert_eq!(small_sigma1(w[30]).wrapping_add(w[25]).wrapping_add(terms[7]), w[32]);
            }
        }
    }

    #[test]
    fn round3_state_plus_nonce_is_four_rounds() {
        for header in headers() {
            let midstate = header.midstate().0;
            let tail = header.tail_words();
            let pre = round3_state(&midstate, &tail);
            for nonce in [0u32, 7, u32::MAX] {
                let block = header_tail_block(&tail, nonce);
                let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = midstate;
                for (i, &w) in block.iter().enumerate().take(4) {
                    let t1 = h.wrapping_add(big_sigma1(e)).wrapping_add(ch(e, f, g)).wrapping_add(K[i]).wrapping_add(w);
                    let t2 = big_sigma0(a).wrapping_add(maj(a, b, c));
                    (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
                }
                let n = nonce.swap_bytes();
                let mut expected = pre;
                expected[0] = expected[0].wrapping_add(n);
                expected[4] = expected[4].wrapping_add(n);
                assert_eq!(expected, [a, b, c, d, e, f, g, h]);
            }
        }
    }

    #[test]
    fn uniform_matches_the_shader_layout() {
        // Six vec4<u32>, then 16 versions of four.
        assert_eq!(UNIFORM_SIZE, 6 * 16 + 16 * 4 * 16);
    }

    #[test]
    fn uniform_holds_each_version_in_order() {
        for header in headers().take(5) {
            let job = SearchJob::new(header, Target::MAX, 5, 10).unwrap();
            let one = JobUniform::new(&job, 8);
            assert_eq!(one.versions(), 1);
            assert_eq!(one.version[0].midstate, header.midstate().0);
            assert_eq!(one.version[1], VersionUniform::zeroed());
            for rolled in [0x0000_6000u32, 0x1e00_0000] {
                let rolled_job = job.with_rolled(rolled).unwrap();
                let uniform = JobUniform::new(&rolled_job, 8);
                let versions = rolled_job.versions();
                assert_eq!(uniform.versions() as usize, versions.len());
                let tail = header.tail_words();
                for (slot, version) in uniform.version.iter().zip(&versions) {
                    let midstate = Header { version: *version, ..header }.midstate().0;
                    assert_eq!(slot.midstate, midstate);
                    assert_eq!(slot.round3, round3_state(&midstate, &tail));
                }
                // Only the job's own fields differ with the version: tail, target, schedule.
                assert_eq!((uniform.tail, uniform.schedule, uniform.first_nonce), (one.tail, one.schedule, 5));
            }
        }
    }
}
