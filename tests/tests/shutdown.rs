//! Clean shutdown with real processes on loopback: SIGTERM to a node hands its ranges over at
//! once (a departure, not a failure) and the node exits 0; SIGTERM to the coordinator flushes
//! every acknowledged credit, tells the nodes, and exits 0; the nodes reconnect to its
//! successor on their own.

use std::time::{Duration, Instant};

use hashgrid_tests::{Site, wait_for};

#[test]
fn sigterm_drains_a_node_and_then_the_coordinator() {
    let site = Site::new();
    let mut coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    op.add_account("acme", "1000T", 1);
    let mut leaving = site.start_node(&coordinator, "leaving");
    let staying = site.start_node(&coordinator, "staying");
    wait_for("both nodes with ranges", Duration::from_secs(30), || {
        let ledger = op.ledger(1);
        let has = |n: &str| ledger.iter().any(|e| e.kind == "assignment" && e.payload["node"] == n);
        (has("leaving") && has("staying")).then_some(())
    });

    let asked = Instant::now();
    assert_eq!(leaving.terminate(Duration::from_secs(15)), Some(0), "the node exits 0:\n{}", leaving.log_tail(20));
    eprintln!("node stopped {:?} after SIGTERM", asked.elapsed());
    let departure = wait_for("the departure in the ledger", Duration::from_secs(5), || {
        op.ledger(1).into_iter().find(|e| e.kind == "departure" && e.payload["node"] == "leaving")
    });
    let ranges = departure.payload["ranges"].as_array().expect("ranges").clone();
    assert!(ranges.iter().all(|r| r["to"] == "staying"), "its ranges went to the other node: {ranges:?}");
    assert!(!op.ledger(1).iter().any(|e| e.kind == "failover"), "a departure is not a failover");
    let nodes = op.nodes();
    assert!(nodes.iter().all(|n| n.name != "leaving"), "a departed node is not listed as failed: {nodes:?}");

    // The coordinator: what it acknowledged is on disk when it exits.
    let before = op.status().account("acme").clone();
    let addr = coordinator.addr;
    let asked = Instant::now();
    assert_eq!(coordinator.terminate(Duration::from_secs(15)), Some(0), "the coordinator exits 0");
    eprintln!("coordinator stopped {:?} after SIGTERM", asked.elapsed());
    let coordinator = site.start_coordinator(&addr.to_string(), "sequential");
    let after = op.status().account("acme").clone();
    assert!(after.delivered >= before.delivered, "credit lost over a clean shutdown: {before:?} then {after:?}");
    wait_for("the staying node to reconnect", Duration::from_secs(20), || {
        op.nodes().into_iter().find(|n| n.name == "staying" && n.state == "active")
    });
    drop((staying, coordinator));
}
