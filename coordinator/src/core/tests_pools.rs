//! Scenario tests of accounts at pools, in virtual time: a scripted pool on the other end of
//! the core's pool commands, real hashing of the assigned ranges, and the rules of issue 10:
//! no node idles while a pool is down, pool jobs become ranges, shares meeting the pool's
//! target are submitted once with their outcome recorded, `clean_jobs` revokes in the same
//! batch, and no two ranges ever cover the same header and nonce.

use std::collections::HashSet;

use hashgrid_common::header::Hash256;
use hashgrid_common::message::{PROTOCOL_VERSION, ShareOutcome};
use hashgrid_common::stratum::{ConfigureResult, Id, Message, Method, Notify, Response, RpcError, SubscribeResult};
use serde_json::json;

use super::tests::{Farm, T0, core, hello};
use super::*;

pub(super) const POOL: &str = "stratum+tcp://pool.example:3333";
const BACKUP: &str = "stratum+tcp://backup.example:3333";

pub(super) fn settings(urls: &[&str]) -> PoolSettings {
    PoolSettings {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        user: "alice.rig".into(),
        password: "secret".into(),
        extranonce_subscribe: false,
        backup_extranonce_subscribe: false,
    }
}

/// The other end of the core's pool connections.
#[derive(Default)]
pub(super) struct Pool {
    /// Commands of `farm.pool` already read.
    read: usize,
    open: Option<u64>,
    /// Requests read so far: (conn, id, method).
    requests: Vec<(u64, u64, Method)>,
    closed: Vec<u64>,
}

impl Pool {
    /// Reads the pool commands since the last call.
    pub(super) fn read(&mut self, farm: &Farm) {
        for c in &farm.pool[self.read..] {
            match c {
                Command::PoolConnect { conn, .. } => self.open = Some(*conn),
                Command::PoolSend { conn, line } => {
                    if let Message::Call { id, method } = Message::from_line(line.as_bytes()).unwrap() {
                        self.requests.push((*conn, id.as_u64().unwrap_or(0), method));
                    }
                }
                Command::PoolClose { conn, .. } => self.closed.push(*conn),
                _ => {}
            }
        }
        self.read = farm.pool.len();
    }

    /// Reports the connection the core asked for up; its id.
    fn connect(&mut self, core: &mut Core, farm: &mut Farm, now: u64) -> u64 {
        farm.absorb(core);
        self.read(farm);
        let conn = self.open.expect("the core connects");
        core.handle_pool_connected(now, conn);
        farm.absorb(core);
        self.read(farm);
        conn
    }

    fn answer_err(&mut self, core: &mut Core, farm: &mut Farm, now: u64, id: u64, code: i64, message: &str) {
        let line = Message::Response(Response::err(Id::from(id), RpcError::new(code, message))).to_line();
        core.handle_pool_line(now, self.open.unwrap(), line.as_bytes());
        farm.absorb(core);
        self.read(farm);
    }

    pub(super) fn last_request(&self) -> (u64, u64, Method) {
        self.requests.last().cloned().expect("a request")
    }

    pub(super) fn answer(&mut self, core: &mut Core, farm: &mut Farm, now: u64, id: u64, result: serde_json::Value) {
        let conn = self.open.unwrap();
        core.handle_pool_line(now, conn, Message::Response(Response::ok(Id::from(id), result)).to_line().as_bytes());
        farm.absorb(core);
        self.read(farm);
    }

    pub(super) fn call(&mut self, core: &mut Core, farm: &mut Farm, now: u64, method: Method) {
        let conn = self.open.unwrap();
        core.handle_pool_line(now, conn, Message::Call { id: Id::Null, method }.to_line().as_bytes());
        farm.absorb(core);
        self.read(farm);
    }

