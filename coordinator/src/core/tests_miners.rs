//! Scenario tests of Stratum miners as nodes, in virtual time: a scripted pool (from
//! `tests_pools`) on the other end, miners' shares built from the jobs the core sent and
//! hashed for real. Each miner gets its own extranonce slot, its shares are credited before
//! they are acknowledged and forwarded with the slot prefix, it switches with `clean_jobs`
//! when its account is up to standard, its slots come back only when its connection ends,
//! and an extranonce2 too short to carve is refused, ledgered and shown in `pool list`, its
//! miners served from another chain's account. Local-chain accounts are
//! served from the chain's own coinbase, carved the same way; connections that never
//! authorize hold no slot; idle and standby miners get the idle job, credited to no account.

use hashgrid_common::message::{PROTOCOL_VERSION, STRATUM_V1};
use hashgrid_common::stratum::{Accepted, Job as PoolJob, MinerShare, Submit, share_target};

use super::tests::{Farm, T0, core, hello};
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
    share_where(job, extranonce2, DIFFICULTY, |_| true)
}

/// A share of `job` at `difficulty`, rebuilt from coinbase to hash, whose hash passes `keep`.
fn share_where(job: &ServerJob, extranonce2: &[u8], difficulty: f64, keep: impl Fn(&BlockHash) -> bool) -> MinerShare {
    let pool_job =
        PoolJob::new(job.notify.clone(), job.extranonce1.clone(), job.extranonce2_size, difficulty, job.version_mask)
            .unwrap();
    let target = share_target(difficulty).unwrap();
    let (nonce, header) = (0u32..)
        .map(|nonce| (nonce, pool_job.header(extranonce2, job.notify.ntime, nonce, job.notify.version).unwrap()))
        .find(|(_, h)| target.is_met_by(&h.block_hash()) && keep(&h.block_hash()))
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
        difficulty,
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
    // A connection that subscribed and never authorized is offered a slot, and holds none.
    core.handle_miner_subscribed(T0 + 21, 11);
    core.handle_node_left(T0 + 22, 11);
    core.handle_miner_subscribed(T0 + 23, 12);
    let orders = drain(&mut core, &mut farm, &mut log);
    assert_eq!(job_of(&orders, 12).extranonce1, vec![0xc8, 0x58, 2], "11's slot is free");
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
    // The operator sees it where pools are listed (`pool list`, `status`).
    let note = "extranonce2 of 3 bytes is too short to carve a slot for miners";
    assert_eq!(core.pool_list(T0 + 21)[0].last_error.as_deref(), Some(note));
    assert_eq!(core.status(T0 + 21).pools[0].last_error.as_deref(), Some(note));
}

