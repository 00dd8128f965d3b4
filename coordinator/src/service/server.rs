//! The coordinator service: a QUIC endpoint, one task per connection, a core thread that owns
//! the `Core` state machine, a store thread that owns the store (SQLite or PostgreSQL), and an
//! acknowledgement thread that sends what a commit allows once it is on disk.
//!
//! Connection tasks turn frames into `Event`s. An operator request that only reads what is
//! committed (`AdminRequest::needs_core` is false: the ledger, its verification, receipts, job
//! history) is answered on a blocking thread from a read-only connection (`admin::Readers`)
//! and never reaches the core thread; the others become events. The core thread takes every
//! event waiting, feeds them to the core (admin requests go to `admin::admin`), and hands the
//! batch's output as one `Group` to the store thread: the `Persist` records, then the sends, closes and admin replies
//! that followed them, in order. It then takes the next batch at once, so the core checks
//! batch k+1 while batch k commits. The store thread takes every group queued (FIFO) and
//! writes all their records in one transaction (group commit) without waiting for the disk
//! (`Durable::apply_unsynced`), then hands the groups to an acknowledgement thread and starts
//! the next commit. The acknowledgement thread flushes the WAL once for every commit handed
//! over (`WalSync`; on PostgreSQL the commit was durable already), and only then delivers
//! those groups' messages and replies, in order. So no share is acknowledged before its credit
//! is durable, and no admin reply leaves before the batch it was answered in is committed and
//! flushed, while commit N+1's SQL overlaps commit N's fsync; if a commit or a flush fails,
//! nothing more is sent, every node is closed and the service stops. A `Checkpointer` owned by the store thread keeps WAL checkpoints out of the commits
//! (the store thread only restarts the WAL between batches when it asks, `Store::maintain`).
//!
//! A reply too large for one frame becomes an `AdminResponse::Error` naming the cause (and is
//! logged); list replies are paged so that they fit (see `admin`).
//!
//! Connection I/O is batched: a node's reader decodes every frame of each received chunk
//! (`FrameReader::recv_batch`), and its writer drains its queue into one stream write. The
//! results the core gave one node one after another reach its queue as one `ShareResults`
//! entry (`deliver`), not one entry per share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashgrid_common::codec;
use hashgrid_common::http::{HttpError, HttpServer};
use hashgrid_common::message::{
    AdminRequest, AdminResponse, BATCHES_SINCE, CoordinatorMessage, Hello, MAX_BATCH_SHARES, NodeHello, NodeId,
    NodeMessage, PROTOCOL_VERSION, Policy, RejectReason, ShareVerdict, close_code, for_node, protocol_version, v1,
};
use hashgrid_common::net::FrameReader;
use hashgrid_common::stratum::MinerShare;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::admin::{Readers, admin};
use super::backlog::Backlog;
use super::http::Sources;
use super::limits::{Admission, ConnectionLimits, HELLO_DEADLINE, MAX_HELLO, check_identity};
use super::metrics::{CoreView, IntakeMetrics};
use super::store::backend::{Durable, OnStoreLoss, StoreLocation};
use super::store::{StoreError, WalSync};
use super::stratum::{self, StratumSettings};
use super::tls::{DataDir, TlsError, server_config, tokens_equal};
use super::upstream::{PoolConnections, PoolEvent};
use crate::core::ledger::LedgerRecord;
use crate::core::{Command, Core, CoreConfig, MinerOrder, StoreOp};

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    // The cause follows as the source (`{:#}` prints "store: CAUSE"), not repeated here.
    #[error("store")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("core thread stopped")]
    CoreStopped,
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Events the core thread takes in one batch at most.
const MAX_BATCH: usize = 4096;
/// A node connection's writer stops draining its queue into one write at this many bytes.
const WRITE_BATCH: usize = 64 << 10;

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub data_dir: PathBuf,
    /// Where the records are kept (the data dir's SQLite file by default).
    pub store: StoreLocation,
    /// On PostgreSQL, how long a silent active coordinator keeps the lease (`lease`).
    pub lease_ttl: Duration,
    /// On PostgreSQL, what to do when the database is lost while running.
    pub on_store_loss: OnStoreLoss,
    pub listen: SocketAddr,
    /// Overrides the stored policy when set.
    pub policy: Option<Policy>,
    pub core: CoreConfig,
    /// Connection caps in total and per source address.
    pub limits: ConnectionLimits,
    /// PEM certificates trusted for `stratum+ssl://` pools instead of the system's roots.
    pub pool_ca: Option<Vec<u8>>,
    /// The Stratum V1 server for existing miners (`None`: off).
    pub stratum: Option<StratumSettings>,
}

/// A running coordinator.
#[derive(Debug)]
pub struct Service {
    pub local_addr: SocketAddr,
    /// The Stratum server's address, when it runs.
    pub stratum_addr: Option<SocketAddr>,
    /// Its `stratum+ssl://` address, when it runs one.
    pub stratum_tls_addr: Option<SocketAddr>,
    pub data_dir: DataDir,
    store: StoreLocation,
    shutdown: watch::Sender<bool>,
    threads: Option<Threads>,
    endpoint: quinn::Endpoint,
    events: mpsc::UnboundedSender<Event>,
    /// Metrics kept across scrapes (the share-intake histogram).
    intake: IntakeMetrics,
    /// See `route_reads_through_core`.
    reads_on_core: Arc<AtomicBool>,
}

pub(super) enum Event {
    /// A node said hello over a connection speaking protocol version `protocol`.
    NodeJoined {
        node: NodeId,
        hello: NodeHello,
        protocol: u16,
        outbox: mpsc::UnboundedSender<Outgoing>,
    },
    NodeMessage {
        node: NodeId,
        msg: NodeMessage,
        /// When the chunk carrying it was read from the connection.
        at: Instant,
    },
    /// The node's connection ended: `departed` when the node said it was shutting down.
    NodeLeft {
        node: NodeId,
        departed: bool,
    },
    /// A Stratum connection subscribed (`stratum`); it leaves as `NodeLeft`.
    MinerSubscribed {
        node: NodeId,
        outbox: mpsc::UnboundedSender<Outgoing>,
    },
    /// The subscribed connection's miner authorized.
    MinerJoined {
        node: NodeId,
        worker: String,
        user_agent: String,
    },
    /// A share the miner's session verified.
    MinerShare {
        node: NodeId,
        ticket: u64,
        share: Box<MinerShare>,
        at: Instant,
    },
    /// Counts of shares the miner's session rejected itself, sent at most once a second.
    MinerRejected {
        node: NodeId,
        counts: Vec<(RejectReason, u64)>,
    },
    Admin {
        req: AdminRequest,
        reply: oneshot::Sender<AdminResponse>,
    },
    /// The HTTP endpoint's request for a consistent view of the core.
    View {
        reply: oneshot::Sender<CoreView>,
    },
    /// An account's pool connection.
    Pool(PoolEvent),
    Tick,
    Stop,
}

