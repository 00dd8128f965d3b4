//! The session in virtual time: a `Rig` plays the shell (its workers are the test's hands)
//! and time is a number the test advances, so heartbeats, welcome timeouts and reconnect
//! delays are checked exactly and without sleeping.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use hashgrid_common::{Header, Target};
use proptest::prelude::*;

use super::*;
use crate::search::SearchError;

const RANGE: u64 = 1_000_000;

fn ready(kind: BackendKind, name: &str, hashrate: f64) -> Ready {
    Ready { kind, device: name.into(), hashrate }
}

/// A GPU three times as fast as the CPU: a range of `RANGE` splits 3:1.
fn two_devices() -> Vec<Ready> {
    vec![ready(BackendKind::Gpu, "gpu", 3e6), ready(BackendKind::Cpu, "cpu", 1e6)]
}

fn identity() -> Identity {
    Identity {
        token: "token".into(),
        name: "rig".into(),
        standby: false,
        software_version: "1.2.3".into(),
        announce_rate: None,
    }
}

fn assignment(id: AssignmentId, count: u64) -> Assignment {
    Assignment {
        id,
        job: 100 + id,
        header: Header::from_bytes(&[7; 80]),
        share_target: Target::DIFFICULTY_1,
        start: 0,
        count,
        rolled: 0,
    }
}

/// The shell's part, played by the test: what the session asked for, in order, and the
/// workers' queues as pieces with their ranges' cancel flags.
struct Rig {
    session: Session,
    now: Instant,
    /// Messages sent, with the time they went out.
    sent: Vec<(Instant, NodeMessage)>,
    hellos: Vec<NodeHello>,
    closes: Vec<&'static str>,
    close_codes: Vec<u32>,
    connects: usize,
    /// Pieces queued or running on the workers, by ticket.
    running: BTreeMap<u64, (Piece, Rc<Cell<bool>>)>,
    cancels: HashMap<AssignmentId, Rc<Cell<bool>>>,
    ended: Vec<AssignmentId>,
    dropped: Vec<DeviceId>,
    /// Devices whose workers take no more pieces.
    stopped: BTreeSet<DeviceId>,
}

impl Rig {
    fn new(devices: &[Ready]) -> Rig {
        let mut rig = Rig {
            session: Session::new(identity(), devices, NodeMetrics::new(), 7),
            now: Instant::now(),
            sent: Vec::new(),
            hellos: Vec::new(),
            closes: Vec::new(),
            close_codes: Vec::new(),
            connects: 0,
            running: BTreeMap::new(),
            cancels: HashMap::new(),
            ended: Vec::new(),
            dropped: Vec::new(),
            stopped: BTreeSet::new(),
        };
        rig.drain().unwrap();
        rig
    }

    /// A rig connected and welcomed with heartbeats every `heartbeat_ms`.
    fn welcomed(devices: &[Ready], heartbeat_ms: u32) -> Rig {
        let mut rig = Rig::new(devices);
        rig.connect(heartbeat_ms);
        rig
    }

    /// Carries out every command, as the shell does.
    fn drain(&mut self) -> Result<(), NodeError> {
        while let Some(command) = self.session.poll_command() {
            match command {
                Command::Connect => self.connects += 1,
                Command::Hello(hello) => self.hellos.push(hello),
                Command::Send(msg) => self.sent.push((self.now, msg)),
                Command::Close { code, reason } => {
                    self.close_codes.push(code);
                    self.closes.push(reason)
                }
                Command::Start(piece) if self.stopped.contains(&piece.device) => {
                    self.session.handle_device_stopped(piece.device)?;
                }
                Command::Start(piece) => {
                    let cancel = self.cancels.entry(piece.assignment.id).or_default().clone();
                    assert!(self.running.insert(piece.ticket, (piece, cancel)).is_none(), "ticket reused");
                }
                Command::EndRange(id) => {
                    if let Some(cancel) = self.cancels.remove(&id) {
                        cancel.set(true);
                    }
                    self.ended.push(id);
                }
                Command::DropDevice(device) => {
                    self.dropped.push(device);
                    self.running.retain(|_, (piece, _)| piece.device != device);
                }
            }
        }
        Ok(())
    }

