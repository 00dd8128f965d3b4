//! The coordinator's binaries refuse bad input with one line on stderr and exit code 2, before
//! touching the network. (Being integration tests of this package, these also make
//! `cargo test --workspace` build `hashgrid` and `hashgrid-coordinator` for the cross-process
//! tests in tests/.)

use std::process::Command;

fn refused(bin: &str, args: &[&str], needle: &str) {
    let out = Command::new(bin).args(args).env("RUST_LOG", "off").output().expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn hashgrid_refuses_bad_input() {
    let bin = env!("CARGO_BIN_EXE_hashgrid");
    refused(bin, &["policy", "set", "fastest"], "unknown policy");
    refused(bin, &["account", "add", "a", "--standard", "1.5"], "invalid amount");
    refused(bin, &["account", "add", "a", "--standard", "1G", "--period", "soon"], "--period");
    refused(bin, &["status"], "--coordinator");
    refused(bin, &["job", "submit", "--account", "a", "--header", "00", "--bits", "1d00ffff"], "--header");
    refused(bin, &["demo", "--policy", "random"], "unknown policy");
}

#[test]
fn coordinator_refuses_bad_input() {
    let bin = env!("CARGO_BIN_EXE_hashgrid-coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    refused(bin, &["serve", "--data-dir", data, "--failover-after", "100ms"], "at least 500ms");
    refused(bin, &["serve", "--data-dir", data, "--policy", "greedy"], "unknown policy");
    refused(bin, &["serve", "--data-dir", data, "--failover-after", "often"], "--failover-after");
}
