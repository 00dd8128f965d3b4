//! `hashgrid-coordinator serve`: runs the coordinator service on a data dir until SIGINT or
//! SIGTERM, then drains (stops issuing, flushes credits, tells nodes) and exits.
//! `hashgrid-coordinator config print-default | check`: the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hashgrid_common::message::Policy;
use hashgrid_coordinator::config::{CoordinatorConfig, DEFAULT_TOML};
use hashgrid_coordinator::service::server::{Service, ServiceConfig};
use hashgrid_coordinator::service::stratum::StratumSettings;

#[derive(Debug, Parser)]
#[command(name = "hashgrid-coordinator", version, about = "The hashgrid coordinator service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve nodes and operators over QUIC (and Stratum V1 miners with --stratum).
    Serve(Box<ServeArgs>),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default configuration file, every key documented.
    PrintDefault,
    /// Check a configuration file (and the flags and environment given with it) and print the
    /// settings that result.
    Check {
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
}

/// Settings: the file (`--config`), then `HASHGRID_*` variables and flags over it.
#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML configuration file (`config print-default` shows every key).
    #[arg(long, env = "HASHGRID_CONFIG")]
    config: Option<PathBuf>,
    /// Holds cert.pem, key.pem, node.token, admin.token and hashgrid.db; created on first start.
    #[arg(long, env = "HASHGRID_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the records are kept: sqlite (the data dir's hashgrid.db, the default) or a
    /// postgres:// URL.
    #[arg(long, env = "HASHGRID_STORE")]
    store: Option<String>,
    /// On PostgreSQL: how long a silent active coordinator keeps the lease, e.g. 10s.
    #[arg(long, env = "HASHGRID_LEASE_TTL")]
    lease_ttl: Option<String>,
    /// On PostgreSQL, when the database is lost while running: exit (the default) or retry.
    #[arg(long, env = "HASHGRID_ON_STORE_LOSS")]
    on_store_loss: Option<String>,
    /// UDP address to listen on (default 127.0.0.1:4433).
    #[arg(long, env = "HASHGRID_LISTEN")]
    listen: Option<SocketAddr>,
    /// TCP address for Prometheus metrics (/metrics) and the status page (/).
    #[arg(long, env = "HASHGRID_HTTP")]
    http: Option<SocketAddr>,
    /// sequential or proportional (default: the stored policy, else sequential).
    #[arg(long, env = "HASHGRID_POLICY")]
    policy: Option<String>,
    /// Fail a node after this much silence, e.g. 3s or 500ms (default 3s).
    #[arg(long, env = "HASHGRID_FAILOVER_AFTER")]
    failover_after: Option<String>,
    /// PEM certificates trusted for stratum+ssl:// pools instead of the system's roots.
    #[arg(long, env = "HASHGRID_POOL_CA")]
    pool_ca: Option<PathBuf>,
    /// TCP address of the Stratum V1 server for existing miners (worker = rig name, password =
    /// the node token), e.g. 0.0.0.0:3333. Off unless set.
    #[arg(long, env = "HASHGRID_STRATUM")]
    stratum: Option<SocketAddr>,
    /// TCP address of a second Stratum port speaking TLS (stratum+ssl://) with the
    /// coordinator's certificate, beside --stratum, e.g. 0.0.0.0:3334.
    #[arg(long, env = "HASHGRID_STRATUM_TLS")]
    stratum_tls: Option<SocketAddr>,
}

impl ServeArgs {
    /// The file's settings (or the defaults) with the environment and flags applied.
    fn settings(&self) -> anyhow::Result<CoordinatorConfig> {
        let mut config = match &self.config {
            Some(path) => CoordinatorConfig::load(path)?,
            None => CoordinatorConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(store) = &self.store {
            config.store = store.parse().map_err(|e| anyhow::anyhow!("--store: {e}"))?;
        }
        if let Some(ttl) = &self.lease_ttl {
            config.lease_ttl =
                humantime::parse_duration(ttl).with_context(|| format!("invalid --lease-ttl {ttl:?}"))?;
        }
        if let Some(on_loss) = &self.on_store_loss {
            config.on_store_loss = on_loss.parse().map_err(|e| anyhow::anyhow!("--on-store-loss: {e}"))?;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(http) = self.http {
            config.http = Some(http);
        }
        if let Some(policy) = &self.policy {
            config.policy = Some(policy.parse::<Policy>().map_err(|e| anyhow::anyhow!("--policy: {e}"))?);
        }
        if let Some(after) = &self.failover_after {
            config.failover_after =
                humantime::parse_duration(after).with_context(|| format!("invalid --failover-after {after:?}"))?;
        }
        if let Some(ca) = &self.pool_ca {
            config.pool_ca = Some(ca.clone());
        }
        if let Some(stratum) = self.stratum {
            config.stratum = Some(stratum);
        }
        if let Some(tls) = self.stratum_tls {
            config.stratum_tls = Some(tls);
        }
        config.check()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match hashgrid_common::cli::parse_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
    let args = match cli.command {
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{DEFAULT_TOML}");
            return Ok(());
        }
        Command::Config(ConfigCommand::Check { serve }) => {
            println!("{:#?}", serve.settings()?);
            return Ok(());
        }
        Command::Serve(args) => args,
    };
    let config = args.settings()?;
    let (data_dir, store, listen, policy, core) =
        (config.data_dir.clone(), config.store.clone(), config.listen, config.policy, config.core());
    let pool_ca = match &config.pool_ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("pool_ca {}", path.display()))?),
        None => None,
    };
    let (lease_ttl, on_store_loss) = (config.lease_ttl, config.on_store_loss);
    let limits = config.limits();
    let stratum = config.stratum.map(|listen| StratumSettings {
        listen,
        tls_listen: config.stratum_tls,
        max_connections: config.stratum_max_connections,
        session: config.stratum_session(),
    });
    let mut service = Service::start(ServiceConfig {
        data_dir,
        store,
        lease_ttl,
        on_store_loss,
        listen,
        policy,
        core,
        limits,
        pool_ca,
        stratum,
    })
    .await?;
    let dir = &service.data_dir;
    println!("hashgrid coordinator listening on {}", service.local_addr);
    if let Some(addr) = service.stratum_addr {
        println!("stratum on {addr} (stratum+tcp://{addr}, worker = rig name, password = the node token)");
    }
    if let Some(addr) = service.stratum_tls_addr {
        println!("stratum+ssl on {addr} (stratum+ssl://{addr}, the certificate below)");
    }
    println!("certificate: {} (sha256 {})", dir.cert_pem.display(), dir.fingerprint());
    println!("node token:  {}", dir.node_token.display());
    println!("admin token: {}", dir.admin_token.display());
    if let Some(addr) = config.http {
        let bound = service.serve_http(addr).await.context("http")?;
        println!("http on {bound} (status page http://{bound}/, metrics http://{bound}/metrics)");
    }

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
