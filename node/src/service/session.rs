//! The node's side of the hashgrid session as a pure state machine: no sockets, no threads, no
//! clock reads. The shell (`shell`) feeds it what happens, with the current time, and carries
//! out the commands it yields; tests drive it in virtual time.
//!
//! Owns: the connection's life as the node sees it (connect, hello, welcome or its timeout,
//! heartbeats at the asked period, loss and reconnecting with jittered exponential backoff,
//! shutdown), the ranges held (assignments, replacements, revocations) and their split over
//! the devices by the node-local `Scheduler`, the devices that failed and the re-issue of
//! their unsearched work, `RangeDone` once every piece of a range is searched, and the shares
//! found: each is sent at once when connected and kept until the coordinator answers it, and
//! every unanswered share is sent again after the next welcome, under its old id. Past
//! `MAX_PENDING_SHARES` unanswered shares the oldest are dropped. It records what it sees in
//! `NodeMetrics` (shared counters, no I/O).
//!
//! Calling order for the shell: after each `handle_*` call, take every `Command` with
//! `poll_command` and carry them out in order (a command may feed a `handle_*` call back,
//! e.g. a piece its device's worker no longer takes); then wait for the next input or
//! `poll_timeout`, whichever is first, and call `handle_timeout` when that time has come.
//! Stop once `is_stopped`. Commands to send on a connection that was lost are withdrawn when
//! the loss is reported.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use hashgrid_common::message::{
    Assignment, AssignmentId, CoordinatorMessage, DeviceInfo, NodeHello, NodeMessage, RejectReason, Share,
    ShareOutcome, close_code,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use super::scheduler::{DeviceClass, DeviceId, Piece, PieceEnd, Scheduler};
use super::worker::{DeviceEvent, Ready, WorkerEvent};
use super::{NodeError, NodeMetrics, ShareCounts};
use crate::search::{BackendKind, NONCE_SPACE};

/// The first reconnect delay; it doubles up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the coordinator may take to answer the hello.
pub(crate) const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest heartbeat period honoured, whatever the coordinator asks.
pub(crate) const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Unanswered shares kept for re-sending; beyond this the oldest are dropped.
pub(crate) const MAX_PENDING_SHARES: usize = 1 << 16;
/// The close reason a node sends when it stops.
pub const SHUTDOWN_REASON: &str = "node shutting down";
/// The close reason when the coordinator does not answer the hello in time.
pub(crate) const NO_WELCOME_REASON: &str = "no welcome";
/// The close reason of a connection given up after an error.
pub(crate) const LOST_REASON: &str = "connection lost";

/// What the node says about itself in its hello.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    pub token: String,
    pub name: String,
    pub standby: bool,
    pub software_version: String,
    /// Announced instead of the measured rate; the devices' rates are scaled to sum to it.
    pub announce_rate: Option<f64>,
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Connect to the coordinator; report `handle_connected` or `handle_connection_lost`.
    Connect,
    /// Send the hello, first thing on the new connection.
    Hello(NodeHello),
    /// Send a message on the connection.
    Send(NodeMessage),
    /// Close the connection with this reason (and report nothing more from it).
    Close { code: u32, reason: &'static str },
    /// Queue a piece on its device's worker, under the range's cancel flag (a new one if the
    /// range has none); if the worker has stopped, report `handle_device_stopped`.
    Start(Piece),
    /// No piece of the range is to run any more (revoked, replaced, dropped, done, or its
    /// connection lost): raise its cancel flag and forget it.
    EndRange(AssignmentId),
    /// The device has failed: let go of its worker.
    DropDevice(DeviceId),
}

/// The connection, as the session sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    /// No connection; the next attempt at `retry_at`.
    Down { retry_at: Instant },
    /// `Command::Connect` is being carried out.
    Connecting,
    /// The hello is sent; no welcome yet.
    Hello { deadline: Instant },
    /// Welcomed: heartbeats every `period`, the next one at `next_heartbeat`.
    Up { period: Duration, next_heartbeat: Instant },
    /// Shut down.
    Stopped,
}