    /// Moves time on by `by`, handling every timeout due on the way at its own time.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        let mut timeouts = 0;
        while let Some(at) = self.session.poll_timeout().filter(|at| *at <= until) {
            timeouts += 1;
            assert!(timeouts <= 100_000, "the session keeps asking for {at:?}");
            self.now = self.now.max(at);
            self.session.handle_timeout(self.now);
            self.drain().unwrap();
        }
        self.now = until;
    }

    /// Connects (the session must have asked to) and answers the hello with a welcome.
    fn connect(&mut self, heartbeat_ms: u32) {
        let connects = self.connects;
        self.session.handle_connected(self.now);
        self.drain().unwrap();
        assert!(connects > 0 && !self.hellos.is_empty(), "a hello after a connect");
        self.message(CoordinatorMessage::Welcome { node: 1, heartbeat_ms }).unwrap();
    }

    fn lose(&mut self) {
        self.session.handle_connection_lost(self.now, "test");
        self.drain().unwrap();
    }

    fn message(&mut self, msg: CoordinatorMessage) -> Result<(), NodeError> {
        self.session.handle_message(self.now, msg)?;
        self.drain()
    }

    fn event(&mut self, device: DeviceId, event: WorkerEvent) -> Result<(), NodeError> {
        self.session.handle_device_event(DeviceEvent { device, event })?;
        self.drain()
    }

    /// The running pieces of a range, in ticket order.
    fn pieces_of(&self, id: AssignmentId) -> Vec<Piece> {
        self.running.values().filter(|(p, _)| p.assignment.id == id).map(|(p, _)| *p).collect()
    }

    /// A hit in the piece, as its worker reports it.
    fn hit(&mut self, piece: Piece, nonce: u32) {
        self.event(
            piece.device,
            WorkerEvent::Hit { assignment: piece.assignment, version: piece.assignment.header.version, nonce },
        )
        .unwrap();
    }

    /// The piece's worker ends it: searched in full unless its range was cancelled.
    fn finish(&mut self, ticket: u64) -> Result<(), NodeError> {
        let (piece, cancel) = self.running.remove(&ticket).expect("a running piece");
        let complete = !cancel.get();
        let hashes = if complete { piece.assignment.count } else { piece.assignment.count / 2 };
        let finished = WorkerEvent::Finished { ticket, assignment: piece.assignment.id, hashes, complete };
        self.event(piece.device, finished)
    }

    /// Messages sent other than heartbeats.
    fn messages(&self) -> Vec<NodeMessage> {
        self.sent.iter().map(|(_, m)| m.clone()).filter(|m| !matches!(m, NodeMessage::Heartbeat { .. })).collect()
    }

    fn heartbeat_times(&self) -> Vec<Instant> {
        self.sent.iter().filter(|(_, m)| matches!(m, NodeMessage::Heartbeat { .. })).map(|(at, _)| *at).collect()
    }

    fn shares_sent(&self) -> Vec<Share> {
        self.sent
            .iter()
            .filter_map(|(_, m)| match m {
                NodeMessage::Share(share) => Some(*share),
                _ => None,
            })
            .collect()
    }

    fn range_dones(&self) -> Vec<(AssignmentId, u64)> {
        self.sent
            .iter()
            .filter_map(|(_, m)| match m {
                NodeMessage::RangeDone { assignment, hashes } => Some((*assignment, *hashes)),
                _ => None,
            })
            .collect()
    }

    /// The time until the session's next timeout.
    fn next_in(&self) -> Duration {
        self.session.poll_timeout().expect("a timeout") - self.now
    }
}

#[test]
fn the_hello_says_who_the_node_is_and_what_its_devices_do() {
    let mut rig = Rig::new(&two_devices());
    assert_eq!(rig.connects, 1, "a session starts by connecting");
    assert_eq!(rig.session.poll_timeout(), None, "nothing is timed while connecting");
    rig.session.handle_connected(rig.now);
    rig.drain().unwrap();
    let hello = &rig.hellos[0];
    assert_eq!((hello.token.as_str(), hello.name.as_str(), hello.software_version.as_str()), ("token", "rig", "1.2.3"));
    assert_eq!(hello.devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["gpu", "cpu"]);
    assert_eq!(hello.hashrate, 4e6);
}

#[test]
fn heartbeats_come_at_the_asked_period() {
    let mut rig = Rig::welcomed(&two_devices(), 250);
    let welcomed = rig.now;
    rig.advance(Duration::from_millis(1_100));
    let expected: Vec<Instant> = (1..=4).map(|i| welcomed + Duration::from_millis(250 * i)).collect();
    assert_eq!(rig.heartbeat_times(), expected);
    let (_, NodeMessage::Heartbeat { hashrate, devices }) = &rig.sent[0] else { panic!("{:?}", rig.sent) };
    assert_eq!((*hashrate, devices.len()), (4e6, 2));
}

