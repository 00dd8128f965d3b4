//! Rolling upgrades, with real processes on loopback: a rollout sends its share of new ranges
//! to the nodes of one software version and is rolled back with `--percent 0`; nodes that
//! speak older protocol versions are still served (version 2 beside version 3's share batches,
//! and version 1), while an operator CLI of an older version is told to upgrade.
//!
//! The two node "builds" are the same binary announcing different versions
//! (`--announce-version`), which is all the coordinator can tell builds apart by.

use std::time::Duration;

use hashgrid_common::message::{
    ALPN_PREVIOUS, ALPN_V2, Assignment, CoordinatorMessage, Hello, NodeHello, NodeMessage, Share, ShareOutcome,
    close_code, v1, v2,
};
use hashgrid_common::net;
use hashgrid_tests::{Coordinator, Operator, Site, assert_credit_matches_receipts, wait_for};

const CANARY: &str = "0.2.0-canary";

/// Ranges issued to each node after ledger entry `after`: (to the canary, to others).
fn ranges_after(op: &Operator, after: u64) -> (usize, usize) {
    let entries = op.ledger(after + 1);
    let assigned: Vec<_> = entries.iter().filter(|e| e.kind == "assignment").collect();
    let canary = assigned.iter().filter(|e| e.payload["node"] == "new").count();
    (canary, assigned.len() - canary)
}

/// The sequence number of the latest ledger entry of `kind`.
fn last_entry(op: &Operator, kind: &str) -> u64 {
    op.ledger(1).into_iter().filter(|e| e.kind == kind).map(|e| e.seq).max().expect("an entry")
}

/// A node named "veteran" connected with the ALPN `alpn` (an older protocol version), its hello
/// sent.
async fn veteran(
    coordinator: &Coordinator,
    alpn: &[u8],
    name: &str,
    software_version: &str,
    hashrate: f64,
) -> (quinn::Endpoint, quinn::Connection, net::FramedStream) {
    let ca = std::fs::read(coordinator.data_dir.join("cert.pem")).unwrap();
    let token = std::fs::read_to_string(coordinator.data_dir.join("node.token")).unwrap();
    let mut endpoint = net::client_endpoint_for(&ca, coordinator.addr).unwrap();
    endpoint.set_default_client_config(net::client_config_speaking(&ca, alpn).unwrap());
    let conn = net::connect(&endpoint, coordinator.addr).await.expect("a connection of the older version");
    let mut stream = net::FramedStream::open(&conn).await.unwrap();
    let hello = NodeHello {
        token: token.trim().into(),
        name: name.into(),
        software_version: software_version.into(),
        standby: false,
        devices: Vec::new(),
        hashrate,
    };
    stream.send(&Hello::Node(hello)).await.unwrap();
    (endpoint, conn, stream)
}

fn start(site: &Site) -> Coordinator {
    // Quarter-second ranges: many decisions in a few seconds.
    let config = site.path().join("coordinator.toml");
    std::fs::write(&config, "range = \"250ms\"\n").unwrap();
    site.start_coordinator_with("127.0.0.1:0", "sequential", &["--config", config.to_str().unwrap()])
}

