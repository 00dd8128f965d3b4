//! Scenario and property tests of the core with virtual time. Shares are found by really
//! hashing the assigned ranges, so every credit in these tests is a verified share.

use super::*;
use hashgrid_common::message::{Assignment, DeviceInfo, PROTOCOL_VERSION, ShareOutcome};
use proptest::prelude::*;

pub(super) const T0: u64 = 1_700_000_000_000;

pub(super) fn hello(name: &str, hashrate: f64, standby: bool) -> NodeHello {
    NodeHello {
        token: String::new(),
        name: name.into(),
        software_version: "test".into(),
        standby,
        devices: vec![DeviceInfo { kind: "cpu".into(), name: "test".into(), hashrate }],
        hashrate,
    }
}

/// A core whose shares are cheap (4096 expected hashes each).
pub(super) fn core() -> Core {
    Core::new(CoreConfig { min_share_work: 4096, shares_per_second: 1e9, ..CoreConfig::default() })
}

/// `core()` with one account "a" whose standard is never reached and two active nodes, 1
/// ("n1") and 2 ("n2"), joined at `T0` and holding their first ranges.
pub(super) fn two_nodes() -> (Core, Farm) {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    (core, farm)
}

/// The assignments currently held by each node, from the commands seen so far.
#[derive(Default)]
pub(super) struct Farm {
    pub held: BTreeMap<NodeId, Vec<Assignment>>,
    pub credits: Vec<StoreOp>,
    pub results: Vec<(NodeId, u64, ShareOutcome)>,
    /// Ledger entries: kind and payload.
    pub ledger: Vec<(String, serde_json::Value)>,
    /// The stored fates of ranges, in order: assignment and fate.
    pub fates: Vec<(AssignmentId, String)>,
    /// Pool connection commands and upstream records, in order.
    pub pool: Vec<Command>,
    /// Orders to Stratum miners, in order.
    pub miners: Vec<(NodeId, MinerOrder)>,
    next_share: u64,
    /// Nonces of each assignment already hashed.
    searched: BTreeMap<AssignmentId, u64>,
}

impl Farm {
    pub fn absorb(&mut self, core: &mut Core) {
        for c in core.drain_commands() {
            match c {
                Command::Send { node, msg: CoordinatorMessage::Assign(a) } => {
                    self.held.entry(node).or_default().push(a)
                }
                Command::Send { node, msg: CoordinatorMessage::Revoke { assignment } } => {
                    self.held.entry(node).or_default().retain(|a| a.id != assignment)
                }
                Command::Send { node, msg: CoordinatorMessage::ShareResult { id, outcome } } => {
                    self.results.push((node, id, outcome))
                }
                Command::Persist(op @ StoreOp::Credit { .. }) => self.credits.push(op),
                Command::Persist(StoreOp::RangeFate { assignment, fate, .. }) => {
                    self.fates.push((assignment, fate.to_string()))
                }
                Command::Persist(StoreOp::Ledger { record, .. }) => {
                    let (kind, payload) = record.encode();
                    assert_eq!(ledger::LedgerRecord::decode(&kind, &payload).unwrap(), record, "{payload}");
                    self.ledger.push((kind, serde_json::from_str(&payload).expect("ledger payload is JSON")))
                }
                Command::Close { node, .. } => {
                    self.held.remove(&node);
                }
                Command::Miner { node, order } => self.miners.push((node, order)),
                c @ (Command::PoolConnect { .. }
                | Command::PoolSend { .. }
                | Command::PoolClose { .. }
                | Command::Persist(StoreOp::UpstreamSubmitted { .. } | StoreOp::UpstreamOutcome { .. })) => {
                    self.pool.push(c)
                }
                _ => {}
            }
        }
    }

    /// Hashes on in the node's first range until a share is found and submits it; finishes
    /// the range instead if no share is left in it.
    pub fn mine_one(&mut self, core: &mut Core, now: u64, node: NodeId) -> Option<Share> {
        let a = *self.held.get(&node)?.first()?;
        let skip = self.searched.get(&a.id).copied().unwrap_or(0);
        let Some(share) = find_share(&a, skip) else {
            self.finish_range(core, now, node);
            return None;
        };
        self.searched.insert(a.id, (share.nonce - a.start) as u64 + 1);
        let share = Share { id: self.next_share, ..share };
        self.next_share += 1;
        core.handle_node_message(now, node, NodeMessage::Share(share));
        self.absorb(core);
        Some(share)
    }