    /// Connects and walks the handshake with extranonce2 of `size` bytes and `difficulty`,
    /// then sends job `job`.
    pub(super) fn handshake(
        &mut self,
        core: &mut Core,
        farm: &mut Farm,
        now: u64,
        size: usize,
        difficulty: f64,
        job: &str,
    ) {
        self.connect(core, farm, now);
        let (_, id, Method::Configure(_)) = self.last_request() else { panic!() };
        self.answer(core, farm, now, id, ConfigureResult { version_rolling_mask: Some(0x1fff_e000) }.to_result());
        let (_, id, Method::Subscribe { .. }) = self.last_request() else { panic!() };
        let sub = SubscribeResult {
            subscriptions: vec![("mining.notify".into(), "s1".into())],
            extranonce1: vec![0xc8, 0x58],
            extranonce2_size: size,
        };
        self.answer(core, farm, now, id, sub.to_result());
        let (_, id, Method::Authorize { user, password }) = self.last_request() else { panic!() };
        assert_eq!((user.as_str(), password.as_ref().map(|p| p.0.as_str())), ("alice.rig", Some("secret")));
        self.answer(core, farm, now, id, json!(true));
        self.call(core, farm, now, Method::SetDifficulty(difficulty));
        self.call(core, farm, now, Method::Notify(notify(job, 1, true)));
    }
}

pub(super) fn notify(id: &str, prev: u8, clean: bool) -> Notify {
    Notify {
        job_id: id.into(),
        prev_blockhash: Hash256([prev; 32]),
        coinb1: vec![1, 2, 3],
        coinb2: vec![4, 5],
        merkle_branch: vec![Hash256([9; 32])],
        version: 0x2000_0000,
        nbits: CompactTarget(0x1d00ffff),
        ntime: (T0 / 1000) as u32,
        clean_jobs: clean,
    }
}

fn account_of_ranges(core: &Core, farm: &Farm, node: NodeId) -> Vec<String> {
    farm.held.get(&node).into_iter().flatten().map(|a| core.jobs[&a.job].account.clone()).collect()
}

/// alice (first under sequential) at a pool, bob on the local chain, nodes 1 and 9. alice's
/// pool is a chain of its own: once it has a job, the balancer moves node 1 (the first of
/// equals) to it and node 9 stays with bob.
fn farm_with_pool() -> (Core, Farm, Pool) {
    farm_with_nodes(&[(1, 100_000.0), (9, 100_000.0)])
}

fn farm_with_nodes(nodes: &[(NodeId, f64)]) -> (Core, Farm, Pool) {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "alice", 1 << 60, None, Some(1), None).unwrap();
    core.add_account(T0, "bob", 1 << 60, None, Some(2), None).unwrap();
    core.set_pool(T0, "alice", Some(settings(&[POOL, BACKUP])), None).unwrap();
    for &(id, rate) in nodes {
        core.handle_node_joined(T0, id, &hello(&format!("n{id}"), rate, false), PROTOCOL_VERSION);
    }
    farm.absorb(&mut core);
    (core, farm, Pool::default())
}

#[test]
fn while_the_pool_has_no_job_the_node_serves_the_next_account() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    assert_eq!(account_of_ranges(&core, &farm, 1), vec!["bob", "bob"], "no node idles while alice's pool is down");
    pool.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "j1");
    // bob's ranges finish; the next ones serve alice, the first account.
    farm.finish_range(&mut core, T0 + 20, 1);
    farm.finish_range(&mut core, T0 + 20, 1);
    assert_eq!(account_of_ranges(&core, &farm, 1), vec!["alice", "alice"]);
    let a = farm.held[&1][0];
    // The header is the pool job's with extranonce2 = slot 0, counter 0.
    let job =
        hashgrid_common::stratum::Job::new(notify("j1", 1, true), vec![0xc8, 0x58], 4, 0.000001, 0x1fff_e000).unwrap();
    assert_eq!(a.header.merkle_root, job.template(&[0, 0, 0, 0]).unwrap().merkle_root);
    assert!(a.share_target >= job.share_target, "every share the pool takes reaches the coordinator");
}

