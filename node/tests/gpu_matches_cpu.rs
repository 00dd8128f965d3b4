//! Differential tests of the GPU search backend: on random headers, targets and ranges the
//! GPU (optimized and reference shaders) must report exactly the hits of the CPU backend,
//! including result-buffer overflow, ranges ending at nonce 4294967295, partial workgroups
//! targets equal to a hash in their top words, and version-rolled ranges (every nonce under
//! each of k versions), on the kernel that shares the schedule across versions and one version
//! after another.
//!
//! Without a GPU or Vulkan adapter (hardware or Mesa lavapipe) each test prints
//! "SKIPPED: no GPU/Vulkan adapter" and passes, unless `HASHGRID_REQUIRE_GPU=1`.
//! Work per test is kept to a few million nonces: lavapipe on a small CPU is slow.

use std::sync::atomic::AtomicBool;

use hashgrid_common::{CompactTarget, Hash256, Header, Target};
use hashgrid_node::search::cpu::CpuBackend;
use hashgrid_node::search::gpu::{self, GpuBackend, GpuOptions, ShaderVariant};
use hashgrid_node::search::{Backend, BackendKind, Hit, SearchError, SearchJob, SearchReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GENESIS_HEX: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
const GENESIS_NONCE: u32 = 2_083_236_893;

fn require_gpu() -> bool {
    std::env::var("HASHGRID_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A GPU backend (software adapters allowed), or `None` after printing why the test is skipped.
fn open_gpu(options: GpuOptions) -> Option<GpuBackend> {
    match GpuBackend::open_with(None, true, options) {
        Ok(gpu) => Some(gpu),
        Err(SearchError::NoAdapter(hint)) if !require_gpu() => {
            eprintln!("SKIPPED: no GPU/Vulkan adapter{hint}");
            None
        }
        Err(error) => panic!("opening the GPU backend: {error}"),
    }
}

fn optimized() -> Option<GpuBackend> {
    open_gpu(GpuOptions::default())
}

/// The optimized shader with rolled ranges on `search_rolled` (the default), or one version
/// after another.
fn sharing(share: bool) -> Option<GpuBackend> {
    open_gpu(GpuOptions { share_schedule: share, ..GpuOptions::default() })
}

fn cpu() -> CpuBackend {
    CpuBackend::new(2).unwrap()
}

fn search(backend: &mut dyn Backend, job: &SearchJob) -> SearchReport {
    let report = backend.search(job, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.hashes, job.hashes(), "{} hashed the whole range", backend.device());
    assert!(
        report.hits.windows(2).all(|w| (w[0].nonce, w[0].version) < (w[1].nonce, w[1].version)),
        "hits sorted, no duplicates"
    );
    let versions = job.versions();
    for hit in &report.hits {
        assert!(job.start as u64 <= hit.nonce as u64 && hit.nonce as u64 <= job.last_nonce() as u64);
        assert!(versions.contains(&hit.version), "a hit under one of the job's versions");
    }
    report
}

/// Searches `job` on the GPU and the CPU and checks both report the same hits; returns their
/// nonces.
fn assert_same_hits(gpu: &mut GpuBackend, job: &SearchJob) -> Vec<u32> {
    same_hits(gpu, job).iter().map(|h| h.nonce).collect()
}

/// Searches `job` on the GPU and the CPU and checks both report the same hits; returns them.
fn same_hits(gpu: &mut GpuBackend, job: &SearchJob) -> Vec<Hit> {
    let on_gpu = search(gpu, job);
    let on_cpu = search(&mut cpu(), job);
    assert_eq!(
        on_gpu.hits,
        on_cpu.hits,
        "GPU and CPU disagree on {}..={} of {} with target {}",
        job.start,
        job.last_nonce(),
        job.header,
        job.target
    );
    on_gpu.hits
}

fn random_header(rng: &mut StdRng) -> Header {
    let mut bytes = [0u8; 80];
    rng.fill(&mut bytes[..]);
    Header::from_bytes(&bytes)
}

/// A target met by about one hash in `2^bits`.
fn one_in_2_pow(bits: u32) -> Target {
    Target::from_difficulty(2f64.powi(bits as i32 - 32)).unwrap()
}

/// The target whose value is the hash `le` (little-endian bytes), if not zero.
fn target_from_le_bytes(le: [u8; 32]) -> Option<Target> {
    let hex: String = le.iter().rev().map(|b| format!("{b:02x}")).collect();
    Target::from_hex(&hex).ok()
}

#[test]
fn random_headers_and_targets_match_cpu() {
    let Some(mut gpu) = optimized() else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut total_hits = 0;
    for _ in 0..12 {
        let header = random_header(&mut rng);
        let target = one_in_2_pow(rng.random_range(8..=16));
        let count = rng.random_range(1..=120_000u64);
        let start = rng.random_range(0..=(u32::MAX as u64 + 1 - count)) as u32;
        let job = SearchJob::new(header, target, start, count).unwrap();
        total_hits += assert_same_hits(&mut gpu, &job).len();
    }
    assert!(total_hits > 100, "the targets are easy enough to give hits ({total_hits})");
}

#[test]
fn finds_the_genesis_nonce() {
    let Some(mut gpu) = optimized() else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    let target = Target::from_compact(CompactTarget(0x1d00ffff)).unwrap();
    let job = SearchJob::new(header.with_nonce(0), target, GENESIS_NONCE - 150_000, 300_001).unwrap();
    let hits = assert_same_hits(&mut gpu, &job);
    assert_eq!(hits, vec![GENESIS_NONCE]);
    let report = gpu.search(&job, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.hits[0].hash, header.block_hash());
    assert_eq!(report.hits[0].hash.to_string(), "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
}

#[test]
fn range_ending_at_the_last_nonce() {
    let Some(mut gpu) = optimized() else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    let job = SearchJob::new(header, one_in_2_pow(10), u32::MAX - 99_999, 100_000).unwrap();
    let hits = assert_same_hits(&mut gpu, &job);
    assert!(hits.len() > 20);
    // Single nonces at the very end, with a target every hash meets.
    for count in [1u64, 2, 255, 257] {
        let start = (1u64 << 32) - count;
        let job = SearchJob::new(header, Target::MAX, start as u32, count).unwrap();
        let hits = assert_same_hits(&mut gpu, &job);
        assert_eq!(hits.len() as u64, count);
        assert_eq!(hits.last(), Some(&u32::MAX));
    }
}

#[test]
fn counts_that_are_not_a_multiple_of_the_workgroup_size() {
    let Some(mut gpu) = optimized() else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let wg = u64::from(gpu::WORKGROUP_SIZE);
    for count in [1, 2, wg - 1, wg + 1, 3 * wg + 17, 65_535, 65_537, 200_003] {
        let header = random_header(&mut rng);
        let start = rng.random::<u32>() / 2;
        // Every hash meets the target for short ranges, so a missed tail shows up at once.
        let target = if count <= 1024 { Target::MAX } else { one_in_2_pow(8) };
        let job = SearchJob::new(header, target, start, count).unwrap();
        let hits = assert_same_hits(&mut gpu, &job);
        if count <= 1024 {
            assert_eq!(hits.len() as u64, count);
        }
    }
}

#[test]
fn easy_target_with_many_hits() {
    let Some(mut gpu) = optimized() else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    // About one hash in 16 meets it: ~25,000 hits.
    let job = SearchJob::new(header, one_in_2_pow(4), 1_000_000, 400_000).unwrap();
    let hits = assert_same_hits(&mut gpu, &job);
    assert!(hits.len() > 20_000, "{} hits", hits.len());
}

#[test]
fn result_buffer_overflow_is_searched_again() {
    let options = GpuOptions { result_capacity: 8, ..GpuOptions::default() };
    let Some(mut gpu) = open_gpu(options) else { return };
    assert_eq!(gpu.result_capacity(), 8);
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    // ~3,000 hits over batches of tens of thousands of nonces: every batch overflows.
    let header = random_header(&mut rng);
    let job = SearchJob::new(header, one_in_2_pow(5), 12_345, 100_000).unwrap();
    let hits = assert_same_hits(&mut gpu, &job);
    assert!(hits.len() > 2_000, "{} hits", hits.len());
    // Every nonce a hit: pieces must shrink to the capacity itself.
    let job = SearchJob::new(header, Target::MAX, u32::MAX - 2_999, 3_000).unwrap();
    let hits = assert_same_hits(&mut gpu, &job);
    assert_eq!(hits.len(), 3_000);
}

#[test]
fn targets_equal_to_a_hash_in_their_top_words() {
    // Random hashes almost never share a top word with the target, so build targets from a
    // known hash: equal to it, or one off in one word with all the words above it equal.
    let Some(mut gpu) = optimized() else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    for _ in 0..3 {
        let header = random_header(&mut rng);
        let nonce = rng.random_range(1_000..u32::MAX - 1_000);
        let Hash256(hash) = header.with_nonce(nonce).block_hash();
        let mut cases = vec![(hash, true)];
        for word in 0..8 {
            let at = 4 * word;
            let value = u32::from_le_bytes(hash[at..at + 4].try_into().unwrap());
            for (delta, met) in [(1i64, true), (-1, false)] {
                let Some(changed) = u32::try_from(value as i64 + delta).ok() else { continue };
                let mut le = hash;
                le[at..at + 4].copy_from_slice(&changed.to_le_bytes());
                cases.push((le, met));
            }
        }
        for (le, met) in cases {
            let Some(target) = target_from_le_bytes(le) else { continue };
            let job = SearchJob::new(header, target, nonce - 300, 601).unwrap();
            let hits = assert_same_hits(&mut gpu, &job);
            assert_eq!(hits.contains(&nonce), met, "nonce {nonce} against target {target}");
        }
    }
}

#[test]
fn optimized_shader_matches_reference_shader() {
    let Some(mut fast) = optimized() else { return };
    let reference = GpuOptions { shader: ShaderVariant::Reference, ..GpuOptions::default() };
    let Some(mut plain) = open_gpu(reference) else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    for _ in 0..6 {
        let header = random_header(&mut rng);
        let target = one_in_2_pow(rng.random_range(6..=12));
        let count = rng.random_range(1..=60_000u64);
        let start = rng.random_range(0..=(u32::MAX as u64 + 1 - count)) as u32;
        let job = SearchJob::new(header, target, start, count).unwrap();
        let a = search(&mut fast, &job);
        let b = search(&mut plain, &job);
        assert_eq!(a.hits, b.hits, "optimized and reference shaders disagree on {job:?}");
        assert!(!a.hits.is_empty() || count < 5_000);
    }
    // The reference shader against the CPU on a range with the genesis nonce.
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    let target = Target::from_compact(CompactTarget(0x1d00ffff)).unwrap();
    let job = SearchJob::new(header, target, GENESIS_NONCE - 5_000, 10_000).unwrap();
    assert_eq!(assert_same_hits(&mut plain, &job), vec![GENESIS_NONCE]);
}

#[test]
fn cancelled_search_reports_no_work() {
    let Some(mut gpu) = optimized() else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    let job = SearchJob::new(header, Target::DIFFICULTY_1, 0, 1 << 32).unwrap();
    let report = gpu.search(&job, &AtomicBool::new(true)).unwrap();
    assert_eq!(report.hashes, 0);
    assert!(report.hits.is_empty());
}

#[test]
fn cancel_during_a_search_stops_between_batches() {
    let Some(mut gpu) = optimized() else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    // An easy target, so the hits of the batches done are checked too.
    let job = SearchJob::new(header, one_in_2_pow(12), 0, 1 << 32).unwrap();
    let cancel = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        gpu.search(&job, &cancel).unwrap()
    });
    assert!(started.elapsed().as_secs() < 30, "stopped soon after the cancel");
    assert!(report.hashes < job.count);
    // Whatever was hashed is reported in full: nonces are handed out in order, so the hits
    // are those of the first `hashes` nonces.
    let done = SearchJob::new(header, job.target, 0, report.hashes.max(1)).unwrap();
    if report.hashes > 0 {
        assert_eq!(report.hits, search(&mut cpu(), &done).hits);
    }
}

#[test]
fn backend_identity_and_adapter_selection() {
    let Some(gpu) = optimized() else { return };
    assert_eq!(gpu.kind(), BackendKind::Gpu);
    assert_eq!(gpu.device().ends_with(" (software)"), gpu.is_software());
    assert!(gpu.device().starts_with(&gpu.adapter().name));
    let adapters = gpu::list_adapters();
    assert!(!adapters.is_empty());
    assert!(adapters.iter().enumerate().all(|(i, a)| a.index == i));
    assert!(matches!(GpuBackend::open(Some("no such adapter, surely"), true), Err(SearchError::UnknownAdapter(_))));
    assert!(matches!(GpuBackend::open(Some("4096"), true), Err(SearchError::UnknownAdapter(_))));
    // By index and by name, whatever case.
    let by_index = GpuBackend::open(Some(&gpu.adapter().index.to_string()), true).unwrap();
    assert_eq!(by_index.adapter().name, gpu.adapter().name);
    let by_name = GpuBackend::open(Some(&gpu.adapter().name.to_uppercase()), true).unwrap();
    assert_eq!(by_name.adapter().name, gpu.adapter().name);
    // A number that is no adapter's index is part of a name ("RTX 3090", "256 bits").
    let number = gpu
        .adapter()
        .name
        .split(|c: char| !c.is_ascii_digit())
        .find(|digits| digits.parse::<usize>().is_ok_and(|n| n >= adapters.len()));
    if let Some(number) = number {
        let by_number = GpuBackend::open(Some(number), true).unwrap();
        assert!(by_number.adapter().name.contains(number));
    }
    if adapters.iter().all(|a| a.software) {
        // Software adapters only when allowed.
        assert!(matches!(GpuBackend::open(None, false), Err(SearchError::NoAdapter(_))));
        let name = &gpu.adapter().name;
        assert!(matches!(GpuBackend::open(Some(name), false), Err(SearchError::NoAdapter(_))));
    }
}

/// Slices searched back to back with `search_ahead`, as the node's worker does: each call
/// announces the next, the GPU queues that slice's first batch before returning, and the
/// hits of every slice are exactly the CPU's. Announcements that turn out wrong (another
/// header, another start, a shorter range, a cancelled search) are discarded, never searched
/// in place of the real slice.
#[test]
fn slices_announced_ahead_match_cpu() {
    let Some(mut gpu) = optimized() else { return };
    let mut rng = StdRng::seed_from_u64(0xa4ead);
    let target = one_in_2_pow(12);
    let header = random_header(&mut rng);
    let slice = |start: u32, count: u64| SearchJob::new(header, target, start, count).unwrap();
    let cancel = AtomicBool::new(false);

    // An honest chain of slices: each one begins where the last announced.
    let mut cpu = cpu();
    let count = 3 * gpu.batch_size() + 100;
    for i in 0..4u32 {
        let job = slice(i * count as u32, count);
        let next = slice((i + 1) * count as u32, count);
        let report = gpu.search_ahead(&job, Some(&next), &cancel).unwrap();
        assert_eq!(report.hashes, job.count);
        assert_eq!(report.hits, search(&mut cpu, &job).hits, "slice {i}");
        assert!(report.hits.len() > 2, "the target gives a few hits per slice");
        assert!(gpu.has_queued_ahead(), "slice {i} queued the next one's first batch");
    }

    // The announced slice never comes: another header, another start, a shorter range.
    let other = random_header(&mut rng);
    let surprises = [
        SearchJob::new(other, target, 4 * count as u32, count).unwrap(),
        slice(5 * count as u32 + 1, count),
        slice(6 * count as u32, 10),
    ];
    for (i, job) in surprises.iter().enumerate() {
        let report = gpu.search_ahead(job, Some(&slice(100_000_000, count)), &cancel).unwrap();
        assert_eq!(report.hashes, job.count);
        assert_eq!(report.hits, search(&mut cpu, job).hits, "surprise {i}");
    }

    // A plain search after an announcement, and a cancelled one, are exact too.
    let job = slice(100_000_000, count);
    assert_eq!(search(&mut gpu, &job).hits, search(&mut cpu, &job).hits);
    let cancelled = AtomicBool::new(true);
    let report = gpu.search_ahead(&slice(7 * count as u32, count), Some(&job), &cancelled).unwrap();
    assert_eq!(report.hashes, 0);
    assert!(!gpu.has_queued_ahead(), "a cancelled search queues nothing");
    assert_eq!(search(&mut gpu, &job).hits, search(&mut cpu, &job).hits);
}

/// Version-rolled ranges: every nonce under each of k = 2, 4, 8 versions, on the GPU with the
/// schedule shared (the default) and one version after another, on the CPU with the schedule
/// shared (and not): the same hits, each under its own version; and slices announced ahead
/// across versions and ranges.
#[test]
fn version_rolled_ranges_match_cpu() {
    let Some(mut gpu) = optimized() else { return };
    let mut rng = StdRng::seed_from_u64(0x0076_726f_6c6c);
    let mut cpu_one_by_one = cpu().sharing(false);
    let Some(mut gpu_one_by_one) = sharing(false) else { return };
    let mut versions_hit = std::collections::BTreeSet::new();
    for (round, bits) in [1u32, 2, 3, 2].into_iter().enumerate() {
        let header = random_header(&mut rng);
        let mut rolled = 0u32;
        while rolled.count_ones() < bits {
            rolled |= 1 << rng.random_range(13..29);
        }
        let count = rng.random_range(20_000..60_000u64);
        let start = rng.random_range(0..=(u32::MAX as u64 - count)) as u32;
        let job = SearchJob::new(header, one_in_2_pow(10), start, count).unwrap().with_rolled(rolled).unwrap();
        let on_gpu = search(&mut gpu, &job);
        let on_cpu = search(&mut cpu(), &job);
        assert_eq!(on_gpu.hits, on_cpu.hits, "round {round}: GPU and CPU disagree, rolled {rolled:#x}");
        assert_eq!(search(&mut gpu_one_by_one, &job).hits, on_cpu.hits, "round {round}: GPU one by one");
        assert_eq!(search(&mut cpu_one_by_one, &job).hits, on_cpu.hits, "round {round}: shared schedule");
        versions_hit.extend(on_gpu.hits.iter().map(|h| h.version));
    }
    assert!(versions_hit.len() > 10, "hits under many versions: {}", versions_hit.len());

    // Slices announced ahead: the next slice of a rolled range, then a range of one version.
    let header = random_header(&mut rng);
    let target = one_in_2_pow(11);
    let rolled = SearchJob::new(header, target, 0, 30_000).unwrap().with_rolled(0x6000).unwrap();
    let cancel = AtomicBool::new(false);
    let plain = SearchJob::new(header, target, 30_000, 30_000).unwrap();
    for (job, next) in [(rolled, Some(rolled.slice(0, 10_000))), (rolled.slice(0, 10_000), Some(plain)), (plain, None)]
    {
        let report = gpu.search_ahead(&job, next.as_ref(), &cancel).unwrap();
        assert_eq!(report.hashes, job.hashes());
        assert_eq!(report.hits, search(&mut cpu(), &job).hits);
    }
}

/// `bits` random bits of the BIP 320 mask (13..=28).
fn rolled_bits(rng: &mut StdRng, bits: u32) -> u32 {
    let mut rolled = 0u32;
    while rolled.count_ones() < bits {
        rolled |= 1 << rng.random_range(13..29);
    }
    rolled
}

/// The `search_rolled` kernel (the first hash's schedule shared across versions) against the
/// CPU for k = 2, 4, 8: random ranges with hits under every version, targets equal to the
/// hash of a non-first version (met) and one below it (not met), and ranges at both ends of
/// the nonce space where every hash is a hit (more than the result buffer holds, so the
/// overflow re-search runs on rolled batches too). k = 1 runs the single-version kernel.
#[test]
fn shared_schedule_kernel_matches_cpu() {
    let Some(mut gpu) = sharing(true) else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0013);
    let plain = SearchJob::new(random_header(&mut rng), one_in_2_pow(8), 0, 1_000).unwrap();
    assert!(!gpu.shares_schedule(&plain), "k = 1: the single-version kernel");
    for bits in [1u32, 2, 3] {
        let header = random_header(&mut rng);
        let rolled = rolled_bits(&mut rng, bits);
        let k = 1u64 << bits;
        let start = rng.random_range(0..u32::MAX - 20_000);
        let job = SearchJob::new(header, one_in_2_pow(9), start, 12_000).unwrap().with_rolled(rolled).unwrap();
        assert!(gpu.shares_schedule(&job), "k = {k}: the shared-schedule kernel");
        let hits = same_hits(&mut gpu, &job);
        let versions = job.versions();
        for version in &versions {
            assert!(hits.iter().any(|h| h.version == *version), "k = {k}: a hit under {version:#x}");
        }

        // Exact comparisons under a version other than the first: the target is that hash
        // (met), or that hash with its lowest word one less (not met).
        let version = versions[rng.random_range(1..versions.len())];
        let nonce = rng.random_range(1_000..u32::MAX - 1_000);
        let Hash256(hash) = Header { version, ..header }.with_nonce(nonce).block_hash();
        let mut cases = vec![(hash, true)];
        if let Some(lowest) = hash[0].checked_sub(1) {
            let mut below = hash;
            below[0] = lowest;
            cases.push((below, false));
        }
        for (le, met) in cases {
            let Some(target) = target_from_le_bytes(le) else { continue };
            let job = SearchJob::new(header, target, nonce - 200, 401).unwrap().with_rolled(rolled).unwrap();
            let hits = same_hits(&mut gpu, &job);
            let found = hits.iter().any(|h| (h.nonce, h.version) == (nonce, version));
            assert_eq!(found, met, "k = {k}: nonce {nonce} under {version:#x} against {target}");
        }

        // Both ends of the nonce space, every hash a hit.
        for (start, count) in [(u32::MAX - 256, 257u64), (0, 255)] {
            let job = SearchJob::new(header, Target::MAX, start, count).unwrap().with_rolled(rolled).unwrap();
            let hits = same_hits(&mut gpu, &job);
            assert_eq!(hits.len() as u64, count * k, "k = {k}: every nonce under every version");
            assert_eq!(hits.last().map(|h| h.nonce), Some(job.last_nonce()));
        }
    }
}

/// Rolled ranges with a result buffer of 8 hits: k = 4 shares the schedule and its overflowing
/// batches are split down to pieces of two nonces; k = 16 would overflow on one nonce, so it
/// is searched one version after another. Both exact. And the same rolled job one version
/// after another (`share_schedule: false`) gives the same hits.
#[test]
fn shared_schedule_overflow_and_fallbacks() {
    let options = GpuOptions { result_capacity: 8, ..GpuOptions::default() };
    let Some(mut small) = open_gpu(options) else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0014);
    let header = random_header(&mut rng);
    let k4 = SearchJob::new(header, Target::MAX, 1_000, 600).unwrap().with_rolled(rolled_bits(&mut rng, 2)).unwrap();
    assert!(small.shares_schedule(&k4));
    assert_eq!(same_hits(&mut small, &k4).len(), 2_400);
    let k16 = SearchJob::new(header, Target::MAX, 7, 50).unwrap().with_rolled(rolled_bits(&mut rng, 4)).unwrap();
    assert!(!small.shares_schedule(&k16), "16 hits of one nonce do not fit 8");
    assert_eq!(same_hits(&mut small, &k16).len(), 800);

    let Some(mut shared) = sharing(true) else { return };
    let Some(mut one_by_one) = sharing(false) else { return };
    let job = SearchJob::new(header, one_in_2_pow(8), 77_777, 20_000).unwrap().with_rolled(0x0001_e000).unwrap();
    assert!(!one_by_one.shares_schedule(&job));
    let hits = search(&mut one_by_one, &job).hits;
    assert!(hits.len() > 500, "{} hits", hits.len());
    assert_eq!(search(&mut shared, &job).hits, hits);
}

