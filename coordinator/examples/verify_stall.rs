//! How much `ledger verify` holds up share acknowledgements: share-ack latency while an
//! operator verifies a long ledger back to back, with the read on its own connection (now)
//! and on the core thread (as before; `Service::route_reads_through_core`), next to the
//! latency with no verify at all, in one run.
//!
//! `cargo run --release -p hashgrid-coordinator --example verify_stall -- --entries 200000`
//!
//! One process runs a real `Service` (tempdir data dir, SQLite with synchronous=FULL) whose
//! ledger is first filled with `--entries` entries, and one node connection that sends valid
//! shares (found before the measurement) at `--rate` per second, timing each from its write
//! to its `ShareResult`. Three phases: `--baseline` seconds with no admin request; `--verifies`
//! back-to-back `ledger verify`s served off the core thread; the same served on the core
//! thread. Each phase reports the p50, p99 and max latency of the shares sent in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use hashgrid_common::Target;
use hashgrid_common::codec::{self, FrameDecoder};
use hashgrid_common::message::{
    AdminRequest, AdminResponse, Assignment, CoordinatorMessage, Hello, NodeHello, NodeMessage, Policy, Share,
};
use hashgrid_common::net;
use hashgrid_coordinator::core::ledger::LedgerRecord;
use hashgrid_coordinator::core::{CoreConfig, StoreOp, Work};
use hashgrid_coordinator::service::limits::ConnectionLimits;
use hashgrid_coordinator::service::server::{Service, ServiceConfig};
use hashgrid_coordinator::service::store::Store;

#[derive(Debug, Parser)]
#[command(about = "Share-ack latency during ledger verify, on and off the core thread")]
struct Args {
    /// Ledger entries to verify.
    #[arg(long, default_value_t = 200_000)]
    entries: u64,
    /// Shares per second the node sends.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Back-to-back verifies per phase.
    #[arg(long, default_value_t = 5)]
    verifies: usize,
    /// Length of the phase without verifies, seconds.
    #[arg(long, default_value_t = 5)]
    baseline: u64,
    /// Most seconds a verify phase may last (sizes the share pool).
    #[arg(long, default_value_t = 30)]
    phase_max: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.rate > 0 && args.verifies > 0, "--rate and --verifies must be positive");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hashgrid.db");
    let start = Instant::now();
    let mut store = Store::open(&path)?;
    for chunk in (0..args.entries).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<StoreOp> = chunk
            .iter()
            .map(|&i| StoreOp::Ledger {
                at_ms: 1_700_000_000_000 + i,
                record: LedgerRecord::Assignment {
                    assignment: i,
                    node: format!("rig-{}", i % 16),
                    account: "acme".into(),
                    chain: "local".into(),
                    job: 7,
                    version: 0x2000_0000,
                    start: (i as u32).wrapping_mul(65536),
                    count: 65536,
                    share_work: Work(1 << 16),
                    reassigned_from: None,
                },
            })
            .collect();
        store.apply(&ops)?;
    }
    drop(store);
    println!("ledger of {} entries written in {:.1} s", args.entries, start.elapsed().as_secs_f64());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(&args, dir.path()))
}

/// Shares sent: send time (ns since `epoch`) and ack latency (ns, 0 = not yet).
struct Log {
    epoch: Instant,
    sent_ns: Vec<AtomicU64>,
    latency_ns: Vec<AtomicU64>,
}

