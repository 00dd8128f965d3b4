//! Version rolling on the GPU backend: the rate of single-version ranges beside k-version
//! ranges searched with the `search_rolled` kernel (the first hash's schedule shared across
//! the versions) and one version after another (`share_schedule: false`), in one run.
//! Every configuration runs once per round, rounds interleaved (each round starting with the
//! next configuration); each figure is the median of
//! its rounds, in MH per CPU-second of the whole process (`/proc/self/stat` user + system
//! time, all threads: on lavapipe the "device" is this process's own threads), so that other
//! load on a shared machine counts less than in a wall-clock rate. Wall-clock rates are
//! printed beside.
//!
//! Usage: `cargo run --release -p hashgrid-node --example gpu_rolled_bench -- [SECONDS]
//! [ROUNDS] [K]` (defaults 3, 5, 4). Slices of 2^18 nonces are searched back to back with
//! `search_ahead`, as the node's worker does, against a target no hash meets. Prints a
//! Markdown table for BENCHMARKS.md.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hashgrid_common::{Header, Target};
use hashgrid_node::search::gpu::{GpuBackend, GpuOptions};
use hashgrid_node::search::{Backend, SearchJob};

/// Nonces per slice.
const SLICE: u64 = 1 << 18;

/// CPU time of the whole process (all threads, live and exited), in seconds. Linux reports
/// it in clock ticks of 1/100 s (USER_HZ), so runs of seconds lose well under 1 %.
fn process_cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("parsing /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short /proc/self/stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// (MH per CPU-second, MH per wall second) of `backend` searching slices of `job`'s header
/// under its rolled bits for about `secs`.
fn measure(backend: &mut GpuBackend, template: &SearchJob, secs: f64) -> Result<(f64, f64)> {
    let cancel = AtomicBool::new(false);
    let slice = |i: u64| SearchJob { start: ((i * SLICE) % (1 << 32)) as u32, count: SLICE, ..*template };
    let (cpu0, wall0) = (process_cpu_secs()?, Instant::now());
    let mut hashes = 0u64;
    let mut i = 0;
    while wall0.elapsed().as_secs_f64() < secs {
        let report = backend.search_ahead(&slice(i), Some(&slice(i + 1)), &cancel)?;
        if !report.hits.is_empty() {
            bail!("a hit against a target no hash should meet");
        }
        hashes += report.hashes;
        i += 1;
    }
    let (cpu, wall) = (process_cpu_secs()? - cpu0, wall0.elapsed().as_secs_f64());
    Ok((hashes as f64 / cpu.max(0.01) / 1e6, hashes as f64 / wall / 1e6))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| args.get(i).map_or(Ok(default), |a| a.parse::<f64>()).context("a number");
    let secs = arg(0, 3.0)?;
    let rounds = arg(1, 5.0)? as usize;
    let k = arg(2, 4.0)? as u32;
    if !k.is_power_of_two() || !(2..=16).contains(&k) {
        bail!("K must be 2, 4, 8 or 16");
    }
    let rolled = (0..k.trailing_zeros()).fold(0u32, |bits, b| bits | 1 << (13 + b));
    // Hash values are never zero in practice: the smallest target is met by nothing.
    let target = Target::from_hex(&format!("{:064x}", 1)).context("target")?;
    let header = Header::from_bytes(&[0x5a; 80]);
    let single = SearchJob::new(header, target, 0, SLICE)?;
    let multi = single.with_rolled(rolled)?;

    let options = |share| GpuOptions { share_schedule: share, ..GpuOptions::default() };
    // One backend per configuration, each with its own tuned batch size.
    let mut backends = [options(true), options(false), options(true)]
        .into_iter()
        .map(|o| GpuBackend::open_with(None, true, o))
        .collect::<Result<Vec<_>, _>>()
        .context("opening the GPU")?;
    let configs = [(0, single), (1, multi), (2, multi)];
    for (b, job) in &configs {
        assert_eq!(backends[*b].shares_schedule(job), *b == 2);
    }
    println!("adapter: {}", backends[0].device());
    // Warm-up: pipelines built, batch sizes tuned.
    for (b, job) in &configs {
        measure(&mut backends[*b], job, secs.min(2.0))?;
    }

    let names = ["k = 1, `search`", "k = {k}, one version after another", "k = {k}, `search_rolled` (shared)"];
    let mut per_cpu = vec![Vec::new(); 3];
    let mut per_wall = vec![Vec::new(); 3];
    for round in 0..rounds {
        // Each round starts with another configuration, so none always follows the same one.
        for c in (0..configs.len()).map(|i| (i + round) % configs.len()) {
            let (b, job) = &configs[c];
            let (cpu, wall) = measure(&mut backends[*b], job, secs)?;
            eprintln!("round {round}: {}: {cpu:.2} MH/CPU-s, {wall:.2} MH/s", names[c].replace("{k}", &k.to_string()));
            per_cpu[c].push(cpu);
            per_wall[c].push(wall);
        }
    }
    println!("| configuration | MH per CPU-s, {rounds} rounds | median | vs k = 1 | MH/s wall, median |");
    println!("|---|---|---:|---:|---:|");
    let base = median(&mut per_cpu[0].clone());
    for c in 0..3 {
        let runs: Vec<String> = per_cpu[c].iter().map(|v| format!("{v:.2}")).collect();
        let m = median(&mut per_cpu[c]);
        println!(
            "| {} | {} | **{m:.2}** | {:.3} | {:.2} |",
            names[c].replace("{k}", &k.to_string()),
            runs.join(" "),
            m / base,
            median(&mut per_wall[c])
        );
    }
    Ok(())
}