/// A share found and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    share: Share,
    /// Sent on some connection (else found while there was none).
    sent: bool,
    /// Sent again after a reconnect: the coordinator may have credited it already.
    resent: bool,
}

/// A device: what it is and what it is called.
#[derive(Debug, Clone)]
struct DeviceLabel {
    kind: BackendKind,
    name: String,
}

/// The node's session state across connections.
#[derive(Debug)]
pub(crate) struct Session {
    identity: Identity,
    devices: Vec<DeviceLabel>,
    /// Which device searches which piece of which range held; each device's rate estimate.
    scheduler: Scheduler,
    link: Link,
    backoff: Backoff,
    next_share: u64,
    /// Shares not yet answered, by id (ids count up, so the first is the oldest).
    pending: BTreeMap<u64, Pending>,
    counts: ShareCounts,
    metrics: NodeMetrics,
    commands: VecDeque<Command>,
}

impl Session {
    /// A session for the measured `devices` (in device id order); it starts by asking to
    /// connect. `seed` seeds the reconnect delays' jitter.
    pub fn new(identity: Identity, devices: &[Ready], metrics: NodeMetrics, seed: u64) -> Self {
        let class = |kind| if kind == BackendKind::Gpu { DeviceClass::Gpu } else { DeviceClass::Cpu };
        let scheduler = Scheduler::new(devices.iter().map(|d| (class(d.kind), d.hashrate)));
        let devices: Vec<DeviceLabel> =
            devices.iter().map(|d| DeviceLabel { kind: d.kind, name: d.device.clone() }).collect();
        let session = Session {
            identity,
            devices,
            scheduler,
            link: Link::Connecting,
            backoff: Backoff::new(seed),
            next_share: 0,
            pending: BTreeMap::new(),
            counts: ShareCounts::default(),
            metrics,
            commands: VecDeque::from([Command::Connect]),
        };
        for device in 0..session.devices.len() {
            session.publish_rate(device);
        }
        session
    }

    // Getters.

    /// The coordinator's answers so far.
    pub fn counts(&self) -> ShareCounts {
        self.counts
    }

    /// Whether the session has shut down (the shell stops).
    pub fn is_stopped(&self) -> bool {
        self.link == Link::Stopped
    }

    /// Shares found and not yet answered.
    #[cfg(test)]
    pub fn pending_shares(&self) -> impl Iterator<Item = &Share> {
        self.pending.values().map(|p| &p.share)
    }

    // Outputs.

