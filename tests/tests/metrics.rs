//! Prometheus metrics over HTTP, end to end: a coordinator (`serve --http 127.0.0.1:0`) and a
//! CPU node (`run --http 127.0.0.1:0`) as real processes on loopback, one account; both
//! `/metrics` texts are scraped and a few series are parsed and checked against the farm.

use std::time::Duration;

use hashgrid_tests::{Site, http_get, metric, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn coordinator_and_node_metrics_describe_the_farm() {
    let site = Site::new();
    let coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &["--http", "127.0.0.1:0"]);
    let http = coordinator.http.expect("the coordinator printed its HTTP address");
    let operator = coordinator.operator();
    operator.add_account("alice", "1T", 1);
    let (_node, node_http) = site.start_node_http(&coordinator, "rig-01", &[]);
    assert_ne!(node_http.port(), 0);

    let scrape = |addr| {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        assert!(text.ends_with("# EOF\n"), "a complete exposition: {text}");
        text
    };
    let text = wait_for("shares accepted and acknowledged", RUN_TIMEOUT, || {
        let text = scrape(http);
        (metric(&text, "hashgrid_shares_accepted_total")? >= 3.0).then_some(text)
    });
    let alice = "{account=\"alice\",chain=\"local\"}";
    assert_eq!(metric(&text, &format!("hashgrid_account_standard_hashes{alice}")), Some(1e12), "{text}");
    assert!(metric(&text, &format!("hashgrid_account_delivered_hashes{alice}")).is_some_and(|d| d > 0.0), "{text}");
    assert_eq!(metric(&text, &format!("hashgrid_account_up_to_standard{alice}")), Some(0.0));
    assert_eq!(metric(&text, "hashgrid_node_state{node=\"rig-01\",state=\"active\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "hashgrid_node_state{node=\"rig-01\",state=\"failed\"}"), Some(0.0));
    assert!(metric(&text, "hashgrid_node_announced_hashrate{node=\"rig-01\"}").is_some_and(|r| r > 0.0));
    assert!(metric(&text, "hashgrid_node_hashrate{node=\"rig-01\"}").is_some());
    assert_eq!(metric(&text, "hashgrid_shares_rejected_total{reason=\"above_target\"}"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "hashgrid_failovers_total{reason=\"connection_lost\"}"), Some(0.0));
    assert!(metric(&text, "hashgrid_ranges_issued_total").is_some_and(|n| n >= 1.0));
    assert_eq!(metric(&text, "hashgrid_policy{policy=\"sequential\"}"), Some(1.0));
    // account_added, the policy, assignments: committed before the scrape's read.
    let ledger = metric(&text, "hashgrid_ledger_entries").expect("the ledger's length");
    assert!(ledger >= 2.0, "{text}");
    // Every acknowledged share was timed; none took a minute.
    let timed = metric(&text, "hashgrid_share_intake_seconds_count").expect("the intake histogram");
    assert!(timed >= 3.0, "{text}");
    assert_eq!(metric(&text, "hashgrid_share_intake_seconds_bucket{le=\"+Inf\"}"), Some(timed));
    assert!(metric(&text, "hashgrid_share_intake_seconds_sum").is_some_and(|s| s > 0.0 && s < 60.0 * timed));

    let rig = wait_for("the node's own count of accepted shares", RUN_TIMEOUT, || {
        let text = scrape(node_http);
        (metric(&text, "hashgrid_rig_shares_accepted_total")? >= 1.0).then_some(text)
    });
    assert_eq!(metric(&rig, "hashgrid_rig_connected"), Some(1.0), "{rig}");
    assert_eq!(metric(&rig, "hashgrid_rig_connections_total"), Some(1.0));
    assert_eq!(metric(&rig, "hashgrid_rig_shares_rejected_total{reason=\"above_target\"}"), Some(0.0), "{rig}");
    let device = rig
        .lines()
        .find(|l| l.starts_with("hashgrid_rig_device_hashrate{device=\"0\",kind=\"cpu\""))
        .unwrap_or_else(|| panic!("no CPU device rate in {rig}"));
    let rate: f64 = device.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "{device}");
    assert!(metric(&rig, "hashgrid_rig_hashrate").is_some_and(|r| r > 0.0), "{rig}");

    let (code, _) = http_get(node_http, "/");
    assert_eq!(code, 404, "the node serves metrics only");
}
