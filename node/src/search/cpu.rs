//! The CPU search backend: the nonce range handed out in chunks to N threads, each hashing
//! with the fastest kernel this CPU supports, plus the CPU feature report.
//!
//! Kernels (`Kernel`), slowest to fastest: `baseline` (midstate, then two full compressions
//! per nonce), `scalar` (the shared kernel on one `u32` lane: the per-job precomputations and
//! the early exit on the top hash word, see `kernel`), `avx2x8` (8 lanes), `avx512x16`
//! (16 lanes) and `shanix4` (four nonces in flight through the SHA extensions, see `shani`;
//! the fastest where present: 1.2-1.5 times `avx512x16` on Zen 4, BENCHMARKS.md). The SIMD
//! kernels are picked only after runtime detection of their features.
//! `HASHGRID_CPU_KERNEL` forces a kernel by name (for benchmarks); one this CPU lacks, or an
//! unknown name, falls back to the best. `device()` names the kernel that runs.
//!
//! Version-rolled jobs (k versions per nonce): the lane kernels (`scalar`, `avx2x8`,
//! `avx512x16`) can compute the first compression's schedule once per batch and share it
//! across the k versions (`kernel::scan_versions`); every kernel can also search the versions
//! one after another. `Kernel::shares_schedule` says which the backend does, and
//! `Kernel::best_rolled` which kernel takes version-rolled jobs, from the measurements in
//! BENCHMARKS.md ("Version rolling"); `HASHGRID_CPU_SHARE=0|1` overrides the first (for
//! benchmarks), `HASHGRID_CPU_KERNEL` forces one kernel for both kinds of job, and `device()`
//! names the kernel of each and says "shared schedule" when it is on.
//!
//! Invariants: a kernel reports a superset of the hits (every nonce whose top hash word is at
//! or below the target's); each candidate is finished with the full portable sha256d and
//! `state_meets`, then passed through `verify_hit`, so only true hits come back, sorted, and
//! none is missed. Every nonce of the job is hashed exactly once unless cancelled.

mod kernel;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod shani;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use self::kernel::JobConsts;
use super::{Backend, BackendKind, Hit, SearchError, SearchJob, SearchReport, verify_hit};

/// The environment variable that forces a kernel by name (`Kernel::name`).
pub const KERNEL_ENV: &str = "HASHGRID_CPU_KERNEL";
/// The environment variable that turns the shared schedule of version-rolled jobs on (`1`) or
/// off (`0`) where the kernel has one (`Kernel::has_shared_schedule`).
pub const SHARE_ENV: &str = "HASHGRID_CPU_SHARE";

/// All the cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What this CPU offers the search, as `hashgrid-node devices` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuFeatures {
    /// The threads the CPU backend uses by default.
    pub threads: usize,
    /// SHA extensions (SHA-NI): the `shanix4` kernel (with AVX2), and `sha2`'s verification.
    pub sha_ni: bool,
    pub avx2: bool,
    /// AVX-512 F and BW, what the 16-lane kernel needs.
    pub avx512: bool,
    /// `model name` from /proc/cpuinfo, or "unknown".
    pub model: String,
}

/// Detects this CPU's features.
pub fn cpu_features() -> CpuFeatures {
    CpuFeatures {
        threads: default_threads(),
        sha_ni: has_sha_ni(),
        avx2: Kernel::Avx2.is_supported(),
        avx512: Kernel::Avx512.is_supported(),
        model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
    }
}

#[cfg(target_arch = "x86_64")]
fn has_sha_ni() -> bool {
    std::arch::is_x86_feature_detected!("sha")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_sha_ni() -> bool {
    false
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|model| !model.is_empty())
}

/// A hashing kernel of the CPU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Midstate, then two full compressions per nonce (the benchmark baseline).
    Baseline,
    /// One lane with the per-job precomputations and the early exit; runs everywhere.
    Scalar,
    /// 8 lanes of AVX2.
    #[serde(rename = "avx2x8")]
    Avx2,
    /// 16 lanes of AVX-512 (F and BW).
    #[serde(rename = "avx512x16")]
    Avx512,
    /// Four nonces in flight through the SHA extensions (SHA-NI, with AVX2).
    #[serde(rename = "shanix4")]
    ShaNi,
}

