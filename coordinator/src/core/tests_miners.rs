//! Scenario tests of Stratum miners as nodes, in virtual time: a scripted pool (from
//! `tests_pools`) on the other end, miners' shares built from the jobs the core sent and
//! hashed for real. Each miner gets its own extranonce slot, its shares are credited before
//! they are acknowledged and forwarded with the slot prefix, it switches with `clean_jobs`
//! when its account is up to standard, its slots come back only when its connection ends,
//! and an extranonce2 too short to carve is refused and ledgered.

use hashgrid_common::message::STRATUM_V1;
use hashgrid_common::stratum::{Accepted, Job as PoolJob, MinerShare, Submit, share_target};

use super::tests::{Farm, T0, core};
use super::tests_pools::{POOL, Pool, settings};
use super::*;

const DIFFICULTY: f64 = 0.000001;

/// The orders sent to each miner, in order, and every command drained, in order.
fn drain(core: &mut Core, farm: &mut Farm, log: &mut Vec<Command>) -> Vec<(NodeId, MinerOrder)> {
    let commands = core.drain_commands();
    log.extend(commands.iter().cloned());
    let orders = commands
        .iter()
        .filter_map(|c| match c {
            Command::Miner { node, order } => Some((*node, order.clone())),
            _ => None,
        })
        .collect();
    for c in commands {
        core.out.push(c);
    }
    farm.absorb(core);
    orders
}

