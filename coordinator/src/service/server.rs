//! The coordinator service: a QUIC endpoint, one task per connection, and one core thread
//! that owns the `Core` state machine and the SQLite `Store`.
//!
//! Connection tasks turn frames into `Event`s; the core thread takes every event waiting,
//! feeds them to the core, writes all resulting `Persist` records in one transaction (group
//! commit), and only then sends the messages and replies that followed them. So no share is
//! acknowledged before its credit is durable; if the store fails, nothing more is sent and the
//! service stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashgrid_common::message::{
    AdminRequest, AdminResponse, CoordinatorMessage, Hello, NodeHello, NodeId, NodeMessage, Policy,
};
use hashgrid_node::net::FramedStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::admin::admin;
use super::records::Reader;
use super::store::{Store, StoreError};
use super::tls::{DataDir, TlsError, server_config, tokens_equal};
use crate::core::{Command, Core, CoreConfig, StoreOp};

/// QUIC application close codes.
pub mod close_code {
    pub const SHUTDOWN: u32 = 0x00;
    pub const INVALID_TOKEN: u32 = 0x10;
    pub const MALFORMED_FRAME: u32 = 0x11;
    pub const FRAME_TOO_LARGE: u32 = 0x12;
    pub const PROTOCOL: u32 = 0x13;
    pub const FAILED: u32 = 0x14;
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("core thread stopped")]
    CoreStopped,
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Overrides the stored policy when set.
    pub policy: Option<Policy>,
    pub core: CoreConfig,
}

/// A running coordinator.
#[derive(Debug)]
pub struct Service {
    pub local_addr: SocketAddr,
    pub data_dir: DataDir,
    shutdown: watch::Sender<bool>,
    core_thread: Option<std::thread::JoinHandle<Result<(), ServiceError>>>,
    endpoint: quinn::Endpoint,
    events: mpsc::UnboundedSender<Event>,
}

enum Event {
    NodeJoined { node: NodeId, hello: NodeHello, outbox: mpsc::UnboundedSender<Outgoing> },
    NodeMessage { node: NodeId, msg: NodeMessage },
    NodeLeft { node: NodeId },
    Admin { req: AdminRequest, reply: oneshot::Sender<AdminResponse> },
    Tick,
    Stop,
}

enum Outgoing {
    Message(CoordinatorMessage),
    Close { code: u32, reason: String },
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    /// Opens (or creates) the data dir and its store, restores the core, and starts listening.
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let data_dir = DataDir::open_or_init(&config.data_dir)?;
        let mut store = Store::open(&config.data_dir.join("hashgrid.db"))?;
        let reader = Reader::open(&config.data_dir.join("hashgrid.db"))?;
        let snapshot = store.load()?;
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
        let endpoint = quinn::Endpoint::server(server_config(&data_dir)?, config.listen)
            .map_err(|source| ServiceError::Listen { addr: config.listen, source })?;
        let local_addr =
            endpoint.local_addr().map_err(|source| ServiceError::Listen { addr: config.listen, source })?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let core_thread = std::thread::Builder::new()
            .name("hashgrid-core".into())
            .spawn(move || core_loop(core, store, reader, events_rx))
            .map_err(|e| ServiceError::Listen { addr: local_addr, source: e })?;

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
        let accept_endpoint = endpoint.clone();
        tokio::spawn(async move {
            let next_node = Arc::new(AtomicU64::new(1));
            while let Some(incoming) = accept_endpoint.accept().await {
                let events = events_tx.clone();
                let (node_token, admin_token, next_node) = (node_token.clone(), admin_token.clone(), next_node.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    serve_connection(conn, events, &node_token, &admin_token, &next_node).await;
                });
            }
        });
        info!(%local_addr, fingerprint = %data_dir.fingerprint(), "coordinator listening");
        Ok(Service { local_addr, data_dir, shutdown, core_thread: Some(core_thread), endpoint, events })
    }

    /// Stops accepting, tells every node, flushes the store, and waits for the core thread.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        let _ = self.shutdown.send(true);
        let _ = self.events.send(Event::Stop);
        let result = self.join().await;
        self.endpoint.close(close_code::SHUTDOWN.into(), b"coordinator shutting down");
        self.endpoint.wait_idle().await;
        result
    }

    /// Runs until the core thread ends: after a store failure (an error) or `shutdown`.
    pub async fn wait(&mut self) -> Result<(), ServiceError> {
        self.join().await
    }

    async fn join(&mut self) -> Result<(), ServiceError> {
        let Some(thread) = self.core_thread.take() else { return Ok(()) };
        tokio::task::spawn_blocking(move || thread.join().map_err(|_| ServiceError::CoreStopped)?)
            .await
            .map_err(|_| ServiceError::CoreStopped)?
    }
}