    /// The next command to carry out.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When `handle_timeout` is next due: a reconnect, the welcome's deadline or a heartbeat.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Down { retry_at } => Some(retry_at),
            Link::Hello { deadline } => Some(deadline),
            Link::Up { next_heartbeat, .. } => Some(next_heartbeat),
            Link::Connecting | Link::Stopped => None,
        }
    }

    // Inputs.

    /// The connection `Command::Connect` asked for is up: the hello goes out.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.link != Link::Connecting {
            return;
        }
        self.link = Link::Hello { deadline: now + WELCOME_TIMEOUT };
        let hello = NodeHello {
            token: self.identity.token.clone(),
            name: self.identity.name.clone(),
            software_version: self.identity.software_version.clone(),
            standby: self.identity.standby,
            devices: self.device_infos(),
            hashrate: self.hashrate(),
        };
        self.commands.push_back(Command::Hello(hello));
    }

    /// The connection (or the attempt to make one) failed for a reason a retry may fix: every
    /// range is dropped (they belonged to it) and a reconnect is timed.
    pub fn handle_connection_lost(&mut self, now: Instant, reason: &str) {
        if matches!(self.link, Link::Down { .. } | Link::Stopped) {
            return;
        }
        if matches!(self.link, Link::Up { .. }) {
            self.metrics.set_connected(false);
        }
        // Nothing more goes out on the lost connection.
        self.commands.retain(|c| !matches!(c, Command::Hello(_) | Command::Send(_)));
        self.end_all_ranges();
        let delay = self.backoff.next_delay();
        info!(%reason, retry_in_ms = delay.as_millis() as u64, "reconnecting");
        self.link = Link::Down { retry_at: now + delay };
    }

    /// Time has passed: reconnect, give up waiting for the welcome, or send a heartbeat, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.link {
            Link::Down { retry_at } if now >= retry_at => {
                self.link = Link::Connecting;
                self.commands.push_back(Command::Connect);
            }
            Link::Hello { deadline } if now >= deadline => {
                self.commands.push_back(Command::Close { code: close_code::NORMAL, reason: NO_WELCOME_REASON });
                self.handle_connection_lost(now, "the coordinator did not answer the hello");
            }
            Link::Up { period, next_heartbeat } if now >= next_heartbeat => {
                let heartbeat = NodeMessage::Heartbeat { hashrate: self.hashrate(), devices: self.device_infos() };
                self.commands.push_back(Command::Send(heartbeat));
                self.link = Link::Up { period, next_heartbeat: now + period };
            }
            _ => {}
        }
    }

    /// The node is stopping: the connection is closed and every range ended.
    pub fn handle_shutdown(&mut self) {
        match self.link {
            Link::Stopped => return,
            Link::Up { .. } => {
                self.metrics.set_connected(false);
                self.commands.push_back(Command::Close { code: close_code::DEPARTING, reason: SHUTDOWN_REASON });
            }
            Link::Hello { .. } => {
                self.commands.push_back(Command::Close { code: close_code::DEPARTING, reason: SHUTDOWN_REASON })
            }
            Link::Down { .. } | Link::Connecting => {}
        }
        self.end_all_ranges();
        self.link = Link::Stopped;
    }

    /// One message from the coordinator. `Err`: the node cannot go on.
    pub fn handle_message(&mut self, now: Instant, msg: CoordinatorMessage) -> Result<(), NodeError> {
        match (self.link, msg) {
            (_, CoordinatorMessage::Close { reason }) => info!(%reason, "the coordinator is closing the connection"),
            (Link::Hello { .. }, CoordinatorMessage::Welcome { node, heartbeat_ms }) => {
                self.welcomed(now, node, heartbeat_ms)
            }
            (Link::Up { .. }, CoordinatorMessage::Welcome { .. }) => warn!("second welcome on one connection; ignored"),
            (Link::Up { .. }, CoordinatorMessage::Assign(assignment)) => return self.assign(assignment),
            (Link::Up { .. }, CoordinatorMessage::Revoke { assignment }) => {
                if self.scheduler.revoke(assignment) {
                    self.commands.push_back(Command::EndRange(assignment));
                    info!(assignment, "revoked");
                } else {
                    debug!(assignment, "revoke of a range not held");
                }
            }
            (Link::Up { .. }, CoordinatorMessage::ShareResult { id, outcome }) => self.share_result(id, outcome),
            (Link::Hello { .. }, other) => warn!(?other, "message before the welcome; ignored"),
            (_, other) => debug!(?other, "message with no connection up; ignored"),
        }
        Ok(())
    }

    /// One event from a device's worker. `Err`: the node cannot go on (its last device failed).
    pub fn handle_device_event(&mut self, event: DeviceEvent) -> Result<(), NodeError> {
        let DeviceEvent { device, event } = event;
        match event {
            WorkerEvent::Hit { assignment, version, nonce } => self.found(device, assignment, version, nonce),
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
                self.piece_ended(end);
            }
            WorkerEvent::Invalid { ticket, assignment, error } => {
                warn!(assignment, %error, "range cannot be searched; ignored");
                let end = self.scheduler.finished(ticket, 0, false);
                self.piece_ended(end);
            }
            WorkerEvent::Failed(e) => {
                warn!(device, error = %e, "search backend failed");
                self.fail_device(device, NodeError::Search(e))?;
            }
        }
        Ok(())
    }

    /// The device's worker has stopped (it took no piece). `Err`: it was the last device.
    pub fn handle_device_stopped(&mut self, device: DeviceId) -> Result<(), NodeError> {
        warn!(device, "the search thread has stopped");
        self.fail_device(device, NodeError::WorkerGone)
    }

    // What the inputs decide.

    /// The welcome: heartbeats start, the backoff resets, unanswered shares go out again.
    fn welcomed(&mut self, now: Instant, node: u64, heartbeat_ms: u32) {
        let period = Duration::from_millis(heartbeat_ms.into()).max(MIN_HEARTBEAT);
        self.link = Link::Up { period, next_heartbeat: now + period };
        self.backoff.reset();
        self.metrics.set_connected(true);
        self.metrics.set_hashrate(self.hashrate());
        info!(node, name = %self.identity.name, standby = self.identity.standby, "connected");
        if !self.pending.is_empty() {
            info!(shares = self.pending.len(), "sending unanswered shares");
        }
        for pending in self.pending.values_mut() {
            pending.resent = pending.sent;
            pending.sent = true;
            self.commands.push_back(Command::Send(NodeMessage::Share(pending.share)));
        }
    }

    /// Splits a range between the devices and starts the pieces.
    fn assign(&mut self, assignment: Assignment) -> Result<(), NodeError> {
        if assignment.count == 0 || u64::from(assignment.start) + assignment.count > NONCE_SPACE {
            warn!(
                assignment = assignment.id,
                start = assignment.start,
                count = assignment.count,
                "invalid range; ignored"
            );
            return Ok(());
        }
        if self.scheduler.holds(assignment.id) {
            // Replaced: the old range's pieces stop.
            self.commands.push_back(Command::EndRange(assignment.id));
        }
        info!(
            assignment = assignment.id,
            job = assignment.job,
            start = assignment.start,
            count = assignment.count,
            "assigned"
        );
        // Unreachable: the node stops when its last device fails.
        let pieces = self.scheduler.assign(assignment).map_err(|_| NodeError::WorkerGone)?;
        self.start(pieces);
        Ok(())
    }

    /// Starts the pieces of ranges still held.
    fn start(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            if self.scheduler.holds(piece.assignment.id) {
                if self.devices.len() > 1 {
                    let (id, start, count) = (piece.assignment.id, piece.assignment.start, piece.assignment.count);
                    debug!(assignment = id, device = piece.device, start, count, "piece");
                }
                self.commands.push_back(Command::Start(piece));
            }
        }
    }

    /// A verified hit: a new share, sent at once if connected, pending until answered.
    fn found(&mut self, device: DeviceId, assignment: Assignment, version: u32, nonce: u32) {
        let share = Share {
            id: self.next_share,
            assignment: assignment.id,
            job: assignment.job,
            version,
            time: assignment.header.time,
            nonce,
        };
        self.next_share += 1;
        debug!(id = share.id, assignment = share.assignment, nonce, device, "share found");
        let sent = matches!(self.link, Link::Up { .. });
        self.pending.insert(share.id, Pending { share, sent, resent: false });
        if self.pending.len() > MAX_PENDING_SHARES
            && let Some((id, _)) = self.pending.pop_first()
        {
            warn!(id, "too many unanswered shares; dropping the oldest");
        }
        if sent {
            self.commands.push_back(Command::Send(NodeMessage::Share(share)));
        }
    }

    /// The coordinator's answer to a share.
    fn share_result(&mut self, id: u64, outcome: ShareOutcome) {
        let Some(Pending { share, resent, .. }) = self.pending.remove(&id) else {
            debug!(id, "result for a share not pending");
            return;
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

    /// Acts on what the end of a piece means for its range.
    fn piece_ended(&mut self, end: PieceEnd) {
        match end {
            PieceEnd::Stale | PieceEnd::Pending => {}
            PieceEnd::RangeDone { assignment, hashes } => {
                info!(assignment, hashes, "range done");
                self.commands.push_back(Command::EndRange(assignment));
                // Ranges are held only while connected (a loss drops them).
                if matches!(self.link, Link::Up { .. }) {
                    self.commands.push_back(Command::Send(NodeMessage::RangeDone { assignment, hashes }));
                }
            }
            PieceEnd::RangeDropped { assignment } => {
                warn!(assignment, "a piece of the range stopped short; the range is dropped");
                self.commands.push_back(Command::EndRange(assignment));
            }
        }
    }

    /// Drops a failed device: the unsearched rest of its pieces goes to the devices left, and
    /// `last_error` stops the node if there are none.
    fn fail_device(&mut self, device: DeviceId, last_error: NodeError) -> Result<(), NodeError> {
        if !self.scheduler.is_alive(device) {
            return Ok(());
        }
        self.commands.push_back(Command::DropDevice(device));
        let failover = self.scheduler.device_failed(device);
        self.publish_rate(device);
        let failover = match failover {
            Ok(failover) if !self.scheduler.routing_order().is_empty() => failover,
            _ => return Err(last_error),
        };
        let name = &self.devices[device].name;
        warn!(device, %name, pieces = failover.pieces.len(), "device dropped; its work goes to the others");
        for end in failover.ends {
            self.piece_ended(end);
        }
        self.start(failover.pieces);
        Ok(())
    }

    /// Ends every range (their connection is gone, or the node is stopping).
    fn end_all_ranges(&mut self) {
        let mut ended = self.scheduler.clear();
        ended.sort_unstable();
        self.commands.extend(ended.into_iter().map(Command::EndRange));
    }

    /// Publishes a device's rate (0 once failed) and the node's announced rate as metrics.
    fn publish_rate(&self, device: DeviceId) {
        let label = &self.devices[device];
        let rate = if self.scheduler.is_alive(device) { self.scheduler.rate(device) } else { 0.0 };
        self.metrics.set_device_rate(device, &label.kind.to_string(), &label.name, rate);
        self.metrics.set_hashrate(self.hashrate());
    }

    /// The measured rate: the sum over the devices still working.
    fn measured_rate(&self) -> f64 {
        (0..self.devices.len()).filter(|&d| self.scheduler.is_alive(d)).map(|d| self.scheduler.rate(d)).sum()
    }

    /// The rate announced to the coordinator: `--announce-rate`, else the measured one.
    fn hashrate(&self) -> f64 {
        self.identity.announce_rate.unwrap_or_else(|| self.measured_rate())
    }

    /// The devices still working with their rates, scaled to sum to `hashrate()`.
    fn device_infos(&self) -> Vec<DeviceInfo> {
        let alive: Vec<DeviceId> = (0..self.devices.len()).filter(|&d| self.scheduler.is_alive(d)).collect();
        let (measured, announced) = (self.measured_rate(), self.hashrate());
        let rate = |d: DeviceId| match self.identity.announce_rate {
            None => self.scheduler.rate(d),
            Some(_) if measured > 0.0 => self.scheduler.rate(d) * announced / measured,
            Some(_) => announced / alive.len() as f64,
        };
        alive
            .iter()
            .map(|&d| {
                let label = &self.devices[d];
                DeviceInfo { kind: label.kind.to_string(), name: label.name.clone(), hashrate: rate(d) }
            })
            .collect()
    }
}

/// Reconnect delays: `BACKOFF_MIN` doubling to `BACKOFF_MAX`, each drawn between half and all
/// of the current step so that many nodes do not reconnect in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    failures: u32,
    jitter: StdRng,
}

impl Backoff {
    pub fn new(seed: u64) -> Self {
        Backoff { failures: 0, jitter: StdRng::seed_from_u64(seed) }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = BACKOFF_MIN.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * self.jitter.random::<f64>())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests;