fn job_of(orders: &[(NodeId, MinerOrder)], miner: NodeId) -> ServerJob {
    orders
        .iter()
        .rev()
        .find_map(|(n, o)| match o {
            MinerOrder::Job(job) if *n == miner => Some((**job).clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no job for miner {miner} in {orders:?}"))
}

/// alice at a pool (extranonce2 of `size` bytes) with a job.
fn farm(size: usize, standard: u128) -> (Core, Farm, Pool) {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "alice", standard, None, Some(1), None).unwrap();
    core.set_pool(T0, "alice", Some(settings(&[POOL])), None).unwrap();
    let mut pool = Pool::default();
    pool.handshake(&mut core, &mut farm, T0 + 10, size, DIFFICULTY, "j1");
    (core, farm, pool)
}

/// A share of `job` that meets the pool's target, as the miner's session hands it over.
fn share(job: &ServerJob, extranonce2: &[u8]) -> MinerShare {
    let pool_job =
        PoolJob::new(job.notify.clone(), job.extranonce1.clone(), job.extranonce2_size, DIFFICULTY, job.version_mask)
            .unwrap();
    let target = share_target(DIFFICULTY).unwrap();
    let (nonce, header) = (0u32..)
        .map(|nonce| (nonce, pool_job.header(extranonce2, job.notify.ntime, nonce, job.notify.version).unwrap()))
        .find(|(_, h)| target.is_met_by(&h.block_hash()))
        .unwrap();
    MinerShare {
        tag: job.tag,
        upstream_job_id: job.notify.job_id.clone(),
        submit: Submit {
            worker: "rig".into(),
            job_id: "1".into(),
            extranonce2: extranonce2.to_vec(),
            ntime: job.notify.ntime,
            nonce,
            version_bits: None,
        },
        accepted: Accepted { header, hash: header.block_hash(), share_target: target, meets_block_target: false },
        difficulty: DIFFICULTY,
        meets_pool_target: true,
    }
}

#[test]
fn each_miner_gets_its_own_slot_and_its_shares_are_credited_before_they_are_acknowledged() {
    let (mut core, mut farm, mut pool) = farm(4, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_subscribed(T0 + 20, 11);
    let orders = drain(&mut core, &mut farm, &mut log);
    let (a, b) = (job_of(&orders, 10), job_of(&orders, 11));
    // extranonce1 = the pool's ‖ a one-byte slot prefix (never slot 0); 3 bytes remain.
    assert_eq!(a.extranonce1, vec![0xc8, 0x58, 1]);
    assert_eq!(b.extranonce1, vec![0xc8, 0x58, 2]);
    assert_eq!((a.extranonce2_size, b.extranonce2_size), (3, 3));
    assert_eq!(a.notify.job_id, "j1");
    assert!(a.notify.clean_jobs);
    core.handle_miner_joined(T0 + 30, 10, "rig1", "cpuminer/2.5.1");
    drain(&mut core, &mut farm, &mut log);
    let rig = core.node_list(T0 + 30).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!((rig.protocol, rig.state.as_str(), rig.account.as_deref()), (STRATUM_V1, "active", Some("alice")));
    assert_eq!(rig.protocol_name(), "stratum-v1");
    assert!(farm.ledger.iter().any(|(k, p)| k == "miner_job" && p["node"] == "rig1" && p["slot"] == 1));

    log.clear();
    let s = share(&a, &[0, 0, 7]);
    core.handle_miner_share(T0 + 40, 10, 5, &s);
    drain(&mut core, &mut farm, &mut log);
    let credit = log.iter().position(|c| matches!(c, Command::Persist(StoreOp::Credit { .. }))).expect("credited");
    let ack = log
        .iter()
        .position(|c| {
            matches!(c, Command::Miner { node: 10, order: MinerOrder::ShareRecorded { ticket: 5, result: Ok(()) } })
        })
        .expect("acknowledged");
    assert!(credit < ack, "{log:?}");
    let Command::Persist(StoreOp::Credit { account, node, header, .. }) = &log[credit] else { unreachable!() };
    assert_eq!((account.as_str(), node.as_str(), *header), ("alice", "rig1", s.accepted.header));
    // Forwarded with extranonce2 = slot prefix ‖ the miner's.
    pool.read(&farm);
    let (_, _, hashgrid_common::stratum::Method::Submit(submit)) = pool.last_request() else { panic!() };
    assert_eq!((submit.job_id.as_str(), submit.extranonce2), ("j1", vec![1, 0, 0, 7]));
    assert_eq!((submit.worker.as_str(), submit.nonce), ("alice.rig", s.submit.nonce));
    let rig = core.node_list(T0 + 40).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!(rig.accepted, 1);
    assert!(rig.hashrate > 0.0);
}

#[test]
fn a_miner_switches_with_clean_jobs_when_its_account_is_up_to_standard() {
    let (mut core, mut farm, _) = farm(4, 1);
    core.add_account(T0, "bob", 1 << 60, None, Some(2), None).unwrap();
    core.set_pool(T0 + 11, "bob", Some(settings(&[POOL])), None).unwrap();
    let mut bob_pool = Pool::default();
    bob_pool.handshake(&mut core, &mut farm, T0 + 12, 8, DIFFICULTY, "b1");
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    let orders = drain(&mut core, &mut farm, &mut log);
    let a = job_of(&orders, 10);
    assert_eq!(a.notify.job_id, "j1", "sequential: alice first");
    // The pool's job was not clean; the miner's next job on the same account keeps that.
    core.handle_miner_share(T0 + 30, 10, 1, &share(&a, &[0, 0, 1]));
    let orders = drain(&mut core, &mut farm, &mut log);
    let b = job_of(&orders, 10);
    assert_eq!(b.notify.job_id, "b1", "alice is up to standard: bob's job next");
    assert!(b.notify.clean_jobs, "a new account's job replaces the old ones at once");
    // bob's extranonce2 is 8 bytes: 2 bytes of slot, 6 for the miner.
    assert_eq!((b.extranonce1, b.extranonce2_size), (vec![0xc8, 0x58, 0, 1], 6));
    let switch = farm.ledger.iter().rev().find(|(k, p)| k == "miner_job" && p["node"] == "rig1").unwrap();
    assert_eq!((switch.1["account"].as_str(), switch.1["switched"].as_bool()), (Some("bob"), Some(true)));
}

#[test]
fn a_miners_slots_come_back_only_when_its_connection_ends() {
    let (mut core, mut farm, _) = farm(4, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    drain(&mut core, &mut farm, &mut log);
    // A connection that subscribed and never authorized holds a slot until it ends.
    core.handle_miner_subscribed(T0 + 21, 11);
    core.handle_node_left(T0 + 22, 11);
    core.handle_miner_subscribed(T0 + 23, 12);
    let orders = drain(&mut core, &mut farm, &mut log);
    assert_eq!(job_of(&orders, 12).extranonce1, vec![0xc8, 0x58, 2], "11's slot is free again");
    core.handle_node_left(T0 + 30, 10);
    let failed = core.node_list(T0 + 30).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!(failed.state, "failed");
    core.handle_miner_subscribed(T0 + 31, 13);
    let orders = drain(&mut core, &mut farm, &mut log);
    assert!(farm.ledger.iter().any(|(k, p)| k == "failover" && p["node"] == "rig1"), "{:?}", farm.ledger);
    assert_eq!(job_of(&orders, 13).extranonce1, vec![0xc8, 0x58, 1], "rig1's slot once it is gone");
}

#[test]
fn an_extranonce2_too_short_to_carve_is_refused_and_ledgered() {
    let (mut core, mut farm, _) = farm(3, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    core.handle_miner_subscribed(T0 + 21, 11);
    let orders = drain(&mut core, &mut farm, &mut log);
    assert!(orders.is_empty(), "{orders:?}");
    let refusals: Vec<_> = farm.ledger.iter().filter(|(k, _)| k == "miner_slot_refused").collect();
    assert_eq!(refusals.len(), 1, "ledgered once: {refusals:?}");
    assert_eq!(refusals[0].1["account"], "alice");
    assert!(refusals[0].1["reason"].as_str().unwrap().contains("too short"), "{refusals:?}");
}

#[test]
fn a_miner_that_subscribed_before_any_pool_job_gets_one_when_it_comes() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "alice", 1 << 60, None, Some(1), None).unwrap();
    core.set_pool(T0, "alice", Some(settings(&[POOL])), None).unwrap();
    core.handle_miner_subscribed(T0 + 1, 10);
    farm.absorb(&mut core);
    assert!(farm.miners.is_empty(), "no job yet");
    Pool::default().handshake(&mut core, &mut farm, T0 + 10, 4, DIFFICULTY, "j1");
    let job = job_of(&farm.miners, 10);
    assert_eq!((job.notify.job_id.as_str(), job.extranonce1), ("j1", vec![0xc8, 0x58, 1]));
}