#[test]
fn shares_meeting_the_pool_target_are_submitted_and_their_outcome_recorded() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    pool.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "j1");
    farm.finish_range(&mut core, T0 + 20, 1);
    farm.finish_range(&mut core, T0 + 20, 1);
    let share = farm.mine_one(&mut core, T0 + 30, 1).expect("a share");
    pool.read(&farm);
    let (_, id, Method::Submit(submit)) = pool.last_request() else { panic!("{:?}", pool.requests) };
    assert_eq!(submit.worker, "alice.rig");
    assert_eq!(submit.job_id, "j1");
    assert_eq!(submit.extranonce2, vec![0, 0, 0, 0]);
    assert_eq!((submit.nonce, submit.ntime), (share.nonce, share.time));
    assert_eq!(submit.version_bits, Some(share.version & 0x1fff_e000));
    // Recorded as submitted, after its credit.
    let credit = farm.credits.len();
    assert!(credit > 0);
    assert!(matches!(farm.pool.last(), Some(Command::PoolSend { .. })));
    assert!(
        farm.pool
            .iter()
            .any(|c| matches!(c, Command::Persist(StoreOp::UpstreamSubmitted { pool_job, .. }) if pool_job == "j1"))
    );
    pool.answer(&mut core, &mut farm, T0 + 40, id, json!(true));
    assert!(
        farm.pool
            .iter()
            .any(|c| matches!(c, Command::Persist(StoreOp::UpstreamOutcome { outcome, .. }) if outcome == "accepted"))
    );
    let status = core.pool_list(T0 + 40);
    let target = hashgrid_common::stratum::share_target(0.000001).unwrap();
    assert_eq!(status[0].accepted_upstream, target.work());
    assert_eq!(status[0].accepted_shares, 1);
    assert_eq!(status[0].state, "ready");
    assert_eq!(status[0].extranonce1, "c858");

    // A rejected submit is counted by the pool's reason.
    let _ = farm.mine_one(&mut core, T0 + 50, 1).expect("a share");
    pool.read(&farm);
    let (_, id, Method::Submit(_)) = pool.last_request() else { panic!() };
    pool.answer_err(&mut core, &mut farm, T0 + 60, id, 23, "Low difficulty share");
    assert_eq!(core.pool_list(T0 + 60)[0].rejected, vec![("Low difficulty share".to_string(), 1)]);
}

#[test]
fn clean_jobs_revoke_every_older_range_in_the_same_batch() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    pool.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "j1");
    farm.finish_range(&mut core, T0 + 20, 1);
    farm.finish_range(&mut core, T0 + 20, 1);
    let old: Vec<AssignmentId> = farm.held[&1].iter().map(|a| a.id).collect();
    // A non-clean job keeps the older ranges.
    pool.call(&mut core, &mut farm, T0 + 30, Method::Notify(notify("j2", 1, false)));
    assert!(old.iter().all(|id| farm.held[&1].iter().any(|a| a.id == *id)));
    // A clean one revokes them, and the same batch issues ranges of the new job.
    core.handle_pool_line(
        T0 + 40,
        pool.open.unwrap(),
        Message::Call { id: Id::Null, method: Method::Notify(notify("j3", 2, true)) }.to_line().as_bytes(),
    );
    let commands = core.drain_commands();
    let revoked: HashSet<AssignmentId> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { msg: CoordinatorMessage::Revoke { assignment }, .. } => Some(*assignment),
            _ => None,
        })
        .collect();
    assert!(old.iter().all(|id| revoked.contains(id)), "{old:?} {revoked:?}");
    assert!(commands.iter().any(|c| matches!(c, Command::Send { msg: CoordinatorMessage::Assign(_), .. })));
}

#[test]
fn a_dropped_pool_fails_over_and_its_ranges_go_to_the_next_account() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    pool.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "j1");
    farm.finish_range(&mut core, T0 + 20, 1);
    farm.finish_range(&mut core, T0 + 20, 1);
    let primary = pool.open.unwrap();
    core.handle_pool_closed(T0 + 30, primary, "the pool closed the connection");
    farm.absorb(&mut core);
    assert_eq!(account_of_ranges(&core, &farm, 1), vec!["bob", "bob"], "revoked at once, capacity to bob");
    let switch = farm.ledger.iter().find(|(kind, _)| kind == ledger::kind::POOL_SWITCH).expect("ledgered");
    assert_eq!(switch.1["from"], POOL);
    assert_eq!(switch.1["to"], BACKUP);
    core.handle_tick(T0 + 40);
    farm.absorb(&mut core);
    pool.read(&farm);
    assert!(
        matches!(farm.pool.iter().rev().find(|c| matches!(c, Command::PoolConnect { .. })), Some(Command::PoolConnect { url, .. }) if url == BACKUP)
    );
    assert_ne!(pool.open, Some(primary));
}

