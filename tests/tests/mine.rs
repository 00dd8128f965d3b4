//! `hashgrid-node mine` against the test Stratum pool (tests/src/pool.rs), real processes on
//! loopback: the CPU backend on one thread finds shares the pool's own verifier accepts, the
//! miner's summary at exit matches what the pool counted, a `clean_jobs` notify moves the
//! miner to the new job at once, a dropped connection is made again, and a wrong password, an unreachable pool and a bad URL are
//! one-line errors with exit code 2. Over TLS (`stratum+ssl://`, a rustls front before the
//! pool), the miner trusts the `--pool-ca` certificate and refuses any other.

use std::process::Command;
use std::time::Duration;

use hashgrid_tests::pool::{PoolConfig, TestPool, Verdict};
use hashgrid_tests::{Process, binary, node_command, wait_for};
use tls_front::tls_front;

mod tls_front;

/// About one share per 2^22 hashes: a few a second on one CPU thread.
const DIFFICULTY: f64 = 0.001;
const WAIT: Duration = Duration::from_secs(20);

fn pool() -> TestPool {
    TestPool::start(PoolConfig { password: Some("pw".into()), difficulty: DIFFICULTY, ..PoolConfig::default() })
}

/// `hashgrid-node mine` on one CPU thread as `alice`; its stdout goes to `stdout` in `dir`.
fn miner(pool: &TestPool, dir: &tempfile::TempDir) -> Process {
    miner_on(&pool.url(), &[], dir)
}

/// `hashgrid-node mine --pool URL EXTRA` as `miner` runs it.
fn miner_on(url: &str, extra: &[&str], dir: &tempfile::TempDir) -> Process {
    let mut cmd = Command::new(binary("hashgrid-node"));
    cmd.args(["mine", "--pool", url, "--user", "alice", "--password", "pw"])
        .args(extra)
        .args(["--backend", "cpu", "--threads", "1"])
        .env("RUST_LOG", "info")
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap());
    Process::spawn("hashgrid-node mine", cmd, &dir.path().join("mine.log"))
}

fn valid_for(pool: &TestPool, job: &str) -> usize {
    pool.shares().iter().filter(|s| s.job_id == job && s.verdict == Verdict::Valid).count()
}

#[test]
fn every_share_is_valid_and_the_summary_matches_the_pool() {
    let pool = pool();
    let dir = tempfile::tempdir().unwrap();
    let mut mine = miner(&pool, &dir);
    wait_for("5 valid shares", WAIT, || (pool.counts("alice").valid >= 5).then_some(()));
    assert_eq!(mine.terminate(Duration::from_secs(10)), Some(0), "{}", mine.log_tail(20));
    let counts = pool.counts("alice");
    assert_eq!((counts.invalid, counts.duplicate, counts.unauthorized), (0, 0, 0), "{:?}", pool.shares());
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let number = |label: &str| -> u64 {
        let at = stdout.find(label).unwrap_or_else(|| panic!("no {label:?} in {stdout:?}"));
        stdout[..at].split([' ', ',', ':']).rfind(|w| !w.is_empty()).unwrap().parse().unwrap()
    };
    // Every share the pool took is accepted in the summary, or was still unanswered at exit.
    let (accepted, rejected, unanswered) = (number(" accepted"), number(" rejected"), number(" unanswered"));
    assert!(accepted >= 5 && accepted <= counts.valid, "{stdout} vs {counts:?}");
    assert_eq!(accepted + unanswered, counts.valid + counts.stale, "{stdout} vs {counts:?}");
    assert_eq!(rejected, counts.stale, "{stdout} vs {counts:?}");
}

#[test]
fn a_clean_job_moves_the_miner_to_it_at_once() {
    let pool = pool();
    let dir = tempfile::tempdir().unwrap();
    let _mine = miner(&pool, &dir);
    wait_for("a valid share on the first job", WAIT, || (valid_for(&pool, "j0") >= 1).then_some(()));
    let new = pool.new_job(true);
    wait_for("3 valid shares on the new job", WAIT, || (valid_for(&pool, &new) >= 3).then_some(()));
    let shares = pool.shares();
    let first_new = shares.iter().position(|s| s.job_id == new).unwrap();
    assert!(shares[first_new..].iter().all(|s| s.job_id == new), "{shares:?}");
    assert!(shares.iter().all(|s| matches!(s.verdict, Verdict::Valid | Verdict::Stale)), "{shares:?}");
}

#[test]
fn a_dropped_connection_is_made_again_and_mining_goes_on() {
    let pool = pool();
    let dir = tempfile::tempdir().unwrap();
    let _mine = miner(&pool, &dir);
    wait_for("2 valid shares", WAIT, || (pool.counts("alice").valid >= 2).then_some(()));
    pool.disconnect_all();
    let before = pool.counts("alice").valid;
    wait_for("a second connection", WAIT, || (pool.authorizations() >= 2).then_some(()));
    wait_for("2 more valid shares", WAIT, || (pool.counts("alice").valid >= before + 2).then_some(()));
    assert_eq!(pool.counts("alice").invalid, 0, "{:?}", pool.shares());
}

#[test]
fn a_wrong_password_is_a_one_line_error() {
    let pool = pool();
    let out = node_command(&["mine", "--pool", &pool.url(), "--user", "alice", "--password", "nope", "--threads", "1"]);
    let line = out.expect_one_line_error("mine with a wrong password");
    assert!(line.contains("refused user \"alice\"") && line.contains("wrong password"), "{line}");
    assert_eq!(pool.refused_authorizations(), 1);
    assert_eq!(pool.counts("alice").valid, 0);
}

#[test]
fn an_unreachable_pool_or_a_bad_url_is_a_one_line_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("stratum+tcp://{closed}");
    let line = node_command(&["mine", "--pool", &url, "--user", "u", "--backend", "cpu", "--threads", "1"])
        .expect_one_line_error("mine on a closed port");
    assert!(line.contains("cannot reach the pool"), "{line}");
    let line =
        node_command(&["mine", "--pool", "http://pool:1", "--user", "u"]).expect_one_line_error("mine on an http URL");
    assert!(line.contains("bad pool URL"), "{line}");
}

#[test]
fn a_tls_pool_is_mined_with_its_ca_and_refused_with_another() {
    let pool = pool();
    let (_front, addr, cert_pem) = tls_front(pool.addr());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pool-ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let url = format!("stratum+ssl://localhost:{}", addr.port());
    let mut mine = miner_on(&url, &["--pool-ca", ca.to_str().unwrap()], &dir);
    wait_for("3 valid shares over TLS", WAIT, || (pool.counts("alice").valid >= 3).then_some(()));
    assert_eq!(mine.terminate(Duration::from_secs(10)), Some(0), "{}", mine.log_tail(20));
    assert_eq!(pool.counts("alice").invalid, 0);

    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap().cert.pem())
        .unwrap();
    let out = node_command(&["mine", "--pool", &url, "--user", "bob", "--pool-ca", other.to_str().unwrap()]);
    let line = out.expect_one_line_error("mine with another CA");
    assert!(line.contains("cannot reach the pool") && line.contains("certificate"), "{line}");
    assert_eq!(pool.counts("bob"), Default::default());
}
