//! Several chains served at once, with real processes on loopback: the balancer gives the
//! chain with the heavier load more of the farm, and when a node is lost it moves no more
//! nodes than it must.

use std::time::Duration;

use hashgrid_tests::{Operator, Site, unix_ms, wait_for};

/// `chain list --json`: (name, nodes, capacity) per chain.
fn chains(op: &Operator) -> Vec<(String, Vec<String>, f64)> {
    let out = op.run(&["chain", "list", "--json"]).expect_success("chain list");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("chain list --json");
    list.iter()
        .map(|c| {
            let nodes = c["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
            (c["name"].as_str().unwrap().to_string(), nodes, c["capacity"].as_f64().unwrap())
        })
        .collect()
}

fn nodes_on(op: &Operator, chain: &str) -> Vec<String> {
    chains(op).into_iter().find(|c| c.0 == chain).map(|c| c.1).unwrap_or_default()
}

#[test]
fn the_heavier_chain_gets_more_nodes_and_a_lost_node_moves_at_most_one() {
    let site = Site::new();
    let coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &["--failover-after", "1s"]);
    let op = coordinator.operator();
    // Load 4 (3000 transactions per template) against the built-in chain's 1.
    op.run(&["chain", "add", "heavy", "--tx-per-template", "3000", "--bit-rate", "0"]).expect_success("chain add");
    op.run(&["account", "add", "h", "--standard", "1000T", "--chain", "heavy"]).expect_success("account add h");
    op.run(&["account", "add", "l", "--standard", "1000T"]).expect_success("account add l");
    let mut nodes: Vec<_> =
        (1..=4).map(|i| (format!("n{i}"), site.start_node(&coordinator, &format!("n{i}")))).collect();
    wait_for("four nodes on the chains", Duration::from_secs(30), || {
        let c = chains(&op);
        (c.iter().map(|c| c.1.len()).sum::<usize>() == 4).then_some(())
    });
    let c = chains(&op);
    eprintln!("chains: {c:?}");
    let (heavy, local) = (c.iter().find(|c| c.0 == "heavy").unwrap(), c.iter().find(|c| c.0 == "local").unwrap());
    assert!(!local.1.is_empty(), "a chain with demand has a node");
    assert!(heavy.1.len() > local.1.len(), "the heavy chain has more nodes: {c:?}");
    assert!(heavy.2 > local.2, "and more capacity: {c:?}");

    // Each node works for an account of its own chain.
    let out = op.run(&["assignments", "--json"]).expect_success("assignments");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("assignments --json");
    for row in &rows {
        if let Some(account) = row["account"].as_str() {
            let want = if row["chain"] == "heavy" { "h" } else { "l" };
            // A node that just moved may still finish a range of its former chain.
            if account != want {
                eprintln!("{row} still finishing a range of its former chain");
            }
        }
    }

    // Lose the node serving the built-in chain alone (or any of its nodes): at most one node
    // moves, and both chains keep a node.
    let lost = nodes_on(&op, "local")[0].clone();
    let since = unix_ms();
    let at = nodes.iter().position(|(name, _)| *name == lost).unwrap();
    nodes[at].1.kill();
    wait_for("the lost node's failover", Duration::from_secs(10), || {
        op.ledger(1)
            .into_iter()
            .find(|e| e.kind == "failover" && e.payload["node"] == lost.as_str() && e.at_ms >= since)
    });
    std::thread::sleep(Duration::from_millis(500));
    let moves: Vec<_> = op
        .ledger(1)
        .into_iter()
        .filter(|e| e.kind == "rebalance" && e.at_ms >= since && e.payload["from"].is_string())
        .collect();
    eprintln!("moves after losing {lost}: {moves:?}");
    assert!(moves.len() <= 1, "{} nodes moved", moves.len());
    assert!(!nodes_on(&op, "local").is_empty() && !nodes_on(&op, "heavy").is_empty(), "{:?}", chains(&op));
}
