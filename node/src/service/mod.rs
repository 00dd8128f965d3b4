//! The node service (`hashgrid-node run`): joins a coordinator and searches the ranges it
//! assigns, for as long as the node runs.
//!
//! Owns: starting the node (`NodeConfig`, `run_node`): the devices' search workers (`worker`,
//! one compute service per device; `compute` starts them) measured side by side, then the
//! session with the coordinator until shutdown. The session's logic is the pure state machine
//! in `session` (hello, welcome, heartbeats, assignments, revocations, shares and their
//! results, range completion, reconnecting with backoff, keeping unacknowledged shares
//! across reconnects, shutdown); `shell` is the async side that carries out its commands on
//! QUIC and the workers. `scheduler` decides which device searches which piece of a range,
//! and `metrics` keeps the counters and rates `--http` serves.
//!
//! `hashgrid-node mine` (`MineConfig`, `run_miner`) runs the same devices and scheduler for a
//! Stratum V1 pool instead: `miner` is its pure state machine (the `common::stratum` client
//! session plus the header templates it searches), `mine` the TCP/TLS shell.
//!
//! A node runs the devices `--devices` names, or the one `--backend` picks. Each range is
//! split between the devices in proportion to their rates (GPUs first, the CPU after them);
//! a device whose backend fails is dropped and the unsearched rest of its pieces goes to the
//! others, and the node stops only when no device is left. The hello and every heartbeat
//! carry each device's rate, and their sum (or the `--announce-rate`, in proportion).
//!
//! Pieces queue up on their workers in arrival order, so a coordinator that sends the next
//! range ahead keeps the node busy. A range's `RangeDone` goes out once all of its pieces are
//! searched. A `Revoke` cancels every piece of its range wherever it is (running or queued);
//! a revoked range gets no `RangeDone`. Each verified hit becomes a `Share` at once, whichever
//! device found it. A lost connection cancels every range (they belonged to that connection);
//! shares not yet answered with `ShareResult` are sent again on the next connection, under
//! their old ids.

mod compute;
mod metrics;
mod mine;
mod miner;
mod scheduler;
mod session;
mod shell;
mod worker;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::info;

pub use self::compute::{DeviceListError, DeviceSpec, Devices};
pub use self::metrics::NodeMetrics;
pub use self::mine::{MineConfig, MineError, PoolUrl, PoolUrlError, run_miner};
pub use self::miner::MineCounts;
pub use self::session::{BACKOFF_MAX, BACKOFF_MIN, SHUTDOWN_REASON};
use self::session::{Identity, Session};
use self::shell::Shell;
use self::worker::{DeviceEvent, Ready, Worker};
use crate::search::{BackendChoice, SearchError};
use hashgrid_common::message::close_code;
use hashgrid_common::net::{self, Address, NetError};

/// How long the backend is measured before the node joins.
pub const MEASURE_FOR: Duration = Duration::from_secs(1);

/// How to run a node: its coordinator, who it is, which devices it searches on, what it
/// announces, and where it reports. `NodeConfig::new` sets the rest to the defaults: one device
/// picked by `backend` (auto), the measured rate, this build's version, fresh metrics.
#[derive(Debug)]
pub struct NodeConfig {
    /// `IP:PORT` or `HOST:PORT` (resolved at each connection attempt).
    pub coordinator: Address,
    /// The other coordinators of a hot-standby pair: tried in turn after `coordinator` when a
    /// connection fails, and the one a standby's close names is tried next (`net::Addresses`).
    pub alternates: Vec<Address>,
    /// The coordinator's certificate (PEM), the only one trusted.
    pub ca_pem: Vec<u8>,
    /// The join token (the coordinator's `node.token`).
    pub token: String,
    pub name: String,
    /// Join as a standby.
    pub standby: bool,
    /// The one device's backend when `devices` is `None`.
    pub backend: BackendChoice,
    pub adapter: Option<String>,
    /// Sizes the CPU backend, whichever way it is picked.
    pub threads: Option<usize>,
    /// One compute service per device listed (`--devices`); `None`: the one device `backend`
    /// and `adapter` pick.
    pub devices: Option<Devices>,
    /// The rate (hashes per second) announced instead of the measured one (`--announce-rate`);
    /// the per-device rates are scaled to sum to it. Ranges are still split by measured rates.
    pub announce_rate: Option<f64>,
    /// The software version announced instead of this build's (`--announce-version`): for
    /// packaged builds with local patches, and for trying a rollout.
    pub announce_version: Option<String>,
    /// Kept up to date as the node runs (`hashgrid-node run --http` serves a clone).
    pub metrics: NodeMetrics,
    /// Backends opened instead of those `devices` or `backend` pick (tests: throttled and
    /// failing ones).
    planned: Option<Vec<compute::Planned>>,
}

impl NodeConfig {
    /// A node `name` joining the coordinator at `coordinator` (certificate `ca_pem`) with
    /// `token`, with the defaults for the rest.
    pub fn new(coordinator: impl Into<Address>, ca_pem: Vec<u8>, token: String, name: String) -> Self {
        NodeConfig {
            coordinator: coordinator.into(),
            alternates: Vec::new(),
            ca_pem,
            token,
            name,
            standby: false,
            backend: BackendChoice::default(),
            adapter: None,
            threads: None,
            devices: None,
            announce_rate: None,
            announce_version: None,
            metrics: NodeMetrics::new(),
            planned: None,
        }
    }
}

/// Why the node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    // The search error is in the message and not a `source`, so `{:#}` prints it once.
    #[error("search backend: {0}")]
    Search(SearchError),
    #[error("device {device}: {error}")]
    Device { device: String, error: SearchError },
    /// An error retrying cannot fix: the pinned certificate does not match, the protocol is
    /// not spoken, or the token was refused.
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot start the search thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the search thread stopped unexpectedly")]
    WorkerGone,
}