    /// The node finishes its first range.
    pub fn finish_range(&mut self, core: &mut Core, now: u64, node: NodeId) {
        if let Some(a) = self.held.get_mut(&node).filter(|h| !h.is_empty()).map(|h| h.remove(0)) {
            core.handle_node_message(now, node, NodeMessage::RangeDone { assignment: a.id, hashes: a.hashes() });
            self.absorb(core);
        }
    }

    pub fn account_of(&self, core: &Core, node: NodeId) -> Option<String> {
        let a = self.held.get(&node)?.first()?;
        core.jobs.get(&a.job).map(|j| j.account.clone())
    }
}

/// The first nonce at or after `skip` in the range whose hash meets the share target.
pub(super) fn find_share(a: &Assignment, skip: u64) -> Option<Share> {
    (a.start as u64 + skip..a.start as u64 + a.count).map(|n| n as u32).find_map(|nonce| {
        let h = a.header.with_nonce(nonce);
        a.share_target.is_met_by(&h.block_hash()).then_some(Share {
            id: 0,
            assignment: a.id,
            job: a.job,
            version: h.version,
            time: h.time,
            nonce,
        })
    })
}

pub(super) fn delivered(core: &Core, name: &str) -> u128 {
    core.accounts().iter().find(|a| a.name == name).map_or(0, |a| a.delivered.0)
}

#[test]
fn sequential_serves_accounts_in_order_and_switches_at_the_standard() {
    let mut core = core();
    let mut farm = Farm::default();
    for (name, order) in [("a", 1), ("b", 2), ("c", 3)] {
        core.add_account(T0, name, 3 * 4096, None, Some(order), None).unwrap();
    }
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let mut served = Vec::new();
    for step in 0..200 {
        let Some(account) = farm.account_of(&core, 1) else { break };
        // Sequential: nobody later in the order is credited while an earlier one is short.
        for earlier in core.accounts().iter().filter(|a| a.name < account) {
            assert!(earlier.up_to_standard(), "step {step}: {account} served before {}", earlier.name);
        }
        served.push(account);
        farm.mine_one(&mut core, T0 + step, 1);
    }
    served.dedup();
    assert_eq!(served, ["a", "b", "c"], "{:?} {:?}", core.accounts(), farm.held);
    assert!(core.accounts().iter().all(Account::up_to_standard));
    assert!(farm.held.get(&1).is_none_or(Vec::is_empty), "nodes park when everyone is up to standard");
    // Credit equals the sum over accepted shares.
    let credited: u128 =
        farm.credits.iter().map(|c| if let StoreOp::Credit { work, .. } = c { work.0 } else { 0 }).sum();
    assert_eq!(credited, core.accounts().iter().map(|a| a.delivered.0).sum::<u128>());
}

#[test]
fn proportional_accounts_finish_together() {
    let mut core = core();
    core.set_policy(T0, Policy::Proportional);
    let mut farm = Farm::default();
    core.add_account(T0, "small", 10 * 4096, None, None, None).unwrap();
    core.add_account(T0, "large", 30 * 4096, None, None, None).unwrap();
    for n in 1..=4 {
        core.handle_node_joined(T0, n, &hello(&format!("n{n}"), 10_000.0, false), PROTOCOL_VERSION);
    }
    farm.absorb(&mut core);
    let mut finished = BTreeMap::new();
    for step in 0..400u64 {
        let node = step % 4 + 1;
        farm.mine_one(&mut core, T0 + step, node);
        farm.finish_range(&mut core, T0 + step, node);
        for a in core.accounts() {
            if a.up_to_standard() {
                finished.entry(a.name.clone()).or_insert(step);
            }
        }
        if finished.len() == 2 {
            break;
        }
    }
    let (s, l) = (finished["small"], finished["large"]);
    assert!(s.abs_diff(l) <= 8, "small finished at {s}, large at {l}");
}

#[test]
fn a_silent_node_fails_and_its_range_goes_to_another() {
    let (mut core, mut farm) = two_nodes();
    let lost = farm.held[&1].clone();
    core.handle_node_message(T0 + 2000, 2, NodeMessage::Heartbeat { hashrate: 10_000.0, devices: Vec::new() });
    core.handle_tick(T0 + 3500);
    farm.absorb(&mut core);
    assert!(!farm.held.contains_key(&1), "node 1 closed");
    // Node 2 finishes its ranges and is given node 1's abandoned ranges next.
    farm.finish_range(&mut core, T0 + 3600, 2);
    farm.finish_range(&mut core, T0 + 3600, 2);
    let got: Vec<(u64, u32, u32)> = farm.held[&2].iter().map(|a| (a.job, a.header.version, a.start)).collect();
    for a in &lost {
        assert!(got.contains(&(a.job, a.header.version, a.start)), "{got:?} lacks {a:?}");
    }
}