#[test]
fn heartbeats_are_never_faster_than_the_floor() {
    for asked in [0, 1, 99] {
        let mut rig = Rig::welcomed(&two_devices(), asked);
        let welcomed = rig.now;
        rig.advance(Duration::from_millis(1_000));
        let expected: Vec<Instant> = (1..=10).map(|i| welcomed + MIN_HEARTBEAT * i).collect();
        assert_eq!(rig.heartbeat_times(), expected, "asked for {asked} ms");
    }
}

#[test]
fn no_heartbeat_before_the_welcome_and_none_while_disconnected() {
    let mut rig = Rig::new(&two_devices());
    rig.session.handle_connected(rig.now);
    rig.drain().unwrap();
    rig.advance(Duration::from_secs(1));
    assert!(rig.sent.is_empty());
    rig.message(CoordinatorMessage::Welcome { node: 1, heartbeat_ms: 100 }).unwrap();
    rig.lose();
    rig.advance(BACKOFF_MIN / 4);
    assert!(rig.sent.is_empty(), "{:?}", rig.sent);
}

#[test]
fn a_missing_welcome_closes_the_connection_and_retries() {
    let mut rig = Rig::new(&two_devices());
    rig.session.handle_connected(rig.now);
    rig.drain().unwrap();
    assert_eq!(rig.next_in(), WELCOME_TIMEOUT);
    rig.advance(WELCOME_TIMEOUT - Duration::from_millis(1));
    assert!(rig.closes.is_empty());
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.closes, [NO_WELCOME_REASON]);
    assert!(rig.next_in() <= BACKOFF_MIN);
    rig.advance(BACKOFF_MIN);
    assert_eq!(rig.connects, 2);
}

#[test]
fn messages_before_the_welcome_are_ignored() {
    let mut rig = Rig::new(&two_devices());
    rig.session.handle_connected(rig.now);
    rig.drain().unwrap();
    rig.message(CoordinatorMessage::Assign(assignment(1, RANGE))).unwrap();
    assert!(rig.running.is_empty());
    rig.message(CoordinatorMessage::Welcome { node: 1, heartbeat_ms: 1_000 }).unwrap();
    rig.message(CoordinatorMessage::Assign(assignment(1, RANGE))).unwrap();
    assert_eq!(rig.pieces_of(1).len(), 2);
}

#[test]
fn backoff_doubles_to_the_max_and_resets_after_a_welcome() {
    let mut rig = Rig::new(&two_devices());
    let mut step = BACKOFF_MIN;
    for attempt in 0..10 {
        rig.lose();
        let delay = rig.next_in();
        assert!(delay >= step / 2 && delay <= step, "attempt {attempt}: {delay:?} for a step of {step:?}");
        rig.advance(delay);
        assert_eq!(rig.connects, attempt + 2, "reconnects when the delay is over");
        step = (step * 2).min(BACKOFF_MAX);
    }
    assert_eq!(step, BACKOFF_MAX);
    // A connection that is not welcomed does not reset it.
    rig.session.handle_connected(rig.now);
    rig.lose();
    assert!(rig.next_in() >= BACKOFF_MAX / 2);
    rig.advance(BACKOFF_MAX);
    rig.connect(1_000);
    rig.lose();
    assert!(rig.next_in() <= BACKOFF_MIN, "{:?}", rig.next_in());
}

#[test]
fn a_range_is_done_only_after_every_device_piece() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(4, RANGE))).unwrap();
    let pieces = rig.pieces_of(4);
    let split: Vec<(DeviceId, u32, u64)> =
        pieces.iter().map(|p| (p.device, p.assignment.start, p.assignment.count)).collect();
    assert_eq!(split, [(0, 0, 750_000), (1, 750_000, 250_000)]);
    rig.finish(pieces[1].ticket).unwrap();
    assert_eq!(rig.range_dones(), []);
    rig.finish(pieces[0].ticket).unwrap();
    assert_eq!(rig.range_dones(), [(4, RANGE)]);
    assert_eq!(rig.ended, [4], "the range's cancel flag is let go");
}

