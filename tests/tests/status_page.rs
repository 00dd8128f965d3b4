//! The coordinator's status page (`serve --http`) as a person sees it: real processes on
//! loopback (a coordinator on `--http 127.0.0.1:0`, one CPU node, one account) and Debian's
//! headless Chromium rendering `http://ADDR/` (`--dump-dom`).
//!
//! Checks the rendered DOM shows the account with its progress toward its standard, the node
//! with its state and rate, and ledger entries, and that the page refreshes itself. Skips
//! (passing, with a SKIPPED line) only when Chromium is not installed and
//! `HASHGRID_REQUIRE_CHROMIUM=1` is not set; CI installs it and sets the variable.

use std::time::Duration;

use hashgrid_tests::{Site, chromium, chromium_dom, http_get, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn the_status_page_shows_accounts_nodes_and_the_ledger_in_a_browser() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (apt-get install chromium; HASHGRID_REQUIRE_CHROMIUM=1 makes this fail)"
        );
        return;
    };
    let site = Site::new();
    let coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &["--http", "127.0.0.1:0"]);
    let http = coordinator.http.expect("the coordinator printed its HTTP address");
    assert_ne!(http.port(), 0, "port 0 is replaced by the bound port");
    let operator = coordinator.operator();
    // About 40 s for one debug-build CPU node: still below standard when the page is read.
    operator.add_account("alice", "200M", 1);
    let _node = site.start_node(&coordinator, "rig-01");
    wait_for("the node to be active and alice to have credit", RUN_TIMEOUT, || {
        let status = operator.status();
        (status.active_nodes() == 1 && status.account("alice").delivered > 0).then_some(())
    });

    let (code, html) = http_get(http, "/");
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("<meta http-equiv=\"refresh\""), "the page refreshes itself: {html}");

    let dom = chromium_dom(&chromium, &format!("http://{http}/"));
    let row = |class: &str, name: &str| -> String {
        let start = dom
            .find(&format!("<tr class=\"{class}\" data-name=\"{name}\">"))
            .unwrap_or_else(|| panic!("no {class} row for {name} in the rendered page:\n{dom}"));
        let end = dom[start..].find("</tr>").expect("the row ends") + start;
        dom[start..end].to_string()
    };
    let alice = row("account", "alice");
    assert!(alice.contains("<progress") && alice.contains("max=\"100\""), "a progress bar: {alice}");
    assert!(alice.contains("/ 200.00 MH"), "delivered / standard: {alice}");
    let pct = alice.split("class=\"pct\">").nth(1).and_then(|s| s.split('%').next()).expect("a percentage");
    let pct: f64 = pct.parse().unwrap_or_else(|e| panic!("{pct:?}: {e}"));
    assert!(pct > 0.0 && pct <= 100.0, "progress {pct}% in {alice}");

    let rig = row("node", "rig-01");
    assert!(rig.contains("<td class=\"state active\">active</td>"), "the node's state: {rig}");
    assert!(rig.contains("H/s"), "the node's rate: {rig}");

    let entries = dom.matches("<tr class=\"entry\"").count();
    assert!((1..=20).contains(&entries), "{entries} ledger rows:\n{dom}");
    assert!(dom.contains("account_added") && dom.contains("assignment"), "ledger kinds shown:\n{dom}");
    assert!(dom.contains("<b id=\"policy\">sequential</b>"));

    let (code, _) = http_get(http, "/no-such-page");
    assert_eq!(code, 404);
}