#[test]
fn a_late_share_from_the_old_holder_is_credited_once() {
    let (mut core, mut farm) = two_nodes();
    let old = farm.held[&1][0];
    let share = find_share(&old, 0).unwrap();
    core.handle_node_left(T0 + 10, 1);
    farm.held.remove(&1);
    farm.absorb(&mut core);
    farm.finish_range(&mut core, T0 + 20, 2);
    farm.finish_range(&mut core, T0 + 20, 2);
    let new = *farm.held[&2].iter().find(|a| a.job == old.job && a.start == old.start).expect("reissued");
    // The old holder's share arrives late (over a new connection).
    core.handle_node_joined(T0 + 30, 3, &hello("n1", 10_000.0, true), PROTOCOL_VERSION);
    core.handle_node_message(T0 + 30, 3, NodeMessage::Share(Share { id: 1, ..share }));
    let same = Share { id: 2, assignment: new.id, ..share };
    core.handle_node_message(T0 + 31, 2, NodeMessage::Share(same));
    farm.absorb(&mut core);
    let outcomes: Vec<ShareOutcome> = farm.results.iter().map(|r| r.2).collect();
    assert!(matches!(outcomes[0], ShareOutcome::Accepted { .. }));
    assert_eq!(outcomes[1], ShareOutcome::Rejected(RejectReason::Duplicate));
    assert_eq!(farm.credits.len(), 1);
}

#[test]
fn shares_are_checked_in_order() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let a = farm.held[&1][0];
    let good = find_share(&a, 0).unwrap();
    let mut bad = |s: Share| {
        let mut core_result = None;
        core.handle_node_message(T0, 1, NodeMessage::Share(s));
        for c in core.drain_commands() {
            if let Command::Send { msg: CoordinatorMessage::ShareResult { outcome, .. }, .. } = c {
                core_result = Some(outcome);
            }
        }
        core_result.unwrap()
    };
    assert_eq!(bad(Share { job: 999, ..good }), ShareOutcome::Rejected(RejectReason::UnknownJob));
    assert_eq!(bad(Share { time: good.time + 10_000, ..good }), ShareOutcome::Rejected(RejectReason::TimeOutOfWindow));
    assert_eq!(
        bad(Share { version: good.version | 1, ..good }),
        ShareOutcome::Rejected(RejectReason::VersionOutsideMask)
    );
    let above = (a.start..).find(|&n| !a.share_target.is_met_by(&a.header.with_nonce(n).block_hash())).unwrap();
    assert_eq!(bad(Share { nonce: above, ..good }), ShareOutcome::Rejected(RejectReason::AboveTarget));
    assert_eq!(bad(good), ShareOutcome::Accepted { work: a.share_target.work() });
    assert_eq!(bad(good), ShareOutcome::Rejected(RejectReason::Duplicate));
}

