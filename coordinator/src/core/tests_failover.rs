//! Failover, standby, drain, under-standard detection, the balancer and the ledger, in the pure
//! core with virtual time (no sleeps): every scenario is a sequence of events at chosen times.

use super::tests::{Farm, T0, core, find_share, hello, two_nodes};
use super::*;
use hashgrid_common::message::{PROTOCOL_VERSION, ShareOutcome};

fn kinds(farm: &Farm) -> Vec<&str> {
    farm.ledger.iter().map(|(k, _)| k.as_str()).collect()
}

fn entries<'a>(farm: &'a Farm, kind: &str) -> Vec<&'a serde_json::Value> {
    farm.ledger.iter().filter(|(k, _)| k == kind).map(|(_, v)| v).collect()
}

fn state(core: &Core, name: &str) -> String {
    core.node_list(T0).into_iter().find(|n| n.name == name).map(|n| n.state).unwrap_or_default()
}

/// The node's ranges as (job, version, start, hashes): a protocol-3 node's range spans
/// several versions, and the coverage counts each (version, nonce).
fn ranges(farm: &Farm, node: NodeId) -> Vec<(u64, u32, u32, u64)> {
    farm.held
        .get(&node)
        .map_or(Vec::new(), |h| h.iter().map(|a| (a.job, a.header.version, a.start, a.hashes())).collect())
}

fn heartbeat(core: &mut Core, now: u64, nodes: &[NodeId]) {
    for &n in nodes {
        core.handle_node_message(now, n, NodeMessage::Heartbeat { hashrate: 10_000.0, devices: Vec::new() });
    }
}

#[test]
fn a_silent_node_s_ranges_go_to_a_promoted_standby_at_once() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 3, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    assert_eq!(lost.len(), 2);
    assert!(ranges(&farm, 3).is_empty(), "a standby gets nothing");
    heartbeat(&mut core, T0 + 2000, &[2, 3]);
    // Not yet: 3 s of silence is allowed.
    core.handle_tick(T0 + 3000);
    farm.absorb(&mut core);
    assert!(ranges(&farm, 3).is_empty());
    core.handle_tick(T0 + 3001);
    farm.absorb(&mut core);
    assert_eq!(ranges(&farm, 3), lost, "the standby holds exactly the failed node's ranges, in the same tick");
    assert_eq!(state(&core, "spare"), "active");
    assert_eq!(state(&core, "n1"), "failed");
    let failover = entries(&farm, ledger::kind::FAILOVER);
    assert_eq!(failover.len(), 1);
    assert_eq!(failover[0]["node"], "n1");
    assert_eq!(failover[0]["promoted"], "spare");
    assert_eq!(failover[0]["ranges"].as_array().unwrap().len(), 2);
    assert!(kinds(&farm).contains(&ledger::kind::PROMOTION));
    assert_eq!(core.counters().failovers.get("missed heartbeats"), Some(&1));
    assert_eq!((core.counters().promotions, core.counters().ranges_reassigned), (1, 2));
    // The coverage counts the handed-over nonces; none is abandoned.
    let job = core.job_status(lost[0].0).unwrap();
    assert_eq!(job.abandoned, 0);
    assert_eq!(job.reassigned, lost.iter().map(|r| r.3).sum::<u64>());
}

#[test]
fn without_a_standby_the_ranges_spread_over_the_actives() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    for n in 1..=3 {
        core.handle_node_joined(T0, n, &hello(&format!("n{n}"), 10_000.0, false), PROTOCOL_VERSION);
    }
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    core.handle_node_left(T0 + 10, 1);
    farm.held.remove(&1);
    farm.absorb(&mut core);
    let (h2, h3) = (ranges(&farm, 2), ranges(&farm, 3));
    assert_eq!((h2.len(), h3.len()), (3, 3), "one each, at once");
    for r in &lost {
        assert!(h2.contains(r) ^ h3.contains(r), "{r:?} held by exactly one node");
    }
}

#[test]
fn with_no_one_left_the_ranges_wait_and_are_issued_first() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    core.handle_node_left(T0 + 10, 1);
    farm.held.remove(&1);
    farm.absorb(&mut core);
    assert_eq!(core.job_status(lost[0].0).unwrap().abandoned, lost.iter().map(|r| r.3).sum::<u64>());
    core.handle_node_joined(T0 + 20, 2, &hello("n2", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    assert_eq!(ranges(&farm, 2), lost, "the abandoned ranges come back before fresh nonces");
}

#[test]
fn a_failed_node_that_comes_back_joins_as_standby() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_left(T0 + 10, 1);
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "failed");
    core.handle_node_joined(T0 + 20, 3, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "standby");
    assert!(ranges(&farm, 3).is_empty());
    core.promote_node(T0 + 30, "n1").unwrap();
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "active");
    assert_eq!(ranges(&farm, 3).len(), 2);
}