#[test]
fn a_refused_password_is_ledgered_and_shown_and_the_account_gets_no_capacity() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    pool.connect(&mut core, &mut farm, T0);
    let (_, id, _) = pool.last_request();
    pool.answer(&mut core, &mut farm, T0, id, ConfigureResult { version_rolling_mask: None }.to_result());
    let (_, id, _) = pool.last_request();
    let sub = SubscribeResult { subscriptions: vec![], extranonce1: vec![1], extranonce2_size: 8 };
    pool.answer(&mut core, &mut farm, T0, id, sub.to_result());
    let (_, id, _) = pool.last_request();
    pool.answer_err(&mut core, &mut farm, T0, id, 24, "Unauthorized worker");
    assert!(farm.ledger.iter().any(|(kind, p)| kind == ledger::kind::POOL_REFUSED && p["account"] == "alice"));
    let status = core.status(T0);
    assert_eq!(status.pools[0].state, "unauthorized");
    assert!(status.pools[0].last_error.as_deref().unwrap().contains("Unauthorized worker"));
    assert_eq!(account_of_ranges(&core, &farm, 1), vec!["bob", "bob"]);
}

#[test]
fn a_used_up_extranonce_space_gives_the_capacity_to_the_next_account() {
    // One byte of extranonce2: 256 templates of 2^32 nonces (without version rolling, which
    // this pool refuses below), fewer than a 5 GH/s node's first ranges use up. Node 2 goes to
    // alice's pool chain, node 3 stays with bob.
    let (mut core, mut farm, mut pool) = farm_with_nodes(&[(2, 1e12), (3, 1e12)]);
    pool.connect(&mut core, &mut farm, T0);
    let (_, id, _) = pool.last_request();
    pool.answer_err(&mut core, &mut farm, T0, id, 20, "no");
    let (_, id, _) = pool.last_request();
    let sub = SubscribeResult { subscriptions: vec![], extranonce1: vec![1], extranonce2_size: 1 };
    pool.answer(&mut core, &mut farm, T0, id, sub.to_result());
    let (_, id, _) = pool.last_request();
    pool.answer(&mut core, &mut farm, T0, id, json!(true));
    pool.call(&mut core, &mut farm, T0, Method::Notify(notify("j1", 1, true)));
    for _ in 0..300 {
        farm.finish_range(&mut core, T0 + 1, 2);
    }
    assert!(!account_of_ranges(&core, &farm, 2).is_empty(), "the node is not left idle");
    assert!(account_of_ranges(&core, &farm, 2).iter().all(|a| a == "bob"));
    // A new job alone does not: the counter runs on per subscription, so that no header
    // repeats even when two jobs share their coinbase. A new extranonce1 starts a new space.
    pool.call(&mut core, &mut farm, T0 + 2, Method::Notify(notify("j2", 2, true)));
    farm.finish_range(&mut core, T0 + 3, 2);
    assert!(account_of_ranges(&core, &farm, 2).iter().all(|a| a == "bob"));
    pool.call(&mut core, &mut farm, T0 + 4, Method::SetExtranonce { extranonce1: vec![2], extranonce2_size: 1 });
    pool.call(&mut core, &mut farm, T0 + 4, Method::Notify(notify("j3", 3, true)));
    farm.finish_range(&mut core, T0 + 5, 2);
    farm.finish_range(&mut core, T0 + 5, 2);
    assert!(account_of_ranges(&core, &farm, 2).iter().any(|a| a == "alice"));
}

#[test]
fn the_accepted_basis_needs_a_pool() {
    let (mut core, _, _) = farm_with_pool();
    assert!(matches!(core.set_pool(T0, "bob", None, Some(StandardBasis::Accepted)), Err(AdminError::InvalidPool(_))));
    core.set_pool(T0, "alice", Some(settings(&[POOL])), Some(StandardBasis::Accepted)).unwrap();
}

#[test]
fn the_password_is_in_no_ledger_entry() {
    let (_, farm, _) = farm_with_pool();
    let set = farm.ledger.iter().find(|(kind, _)| kind == ledger::kind::POOL_SET).expect("ledgered");
    assert_eq!(set.1["urls"], json!([POOL, BACKUP]));
    assert!(!set.1.to_string().contains("secret"));
}

