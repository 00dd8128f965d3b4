//! `hashgrid-coordinator serve`: runs the coordinator service on a data dir until SIGINT or
//! SIGTERM, then drains (stops issuing, flushes credits, tells nodes) and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hashgrid_common::message::Policy;
use hashgrid_coordinator::core::CoreConfig;
use hashgrid_coordinator::service::server::{Service, ServiceConfig};

#[derive(Debug, Parser)]
#[command(name = "hashgrid-coordinator", version, about = "The hashgrid coordinator service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve nodes and operators over QUIC.
    Serve {
        /// Holds cert.pem, key.pem, node.token, admin.token and hashgrid.db; created on first start.
        #[arg(long, env = "HASHGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// UDP address to listen on.
        #[arg(long, env = "HASHGRID_LISTEN", default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// sequential or proportional (default: the stored policy, else sequential).
        #[arg(long)]
        policy: Option<String>,
        /// Fail a node after this much silence, e.g. 3s or 500ms.
        #[arg(long, default_value = "3s")]
        failover_after: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result =
        tokio::runtime::Runtime::new().context("cannot start the runtime").and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hashgrid-coordinator: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve { data_dir, listen, policy, failover_after } = cli.command;
    let policy = policy.map(|p| p.parse::<Policy>()).transpose().map_err(anyhow::Error::msg)?;
    let failover = humantime::parse_duration(&failover_after)
        .with_context(|| format!("invalid --failover-after {failover_after:?}"))?;
    anyhow::ensure!(failover.as_millis() >= 500, "--failover-after must be at least 500ms");
    let failover_after_ms = failover.as_millis() as u64;
    // Several heartbeats fit in the failover window, so one late packet never fails a node.
    let heartbeat_ms = (failover_after_ms / 3).clamp(100, 1000) as u32;
    let core = CoreConfig { failover_after_ms, heartbeat_ms, ..CoreConfig::default() };
    let mut service = Service::start(ServiceConfig { data_dir, listen, policy, core }).await?;
    let dir = &service.data_dir;
    println!("hashgrid coordinator listening on {}", service.local_addr);
    println!("certificate: {} (sha256 {})", dir.cert_pem.display(), dir.fingerprint());
    println!("node token:  {}", dir.node_token.display());
    println!("admin token: {}", dir.admin_token.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        result = service.wait() => return result.context("coordinator stopped"),
    }
    tracing::info!("draining");
    service.shutdown().await?;
    Ok(())
}