pub(super) enum Outgoing {
    /// A run of share results the core gave one node one after another comes as one
    /// `ShareResults` (one queue entry); the writer sends it as such, or one `ShareResult`
    /// each before hashgrid/3.
    Message(CoordinatorMessage),
    Close {
        code: u32,
        reason: String,
    },
    /// For a Stratum miner's session.
    Miner(MinerOrder),
}

/// The core and store threads.
#[derive(Debug)]
struct Threads {
    core: std::thread::JoinHandle<()>,
    store: std::thread::JoinHandle<Result<(), ServiceError>>,
}

/// What one batch of events produced, handed from the core thread to the store thread: the
/// records to make durable, and what may go out only once they are.
#[derive(Default)]
struct Group {
    /// Outboxes of the nodes that joined in the batch.
    joins: Vec<(NodeId, mpsc::UnboundedSender<Outgoing>)>,
    /// Nodes whose connection ended in the batch (nothing more is sent to them).
    leaves: Vec<NodeId>,
    ops: Vec<StoreOp>,
    /// The core's `Send`s and `Close`s, in order.
    deliveries: Vec<Command>,
    replies: Vec<(oneshot::Sender<AdminResponse>, AdminResponse)>,
    stop: bool,
    /// When each share of the batch arrived from its node, in the order the core answered
    /// them (for the share-intake histogram: arrival to acknowledgement).
    arrivals: std::collections::VecDeque<Instant>,
    /// Shares of nodes' connections in the batch: the room they hold in the backlog until the
    /// group is delivered.
    node_shares: usize,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    /// Opens (or creates) the data dir and its store, restores the core, and starts listening.
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let data_dir = DataDir::open_or_init(&config.data_dir)?;
        let endpoint = hashgrid_common::net::bind_endpoint(config.listen, Some(server_config(&data_dir)?))
            .map_err(|source| ServiceError::Listen { addr: config.listen, source })?;
        let local_addr =
            endpoint.local_addr().map_err(|source| ServiceError::Listen { addr: config.listen, source })?;
        // A standby opens its reader connection before it waits for the lease (SQLite's file
        // must exist first: after).
        let early_readers = match config.store {
            StoreLocation::Postgres(_) => Some(Readers::open(config.store.clone(), config.data_dir.clone())?),
            StoreLocation::Sqlite => None,
        };
        let (mut store, took_lease) = open_as_active(&config, &endpoint, local_addr).await?;
        // Loaded before any write: a warm standby's snapshot is only used while nothing was
        // written since it was read (`store::pg`); the takeover record is not in the snapshot.
        let snapshot = store.load()?;
        let takeover = store.epoch().map(|epoch| {
            let record = LedgerRecord::Takeover { epoch, coordinator: local_addr.to_string() };
            StoreOp::Ledger { at_ms: now_ms(), record }
        });
        store.start_up(takeover.as_slice())?;
        let readers = match early_readers {
            Some(readers) => Arc::new(readers),
            None => Arc::new(Readers::open(config.store.clone(), config.data_dir.clone())?),
        };
        let mut core_config = config.core.clone();
        core_config.id_base = now_ms();
        let mut core = Core::restore(core_config, snapshot);
        if let Some(policy) = config.policy {
            core.set_policy(now_ms(), policy);
            let ops: Vec<StoreOp> = core
                .drain_commands()
                .into_iter()
                .filter_map(|c| if let Command::Persist(op) = c { Some(op) } else { None })
                .collect();
            store.apply(&ops)?;
        }
        let node_token = Arc::new(DataDir::read_token(&data_dir.node_token)?);
        let admin_token = Arc::new(DataDir::read_token(&data_dir.admin_token)?);

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let checkpointer = store.checkpointer()?;
        let (groups_tx, groups_rx) = std::sync::mpsc::channel();
        let wake_core = events_tx.clone();
        let intake = IntakeMetrics::new(config.limits.unacknowledged_shares);
        let store_intake = intake.clone();
        let pool_events = events_tx.clone();
        let pools = PoolConnections::new(tokio::runtime::Handle::current(), config.pool_ca.clone(), move |e| {
            let _ = pool_events.send(Event::Pool(e));
        });
        let store_thread = std::thread::Builder::new()
            .name("hashgrid-store".into())
            .spawn(move || {
                let result = store_loop(store, groups_rx, &wake_core, &store_intake, pools);
                drop(checkpointer);
                result
            })
            .map_err(|e| ServiceError::Listen { addr: local_addr, source: e })?;
        let core_thread = std::thread::Builder::new()
            .name("hashgrid-core".into())
            .spawn({
                let readers = readers.clone();
                move || core_loop(core, &readers, events_rx, groups_tx)
            })
            .map_err(|e| ServiceError::Listen { addr: local_addr, source: e })?;
        let threads = Threads { core: core_thread, store: store_thread };

