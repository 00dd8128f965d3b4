//! The node service (`hashgrid-node run`): joins a coordinator and searches the ranges it
//! assigns, for as long as the node runs.
//!
//! Owns: the node's side of the hashgrid/1 session (hello, welcome, heartbeats, assignments,
//! revocations, shares and their results, range completion), reconnecting with backoff when
//! the coordinator goes away, keeping unacknowledged shares across reconnects, and the
//! graceful shutdown. The backend lives on the search worker thread (`worker`); this module
//! is the async side that talks to the network.
//!
//! Assignments queue up on the worker in arrival order, so a coordinator that sends the next
//! range ahead keeps the node busy. A `Revoke` cancels its range wherever it is (running or
//! queued); a revoked range gets no `RangeDone`. Each verified hit becomes a `Share` at once.
//! A lost connection cancels every range (they belonged to that connection); shares not yet
//! answered with `ShareResult` are sent again on the next connection, under their old ids.

mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hashgrid_common::message::{
    Assignment, AssignmentId, CoordinatorMessage, DeviceInfo, Hello, NodeHello, NodeMessage, RejectReason, Share,
    ShareOutcome,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::worker::{Ready, Work, Worker, WorkerEvent};
use crate::net::{self, CLOSE_NORMAL, FrameWriter, FramedStream, NetError};
use crate::search::{BackendChoice, NONCE_SPACE, SearchError};

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
/// The close reason a node sends when it stops.
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

/// Why the node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("search backend: {0}")]
    Search(#[from] SearchError),
    /// An error retrying cannot fix: the pinned certificate does not match, the protocol is
    /// not spoken, or the token was refused.
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot start the search thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the search thread stopped unexpectedly")]
    WorkerGone,
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
    let mut shutdown = std::pin::pin!(shutdown);
    // Checks the pinned certificate before spending time on the backend.
    let endpoint = net::client_endpoint_for(&config.ca_pem, config.coordinator)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (worker, ready) = Worker::start(config.backend, config.adapter.clone(), config.threads, MEASURE_FOR, events_tx)
        .map_err(NodeError::Thread)?;
    let ready = tokio::select! {
        ready = ready => ready.map_err(|_| NodeError::WorkerGone)?,
        () = &mut shutdown => {
            worker.stop(Duration::from_secs(2)).await;
            return Ok(());
        }
    };
    let ready = match ready {
        Ok(ready) => ready,
        Err(e) => {
            worker.stop(Duration::from_secs(2)).await;
            return Err(e.into());
        }
    };
    info!(backend = %ready.kind, device = %ready.device, hashrate = format_args!("{:.2} MH/s", ready.hashrate / 1e6), "search backend ready");

    let mut node = Node::new(config, ready, worker, events);
    let result = node.run(&endpoint, shutdown.as_mut()).await;
    node.cancel_all();
    endpoint.close(CLOSE_NORMAL.into(), SHUTDOWN_REASON.as_bytes());
    // Gives the close a moment to reach the coordinator.
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    info!(accepted = node.counts.accepted, rejected = node.counts.rejected, "node stopped");
    node.worker.stop(Duration::from_secs(2)).await;
    result
}

/// How one connection ended.
enum SessionEnd {
    Shutdown,
    /// The connection was lost or refused for a reason a retry may fix.
    Lost(String),
}

/// A range the node is searching or has queued for the current connection.
struct Active {
    ticket: u64,
    cancel: Arc<AtomicBool>,
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
    ready: Ready,
    worker: Worker,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// The current rate estimate (hashes per second).
    hashrate: f64,
    next_ticket: u64,
    /// Ranges of the current connection, by assignment id.
    active: HashMap<AssignmentId, Active>,
    next_share: u64,
    /// Shares not yet answered, by id.
    pending: BTreeMap<u64, Pending>,
    counts: ShareCounts,
}

impl Node {
    fn new(config: NodeConfig, ready: Ready, worker: Worker, events: mpsc::UnboundedReceiver<WorkerEvent>) -> Self {
        Node {
            config,
            hashrate: ready.hashrate,
            ready,
            worker,
            events,
            next_ticket: 0,
            active: HashMap::new(),
            next_share: 0,
            pending: BTreeMap::new(),
            counts: ShareCounts::default(),
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
            match self.session(endpoint, shutdown.as_mut(), &mut backoff).await? {
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
                                // No connection, so nothing is sent and no send can fail.
                                let _ = self.on_event(event, None).await?;
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
        let close = |conn: &quinn::Connection| conn.close(CLOSE_NORMAL.into(), SHUTDOWN_REASON.as_bytes());

        let welcome = tokio::select! {
            welcome = tokio::time::timeout(WELCOME_TIMEOUT, self.hello(&conn)) => welcome,
            () = shutdown.as_mut() => {
                close(&conn);
                return Ok(SessionEnd::Shutdown);
            }
        };
        let (stream, node_id, heartbeat) = match welcome {
            Err(_) => {
                conn.close(CLOSE_NORMAL.into(), b"no welcome");
                return Ok(SessionEnd::Lost("the coordinator did not answer the hello".into()));
            }
            Ok(Err(e)) if e.is_permanent() => return Err(e.into()),
            Ok(Err(e)) => return Ok(SessionEnd::Lost(e.to_string())),
            Ok(Ok(welcome)) => welcome,
        };
        backoff.reset();
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
                conn.close(CLOSE_NORMAL.into(), b"connection lost");
                Ok(lost)
            }
            Err(e) => {
                close(&conn);
                Err(e)
            }
        }
    }

    /// The node's devices with their current rates.
    fn devices(&self) -> Vec<DeviceInfo> {
        vec![DeviceInfo { kind: self.ready.kind.to_string(), name: self.ready.device.clone(), hashrate: self.hashrate }]
    }

    /// Sends the hello and waits for the welcome; re-sends unanswered shares.
    async fn hello(&mut self, conn: &quinn::Connection) -> Result<(FramedStream, u64, Duration), NetError> {
        let mut stream = FramedStream::open(conn).await?;
        let hello = Hello::Node(NodeHello {
            token: self.config.token.clone(),
            name: self.config.name.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            standby: self.config.standby,
            devices: self.devices(),
            hashrate: self.hashrate,
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
        loop {
            let sent = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
                // Before the others, so a flood of shares cannot delay heartbeats.
                _ = ticker.tick() => writer.send(&NodeMessage::Heartbeat { hashrate: self.hashrate, devices: self.devices() }).await,
                item = inbound.recv() => match item {
                    Some(Ok(Some(msg))) => {
                        self.on_message(msg);
                        Ok(())
                    }
                    Some(Err(e @ NetError::StreamReset { .. })) | Some(Err(e @ NetError::Stream(_))) => {
                        return lost(conn.close_reason().map_or(e, |c| NetError::from_connection(c, "coordinator")));
                    }
                    Some(Err(e)) => return lost(e),
                    Some(Ok(None)) | None => {
                        return lost(conn.close_reason().map_or(NetError::NoReply, |c| NetError::from_connection(c, "coordinator")));
                    }
                },
                event = self.events.recv() => self.on_event(event, Some(writer)).await?,
            };
            if let Err(e) = sent {
                return lost(e);
            }
        }
    }

    /// Acts on one coordinator message.
    fn on_message(&mut self, msg: CoordinatorMessage) {
        match msg {
            CoordinatorMessage::Assign(assignment) => self.assign(assignment),
            CoordinatorMessage::Revoke { assignment } => {
                if let Some(active) = self.active.remove(&assignment) {
                    active.cancel.store(true, Ordering::Relaxed);
                    info!(assignment, "revoked");
                } else {
                    debug!(assignment, "revoke of a range not held");
                }
            }
            CoordinatorMessage::ShareResult { id, outcome } => {
                let Some(Pending { share, resent }) = self.pending.remove(&id) else {
                    debug!(id, "result for a share not pending");
                    return;
                };
                match outcome {
                    ShareOutcome::Accepted { work } => {
                        self.counts.accepted += 1;
                        debug!(id, nonce = share.nonce, work, "share accepted");
                    }
                    ShareOutcome::Rejected(RejectReason::Duplicate) if resent => {
                        // Credited before the connection dropped, its result lost with it.
                        self.counts.rejected += 1;
                        debug!(id, nonce = share.nonce, "re-sent share was already credited");
                    }
                    ShareOutcome::Rejected(reason) => {
                        self.counts.rejected += 1;
                        warn!(id, nonce = share.nonce, job = share.job, reason = reason.as_str(), "share rejected");
                    }
                }
            }
            CoordinatorMessage::Welcome { .. } => warn!("second welcome on one connection; ignored"),
            CoordinatorMessage::Close { reason } => info!(%reason, "the coordinator is closing the connection"),
        }
    }

    /// Queues a range on the worker.
    fn assign(&mut self, assignment: Assignment) {
        if assignment.count == 0 || assignment.start as u64 + assignment.count > NONCE_SPACE {
            warn!(
                assignment = assignment.id,
                start = assignment.start,
                count = assignment.count,
                "invalid range; ignored"
            );
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if let Some(old) = self.active.insert(assignment.id, Active { ticket, cancel: cancel.clone() }) {
            old.cancel.store(true, Ordering::Relaxed);
        }
        info!(
            assignment = assignment.id,
            job = assignment.job,
            start = assignment.start,
            count = assignment.count,
            "assigned"
        );
        if !self.worker.submit(Work { ticket, assignment, cancel }) {
            // The worker only stops after reporting `Failed`, which the event loop handles.
            warn!(assignment = assignment.id, "the search thread has stopped");
        }
    }

    /// Acts on one worker event; `writer` is `None` between connections. A network error
    /// comes back as `Ok(Err(_))`, a fatal one as `Err(_)`.
    async fn on_event(
        &mut self,
        event: Option<WorkerEvent>,
        writer: Option<&mut FrameWriter>,
    ) -> Result<Result<(), NetError>, NodeError> {
        let Some(event) = event else { return Err(NodeError::WorkerGone) };
        let msg = match event {
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
                debug!(id = share.id, assignment = share.assignment, nonce, "share found");
                self.pending.insert(share.id, Pending { share, resent: false });
                if self.pending.len() > MAX_PENDING_SHARES
                    && let Some((id, _)) = self.pending.pop_first()
                {
                    warn!(id, "too many unanswered shares; dropping the oldest");
                }
                NodeMessage::Share(share)
            }
            WorkerEvent::Progress { hashes, elapsed } => {
                if !elapsed.is_zero() && hashes > 0 {
                    let sample = hashes as f64 / elapsed.as_secs_f64();
                    self.hashrate = 0.8 * self.hashrate + 0.2 * sample;
                }
                return Ok(Ok(()));
            }
            WorkerEvent::Finished { ticket, assignment, hashes, complete } => {
                if self.active.get(&assignment).is_none_or(|a| a.ticket != ticket) {
                    return Ok(Ok(()));
                }
                self.active.remove(&assignment);
                if !complete {
                    return Ok(Ok(()));
                }
                info!(assignment, hashes, "range done");
                NodeMessage::RangeDone { assignment, hashes }
            }
            WorkerEvent::Invalid { ticket, assignment, error } => {
                if self.active.get(&assignment).is_some_and(|a| a.ticket == ticket) {
                    self.active.remove(&assignment);
                }
                warn!(assignment, %error, "range cannot be searched; ignored");
                return Ok(Ok(()));
            }
            WorkerEvent::Failed(e) => return Err(e.into()),
        };
        Ok(match writer {
            Some(writer) => writer.send(&msg).await,
            None => Ok(()),
        })
    }

    /// Cancels every range (the connection they belong to is gone).
    fn cancel_all(&mut self) {
        for (_, active) in self.active.drain() {
            active.cancel.store(true, Ordering::Relaxed);
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
