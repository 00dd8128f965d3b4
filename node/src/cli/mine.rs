//! `hashgrid-node mine`: the standalone Stratum V1 miner. Connects to one pool, searches its
//! jobs on the devices `--devices` (or `--backend`) picks, submits the shares that meet the
//! pool's target, and runs until Ctrl-C or SIGTERM; then prints the accepted and rejected
//! counts. A bad URL or `--pool-ca`, an unreachable pool at start and refused credentials are
//! one-line errors (exit code 2).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hashgrid_node::search::BackendChoice;
use hashgrid_node::service::{Devices, MineConfig, PoolUrl, run_miner};

use super::run::{init_logging, shutdown_signal};

#[derive(Debug, Args)]
pub struct MineArgs {
    /// The pool: stratum+tcp://HOST:PORT, or stratum+ssl://HOST:PORT (TLS; also stratum+tls).
    #[arg(long, value_name = "URL")]
    pool: String,
    /// The pool user (often an address or account, with `.worker`).
    #[arg(long)]
    user: String,
    /// The pool password (many pools take anything).
    #[arg(long, default_value = "x", env = "HASHGRID_POOL_PASSWORD", hide_env_values = true)]
    password: String,
    /// For a TLS pool: trust only the certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pool_ca: Option<PathBuf>,
    /// auto: a hardware GPU if present, else the CPU; gpu: a GPU adapter, software ones included.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// GPU adapter, by index or (part of) its name (see `devices`).
    #[arg(long)]
    adapter: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Mine on these devices (as `run --devices` takes them): `0,1,cpu`, or `all`.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["backend", "adapter"])]
    devices: Option<Devices>,
}

pub fn run(args: MineArgs) -> anyhow::Result<()> {
    init_logging();
    anyhow::ensure!(args.threads != Some(0), "--threads must be at least 1");
    anyhow::ensure!(!args.user.is_empty(), "--user must not be empty");
    let pool_ca = match &args.pool_ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read --pool-ca {}", path.display()))?),
        None => None,
    };
    let pool: PoolUrl = args.pool.parse()?;
    let config = MineConfig {
        pool,
        user: args.user,
        password: args.password,
        pool_ca,
        backend: args.backend,
        adapter: args.adapter,
        threads: args.threads,
        devices: args.devices,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let counts = runtime.block_on(async { anyhow::Ok(run_miner(config, shutdown_signal()?).await?) })?;
    println!(
        "shares: {} accepted, {} rejected, {} unanswered, {} not submitted ({} found)",
        counts.accepted, counts.rejected, counts.unknown, counts.dropped, counts.found
    );
    Ok(())
}