        let events = events_tx.clone();
        let ticker = events_tx.clone();
        let mut tick_shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = interval.tick() => if ticker.send(Event::Tick).is_err() { return },
                    _ = tick_shutdown.changed() => return,
                }
            }
        });
        let reads_on_core = Arc::new(AtomicBool::new(false));
        let accept_endpoint = endpoint.clone();
        let admission = Admission::new(config.limits);
        let peers = Peers {
            events: events_tx.clone(),
            readers,
            reads_on_core: reads_on_core.clone(),
            backlog: intake.backlog.clone(),
        };
        // QUIC nodes and Stratum miners draw their ids from one counter.
        let next_node = Arc::new(AtomicU64::new(1));
        let (stratum_addr, stratum_tls_addr) = match config.stratum {
            Some(settings) => {
                let addr = settings.listen;
                let started = stratum::listen(
                    settings,
                    &data_dir,
                    events_tx.clone(),
                    node_token.clone(),
                    next_node.clone(),
                    shutdown_rx.clone(),
                );
                let (plain, tls) = started.await.map_err(|source| ServiceError::Listen { addr, source })?;
                (Some(plain), tls)
            }
            None => (None, None),
        };
        tokio::spawn(async move {
            // Refusals are logged at most once a second, with the count since the last line.
            let (mut refused, mut logged_at) = (0u64, None::<Instant>);
            while let Some(incoming) = accept_endpoint.accept().await {
                // A source address must prove it receives (a QUIC Retry, one round trip) before
                // it counts against the caps: spoofed Initial packets hold no slot.
                if !incoming.remote_address_validated() {
                    let _ = incoming.retry();
                    continue;
                }
                // Counted from before the handshake until the connection's task ends.
                let admitted = match admission.admit(incoming.remote_address().ip()) {
                    Ok(admitted) => admitted,
                    Err(refusal) => {
                        refused += 1;
                        if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                            warn!("refused {refused} connection(s), the last: {refusal}");
                            (refused, logged_at) = (0, Some(Instant::now()));
                        }
                        incoming.refuse();
                        continue;
                    }
                };
                let (node_token, admin_token, next_node) = (node_token.clone(), admin_token.clone(), next_node.clone());
                let peers = peers.clone();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    let Ok(conn) = incoming.await else { return };
                    serve_connection(conn, peers, &node_token, &admin_token, &next_node).await;
                });
            }
        });
        let since_lease_ms = took_lease.elapsed().as_millis() as u64;
        info!(%local_addr, fingerprint = %data_dir.fingerprint(), since_lease_ms, "coordinator listening");
        Ok(Service {
            local_addr,
            stratum_addr,
            stratum_tls_addr,
            data_dir,
            store: config.store,
            shutdown,
            threads: Some(threads),
            endpoint,
            events,
            intake,
            reads_on_core,
        })
    }

    /// For benchmarks only: answer read-only operator requests on the core thread, as before
    /// they moved off it (`coordinator/examples/verify_stall.rs` measures both).
    #[doc(hidden)]
    pub fn route_reads_through_core(&self, on: bool) {
        self.reads_on_core.store(on, Ordering::Relaxed);
    }

    /// Serves Prometheus metrics on `/metrics` and the status page on `/` over HTTP at `addr`
    /// (port 0: a free port) until the service shuts down; the address bound.
    pub async fn serve_http(&self, addr: SocketAddr) -> Result<SocketAddr, ServiceError> {
        let server = HttpServer::bind(addr).await?;
        let local = server.local_addr();
        let reader = self.store.reader(&self.data_dir.path)?;
        let events = self.events.clone();
        let sources = Arc::new(Sources {
            ask_core: move |reply| events.send(Event::View { reply }).is_ok(),
            reader: Arc::new(std::sync::Mutex::new(reader)),
            live: self.intake.clone(),
        });
        let mut shutdown = self.shutdown.subscribe();
        let pages = move |path: String| {
            let sources = sources.clone();
            async move { sources.page(&path).await }
        };
        tokio::spawn(server.serve(pages, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }));
        info!(%local, "HTTP metrics and status page");
        Ok(local)
    }

    /// Stops accepting, tells every node, flushes the store, and waits for the core and store
    /// threads.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        let _ = self.shutdown.send(true);
        let _ = self.events.send(Event::Stop);
        let result = self.join().await;
        self.endpoint.close(close_code::NORMAL.into(), b"coordinator shutting down");
        self.endpoint.wait_idle().await;
        result
    }

    /// Runs until the store thread ends: after a store failure (an error) or `shutdown`.
    pub async fn wait(&mut self) -> Result<(), ServiceError> {
        self.join().await
    }

    /// Waits for the store thread (whose result tells how the service ended), then the core
    /// thread (which the store thread wakes when it fails).
    async fn join(&mut self) -> Result<(), ServiceError> {
        let Some(threads) = self.threads.take() else { return Ok(()) };
        tokio::task::spawn_blocking(move || {
            let stored = threads.store.join().map_err(|_| ServiceError::CoreStopped)?;
            let core = threads.core.join().map_err(|_| ServiceError::CoreStopped);
            stored.and(core)
        })
        .await
        .map_err(|_| ServiceError::CoreStopped)?
    }
}

/// Opens the store as the active coordinator (`StoreLocation::open_active`). While it waits for
/// the lease (a standby, on PostgreSQL), every connection to `endpoint` is refused with
/// `close_code::STANDBY` and a reason naming the active coordinator's address. Also returns
/// when it became the active one.
async fn open_as_active(
    config: &ServiceConfig,
    endpoint: &quinn::Endpoint,
    local_addr: SocketAddr,
) -> Result<(Box<dyn Durable>, Instant), ServiceError> {
    let active = Arc::new(std::sync::Mutex::new(String::from("unknown")));
    let refusing = tokio::spawn({
        let (endpoint, active) = (endpoint.clone(), active.clone());
        async move {
            while let Some(incoming) = endpoint.accept().await {
                let active = active.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let active = active.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let reason = format!("{}{active}", close_code::STANDBY_REASON);
                    conn.close(close_code::STANDBY.into(), reason.as_bytes());
                });
            }
        }
    });
    let (store, data_dir, ttl, on_loss) =
        (config.store.clone(), config.data_dir.clone(), config.lease_ttl, config.on_store_loss);
    let opened = tokio::task::spawn_blocking(move || {
        store.open_active(&data_dir, &local_addr.to_string(), ttl, on_loss, |held| {
            *active.lock().unwrap_or_else(|p| p.into_inner()) = held.address.clone();
        })
    })
    .await;
    let took_lease = Instant::now();
    refusing.abort();
    Ok((opened.map_err(|_| ServiceError::CoreStopped)??, took_lease))
}

