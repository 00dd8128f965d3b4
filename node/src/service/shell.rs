//! The async shell around the node's `Session`: it owns the QUIC connection, the workers'
//! queues and the ranges' cancel flags, and only translates. Connection results, coordinator
//! messages, worker events, timer expiries and the shutdown signal go into the session with
//! the current time; the session's commands come out as frames sent, connections opened and
//! closed, pieces queued and ranges cancelled.
//!
//! A frame read is not cancel-safe, so each connection's reader runs in its own task and
//! hands its messages over a channel. Errors the session cannot retry past (the pinned
//! certificate does not match, the token is refused, the last device failed) end the loop.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hashgrid_common::message::{AssignmentId, CoordinatorMessage, Hello, MAX_BATCH_SHARES, NodeMessage, Share};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::NodeError;
use super::session::{Command, LOST_REASON, Session};
use super::worker::{DeviceEvent, Work, Worker};
use hashgrid_common::message::close_code;
use hashgrid_common::net::{self, Address, Addresses, FrameWriter, FramedStream, NetError};

/// What a connection's reader task hands over.
type Inbound = Result<Option<CoordinatorMessage>, NetError>;

/// A connection being made.
type Connecting = Pin<Box<dyn Future<Output = Result<Link, NetError>> + Send>>;

/// One connection to the coordinator: its stream's writer, and the reader task's messages.
struct Link {
    conn: quinn::Connection,
    writer: FrameWriter,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    reader: JoinHandle<()>,
}

impl Link {
    /// Connects, opens the session's stream and starts its reader.
    async fn open(endpoint: quinn::Endpoint, addr: Address) -> Result<Link, NetError> {
        let (_, conn) = net::connect_to(&endpoint, &addr).await?;
        let (mut reader, writer) = FramedStream::open(&conn).await?.split();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let item = reader.recv::<CoordinatorMessage>().await;
                let end = !matches!(item, Ok(Some(_)));
                // The session takes share results one at a time.
                let items = match item {
                    Ok(Some(msg)) => msg.unbatched().into_iter().map(|msg| Ok(Some(msg))).collect(),
                    other => vec![other],
                };
                if items.into_iter().any(|item| inbound_tx.send(item).is_err()) || end {
                    return;
                }
            }
        });
        Ok(Link { conn, writer, inbound, reader })
    }

    /// The error to report for `e`: the coordinator's close reason when it closed the
    /// connection (a refused token reads as such, not as a reset stream).
    fn explain(&self, e: NetError) -> NetError {
        match e {
            NetError::StreamReset { .. } | NetError::Stream(_) | NetError::NoReply => {
                self.conn.close_reason().map_or(e, |c| NetError::from_connection(c, "coordinator"))
            }
            e => e,
        }
    }

    fn close(self, code: u32, reason: &str) {
        self.reader.abort();
        self.conn.close(code.into(), reason.as_bytes());
    }
}

/// The session, and the I/O it drives.
pub(super) struct Shell {
    session: Session,
    endpoint: quinn::Endpoint,
    /// Where the coordinator (the active one of a pair) is.
    coordinators: Addresses,
    /// Each device's worker, `None` once the device has failed.
    workers: Vec<Option<Worker>>,
    events: mpsc::UnboundedReceiver<DeviceEvent>,
    /// The cancel flag of each range with pieces queued or running (shared by its pieces).
    cancels: HashMap<AssignmentId, Arc<AtomicBool>>,
    connecting: Option<Connecting>,
    link: Option<Link>,
}

impl Shell {
    pub fn new(
        session: Session,
        endpoint: quinn::Endpoint,
        coordinators: Addresses,
        workers: Vec<Worker>,
        events: mpsc::UnboundedReceiver<DeviceEvent>,
    ) -> Self {
        Shell {
            session,
            endpoint,
            coordinators,
            workers: workers.into_iter().map(Some).collect(),
            events,
            cancels: HashMap::new(),
            connecting: None,
            link: None,
        }
    }