/// rig1 (10), placed on alice's pool chain, whose only account cannot carve a slot, and served
/// from carol on the local chain; the orders sent.
fn served_from_another_chain() -> (Core, Farm, Vec<(NodeId, MinerOrder)>) {
    let (mut core, mut farm, _) = farm(3, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    core.add_account(T0 + 21, "carol", 1 << 60, None, Some(1), None).unwrap();
    core.handle_tick(T0 + 22);
    let orders = drain(&mut core, &mut farm, &mut log);
    let rig = core.node_list(T0 + 22).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!((rig.chain.as_deref(), rig.account.as_deref()), (Some("pool:alice"), Some("carol")));
    (core, farm, orders)
}

#[test]
fn a_miner_whose_chains_accounts_cannot_carve_is_served_from_another_chains_account() {
    let (_, farm, orders) = served_from_another_chain();
    let job = job_of(&orders, 10);
    // carol is on the local chain: its coinbase's extranonce carved, slot 1.
    assert_eq!((job.extranonce1, job.extranonce2_size, job.notify.job_id.as_str()), (vec![0, 1], 6, "local-1"));
    assert!(farm.ledger.iter().any(|(k, p)| k == "miner_job" && p["node"] == "rig1" && p["account"] == "carol"));
    assert!(farm.ledger.iter().any(|(k, p)| k == "miner_slot_refused" && p["account"] == "alice"));
}

#[test]
fn the_balancer_counts_a_miner_served_from_another_chain_on_the_chain_it_serves() {
    let (mut core, mut farm, _) = served_from_another_chain();
    let mut log = Vec::new();
    // A QUIC node joins. rig1 serves the local chain (carol), so alice's pool chain is the one
    // nobody serves: the node goes there, and rig1 stays where it was placed.
    core.handle_node_joined(T0 + 30, 1, &hello("n1", 1e6, false), PROTOCOL_VERSION);
    drain(&mut core, &mut farm, &mut log);
    let list = core.node_list(T0 + 30);
    let chain_of = |name: &str| list.iter().find(|n| n.name == name).and_then(|n| n.chain.clone());
    assert_eq!(chain_of("n1").as_deref(), Some("pool:alice"), "{list:?}");
    assert_eq!(chain_of("rig1").as_deref(), Some("pool:alice"), "{list:?}");
    assert_eq!(core.node_list(T0 + 30).iter().find(|n| n.name == "rig1").unwrap().account.as_deref(), Some("carol"));
}

#[test]
fn a_miner_that_subscribed_before_any_pool_job_gets_one_when_it_comes() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "alice", 1 << 60, None, Some(1), None).unwrap();
    core.set_pool(T0, "alice", Some(settings(&[POOL])), None).unwrap();
    core.handle_miner_subscribed(T0 + 1, 10);
    farm.absorb(&mut core);
    assert!(farm.miners.is_empty(), "no job yet (alice is below standard: her work will come)");
    Pool::default().handshake(&mut core, &mut farm, T0 + 10, 4, DIFFICULTY, "j1");
    let job = job_of(&farm.miners, 10);
    assert_eq!((job.notify.job_id.as_str(), job.extranonce1), ("j1", vec![0xc8, 0x58, 1]));
}

/// A core whose local chain's blocks are easy (difficulty 1e-5: about 43,000 hashes).
fn local_farm() -> (Core, Farm) {
    let bits = Target::from_difficulty(1e-5).unwrap().to_compact();
    let core = Core::new(CoreConfig { chain_bits: bits, min_share_work: 4096, ..CoreConfig::default() });
    (core, Farm::default())
}

#[test]
fn a_miner_on_a_local_chain_account_is_served_from_the_chains_own_coinbase() {
    let (mut core, mut farm) = local_farm();
    core.add_account(T0, "carol", 1 << 60, None, Some(1), None).unwrap();
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    let orders = drain(&mut core, &mut farm, &mut log);
    let job = job_of(&orders, 10);
    // The coinbase's 8-byte extranonce, carved as a pool's: 2 bytes of slot 1, 6 to roll.
    assert_eq!((job.extranonce1.clone(), job.extranonce2_size), (vec![0, 1], 6));
    assert_eq!((job.notify.job_id.as_str(), job.notify.clean_jobs), ("local-1", true));
    let rig = core.node_list(T0 + 20).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!(rig.account.as_deref(), Some("carol"));
    assert!(farm.ledger.iter().any(|(k, p)| k == "miner_job" && p["account"] == "carol" && p["slot"] == 1));

    // A share below the block target: credited to carol, acknowledged after.
    let block = Target::from_difficulty(1e-5).unwrap();
    let s = share_where(&job, &[0, 0, 0, 0, 0, 1], 1e-7, |h| !block.is_met_by(h));
    log.clear();
    core.handle_miner_share(T0 + 30, 10, 1, &s);
    drain(&mut core, &mut farm, &mut log);
    let credit =
        log.iter().position(|c| matches!(c, Command::Persist(StoreOp::Credit { account, .. }) if account == "carol"));
    let ack = log.iter().position(|c| {
        matches!(c, Command::Miner { node: 10, order: MinerOrder::ShareRecorded { ticket: 1, result: Ok(()) } })
    });
    assert!(credit.unwrap() < ack.unwrap(), "{log:?}");
    assert_eq!(core.chain_list(T0 + 30)[0].height, 0, "not a block");

    // A share meeting the block target extends the chain; the next job is on the new tip.
    let b = share_where(&job, &[0, 0, 0, 0, 0, 2], 1e-7, |h| block.is_met_by(h));
    core.handle_miner_share(T0 + 40, 10, 2, &b);
    let orders = drain(&mut core, &mut farm, &mut log);
    assert!(farm.ledger.iter().any(|(k, p)| k == "block_found" && p["account"] == "carol"), "{:?}", farm.ledger);
    let next = job_of(&orders, 10);
    assert_eq!((next.notify.job_id.as_str(), next.notify.clean_jobs), ("local-2", true));
    assert_eq!(next.notify.prev_blockhash, b.accepted.hash);
    assert_eq!(next.extranonce1, vec![0, 1], "the miner keeps its slot");
    // A share on the old tip is stale.
    log.clear();
    let late = share_where(&job, &[0, 0, 0, 0, 0, 3], 1e-7, |_| true);
    core.handle_miner_share(T0 + 50, 10, 3, &late);
    drain(&mut core, &mut farm, &mut log);
    assert!(log.iter().any(|c| matches!(c,
        Command::Miner { order: MinerOrder::ShareRecorded { ticket: 3, result: Err(e) }, .. } if e.code == 21)));
    assert!(!log.iter().any(|c| matches!(c, Command::Persist(StoreOp::Credit { .. }))));
}