/// The core thread: takes every event waiting, feeds them to the core, and hands the
/// batch's `Group` to the store thread. Ends after `Stop`, or when the store thread is gone.
fn core_loop(
    mut core: Core,
    readers: &Readers,
    mut events: mpsc::UnboundedReceiver<Event>,
    groups: std::sync::mpsc::Sender<Group>,
) {
    while let Some(first) = events.blocking_recv() {
        let mut batch = Vec::with_capacity(events.len().min(MAX_BATCH) + 1);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut group = Group::default();
        for event in batch {
            match event {
                Event::NodeJoined { node, hello, protocol, outbox } => {
                    group.joins.push((node, outbox));
                    core.handle_node_joined(now, node, &hello, protocol);
                }
                Event::NodeMessage { node, msg, at } => {
                    let shares = match &msg {
                        NodeMessage::Share(_) => 1,
                        NodeMessage::Shares(shares) => shares.len(),
                        _ => 0,
                    };
                    group.arrivals.extend(std::iter::repeat_n(at, shares));
                    group.node_shares += shares;
                    core.handle_node_message(now, node, msg)
                }
                Event::NodeLeft { node, departed } => {
                    group.leaves.push(node);
                    if departed {
                        core.handle_node_departed(now, node);
                    } else {
                        core.handle_node_left(now, node);
                    }
                }
                Event::MinerSubscribed { node, outbox } => {
                    group.joins.push((node, outbox));
                    core.handle_miner_subscribed(now, node);
                }
                Event::MinerJoined { node, worker, user_agent } => {
                    core.handle_miner_joined(now, node, &worker, &user_agent)
                }
                Event::MinerShare { node, ticket, share, at } => {
                    group.arrivals.push_back(at);
                    core.handle_miner_share(now, node, ticket, &share);
                }
                Event::MinerRejected { node, counts } => core.handle_miner_rejected(node, &counts),
                Event::Admin { req, reply } => {
                    // Read-only requests come here only when a benchmark asks.
                    let response = if req.needs_core() { admin(&mut core, now, req) } else { readers.answer(req) };
                    group.replies.push((reply, response));
                }
                Event::View { reply } => {
                    let _ = reply.send(CoreView::of(&core, now));
                }
                Event::Pool(PoolEvent::Connected { conn }) => core.handle_pool_connected(now, conn),
                Event::Pool(PoolEvent::Line { conn, line, .. }) => core.handle_pool_line(now, conn, &line),
                Event::Pool(PoolEvent::Closed { conn, reason }) => core.handle_pool_closed(now, conn, &reason),
                Event::Tick => core.handle_tick(now),
                Event::Stop => group.stop = true,
            }
        }
        let commands = core.drain_commands();
        let persists = commands.iter().filter(|c| matches!(c, Command::Persist(_))).count();
        // Sized once: growing by doubling copies every (large) command again at each step.
        group.ops.reserve_exact(persists);
        group.deliveries.reserve_exact(commands.len() - persists);
        for c in commands {
            match c {
                Command::Persist(op) => group.ops.push(op),
                other => group.deliveries.push(other),
            }
        }
        let stop = group.stop;
        if groups.send(group).is_err() || stop {
            break;
        }
    }
}

/// What the store thread hands the acknowledgement thread, in commit order.
enum Committed {
    /// Groups whose records are committed; durable once `sync` (if any) has run.
    Groups { sync: Option<WalSync>, groups: Vec<Group> },
    /// A commit failed: nothing of it goes out, and every node (these groups' joins too) is
    /// closed.
    Failed { joins: Vec<(NodeId, mpsc::UnboundedSender<Outgoing>)> },
}

/// The store thread: starts the acknowledgement thread, then takes every group queued and
/// commits all their records in one transaction without waiting for the disk
/// (`Durable::apply_unsynced`), hands the groups on, and goes on to the next commit while the
/// acknowledgement thread flushes the WAL and only then delivers their messages and replies,
/// in order (pipelining: commit N+1's SQL overlaps commit N's fsync). On a store failure
/// every node is closed, the core thread is woken with `Stop`, and the error is returned;
/// likewise when a flush fails.
fn store_loop(
    mut store: Box<dyn Durable>,
    groups: std::sync::mpsc::Receiver<Group>,
    wake_core: &mpsc::UnboundedSender<Event>,
    intake: &IntakeMetrics,
    pools: PoolConnections,
) -> Result<(), ServiceError> {
    let (committed, to_ack) = std::sync::mpsc::channel();
    let (wake, intake) = (wake_core.clone(), intake.clone());
    let acks = std::thread::Builder::new()
        .name("hashgrid-ack".into())
        .spawn(move || ack_loop(to_ack, &wake, &intake, pools))
        .map_err(ServiceError::Thread)?;
    let stored = commit_loop(&mut *store, &groups, &committed);
    drop(committed);
    let acked = acks.join().map_err(|_| ServiceError::CoreStopped)?;
    stored.and(acked)
}

/// The store thread's work: group commits, handed on in order (see `store_loop`).
fn commit_loop(
    store: &mut dyn Durable,
    groups: &std::sync::mpsc::Receiver<Group>,
    committed: &std::sync::mpsc::Sender<Committed>,
) -> Result<(), ServiceError> {
    let mut ops: Vec<StoreOp> = Vec::new();
    while let Ok(first) = groups.recv() {
        let mut queued = vec![first];
        queued.extend(groups.try_iter());
        ops.clear();
        for group in &mut queued {
            ops.append(&mut group.ops);
        }
        let sync = match if ops.is_empty() { Ok(None) } else { store.apply_unsynced(&ops) } {
            Ok(sync) => sync,
            Err(e) => {
                // Nothing after an unrecorded credit may be acknowledged: stop here.
                tracing::error!("store failed, stopping: {e}");
                let joins = queued.into_iter().flat_map(|g| g.joins).collect();
                let _ = committed.send(Committed::Failed { joins });
                return Err(e.into());
            }
        };
        let stop = queued.iter().any(|g| g.stop);
        // The acknowledgement thread is gone only after a failed flush (it reports it).
        if committed.send(Committed::Groups { sync, groups: queued }).is_err() || stop {
            break;
        }
        // Between commits: restart the WAL when asked.
        if let Err(e) = store.maintain() {
            warn!("WAL checkpoint (restart) failed: {e}");
        }
    }
    Ok(())
}

/// The acknowledgement thread: takes every commit handed over, flushes the WAL once for all
/// of them (one flush makes every commit before it durable), then delivers their groups'
/// messages and replies in order.
fn ack_loop(
    committed: std::sync::mpsc::Receiver<Committed>,
    wake_core: &mpsc::UnboundedSender<Event>,
    intake: &IntakeMetrics,
    mut pools: PoolConnections,
) -> Result<(), ServiceError> {
    let mut outboxes: HashMap<NodeId, mpsc::UnboundedSender<Outgoing>> = HashMap::new();
    let fail = |outboxes: &HashMap<NodeId, mpsc::UnboundedSender<Outgoing>>| {
        for outbox in outboxes.values() {
            let _ =
                outbox.send(Outgoing::Close { code: close_code::FAILED, reason: "coordinator store failed".into() });
        }
        let _ = wake_core.send(Event::Stop);
    };
    while let Ok(first) = committed.recv() {
        let mut batch = vec![first];
        batch.extend(committed.try_iter());
        let last_sync = batch.iter_mut().rev().find_map(|c| match c {
            Committed::Groups { sync, .. } => sync.take(),
            Committed::Failed { .. } => None,
        });
        if let Some(sync) = last_sync
            && let Err(e) = sync.sync()
        {
            tracing::error!("store failed, stopping: {e}");
            for c in batch {
                if let Committed::Groups { groups, .. } = c {
                    outboxes.extend(groups.into_iter().flat_map(|g| g.joins));
                }
            }
            fail(&outboxes);
            return Err(ServiceError::Store(e));
        }
        let mut stop = false;
        for c in batch {
            match c {
                Committed::Groups { groups, .. } => {
                    for group in groups {
                        stop |= deliver(group, &mut outboxes, intake, &mut pools);
                    }
                }
                Committed::Failed { joins } => {
                    outboxes.extend(joins);
                    fail(&outboxes);
                    return Ok(());
                }
            }
        }
        if stop {
            break;
        }
    }
    Ok(())
}