    /// Runs the session until it stops (after `shutdown`) or hits an error it cannot retry.
    pub async fn run<S: Future<Output = ()>>(&mut self, mut shutdown: Pin<&mut S>) -> Result<(), NodeError> {
        loop {
            self.carry_out().await?;
            if self.session.is_stopped() {
                return Ok(());
            }
            let timeout = self.session.poll_timeout();
            let timer = super::sleep_until(timeout);
            tokio::select! {
                biased;
                () = shutdown.as_mut() => self.session.handle_shutdown(),
                // Before the others, so a flood of shares cannot delay heartbeats.
                () = timer => self.session.handle_timeout(Instant::now()),
                item = recv(&mut self.link) => match item {
                    Some(Ok(Some(msg))) => self.session.handle_message(Instant::now(), msg)?,
                    Some(Err(e)) => self.lost(e)?,
                    Some(Ok(None)) | None => self.lost(NetError::NoReply)?,
                },
                linked = connected(&mut self.connecting) => {
                    self.connecting = None;
                    match linked {
                        Ok(link) => {
                            self.link = Some(link);
                            self.session.handle_connected(Instant::now());
                        }
                        Err(e) if e.is_permanent() => return Err(e.into()),
                        Err(e) => {
                            self.coordinators.failed(&e);
                            self.session.handle_connection_lost(Instant::now(), &e.to_string())
                        }
                    }
                }
                event = self.events.recv() => {
                    let event = event.ok_or(NodeError::WorkerGone)?;
                    self.session.handle_device_event(event)?;
                    // The hits already waiting too, so that their shares go out in one message.
                    for _ in 1..MAX_BATCH_SHARES {
                        let Ok(event) = self.events.try_recv() else { break };
                        self.session.handle_device_event(event)?;
                    }
                }
            }
        }
    }

    /// Carries out the session's commands, in order. The shares among them go out together:
    /// each run of consecutive shares as one `Shares` message (the coordinator speaks version
    /// 3, the only one this node offers).
    async fn carry_out(&mut self) -> Result<(), NodeError> {
        let mut shares = Vec::new();
        while let Some(command) = self.session.poll_command() {
            if let Command::Send(NodeMessage::Share(share)) = command {
                shares.push(share);
                continue;
            }
            self.send_shares(&mut shares).await?;
            match command {
                Command::Connect => {
                    self.connecting =
                        Some(Box::pin(Link::open(self.endpoint.clone(), self.coordinators.current().clone())));
                }
                Command::Hello(hello) => self.send(&Hello::Node(hello)).await?,
                Command::Send(msg) => self.send(&msg).await?,
                Command::Close { code, reason } => {
                    self.connecting = None;
                    if let Some(link) = self.link.take() {
                        link.close(code, reason);
                    }
                }
                Command::Start(piece) => {
                    let cancel = self.cancels.entry(piece.assignment.id).or_default().clone();
                    let work = Work { ticket: piece.ticket, assignment: piece.assignment, cancel };
                    let worker = self.workers[piece.device].as_ref();
                    if !worker.is_some_and(|worker| worker.submit(work)) {
                        // Its `Failed`, if any, is still on the way.
                        self.session.handle_device_stopped(piece.device)?;
                    }
                }
                Command::EndRange(id) => {
                    if let Some(cancel) = self.cancels.remove(&id) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                // Its thread has ended, or ends at its next look at the queue.
                Command::DropDevice(device) => drop(self.workers[device].take()),
            }
        }
        self.send_shares(&mut shares).await
    }

    /// Sends `shares` (emptied) as `Shares` messages of at most `MAX_BATCH_SHARES` each.
    async fn send_shares(&mut self, shares: &mut Vec<Share>) -> Result<(), NodeError> {
        let batches: Vec<NodeMessage> = NodeMessage::batches(shares).collect();
        shares.clear();
        for batch in batches {
            self.send(&batch).await?;
        }
        Ok(())
    }

    /// Sends on the current connection; a failure is reported as the connection's loss.
    async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), NodeError> {
        let Some(link) = self.link.as_mut() else { return Ok(()) };
        match link.writer.send(msg).await {
            Ok(()) => Ok(()),
            Err(e) => self.lost(e),
        }
    }

    /// The connection failed with `e`: the end of the node if retrying cannot help, else a
    /// loss for the session to recover from.
    fn lost(&mut self, e: NetError) -> Result<(), NodeError> {
        let e = match self.link.take() {
            Some(link) => {
                let e = link.explain(e);
                link.close(close_code::NORMAL, LOST_REASON);
                e
            }
            None => e,
        };
        if e.is_permanent() {
            return Err(e.into());
        }
        self.coordinators.failed(&e);
        self.session.handle_connection_lost(Instant::now(), &e.to_string());
        Ok(())
    }

    /// Raises every range's cancel flag and hands back the workers left, to be stopped.
    pub fn into_workers(mut self) -> Vec<Worker> {
        for (_, cancel) in self.cancels.drain() {
            cancel.store(true, Ordering::Relaxed);
        }
        if let Some(link) = self.link.take() {
            link.reader.abort();
        }
        self.workers.into_iter().flatten().collect()
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// The connection being made, once it is (else never).
async fn connected(connecting: &mut Option<Connecting>) -> Result<Link, NetError> {
    match connecting {
        Some(connecting) => connecting.await,
        None => std::future::pending().await,
    }
}

/// The next message of the connection, if there is one (else never).
async fn recv(link: &mut Option<Link>) -> Option<Inbound> {
    match link {
        Some(link) => link.inbound.recv().await,
        None => std::future::pending().await,
    }
}
