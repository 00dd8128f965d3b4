//! `hashgrid-node bench`: hashes consecutive nonce ranges of a fixed header for a while and
//! reports the rate. Slices grow until each takes about a quarter of a second, so per-call
//! overhead does not weigh on the figure.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Args;
use hashgrid_common::{Header, Target};
use hashgrid_node::search::{NONCE_SPACE, SearchJob, open_backend};
use serde_json::json;

use super::BackendArgs;
use super::search::format_rate;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// How long to measure.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// The genesis header: a real header, so the bench hashes what a miner hashes.
const BENCH_HEADER: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds.is_finite() && args.seconds > 0.0, "--seconds must be a positive number");
    let threads = match args.backend.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        t => t,
    };
    let mut backend = open_backend(args.backend.backend, args.backend.adapter.as_deref(), threads)?;
    let header = Header::from_hex(BENCH_HEADER)?;
    let cancel = AtomicBool::new(false);
    let budget = Duration::from_secs_f64(args.seconds);

    // Warm up (pipeline compilation, thread start-up, batch tuning) outside the measurement.
    let mut slice: u64 = 1 << 16;
    let warmup = Instant::now();
    while warmup.elapsed() < Duration::from_millis(500) {
        let r = backend.search(&SearchJob::new(header, Target::DIFFICULTY_1, 0, slice)?, &cancel)?;
        if r.elapsed < Duration::from_millis(250) {
            slice = (slice * 2).min(NONCE_SPACE);
        }
    }

    // Slices back to back, each announcing the next as the node's worker does (a GPU queues
    // it ahead); timed by the wall clock, since queued work runs between the calls.
    let slice_at = |start: u64| SearchJob::new(header, Target::DIFFICULTY_1, start as u32, slice);
    let (mut hashes, mut start) = (0u64, 0u64);
    let measuring = Instant::now();
    while measuring.elapsed() < budget {
        let after = if start + 2 * slice > NONCE_SPACE { 0 } else { start + slice };
        let r = backend.search_ahead(&slice_at(start)?, Some(&slice_at(after)?), &cancel)?;
        hashes += r.hashes;
        start = after;
    }
    let elapsed = measuring.elapsed();
    let hashrate = hashes as f64 / elapsed.as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "backend": backend.kind().to_string(),
                "device": backend.device(),
                "threads": threads.unwrap_or_else(hashgrid_node::search::cpu::default_threads),
                "hashrate": hashrate,
                "hashes": hashes,
                "seconds": elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "{} on {}: {} ({} hashes in {:.2} s)",
            backend.kind(),
            backend.device(),
            format_rate(hashrate),
            hashes,
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}