/// Delivers one committed group's messages and replies; whether it asked to stop.
fn deliver(
    group: Group,
    outboxes: &mut HashMap<NodeId, mpsc::UnboundedSender<Outgoing>>,
    intake: &IntakeMetrics,
    pools: &mut PoolConnections,
) -> bool {
    let mut arrivals = group.arrivals;
    intake.backlog.answered(group.node_shares);
    outboxes.extend(group.joins);
    for node in group.leaves {
        outboxes.remove(&node);
    }
    let now = Instant::now();
    let observe = |arrivals: &mut std::collections::VecDeque<Instant>| {
        if let Some(arrived) = arrivals.pop_front() {
            intake.share_intake.observe(now.saturating_duration_since(arrived).as_secs_f64());
        }
    };
    // A run of share results for one node goes to its outbox as one entry.
    let mut run: Option<(NodeId, Vec<ShareVerdict>)> = None;
    let end_run = |run: &mut Option<(NodeId, Vec<ShareVerdict>)>, outboxes: &HashMap<_, mpsc::UnboundedSender<_>>| {
        if let Some((node, verdicts)) = run.take()
            && let Some(outbox) = outboxes.get(&node)
        {
            let _ = outbox.send(Outgoing::Message(CoordinatorMessage::ShareResults(verdicts)));
        }
    };
    for c in group.deliveries {
        if let Command::Send { node, msg: CoordinatorMessage::ShareResult { id, outcome } } = c {
            observe(&mut arrivals);
            match &mut run {
                Some((held, verdicts)) if *held == node => verdicts.push(ShareVerdict { id, outcome }),
                _ => {
                    end_run(&mut run, outboxes);
                    run = Some((node, vec![ShareVerdict { id, outcome }]));
                }
            }
            continue;
        }
        end_run(&mut run, outboxes);
        match c {
            Command::Send { node, msg } => {
                if let Some(outbox) = outboxes.get(&node) {
                    let _ = outbox.send(Outgoing::Message(msg));
                }
            }
            Command::Close { node, reason } => {
                if let Some(outbox) = outboxes.remove(&node) {
                    let _ = outbox.send(Outgoing::Close { code: close_code::FAILED, reason });
                }
            }
            Command::Miner { node, order } => {
                let ack = matches!(order, MinerOrder::ShareRecorded { .. });
                if let Some(outbox) = outboxes.get(&node) {
                    let _ = outbox.send(Outgoing::Miner(order));
                }
                if ack {
                    observe(&mut arrivals);
                }
            }
            Command::PoolConnect { conn, url } => pools.connect(conn, &url),
            Command::PoolSend { conn, line } => pools.send(conn, line),
            Command::PoolClose { conn, reason } => pools.close(conn, &reason),
            Command::Persist(_) => {}
        }
    }
    end_run(&mut run, outboxes);
    for (reply, response) in group.replies {
        let _ = reply.send(response);
    }
    group.stop
}

/// Where a connection's task takes what it receives: the core thread's events, and the
/// read-only connections for operator reads.
#[derive(Clone)]
struct Peers {
    events: mpsc::UnboundedSender<Event>,
    readers: Arc<Readers>,
    reads_on_core: Arc<AtomicBool>,
    /// Room for nodes' shares whose answers wait for their commit.
    backlog: Arc<Backlog>,
}

/// Reads the first frame of the first stream (closing the connection if it takes longer than
/// `HELLO_DEADLINE`) and serves the connection as a node or admin.
async fn serve_connection(
    conn: quinn::Connection,
    peers: Peers,
    node_token: &str,
    admin_token: &str,
    next_node: &AtomicU64,
) {
    let protocol = negotiated_protocol(&conn);
    let first = tokio::time::timeout(HELLO_DEADLINE, async {
        let (send, recv) = conn.accept_bi().await.ok()?;
        let mut source = FrameReader::new(recv, "peer");
        source.set_max_frame(MAX_HELLO);
        let hello = source.recv::<Hello>().await;
        source.set_max_frame(codec::MAX_FRAME);
        Some(hello.map(|hello| (send, source, hello)))
    });
    let (send, source, hello) = match first.await {
        Ok(Some(Ok((send, source, Some(hello))))) => (send, source, hello),
        Ok(None | Some(Ok((_, _, None)))) => return,
        Ok(Some(Err(e))) => return e.close_connection(&conn),
        Err(_) => {
            let reason = format!("no hello within {HELLO_DEADLINE:?}");
            conn.close(close_code::NO_HELLO.into(), reason.as_bytes());
            return;
        }
    };
    match hello {
        Hello::Node(hello) => {
            if !tokens_equal(&hello.token, node_token) {
                conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                return;
            }
            if let Err(reason) = check_identity(&hello) {
                warn!("refused a node: {reason}");
                conn.close(close_code::INVALID_HELLO.into(), reason.as_bytes());
                return;
            }
            let node = next_node.fetch_add(1, Ordering::Relaxed);
            serve_node(conn, send, source, (peers.events, &peers.backlog), node, hello, protocol).await;
        }
        Hello::Admin { token } => {
            if !tokens_equal(&token, admin_token) {
                conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                return;
            }
            if protocol != PROTOCOL_VERSION {
                // Only nodes roll; the operator CLI is upgraded with the coordinator.
                let reason = format!("the operator CLI must speak hashgrid/{PROTOCOL_VERSION}: upgrade it");
                conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
                return;
            }
            // The first request rides on the hello's stream; later ones on their own streams.
            let first = tokio::spawn(serve_admin_stream(conn.clone(), send, source, peers.clone()));
            loop {
                let Ok((send, recv)) = conn.accept_bi().await else { break };
                let mut source = FrameReader::new(recv, "peer");
                match source.recv::<Hello>().await {
                    Ok(Some(Hello::Admin { token })) if tokens_equal(&token, admin_token) => {
                        tokio::spawn(serve_admin_stream(conn.clone(), send, source, peers.clone()));
                    }
                    Ok(_) => {
                        conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                        break;
                    }
                    Err(e) => {
                        e.close_connection(&conn);
                        break;
                    }
                }
            }
            let _ = first.await;
        }
    }
}