/// The core thread: batches events, group-commits their records, then sends.
fn core_loop(
    mut core: Core,
    mut store: Store,
    mut reader: Reader,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<(), ServiceError> {
    let mut outboxes: HashMap<NodeId, mpsc::UnboundedSender<Outgoing>> = HashMap::new();
    while let Some(first) = events.blocking_recv() {
        let mut replies: Vec<(oneshot::Sender<AdminResponse>, AdminResponse)> = Vec::new();
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut stop = false;
        for event in batch {
            match event {
                Event::NodeJoined { node, hello, outbox } => {
                    outboxes.insert(node, outbox);
                    core.handle_node_joined(now, node, &hello);
                }
                Event::NodeMessage { node, msg } => core.handle_node_message(now, node, msg),
                Event::NodeLeft { node } => {
                    outboxes.remove(&node);
                    core.handle_node_left(now, node);
                }
                Event::Admin { req, reply } => {
                    let response = admin(&mut core, &mut reader, now, req);
                    replies.push((reply, response));
                }
                Event::Tick => core.handle_tick(now),
                Event::Stop => stop = true,
            }
        }
        let commands = core.drain_commands();
        let ops: Vec<StoreOp> = commands
            .iter()
            .filter_map(|c| if let Command::Persist(op) = c { Some(op.clone()) } else { None })
            .collect();
        if !ops.is_empty()
            && let Err(e) = store.apply(&ops)
        {
            // Nothing after an unrecorded credit may be acknowledged: stop here.
            tracing::error!("store failed, stopping: {e}");
            for outbox in outboxes.values() {
                let _ = outbox
                    .send(Outgoing::Close { code: close_code::FAILED, reason: "coordinator store failed".into() });
            }
            return Err(e.into());
        }
        for c in commands {
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
                Command::Persist(_) => {}
            }
        }
        for (reply, response) in replies {
            let _ = reply.send(response);
        }
        if stop {
            break;
        }
    }
    Ok(())
}

/// Reads the first frame of the first stream and serves the connection as a node or admin.
async fn serve_connection(
    conn: quinn::Connection,
    events: mpsc::UnboundedSender<Event>,
    node_token: &str,
    admin_token: &str,
    next_node: &AtomicU64,
) {
    let Ok((send, recv)) = conn.accept_bi().await else { return };
    let mut stream = FramedStream::new(send, recv);
    let hello = match stream.recv::<Hello>().await {
        Ok(Some(hello)) => hello,
        Ok(None) => return,
        Err(e) => return close_for(&conn, &e),
    };
    match hello {
        Hello::Node(hello) => {
            if !tokens_equal(&hello.token, node_token) {
                conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                return;
            }
            let node = next_node.fetch_add(1, Ordering::Relaxed);
            serve_node(conn, stream, events, node, hello).await;
        }
        Hello::Admin { token } => {
            if !tokens_equal(&token, admin_token) {
                conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                return;
            }
            // The first request rides on the hello's stream; later ones on their own streams.
            let first = tokio::spawn(serve_admin_stream(conn.clone(), stream, events.clone()));
            loop {
                let Ok((send, recv)) = conn.accept_bi().await else { break };
                let mut stream = FramedStream::new(send, recv);
                match stream.recv::<Hello>().await {
                    Ok(Some(Hello::Admin { token })) if tokens_equal(&token, admin_token) => {
                        tokio::spawn(serve_admin_stream(conn.clone(), stream, events.clone()));
                    }
                    Ok(_) => {
                        conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                        break;
                    }
                    Err(e) => {
                        close_for(&conn, &e);
                        break;
                    }
                }
            }
            let _ = first.await;
        }
    }
}

async fn serve_admin_stream(conn: quinn::Connection, mut stream: FramedStream, events: mpsc::UnboundedSender<Event>) {
    let req = match stream.recv::<AdminRequest>().await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => return close_for(&conn, &e),
    };
    let (reply, response) = oneshot::channel();
    if events.send(Event::Admin { req, reply }).is_err() {
        return;
    }
    let response = response.await.unwrap_or_else(|_| AdminResponse::Error("coordinator is shutting down".into()));
    if stream.send(&response).await.is_ok() {
        stream.finish();
    }
}

async fn serve_node(
    conn: quinn::Connection,
    stream: FramedStream,
    events: mpsc::UnboundedSender<Event>,
    node: NodeId,
    hello: NodeHello,
) {
    let (mut reader, mut writer) = stream.split();
    let (outbox, mut outgoing) = mpsc::unbounded_channel();
    info!(node, name = %hello.name, version = %hello.software_version, standby = hello.standby, "node joined");
    if events.send(Event::NodeJoined { node, hello, outbox }).is_err() {
        return;
    }
    let writer_conn = conn.clone();
    let writer_task = tokio::spawn(async move {
        while let Some(out) = outgoing.recv().await {
            match out {
                Outgoing::Message(msg) => {
                    if writer.send(&msg).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close { code, reason } => {
                    let _ = writer.send(&CoordinatorMessage::Close { reason: reason.clone() }).await;
                    writer_conn.close(code.into(), reason.as_bytes());
                    break;
                }
            }
        }
    });
    loop {
        match reader.recv::<NodeMessage>().await {
            Ok(Some(msg)) => {
                if events.send(Event::NodeMessage { node, msg }).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                match e.close_reason() {
                    Some((code, reason)) if code == u64::from(close_code::SHUTDOWN) => {
                        info!(node, "node left: {reason}")
                    }
                    Some(_) => warn!(node, "node connection closed: {e}"),
                    None => {
                        warn!(node, "closing node connection: {e}");
                        close_for(&conn, &e);
                    }
                }
                break;
            }
        }
    }
    let _ = events.send(Event::NodeLeft { node });
    writer_task.abort();
}

/// Closes a connection after a bad frame, with the code and reason the protocol names.
fn close_for(conn: &quinn::Connection, err: &hashgrid_node::net::NetError) {
    let (code, reason) = match err.frame_problem() {
        Some(hashgrid_node::net::FrameProblem::TooLarge) => {
            (close_code::FRAME_TOO_LARGE, "frame too large".to_string())
        }
        Some(hashgrid_node::net::FrameProblem::Malformed) => {
            (close_code::MALFORMED_FRAME, format!("malformed frame: {err}"))
        }
        None => (close_code::PROTOCOL, err.to_string()),
    };
    conn.close(code.into(), reason.as_bytes());
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.events.send(Event::Stop);
    }
}