/// Slices of rolled ranges announced ahead on the shared-schedule kernel: the next slice's
/// first batch is queued (and used); an announcement of other rolled bits for the same header
/// and start is discarded, not taken as the beginning of a job with more versions.
#[test]
fn rolled_slices_announced_ahead_match_cpu() {
    let Some(mut gpu) = sharing(true) else { return };
    let mut rng = StdRng::seed_from_u64(0x5eed_0015);
    let header = random_header(&mut rng);
    let cancel = AtomicBool::new(false);
    // Two batches and a bit per slice of four versions (the batch size counts hashes).
    let count = gpu.batch_size() / 2 + 10;
    let rolled = SearchJob::new(header, one_in_2_pow(10), 0, 4 * count).unwrap().with_rolled(0x0000_6000).unwrap();
    let mut cpu = cpu();
    for i in 0..3 {
        let (job, next) = (rolled.slice(i * count, count), rolled.slice((i + 1) * count, count));
        let report = gpu.search_ahead(&job, Some(&next), &cancel).unwrap();
        assert_eq!(report.hashes, job.hashes());
        assert_eq!(report.hits, search(&mut cpu, &job).hits, "slice {i}");
        assert!(gpu.has_queued_ahead(), "slice {i} queued the next one's first batch");
    }
    // Announced with two rolled bits, searched with three (whose first four versions are the
    // same): the queued batch tested four versions, so taking it would lose the hits of the
    // other four. A quarter of the hashes are hits, fewer than the result buffer holds.
    let two = SearchJob::new(header, one_in_2_pow(2), 5_000, 300).unwrap().with_rolled(0x0000_6000).unwrap();
    let three = two.with_rolled(0x0001_6000).unwrap();
    assert_eq!(three.versions()[..4], two.versions()[..]);
    gpu.search_ahead(&rolled.slice(0, 10), Some(&two), &cancel).unwrap();
    assert!(gpu.has_queued_ahead());
    let report = gpu.search_ahead(&three, None, &cancel).unwrap();
    assert_eq!(report.hashes, 300 * 8);
    assert!(report.hits.iter().any(|h| !two.versions().contains(&h.version)), "hits under the other four");
    assert_eq!(report.hits, search(&mut cpu, &three).hits);
}

/// A rolled search on the shared-schedule kernel cancelled part way reports whole nonces
/// (hashes a multiple of k) and exactly the hits of the nonces it did, under every version.
#[test]
fn cancelled_rolled_search_reports_whole_nonces() {
    let Some(mut gpu) = sharing(true) else { return };
    let header = Header::from_hex(GENESIS_HEX).unwrap();
    let job = SearchJob::new(header, one_in_2_pow(12), 0, 1 << 32).unwrap().with_rolled(0x0000_6000).unwrap();
    let cancel = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        gpu.search(&job, &cancel).unwrap()
    });
    assert!(report.hashes < job.hashes());
    assert_eq!(report.hashes % 4, 0, "whole nonces, each under its four versions");
    if report.hashes > 0 {
        let done = SearchJob { count: report.hashes / 4, ..job };
        assert_eq!(report.hits, search(&mut cpu(), &done).hits);
    }
}
