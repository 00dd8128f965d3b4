//! The operator CLI's live views, with real processes on loopback: `status --watch` redraws in
//! place, and `node drain --wait` returns once the node has finished its ranges.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use hashgrid_tests::{Site, binary, wait_for};

#[test]
fn status_watch_redraws_in_place_and_drain_waits() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    op.add_account("acme", "1000T", 1);
    let _node = site.start_node(&coordinator, "n1");
    wait_for("n1 active", Duration::from_secs(30), || (op.status().active_nodes() == 1).then_some(()));

    let mut watch = Command::new(binary("hashgrid"))
        .arg("--coordinator")
        .arg(op.addr.to_string())
        .arg("--ca")
        .arg(&op.ca)
        .arg("--token-file")
        .arg(&op.token_file)
        .args(["status", "--watch", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hashgrid status --watch");
    std::thread::sleep(Duration::from_millis(1500));
    watch.kill().unwrap();
    watch.wait().unwrap();
    let mut out = String::new();
    watch.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let redraws = out.matches("\x1b[H\x1b[2J").count();
    assert!(redraws >= 3, "{redraws} redraws in 1.5 s at 200 ms: {out:?}");
    assert!(out.contains("acme") && out.contains("n1"), "{out}");

    let out = op.run(&["node", "drain", "n1", "--wait"]);
    let stdout = out.expect_success("node drain --wait");
    assert!(stdout.contains("ok"), "{stdout}");
    let node = op.nodes().into_iter().find(|n| n.name == "n1").expect("n1 listed");
    assert_eq!(node.state, "drained");
}