#[test]
fn a_share_outside_the_node_s_ranges_is_refused() {
    let (mut core, farm) = two_nodes();
    let mine = farm.held[&1][0];
    let theirs = farm.held[&2][0];
    fn submit(core: &mut Core, now: u64, node: NodeId, share: Share) -> ShareOutcome {
        core.handle_node_message(now, node, NodeMessage::Share(share));
        core.drain_commands()
            .into_iter()
            .find_map(|c| match c {
                Command::Send { msg: CoordinatorMessage::ShareResult { outcome, .. }, .. } => Some(outcome),
                _ => None,
            })
            .unwrap()
    }
    let not_held = ShareOutcome::Rejected(RejectReason::RangeNotHeld);
    // A valid share of another node's range, under that node's assignment or its own.
    let stolen = find_share(&theirs, 0).unwrap();
    assert_eq!(submit(&mut core, T0 + 1, 1, stolen), not_held);
    assert_eq!(submit(&mut core, T0 + 1, 1, Share { assignment: mine.id, ..stolen }), not_held);
    // A valid share of the job just past the end of its own range.
    let past = Assignment { start: mine.start + mine.count as u32, count: 1 << 16, ..mine };
    let beyond = Share { assignment: mine.id, ..find_share(&past, 0).unwrap() };
    assert_eq!(submit(&mut core, T0 + 1, 1, beyond), not_held);
    assert_eq!(core.counters().shares_rejected[&RejectReason::RangeNotHeld], 3);
    assert_eq!(core.counters().shares_accepted, 0);
    // Its own shares: taken while the range is live and for the grace period after it is done.
    let first = find_share(&mine, 0).unwrap();
    assert!(matches!(submit(&mut core, T0 + 2, 1, first), ShareOutcome::Accepted { .. }));
    core.handle_node_message(T0 + 3, 1, NodeMessage::RangeDone { assignment: mine.id, hashes: mine.count });
    let second = find_share(&mine, (first.nonce - mine.start) as u64 + 1).unwrap();
    let third = find_share(&mine, (second.nonce - mine.start) as u64 + 1).unwrap();
    let grace = core.config().late_share_grace_ms;
    assert!(matches!(submit(&mut core, T0 + 3 + grace, 1, second), ShareOutcome::Accepted { .. }));
    // After the grace period its own late work (re-sent after a long outage) is stale, not a
    // fault; work outside its range is still refused as not held.
    let stale = ShareOutcome::Rejected(RejectReason::StaleJob);
    assert_eq!(submit(&mut core, T0 + 4 + grace, 1, third), stale);
    assert!(!RejectReason::StaleJob.is_node_fault());
    assert_eq!(submit(&mut core, T0 + 4 + grace, 1, beyond), not_held);
    // The honest node is still the real one: the stolen share is credited to its finder.
    assert!(matches!(submit(&mut core, T0 + 5, 2, stolen), ShareOutcome::Accepted { .. }));
}

#[test]
fn a_block_makes_local_templates_stale() {
    // Blocks as easy as shares: the first share extends the chain.
    let mut core = Core::new(CoreConfig {
        min_share_work: 4096,
        shares_per_second: 1e9,
        chain_bits: Target::from_expected_hashes(4096).to_compact(),
        ..CoreConfig::default()
    });
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let first = farm.held[&1][0];
    let second_share = find_share(&first, 0).and_then(|s| find_share(&first, (s.nonce - first.start) as u64 + 1));
    let s = farm.mine_one(&mut core, T0 + 1, 1).unwrap();
    let chain = &core.chains["local"].local;
    assert!(chain.height == 1 && chain.tip == first.header.with_nonce(s.nonce).block_hash());
    let fresh = farm.held[&1][0];
    assert_ne!(fresh.job, first.job);
    assert_eq!(fresh.header.prev_blockhash, core.chains["local"].local.tip);
    if let Some(late) = second_share {
        core.handle_node_message(T0 + 2, 1, NodeMessage::Share(Share { id: 99, ..late }));
        farm.absorb(&mut core);
        assert_eq!(farm.results.last().unwrap().2, ShareOutcome::Rejected(RejectReason::StaleJob));
    }
}

#[test]
fn standards_renew_each_period() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 4096, Some(60_000), None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    farm.mine_one(&mut core, T0 + 1, 1).unwrap();
    assert!(core.accounts()[0].up_to_standard());
    assert!(farm.held[&1].is_empty(), "parked");
    core.handle_node_message(T0 + 59_000, 1, NodeMessage::Heartbeat { hashrate: 10_000.0, devices: Vec::new() });
    core.handle_tick(T0 + 60_000);
    farm.absorb(&mut core);
    assert_eq!(delivered(&core, "a"), 0);
    assert!(!farm.held[&1].is_empty(), "working again");
}

#[test]
fn standby_nodes_get_no_ranges() {
    let mut core = core();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    let assigned =
        core.drain_commands().iter().any(|c| matches!(c, Command::Send { msg: CoordinatorMessage::Assign(_), .. }));
    assert!(!assigned);
}

#[test]
fn submitted_jobs_report_their_hits_and_coverage() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    let header = Header::from_hex("0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c").unwrap();
    let job = core.submit_job(T0, "a", header, Target::from_expected_hashes(1 << 20)).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let a = farm.held[&1][0];
    assert_eq!(a.job, job);
    assert!(a.share_target >= Target::from_expected_hashes(1 << 20));
    // Submit every share of the first range, then finish it.
    let mut skip = 0;
    while let Some(s) = find_share(&a, skip) {
        skip = (s.nonce - a.start) as u64 + 1;
        core.handle_node_message(T0 + 1, 1, NodeMessage::Share(Share { id: skip, ..s }));
    }
    farm.absorb(&mut core);
    farm.finish_range(&mut core, T0 + 2, 1);
    let status = core.job_status(job).unwrap();
    assert_eq!(status.searched, a.count);
    let expected: Vec<u32> = (a.start..a.start + a.count as u32)
        .filter(|&n| Target::from_expected_hashes(1 << 20).is_met_by(&header.with_nonce(n).block_hash()))
        .collect();
    assert_eq!(status.hits.iter().map(|h| h.nonce).collect::<Vec<_>>(), expected);
}

