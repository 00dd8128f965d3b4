//! Crash recovery, with real processes on loopback: a coordinator serving two CPU nodes and
//! one account is killed with SIGKILL mid-run and restarted on the same data dir and port.
//!
//! Proves that acknowledged credit is durable (what `status` showed before the kill is still
//! there after it), that nodes reconnect on their own without being restarted, and that the
//! run then completes, with the credit still exactly the sum of the share receipts (no share
//! re-sent across the reconnect is credited twice).

use std::time::{Duration, Instant};

use hashgrid_common::net::IDLE_TIMEOUT;
use hashgrid_node::service::BACKOFF_MAX;
use hashgrid_tests::{Site, assert_credit_matches_receipts, wait_for};

/// About ten seconds of hashing for two debug-build CPU nodes, so the kill lands mid-run.
const STANDARD: &str = "60M";

/// Shares credited before the kill.
const ACKNOWLEDGED_SHARES: u64 = 5;

/// A node notices a dead coordinator when its connection goes idle (the restarted process
/// cannot reset connections it never knew), then retries with a backoff of at most
/// `BACKOFF_MAX`; a few seconds on top for a loaded machine.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(IDLE_TIMEOUT.as_secs() + BACKOFF_MAX.as_secs() + 5);

#[test]
fn credit_survives_kill_9_and_nodes_reconnect_on_their_own() {
    let site = Site::new();
    let mut coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let operator = coordinator.operator();
    operator.add_account("acme", STANDARD, 1);
    let mut nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];

    // A few shares in: their credit has been acknowledged (status answers after the commit).
    let before = wait_for("the first credited shares", Duration::from_secs(30), || {
        let status = operator.status();
        let acme = status.account("acme").clone();
        assert!(!acme.up_to_standard, "the run ended before the kill; raise STANDARD: {acme:?}");
        (acme.shares >= ACKNOWLEDGED_SHARES).then_some(acme)
    });

    let addr = coordinator.addr;
    coordinator.kill();
    let killed = Instant::now();
    coordinator = site.start_coordinator(&addr.to_string(), "sequential");
    assert_eq!(coordinator.addr, addr, "restarted on another address");

    let after = operator.status().account("acme").clone();
    eprintln!("before the kill: {before:?}\nafter the restart: {after:?}");
    assert!(
        after.delivered >= before.delivered && after.shares >= before.shares,
        "acknowledged credit lost: {before:?} before the kill, {after:?} after"
    );

    let rejoined = wait_for("both nodes to reconnect", RECONNECT_TIMEOUT, || {
        (operator.status().active_nodes() == 2).then(|| killed.elapsed())
    });
    eprintln!("both nodes back {rejoined:?} after the kill");

    wait_for("acme to reach its standard", Duration::from_secs(40), || {
        operator.status().account("acme").up_to_standard.then_some(())
    });
    eprintln!("up to standard {:?} after the kill", killed.elapsed());

    for node in &mut nodes {
        assert!(node.is_running(), "a node gave up instead of reconnecting:\n{}", node.log_tail(20));
    }
    drop(nodes);
    let accounts = operator.settled_accounts();
    assert_credit_matches_receipts(&coordinator.database(), &accounts);
}