/// Answers one operator request: store-only reads on a blocking thread, the rest on the core
/// thread. Every request gets a reply frame.
async fn serve_admin_stream(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut source: FrameReader,
    peers: Peers,
) {
    let req = match source.recv::<AdminRequest>().await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => return e.close_connection(&conn),
    };
    let asked: String = format!("{req:?}").chars().take(80).collect();
    let stopping = || AdminResponse::Error("coordinator is shutting down".into());
    let response = if req.needs_core() || peers.reads_on_core.load(Ordering::Relaxed) {
        let (reply, response) = oneshot::channel();
        if peers.events.send(Event::Admin { req, reply }).is_err() {
            return;
        }
        response.await.unwrap_or_else(|_| stopping())
    } else {
        let readers = peers.readers.clone();
        tokio::task::spawn_blocking(move || readers.answer(req)).await.unwrap_or_else(|_| stopping())
    };
    if send.write_all(&reply_frame(&response, &asked)).await.is_ok() {
        let _ = send.finish();
    }
}

/// The frame of the reply to the request `asked`; one that cannot be encoded (over the frame
/// cap) becomes an `Error` naming the cause, and is logged.
fn reply_frame(response: &AdminResponse, asked: &str) -> Vec<u8> {
    codec::encode(response).unwrap_or_else(|e| {
        warn!("cannot send the reply to the operator request {asked}: {e}");
        let error = AdminResponse::Error(format!("the coordinator cannot send its reply: {e}"));
        // A short error always fits a frame.
        codec::encode(&error).unwrap_or_default()
    })
}

/// Serves a node after its hello: a writer task that sends whatever is queued with one write,
/// and a reader that turns every frame of each received chunk into an event (and stops reading
/// while `backlog` has no room for its shares).
async fn serve_node(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut source: FrameReader,
    (events, backlog): (mpsc::UnboundedSender<Event>, &Backlog),
    node: NodeId,
    hello: NodeHello,
    protocol: u16,
) {
    let (outbox, mut outgoing) = mpsc::unbounded_channel();
    info!(node, name = %hello.name, version = %hello.software_version, protocol, standby = hello.standby, "node joined");
    if events.send(Event::NodeJoined { node, hello, protocol, outbox }).is_err() {
        return;
    }
    let writer_conn = conn.clone();
    let writer_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        // Share results waiting to go out as one `ShareResults` (version 3 on).
        let mut verdicts = Vec::new();
        let batches = protocol >= BATCHES_SINCE;
        while let Some(first) = outgoing.recv().await {
            buf.clear();
            let mut close = None;
            let mut next = Some(first);
            while let Some(out) = next {
                let msg = match out {
                    Outgoing::Message(CoordinatorMessage::ShareResults(run)) => {
                        if batches {
                            verdicts.extend(run);
                            if verdicts.len() >= MAX_BATCH_SHARES && !encode_verdicts(&mut buf, &mut verdicts, node) {
                                return;
                            }
                        } else {
                            // Before hashgrid/3: one `ShareResult` frame each.
                            for msg in CoordinatorMessage::ShareResults(run).unbatched() {
                                match codec::encode(&for_node(protocol, msg)) {
                                    Ok(frame) => buf.extend_from_slice(&frame),
                                    Err(e) => {
                                        warn!(node, "cannot encode a message to the node: {e}");
                                        return;
                                    }
                                }
                            }
                        }
                        next = if buf.len() < WRITE_BATCH { outgoing.try_recv().ok() } else { None };
                        continue;
                    }
                    Outgoing::Message(msg) => msg,
                    Outgoing::Miner(_) => {
                        next = outgoing.try_recv().ok();
                        continue;
                    }
                    Outgoing::Close { code, reason } => {
                        let msg = CoordinatorMessage::Close { reason: reason.clone() };
                        close = Some((code, reason));
                        msg
                    }
                };
                // The results before it go first: the order is the core's.
                if !encode_verdicts(&mut buf, &mut verdicts, node) && close.is_none() {
                    return;
                }
                match codec::encode(&for_node(protocol, msg)) {
                    Ok(frame) => buf.extend_from_slice(&frame),
                    Err(e) => {
                        warn!(node, "cannot encode a message to the node: {e}");
                        if close.is_none() {
                            return;
                        }
                    }
                }
                next = if close.is_none() && buf.len() < WRITE_BATCH { outgoing.try_recv().ok() } else { None };
            }
            if !encode_verdicts(&mut buf, &mut verdicts, node) && close.is_none() {
                return;
            }
            let written = send.write_all(&buf).await;
            if let Some((code, reason)) = close {
                writer_conn.close(code.into(), reason.as_bytes());
                return;
            }
            if written.is_err() {
                return;
            }
        }
    });
    let mut departed = false;
    'read: loop {
        let chunk = if protocol == 1 {
            // Version 1 differs only in its heartbeat; convert as the frames come.
            source
                .recv_batch::<v1::NodeMessage>()
                .await
                .map(|c| c.map(convert_all))
                .map_err(|(m, e)| (convert_all(m), e))
        } else {
            source.recv_batch::<NodeMessage>().await
        };
        match chunk {
            Ok(Some(msgs)) => {
                if !forward(&events, backlog, &conn, node, protocol, msgs).await {
                    break 'read;
                }
            }
            Ok(None) => {
                departed = true;
                break;
            }
            Err((msgs, e)) => {
                // The frames before the bad one are the node's; then the connection ends.
                if !forward(&events, backlog, &conn, node, protocol, msgs).await {
                    break;
                }
                match e.close_reason() {
                    Some((code, reason)) if close_code::is_departure(code, reason) => {
                        departed = true;
                        info!(node, "node left: {}", reason.escape_debug())
                    }
                    Some((code, reason)) if code == u64::from(close_code::NORMAL) => {
                        info!(node, "node left: {}", reason.escape_debug())
                    }
                    // The reason is the peer's text: escaped, it cannot forge log lines.
                    Some(_) => warn!(node, "node connection closed: {}", e.to_string().escape_debug()),
                    None => {
                        warn!(node, "closing node connection: {}", e.to_string().escape_debug());
                        e.close_connection(&conn);
                    }
                }
                break;
            }
        }
    }
    let _ = events.send(Event::NodeLeft { node, departed });
    writer_task.abort();
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.events.send(Event::Stop);
    }
}