impl Kernel {
    pub const ALL: [Kernel; 5] = [Kernel::Baseline, Kernel::Scalar, Kernel::Avx2, Kernel::Avx512, Kernel::ShaNi];

    /// The name `device()`, `HASHGRID_CPU_KERNEL` and the benchmarks use.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Baseline => "baseline",
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2x8",
            Kernel::Avx512 => "avx512x16",
            Kernel::ShaNi => "shanix4",
        }
    }

    /// Nonces hashed side by side.
    pub fn lanes(self) -> usize {
        match self {
            Kernel::Baseline | Kernel::Scalar => 1,
            Kernel::Avx2 => 8,
            Kernel::Avx512 => 16,
            Kernel::ShaNi => 4,
        }
    }

    /// Whether this CPU can run the kernel (runtime detection; cached by std).
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Baseline | Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512 | Kernel::ShaNi => false,
        }
    }

    /// The fastest kernel this CPU supports: SHA-NI first (measured ahead of AVX-512 on Zen 4,
    /// BENCHMARKS.md; `HASHGRID_CPU_KERNEL` picks another), then the widest SIMD.
    pub fn best() -> Kernel {
        [Kernel::ShaNi, Kernel::Avx512, Kernel::Avx2].into_iter().find(|k| k.is_supported()).unwrap_or(Kernel::Scalar)
    }

    /// Whether the kernel has a path that shares the first compression's schedule across the
    /// versions of a version-rolled job (the lane kernels; SHA-NI computes its schedule in
    /// the SHA unit, four words per `sha256msg1`/`sha256msg2` pair, and has none).
    pub fn has_shared_schedule(self) -> bool {
        matches!(self, Kernel::Scalar | Kernel::Avx2 | Kernel::Avx512)
    }

    /// Whether the backend shares the schedule by default: where it measured faster than
    /// searching the versions one by one (BENCHMARKS.md, "Version rolling").
    pub fn shares_schedule(self) -> bool {
        self.has_shared_schedule()
    }

    /// The fastest kernel for version-rolled jobs this CPU supports: AVX-512 with the schedule
    /// shared across versions measured ahead of SHA-NI there (BENCHMARKS.md, "Version
    /// rolling"), then as `best`.
    pub fn best_rolled() -> Kernel {
        [Kernel::Avx512, Kernel::ShaNi, Kernel::Avx2].into_iter().find(|k| k.is_supported()).unwrap_or(Kernel::Scalar)
    }

    /// `HASHGRID_CPU_KERNEL` if it names a kernel this CPU supports.
    pub fn from_env() -> Option<Kernel> {
        std::env::var(KERNEL_ENV).ok().and_then(|name| name.parse::<Kernel>().ok()).filter(|k| k.is_supported())
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown CPU kernel {s:?} (baseline, scalar, avx2x8, avx512x16, shanix4)"))
    }
}