#[test]
fn a_local_templates_slot_0_and_miners_slots_never_share_a_coinbase() {
    let (mut core, mut farm) = local_farm();
    core.add_account(T0, "carol", 1 << 60, None, Some(1), None).unwrap();
    let mut log = Vec::new();
    for (node, name) in [(10, "rig1"), (11, "rig2")] {
        core.handle_miner_subscribed(T0 + 20, node);
        core.handle_miner_joined(T0 + 20, node, name, "ua");
    }
    let orders = drain(&mut core, &mut farm, &mut log);
    let (a, b) = (job_of(&orders, 10), job_of(&orders, 11));
    assert_ne!(a.extranonce1, b.extranonce1);
    assert!(a.extranonce1 != vec![0, 0] && b.extranonce1 != vec![0, 0], "slot 0 is the QUIC nodes' templates");
}

#[test]
fn connections_that_never_authorize_leave_every_slot_to_an_honest_miner() {
    // 4 bytes of extranonce2: 255 miner slots. 300 connections subscribe and never authorize.
    let (mut core, mut farm, _) = farm(4, 1 << 60);
    let mut log = Vec::new();
    for node in 100..400 {
        core.handle_miner_subscribed(T0 + 20, node);
    }
    let orders = drain(&mut core, &mut farm, &mut log);
    assert_eq!(orders.len(), 300, "each was offered a job");
    assert!(!farm.ledger.iter().any(|(k, _)| k == "miner_slot_refused"), "{:?}", farm.ledger);
    // An honest miner subscribes and authorizes: it takes the slot it was offered.
    core.handle_miner_subscribed(T0 + 30, 10);
    core.handle_miner_joined(T0 + 30, 10, "rig1", "ua");
    let orders = drain(&mut core, &mut farm, &mut log);
    let job = job_of(&orders, 10);
    assert_eq!(job.notify.job_id, "j1");
    let slot = job.extranonce1[2];
    assert_ne!(slot, 0);
    // A squatter that authorizes later was offered the same slot: it gets another one.
    let squatter = (100..400).find(|&n| job_of(&farm.miners, n).extranonce1[2] == slot).unwrap();
    core.handle_miner_joined(T0 + 40, squatter, "late", "ua");
    let orders = drain(&mut core, &mut farm, &mut log);
    let moved = job_of(&orders, squatter);
    assert_ne!(moved.extranonce1[2], slot, "a slot is held once");
    assert!(moved.notify.clean_jobs);
    // Share of the squatter's first (offered) job are not credited: that slot is rig1's.
    log.clear();
    let first = farm.miners.iter().find_map(|(n, o)| match o {
        MinerOrder::Job(j) if *n == squatter => Some((**j).clone()),
        _ => None,
    });
    core.handle_miner_share(T0 + 50, squatter, 9, &share(&first.unwrap(), &[0, 0, 1]));
    drain(&mut core, &mut farm, &mut log);
    assert!(!log.iter().any(|c| matches!(c, Command::Persist(StoreOp::Credit { .. }))), "{log:?}");
}

