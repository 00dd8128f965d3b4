//! `hashgrid-node run`: the node service in the foreground. Reads the pinned certificate and
//! the join token, logs to stderr (`RUST_LOG`, default `info`), and runs until Ctrl-C or
//! SIGTERM, then leaves the coordinator gracefully. `--devices` runs one compute service per
//! device listed; without it the node runs on the one device `--backend` picks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hashgrid_node::service::{Devices, NodeConfig, NodeOptions, run_node_with};
use tracing_subscriber::EnvFilter;

use super::BackendArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The coordinator's address, e.g. 192.0.2.10:7700.
    #[arg(long, env = "HASHGRID_COORDINATOR")]
    coordinator: SocketAddr,
    /// The coordinator's certificate (its cert.pem), the only one trusted.
    #[arg(long, env = "HASHGRID_CA")]
    ca: PathBuf,
    /// The file holding the join token (a copy of the coordinator's node.token).
    #[arg(long, env = "HASHGRID_TOKEN_FILE")]
    token_file: PathBuf,
    /// The node's name in the farm (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Join as a standby: measured and connected, but given no ranges until promoted.
    #[arg(long)]
    standby: bool,
    #[command(flatten)]
    backend: BackendArgs,
    /// Run on these devices, splitting each range between them by measured rate: GPU adapters
    /// by index or name (as --adapter takes them) and `cpu`, comma-separated (`0,1,cpu`), or
    /// `all` (every hardware GPU at start, then the CPU). --threads sizes the CPU.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["backend", "adapter"])]
    devices: Option<Devices>,
    /// Announce this rate (hashes per second, e.g. 2.5e9) instead of the measured one: for a
    /// rig whose start-up measurement is unrepresentative. The coordinator sizes ranges by it
    /// and checks delivered work against it, so announcing too much gets the node flagged as
    /// under-delivering.
    #[arg(long, value_name = "H", value_parser = parse_rate)]
    announce_rate: Option<f64>,
}

/// A rate in hashes per second: a positive, finite number.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a positive number of hashes per second")),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    if args.backend.threads == Some(0) {
        anyhow::bail!("--threads must be at least 1");
    }
    let ca_pem = std::fs::read(&args.ca).with_context(|| format!("cannot read --ca {}", args.ca.display()))?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read --token-file {}", args.token_file.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "--token-file {} is empty", args.token_file.display());
    let config = NodeConfig {
        coordinator: args.coordinator,
        ca_pem,
        token,
        name: args.name.unwrap_or_else(host_name),
        standby: args.standby,
        backend: args.backend.backend,
        adapter: args.backend.adapter,
        threads: args.backend.threads,
    };
    let options = NodeOptions { devices: args.devices, announce_rate: args.announce_rate };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        run_node_with(config, options, shutdown).await?;
        Ok(())
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("interrupted; shutting down"),
            _ = terminate.recv() => tracing::info!("terminated; shutting down"),
        }
    })
}

/// The host name from /etc/hostname, else "node".
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_string())
}