#[test]
fn bad_admin_requests_are_refused() {
    let mut core = core();
    core.add_account(T0, "a", 10, None, None, None).unwrap();
    assert_eq!(core.add_account(T0, "a", 10, None, None, None), Err(AdminError::AccountExists("a".into())));
    assert!(core.add_account(T0, "b c", 10, None, None, None).is_err());
    assert!(core.add_account(T0, "b", 0, None, None, None).is_err());
    assert!(core.submit_job(T0, "zz", Header::from_bytes(&[0; 80]), Target::MAX).is_err());
    assert!(core.job_status(12345).is_err());
}

#[derive(Debug, Clone)]
enum Event {
    Join(u8, bool),
    Leave(u8),
    Mine(u8),
    Finish(u8),
    Tick(u16),
    Replay(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => (0u8..4, any::<bool>()).prop_map(|(n, s)| Event::Join(n, s)),
        1 => (0u8..4).prop_map(Event::Leave),
        4 => (0u8..4).prop_map(Event::Mine),
        2 => (0u8..4).prop_map(Event::Finish),
        1 => (0u16..5000).prop_map(Event::Tick),
        1 => (0u8..4).prop_map(Event::Replay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever happens: credit never decreases within a period, equals the sum of verified
    /// shares' work, no share is credited twice, and live ranges never overlap.
    #[test]
    fn accounting_invariants(events in proptest::collection::vec(event(), 1..60), proportional in any::<bool>()) {
        let mut core = core();
        if proportional { core.set_policy(T0, Policy::Proportional); }
        let mut farm = Farm::default();
        core.add_account(T0, "a", 20 * 4096, None, None, None).unwrap();
        core.add_account(T0, "b", 20 * 4096, None, None, None).unwrap();
        let mut now = T0;
        let mut last: Vec<u128> = vec![0, 0];
        let mut accepted: Vec<Share> = Vec::new();
        for e in events {
            now += 10;
            match e {
                Event::Join(n, standby) if !core.nodes.contains_key(&(n as u64)) => core.handle_node_joined(now, n as u64, &hello(&format!("n{n}"), 10_000.0, standby), PROTOCOL_VERSION),
                Event::Leave(n) => { core.handle_node_left(now, n as u64); farm.held.remove(&(n as u64)); }
                Event::Mine(n) => { if let Some(s) = farm.mine_one(&mut core, now, n as u64) { accepted.push(s); } }
                Event::Finish(n) => farm.finish_range(&mut core, now, n as u64),
                Event::Tick(dt) => { now += dt as u64; core.handle_tick(now); }
                Event::Replay(n) => if let Some(s) = accepted.get(n as usize).copied() {
                    core.handle_node_message(now, 0, NodeMessage::Share(s));
                }
                _ => {}
            }
            farm.absorb(&mut core);
            let d: Vec<u128> = core.accounts().iter().map(|a| a.delivered.0).collect();
            prop_assert!(d.iter().zip(&last).all(|(x, y)| x >= y));
            last = d;
            // Live ranges of a template never overlap.
            let counts: BTreeMap<AssignmentId, u64> = farm.held.values().flatten().map(|a| (a.id, a.count)).collect();
            let mut live: Vec<(u64, u32, u64, u64)> = core.assignments.iter().filter(|(_, a)| a.live).map(|(id, a)| (a.job, a.version, a.start as u64, counts.get(id).copied().unwrap_or(1))).collect();
            live.sort();
            for w in live.windows(2) {
                if (w[0].0, w[0].1) == (w[1].0, w[1].1) {
                    prop_assert!(w[0].2 + w[0].3 <= w[1].2);
                }
            }
        }
        let credited: u128 = farm.credits.iter().map(|c| if let StoreOp::Credit { work, .. } = c { work.0 } else { 0 }).sum();
        prop_assert_eq!(credited, last.iter().sum::<u128>());
        let mut keys: Vec<(u64, u32, u32, u32)> = farm.credits.iter().filter_map(|c| match c { StoreOp::Credit { job, header, .. } => Some((*job, header.version, header.time, header.nonce)), _ => None }).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), n, "a share was credited twice");
    }
}
