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
    for amount in [" 500M", "500M ", "500 M"] {
        refused(bin, &["account", "add", "a", "--standard", amount], "invalid amount");
    }
}

#[test]
fn usage_errors_are_one_line_and_help_is_whole() {
    for bin in [env!("CARGO_BIN_EXE_hashgrid"), env!("CARGO_BIN_EXE_hashgrid-coordinator")] {
        refused(bin, &["--bogus"], "unexpected argument '--bogus' found (try --help)");
        refused(bin, &[], "a subcommand is required (try --help)");
        refused(bin, &["nosuchcommand"], "unrecognized subcommand 'nosuchcommand'");
        for flag in ["--help", "--version"] {
            let out = Command::new(bin).arg(flag).output().expect("binary runs");
            assert_eq!(out.status.code(), Some(0), "{flag}");
            assert!(!out.stdout.is_empty() && out.stderr.is_empty(), "{flag}");
        }
        let help = Command::new(bin).arg("--help").output().expect("binary runs");
        assert!(String::from_utf8_lossy(&help.stdout).lines().count() > 5, "--help prints in full");
    }
    refused(env!("CARGO_BIN_EXE_hashgrid"), &["account", "add", "a"], "--standard");
}

#[test]
fn coordinator_refuses_bad_input() {
    let bin = env!("CARGO_BIN_EXE_hashgrid-coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    refused(bin, &["serve", "--data-dir", data, "--failover-after", "100ms"], "at least 500ms");
    refused(bin, &["serve", "--data-dir", data, "--policy", "greedy"], "unknown policy");
    refused(bin, &["serve", "--data-dir", data, "--failover-after", "often"], "--failover-after");
    refused(bin, &["serve", "--data-dir", data, "--failover-after", "11m"], "at most 10m");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nfailover = \"1s\"\n").unwrap();
    let config = config.to_str().expect("utf-8 path");
    refused(bin, &["serve", "--config", config], "line 2, key `failover`: unknown field");
    std::fs::write(config, "shares_per_second = \"many\"\n").unwrap();
    refused(bin, &["serve", "--config", config], "key `shares_per_second`");
    refused(bin, &["serve", "--config", "/nonexistent/hashgrid.toml"], "cannot read");
}

#[test]
fn coordinator_config_layers_file_environment_and_flags() {
    let bin = env!("CARGO_BIN_EXE_hashgrid-coordinator");
    let out = Command::new(bin).args(["config", "print-default"]).output().expect("binary runs");
    assert!(out.status.success());
    let default = String::from_utf8(out.stdout).unwrap();
    assert!(default.contains("failover_after = \"3s\""), "{default}");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, default.replace("listen = \"127.0.0.1:4433\"", "listen = \"127.0.0.1:5000\"")).unwrap();
    let check = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(["config", "check", "--config"]).arg(&config).args(flags).env_remove("HASHGRID_LISTEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("binary runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(check(&[], &[]).contains("127.0.0.1:5000"), "the file");
    assert!(check(&[("HASHGRID_LISTEN", "127.0.0.1:6000")], &[]).contains("127.0.0.1:6000"), "the environment");
    let both = check(&[("HASHGRID_LISTEN", "127.0.0.1:6000")], &["--listen", "127.0.0.1:7000"]);
    assert!(both.contains("127.0.0.1:7000"), "the flag wins: {both}");
}