proptest::proptest! {
    /// Whatever the job stream (clean or not, new blocks, difficulty changes) and however the
    /// ranges end, no two ranges ever cover the same header and nonce.
    #[test]
    fn no_two_ranges_cover_the_same_header_and_nonce(
        steps in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..30),
        size in proptest::sample::select(vec![2usize, 4, 8]),
    ) {
        let (mut core, mut farm, mut pool) = farm_with_pool();
        core.handle_node_joined(T0, 2, &hello("n2", 5_000_000_000.0, false), PROTOCOL_VERSION);
        pool.handshake(&mut core, &mut farm, T0 + 10, size, 0.000001, "j0");
        let mut seen: Vec<(Header, u64, u64)> = Vec::new();
        let record = |farm: &Farm, seen: &mut Vec<(Header, u64, u64)>| {
            for a in farm.held.values().flatten() {
                let h = Header { nonce: 0, ..a.header };
                let r = (h, a.start as u64, a.start as u64 + a.count);
                if !seen.contains(&r) {
                    seen.push(r);
                }
            }
        };
        for (i, (what, clean)) in steps.into_iter().enumerate() {
            let now = T0 + 100 + i as u64;
            match what {
                0 => pool.call(&mut core, &mut farm, now, Method::Notify(notify(&format!("j{}", i + 1), (i % 3) as u8, clean))),
                1 => farm.finish_range(&mut core, now, 1),
                2 => farm.finish_range(&mut core, now, 2),
                _ => pool.call(&mut core, &mut farm, now, Method::SetDifficulty(0.000002)),
            }
            record(&farm, &mut seen);
        }
        for (i, a) in seen.iter().enumerate() {
            for b in &seen[i + 1..] {
                proptest::prop_assert!(a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1, "{a:?} overlaps {b:?}");
            }
        }
    }
}

/// The last job of the recorded cpuminer session (common/tests/data/stratum/): Bitcoin block
/// #1, whose coinbase extranonce1 `c858eeac` and extranonce2 `0000` (slot 0's first counter
/// when extranonce2 has 2 bytes) rebuild.
const BLOCK_1_NOTIFY: &str = r#"{"id": null, "method": "mining.notify", "params": ["b1", "0a8ce26f72b3f1b646a2a6c14ff763ae65831e939c085ae10019d66800000000", "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0104ffffffff0100f2052a0100000043410496b538e853519c726a2c91e61ec11600ae1390813a627c66fb8be7947be63c52da7589379515d4e0a604f8141781e62294721166bf621e73a82cbf2342", "0000", [], "00000001", "1d00ffff", "4966bc61", true]}"#;
/// What cpuminer 2.5.1 submitted for it: the real block's nonce.
const BLOCK_1_SUBMIT: &str =
    r#"{"method": "mining.submit", "params": ["testuser", "b1", "0000", "4966bc61", "9962e301"], "id":4}"#;

