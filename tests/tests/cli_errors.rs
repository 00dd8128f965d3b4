//! Bad input to the binaries, as an operator would type it.
//!
//! Proves the documented failure shape: exit code 2 and exactly one line on stderr that names
//! the problem, never a panic or a backtrace, for an amount that is not a number, a header
//! that is not 80 bytes, an empty nonce range, a range running past nonce 2^32 - 1, and a GPU
//! adapter that does not exist. The last nonce itself is a valid one-nonce range.

use std::process::Command;

use hashgrid_tests::{COMMAND_TIMEOUT, Outcome, Site, binary, node_command, run_with_timeout};

/// The genesis block header, 160 hex characters in wire order.
const GENESIS: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

fn hashgrid(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(binary("hashgrid"));
    cmd.args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// `hashgrid-node search --header HEADER --start START --count COUNT --bits 1d00ffff EXTRA`.
fn search(header: &str, start: &str, count: &str, extra: &[&str]) -> Outcome {
    let mut args = vec!["search", "--header", header, "--start", start, "--count", count, "--bits", "1d00ffff"];
    args.extend_from_slice(extra);
    node_command(&args)
}

#[test]
fn a_standard_that_is_not_an_amount_is_refused() {
    let line = hashgrid(&["account", "add", "x", "--standard", "banana"]).expect_one_line_error("--standard banana");
    assert!(line.contains("banana"), "{line}");
}

#[test]
fn a_header_that_is_not_80_bytes_is_refused() {
    let line = search("00", "0", "1", &[]).expect_one_line_error("--header 00");
    assert!(line.contains("--header"), "{line}");
}

#[test]
fn an_empty_range_is_refused() {
    let line = search(GENESIS, "0", "0", &[]).expect_one_line_error("--count 0");
    assert!(line.contains("count"), "{line}");
}

#[test]
fn a_range_past_the_last_nonce_is_refused() {
    let line = search(GENESIS, "4294967295", "2", &[]).expect_one_line_error("--start 4294967295 --count 2");
    assert!(line.contains("4294967295"), "{line}");
    let line = search(GENESIS, "4000000000", "294967297", &[]).expect_one_line_error("a range one past the end");
    assert!(line.contains("4294967295"), "{line}");

    // The last nonce on its own is in range.
    let out = search(GENESIS, "4294967295", "1", &["--backend", "cpu", "--threads", "1", "--json"]);
    let json = out.expect_success("the last nonce alone");
    let report: serde_json::Value = serde_json::from_str(&json).expect("one JSON line");
    assert_eq!(report["hashes"], 1, "{report}");
}

#[test]
fn an_adapter_that_does_not_exist_is_refused() {
    let out = search(GENESIS, "0", "1", &["--backend", "gpu", "--adapter", "nosuchadapter"]);
    let line = out.expect_one_line_error("--adapter nosuchadapter");
    assert!(line.contains("adapter"), "{line}");
}

#[test]
fn a_node_config_file_with_a_wrong_key_or_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let path = config.to_str().unwrap();
    std::fs::write(&config, "coordinator = \"127.0.0.1:4433\"\nthread = 2\n").unwrap();
    let line = node_command(&["run", "--config", path]).expect_one_line_error("an unknown key");
    assert!(line.contains("line 2, key `thread`"), "{line}");
    std::fs::write(&config, "backend = \"tpu\"\n").unwrap();
    let line = node_command(&["run", "--config", path]).expect_one_line_error("a bad backend");
    assert!(line.contains("backend"), "{line}");
    // Nothing says where the coordinator is.
    std::fs::write(&config, "").unwrap();
    let line = node_command(&["run", "--config", path]).expect_one_line_error("no coordinator");
    assert!(line.contains("--coordinator"), "{line}");
}

#[test]
fn node_flags_override_the_environment_and_the_file() {
    let out = node_command(&["config", "print-default"]).expect_success("print-default");
    assert!(out.contains("backend = \"auto\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "coordinator = \"127.0.0.1:1000\"\nname = \"from-file\"\n").unwrap();
    let check = |env: Option<&str>, flags: &[&str]| {
        let mut cmd = Command::new(binary("hashgrid-node"));
        cmd.args(["config", "check", "--config"]).arg(&config).args(flags);
        cmd.env_remove("HASHGRID_NODE_NAME");
        if let Some(name) = env {
            cmd.env("HASHGRID_NODE_NAME", name);
        }
        run_with_timeout(cmd, COMMAND_TIMEOUT).expect_success("config check")
    };
    assert!(check(None, &[]).contains("from-file"));
    assert!(check(Some("from-env"), &[]).contains("from-env"));
    assert!(check(Some("from-env"), &["--name", "from-flag"]).contains("from-flag"));
    assert!(check(None, &[]).contains("127.0.0.1:1000"));
}

#[test]
fn node_usage_errors_are_one_line() {
    let line = node_command(&["run", "--threads", "many"]).expect_one_line_error("--threads many");
    assert!(line.contains("--threads") && line.ends_with("(try --help)"), "{line}");
    let line = node_command(&["--bogus"]).expect_one_line_error("--bogus");
    assert!(line.contains("--bogus"), "{line}");
    let help = node_command(&["run", "--help"]).expect_success("run --help");
    assert!(help.lines().count() > 5, "{help}");
}

/// Standards above u64::MAX are amounts like any other: `status --json` and `account receipt
/// --json` print them whole (they used to panic, exit code 101).
#[test]
fn amounts_above_u64_print_whole_in_json() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let operator = coordinator.operator();
    operator.add_account("huge", "20E", 1);
    let status = operator.run(&["status", "--json"]).expect_success("status --json");
    assert!(status.contains("\"standard\":20000000000000000000"), "{status}");
    assert_eq!(operator.status().account("huge").standard, 20_000_000_000_000_000_000);
    let receipt = operator.run(&["account", "receipt", "huge", "--json"]).expect_success("account receipt --json");
    assert!(receipt.contains("\"standard\":20000000000000000000"), "{receipt}");
    serde_json::from_str::<serde_json::Value>(&receipt).expect("JSON");
    let ledger = operator.run(&["ledger", "show", "--json"]).expect_success("ledger show --json");
    assert!(ledger.contains("20000000000000000000"), "{ledger}");
    let text = operator.run(&["status"]).expect_success("status");
    assert!(text.contains("20.00 E"), "{text}");
}