#[test]
fn a_node_far_below_its_announced_rate_is_replaced_by_the_standby() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    // Announces 1 MH/s (244 shares a second at 4096 hashes each) and delivers nothing.
    core.handle_node_joined(T0, 1, &hello("liar", 1e6, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    core.handle_tick(T0 + 10);
    farm.absorb(&mut core);
    assert_eq!(state(&core, "liar"), "active", "2.4 shares missing is not proof");
    let mut t = T0 + 10;
    while state(&core, "liar") == "active" && t < T0 + 5000 {
        t += 100;
        for n in [1, 2] {
            core.handle_node_message(t, n, NodeMessage::Heartbeat { hashrate: 1e6, devices: Vec::new() });
        }
        core.handle_tick(t);
        farm.absorb(&mut core);
    }
    assert_eq!(state(&core, "liar"), "failed", "flagged within 5 s");
    // The start-up allowance (2 s from the first tick), then 100 expected shares (0.4 s).
    assert!(t - T0 <= 2600, "flagged after {} ms", t - T0);
    assert_eq!(ranges(&farm, 2), lost);
    assert!(farm.held.get(&1).is_none_or(Vec::is_empty), "its ranges were revoked");
    let reason = entries(&farm, ledger::kind::FAILOVER)[0]["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("under standard"), "{reason}");
}

#[test]
fn honest_nodes_starting_up_at_a_high_share_rate_are_not_failed() {
    // 500 shares a second: 50 are due in the first 100 ms tick, before a real node has
    // received its range, started its devices and sent a batch.
    let mut core = Core::new(CoreConfig { min_share_work: 1, shares_per_second: 500.0, ..CoreConfig::default() });
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 1e6, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 1e6, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    for t in (T0 + 100..=T0 + 1500).step_by(100) {
        for n in [1, 2] {
            core.handle_node_message(t, n, NodeMessage::Heartbeat { hashrate: 1e6, devices: Vec::new() });
        }
        core.handle_tick(t);
    }
    farm.absorb(&mut core);
    assert_eq!((state(&core, "n1"), state(&core, "n2")), ("active".into(), "active".into()), "{:?}", farm.ledger);
}

#[test]
fn a_long_range_is_handed_over_in_a_part_the_taker_can_finish() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    // Announces 1 GH/s: its ranges are 3 G nonces long.
    core.handle_node_joined(T0, 1, &hello("big", 1e9, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("small", 100_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    core.handle_node_left(T0 + 10, 1);
    farm.absorb(&mut core);
    let took = ranges(&farm, 2);
    // 100 kH/s for 3 s is 300 k hashes: 75 k nonces under 4 versions, rounded up to 2^16
    // steps: 131,072 nonces, 524,288 hashes.
    assert_eq!((took[0].2, took[0].3), (lost[0].2, 524_288));
    let job = core.job_status(lost[0].0).unwrap();
    assert_eq!(job.in_flight + job.abandoned, lost.iter().map(|r| r.3).sum::<u64>(), "nothing lost");
    assert!(job.abandoned > 0, "the rest waits to be issued first");
    let fates: Vec<(u32, u64, &str)> = job.runs.iter().map(|r| (r.start, r.count, r.fate.as_str())).collect();
    assert_eq!(fates[0], (0, 131_072, "in_flight"), "runs count nonces (each under the group's versions)");
    assert_eq!(fates[1].2, "abandoned: rest of a handed-over range");
    assert!(job.runs.windows(2).all(|w| w[0].start as u64 + w[0].count == w[1].start as u64), "runs tile the nonces");
}

#[test]
fn the_waiting_rest_of_a_handed_over_range_is_abandoned_when_its_account_is_up_to_standard() {
    let mut core = core();
    let mut farm = Farm::default();
    // A few of the small node's shares meet the standard.
    core.add_account(T0, "a", 100_000, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("big", 1e9, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("small", 100_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let lost = ranges(&farm, 1);
    let old = farm.held[&1][0].id;
    core.handle_node_left(T0 + 10, 1);
    farm.absorb(&mut core);
    let job = core.job_status(lost[0].0).unwrap();
    assert_eq!(job.runs[1].fate, "abandoned: rest of a handed-over range", "the rest waits");
    for step in 0..1000 {
        if core.accounts()[0].up_to_standard() {
            break;
        }
        farm.mine_one(&mut core, T0 + 20 + step, 2);
    }
    assert!(core.accounts()[0].up_to_standard());
    let job = core.job_status(lost[0].0).unwrap();
    assert!(
        job.runs.iter().all(|r| r.fate != "abandoned: rest of a handed-over range"),
        "nothing waits to be searched for an account up to standard: {:?}",
        job.runs
    );
    assert!(job.runs.iter().any(|r| r.fate == "abandoned: account up to standard"), "{:?}", job.runs);
    let stored = farm.fates.iter().rev().find(|(a, _)| *a == old).map(|(_, fate)| fate.as_str());
    assert_eq!(stored, Some("abandoned: account up to standard"), "the stored history says so too");
}

#[test]
fn a_node_sending_only_invalid_shares_is_replaced() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("bad", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let a = farm.held[&1][0];
    let above = (a.start..).filter(|&n| !a.share_target.is_met_by(&a.header.with_nonce(n).block_hash()));
    for (i, nonce) in above.take(20).enumerate() {
        let share =
            Share { id: i as u64, assignment: a.id, job: a.job, version: a.header.version, time: a.header.time, nonce };
        core.handle_node_message(T0 + 10, 1, NodeMessage::Share(share));
    }
    core.handle_tick(T0 + 20);
    farm.absorb(&mut core);
    assert_eq!(state(&core, "bad"), "failed");
    assert_eq!(state(&core, "spare"), "active");
    assert!(entries(&farm, ledger::kind::FAILOVER)[0]["reason"].as_str().unwrap().contains("20 of 20 shares rejected"));
}

#[test]
fn shares_refused_for_the_coordinator_s_reasons_do_not_count_against_a_node() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    // After a coordinator restart a node re-sends its unanswered shares: all of unknown jobs.
    for i in 0..50 {
        let share = Share { id: i, assignment: 999, job: 999, version: 0, time: 0, nonce: i as u32 };
        core.handle_node_message(T0 + 10, 1, NodeMessage::Share(share));
    }
    core.handle_tick(T0 + 20);
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "active");
    assert_eq!(core.node_list(T0 + 20)[0].rejected, 50, "still counted in the node's statistics");
}

#[test]
fn a_late_share_from_the_failed_holder_is_credited_once() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let old = farm.held[&1][0];
    let share = find_share(&old, 0).unwrap();
    core.handle_node_left(T0 + 10, 1);
    farm.held.remove(&1);
    farm.absorb(&mut core);
    let new = *farm.held[&2].iter().find(|a| a.start == old.start && a.job == old.job).unwrap();
    // The standby finds the same nonce (it meets both targets here) and submits it first.
    if new.share_target.is_met_by(&new.header.with_nonce(share.nonce).block_hash()) {
        core.handle_node_message(T0 + 20, 2, NodeMessage::Share(Share { id: 7, assignment: new.id, ..share }));
    }
    // The old holder comes back and re-sends its unanswered share.
    core.handle_node_joined(T0 + 30, 3, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_message(T0 + 30, 3, NodeMessage::Share(Share { id: 1, ..share }));
    farm.absorb(&mut core);
    let accepted = farm.results.iter().filter(|r| matches!(r.2, ShareOutcome::Accepted { .. })).count();
    assert_eq!(accepted, 1);
    assert_eq!(farm.credits.len(), 1);
}

#[test]
fn drain_finishes_the_ranges_then_stops() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("spare", 10_000.0, true), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    core.drain_node(T0 + 1, "n1").unwrap();
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "draining");
    farm.finish_range(&mut core, T0 + 2, 1);
    assert_eq!(ranges(&farm, 1).len(), 1, "no new range after the first one finished");
    farm.finish_range(&mut core, T0 + 3, 1);
    assert_eq!(state(&core, "n1"), "drained");
    assert!(ranges(&farm, 1).is_empty());
    assert!(ranges(&farm, 2).is_empty(), "draining is not a failure: the standby stays a standby");
    assert_eq!(entries(&farm, ledger::kind::DRAIN).len(), 1);
    assert_eq!(core.drain_node(T0, "nobody"), Err(AdminError::NoSuchNode("nobody".into())));
}

#[test]
fn operator_standby_hands_the_ranges_over_at_once() {
    let (mut core, mut farm) = two_nodes();
    let moved = ranges(&farm, 1);
    core.standby_node(T0 + 1, "n1").unwrap();
    farm.absorb(&mut core);
    assert_eq!(state(&core, "n1"), "standby");
    assert!(ranges(&farm, 1).is_empty(), "revoked");
    let h2 = ranges(&farm, 2);
    assert!(moved.iter().all(|r| h2.contains(r)));
}

#[test]
fn the_balancer_follows_the_load_and_moves_few_nodes() {
    let mut core = core();
    let mut farm = Farm::default();
    // "heavy" weighs 4 (3000 transactions per template), the built-in chain 1.
    let heavy = ChainParams { name: "heavy".into(), tx_per_template: 3000, bit_rate: 0, difficulty: 1.0, weight: 1.0 };
    core.add_chain(T0, heavy).unwrap();
    core.add_account(T0, "h", 1 << 40, None, None, Some("heavy")).unwrap();
    core.add_account(T0, "l", 1 << 40, None, None, None).unwrap();
    for n in 1..=5 {
        core.handle_node_joined(T0, n, &hello(&format!("n{n}"), 10_000.0, false), PROTOCOL_VERSION);
    }
    farm.absorb(&mut core);
    let on = |core: &Core, chain: &str| core.chain_list(T0).into_iter().find(|c| c.params.name == chain).unwrap().nodes;
    assert_eq!((on(&core, "heavy").len(), on(&core, "local").len()), (4, 1));
    for (&node, held) in &farm.held {
        let chain = core.nodes[&node].chain.clone().unwrap();
        let account = if chain == "heavy" { "h" } else { "l" };
        assert!(held.iter().all(|a| core.jobs[&a.job].account == account), "node {node} works for its chain");
    }
    // A heavy node leaves: 3 + 1 is still the best split, nobody moves.
    let heavy_node = *core.nodes.iter().find(|(_, n)| n.chain.as_deref() == Some("heavy")).unwrap().0;
    let before = entries(&farm, ledger::kind::REBALANCE).len();
    core.handle_node_left(T0 + 10, heavy_node);
    farm.absorb(&mut core);
    assert_eq!(entries(&farm, ledger::kind::REBALANCE).len(), before);
    // The light node leaves: exactly one heavy node moves over.
    let light_node = *core.nodes.iter().find(|(_, n)| n.chain.as_deref() == Some("local")).unwrap().0;
    core.handle_node_left(T0 + 20, light_node);
    farm.absorb(&mut core);
    assert_eq!(entries(&farm, ledger::kind::REBALANCE).len(), before + 1);
    assert_eq!((on(&core, "heavy").len(), on(&core, "local").len()), (2, 1));
    // An account on an unknown chain is refused.
    assert_eq!(core.add_account(T0, "x", 1, None, None, Some("nope")), Err(AdminError::NoSuchChain("nope".into())));
}

#[test]
fn a_chain_without_demand_gives_its_nodes_to_the_others() {
    let mut core = core();
    let mut farm = Farm::default();
    let other = ChainParams { name: "other".into(), tx_per_template: 0, bit_rate: 0, difficulty: 1.0, weight: 1.0 };
    core.add_chain(T0, other).unwrap();
    core.add_account(T0, "small", 4096, None, None, Some("other")).unwrap();
    core.add_account(T0, "big", 1 << 40, None, None, None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    core.handle_node_joined(T0, 2, &hello("n2", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    let on_other = *core.nodes.iter().find(|(_, n)| n.chain.as_deref() == Some("other")).unwrap().0;
    farm.mine_one(&mut core, T0 + 1, on_other).unwrap();
    assert!(core.accounts().iter().find(|a| a.name == "small").unwrap().up_to_standard());
    assert_eq!(core.nodes[&on_other].chain.as_deref(), Some("local"));
    assert!(farm.held[&on_other].iter().all(|a| core.jobs[&a.job].account == "big"));
}

#[test]
fn the_ledger_records_the_switch_when_an_account_is_up_to_standard() {
    let mut core = core();
    let mut farm = Farm::default();
    core.add_account(T0, "a", 4096, None, Some(1), None).unwrap();
    core.add_account(T0, "b", 1 << 40, None, Some(2), None).unwrap();
    core.handle_node_joined(T0, 1, &hello("n1", 10_000.0, false), PROTOCOL_VERSION);
    farm.absorb(&mut core);
    farm.mine_one(&mut core, T0 + 1, 1).unwrap();
    let reached = entries(&farm, ledger::kind::STANDARD_REACHED);
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0]["account"], "a");
    let switch = entries(&farm, ledger::kind::SWITCH);
    assert_eq!((switch[0]["from"].as_str(), switch[0]["to"].as_str()), (Some("a"), Some("b")));
    let k = kinds(&farm);
    let at = |kind: &str| k.iter().position(|x| *x == kind).unwrap();
    assert!(at(ledger::kind::ACCOUNT_ADDED) < at(ledger::kind::ASSIGNMENT));
    assert!(at(ledger::kind::STANDARD_REACHED) < at(ledger::kind::SWITCH));
    // Every range issued is in the ledger.
    let issued = farm.held.values().flatten().count();
    assert!(entries(&farm, ledger::kind::ASSIGNMENT).len() >= issued);
}
