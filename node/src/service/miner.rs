//! The standalone miner's decisions (`hashgrid-node mine`), sans I/O: a Stratum V1
//! [`ClientSession`] for the protocol, the node-local [`Scheduler`] for the devices, and what
//! joins them: which header templates to search, and which hits become `mining.submit`s.
//!
//! Owns: the rolling of the job's extranonce2 (the miner owns the whole extranonce2 space of
//! its subscription; once it is used up, version bits inside the agreed mask are rolled
//! too), one full nonce range (2^32) per template, [`AHEAD`] templates searched at a time so
//! the devices never wait, the switch to every new job at once (its ranges cancelled, so a
//! `clean_jobs` notify stops the old job's shares straight away), and the share counts.
//!
//! # Calling order
//! Inputs: the client session's (`connect`, `handle_line`, `handle_timeout`,
//! `handle_disconnect`), and the devices' (`handle_hit`, `handle_progress`,
//! `handle_finished`, `handle_device_failed`). After each, [`Miner::poll_command`] until
//! `None`. Times are milliseconds on the caller's monotonic clock.

use std::collections::{HashMap, VecDeque};

use hashgrid_common::message::{Assignment, AssignmentId};
use hashgrid_common::stratum::{ClientEvent, ClientSession, ClientState, Job, Submit, SubmitOutcome};

use super::scheduler::{DeviceClass, DeviceId, NoDevices, Piece, PieceEnd, Scheduler};
use crate::search::NONCE_SPACE;

/// Templates searched at a time.
pub(crate) const AHEAD: usize = 2;

/// What the shell is to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MinerCommand {
    /// Write this line (ends with `\n`) to the pool.
    Send(String),
    /// Queue this piece on its device.
    Search(Piece),
    /// Cancel every piece of this range still queued or running, and forget its cancel flag
    /// (also sent for a range searched in full).
    Cancel(AssignmentId),
    /// Close the connection for this reason, then report `handle_disconnect`.
    Close { reason: String },
    /// The pool asked to reconnect (on `port` if given) after `wait_secs`.
    Reconnect { port: Option<u16>, wait_secs: u64 },
    /// The pool refused the credentials: stop, with this reason.
    Unauthorized { reason: String },
    /// Something an operator may want to see.
    Notice(String),
}

/// The shares over the miner's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MineCounts {
    /// Hits that met the pool's target.
    pub found: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Submitted without an answer (timeout, or the connection dropped first).
    pub unknown: u64,
    /// Hits not submitted: their job was revoked, or the connection was down.
    pub dropped: u64,
}

/// One header template: a job with one extranonce2 and version.
#[derive(Debug, Clone)]
struct Template {
    job_id: String,
    extranonce2: Vec<u8>,
    ntime: u32,
    /// The rolled version bits sent with each share (when version rolling is agreed).
    version_bits: Option<u32>,
}

/// The miner: a Stratum client session driving the node's devices.
#[derive(Debug)]
pub(crate) struct Miner {
    client: ClientSession,
    scheduler: Scheduler,
    /// The job searched now.
    job: Option<Job>,
    /// The next template's number within the subscription's extranonce2 space.
    next_template: u128,
    /// That space: (extranonce1, extranonce2 size). A new one starts the count over; the same
    /// one again (a new job, a resumed session) keeps counting, so no template repeats.
    space: Option<(Vec<u8>, usize)>,
    templates: HashMap<AssignmentId, Template>,
    next_assignment: AssignmentId,
    counts: MineCounts,
    commands: VecDeque<MinerCommand>,
}

impl Miner {
    /// A miner over `devices` (class and measured rate).
    pub fn new(client: ClientSession, devices: impl IntoIterator<Item = (DeviceClass, f64)>) -> Self {
        Miner {
            client,
            scheduler: Scheduler::new(devices),
            job: None,
            next_template: 0,
            space: None,
            templates: HashMap::new(),
            next_assignment: 0,
            counts: MineCounts::default(),
            commands: VecDeque::new(),
        }
    }

