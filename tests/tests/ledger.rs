//! The assignment ledger on a real run: `ledger verify` passes, and after one row is altered
//! directly in the database it fails, naming that entry.

use std::time::Duration;

use hashgrid_tests::{Site, wait_for};

#[test]
fn ledger_verify_passes_on_a_real_run_and_names_an_altered_row() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    op.add_account("acme", "5M", 1);
    let node = site.start_node(&coordinator, "n1");
    wait_for("acme to reach its standard", Duration::from_secs(60), || {
        op.status().account("acme").up_to_standard.then_some(())
    });
    drop(node);

    let out = op.run(&["ledger", "verify"]).expect_success("ledger verify");
    assert!(out.starts_with("ledger ok"), "{out}");
    let entries = op.ledger(1);
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["account_added", "rebalance", "assignment", "standard_reached", "switch"] {
        assert!(kinds.contains(&kind), "no {kind} entry in {kinds:?}");
    }
    let out = op.run(&["ledger", "show", "--account", "acme", "--json"]).expect_success("ledger show --account");
    let mine: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(mine.iter().all(|e| e["payload"]["account"] == "acme" || e["payload"]["from"] == "acme"));

    // Someone rewrites entry 3 in the database.
    let changed = coordinator.database().execute("UPDATE ledger SET payload = payload || ' ' WHERE seq = 3");
    assert_eq!(changed, 1);
    let out = op.run(&["ledger", "verify"]);
    assert_eq!(out.code, Some(1), "verify must fail: {out:?}");
    assert!(out.stderr.contains("entry 3"), "{}", out.stderr);
}