#[test]
fn revoke_cancels_every_piece_and_gets_no_range_done() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(2, RANGE))).unwrap();
    rig.message(CoordinatorMessage::Assign(assignment(3, RANGE))).unwrap();
    let pieces = rig.pieces_of(2);
    rig.message(CoordinatorMessage::Revoke { assignment: 2 }).unwrap();
    assert_eq!(rig.ended, [2]);
    assert!(pieces.iter().all(|p| rig.running[&p.ticket].1.get()), "every piece of the range is cancelled");
    assert!(rig.pieces_of(3).iter().all(|p| !rig.running[&p.ticket].1.get()), "the other range runs on");
    for piece in pieces {
        rig.finish(piece.ticket).unwrap();
    }
    // A revoke of a range not held changes nothing.
    rig.message(CoordinatorMessage::Revoke { assignment: 2 }).unwrap();
    assert_eq!(rig.ended, [2]);
    for piece in rig.pieces_of(3) {
        rig.finish(piece.ticket).unwrap();
    }
    assert_eq!(rig.range_dones(), [(3, RANGE)]);
}

#[test]
fn a_range_assigned_again_replaces_the_old_one() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(5, RANGE))).unwrap();
    let old = rig.pieces_of(5);
    rig.message(CoordinatorMessage::Assign(assignment(5, RANGE / 2))).unwrap();
    assert_eq!(rig.ended, [5]);
    assert!(old.iter().all(|p| rig.running[&p.ticket].1.get()), "the old pieces are cancelled");
    let new: Vec<Piece> = rig.pieces_of(5).into_iter().filter(|p| !old.contains(p)).collect();
    assert!(new.iter().all(|p| !rig.running[&p.ticket].1.get()), "the new pieces have a flag of their own");
    for piece in old.iter().chain(&new) {
        rig.finish(piece.ticket).unwrap();
    }
    assert_eq!(rig.range_dones(), [(5, RANGE / 2)]);
}

#[test]
fn invalid_ranges_are_ignored() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(1, 0))).unwrap();
    let past_the_end = Assignment { start: u32::MAX, ..assignment(2, 2) };
    rig.message(CoordinatorMessage::Assign(past_the_end)).unwrap();
    assert!(rig.running.is_empty());
}

#[test]
fn unacked_shares_are_sent_again_after_a_reconnect() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(1, RANGE))).unwrap();
    let piece = rig.pieces_of(1)[0];
    for nonce in [10, 20, 30] {
        rig.hit(piece, nonce);
    }
    let first = rig.shares_sent();
    assert_eq!(
        first.iter().map(|s| (s.id, s.assignment, s.job, s.nonce)).collect::<Vec<_>>(),
        [(0, 1, 101, 10), (1, 1, 101, 20), (2, 1, 101, 30)]
    );
    rig.message(CoordinatorMessage::ShareResult { id: 0, outcome: ShareOutcome::Accepted { work: 1 } }).unwrap();
    rig.lose();
    assert_eq!(rig.ended, [1], "a lost connection ends its ranges");
    // The worker had one more hit on the way: kept, not sent.
    rig.hit(piece, 40);
    assert_eq!(rig.shares_sent().len(), 3);
    rig.advance(BACKOFF_MIN);
    rig.connect(1_000);
    let resent = &rig.shares_sent()[3..];
    assert_eq!(resent.iter().map(|s| (s.id, s.nonce)).collect::<Vec<_>>(), [(1, 20), (2, 30), (3, 40)]);
    for id in 1..=3 {
        let outcome = ShareOutcome::Rejected(RejectReason::Duplicate);
        rig.message(CoordinatorMessage::ShareResult { id, outcome }).unwrap();
    }
    assert_eq!(rig.session.counts(), ShareCounts { accepted: 1, rejected: 3 });
    assert_eq!(rig.session.pending_shares().count(), 0);
    // Answered shares are not sent again.
    rig.lose();
    rig.advance(BACKOFF_MIN);
    rig.connect(1_000);
    assert_eq!(rig.shares_sent().len(), 6);
}

#[test]
fn past_the_cap_the_oldest_unacked_shares_are_dropped() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(1, RANGE))).unwrap();
    let piece = rig.pieces_of(1)[0];
    rig.lose();
    for nonce in 0..(MAX_PENDING_SHARES + 2) as u32 {
        rig.hit(piece, nonce);
    }
    let ids: Vec<u64> = rig.session.pending_shares().map(|s| s.id).collect();
    assert_eq!(ids.len(), MAX_PENDING_SHARES);
    assert_eq!(ids[0], 2, "the two oldest are dropped");
    rig.advance(BACKOFF_MIN);
    rig.connect(1_000);
    let resent = rig.shares_sent();
    assert_eq!(resent.len(), MAX_PENDING_SHARES);
    assert_eq!((resent[0].id, resent.last().unwrap().id), (2, MAX_PENDING_SHARES as u64 + 1));
}