    pub fn counts(&self) -> MineCounts {
        self.counts
    }

    pub fn client(&self) -> &ClientSession {
        &self.client
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.client.poll_timeout()
    }

    pub fn poll_command(&mut self) -> Option<MinerCommand> {
        self.commands.pop_front()
    }

    // The pool connection.

    pub fn connect(&mut self, now_ms: u64) {
        self.client.connect(now_ms);
        self.drain_client();
    }

    pub fn handle_line(&mut self, now_ms: u64, line: &[u8]) {
        self.client.handle_line(now_ms, line);
        self.drain_client();
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.client.handle_timeout(now_ms);
        self.drain_client();
    }

    pub fn handle_disconnect(&mut self, now_ms: u64) {
        self.client.handle_disconnect(now_ms);
        self.drain_client();
    }

    // The devices.

    /// A verified hit (it meets the range's share target, the job's pool target).
    pub fn handle_hit(&mut self, now_ms: u64, assignment: AssignmentId, nonce: u32) {
        self.counts.found += 1;
        let Some(t) = self.templates.get(&assignment) else {
            self.counts.dropped += 1;
            return;
        };
        let share = Submit {
            worker: String::new(), // the session puts its user in
            job_id: t.job_id.clone(),
            extranonce2: t.extranonce2.clone(),
            ntime: t.ntime,
            nonce,
            version_bits: t.version_bits,
        };
        if let Err(reject) = self.client.submit(now_ms, share) {
            self.counts.dropped += 1;
            self.commands.push_back(MinerCommand::Notice(format!("share not submitted: {}", reject.reason())));
        }
        self.drain_client();
    }

    pub fn handle_progress(&mut self, ticket: u64, hashes: u64) {
        self.scheduler.progress(ticket, hashes);
    }

    /// A piece ended; a range searched in full is replaced by the job's next template.
    pub fn handle_finished(&mut self, ticket: u64, hashes: u64, complete: bool) {
        match self.scheduler.finished(ticket, hashes, complete) {
            PieceEnd::Stale | PieceEnd::Pending => {}
            PieceEnd::RangeDone { assignment, .. } => {
                self.templates.remove(&assignment);
                self.commands.push_back(MinerCommand::Cancel(assignment)); // its flag is done with
                self.fill();
            }
            PieceEnd::RangeDropped { assignment } => {
                self.templates.remove(&assignment);
                self.commands.push_back(MinerCommand::Cancel(assignment));
                self.fill();
            }
        }
    }

    /// A device failed: its unsearched pieces go to the devices left.
    pub fn handle_device_failed(&mut self, device: DeviceId) -> Result<(), NoDevices> {
        let failover = self.scheduler.device_failed(device)?;
        for end in failover.ends {
            if let PieceEnd::RangeDone { assignment, .. } = end {
                self.templates.remove(&assignment);
                self.commands.push_back(MinerCommand::Cancel(assignment));
            }
        }
        self.commands.extend(failover.pieces.into_iter().map(MinerCommand::Search));
        self.fill();
        Ok(())
    }

    // Internals.