#[test]
fn bitcoin_block_1_from_a_pool_job_is_credited_and_submitted_as_cpuminer_did() {
    let mut core = core();
    let mut farm = Farm::default();
    let mut pool = Pool::default();
    core.add_account(T0, "alice", 1 << 60, None, Some(1), None).unwrap();
    let settings = PoolSettings { user: "testuser".into(), password: "x".into(), ..settings(&[POOL]) };
    core.set_pool(T0, "alice", Some(settings), None).unwrap();
    // A node fast enough to be given the whole nonce range of a template at once.
    core.handle_node_joined(T0, 1, &hello("n1", 5e9, false), PROTOCOL_VERSION);
    let conn = pool.connect(&mut core, &mut farm, T0);
    // cpuminer's pool offered no version rolling.
    let (_, id, _) = pool.last_request();
    pool.answer_err(&mut core, &mut farm, T0, id, 20, "unknown method");
    let (_, id, _) = pool.last_request();
    let recorded_subscribe =
        json!([[["mining.set_difficulty", "deadbeef"], ["mining.notify", "deadbeef"]], "c858eeac", 2]);
    pool.answer(&mut core, &mut farm, T0, id, recorded_subscribe);
    let (_, id, _) = pool.last_request();
    pool.answer(&mut core, &mut farm, T0, id, json!(true));
    pool.call(&mut core, &mut farm, T0, Method::SetDifficulty(1.0));
    core.handle_pool_line(T0, conn, BLOCK_1_NOTIFY.as_bytes());
    farm.absorb(&mut core);
    pool.read(&farm);

    let a = farm.held[&1][0];
    assert_eq!((a.start, a.count), (0, 1 << 32), "the whole range of the template");
    let nonce = 0x9962_e301;
    let block_1: BlockHash = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048".parse().unwrap();
    assert_eq!(a.header.with_nonce(nonce).block_hash(), block_1, "the template is block #1's header");
    let share = Share { id: 1, assignment: a.id, job: a.job, version: a.header.version, time: a.header.time, nonce };
    core.handle_node_message(T0 + 1, 1, NodeMessage::Share(share));
    farm.absorb(&mut core);
    pool.read(&farm);
    assert!(matches!(farm.results.last(), Some((1, 1, ShareOutcome::Accepted { .. }))), "{:?}", farm.results);
    let (_, _, Method::Submit(sent)) = pool.last_request() else { panic!("{:?}", pool.requests) };
    let Ok(Message::Call { method: Method::Submit(recorded), .. }) = Message::from_line(BLOCK_1_SUBMIT.as_bytes())
    else {
        panic!()
    };
    assert_eq!(sent, recorded, "the submit cpuminer sent for block #1");
}

#[test]
fn a_restored_core_connects_to_the_stored_pools_at_its_first_tick() {
    let mut alice = Account::new("alice".into(), Work(1 << 60), None, 1, T0);
    alice.basis = StandardBasis::Accepted;
    alice.accepted_upstream = Work(7);
    // 30 answered, 10 rejected: over the 20 % of a flag, raised (and ledgered) before.
    let counts = upstream::UpstreamCounts {
        accepted_shares: 20,
        accepted_work: Work(7),
        rejected: [("Low difficulty share".to_string(), 10)].into_iter().collect(),
        unknown: 2,
    };
    let snapshot = Snapshot {
        accounts: vec![alice],
        pools: vec![("alice".into(), settings(&[POOL, BACKUP]))],
        pool_counts: [("alice".to_string(), counts)].into_iter().collect(),
        ..Snapshot::default()
    };
    let mut core = Core::restore(CoreConfig::default(), snapshot);
    assert!(core.drain_commands().is_empty());
    core.handle_tick(T0);
    let connects: Vec<Command> =
        core.drain_commands().into_iter().filter(|c| matches!(c, Command::PoolConnect { .. })).collect();
    assert!(matches!(&connects[..], [Command::PoolConnect { url, .. }] if url == POOL), "{connects:?}");
    let list = core.pool_list(T0);
    assert_eq!(
        (list[0].basis, list[0].accepted_upstream, list[0].state.as_str()),
        (StandardBasis::Accepted, 7, "connecting")
    );
    assert_eq!((list[0].accepted_shares, list[0].unknown, list[0].flagged), (20, 2, true));
    assert_eq!(list[0].rejected, vec![("Low difficulty share".to_string(), 10)]);
    // Changing the pool keeps the account's counts.
    core.set_pool(T0 + 1, "alice", Some(settings(&[BACKUP])), None).unwrap();
    assert_eq!(core.pool_list(T0 + 1)[0].accepted_shares, 20);
}