#[test]
fn a_failed_devices_rest_goes_to_the_other_and_the_last_failure_stops_the_node() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(6, RANGE))).unwrap();
    let pieces = rig.pieces_of(6);
    rig.event(0, WorkerEvent::Progress { ticket: pieces[0].ticket, hashes: 250_000, elapsed: Duration::ZERO }).unwrap();
    rig.event(0, WorkerEvent::Failed(SearchError::Gpu("device lost".into()))).unwrap();
    assert_eq!(rig.dropped, [0]);
    let rest = rig.pieces_of(6);
    let split: Vec<(DeviceId, u32, u64)> =
        rest.iter().map(|p| (p.device, p.assignment.start, p.assignment.count)).collect();
    assert_eq!(split, [(1, 750_000, 250_000), (1, 250_000, 500_000)]);
    for piece in rest {
        rig.finish(piece.ticket).unwrap();
    }
    assert_eq!(rig.range_dones(), [(6, RANGE)]);
    rig.advance(Duration::from_secs(1));
    let Some((_, NodeMessage::Heartbeat { devices, hashrate })) = rig.sent.last() else { panic!() };
    assert_eq!((devices.len(), *hashrate), (1, 1e6), "the failed device is no longer announced");
    let err = rig.event(1, WorkerEvent::Failed(SearchError::Gpu("gone too".into()))).unwrap_err();
    assert_eq!(err.to_string(), "search backend: GPU error: gone too");
}

#[test]
fn a_worker_that_takes_no_piece_fails_its_device_over() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.stopped.insert(0);
    rig.message(CoordinatorMessage::Assign(assignment(7, RANGE))).unwrap();
    assert_eq!(rig.dropped, [0]);
    let pieces = rig.pieces_of(7);
    assert_eq!(pieces.iter().map(|p| p.assignment.count).sum::<u64>(), RANGE);
    assert!(pieces.iter().all(|p| p.device == 1));
    rig.stopped.insert(1);
    assert!(matches!(rig.message(CoordinatorMessage::Assign(assignment(8, RANGE))), Err(NodeError::WorkerGone)));
}

#[test]
fn shutdown_closes_the_connection_and_ends_every_range() {
    let mut rig = Rig::welcomed(&two_devices(), 1_000);
    rig.message(CoordinatorMessage::Assign(assignment(1, RANGE))).unwrap();
    rig.message(CoordinatorMessage::Assign(assignment(2, RANGE))).unwrap();
    rig.session.handle_shutdown();
    rig.drain().unwrap();
    assert_eq!(rig.closes, [SHUTDOWN_REASON]);
    assert_eq!(rig.close_codes, [close_code::DEPARTING], "a shutdown is a departure, told by its code");
    assert_eq!(rig.ended, [1, 2]);
    assert!(rig.session.is_stopped());
    assert_eq!(rig.session.poll_timeout(), None);
    // Late piece ends report nothing.
    let tickets: Vec<u64> = rig.running.keys().copied().collect();
    for ticket in tickets {
        rig.finish(ticket).unwrap();
    }
    assert_eq!(rig.messages(), []);
}