#[test]
fn a_rollout_sends_its_share_to_the_new_version_and_rolls_back() {
    let site = Site::new();
    let coordinator = start(&site);
    let op = coordinator.operator();
    op.add_account("acme", "1000T", 1);
    let _old = site.start_node(&coordinator, "old");
    let _new = site.start_node_with(&coordinator, "new", &["--announce-version", CANARY]);
    wait_for("both nodes active", Duration::from_secs(30), || (op.status().active_nodes() == 2).then_some(()));
    let versions: Vec<(String, String)> = {
        let out = op.run(&["status", "--json"]).expect_success("status");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_string(), n["version"].as_str().unwrap().to_string()))
            .collect()
    };
    assert!(versions.contains(&("new".to_string(), CANARY.to_string())), "status shows versions: {versions:?}");

    op.run(&["rollout", "--version", CANARY, "--percent", "25"]).expect_success("rollout 25%");
    let began = last_entry(&op, "rollout");
    let (canary, others) = wait_for("40 ranges under the rollout", Duration::from_secs(60), || {
        let (c, o) = ranges_after(&op, began);
        (c + o >= 40).then_some((c, o))
    });
    let share = canary as f64 / (canary + others) as f64;
    eprintln!("at 25%: {canary} ranges to the canary, {others} to the others ({:.0}%)", share * 100.0);
    assert!((0.15..=0.35).contains(&share), "the canary got {:.0}% of the ranges", share * 100.0);
    let out = op.run(&["status", "--json"]).expect_success("status");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["rollout"]["version"], CANARY);

    // Roll back: no new range goes to the canary.
    op.run(&["rollout", "--version", CANARY, "--percent", "0"]).expect_success("rollout 0%");
    let rolled_back = last_entry(&op, "rollout");
    let (canary, others) = wait_for("20 ranges after the rollback", Duration::from_secs(60), || {
        let (c, o) = ranges_after(&op, rolled_back);
        (c + o >= 20).then_some((c, o))
    });
    assert_eq!(canary, 0, "{canary} ranges to the canary after the rollback ({others} to the others)");

    // End the rollout: the canary works again.
    op.run(&["rollout", "--clear"]).expect_success("rollout --clear");
    let ended = last_entry(&op, "rollout");
    wait_for("a range for the canary", Duration::from_secs(30), || (ranges_after(&op, ended).0 > 0).then_some(()));
}

#[test]
fn a_node_of_the_previous_protocol_version_is_served_and_an_old_cli_is_told_to_upgrade() {
    let site = Site::new();
    let coordinator = start(&site);
    let op = coordinator.operator();
    op.add_account("acme", "1000T", 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A node of version 1 and one of version 2: both read their assignments in the version-2
    // form (no rolled version bits; a version-3 assignment would not decode as one).
    let connect = |alpn: &'static [u8], name: &'static str| {
        runtime.block_on(async {
            let (endpoint, conn, mut stream) = veteran(&coordinator, alpn, name, "0.0.9", 1e6).await;
            let mut assigned = false;
            while !assigned {
                match stream.recv::<v2::CoordinatorMessage>().await.unwrap().expect("open") {
                    v2::CoordinatorMessage::Assign(_) => assigned = true,
                    v2::CoordinatorMessage::Close { reason } => panic!("closed: {reason}"),
                    _ => {}
                }
            }
            (endpoint, conn, stream)
        })
    };
    let (_elder_endpoint, elder, _elder_stream) = connect(ALPN_V2, "elder");
    let (_endpoint, conn, mut stream) = connect(ALPN_PREVIOUS, "veteran");
    // A version-1 heartbeat: the rate alone.
    runtime.block_on(stream.send(&v1::NodeMessage::Heartbeat { hashrate: 1e6 })).unwrap();
    let veteran = wait_for("the hashgrid/1 node in the list", Duration::from_secs(10), || {
        let out = op.run(&["node", "list", "--json"]).expect_success("node list");
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        nodes.into_iter().find(|n| n["name"] == "veteran")
    });
    assert_eq!(veteran["protocol"], 1, "{veteran}");
    assert_eq!(veteran["state"], "active", "{veteran}");
    assert!(conn.close_reason().is_none(), "still connected after its heartbeat");
    let out = op.run(&["node", "list", "--json"]).expect_success("node list");
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let elder_row = nodes.iter().find(|n| n["name"] == "elder").expect("the hashgrid/2 node in the list");
    assert_eq!(elder_row["protocol"], 2, "{elder_row}");
    assert!(elder.close_reason().is_none(), "the hashgrid/2 node is still connected");

    // An operator speaking hashgrid/1 is closed with a reason it can print.
    let reason = runtime.block_on(async {
        let ca = std::fs::read(coordinator.data_dir.join("cert.pem")).unwrap();
        let token = std::fs::read_to_string(coordinator.data_dir.join("admin.token")).unwrap();
        let mut endpoint = net::client_endpoint_for(&ca, coordinator.addr).unwrap();
        endpoint.set_default_client_config(net::client_config_speaking(&ca, ALPN_PREVIOUS).unwrap());
        let conn = net::connect(&endpoint, coordinator.addr).await.unwrap();
        let mut admin = net::FramedStream::open(&conn).await.unwrap();
        admin.send(&Hello::Admin { token: token.trim().into() }).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed") {
            quinn::ConnectionError::ApplicationClosed(close) => String::from_utf8_lossy(&close.reason).into_owned(),
            other => panic!("closed without a reason: {other}"),
        }
    });
    assert!(reason.contains("upgrade"), "{reason}");
    drop(stream);
}