#[test]
fn an_idle_miner_gets_the_local_chain_credited_to_no_account() {
    let (mut core, mut farm, _) = farm(4, 1);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    let a = job_of(&drain(&mut core, &mut farm, &mut log), 10);
    core.handle_miner_share(T0 + 30, 10, 1, &share(&a, &[0, 0, 1]));
    // alice is up to standard and no other account has work: the idle job.
    let idle = job_of(&drain(&mut core, &mut farm, &mut log), 10);
    assert_eq!((idle.notify.job_id.as_str(), idle.notify.clean_jobs, idle.extranonce2_size), ("local-1", true, 6));
    log.clear();
    let s = share_where(&idle, &[0, 0, 0, 0, 0, 1], 1e-7, |_| true);
    core.handle_miner_share(T0 + 40, 10, 2, &s);
    drain(&mut core, &mut farm, &mut log);
    assert!(
        log.iter().any(|c| matches!(
            c,
            Command::Miner { order: MinerOrder::ShareRecorded { ticket: 2, result: Ok(()) }, .. }
        ))
    );
    assert!(!log.iter().any(|c| matches!(c, Command::Persist(StoreOp::Credit { .. }))), "{log:?}");
    let rig = core.node_list(T0 + 40).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!((rig.account, rig.accepted), (None, 2));
}

#[test]
fn a_standby_miner_is_held_uncredited_and_promoted_with_clean_jobs() {
    let (mut core, mut farm, _) = farm(4, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 20, 10, "rig1", "ua");
    let a = job_of(&drain(&mut core, &mut farm, &mut log), 10);
    core.standby_node(T0 + 30, "rig1").unwrap();
    // Held: sent nothing (a new job could change its extranonce); its shares are answered and
    // credited to no one, and never reach the pool.
    let orders = drain(&mut core, &mut farm, &mut log);
    assert!(orders.is_empty(), "{orders:?}");
    let rig = core.node_list(T0 + 30).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!(rig.state.as_str(), "standby");
    log.clear();
    core.handle_miner_share(T0 + 35, 10, 1, &share(&a, &[0, 0, 1]));
    drain(&mut core, &mut farm, &mut log);
    assert!(
        log.iter().any(|c| matches!(
            c,
            Command::Miner { order: MinerOrder::ShareRecorded { ticket: 1, result: Ok(()) }, .. }
        ))
    );
    assert!(
        !log.iter().any(|c| matches!(c, Command::Persist(StoreOp::Credit { .. }) | Command::PoolSend { .. })),
        "{log:?}"
    );
    // Promoted: its account's job at once, replacing the old ones.
    core.promote_node(T0 + 40, "rig1").unwrap();
    let back = job_of(&drain(&mut core, &mut farm, &mut log), 10);
    assert_eq!((back.notify.job_id.as_str(), back.notify.clean_jobs), ("j1", true));
    assert_eq!(back.extranonce1, a.extranonce1, "the same slot");
    log.clear();
    core.handle_miner_share(T0 + 45, 10, 2, &share(&back, &[0, 0, 2]));
    drain(&mut core, &mut farm, &mut log);
    assert!(log.iter().any(|c| matches!(c, Command::Persist(StoreOp::Credit { account, .. }) if account == "alice")));
}

#[test]
fn shares_a_miners_session_rejected_are_counted_as_a_nodes_rejections() {
    let (mut core, mut farm, _pool) = farm(4, 1 << 60);
    let mut log = Vec::new();
    core.handle_miner_subscribed(T0 + 20, 10);
    core.handle_miner_joined(T0 + 30, 10, "rig1", "cpuminer/2.5.1");
    drain(&mut core, &mut farm, &mut log);
    let before = core.counters.shares_rejected.clone();

    let counts = [(RejectReason::UnknownJob, 500), (RejectReason::AboveTarget, 3)];
    core.handle_miner_rejected(10, &counts);
    // A connection that never joined (or already left) counts nothing.
    core.handle_miner_rejected(99, &counts);
    let rig = core.node_list(T0 + 40).into_iter().find(|n| n.name == "rig1").unwrap();
    assert_eq!(rig.rejected, 503);
    let after = &core.counters.shares_rejected;
    assert_eq!(after[&RejectReason::UnknownJob] - before[&RejectReason::UnknownJob], 500);
    assert_eq!(after[&RejectReason::AboveTarget] - before[&RejectReason::AboveTarget], 3);
    assert_eq!(after[&RejectReason::Duplicate], before[&RejectReason::Duplicate]);
}