#[test]
fn an_announced_rate_scales_the_devices() {
    let identity = Identity { announce_rate: Some(8e6), ..identity() };
    let mut session = Session::new(identity, &two_devices(), NodeMetrics::new(), 1);
    session.poll_command();
    session.handle_connected(Instant::now());
    let Some(Command::Hello(hello)) = session.poll_command() else { panic!() };
    assert_eq!(hello.hashrate, 8e6);
    assert_eq!(hello.devices.iter().map(|d| d.hashrate).collect::<Vec<_>>(), [6e6, 2e6]);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// A new range, of `count` nonces.
    Assign(u64),
    /// Revoke the range held `n`-th (modulo), or one never held.
    Revoke(usize),
    /// A hit in the running piece `n`-th (modulo).
    Hit(usize),
    /// The running piece `n`-th (modulo) ends, searched in full unless cancelled.
    Finish(usize),
    /// The coordinator answers the unanswered share `n`-th (modulo).
    Answer(usize, bool),
    /// The first device fails (the second never does).
    FailFirst,
    Lose,
    /// The connection asked for is made and welcomed.
    Welcome,
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1u64..400_000).prop_map(Step::Assign),
        1 => (0usize..8).prop_map(Step::Revoke),
        4 => (0usize..16).prop_map(Step::Hit),
        3 => (0usize..16).prop_map(Step::Finish),
        3 => (0usize..16, any::<bool>()).prop_map(|(n, ok)| Step::Answer(n, ok)),
        1 => Just(Step::FailFirst),
        1 => Just(Step::Lose),
        2 => Just(Step::Welcome),
        2 => (0u64..3_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever happens: every share found is answered or still pending (and no answered one
    /// is sent again); every share pending is sent again after each welcome; a range is
    /// reported done at most once, only if it was assigned on the current connection and not
    /// revoked, with every one of its nonces searched; nothing is sent while disconnected.
    #[test]
    fn shares_and_ranges_are_never_lost_nor_doubled(steps in proptest::collection::vec(step(), 1..80)) {
        let mut rig = Rig::new(&two_devices());
        let mut next_id = 1;
        // Ranges assigned on the current connection and not revoked: id and count.
        let mut held: BTreeMap<AssignmentId, u64> = BTreeMap::new();
        let mut done: BTreeSet<AssignmentId> = BTreeSet::new();
        let mut answered: BTreeSet<u64> = BTreeSet::new();
        let mut found = 0u64;
        let mut up = false;
        for step in steps {
            let sent_before = rig.sent.len();
            match step {
                Step::Assign(count) => {
                    rig.message(CoordinatorMessage::Assign(assignment(next_id, count))).unwrap();
                    if up {
                        held.insert(next_id, count);
                    }
                    next_id += 1;
                }
                Step::Revoke(n) => {
                    let id = held.keys().nth(n % (held.len() + 1)).copied().unwrap_or(0);
                    held.remove(&id);
                    rig.message(CoordinatorMessage::Revoke { assignment: id }).unwrap();
                }
                Step::Hit(n) => {
                    if let Some((piece, _)) = rig.running.values().nth(n % rig.running.len().max(1)).cloned() {
                        rig.hit(piece, n as u32);
                        found += 1;
                    }
                }
                Step::Finish(n) => {
                    if let Some(&ticket) = rig.running.keys().nth(n % rig.running.len().max(1)) {
                        rig.finish(ticket).unwrap();
                    }
                }
                Step::Answer(n, accepted) => {
                    let ids: Vec<u64> = rig.session.pending_shares().map(|s| s.id).collect();
                    if let Some(&id) = ids.get(n % ids.len().max(1)) {
                        let outcome = if accepted {
                            ShareOutcome::Accepted { work: 1 }
                        } else {
                            ShareOutcome::Rejected(RejectReason::StaleJob)
                        };
                        rig.message(CoordinatorMessage::ShareResult { id, outcome }).unwrap();
                        if up {
                            answered.insert(id);
                        }
                    }
                }
                Step::FailFirst => rig.event(0, WorkerEvent::Failed(SearchError::Gpu("lost".into()))).unwrap(),
                Step::Lose => {
                    up = false;
                    held.clear();
                    rig.lose();
                }
                Step::Welcome => {
                    if rig.session.poll_timeout().is_none() && !up {
                        let pending: Vec<u64> = rig.session.pending_shares().map(|s| s.id).collect();
                        rig.connect(1_000);
                        up = true;
                        let resent: Vec<u64> = rig.sent[sent_before..].iter().filter_map(|(_, m)| match m {
                            NodeMessage::Share(s) => Some(s.id),
                            _ => None,
                        }).collect();
                        prop_assert_eq!(resent, pending, "every unanswered share goes out again, in order");
                    }
                }
                Step::Wait(ms) => rig.advance(Duration::from_millis(ms)),
            }
            let new = &rig.sent[sent_before..];
            prop_assert!(up || new.is_empty(), "sent while disconnected: {:?}", new);
            for (_, msg) in new {
                match msg {
                    NodeMessage::RangeDone { assignment, hashes } => {
                        prop_assert_eq!(held.remove(assignment), Some(*hashes), "done: held, whole, not revoked");
                        prop_assert!(done.insert(*assignment), "range {} done twice", assignment);
                    }
                    NodeMessage::Share(share) => prop_assert!(!answered.contains(&share.id), "answered share sent again"),
                    // The session sends shares one by one; the shell batches them.
                    NodeMessage::Heartbeat { .. } | NodeMessage::Shares(_) => {}
                }
            }
            let pending: BTreeSet<u64> = rig.session.pending_shares().map(|s| s.id).collect();
            prop_assert!(pending.is_disjoint(&answered));
            prop_assert_eq!(pending.len() + answered.len(), found as usize, "every share is answered or pending");
        }
    }
}