/// The first `n` nonces of `a`'s range whose header meets its share target, as shares.
fn shares_in(a: &Assignment, n: usize) -> Vec<Share> {
    let nonces = (a.start..).take(a.count.min(u64::from(u32::MAX)) as usize);
    let hits = nonces.filter(|&nonce| a.share_target.is_met_by(&a.header.with_nonce(nonce).block_hash()));
    let share =
        |(id, nonce)| Share { id, assignment: a.id, job: a.job, version: a.header.version, time: a.header.time, nonce };
    (0..).zip(hits).take(n).map(share).collect()
}

#[test]
fn version_3_nodes_batch_their_shares_and_a_version_2_node_is_credited_one_by_one() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    op.add_account("acme", "1000T", 1);
    // A real node of this build: it speaks hashgrid/3 and sends its shares as batches.
    let mut current = site.start_node(&coordinator, "current");
    wait_for("shares of the hashgrid/3 node accepted", Duration::from_secs(30), || {
        op.nodes().into_iter().find(|n| n.name == "current" && n.accepted >= 3).map(|_| ())
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A low rate: share targets at the minimum work (4,096 expected hashes), found here.
    let (endpoint, conn, mut stream) = runtime.block_on(veteran(&coordinator, ALPN_V2, "veteran", "0.1.0", 20_000.0));
    // Three shares, one message each, answered one by one (never as a batch).
    let accepted = runtime.block_on(async {
        let mut shares = Vec::new();
        let mut accepted = 0;
        while accepted < 3 {
            // A version-2 node reads the version-2 form (`v2`: assignments without rolled bits).
            let msg: CoordinatorMessage = stream.recv::<v2::CoordinatorMessage>().await.unwrap().expect("open").into();
            match msg {
                CoordinatorMessage::Assign(a) if shares.is_empty() => {
                    shares = shares_in(&a, 3);
                    assert_eq!(shares.len(), 3, "three shares in {} nonces", a.count);
                    for share in &shares {
                        stream.send(&NodeMessage::Share(*share)).await.unwrap();
                    }
                }
                CoordinatorMessage::ShareResult { id, outcome } => {
                    assert!(matches!(outcome, ShareOutcome::Accepted { .. }), "share {id}: {outcome:?}");
                    accepted += 1;
                }
                CoordinatorMessage::ShareResults(r) => panic!("a batch of results to a hashgrid/2 node: {r:?}"),
                CoordinatorMessage::Close { reason } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        stream.send(&NodeMessage::Heartbeat { hashrate: 20_000.0, devices: Vec::new() }).await.unwrap();
        accepted
    });
    let veteran = wait_for("the hashgrid/2 node's credit in the list", Duration::from_secs(10), || {
        let out = op.run(&["node", "list", "--json"]).expect_success("node list");
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        nodes.into_iter().find(|n| n["name"] == "veteran" && n["accepted"] == accepted)
    });
    assert_eq!(veteran["protocol"], 2, "{veteran}");

    // A batch is version 3's: a version-2 connection that sends one is closed, with the reason.
    let (code, reason) = runtime.block_on(async {
        let _ = stream.send(&NodeMessage::Shares(Vec::new())).await;
        match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed") {
            quinn::ConnectionError::ApplicationClosed(close) => {
                (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned())
            }
            other => panic!("closed without a reason: {other}"),
        }
    });
    assert_eq!(code, u64::from(close_code::PROTOCOL), "{reason}");
    assert!(reason.contains("hashgrid/3"), "{reason}");
    drop((stream, endpoint));

    // Every acknowledged share of both versions is credited, once.
    current.terminate(Duration::from_secs(10));
    assert_credit_matches_receipts(&coordinator.database(), &op.settled_accounts());
    // At least the three shares of each (the departed node leaves the node list).
    let shares = op.settled_accounts()[0].shares;
    assert!(shares >= 3 + accepted, "{shares} shares credited");
}