impl From<SearchError> for NodeError {
    fn from(error: SearchError) -> Self {
        NodeError::Search(error)
    }
}

/// Counters over the node's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareCounts {
    pub accepted: u64,
    pub rejected: u64,
}

/// Runs the node until `shutdown` resolves (then closes the connection gracefully and returns
/// `Ok`) or a permanent error: a backend cannot open, the last device fails, the certificate
/// is not the pinned one, or the coordinator refuses the token. A lost connection is retried
/// forever, with exponential backoff. With several devices, a device failure stops the node
/// only when it was the last device left.
pub async fn run_node(mut config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Checks the pinned certificate before spending time on the backends. Dual-stack: a host
    // name may resolve to IPv4 or IPv6 addresses.
    let endpoint = net::client_endpoint(&config.ca_pem)?;
    let (planned, single) =
        plan_devices(config.planned.take(), config.devices.as_ref(), config.backend, &config.adapter, config.threads);
    let Some(Started { workers, ready, events }) = start_devices(planned, single, shutdown.as_mut()).await? else {
        return Ok(());
    };
    log_devices(&ready, config.announce_rate);

    let identity = Identity {
        token: config.token,
        name: config.name,
        standby: config.standby,
        software_version: config.announce_version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        announce_rate: config.announce_rate,
    };
    let session = Session::new(identity, &ready, config.metrics, rand::random());
    let addresses = net::Addresses::new(std::iter::once(config.coordinator).chain(config.alternates));
    let mut shell = Shell::new(session, endpoint.clone(), addresses, workers, events);
    let result = shell.run(shutdown.as_mut()).await;
    endpoint.close(close_code::DEPARTING.into(), SHUTDOWN_REASON.as_bytes());
    // Gives the close a moment to reach the coordinator.
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    let counts = shell.session().counts();
    info!(accepted = counts.accepted, rejected = counts.rejected, "node stopped");
    stop_workers(shell.into_workers()).await;
    result
}

/// The openers of the devices `devices` names, or of the one `backend` picks (`single`: its
/// errors read as they always have), unless `planned` overrides them.
fn plan_devices(
    planned: Option<Vec<compute::Planned>>,
    devices: Option<&Devices>,
    backend: BackendChoice,
    adapter: &Option<String>,
    threads: Option<usize>,
) -> (Vec<compute::Planned>, bool) {
    match (planned, devices) {
        (Some(planned), _) => (planned, false),
        (None, Some(devices)) => (compute::plan(&devices.resolve(), threads), false),
        (None, None) => (vec![compute::plan_single(backend, adapter.clone(), threads)], true),
    }
}

/// The devices' workers, started and measured, and their events.
struct Started {
    workers: Vec<Worker>,
    ready: Vec<Ready>,
    events: mpsc::UnboundedReceiver<DeviceEvent>,
}

/// Starts a worker per planned device and waits for their measurements; `None` when
/// `shutdown` comes first (the workers stopped). A device that cannot open stops them all.
async fn start_devices<S: Future<Output = ()>>(
    planned: Vec<compute::Planned>,
    single: bool,
    mut shutdown: std::pin::Pin<&mut S>,
) -> Result<Option<Started>, NodeError> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let starting = compute::start(planned, MEASURE_FOR, &events_tx).map_err(NodeError::Thread)?;
    drop(events_tx);
    let mut labels = Vec::new();
    let mut workers = Vec::new();
    let mut readies = Vec::new();
    for compute::Starting { label, worker, ready } in starting {
        labels.push(label);
        workers.push(worker);
        readies.push(ready);
    }
    let measured = tokio::select! {
        measured = async {
            let mut measured = Vec::new();
            for ready in readies {
                measured.push(ready.await);
            }
            measured
        } => measured,
        () = &mut shutdown => {
            stop_workers(workers).await;
            return Ok(None);
        }
    };
    let mut ready = Vec::new();
    for (label, measured) in labels.into_iter().zip(measured) {
        match measured {
            Ok(Ok(r)) => ready.push(r),
            failed => {
                stop_workers(workers).await;
                return Err(match failed {
                    Ok(Err(e)) if single => NodeError::Search(e),
                    Ok(Err(e)) => NodeError::Device { device: label, error: e },
                    _ => NodeError::WorkerGone,
                });
            }
        }
    }
    Ok(Some(Started { workers, ready, events }))
}

/// Stops the workers (their ranges already cancelled).
async fn stop_workers(workers: Vec<Worker>) {
    for worker in workers {
        worker.stop(Duration::from_secs(2)).await;
    }
}

/// Logs each device, its measured rate and its share of every range.
fn log_devices(ready: &[Ready], announce_rate: Option<f64>) {
    let total: f64 = ready.iter().map(|r| r.hashrate).sum();
    for (id, r) in ready.iter().enumerate() {
        let share = if total > 0.0 { 100.0 * r.hashrate / total } else { 100.0 / ready.len() as f64 };
        info!(
            device = id,
            backend = %r.kind,
            name = %r.device,
            hashrate = %format_rate(r.hashrate),
            split = format_args!("{share:.0}%"),
            "search backend ready"
        );
    }
    if let Some(announced) = announce_rate {
        info!(measured = %format_rate(total), announced = %format_rate(announced), "announcing a rate other than the measured one");
    }
}

fn format_rate(rate: f64) -> String {
    format!("{:.2} MH/s", rate / 1e6)
}

/// Sleeps until `deadline`, or forever when there is none: the timer of the shells' event
/// loops (a state machine's `poll_timeout`).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
