//! The node service (`hashgrid-node run`): joins a coordinator and searches the ranges it
//! assigns, for as long as the node runs.
//!
//! Owns: the node's side of the hashgrid session (hello, welcome, heartbeats, assignments,
//! revocations, shares and their results, range completion), reconnecting with backoff when
//! the coordinator goes away, keeping unacknowledged shares across reconnects, and the
//! graceful shutdown. Each device's backend lives on its own search worker thread (`worker`,
//! a compute service; `compute` starts them), `scheduler` decides which device searches which
//! piece of a range, `metrics` keeps the counters and rates `--http` serves, and this module
//! is the async side that talks to the network.
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
mod scheduler;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hashgrid_common::message::{
    Assignment, AssignmentId, CoordinatorMessage, DeviceInfo, Hello, NodeHello, NodeMessage, RejectReason, Share,
    ShareOutcome, close_code,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use self::compute::{DeviceListError, DeviceSpec, Devices};
pub use self::metrics::NodeMetrics;
use self::scheduler::{DeviceClass, DeviceId, Piece, PieceEnd, Scheduler};
use self::worker::{DeviceEvent, Ready, Work, Worker, WorkerEvent};
use crate::search::{BackendChoice, BackendKind, NONCE_SPACE, SearchError};
use hashgrid_common::net::{self, FrameWriter, FramedStream, NetError};

/// How long the backend is measured before the node joins.
pub const MEASURE_FOR: Duration = Duration::from_secs(1);
/// The first reconnect delay; it doubles up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the coordinator may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest heartbeat period honoured, whatever the coordinator asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Unanswered shares kept for re-sending; beyond this the oldest are dropped.
const MAX_PENDING_SHARES: usize = 1 << 16;
/// The close reason a node sends, with `close_code::DEPARTING`, when it stops.
pub const SHUTDOWN_REASON: &str = "node shutting down";

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub coordinator: SocketAddr,
    /// The coordinator's certificate (PEM), the only one trusted.
    pub ca_pem: Vec<u8>,
    /// The join token (the coordinator's `node.token`).
    pub token: String,
    pub name: String,
    /// Join as a standby.
    pub standby: bool,
    pub backend: BackendChoice,
    pub adapter: Option<String>,
    pub threads: Option<usize>,
}

/// How a node computes and what it announces, beyond `NodeConfig`; the default is one device
/// picked by `NodeConfig::backend` and the measured rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOptions {
    /// One compute service per device listed (`--devices`); `None`: the one device
    /// `NodeConfig::backend` and `adapter` pick. `NodeConfig::threads` sizes the CPU either way.
    pub devices: Option<Devices>,
    /// The rate (hashes per second) announced instead of the measured one (`--announce-rate`);
    /// the per-device rates are scaled to sum to it. Ranges are still split by measured rates.
    pub announce_rate: Option<f64>,
    /// The software version announced instead of this build's (`--announce-version`): for
    /// packaged builds with local patches, and for trying a rollout.
    pub announce_version: Option<String>,
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
/// `Ok`) or a permanent error: the backend cannot open or fails, the certificate is not the
/// pinned one, or the coordinator refuses the token. A lost connection is retried forever,
/// with exponential backoff.
pub async fn run_node(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    run_node_with(config, NodeOptions::default(), shutdown).await
}

/// `run_node` with a choice of devices and an announced rate. With several devices, the node
/// stops on a device failure only when it was the last device left.
pub async fn run_node_with(
    config: NodeConfig,
    options: NodeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    run_node_observed(config, options, NodeMetrics::new(), shutdown).await
}

/// `run_node_with`, keeping `metrics` up to date as it runs (`hashgrid-node run --http`).
pub async fn run_node_observed(
    config: NodeConfig,
    options: NodeOptions,
    metrics: NodeMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let (planned, single) = match &options.devices {
        Some(devices) => (compute::plan(&devices.resolve(), config.threads), false),
        None => (vec![compute::plan_single(config.backend, config.adapter.clone(), config.threads)], true),
    };
    run_metered(config, options, planned, single, metrics, shutdown).await
}

