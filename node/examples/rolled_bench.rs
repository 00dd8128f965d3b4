//! Version rolling on the CPU: for each kernel, one thread, the rate of single-version ranges
//! beside k-version ranges searched with the first compression's schedule shared across the
//! versions and searched one version after another; measurements interleaved (every
//! configuration once per round), each figure the median of its rounds, in MH per CPU-second
//! of the searching thread (`/proc/thread-self/schedstat`: the search runs on the calling
//! thread with one thread), so that other load on a shared machine counts less than in a
//! wall-clock rate.
//!
//! Usage: `cargo run --release -p hashgrid-node --example rolled_bench -- [SECONDS] [ROUNDS] [K]
//! [KERNELS]` (defaults 3, 3, 4, and every kernel this CPU has; KERNELS is a comma-separated
//! list of names).
//! `HASHGRID_CPU_SHARE` has no effect here: both ways are measured explicitly. Prints one
//! Markdown table for BENCHMARKS.md, with each configuration's device string (the kernel that
//! ran).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use hashgrid_common::{Header, Target};
use hashgrid_node::search::cpu::{CpuBackend, Kernel};
use hashgrid_node::search::{Backend, SearchJob};

/// One configuration: a kernel, and for rolled ranges whether the schedule is shared.
#[derive(Clone, Copy)]
struct Config {
    kernel: Kernel,
    rolled: u32,
    share: bool,
}

/// Nanoseconds this thread has run on a CPU (Linux).
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).expect("schedstat's first field")
}

/// Hashes per CPU-second of `config` over about `secs` of wall time, in ranges of 2^20 nonces.
fn measure(config: Config, secs: f64) -> (f64, String) {
    let mut backend = CpuBackend::with_kernel(1, config.kernel).unwrap().sharing(config.share);
    let header = Header::from_bytes(&[0x5a; 80]);
    let cancel = AtomicBool::new(false);
    let (mut hashes, mut start) = (0u64, 0u32);
    let began = Instant::now();
    let cpu = thread_cpu_ns();
    while began.elapsed() < Duration::from_secs_f64(secs) {
        let job =
            SearchJob::new(header, Target::DIFFICULTY_1, start, 1 << 20).unwrap().with_rolled(config.rolled).unwrap();
        hashes += backend.search(&job, &cancel).unwrap().hashes;
        start = start.wrapping_add(1 << 20);
    }
    (hashes as f64 / ((thread_cpu_ns() - cpu) as f64 / 1e9), backend.device())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let k: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    assert!(k.is_power_of_two() && k <= 16, "K is 1, 2, 4, 8 or 16");
    // The lowest log2(k) bits of the BIP 320 mask.
    let rolled = ((k - 1) << 13) & 0x1fff_e000;
    let named: Option<Vec<Kernel>> =
        args.get(4).map(|list| list.split(',').map(|name| name.parse().expect("a kernel name")).collect());
    let kernels: Vec<Kernel> = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512, Kernel::ShaNi]
        .into_iter()
        .filter(|k| k.is_supported() && named.as_ref().is_none_or(|n| n.contains(k)))
        .collect();
    let mut configs = Vec::new();
    for &kernel in &kernels {
        configs.push(Config { kernel, rolled: 0, share: false });
        configs.push(Config { kernel, rolled, share: false });
        if kernel.has_shared_schedule() {
            configs.push(Config { kernel, rolled, share: true });
        }
    }
    let mut rates = vec![Vec::new(); configs.len()];
    let mut devices = vec![String::new(); configs.len()];
    for round in 0..rounds {
        for (i, &config) in configs.iter().enumerate() {
            let (rate, device) = measure(config, secs);
            rates[i].push(rate / 1e6);
            devices[i] = device;
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!("| kernel | versions | schedule | MH per CPU-s (median of {rounds} × {secs} s) | vs k = 1 | device |");
    println!("| --- | ---: | --- | ---: | ---: | --- |");
    let mut single = 0.0;
    for (i, config) in configs.iter().enumerate() {
        let rate = median(rates[i].clone());
        if config.rolled == 0 {
            single = rate;
        }
        let versions = 1u32 << config.rolled.count_ones();
        let schedule = match (versions, config.share) {
            (1, _) => "own",
            (_, true) => "shared",
            (_, false) => "one by one",
        };
        println!("| {} | {versions} | {schedule} | {rate:.2} | {:.3} | {} |", config.kernel, rate / single, devices[i]);
    }
}