/// Hands a chunk's messages to the core thread, all with one arrival time. A message its
/// connection's protocol version does not allow closes the connection (`close_code::PROTOCOL`)
/// before it or anything after it is handed over. Shares wait for room in `backlog` (a batch
/// goes in parts when only part of it fits). `false`: stop reading.
async fn forward(
    events: &mpsc::UnboundedSender<Event>,
    backlog: &Backlog,
    conn: &quinn::Connection,
    node: NodeId,
    protocol: u16,
    msgs: Vec<NodeMessage>,
) -> bool {
    let at = Instant::now();
    for msg in msgs {
        if let Some(reason) = violation(protocol, &msg) {
            warn!(node, "closing node connection: {reason}");
            conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
            return false;
        }
        match msg {
            NodeMessage::Shares(mut rest) => {
                while !rest.is_empty() {
                    let taken = backlog.take(rest.len()).await;
                    let after = rest.split_off(taken);
                    let part = NodeMessage::Shares(std::mem::replace(&mut rest, after));
                    if events.send(Event::NodeMessage { node, msg: part, at }).is_err() {
                        return false;
                    }
                }
            }
            msg => {
                if matches!(msg, NodeMessage::Share(_)) {
                    backlog.take(1).await;
                }
                if events.send(Event::NodeMessage { node, msg, at }).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// Why `msg` breaks the rules of protocol version `protocol`, if it does: a share batch before
/// version 3, or one over `MAX_BATCH_SHARES`.
fn violation(protocol: u16, msg: &NodeMessage) -> Option<String> {
    match msg {
        NodeMessage::Shares(_) if protocol < BATCHES_SINCE => {
            Some(format!("share batches need hashgrid/{BATCHES_SINCE}; this connection speaks hashgrid/{protocol}"))
        }
        NodeMessage::Shares(shares) if shares.len() > MAX_BATCH_SHARES => {
            Some(format!("{} shares in one message (at most {MAX_BATCH_SHARES})", shares.len()))
        }
        _ => None,
    }
}

/// Appends the waiting share results to `buf` as `ShareResults` frames and empties
/// `verdicts`. `false`: they could not be encoded (logged), and the connection should end.
fn encode_verdicts(buf: &mut Vec<u8>, verdicts: &mut Vec<ShareVerdict>, node: NodeId) -> bool {
    for chunk in verdicts.chunks(MAX_BATCH_SHARES) {
        match codec::encode(&CoordinatorMessage::ShareResults(chunk.to_vec())) {
            Ok(frame) => buf.extend_from_slice(&frame),
            Err(e) => {
                warn!(node, "cannot encode share results to the node: {e}");
                verdicts.clear();
                return false;
            }
        }
    }
    verdicts.clear();
    true
}

/// Version-1 node messages as current ones.
fn convert_all(msgs: Vec<v1::NodeMessage>) -> Vec<NodeMessage> {
    msgs.into_iter().map(NodeMessage::from).collect()
}

/// The protocol version the connection's ALPN names (the TLS handshake accepted only ours).
fn negotiated_protocol(conn: &quinn::Connection) -> u16 {
    conn.handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .and_then(|alpn| protocol_version(&alpn))
        .unwrap_or(PROTOCOL_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Work;
    use hashgrid_common::codec::PREFIX;
    use hashgrid_common::message::{AccountStatus, ShareOutcome};
    use hashgrid_common::{CompactTarget, Hash256, Header, Target};

    /// What a node's outbox received, in order (share results one by one).
    fn received(outgoing: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<String> {
        entries(outgoing)
            .into_iter()
            .flat_map(|out| match out {
                Outgoing::Message(msg) => msg.unbatched().iter().map(|m| format!("{m:?}")).collect(),
                Outgoing::Close { code, reason } => vec![format!("close {code:#x}: {reason}")],
                Outgoing::Miner(order) => vec![format!("{order:?}")],
            })
            .collect()
    }

    /// The entries waiting in a node's outbox.
    fn entries(outgoing: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<Outgoing> {
        std::iter::from_fn(|| outgoing.try_recv().ok()).collect()
    }

    /// A run of results for one node is one outbox entry (`ShareResults`), and the core's
    /// order holds across runs, other messages and closes.
    #[test]
    fn a_run_of_share_results_is_one_outbox_entry_in_the_cores_order() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut pools = PoolConnections::new(runtime.handle().clone(), None, |_| {});
        let ((one, mut to_one), (two, mut to_two)) = (mpsc::unbounded_channel(), mpsc::unbounded_channel());
        let result = |node, id| Command::Send {
            node,
            msg: CoordinatorMessage::ShareResult { id, outcome: ShareOutcome::Accepted { work: 16 } },
        };
        let revoke = Command::Send { node: 1, msg: CoordinatorMessage::Revoke { assignment: 9 } };
        let deliveries = vec![
            result(1, 1),
            result(1, 2),
            revoke,
            result(1, 3),
            result(2, 4),
            result(1, 5),
            Command::Close { node: 2, reason: "bye".into() },
        ];
        let group = Group { joins: vec![(1, one), (2, two)], deliveries, ..Group::default() };
        let mut outboxes = HashMap::new();
        deliver(group, &mut outboxes, &IntakeMetrics::default(), &mut pools);
        let ids = |out: &Outgoing| match out {
            Outgoing::Message(CoordinatorMessage::ShareResults(v)) => v.iter().map(|v| v.id.to_string()).collect(),
            Outgoing::Message(msg) => vec![format!("{msg:?}")],
            Outgoing::Close { reason, .. } => vec![format!("close: {reason}")],
            Outgoing::Miner(order) => vec![format!("{order:?}")],
        };
        let got: Vec<Vec<String>> = entries(&mut to_one).iter().map(ids).collect();
        assert_eq!(got, [vec!["1", "2"], vec!["Revoke { assignment: 9 }"], vec!["3"], vec!["5"]]);
        let got: Vec<Vec<String>> = entries(&mut to_two).iter().map(ids).collect();
        assert_eq!(got, [vec!["4"], vec!["close: bye"]]);
    }

    /// Runs the store thread's loop on one group on the SQLite store in `dir`: `ops`, then an
    /// acknowledgement to a node. What the node received, the loop's result, and whether the
    /// core thread was told to stop.
    fn one_group(dir: &std::path::Path, ops: Vec<StoreOp>) -> (Vec<String>, Result<(), ServiceError>, bool) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = StoreLocation::Sqlite.open(dir).unwrap();
        let (outbox, mut outgoing) = mpsc::unbounded_channel();
        let (groups, queued) = std::sync::mpsc::channel();
        let (wake_core, mut woken) = mpsc::unbounded_channel();
        let pools = PoolConnections::new(runtime.handle().clone(), None, |_| {});
        let ack = CoordinatorMessage::ShareResult { id: 7, outcome: ShareOutcome::Accepted { work: 16 } };
        let deliveries = vec![Command::Send { node: 1, msg: ack }];
        groups.send(Group { joins: vec![(1, outbox)], ops, deliveries, stop: true, ..Group::default() }).unwrap();
        let result = store_loop(store, queued, &wake_core, &IntakeMetrics::default(), pools);
        let stopped = matches!(woken.try_recv(), Ok(Event::Stop));
        (received(&mut outgoing), result, stopped)
    }

    fn account_added(name: &str) -> StoreOp {
        StoreOp::AccountAdded {
            name: name.into(),
            standard: Work(1 << 40),
            period_ms: None,
            order: 0,
            period_start_ms: 1,
            chain: "local".into(),
        }
    }

    fn credit(account: &str) -> StoreOp {
        let header = Header {
            version: 0x2000_0000,
            prev_blockhash: Hash256([1; 32]),
            merkle_root: Hash256([2; 32]),
            time: 1_700_000_000,
            bits: CompactTarget(0x1d00ffff),
            nonce: 0,
        };
        let share_target = Target::from_expected_hashes(16);
        StoreOp::Credit {
            account: account.into(),
            work: Work(share_target.work()),
            node: "rig-1".into(),
            job: 1,
            header,
            share_target,
            at_ms: 2,
        }
    }

    fn accounts(dir: &std::path::Path) -> Vec<String> {
        let mut store = StoreLocation::Sqlite.open(dir).unwrap();
        store.load().unwrap().accounts.into_iter().map(|a| a.name).collect()
    }

    /// The rule the store thread keeps: a batch's acknowledgements leave after its commit, and
    /// never when the commit fails (here a credit to an account the store does not hold, a
    /// real refusal of the real store, which rolls the whole transaction back).
    #[test]
    fn a_batch_whose_commit_fails_is_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (got, result, stopped) = one_group(dir.path(), vec![account_added("acme"), credit("nobody")]);
        assert!(matches!(result, Err(ServiceError::Store(StoreError::UnknownAccount(_)))), "{result:?}");
        assert_eq!(got, vec![format!("close {:#x}: coordinator store failed", close_code::FAILED)], "no ack");
        assert!(stopped, "the core thread is told to stop");
        assert!(accounts(dir.path()).is_empty(), "nothing of the batch was committed");

        let (got, result, _) = one_group(dir.path(), vec![account_added("acme")]);
        result.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("ShareResult { id: 7"), "{got:?}");
        assert_eq!(accounts(dir.path()), vec!["acme".to_string()], "the acknowledged batch is committed");
    }

    /// A commit's acknowledgements wait for its flush, and a flush that fails sends none of
    /// them (here the WAL file is gone before the flush: a real `WalSync` of a real commit).
    #[test]
    fn a_commit_whose_flush_fails_is_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut store = super::super::store::Store::open(&dir.path().join("hashgrid.db")).unwrap();
        let (outbox, mut outgoing) = mpsc::unbounded_channel();
        let (committed, to_ack) = std::sync::mpsc::channel();
        let (wake_core, mut woken) = mpsc::unbounded_channel();
        let pools = PoolConnections::new(runtime.handle().clone(), None, |_| {});
        let ack = CoordinatorMessage::ShareResult { id: 7, outcome: ShareOutcome::Accepted { work: 16 } };
        let group = |outbox| Group {
            joins: vec![(1, outbox)],
            deliveries: vec![Command::Send { node: 1, msg: ack.clone() }],
            ..Group::default()
        };
        let sync = store.apply_unsynced(&[account_added("acme")]).unwrap();
        std::fs::remove_file(dir.path().join("hashgrid.db-wal")).unwrap();
        committed.send(Committed::Groups { sync: Some(sync), groups: vec![group(outbox)] }).unwrap();
        drop(committed);
        let result = ack_loop(to_ack, &wake_core, &IntakeMetrics::default(), pools);
        assert!(matches!(result, Err(ServiceError::Store(StoreError::Sync(_)))), "{result:?}");
        let got = received(&mut outgoing);
        assert_eq!(got, vec![format!("close {:#x}: coordinator store failed", close_code::FAILED)], "no ack");
        assert!(matches!(woken.try_recv(), Ok(Event::Stop)), "the core thread is told to stop");
    }

    /// Version 3 nodes send and receive batches; a batch from an older connection, or one
    /// over the cap, is a protocol violation.
    #[test]
    fn share_batches_are_version_3_and_capped() {
        let share = hashgrid_common::message::Share { id: 1, assignment: 2, job: 3, version: 4, time: 5, nonce: 6 };
        let batch = |n: usize| NodeMessage::Shares(vec![share; n]);
        assert_eq!(violation(3, &batch(MAX_BATCH_SHARES)), None);
        assert_eq!(violation(3, &NodeMessage::Share(share)), None);
        assert_eq!(violation(2, &NodeMessage::Share(share)), None);
        assert!(violation(2, &batch(1)).is_some_and(|r| r.contains("hashgrid/3")));
        assert!(violation(1, &batch(0)).is_some());
        assert!(violation(3, &batch(MAX_BATCH_SHARES + 1)).is_some_and(|r| r.contains("at most")));

        // Results go out in batches of at most the cap, in order, and decode as they went in.
        let verdicts: Vec<ShareVerdict> = (0..MAX_BATCH_SHARES as u64 * 2 + 3)
            .map(|id| ShareVerdict { id, outcome: ShareOutcome::Accepted { work: u128::from(id) << 100 } })
            .collect();
        let mut buf = Vec::new();
        assert!(encode_verdicts(&mut buf, &mut verdicts.clone(), 1));
        let mut decoder = codec::FrameDecoder::new();
        decoder.extend(&buf);
        let mut back = Vec::new();
        while let Some(msg) = decoder.next::<CoordinatorMessage>().unwrap() {
            let CoordinatorMessage::ShareResults(chunk) = msg else { panic!("{msg:?}") };
            assert!(chunk.len() <= MAX_BATCH_SHARES);
            back.extend(chunk);
        }
        assert_eq!(back, verdicts);
    }

    /// A reply over the frame cap used to be dropped without a word (the operator saw the
    /// stream end); it becomes an error that says why.
    #[test]
    fn a_reply_over_the_frame_cap_becomes_an_error_naming_the_cause() {
        let account = |i: usize| AccountStatus {
            name: format!("account-{i:0>200}"),
            chain: "local".into(),
            order: 0,
            standard: 1,
            delivered: 0,
            period_secs: None,
            up_to_standard: false,
            shares: 0,
        };
        let huge = AdminResponse::Accounts((0..10_000).map(account).collect());
        let frame = reply_frame(&huge, "AccountList");
        let reply: AdminResponse = codec::decode(&frame[PREFIX..]).unwrap();
        assert!(
            matches!(&reply, AdminResponse::Error(e) if e.contains("cannot send its reply") && e.contains("cap")),
            "{reply:?}"
        );
        let small = AdminResponse::Accounts(vec![account(1)]);
        assert_eq!(codec::decode::<AdminResponse>(&reply_frame(&small, "AccountList")[PREFIX..]).unwrap(), small);
    }
}