#[test]
fn a_pool_rejecting_too_many_submits_flags_the_account_in_the_ledger_and_the_status() {
    let (mut core, mut farm, mut pool) = farm_with_pool();
    pool.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "j1");
    farm.finish_range(&mut core, T0 + 20, 1);
    farm.finish_range(&mut core, T0 + 20, 1);
    let flagged = |farm: &Farm| farm.ledger.iter().filter(|(kind, _)| kind == ledger::kind::POOL_FLAGGED).count();
    // 20 answers (min_answers), 6 of them rejects: 30 % > max_reject_ratio (20 %).
    let (mut answered, mut last_id, mut now) = (0, 0, T0 + 30);
    while answered < 20 {
        now += 1;
        farm.mine_one(&mut core, now, 1).expect("a share");
        pool.read(&farm);
        let (_, id, Method::Submit(_)) = pool.last_request() else { panic!("{:?}", pool.requests) };
        if id == last_id {
            continue; // a share below the pool's target: not submitted
        }
        last_id = id;
        if answered % 3 == 0 && answered < 18 {
            pool.answer_err(&mut core, &mut farm, now, id, 23, "Low difficulty share");
        } else {
            pool.answer(&mut core, &mut farm, now, id, json!(true));
        }
        answered += 1;
        assert_eq!(flagged(&farm), usize::from(answered == 20), "flagged at the 20th answer, not before: {answered}");
    }
    let (_, record) = farm.ledger.iter().find(|(kind, _)| kind == ledger::kind::POOL_FLAGGED).unwrap();
    assert_eq!(
        (record["account"].as_str(), record["rejected"].as_u64(), record["answered"].as_u64()),
        (Some("alice"), Some(6), Some(20))
    );
    assert!(core.status(now).pools[0].flagged);
    assert!(core.pool_list(now)[0].flagged);
}

/// Nodes on each chain of `chain_list`, and its accounts: (name, nodes, accounts, load).
fn chain_map(core: &Core) -> Vec<(String, usize, Vec<String>, f64)> {
    core.chain_list(T0 + 100)
        .into_iter()
        .filter(|c| c.params.name.starts_with("pool:"))
        .map(|c| (c.params.name, c.nodes.len(), c.accounts, c.load))
        .collect()
}

#[test]
fn pools_on_the_same_previous_block_are_one_chain_counted_once_and_split_when_they_part() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "alice", 1 << 60, None, Some(1), None).unwrap();
    core.add_account(T0, "bob", 1 << 60, None, Some(2), None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 100_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 100_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let (mut a, mut b) = (Pool::default(), Pool::default());
    core.set_pool(T0, "alice", Some(settings(&[POOL])), None).unwrap();
    a.handshake(&mut core, &mut farm, T0 + 10, 4, 0.000001, "a1");
    core.set_pool(T0 + 20, "bob", Some(settings(&[BACKUP])), None).unwrap();
    b.handshake(&mut core, &mut farm, T0 + 30, 8, 0.000001, "b1");
    // Both pools build on block 1: one chain, both accounts on it, both nodes serving it, and
    // its load is one job stream's, not two.
    let map = chain_map(&core);
    assert_eq!(map.len(), 1, "{map:?}");
    assert_eq!((map[0].0.as_str(), map[0].1, map[0].2.clone()), ("pool:alice", 2, vec!["alice".into(), "bob".into()]));
    let one = core.upstreams["alice"].updates.load(T0 + 100);
    assert_eq!(map[0].3, one);
    assert!(one > 1.0, "the job stream is measured");
    // bob's pool moves to block 2 first: the chain goes with it (alice may follow).
    b.call(&mut core, &mut farm, T0 + 40, Method::Notify(notify("b2", 2, true)));
    assert_eq!(chain_map(&core).len(), 1);
    // alice's pool moves to block 3: another chain; the nodes split one each.
    a.call(&mut core, &mut farm, T0 + 50, Method::Notify(notify("a2", 3, true)));
    let map = chain_map(&core);
    assert_eq!(map.len(), 2, "{map:?}");
    assert!(map.iter().all(|c| c.1 == 1 && c.2.len() == 1), "{map:?}");
    // Each node's new ranges serve the account of its chain.
    for node in [1, 2] {
        farm.finish_range(&mut core, T0 + 60, node);
        farm.finish_range(&mut core, T0 + 60, node);
    }
    let accounts: HashSet<String> =
        [1, 2].iter().flat_map(|&n| account_of_ranges(&core, &farm, n)).collect::<HashSet<_>>();
    assert_eq!(accounts.len(), 2, "{accounts:?}");
    // bob's pool follows alice's to block 3: one chain again.
    b.call(&mut core, &mut farm, T0 + 70, Method::Notify(notify("b3", 3, true)));
    assert_eq!(chain_map(&core).iter().filter(|c| !c.2.is_empty()).count(), 1, "{:?}", chain_map(&core));
}
