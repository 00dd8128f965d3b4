//! `hashgrid-node run`: the node service in the foreground. Reads the pinned certificate and
//! the join token, logs to stderr (`RUST_LOG`, default `info`), and runs until Ctrl-C or
//! SIGTERM, then leaves the coordinator gracefully. `--devices` runs one compute service per
//! device listed; without it the node runs on the one device `--backend` picks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hashgrid_common::http::{HttpServer, OPENMETRICS, Page};
use hashgrid_common::net::Address;
use hashgrid_node::config::{NodeFileConfig, NodeSettings};
use hashgrid_node::search::BackendChoice;
use hashgrid_node::service::{Devices, NodeConfig, run_node};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A TOML configuration file (`hashgrid-node config print-default` shows every key); the
    /// flags and HASHGRID_* variables below override it.
    #[arg(long, env = "HASHGRID_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// The coordinator's address, HOST:PORT or IP:PORT, e.g. a.example:4433; for a hot-standby
    /// pair both, comma separated (the node follows the active one).
    #[arg(long, env = "HASHGRID_COORDINATOR", value_delimiter = ',')]
    coordinator: Vec<Address>,
    /// The coordinator's certificate (its cert.pem), the only one trusted.
    #[arg(long, env = "HASHGRID_CA")]
    ca: Option<PathBuf>,
    /// The file holding the join token (a copy of the coordinator's node.token).
    #[arg(long, env = "HASHGRID_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The node's name in the farm (default: the host name).
    #[arg(long, env = "HASHGRID_NODE_NAME")]
    name: Option<String>,
    /// Join as a standby: measured and connected, but given no ranges until promoted.
    #[arg(long)]
    standby: bool,
    /// auto: a hardware GPU if present, else the CPU; gpu: a GPU adapter, software ones included.
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// GPU adapter, by index or (part of) its name (see `devices`).
    #[arg(long)]
    adapter: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run on these devices, splitting each range between them by measured rate: GPU adapters
    /// by index or name (as --adapter takes them) and `cpu`, comma-separated (`0,1,cpu`), or
    /// `all` (every hardware GPU at start, then the CPU). --threads sizes the CPU.
    #[arg(long, value_name = "LIST", env = "HASHGRID_DEVICES", conflicts_with_all = ["backend", "adapter"])]
    devices: Option<Devices>,
    /// Announce this rate (hashes per second, e.g. 2.5e9) instead of the measured one: for a
    /// rig whose start-up measurement is unrepresentative. The coordinator sizes ranges by it
    /// and checks delivered work against it, so announcing too much gets the node flagged as
    /// under-delivering.
    #[arg(long, value_name = "H", value_parser = parse_rate)]
    announce_rate: Option<f64>,
    /// Announce this software version instead of this build's: for packaged builds with local
    /// patches, and for trying a `hashgrid rollout` on part of the farm.
    #[arg(long, value_name = "V")]
    announce_version: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics: per-device rates, shares accepted and
    /// rejected, connection state (port 0: a free port, printed as "http on ADDR").
    #[arg(long, value_name = "ADDR", env = "HASHGRID_NODE_HTTP")]
    http: Option<SocketAddr>,
}

/// A rate in hashes per second: a positive, finite number.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a positive number of hashes per second")),
    }
}

impl RunArgs {
    /// The file's settings (or the defaults) with the environment and flags over them.
    pub fn settings(self) -> anyhow::Result<NodeSettings> {
        let file = match &self.config {
            Some(path) => NodeFileConfig::load(path)?,
            None => NodeFileConfig::default(),
        };
        let mut s = file.settings()?;
        if !self.coordinator.is_empty() {
            s.coordinator = self.coordinator;
        }
        s.ca = self.ca.or(s.ca);
        s.token_file = self.token_file.or(s.token_file);
        s.name = self.name.or(s.name);
        s.standby |= self.standby;
        s.backend = self.backend.unwrap_or(s.backend);
        s.adapter = self.adapter.or(s.adapter);
        s.threads = self.threads.or(s.threads);
        s.devices = self.devices.or(s.devices);
        s.announce_rate = self.announce_rate.or(s.announce_rate);
        s.announce_version = self.announce_version.or(s.announce_version);
        s.http = self.http.or(s.http);
        if s.threads == Some(0) {
            anyhow::bail!("--threads must be at least 1");
        }
        Ok(s)
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let s = args.settings()?;
    let (coordinator, alternates) =
        s.coordinator.split_first().context("--coordinator (or `coordinator` in --config) is required")?;
    let ca = s.ca.context("--ca (or `ca` in --config) is required")?;
    let token_file = s.token_file.context("--token-file (or `token_file` in --config) is required")?;
    let ca_pem = std::fs::read(&ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read --token-file {}", token_file.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "--token-file {} is empty", token_file.display());
    let mut config = NodeConfig::new(coordinator.clone(), ca_pem, token, s.name.unwrap_or_else(host_name));
    config.alternates = alternates.to_vec();
    config.standby = s.standby;
    config.backend = s.backend;
    config.adapter = s.adapter;
    config.threads = s.threads;
    config.devices = s.devices;
    config.announce_rate = s.announce_rate;
    config.announce_version = s.announce_version;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = s.http {
            let server = HttpServer::bind(addr).await?;
            println!("http on {}", server.local_addr());
            let metrics = config.metrics.clone();
            let pages = move |path: String| {
                let metrics = metrics.clone();
                async move {
                    match path.as_str() {
                        "/metrics" => Page::ok(OPENMETRICS, metrics.encode()),
                        _ => Page::not_found(),
                    }
                }
            };
            tokio::spawn(server.serve(pages, async move {
                let _ = http_stopped.await;
            }));
        }
        let result = run_node(config, shutdown).await;
        drop(stop_http);
        result?;
        Ok(())
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub(super) fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub(super) fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
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