async fn run(args: &Args, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let service = Service::start(ServiceConfig {
        data_dir: data_dir.to_path_buf(),
        store: Default::default(),
        lease_ttl: hashgrid_coordinator::service::lease::DEFAULT_TTL,
        on_store_loss: Default::default(),
        listen: "127.0.0.1:0".parse()?,
        policy: Some(Policy::Sequential),
        core: CoreConfig {
            shares_per_second: 1e12,
            min_share_work: 16,
            failover_after_ms: 3_600_000,
            ..CoreConfig::default()
        },
        // One node and the operator's connections, all from loopback.
        limits: ConnectionLimits::default(),
        pool_ca: None,
        stratum: None,
    })
    .await?;
    let ca = std::fs::read(&service.data_dir.cert_pem)?;
    let admin_token = std::fs::read_to_string(&service.data_dir.admin_token)?.trim().to_string();
    let node_token = std::fs::read_to_string(&service.data_dir.node_token)?.trim().to_string();
    let endpoint = net::client_endpoint(&ca)?;
    let addr = service.local_addr;
    let admin = |req: AdminRequest| {
        let (endpoint, token) = (endpoint.clone(), admin_token.clone());
        async move { net::admin_request(&endpoint, addr, &token, &req).await }
    };
    let add = AdminRequest::AccountAdd {
        name: "acme".into(),
        standard: u128::MAX / 2,
        period_secs: None,
        order: Some(1),
        chain: None,
    };
    ensure!(admin(add).await? == AdminResponse::Ok, "account add failed");

    // Join as a node and find the shares of the whole run in its first range.
    let conn = net::connect(&endpoint, addr).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = NodeHello {
        token: node_token,
        name: "bench".into(),
        software_version: "bench".into(),
        standby: false,
        devices: Vec::new(),
        hashrate: 1e9,
    };
    send.write_all(&codec::encode(&Hello::Node(hello))?).await?;
    let mut decoder = FrameDecoder::new();
    let assignment: Assignment = loop {
        let chunk = recv.read_chunk(64 << 10, true).await?.context("stream ended before an assignment")?;
        decoder.extend(&chunk.bytes);
        if let Some(a) =
            std::iter::from_fn(|| decoder.next::<CoordinatorMessage>().ok().flatten()).find_map(|m| match m {
                CoordinatorMessage::Assign(a) => Some(a),
                _ => None,
            })
        {
            break a;
        }
    };
    let needed = (args.rate * (args.baseline + 2 * args.phase_max)) as usize;
    let block = Target::from_compact(CoreConfig::default().chain_bits)?;
    let shares: Vec<Share> = (assignment.start..)
        .take(assignment.count.min(u64::from(u32::MAX)) as usize)
        .filter(|&n| {
            let hash = assignment.header.with_nonce(n).block_hash();
            assignment.share_target.is_met_by(&hash) && !block.is_met_by(&hash)
        })
        .take(needed)
        .enumerate()
        .map(|(id, nonce)| Share {
            id: id as u64,
            assignment: assignment.id,
            job: assignment.job,
            version: assignment.header.version,
            time: assignment.header.time,
            nonce,
        })
        .collect();
    ensure!(shares.len() == needed, "the first range holds only {} shares", shares.len());
    println!("{} shares found; sending {} per second", shares.len(), args.rate);

    let log = Arc::new(Log {
        epoch: Instant::now(),
        sent_ns: (0..needed).map(|_| AtomicU64::new(0)).collect(),
        latency_ns: (0..needed).map(|_| AtomicU64::new(0)).collect(),
    });
    let reader_log = log.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(chunk)) = recv.read_chunk(64 << 10, true).await {
            decoder.extend(&chunk.bytes);
            let now = reader_log.epoch.elapsed().as_nanos() as u64;
            while let Ok(Some(batch)) = decoder.next::<CoordinatorMessage>() {
                for msg in batch.unbatched() {
                    if let CoordinatorMessage::ShareResult { id, .. } = msg
                        && let (Some(sent), Some(lat)) =
                            (reader_log.sent_ns.get(id as usize), reader_log.latency_ns.get(id as usize))
                    {
                        lat.store(now.saturating_sub(sent.load(Ordering::Relaxed)).max(1), Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let sender_log = log.clone();
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        for share in shares {
            ticker.tick().await;
            let frame = codec::encode(&NodeMessage::Share(share)).expect("a share fits a frame");
            sender_log.sent_ns[share.id as usize]
                .store(sender_log.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
    });

    let now = || log.epoch.elapsed().as_nanos() as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = now();
    tokio::time::sleep(Duration::from_secs(args.baseline)).await;
    let mut phases = vec![("no verify".to_string(), t0, now())];
    for on_core in [false, true] {
        service.route_reads_through_core(on_core);
        let from = now();
        for _ in 0..args.verifies {
            match admin(AdminRequest::LedgerVerify).await? {
                AdminResponse::LedgerVerified(v) if v.first_bad.is_none() && v.entries >= args.entries => {}
                other => bail!("ledger verify: {other:?}"),
            }
        }
        let to = now();
        ensure!(to - from < args.phase_max * 1_000_000_000, "a verify phase outlasted --phase-max");
        let place = if on_core { "on the core thread (before)" } else { "off the core thread (now)" };
        phases.push((format!("{} x ledger verify {place}", args.verifies), from, to));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sender.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.abort();

    println!("{:<52} {:>7} {:>9} {:>9} {:>9} {:>8}", "phase", "shares", "p50 ms", "p99 ms", "max ms", "seconds");
    let mut p99s = Vec::new();
    for (name, from, to) in &phases {
        let mut lat: Vec<u64> = (0..needed)
            .filter(|&i| (*from..*to).contains(&log.sent_ns[i].load(Ordering::Relaxed)))
            .map(|i| log.latency_ns[i].load(Ordering::Relaxed))
            .collect();
        ensure!(lat.iter().all(|&l| l > 0), "{name}: a share was never acknowledged");
        ensure!(!lat.is_empty(), "{name}: no share sent");
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
        p99s.push(q(0.99));
        println!(
            "{name:<52} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>8.1}",
            lat.len(),
            q(0.5),
            q(0.99),
            q(1.0),
            (to - from) as f64 / 1e9
        );
    }
    println!("p99 ratio to no verify: off the core {:.2}x, on the core {:.2}x", p99s[1] / p99s[0], p99s[2] / p99s[0]);
    conn.close(0u32.into(), b"done");
    service.shutdown().await?;
    Ok(())
}