/// Hashes nonces `first..first + count` of the job with `kernel` and appends the candidates
/// (a superset of the hits, in order) to `out`. An unsupported kernel panics.
fn scan(kernel: Kernel, job: &JobConsts, first: u32, count: u64, out: &mut Vec<u32>) {
    debug_assert!(first as u64 + count <= super::NONCE_SPACE);
    assert!(kernel.is_supported(), "CPU kernel {kernel} is not supported here");
    match kernel {
        Kernel::Baseline => scalar::scan_baseline(job, first, count, out),
        Kernel::Scalar => scalar::scan(job, first, count, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: `avx2::scan` only needs the CPU to have AVX2, which `is_supported` has
            // just detected at runtime.
            unsafe { avx2::scan(job, first, count, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            // SAFETY: `avx512::scan` only needs the CPU to have AVX-512 F and BW, which
            // `is_supported` has just detected at runtime.
            unsafe { avx512::scan(job, first, count, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::ShaNi => {
            // SAFETY: `shani::scan` only needs the CPU to have SHA-NI and AVX2, which
            // `is_supported` has just detected at runtime.
            unsafe { shani::scan(job, first, count, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2 | Kernel::Avx512 | Kernel::ShaNi => unreachable!("never supported off x86-64"),
    }
}

/// Hashes nonces `first..first + count` of every version (`jobs[j]` = version `j`) with
/// `kernel`, sharing the first compression's schedule when `share` (and the kernel can), and
/// appends version `j`'s candidates to `out[j]`.
fn scan_versions(kernel: Kernel, share: bool, jobs: &[JobConsts], first: u32, count: u64, out: &mut [Vec<u32>]) {
    assert!(kernel.is_supported(), "CPU kernel {kernel} is not supported here");
    match kernel {
        Kernel::Scalar if share => scalar::scan_versions(jobs, first, count, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if share => {
            // SAFETY: as in `scan`: AVX2 was detected at runtime.
            unsafe { avx2::scan_versions(jobs, first, count, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if share => {
            // SAFETY: as in `scan`: AVX-512 F and BW were detected at runtime.
            unsafe { avx512::scan_versions(jobs, first, count, out) }
        }
        _ => {
            for (job, out) in jobs.iter().zip(out.iter_mut()) {
                scan(kernel, job, first, count, out);
            }
        }
    }
}

/// Searches with `threads` OS threads and one kernel per kind of job (one version, or
/// several).
#[derive(Debug)]
pub struct CpuBackend {
    threads: usize,
    kernel: Kernel,
    /// The kernel of version-rolled jobs.
    rolled_kernel: Kernel,
    /// Version-rolled jobs share the first compression's schedule across versions.
    share: bool,
}

impl CpuBackend {
    /// A backend with the kernel `HASHGRID_CPU_KERNEL` forces, else the best for each kind of
    /// job (`Kernel::best`, `Kernel::best_rolled`).
    pub fn new(threads: usize) -> Result<Self, SearchError> {
        match Kernel::from_env() {
            Some(kernel) => Self::with_kernel(threads, kernel),
            None => {
                Ok(CpuBackend { rolled_kernel: Kernel::best_rolled(), ..Self::with_kernel(threads, Kernel::best())? }
                    .sharing_by_default())
            }
        }
    }

    /// A backend with `kernel` for every job, or with `Kernel::best()` if this CPU cannot run
    /// it.
    pub fn with_kernel(threads: usize, kernel: Kernel) -> Result<Self, SearchError> {
        if threads == 0 {
            return Err(SearchError::NoThreads);
        }
        let kernel = if kernel.is_supported() { kernel } else { Kernel::best() };
        Ok(CpuBackend { threads, kernel, rolled_kernel: kernel, share: false }.sharing_by_default())
    }

    /// Shares the schedule where the rolled kernel does by default, or as `HASHGRID_CPU_SHARE`
    /// says.
    fn sharing_by_default(self) -> Self {
        let share = match std::env::var(SHARE_ENV).as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => self.rolled_kernel.shares_schedule(),
        };
        self.sharing(share)
    }

    /// This backend sharing the schedule across versions (`share`, where the kernel can) or
    /// searching them one by one.
    pub fn sharing(self, share: bool) -> Self {
        CpuBackend { share: share && self.rolled_kernel.has_shared_schedule(), ..self }
    }

    /// Whether version-rolled jobs share the first compression's schedule.
    pub fn shares_schedule(&self) -> bool {
        self.share
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The kernel of version-rolled jobs.
    pub fn rolled_kernel(&self) -> Kernel {
        self.rolled_kernel
    }
}

/// Nonces a thread takes at a time; cancellation is checked between chunks (a few ms each).
const CHUNK: u64 = 1 << 16;

/// One thread's share: takes chunks from `next` until the job is done or cancelled, each
/// chunk's nonces under every version (`consts[j]` = version `j`). Returns the nonces hashed
/// (each under every version) and the hits found as (version index, nonce), finished with the
/// full hash, not yet verified.
fn worker(
    backend: &CpuBackend,
    job: &SearchJob,
    consts: &[JobConsts],
    next: &AtomicU64,
    cancel: &AtomicBool,
) -> (u64, Vec<(usize, u32)>) {
    let mut done = 0;
    let mut hits = Vec::new();
    let mut candidates = vec![Vec::new(); consts.len()];
    while !cancel.load(Ordering::Relaxed) {
        let offset = next.fetch_add(CHUNK, Ordering::Relaxed);
        if offset >= job.count {
            break;
        }
        let count = CHUNK.min(job.count - offset);
        let first = (job.start as u64 + offset) as u32;
        if let [one] = consts {
            scan(backend.kernel, one, first, count, &mut candidates[0]);
        } else {
            scan_versions(backend.rolled_kernel, backend.share, consts, first, count, &mut candidates);
        }
        for (j, (out, consts)) in candidates.iter_mut().zip(consts).enumerate() {
            hits.extend(out.drain(..).filter(|&nonce| consts.meets(nonce)).map(|nonce| (j, nonce)));
        }
        done += count;
    }
    (done, hits)
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device(&self) -> String {
        let plural = if self.threads == 1 { "" } else { "s" };
        let shared = if self.share { ", shared schedule" } else { "" };
        if self.rolled_kernel == self.kernel {
            format!("cpu ({} thread{plural}, {}{shared})", self.threads, self.kernel)
        } else {
            format!(
                "cpu ({} thread{plural}, {}; rolled versions: {}{shared})",
                self.threads, self.kernel, self.rolled_kernel
            )
        }
    }

    fn search(&mut self, job: &SearchJob, cancel: &AtomicBool) -> Result<SearchReport, SearchError> {
        let started = Instant::now();
        let versions: Vec<SearchJob> = job.versions().into_iter().map(|v| job.for_version(v)).collect();
        let consts: Vec<JobConsts> = versions.iter().map(|one| JobConsts::new(&one.header, &one.target)).collect();
        let next = AtomicU64::new(0);
        let workers = (self.threads as u64).min(job.count.div_ceil(CHUNK)) as usize;
        let work = || worker(self, job, &consts, &next, cancel);
        let results: Vec<(u64, Vec<(usize, u32)>)> = if workers <= 1 {
            vec![work()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
                handles.into_iter().map(|h| h.join().expect("search thread panicked")).collect()
            })
        };
        let hashes = results.iter().map(|r| r.0).sum::<u64>() * versions.len() as u64;
        let mut hits: Vec<Hit> =
            results.into_iter().flat_map(|r| r.1).filter_map(|(j, nonce)| verify_hit(&versions[j], nonce)).collect();
        hits.sort();
        Ok(SearchReport { hashes, elapsed: started.elapsed(), hits })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use hashgrid_common::sha256::{compress, header_tail_block, second_hash};
    use hashgrid_common::{CompactTarget, Header, Target};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const GENESIS_HEX: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
    const GENESIS_NONCE: u32 = 2_083_236_893;

    fn genesis() -> Header {
        Header::from_hex(GENESIS_HEX).unwrap()
    }

    /// The kernels this CPU runs (the SIMD ones are skipped, with a note, where absent).
    fn kernels() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| {
                let ok = k.is_supported();
                if !ok {
                    eprintln!("skipping CPU kernel {k}: not supported on this CPU");
                }
                ok
            })
            .collect()
    }

    fn search(kernel: Kernel, threads: usize, job: &SearchJob) -> SearchReport {
        let mut backend = CpuBackend::with_kernel(threads, kernel).unwrap();
        assert_eq!(backend.kernel(), kernel);
        backend.search(job, &AtomicBool::new(false)).unwrap()
    }

    /// The final state words of the sha256d of `header` with `nonce`, the portable way.
    fn reference_state(header: &Header, nonce: u32) -> [u32; 8] {
        let mut state = header.midstate().0;
        compress(&mut state, &header_tail_block(&header.tail_words(), nonce));
        second_hash(&state)
    }

    fn random_header(rng: &mut StdRng) -> Header {
        let mut bytes = [0u8; 80];
        rng.fill(&mut bytes[..]);
        Header::from_bytes(&bytes)
    }

    /// A target from its little-endian bytes (the maximum if they are all zero).
    fn target_from_le(bytes: [u8; 32]) -> Target {
        let hex: String = bytes.iter().rev().map(|b| format!("{b:02x}")).collect();
        Target::from_hex(&hex).unwrap_or(Target::MAX)
    }

    /// A target that makes the tests interesting: easy pool difficulties (many hits), a
    /// random top word, exactly some nonce's hash (or one below it, so the top words are
    /// equal and the lower words decide), or the maximum.
    fn random_target(rng: &mut StdRng, header: &Header, start: u32, count: u64) -> Target {
        match rng.random_range(0..5) {
            0 => Target::from_difficulty(2f64.powi(-rng.random_range(16..=32))).unwrap(),
            1 => {
                let mut bytes = [0u8; 32];
                rng.fill(&mut bytes[..]);
                bytes[31] = rng.random_range(0..4);
                target_from_le(bytes)
            }
            2 | 3 => {
                let nonce = (start as u64 + rng.random_range(0..count)) as u32;
                let mut bytes = header.with_nonce(nonce).block_hash().0;
                if rng.random_bool(0.5) {
                    // One less, with borrow.
                    for byte in bytes.iter_mut() {
                        let (value, borrow) = byte.overflowing_sub(1);
                        *byte = value;
                        if !borrow {
                            break;
                        }
                    }
                }
                target_from_le(bytes)
            }
            _ => Target::MAX,
        }
    }

    #[test]
    fn kernels_match_the_reference_on_random_jobs() {
        let mut rng = StdRng::seed_from_u64(0x6861_7368_6772_6964);
        let (mut total_hits, mut false_candidates) = (0, 0);
        for round in 0..48 {
            let header = random_header(&mut rng);
            let count: u64 = rng.random_range(1..=2500);
            let start = match round % 3 {
                0 => (super::super::NONCE_SPACE - count) as u32,
                _ => rng.random_range(0..=(super::super::NONCE_SPACE - count)) as u32,
            };
            let target = random_target(&mut rng, &header, start, count);
            let words = target.to_le_words();
            let nonces = (start..=(start as u64 + count - 1) as u32).collect::<Vec<_>>();
            let states: Vec<[u32; 8]> = nonces.iter().map(|&n| reference_state(&header, n)).collect();
            let top_candidates: Vec<u32> =
                nonces.iter().zip(&states).filter(|(_, s)| s[7].swap_bytes() <= words[7]).map(|(&n, _)| n).collect();
            let hits: Vec<u32> =
                nonces.iter().copied().filter(|&n| target.is_met_by(&header.with_nonce(n).block_hash())).collect();
            total_hits += hits.len();
            false_candidates += top_candidates.len() - hits.len();
            let consts = JobConsts::new(&header, &target);
            for kernel in kernels() {
                let mut out = Vec::new();
                scan(kernel, &consts, start, count, &mut out);
                if kernel == Kernel::Baseline {
                    assert_eq!(out, hits, "{kernel}, round {round}");
                } else {
                    assert_eq!(out, top_candidates, "{kernel} candidates, round {round}");
                }
                let job = SearchJob::new(header, target, start, count).unwrap();
                let report = search(kernel, 2, &job);
                assert_eq!(report.hashes, count);
                assert_eq!(report.hits.iter().map(|h| h.nonce).collect::<Vec<_>>(), hits, "{kernel}");
            }
        }
        // The jobs must have exercised both hits and candidates the lower words reject.
        assert!(total_hits > 1000 && false_candidates > 0, "{total_hits} hits, {false_candidates} false candidates");
    }

    /// Every kernel's candidates, against the portable hash, at the early exit's boundary:
    /// targets whose top word is exactly a nonce's top hash word (it must be a candidate),
    /// one below it (it must not be, unless another nonce's equal word makes it one), and one
    /// above. Batches start at odd offsets so that the boundary nonce lands in every lane.
    #[test]
    fn early_exit_boundary_on_the_top_word() {
        let mut rng = StdRng::seed_from_u64(0x0074_6f70_776f_7264);
        for round in 0..64 {
            let header = random_header(&mut rng);
            let count: u64 = rng.random_range(1..=70);
            let start = rng.random_range(0..=(super::super::NONCE_SPACE - count)) as u32;
            let nonces: Vec<u32> = (0..count).map(|i| start + i as u32).collect();
            let tops: Vec<u32> = nonces.iter().map(|&n| reference_state(&header, n)[7].swap_bytes()).collect();
            let pick = tops[rng.random_range(0..tops.len())];
            for top in [pick, pick.saturating_sub(1), pick.saturating_add(1)] {
                let mut bytes = [0xffu8; 32];
                bytes[28..].copy_from_slice(&top.to_le_bytes());
                let target = target_from_le(bytes);
                assert_eq!(target.to_le_words()[7], top);
                let expected: Vec<u32> =
                    nonces.iter().zip(&tops).filter(|(_, t)| **t <= top).map(|(&n, _)| n).collect();
                let consts = JobConsts::new(&header, &target);
                for kernel in kernels().into_iter().filter(|k| *k != Kernel::Baseline) {
                    let mut out = Vec::new();
                    scan(kernel, &consts, start, count, &mut out);
                    assert_eq!(out, expected, "{kernel}, round {round}, top {top:#010x}");
                }
            }
        }
    }

    /// The SHA-NI kernel against the scalar one on random headers and easy targets (many
    /// candidates), over ranges that end in every lane of a batch.
    #[test]
    fn sha_ni_matches_scalar_on_random_headers() {
        if !Kernel::ShaNi.is_supported() {
            eprintln!("skipping: this CPU has no SHA-NI");
            return;
        }
        let mut rng = StdRng::seed_from_u64(0x7368_615f_6e69);
        let mut candidates = 0;
        for round in 0..200 {
            let header = random_header(&mut rng);
            let target = Target::from_difficulty(2f64.powi(-rng.random_range(26..=32))).unwrap();
            let count: u64 = rng.random_range(1..=600);
            let start = rng.random_range(0..=(super::super::NONCE_SPACE - count)) as u32;
            let consts = JobConsts::new(&header, &target);
            let (mut scalar, mut sha) = (Vec::new(), Vec::new());
            scan(Kernel::Scalar, &consts, start, count, &mut scalar);
            scan(Kernel::ShaNi, &consts, start, count, &mut sha);
            assert_eq!(sha, scalar, "round {round}");
            candidates += scalar.len();
        }
        assert!(candidates > 1000, "{candidates} candidates");
    }

    /// Random rolled bits inside the BIP 320 mask: 1 to `MAX_ROLLED_BITS` of them.
    fn random_rolled(rng: &mut StdRng) -> u32 {
        let bits = rng.random_range(1..=crate::search::MAX_ROLLED_BITS);
        let mut rolled = 0u32;
        while rolled.count_ones() < bits {
            rolled |= 1 << rng.random_range(13..29);
        }
        rolled
    }

    /// Version-rolled jobs: every kernel, sharing the first compression's schedule across the
    /// versions and searching them one by one, against the portable hash of each version, on
    /// random headers and versions across the mask; and the backend's hits and hash count.
    #[test]
    fn version_rolled_jobs_match_the_reference_per_version() {
        let mut rng = StdRng::seed_from_u64(0x7665_7273_696f_6e73);
        let (mut candidates, mut total_hits) = (0, 0);
        for round in 0..24 {
            let header = random_header(&mut rng);
            let rolled = random_rolled(&mut rng);
            let count: u64 = rng.random_range(1..=400);
            let start = rng.random_range(0..=(super::super::NONCE_SPACE - count)) as u32;
            let target = Target::from_difficulty(2f64.powi(-rng.random_range(24..=30))).unwrap();
            let job = SearchJob::new(header, target, start, count).unwrap().with_rolled(rolled).unwrap();
            let versions = job.versions();
            assert_eq!(versions.len() as u64, job.version_count());
            let consts: Vec<JobConsts> =
                versions.iter().map(|&v| JobConsts::new(&Header { version: v, ..header }, &target)).collect();
            let nonces: Vec<u32> = (0..count).map(|i| start + i as u32).collect();
            let top = target.to_le_words()[7];
            let expected: Vec<Vec<u32>> = versions
                .iter()
                .map(|&v| {
                    let h = Header { version: v, ..header };
                    nonces.iter().copied().filter(|&n| reference_state(&h, n)[7].swap_bytes() <= top).collect()
                })
                .collect();
            let mut hits: Vec<(u32, u32)> = versions
                .iter()
                .flat_map(|&v| {
                    let h = Header { version: v, ..header };
                    nonces
                        .iter()
                        .filter(move |&&n| target.is_met_by(&h.with_nonce(n).block_hash()))
                        .map(move |&n| (n, v))
                })
                .collect();
            hits.sort();
            candidates += expected.iter().map(Vec::len).sum::<usize>();
            total_hits += hits.len();
            for kernel in kernels().into_iter().filter(|k| *k != Kernel::Baseline) {
                for share in [false, true] {
                    let mut out = vec![Vec::new(); versions.len()];
                    scan_versions(kernel, share, &consts, start, count, &mut out);
                    assert_eq!(out, expected, "{kernel}, share {share}, round {round}, rolled {rolled:#x}");
                }
            }
            for kernel in kernels() {
                for share in [false, true] {
                    let mut backend = CpuBackend::with_kernel(2, kernel).unwrap().sharing(share);
                    let report = backend.search(&job, &AtomicBool::new(false)).unwrap();
                    assert_eq!(report.hashes, count * versions.len() as u64);
                    let found: Vec<(u32, u32)> = report.hits.iter().map(|h| (h.nonce, h.version)).collect();
                    assert_eq!(found, hits, "{kernel}, share {share}, round {round}");
                }
            }
        }
        assert!(candidates > 500 && total_hits > 100, "{candidates} candidates, {total_hits} hits");
    }

    #[test]
    fn rolled_bits_outside_the_mask_or_too_many_are_refused() {
        let job = SearchJob::new(genesis(), Target::MAX, 0, 10).unwrap();
        assert!(matches!(job.with_rolled(0x1000), Err(SearchError::BadRolledBits(0x1000))), "bit 12: outside BIP 320");
        assert!(matches!(job.with_rolled(0x3e000), Err(SearchError::BadRolledBits(_))), "five bits");
        let rolled = job.with_rolled(0x1e000).unwrap();
        assert_eq!((rolled.version_count(), rolled.hashes()), (16, 160));
        assert_eq!(rolled.versions()[0], genesis().version);
    }

    #[test]
    fn finds_the_genesis_nonce() {
        let header = genesis();
        let target = Target::from_compact(CompactTarget(0x1d00ffff)).unwrap();
        for kernel in kernels() {
            let job = SearchJob::new(header.with_nonce(0), target, GENESIS_NONCE - 1000, 3001).unwrap();
            let report = search(kernel, 2, &job);
            assert_eq!(report.hashes, 3001);
            assert_eq!(report.hits.len(), 1, "{kernel}");
            assert_eq!(report.hits[0].nonce, GENESIS_NONCE);
            assert_eq!(report.hits[0].hash, header.block_hash());
        }
    }

    #[test]
    fn easy_target_hits_match_brute_force() {
        // Difficulty 2^-20: about one hit per 4096 nonces. Two chunks (two threads), an odd
        // count, the range ending at the last nonce.
        let header = genesis();
        let target = Target::from_difficulty(1.0 / 1_048_576.0).unwrap();
        let count = CHUNK + 12_345;
        let start = (super::super::NONCE_SPACE - count) as u32;
        let expected: Vec<u32> =
            (start..=u32::MAX).filter(|&n| target.is_met_by(&header.with_nonce(n).block_hash())).collect();
        assert!(expected.len() >= 10, "{} hits", expected.len());
        for kernel in kernels() {
            let job = SearchJob::new(header, target, start, count).unwrap();
            let report = search(kernel, 3, &job);
            assert_eq!(report.hashes, count);
            assert_eq!(report.hits.iter().map(|h| h.nonce).collect::<Vec<_>>(), expected, "{kernel}");
        }
    }

    #[test]
    fn every_count_and_the_last_nonce() {
        // The maximum target is met by every hash, so each hashed lane must be reported once
        // and no lane past the range (or wrapped past nonce 2^32 - 1) may be.
        let header = genesis();
        for kernel in kernels() {
            for count in 1..=40u64 {
                for start in [0, 1000, (super::super::NONCE_SPACE - count) as u32] {
                    let job = SearchJob::new(header, Target::MAX, start, count).unwrap();
                    let report = search(kernel, 2, &job);
                    let nonces: Vec<u32> = report.hits.iter().map(|h| h.nonce).collect();
                    let expected: Vec<u32> = (0..count).map(|i| start + i as u32).collect();
                    assert_eq!(report.hashes, count);
                    assert_eq!(nonces, expected, "{kernel}, start {start}, count {count}");
                }
            }
        }
    }

    #[test]
    fn cancel_before_start_hashes_nothing() {
        let job = SearchJob::new(genesis(), Target::DIFFICULTY_1, 0, 1 << 30).unwrap();
        for kernel in kernels() {
            let mut backend = CpuBackend::with_kernel(2, kernel).unwrap();
            let report = backend.search(&job, &AtomicBool::new(true)).unwrap();
            assert_eq!(report.hashes, 0);
            assert!(report.hits.is_empty());
        }
    }

    #[test]
    fn cancel_mid_search_stops_early() {
        let job = SearchJob::new(genesis(), Target::DIFFICULTY_1, 0, super::super::NONCE_SPACE).unwrap();
        let cancel = AtomicBool::new(false);
        let mut backend = CpuBackend::new(2).unwrap();
        let report = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                cancel.store(true, Ordering::Relaxed);
            });
            backend.search(&job, &cancel).unwrap()
        });
        assert!(report.hashes > 0 && report.hashes < job.count, "{}", report.hashes);
        assert_eq!(report.hashes % CHUNK, 0);
    }

    #[test]
    fn kernel_names_and_selection() {
        for kernel in Kernel::ALL {
            assert_eq!(kernel.name().parse::<Kernel>(), Ok(kernel));
            assert_eq!(serde_json::to_string(&kernel).unwrap(), format!("\"{}\"", kernel.name()));
        }
        assert!("sse9".parse::<Kernel>().is_err());
        assert!(Kernel::best().is_supported());
        let backend = CpuBackend::with_kernel(1, Kernel::Scalar).unwrap().sharing(false);
        assert_eq!(backend.device(), "cpu (1 thread, scalar)");
        assert_eq!(backend.sharing(true).device(), "cpu (1 thread, scalar, shared schedule)");
        assert!(matches!(CpuBackend::new(0), Err(SearchError::NoThreads)));
    }

    #[test]
    fn cpu_features_are_consistent() {
        let features = cpu_features();
        assert!(features.threads >= 1);
        assert!(!features.model.is_empty());
        assert_eq!(features.avx2, Kernel::Avx2.is_supported());
        assert_eq!(features.avx512, Kernel::Avx512.is_supported());
        let json = serde_json::to_value(&features).unwrap();
        assert!(json["model"].is_string() && json["sha_ni"].is_boolean());
    }
}
