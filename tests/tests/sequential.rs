//! The `sequential` policy end to end, with real processes on loopback: a coordinator, two
//! CPU nodes and three accounts (orders 1, 2, 3).
//!
//! Proves that all capacity serves the first account below its standard: no later account
//! ever has credit while an earlier one is below standard (checked on every status snapshot),
//! so the accounts reach their standards in order. And that credit is exact: afterwards each
//! account's delivered total in the database is the sum of the work of its accepted shares
//! (the receipts in `shares`), and `hashgrid account list --json` reports the same totals.

use std::time::Duration;

use hashgrid_tests::{Site, Status, Timeline, assert_credit_matches_receipts, wait_for};

/// (name, standard, order): about 90M hashes in all, a few seconds for two CPU nodes.
const ACCOUNTS: [(&str, &str, i64); 3] = [("a1", "20M", 1), ("a2", "30M", 2), ("a3", "40M", 3)];

/// A safety net, not a performance bound: the run takes about 10 s on an idle two-core
/// machine (two debug-build CPU nodes do about 10 MH/s together), and builds sharing the
/// cores can slow the nodes severalfold.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Under `sequential`, an account below its standard holds every later account at zero.
fn assert_served_in_order(status: &Status) {
    let mut accounts = status.accounts.clone();
    accounts.sort_by_key(|a| a.order);
    for (k, earlier) in accounts.iter().enumerate().filter(|(_, a)| !a.up_to_standard) {
        for later in &accounts[k + 1..] {
            assert_eq!(
                later.delivered, 0,
                "{} has credit while {} (order {}) is below its standard: {status:#?}",
                later.name, earlier.name, earlier.order
            );
        }
    }
}

#[test]
fn accounts_reach_their_standards_in_order_and_credit_matches_the_receipts() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let operator = coordinator.operator();
    for (name, standard, order) in ACCOUNTS {
        operator.add_account(name, standard, order);
    }
    let nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];

    let mut timeline = Timeline::new();
    let mut a3_when_a1_finished = None;
    let last = wait_for("every account to reach its standard", RUN_TIMEOUT, || {
        let status = operator.status();
        assert_eq!(status.policy, "sequential");
        assert_served_in_order(&status);
        timeline.observe(&status);
        if status.account("a1").up_to_standard && a3_when_a1_finished.is_none() {
            a3_when_a1_finished = Some(status.account("a3").delivered);
        }
        status.all_up_to_standard().then_some(status)
    });
    let (a1, a2, a3) = (timeline.finished("a1"), timeline.finished("a2"), timeline.finished("a3"));
    eprintln!("up to standard after {a1:?}, {a2:?}, {a3:?}; first credit after {:?}", timeline.first_credit);
    assert!(a1 <= a2 && a2 <= a3, "standards reached out of order: {timeline:#?}");
    assert_eq!(a3_when_a1_finished, Some(0), "a3 had credit the moment a1 reached its standard");
    assert_eq!(last.active_nodes(), 2, "both nodes served the whole run: {last:#?}");

    // Stop the nodes, so no share is still on its way, then audit the credit.
    drop(nodes);
    let accounts = operator.settled_accounts();
    for a in &accounts {
        assert!(a.delivered >= a.standard && a.up_to_standard, "{a:?}");
    }
    assert_eq!(operator.status().accounts, accounts, "status and account list disagree");
    assert_credit_matches_receipts(&coordinator.database(), &accounts);
}
