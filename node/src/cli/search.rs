//! `hashgrid-node search`: one nonce range of one header, with a progress bar on long searches
//! or a single JSON line.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hashgrid_common::{CompactTarget, Header, Target};
use hashgrid_node::search::{Hit, SearchJob, SearchReport, open_backend};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::BackendArgs;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("goal").required(true).args(["bits", "target", "difficulty"]))]
pub struct SearchArgs {
    /// The 80-byte header template, 160 hex characters in wire order (its nonce is ignored).
    #[arg(long)]
    header: String,
    /// First nonce of the range.
    #[arg(long)]
    start: u32,
    /// Number of nonces to search.
    #[arg(long)]
    count: u64,
    /// Target as compact bits, e.g. 1d00ffff.
    #[arg(long)]
    bits: Option<String>,
    /// Target as 64 hex characters, most significant first.
    #[arg(long)]
    target: Option<String>,
    /// Target as a pool difficulty (1 = bits 1d00ffff).
    #[arg(long)]
    difficulty: Option<f64>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Nonces per progress step; long searches are run as a sequence of such slices.
const PROGRESS_STEP: u64 = 1 << 24;

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    let header = Header::from_hex(&args.header).context("--header")?;
    let target = parse_target(&args)?;
    let job = SearchJob::new(header, target, args.start, args.count)?;
    let mut backend = open_backend(args.backend.backend, args.backend.adapter.as_deref(), args.backend.threads)?;
    let cancel = AtomicBool::new(false);

    let bar = (!args.json && job.count > PROGRESS_STEP).then(|| {
        let bar = ProgressBar::new(job.count);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {percent}% {human_pos}/{human_len} nonces, eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut total = SearchReport { hashes: 0, elapsed: Duration::ZERO, hits: Vec::new() };
    let mut offset = 0;
    while offset < job.count {
        let step = if bar.is_some() { PROGRESS_STEP.min(job.count - offset) } else { job.count };
        let report = backend.search(&job.slice(offset, step), &cancel)?;
        total.hashes += report.hashes;
        total.elapsed += report.elapsed;
        total.hits.extend(report.hits);
        offset += step;
        if let Some(bar) = &bar {
            bar.set_position(offset);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    if args.json {
        println!("{}", report_json(&backend.kind().to_string(), &backend.device(), &total));
    } else {
        println!(
            "{} on {}: {} nonces in {:.3} s ({}), {} found",
            backend.kind(),
            backend.device(),
            total.hashes,
            total.elapsed.as_secs_f64(),
            format_rate(total.hashrate()),
            total.hits.len()
        );
        for Hit { nonce, hash, .. } in &total.hits {
            println!("  nonce {nonce:>10}  hash {hash}");
        }
    }
    Ok(())
}

fn parse_target(args: &SearchArgs) -> anyhow::Result<Target> {
    if let Some(bits) = &args.bits {
        let bits: CompactTarget = bits.parse().context("--bits")?;
        return Ok(Target::from_compact(bits)?);
    }
    if let Some(target) = &args.target {
        return Target::from_hex(target).context("--target");
    }
    let difficulty = args.difficulty.expect("clap requires one of bits, target, difficulty");
    Target::from_difficulty(difficulty).context("--difficulty")
}

/// The `--json` line of a search.
pub fn report_json(backend: &str, device: &str, report: &SearchReport) -> serde_json::Value {
    json!({
        "backend": backend,
        "device": device,
        "hashes": report.hashes,
        "seconds": report.elapsed.as_secs_f64(),
        "hashrate": report.hashrate(),
        "found": report.hits.iter().map(|h| json!({"nonce": h.nonce, "hash": h.hash.to_string()})).collect::<Vec<_>>(),
    })
}

/// A hash rate with an SI prefix: "12.3 MH/s".
pub fn format_rate(rate: f64) -> String {
    let (value, prefix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| rate >= *scale)
        .map_or((rate, ""), |(scale, p)| (rate / scale, p));
    format!("{value:.2} {prefix}H/s")
}