    fn drain_client(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Send(line) => self.commands.push_back(MinerCommand::Send(line.into())),
                ClientEvent::State(ClientState::Unauthorized { reason }) => {
                    self.stop_searching();
                    self.commands.push_back(MinerCommand::Unauthorized { reason });
                }
                ClientEvent::State(ClientState::Disconnected) => self.stop_searching(),
                ClientEvent::State(ClientState::Ready) => {
                    self.commands.push_back(MinerCommand::Notice("authorized; mining".into()));
                    self.fill();
                }
                ClientEvent::State(_) => {}
                ClientEvent::Job { job, .. } => {
                    self.stop_searching();
                    let space = (job.extranonce1.clone(), job.extranonce2_size);
                    if self.space.as_ref() != Some(&space) {
                        self.space = Some(space);
                        self.next_template = 0;
                    }
                    self.job = Some(job);
                    self.fill();
                }
                ClientEvent::Submitted { outcome, .. } => match outcome {
                    SubmitOutcome::Accepted => self.counts.accepted += 1,
                    SubmitOutcome::Rejected { code, reason } => {
                        self.counts.rejected += 1;
                        self.commands.push_back(MinerCommand::Notice(format!("share rejected: {code} {reason}")));
                    }
                    SubmitOutcome::Unknown => self.counts.unknown += 1,
                },
                ClientEvent::Reconnect { port, wait_secs } => {
                    self.commands.push_back(MinerCommand::Reconnect { port, wait_secs })
                }
                ClientEvent::Close { reason } => self.commands.push_back(MinerCommand::Close { reason }),
                ClientEvent::Notice(text) => self.commands.push_back(MinerCommand::Notice(text)),
            }
        }
    }

    /// Cancels every range and forgets the job.
    fn stop_searching(&mut self) {
        self.job = None;
        self.templates.clear();
        for id in self.scheduler.clear() {
            self.commands.push_back(MinerCommand::Cancel(id));
        }
    }

    /// Keeps `AHEAD` templates of the current job searched, while the session may submit.
    fn fill(&mut self) {
        if *self.client.state() != ClientState::Ready {
            return;
        }
        while self.templates.len() < AHEAD {
            let Some(job) = &self.job else { return };
            let Some(template) = template(job, self.next_template) else {
                self.commands.push_back(MinerCommand::Notice(format!(
                    "job {}: extranonce2 and version space used up; waiting for the next job",
                    job.id()
                )));
                self.job = None;
                return;
            };
            self.next_template += 1;
            let version = match template.version_bits {
                Some(bits) => job.rolled_version(bits),
                None => job.notify.version,
            };
            let Ok(header) = job.header(&template.extranonce2, template.ntime, 0, version) else { return };
            let id = self.next_assignment;
            self.next_assignment += 1;
            let assignment = Assignment {
                id,
                job: 0,
                header,
                share_target: job.share_target,
                start: 0,
                count: NONCE_SPACE,
                rolled: 0,
            };
            let Ok(pieces) = self.scheduler.assign(assignment) else { return };
            self.templates.insert(id, template);
            self.commands.extend(pieces.into_iter().map(MinerCommand::Search));
        }
    }
}

/// The job's template number `n`: extranonce2 = `n` (big-endian, the job's size) while it
/// fits, then the version bits inside the mask count up too. `None` once both are used up.
fn template(job: &Job, n: u128) -> Option<Template> {
    let extranonce2_values = 1u128.checked_shl(8 * job.extranonce2_size as u32).unwrap_or(u128::MAX);
    let (counter, roll) = (n % extranonce2_values, n / extranonce2_values);
    let mask = job.version_mask;
    if roll >> mask.count_ones() != 0 {
        return None;
    }
    let mut extranonce2 = vec![0u8; job.extranonce2_size];
    let be = counter.to_be_bytes();
    let take = extranonce2.len().min(16);
    let len = extranonce2.len();
    extranonce2[len - take..].copy_from_slice(&be[16 - take..]);
    let version_bits = (mask != 0).then(|| (job.notify.version & mask) ^ deposit(roll as u32, mask));
    Some(Template { job_id: job.id().to_owned(), extranonce2, ntime: job.notify.ntime, version_bits })
}

/// The low bits of `value` spread over the set bits of `mask`, lowest first.
fn deposit(mut value: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut bits = mask;
    while bits != 0 && value != 0 {
        let lowest = bits & bits.wrapping_neg();
        if value & 1 == 1 {
            out |= lowest;
        }
        value >>= 1;
        bits &= bits - 1;
    }
    out
}

#[cfg(test)]
#[path = "miner_tests.rs"]
mod tests;
