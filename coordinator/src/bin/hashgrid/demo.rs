//! `hashgrid demo`: the whole loop in one process, on loopback, with nothing outside. A
//! coordinator on a temporary data dir, two nodes (a hardware GPU if there is one, else the
//! CPU), and three accounts whose standards are sized from the measured rate so the run ends
//! within about half a minute; live bars per account until each is up to standard, then a
//! summary.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hashgrid_common::message::{AdminRequest, AdminResponse, Policy, Status};
use hashgrid_common::{Header, Target};
use hashgrid_coordinator::amount::format_amount;
use hashgrid_coordinator::core::CoreConfig;
use hashgrid_coordinator::service::server::{Service, ServiceConfig};
use hashgrid_node::search::{BackendChoice, SearchJob, open_backend};
use hashgrid_node::service::{NodeConfig, run_node};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// sequential or proportional.
    #[arg(long, default_value = "sequential")]
    policy: String,
    /// Roughly how long the demo should hash, in seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Node backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
}

const ACCOUNTS: [(&str, f64); 3] = [("alice", 0.2), ("bob", 0.3), ("carol", 0.5)];

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let policy: Policy = args.policy.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(args.seconds.is_finite() && args.seconds >= 1.0, "--seconds must be at least 1");
    let dir = tempfile::tempdir().context("cannot create a temporary data dir")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (cores / 2).max(1);

    // Measure one node's rate to size the standards.
    let (device, rate) = tokio::task::spawn_blocking(move || measure(args.backend, threads)).await??;
    println!(
        "hashgrid demo: 2 nodes on {device}, each about {}H/s; policy {}",
        format_amount(rate as u128),
        policy.as_str()
    );

    let service = Service::start(ServiceConfig {
        data_dir: dir.path().to_path_buf(),
        store: Default::default(),
        lease_ttl: hashgrid_coordinator::service::lease::DEFAULT_TTL,
        on_store_loss: Default::default(),
        listen: "127.0.0.1:0".parse()?,
        policy: Some(policy),
        core: CoreConfig { range_ms: 1000, ..CoreConfig::default() },
        limits: Default::default(),
        pool_ca: None,
        stratum: None,
    })
    .await?;
    let addr = service.local_addr;
    let ca_pem = std::fs::read(&service.data_dir.cert_pem)?;
    let node_token = std::fs::read_to_string(&service.data_dir.node_token)?.trim().to_string();
    let admin_token = std::fs::read_to_string(&service.data_dir.admin_token)?.trim().to_string();
    println!("coordinator on {addr}, data dir {}", dir.path().display());

    let total = rate * 2.0 * args.seconds * 0.8;
    for (i, (name, share)) in ACCOUNTS.iter().enumerate() {
        let standard = (total * share) as u128;
        let req = AdminRequest::AccountAdd {
            name: name.to_string(),
            standard,
            period_secs: None,
            order: Some(i as i64),
            chain: None,
        };
        crate::admin(addr.into(), &ca_pem, &admin_token, req).await?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let mut config = NodeConfig::new(addr, ca_pem.clone(), node_token.clone(), format!("demo-node-{n}"));
        config.backend = args.backend;
        config.threads = Some(threads);
        let mut stop = stop_rx.clone();
        nodes.push(tokio::spawn(run_node(config, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }

    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
    let style = ProgressStyle::with_template("{prefix:<8} [{bar:40}] {percent:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let account_bars: Vec<ProgressBar> = ACCOUNTS
        .iter()
        .map(|(name, _)| {
            let bar = bars.add(ProgressBar::new(1000));
            bar.set_style(style.clone());
            bar.set_prefix(name.to_string());
            bar
        })
        .collect();
    let node_line = bars.add(ProgressBar::new_spinner());
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(args.seconds * 6.0 + 30.0);
    let status = loop {
        let AdminResponse::Status(status) =
            crate::admin(addr.into(), &ca_pem, &admin_token, AdminRequest::Status).await?
        else {
            anyhow::bail!("unexpected reply to status")
        };
        draw(&status, &account_bars, &node_line);
        if status.accounts.iter().all(|a| a.up_to_standard) {
            break status;
        }
        anyhow::ensure!(started.elapsed() < deadline, "the demo did not finish in {} s", deadline.as_secs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed();
    for bar in &account_bars {
        bar.finish();
    }
    node_line.finish_and_clear();
    let _ = stop_tx.send(true);
    for node in nodes {
        let _ = node.await;
    }
    service.shutdown().await?;

    println!();
    println!("every account is up to standard after {:.1} s", elapsed.as_secs_f64());
    println!("{:<8} {:>12} {:>12} {:>8}", "ACCOUNT", "STANDARD", "DELIVERED", "SHARES");
    for a in &status.accounts {
        println!(
            "{:<8} {:>11}H {:>11}H {:>8}",
            a.name,
            format_amount(a.standard),
            format_amount(a.delivered),
            a.shares
        );
    }
    Ok(())
}

fn draw(status: &Status, bars: &[ProgressBar], node_line: &ProgressBar) {
    for (bar, a) in bars.iter().zip(&status.accounts) {
        let permille = (a.delivered.saturating_mul(1000) / a.standard.max(1)).min(1000) as u64;
        bar.set_position(permille);
        let serving = status.nodes.iter().filter(|n| n.account.as_deref() == Some(a.name.as_str())).count();
        bar.set_message(format!(
            "{}H of {}H{}",
            format_amount(a.delivered),
            format_amount(a.standard),
            if a.up_to_standard {
                "  up to standard".to_string()
            } else if serving > 0 {
                format!("  <- {serving} node(s)")
            } else {
                String::new()
            }
        ));
    }
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            format!("{} {}H/s -> {}", n.name, format_amount(n.hashrate as u128), n.account.as_deref().unwrap_or("idle"))
        })
        .collect();
    node_line.set_message(nodes.join("   "));
    node_line.tick();
}

/// About one second of hashing on the backend the nodes will use: (device, hashes/s).
fn measure(backend: BackendChoice, threads: usize) -> anyhow::Result<(String, f64)> {
    let mut backend = open_backend(backend, None, Some(threads))?;
    let header = Header::from_bytes(&[0; 80]);
    let cancel = AtomicBool::new(false);
    let mut count = 1u64 << 16;
    let started = Instant::now();
    let (mut hashes, mut elapsed) = (0u64, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(1) {
        let report = backend.search(&SearchJob::new(header, Target::DIFFICULTY_1, 0, count)?, &cancel)?;
        hashes += report.hashes;
        elapsed += report.elapsed;
        if report.elapsed < Duration::from_millis(200) {
            count = (count * 2).min(1 << 30);
        }
    }
    Ok((backend.device(), hashes as f64 / elapsed.as_secs_f64().max(1e-9)))
}