/// `run_metered` with metrics nobody reads.
#[cfg(test)]
async fn run_planned(
    config: NodeConfig,
    options: NodeOptions,
    planned: Vec<compute::Planned>,
    single: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    run_metered(config, options, planned, single, NodeMetrics::new(), shutdown).await
}

/// Runs the node on the `planned` devices; `single`: the one device of `--backend`, whose
/// errors read as they always have.
async fn run_metered(
    config: NodeConfig,
    options: NodeOptions,
    planned: Vec<compute::Planned>,
    single: bool,
    metrics: NodeMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Checks the pinned certificate before spending time on the backends.
    let endpoint = net::client_endpoint_for(&config.ca_pem, config.coordinator)?;
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
            return Ok(());
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
    log_devices(&ready, options.announce_rate);

    let devices =
        ready.into_iter().zip(workers).map(|(ready, worker)| Device { ready, worker: Some(worker) }).collect();
    let mut node = Node::new(config, options, devices, events, metrics);
    let result = node.run(&endpoint, shutdown.as_mut()).await;
    node.cancel_all();
    endpoint.close(close_code::DEPARTING.into(), SHUTDOWN_REASON.as_bytes());
    // Gives the close a moment to reach the coordinator.
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    info!(accepted = node.counts.accepted, rejected = node.counts.rejected, "node stopped");
    stop_workers(node.devices.into_iter().filter_map(|d| d.worker).collect()).await;
    result
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

/// How one connection ended.
enum SessionEnd {
    Shutdown,
    /// The connection was lost or refused for a reason a retry may fix.
    Lost(String),
}

/// One compute service: a device and its worker (`None` once it has failed).
struct Device {
    ready: Ready,
    worker: Option<Worker>,
}

/// A share sent and not yet answered.
struct Pending {
    share: Share,
    /// Sent again after a reconnect: the coordinator may have credited it already.
    resent: bool,
}

/// The node's state across connections.
struct Node {
    config: NodeConfig,
    options: NodeOptions,
    devices: Vec<Device>,
    events: mpsc::UnboundedReceiver<DeviceEvent>,
    /// Which device searches which piece; each device's current rate estimate.
    scheduler: Scheduler,
    /// The cancel flags of the current connection's ranges (shared by all of a range's
    /// pieces), by assignment id.
    active: HashMap<AssignmentId, Arc<AtomicBool>>,
    /// Messages for the coordinator, sent once the current event is handled; dropped between
    /// connections (shares stay in `pending`).
    outbox: VecDeque<NodeMessage>,
    next_share: u64,
    /// Shares not yet answered, by id.
    pending: BTreeMap<u64, Pending>,
    counts: ShareCounts,
    metrics: NodeMetrics,
}

impl Node {
    fn new(
        config: NodeConfig,
        options: NodeOptions,
        devices: Vec<Device>,
        events: mpsc::UnboundedReceiver<DeviceEvent>,
        metrics: NodeMetrics,
    ) -> Self {
        let class = |kind| if kind == BackendKind::Gpu { DeviceClass::Gpu } else { DeviceClass::Cpu };
        let scheduler = Scheduler::new(devices.iter().map(|d| (class(d.ready.kind), d.ready.hashrate)));
        for (id, d) in devices.iter().enumerate() {
            metrics.set_device_rate(id, &d.ready.kind.to_string(), &d.ready.device, d.ready.hashrate);
        }
        Node {
            config,
            options,
            devices,
            events,
            scheduler,
            active: HashMap::new(),
            outbox: VecDeque::new(),
            next_share: 0,
            pending: BTreeMap::new(),
            counts: ShareCounts::default(),
            metrics,
        }
    }

    /// Connects, serves, and reconnects until shutdown or a permanent error.
    async fn run<S: Future<Output = ()>>(
        &mut self,
        endpoint: &quinn::Endpoint,
        mut shutdown: Pin<&mut S>,
    ) -> Result<(), NodeError> {
        let mut backoff = Backoff::default();
        loop {
            let end = self.session(endpoint, shutdown.as_mut(), &mut backoff).await;
            self.metrics.set_connected(false);
            match end? {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost(reason) => {
                    self.cancel_all();
                    let delay = backoff.next_delay();
                    info!(%reason, retry_in_ms = delay.as_millis() as u64, "reconnecting");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            () = shutdown.as_mut() => return Ok(()),
                            event = self.events.recv() => {
                                // No connection: nothing to send (shares stay pending).
                                self.on_event(event)?;
                                self.outbox.clear();
                            }
                        }
                    }
                }
            }
        }
    }

    /// One connection: hello, welcome, then messages until it ends.
    async fn session<S: Future<Output = ()>>(
        &mut self,
        endpoint: &quinn::Endpoint,
        mut shutdown: Pin<&mut S>,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd, NodeError> {
        let addr = self.config.coordinator;
        let conn = tokio::select! {
            conn = net::connect(endpoint, addr) => match conn {
                Ok(conn) => conn,
                Err(e) if e.is_permanent() => return Err(e.into()),
                Err(e) => return Ok(SessionEnd::Lost(e.to_string())),
            },
            () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
        };
        let close = |conn: &quinn::Connection| conn.close(close_code::DEPARTING.into(), SHUTDOWN_REASON.as_bytes());

        let welcome = tokio::select! {
            welcome = tokio::time::timeout(WELCOME_TIMEOUT, self.hello(&conn)) => welcome,
            () = shutdown.as_mut() => {
                close(&conn);
                return Ok(SessionEnd::Shutdown);
            }
        };
        let (stream, node_id, heartbeat) = match welcome {
            Err(_) => {
                conn.close(close_code::NORMAL.into(), b"no welcome");
                return Ok(SessionEnd::Lost("the coordinator did not answer the hello".into()));
            }
            Ok(Err(e)) if e.is_permanent() => return Err(e.into()),
            Ok(Err(e)) => return Ok(SessionEnd::Lost(e.to_string())),
            Ok(Ok(welcome)) => welcome,
        };
        backoff.reset();
        self.metrics.set_connected(true);
        self.metrics.set_hashrate(self.hashrate());
        info!(%addr, node = node_id, name = %self.config.name, standby = self.config.standby, "connected");

        let (mut reader, mut writer) = stream.split();
        let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
        // The reader runs in its own task: a frame read is not cancel-safe.
        let reader_task = tokio::spawn(async move {
            loop {
                let item = reader.recv::<CoordinatorMessage>().await;
                let end = !matches!(item, Ok(Some(_)));
                if inbound_tx.send(item).is_err() || end {
                    return;
                }
            }
        });
        let end = self.serve(&conn, &mut writer, &mut inbound, heartbeat, shutdown).await;
        reader_task.abort();
        match end {
            Ok(SessionEnd::Shutdown) => {
                close(&conn);
                Ok(SessionEnd::Shutdown)
            }
            Ok(lost) => {
                conn.close(close_code::NORMAL.into(), b"connection lost");
                Ok(lost)
            }
            Err(e) => {
                close(&conn);
                Err(e)
            }
        }
    }

    /// The measured rate: the sum over the devices still working.
    fn measured_rate(&self) -> f64 {
        (0..self.devices.len()).filter(|&d| self.scheduler.is_alive(d)).map(|d| self.scheduler.rate(d)).sum()
    }

    /// The rate announced to the coordinator: `--announce-rate`, else the measured one.
    fn hashrate(&self) -> f64 {
        self.options.announce_rate.unwrap_or_else(|| self.measured_rate())
    }

    /// The devices still working with their rates, scaled to sum to `hashrate()`.
    fn devices(&self) -> Vec<DeviceInfo> {
        let alive: Vec<DeviceId> = (0..self.devices.len()).filter(|&d| self.scheduler.is_alive(d)).collect();
        let (measured, announced) = (self.measured_rate(), self.hashrate());
        let rate = |d: DeviceId| match self.options.announce_rate {
            None => self.scheduler.rate(d),
            Some(_) if measured > 0.0 => self.scheduler.rate(d) * announced / measured,
            Some(_) => announced / alive.len() as f64,
        };
        alive
            .iter()
            .map(|&d| {
                let ready = &self.devices[d].ready;
                DeviceInfo { kind: ready.kind.to_string(), name: ready.device.clone(), hashrate: rate(d) }
            })
            .collect()
    }

    /// Sends the hello and waits for the welcome; re-sends unanswered shares.
    async fn hello(&mut self, conn: &quinn::Connection) -> Result<(FramedStream, u64, Duration), NetError> {
        let mut stream = FramedStream::open(conn).await?;
        let hello = Hello::Node(NodeHello {
            token: self.config.token.clone(),
            name: self.config.name.clone(),
            software_version: self
                .options
                .announce_version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            standby: self.config.standby,
            devices: self.devices(),
            hashrate: self.hashrate(),
        });
        stream.send(&hello).await?;
        let closed = |conn: &quinn::Connection, fallback: NetError| {
            conn.close_reason().map_or(fallback, |e| NetError::from_connection(e, "coordinator"))
        };
        let (node_id, heartbeat_ms) = loop {
            match stream.recv::<CoordinatorMessage>().await {
                Ok(Some(CoordinatorMessage::Welcome { node, heartbeat_ms })) => break (node, heartbeat_ms),
                Ok(Some(CoordinatorMessage::Close { reason })) => {
                    info!(%reason, "the coordinator is closing the connection");
                }
                Ok(Some(other)) => {
                    warn!(?other, "message before the welcome; ignored");
                }
                Ok(None) => return Err(closed(conn, NetError::NoReply)),
                Err(e @ NetError::StreamReset { .. }) => return Err(closed(conn, e)),
                Err(e) => return Err(e),
            }
        };
        let heartbeat = Duration::from_millis(heartbeat_ms.into()).max(MIN_HEARTBEAT);
        if !self.pending.is_empty() {
            info!(shares = self.pending.len(), "re-sending unanswered shares");
            for pending in self.pending.values_mut() {
                pending.resent = true;
                stream.send(&NodeMessage::Share(pending.share)).await?;
            }
        }
        Ok((stream, node_id, heartbeat))
    }

    /// The connection's main loop.
    async fn serve<S: Future<Output = ()>>(
        &mut self,
        conn: &quinn::Connection,
        writer: &mut FrameWriter,
        inbound: &mut mpsc::UnboundedReceiver<Result<Option<CoordinatorMessage>, NetError>>,
        heartbeat: Duration,
        mut shutdown: Pin<&mut S>,
    ) -> Result<SessionEnd, NodeError> {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = |e: NetError| -> Result<SessionEnd, NodeError> {
            if e.is_permanent() { Err(e.into()) } else { Ok(SessionEnd::Lost(e.to_string())) }
        };
        self.outbox.clear();
        loop {
            let sent = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
                // Before the others, so a flood of shares cannot delay heartbeats.
                _ = ticker.tick() => writer.send(&NodeMessage::Heartbeat { hashrate: self.hashrate(), devices: self.devices() }).await,
                item = inbound.recv() => match item {
                    Some(Ok(Some(msg))) => {
                        self.on_message(msg)?;
                        self.flush(writer).await
                    }
                    Some(Err(e @ NetError::StreamReset { .. })) | Some(Err(e @ NetError::Stream(_))) => {
                        return lost(conn.close_reason().map_or(e, |c| NetError::from_connection(c, "coordinator")));
                    }
                    Some(Err(e)) => return lost(e),
                    Some(Ok(None)) | None => {
                        return lost(conn.close_reason().map_or(NetError::NoReply, |c| NetError::from_connection(c, "coordinator")));
                    }
                },
                event = self.events.recv() => {
                    self.on_event(event)?;
                    self.flush(writer).await
                }
            };
            if let Err(e) = sent {
                return lost(e);
            }
        }
    }

    /// Sends what the last message or event produced.
    async fn flush(&mut self, writer: &mut FrameWriter) -> Result<(), NetError> {
        while let Some(msg) = self.outbox.pop_front() {
            writer.send(&msg).await?;
        }
        Ok(())
    }

    /// Acts on one coordinator message.
    fn on_message(&mut self, msg: CoordinatorMessage) -> Result<(), NodeError> {
        match msg {
            CoordinatorMessage::Assign(assignment) => return self.assign(assignment),
            CoordinatorMessage::Revoke { assignment } => {
                self.scheduler.revoke(assignment);
                if let Some(cancel) = self.active.remove(&assignment) {
                    cancel.store(true, Ordering::Relaxed);
                    info!(assignment, "revoked");
                } else {
                    debug!(assignment, "revoke of a range not held");
                }
            }
            CoordinatorMessage::ShareResult { id, outcome } => {
                let Some(Pending { share, resent }) = self.pending.remove(&id) else {
                    debug!(id, "result for a share not pending");
                    return Ok(());
                };
                match outcome {
                    ShareOutcome::Accepted { work } => {
                        self.counts.accepted += 1;
                        self.metrics.share_accepted();
                        debug!(id, nonce = share.nonce, work, "share accepted");
                    }
                    ShareOutcome::Rejected(RejectReason::Duplicate) if resent => {
                        // Credited before the connection dropped, its result lost with it.
                        self.counts.rejected += 1;
                        self.metrics.share_rejected(RejectReason::Duplicate);
                        debug!(id, nonce = share.nonce, "re-sent share was already credited");
                    }
                    ShareOutcome::Rejected(reason) => {
                        self.counts.rejected += 1;
                        self.metrics.share_rejected(reason);
                        warn!(id, nonce = share.nonce, job = share.job, reason = reason.as_str(), "share rejected");
                    }
                }
            }
            CoordinatorMessage::Welcome { .. } => warn!("second welcome on one connection; ignored"),
            CoordinatorMessage::Close { reason } => info!(%reason, "the coordinator is closing the connection"),
        }
        Ok(())
    }

    /// Splits a range between the devices and queues the pieces on their workers.
    fn assign(&mut self, assignment: Assignment) -> Result<(), NodeError> {
        if assignment.count == 0 || assignment.start as u64 + assignment.count > NONCE_SPACE {
            warn!(
                assignment = assignment.id,
                start = assignment.start,
                count = assignment.count,
                "invalid range; ignored"
            );
            return Ok(());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(old) = self.active.insert(assignment.id, cancel) {
            old.store(true, Ordering::Relaxed);
        }
        info!(
            assignment = assignment.id,
            job = assignment.job,
            start = assignment.start,
            count = assignment.count,
            "assigned"
        );
        let Ok(pieces) = self.scheduler.assign(assignment) else {
            // Unreachable: the node stops when its last device fails.
            return Err(NodeError::WorkerGone);
        };
        self.submit(pieces)
    }

    /// Queues pieces on their devices' workers; a worker found stopped fails its device over.
    fn submit(&mut self, pieces: Vec<Piece>) -> Result<(), NodeError> {
        let mut queue = VecDeque::from(pieces);
        while let Some(Piece { ticket, device, assignment }) = queue.pop_front() {
            let Some(cancel) = self.active.get(&assignment.id).cloned() else { continue };
            if self.devices.len() > 1 {
                debug!(assignment = assignment.id, device, start = assignment.start, count = assignment.count, "piece");
            }
            let work = Work { ticket, assignment, cancel };
            if self.devices[device].worker.as_ref().is_some_and(|worker| worker.submit(work)) {
                continue;
            }
            // The worker has stopped (its `Failed`, if any, is still on the way).
            warn!(device, "the search thread has stopped");
            queue.extend(self.fail_device(device, NodeError::WorkerGone)?);
        }
        Ok(())
    }

    /// Drops a failed device: the unsearched rest of its pieces goes to the devices left, and
    /// `last_error` stops the node if there are none. The pieces to submit.
    fn fail_device(&mut self, device: DeviceId, last_error: NodeError) -> Result<Vec<Piece>, NodeError> {
        if !self.scheduler.is_alive(device) {
            return Ok(Vec::new());
        }
        // Its thread has ended, or ends at its next look at the queue.
        drop(self.devices[device].worker.take());
        let ready = &self.devices[device].ready;
        self.metrics.set_device_rate(device, &ready.kind.to_string(), &ready.device, 0.0);
        let failover = match self.scheduler.device_failed(device) {
            Ok(failover) if !self.scheduler.routing_order().is_empty() => failover,
            _ => return Err(last_error),
        };
        warn!(device, name = %self.devices[device].ready.device, pieces = failover.pieces.len(), "device dropped; its work goes to the others");
        for end in failover.ends {
            self.on_piece_end(end);
        }
        Ok(failover.pieces)
    }

    /// Acts on one worker event; a fatal problem is an `Err`. What it sends goes to the outbox.
    fn on_event(&mut self, event: Option<DeviceEvent>) -> Result<(), NodeError> {
        let Some(DeviceEvent { device, event }) = event else { return Err(NodeError::WorkerGone) };
        match event {
            WorkerEvent::Hit { assignment, nonce } => {
                let share = Share {
                    id: self.next_share,
                    assignment: assignment.id,
                    job: assignment.job,
                    version: assignment.header.version,
                    time: assignment.header.time,
                    nonce,
                };
                self.next_share += 1;
                debug!(id = share.id, assignment = share.assignment, nonce, device, "share found");
                self.pending.insert(share.id, Pending { share, resent: false });
                if self.pending.len() > MAX_PENDING_SHARES
                    && let Some((id, _)) = self.pending.pop_first()
                {
                    warn!(id, "too many unanswered shares; dropping the oldest");
                }
                self.outbox.push_back(NodeMessage::Share(share));
            }
            WorkerEvent::Progress { ticket, hashes, elapsed } => {
                self.scheduler.progress(ticket, hashes);
                if !elapsed.is_zero() && hashes > 0 {
                    let sample = hashes as f64 / elapsed.as_secs_f64();
                    let rate = 0.8 * self.scheduler.rate(device) + 0.2 * sample;
                    self.scheduler.set_rate(device, rate);
                    self.publish_rate(device);
                }
            }
            WorkerEvent::Finished { ticket, assignment, hashes, complete } => {
                debug!(assignment, device, hashes, complete, "piece ended");
                let end = self.scheduler.finished(ticket, hashes, complete);
                self.on_piece_end(end);
            }
            WorkerEvent::Invalid { ticket, assignment, error } => {
                warn!(assignment, %error, "range cannot be searched; ignored");
                let end = self.scheduler.finished(ticket, 0, false);
                self.on_piece_end(end);
            }
            WorkerEvent::Failed(e) => {
                warn!(device, error = %e, "search backend failed");
                let pieces = self.fail_device(device, NodeError::Search(e))?;
                self.submit(pieces)?;
            }
        }
        Ok(())
    }

    /// Acts on what the end of a piece means for its range.
    fn on_piece_end(&mut self, end: PieceEnd) {
        match end {
            PieceEnd::Stale | PieceEnd::Pending => {}
            PieceEnd::RangeDone { assignment, hashes } => {
                self.active.remove(&assignment);
                info!(assignment, hashes, "range done");
                self.outbox.push_back(NodeMessage::RangeDone { assignment, hashes });
            }
            PieceEnd::RangeDropped { assignment } => {
                if let Some(cancel) = self.active.remove(&assignment) {
                    cancel.store(true, Ordering::Relaxed);
                }
                warn!(assignment, "a piece of the range stopped short; the range is dropped");
            }
        }
    }

    /// Publishes a device's rate and the node's announced rate as metrics.
    fn publish_rate(&self, device: DeviceId) {
        let ready = &self.devices[device].ready;
        self.metrics.set_device_rate(device, &ready.kind.to_string(), &ready.device, self.scheduler.rate(device));
        self.metrics.set_hashrate(self.hashrate());
    }

    /// Cancels every range (the connection they belong to is gone).
    fn cancel_all(&mut self) {
        self.scheduler.clear();
        for (_, cancel) in self.active.drain() {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Reconnect delays: `BACKOFF_MIN` doubling to `BACKOFF_MAX`, each drawn between half and all
/// of the current step so that many nodes do not reconnect in lockstep.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let step = BACKOFF_MIN.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * rand::random::<f64>())
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}
