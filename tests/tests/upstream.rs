//! Accounts at pools end to end (issue 10), real processes on loopback: a coordinator, CPU
//! nodes, and test Stratum pools (tests/src/pool.rs) that verify every share with their own
//! code.
//!
//! - Two accounts at two pools (extranonce2 of 4 and of 8 bytes) under `sequential`: each
//!   pool's own count of valid shares equals the coordinator's accepted-upstream count for
//!   that account, and no share is invalid; the receipts list the same shares as accepted.
//! - The primary pool is killed: the backup takes over, the ledger shows the switch.
//! - A `clean_jobs` notify: from the first share on the new job, the pool sees no share of
//!   an old one (the coordinator revoked their ranges at once, and refuses their late shares
//!   instead of sending them).
//! - A `stratum+ssl://` pool is mined over TLS, trusting the `--pool-ca` certificate; with
//!   another CA the pool is never reached, and the account's capacity goes elsewhere.
//! - A job with Bitcoin block #1's coinbase (the recorded cpuminer session's) is searched as
//!   block #1's header.
//! - A job with Bitcoin signet's genesis coinbase (from the `bitcoin` crate) is mined: two
//!   CPU nodes find the block's nonce (52,613,770) within seconds, the pool verifies the
//!   block's header and hash, and the coordinator credits the share as accepted upstream.
//! - A wrong password shows as an authorization failure in `pool list` and `status`, is
//!   ledgered, and the account's capacity goes to the next account.

use std::time::Duration;

use hashgrid_tests::pool::{PoolConfig, TestPool, Verdict};
use hashgrid_tests::{Operator, Site, wait_for};
use serde_json::Value;
use tls_front::tls_front;

mod tls_front;

/// About 2^32 / 10^4 = 430k hashes per share: tens a second from two debug-build CPU nodes.
const DIFFICULTY: f64 = 0.0001;
/// The accounts' pool password: distinctive, so that a test can look for it where it must not be.
const PASSWORD: &str = "pw-7e3c1f9a";
/// A safety net, not a performance bound (builds sharing the cores slow the nodes).
const WAIT: Duration = Duration::from_secs(60);

fn pool(extranonce1: &[u8], extranonce2_size: usize) -> TestPool {
    TestPool::start(PoolConfig::with_password(extranonce1, extranonce2_size, DIFFICULTY, PASSWORD))
}

/// `pool list --json`.
fn pools(op: &Operator) -> Vec<Value> {
    let out = op.run(&["pool", "list", "--json"]).expect_success("pool list --json");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pool list --json is not a list ({e}): {out}"))
}

fn pool_of<'a>(list: &'a [Value], account: &str) -> &'a Value {
    list.iter().find(|p| p["account"] == account).unwrap_or_else(|| panic!("no pool for {account} in {list:?}"))
}

fn add_at_pool(op: &Operator, name: &str, standard: &str, order: i64, urls: &[String], user: &str, extra: &[&str]) {
    let order = order.to_string();
    let mut args = vec!["account", "add", name, "--standard", standard, "--order", &order];
    args.extend(["--pool", &urls[0], "--user", user, "--password", PASSWORD]);
    for backup in &urls[1..] {
        args.extend(["--backup-pool", backup]);
    }
    args.extend(extra);
    op.run(&args).expect_success(&format!("account add {name}"));
}

#[test]
fn two_accounts_at_two_pools_each_pool_counts_what_the_coordinator_accepted() {
    let site = Site::new();
    let (pool_a, pool_b) = (pool(&[0xc8, 0x58, 0xee, 0xac], 4), pool(&[0x01, 0x02], 8));
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    // alice's contract counts only what her pool accepted; bob's what was verified here.
    add_at_pool(&op, "alice", "15M", 1, &[pool_a.url()], "alice.rig", &["--standard-basis", "accepted"]);
    add_at_pool(&op, "bob", "15M", 2, &[pool_b.url()], "bob.rig", &[]);
    let _nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];

    wait_for("both accounts up to standard", WAIT, || op.status().all_up_to_standard().then_some(()));
    // Every submit answered: the coordinator's accepted count catches up with the pool's.
    let list = wait_for("every submit answered", Duration::from_secs(20), || {
        let list = pools(&op);
        let settled = [("alice", &pool_a, "alice.rig"), ("bob", &pool_b, "bob.rig")]
            .iter()
            .all(|(a, p, user)| pool_of(&list, a)["accepted_shares"].as_u64() == Some(p.counts(user).valid));
        settled.then_some(list)
    });
    for (account, pool, user, size) in [("alice", &pool_a, "alice.rig", 4), ("bob", &pool_b, "bob.rig", 8)] {
        let counts = pool.counts(user);
        let p = pool_of(&list, account);
        assert!(counts.valid > 0, "{account}: {counts:?}");
        assert_eq!(
            (counts.invalid, counts.duplicate, counts.unauthorized),
            (0, 0, 0),
            "{account}: {:?}",
            pool.shares()
        );
        assert_eq!(p["accepted_shares"].as_u64(), Some(counts.valid), "{p}");
        assert_eq!(p["extranonce2_size"], size, "{p}");
        assert_eq!(p["state"], "ready", "{p}");
        assert_eq!(p["user"], user, "{p}");
        // accepted upstream is the pool's difficulty as work of its valid shares.
        let work = (DIFFICULTY * 4_295_032_833.0) as u128;
        let accepted: u128 = p["accepted_upstream"].to_string().parse().unwrap();
        let expected = work * counts.valid as u128;
        assert!(accepted.abs_diff(expected) <= counts.valid as u128, "{accepted} vs {expected}");
    }
    // The receipts list each share's upstream outcome.
    for (account, pool, user) in [("alice", &pool_a, "alice.rig"), ("bob", &pool_b, "bob.rig")] {
        let out = op.run(&["account", "receipt", account, "--json"]).expect_success("account receipt");
        let receipt: Value = serde_json::from_str(&out).unwrap();
        let accepted = receipt["shares"].as_array().unwrap().iter().filter(|s| s["upstream"] == "accepted").count();
        assert_eq!(accepted as u64, pool.counts(user).valid, "{account}: {out}");
    }
    // The password is in the database and nowhere else: not in a reply, the ledger or a log.
    let shown = [
        op.run(&["pool", "list", "--json"]).expect_success("pool list"),
        op.run(&["pool", "list"]).expect_success("pool list"),
        op.run(&["status", "--json"]).expect_success("status"),
        op.run(&["ledger", "show", "--json"]).expect_success("ledger show"),
    ];
    assert!(shown.iter().all(|out| !out.contains(PASSWORD)), "{shown:?}");
    for log in std::fs::read_dir(site.path()).unwrap().map(|e| e.unwrap().path()) {
        if log.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(!text.contains(PASSWORD), "the password in {}", log.display());
        }
    }
    // Both pools build on the same previous block: one pool chain, with both accounts.
    let out = op.run(&["chain", "list", "--json"]).expect_success("chain list");
    let chains: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pool_chains: Vec<&Value> = chains.iter().filter(|c| c["name"].as_str().unwrap().starts_with("pool:")).collect();
    assert_eq!(pool_chains.len(), 1, "{out}");
    assert_eq!(pool_chains[0]["accounts"], serde_json::json!(["alice", "bob"]), "{out}");
    // alice's standard is on accepted work: her pool took at least the standard.
    let alice: u128 = pool_of(&list, "alice")["accepted_upstream"].to_string().parse().unwrap();
    assert!(alice >= 15_000_000, "{alice}");
}

#[test]
fn the_primary_pool_killed_the_backup_takes_over_and_the_ledger_shows_it() {
    let site = Site::new();
    let (primary, backup) = (pool(&[0xaa, 0xbb], 4), pool(&[0xcc, 0xdd], 4));
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    // extranonce.subscribe to the backup only (some pools drop connections that send it).
    let urls = [primary.url(), backup.url()];
    add_at_pool(&op, "alice", "1000T", 1, &urls, "alice.rig", &["--backup-extranonce-subscribe"]);
    let _node = site.start_node(&coordinator, "n1");
    wait_for("shares at the primary", WAIT, || (primary.counts("alice.rig").valid >= 3).then_some(()));
    assert_eq!(pool_of(&pools(&op), "alice")["extranonce_subscribe"], false);
    let primary_url = primary.url();
    drop(primary);
    wait_for("shares at the backup", WAIT, || (backup.counts("alice.rig").valid >= 3).then_some(()));
    let list = pools(&op);
    assert_eq!(pool_of(&list, "alice")["url"], backup.url().as_str());
    assert_eq!(pool_of(&list, "alice")["pool_index"], 1);
    assert_eq!(pool_of(&list, "alice")["extranonce_subscribe"], true);
    let switch = op
        .ledger(1)
        .into_iter()
        .find(|e| e.kind == "pool_switch")
        .unwrap_or_else(|| panic!("no pool_switch in the ledger"));
    assert_eq!(switch.payload["from"], primary_url.as_str());
    assert_eq!(switch.payload["to"], backup.url().as_str());
    assert_eq!(switch.payload["account"], "alice");
    assert_eq!(backup.counts("alice.rig").invalid, 0, "{:?}", backup.shares());
}

#[test]
fn a_clean_job_stops_the_old_jobs_shares_at_once() {
    let site = Site::new();
    let pool = pool(&[0xaa, 0xbb], 4);
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    add_at_pool(&op, "alice", "1000T", 1, &[pool.url()], "alice.rig", &[]);
    let _nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];
    wait_for("shares on the first job", WAIT, || (pool.counts("alice.rig").valid >= 3).then_some(()));
    let new = pool.new_job(true);
    wait_for("5 shares on the new job", WAIT, || {
        (pool.shares().iter().filter(|s| s.job_id == new).count() >= 5).then_some(())
    });
    let shares = pool.shares();
    let first_new = shares.iter().position(|s| s.job_id == new).unwrap();
    assert!(shares[first_new..].iter().all(|s| s.job_id == new), "an old job's share after the new one: {shares:?}");
    // An old job's shares submitted while the new job was on its way to the coordinator are
    // stale at the pool (how many depends on that delay, not on the coordinator); nothing else
    // is refused.
    let refused: Vec<_> = shares.iter().filter(|s| s.verdict != Verdict::Valid).collect();
    assert!(refused.iter().all(|s| s.verdict == Verdict::Stale && s.job_id != new), "{shares:?}");
}

#[test]
fn a_wrong_password_is_an_authorization_failure_and_the_capacity_moves_on() {
    let site = Site::new();
    let pool = pool(&[0xaa, 0xbb], 4);
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    let order = ["account", "add", "alice", "--standard", "1000T", "--order", "1", "--pool"];
    op.run(&[&order[..], &[&pool.url(), "--user", "alice.rig", "--password", "wrong"]].concat())
        .expect_success("account add alice");
    op.add_account("bob", "1000T", 2);
    let _node = site.start_node(&coordinator, "n1");
    let status = wait_for("bob served while alice's pool refuses her", WAIT, || {
        let status = op.status();
        (status.account("bob").delivered > 0).then_some(status)
    });
    assert_eq!(status.account("alice").delivered, 0);
    let list = pools(&op);
    let alice = pool_of(&list, "alice");
    assert_eq!(alice["state"], "unauthorized", "{alice}");
    assert!(alice["last_error"].as_str().unwrap().contains("wrong password"), "{alice}");
    assert!(!alice.to_string().contains("wrong\""), "no password shown: {alice}");
    let text = op.run(&["status"]).expect_success("status");
    assert!(text.contains("unauthorized") && text.contains("wrong password"), "{text}");
    assert!(op.ledger(1).iter().any(|e| e.kind == "pool_refused" && e.payload["account"] == "alice"));
    assert!(pool.refused_authorizations() >= 1);
}

#[test]
fn a_tls_pool_is_mined_with_the_pool_ca() {
    let site = Site::new();
    let pool = pool(&[0xaa, 0xbb], 4);
    let (_front, addr, cert_pem) = tls_front(pool.addr());
    let ca = site.path().join("pool-ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &["--pool-ca", ca.to_str().unwrap()]);
    let op = coordinator.operator();
    let url = format!("stratum+ssl://localhost:{}", addr.port());
    add_at_pool(&op, "alice", "1000T", 1, &[url], "alice.rig", &[]);
    let _node = site.start_node(&coordinator, "n1");
    wait_for("3 valid shares over TLS", WAIT, || (pool.counts("alice.rig").valid >= 3).then_some(()));
    assert_eq!(pool.counts("alice.rig").invalid, 0);
    assert_eq!(pool_of(&pools(&op), "alice")["state"], "ready");
}

#[test]
fn a_tls_pool_with_another_ca_is_never_reached() {
    let site = Site::new();
    let pool = pool(&[0xaa, 0xbb], 4);
    let (_front, addr, _) = tls_front(pool.addr());
    let other = site.path().join("other-ca.pem");
    std::fs::write(&other, rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap().cert.pem())
        .unwrap();
    let coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &["--pool-ca", other.to_str().unwrap()]);
    let op = coordinator.operator();
    let url = format!("stratum+ssl://localhost:{}", addr.port());
    add_at_pool(&op, "alice", "1000T", 1, &[url], "alice.rig", &[]);
    op.add_account("bob", "1000T", 2);
    let _node = site.start_node(&coordinator, "n1");
    wait_for("bob served instead", WAIT, || (op.status().account("bob").delivered > 0).then_some(()));
    let list = pools(&op);
    let alice = pool_of(&list, "alice");
    assert_ne!(alice["state"], "ready", "{alice}");
    assert!(alice["last_error"].as_str().is_some_and(|e| e.contains("certificate")), "{alice}");
    assert_eq!(pool.authorizations(), 0, "never reached through the front");
}

/// The last job of the recorded cpuminer session (common/tests/data/stratum/): Bitcoin block
/// #1, with extranonce1 `c858eeac` and a 2-byte extranonce2 at difficulty 1.
const BLOCK_1_NOTIFY: &str = r#"["b1", "0a8ce26f72b3f1b646a2a6c14ff763ae65831e939c085ae10019d66800000000", "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0104ffffffff0100f2052a0100000043410496b538e853519c726a2c91e61ec11600ae1390813a627c66fb8be7947be63c52da7589379515d4e0a604f8141781e62294721166bf621e73a82cbf2342", "0000", [], "00000001", "1d00ffff", "4966bc61", true]"#;

/// The pool sends a job with a real block's coinbase: the first header the coordinator gives
/// the nodes is that block's, so the block's nonce (0x9962e301) is in the search. Hashing up to
/// it takes a CPU node minutes, so the nonce itself is checked here against the header the
/// nodes were given; `core::tests_pools` feeds the found share through the core and checks
/// the submit against cpuminer's. (The next test has the nodes find a real block's nonce:
/// signet's genesis, 50 times nearer to 0.)
#[test]
fn a_pool_job_with_bitcoin_block_1s_coinbase_is_searched_as_block_1s_header() {
    let site = Site::new();
    let pool = TestPool::start(PoolConfig {
        extranonce1: vec![0xc8, 0x58, 0xee, 0xac],
        extranonce2_size: 2,
        difficulty: 1.0,
        version_mask: None,
        password: Some(PASSWORD.into()),
    });
    let job = hashgrid_tests::pool::PoolJob::from_notify_params(&serde_json::from_str(BLOCK_1_NOTIFY).unwrap());
    pool.send_job(job.expect("the recorded notify"));
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    add_at_pool(&op, "alice", "1000T", 1, &[pool.url()], "alice.rig", &[]);
    let _node = site.start_node(&coordinator, "n1");
    let assignment = wait_for("a range of the pool's job", WAIT, || {
        op.ledger(1).into_iter().find(|e| e.kind == "assignment" && e.payload["account"] == "alice")
    });
    let id = assignment.payload["job"].to_string();
    let out = op.run(&["job", "show", &id, "--json"]).expect_success("job show");
    let shown: Value = serde_json::from_str(&out).unwrap();
    let header = hashgrid_common::Header::from_hex(shown["header"].as_str().unwrap()).unwrap();
    let block_1 = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048";
    assert_eq!(header.with_nonce(0x9962_e301).block_hash().to_string(), block_1, "{out}");
    assert_eq!(pool_of(&pools(&op), "alice")["extranonce1"], "c858eeac");
}

/// The pool's difficulty for signet's genesis job: the block's hash, 0x00000008819873e9… of
/// 2^256, is a share of difficulty 0.117, so it meets 0.1; other shares come once in 430M
/// hashes, about one in eight runs before the block's nonce.
const GENESIS_DIFFICULTY: f64 = 0.1;

/// The pool sends a job with a real block's coinbase, and the nodes find its nonce: Bitcoin
/// signet's genesis block (from the `bitcoin` crate), whose nonce 52,613,770 two CPU nodes
/// reach in seconds. Its coinbase ends with the output script and a zero lock time, so the
/// pool's extranonce1 is the script's last 4 bytes and extranonce2 (4 bytes) the lock time:
/// the coordinator's first extranonce2 (slot 0, counter 0) is 00000000, so its first template
/// is the block's header, and no version rolling keeps version 1.
#[test]
fn a_pool_job_with_signets_genesis_coinbase_is_mined_to_the_blocks_nonce() {
    use bitcoin::hashes::Hash;
    use hashgrid_tests::pool::{PoolJob, derive_share};
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Signet);
    let (header, coinbase) = (genesis.header, bitcoin::consensus::serialize(&genesis.txdata[0]));
    let n = coinbase.len();
    assert_eq!(coinbase[n - 4..], [0; 4], "a zero lock time");
    let config = PoolConfig {
        extranonce1: coinbase[n - 8..n - 4].to_vec(),
        extranonce2_size: 4,
        difficulty: GENESIS_DIFFICULTY,
        version_mask: None,
        password: Some(PASSWORD.into()),
    };
    let job = PoolJob {
        id: "signet-genesis".into(),
        prev_hash: header.prev_blockhash.to_byte_array(),
        coinb1: coinbase[..n - 8].to_vec(),
        coinb2: Vec::new(),
        branch: Vec::new(),
        version: header.version.to_consensus() as u32,
        nbits: header.bits.to_consensus(),
        ntime: header.time,
        clean: true,
    };
    // The pool's own derivation, with extranonce2 00000000 and the block's nonce, is the block.
    let block_header = bitcoin::consensus::serialize(&header);
    let difficulty = GENESIS_DIFFICULTY.to_string();
    let derived =
        derive_share(&job, &config.extranonce1, &[0; 4], header.time, header.nonce, job.version, &difficulty).unwrap();
    assert_eq!(derived.coinbase, coinbase);
    assert_eq!(derived.header[..], block_header[..]);
    assert_eq!(derived.hash, header.block_hash().to_byte_array());
    assert!(derived.meets_target, "the block's hash is a share at difficulty {difficulty}");

    let site = Site::new();
    let pool = TestPool::start(config);
    pool.send_job(job);
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    add_at_pool(&op, "alice", "1000T", 1, &[pool.url()], "alice.rig", &[]);
    let started = std::time::Instant::now();
    let _nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];
    // The pool verified a share whose header is the block's: the nodes found its nonce. That
    // is 53M hashes from nonce 0: 4.5 s here (two debug-build nodes on 2 shared cores), 7 s
    // beside the other tests of this file; twice the usual net, as it is ~100 shares' work.
    wait_for("the block's nonce at the pool", 2 * WAIT, || {
        pool.shares().iter().any(|s| s.verdict == Verdict::Valid && s.header == Some(derived.header)).then_some(())
    });
    eprintln!("signet's genesis nonce found and verified by the pool in {:?}", started.elapsed());
    assert!(pool.shares().iter().all(|s| s.verdict == Verdict::Valid), "{:?}", pool.shares());
    // And the coordinator credited it, with the pool's answer.
    let hash = header.block_hash().to_string();
    let share = wait_for("the block's share in the receipt, accepted upstream", Duration::from_secs(20), || {
        let out = op.run(&["account", "receipt", "alice", "--json"]).expect_success("account receipt");
        let receipt: Value = serde_json::from_str(&out).unwrap();
        let shares = receipt["shares"].as_array().unwrap().clone();
        shares.into_iter().find(|s| s["hash"] == hash.as_str() && s["upstream"] == "accepted")
    });
    assert_eq!(share["nonce"], header.nonce, "{share}");
    assert_eq!(share["header"], hex::encode(&block_header), "{share}");
    assert!(pool_of(&pools(&op), "alice")["accepted_shares"].as_u64() >= Some(1));
}

#[test]
fn bad_pool_flags_are_one_line_errors_and_change_nothing() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    let add = |extra: &[&str]| op.run(&[&["account", "add", "alice", "--standard", "1T"][..], extra].concat());
    let line = add(&["--pool", "http://pool:1", "--user", "u"]).expect_one_line_error("an http pool");
    assert!(line.contains("bad pool URL"), "{line}");
    add(&["--pool", "stratum+tcp://pool:1"]).expect_one_line_error("a pool without a user");
    add(&["--standard-basis", "mined"]).expect_one_line_error("an unknown basis");
    add(&["--pool", "stratum+tcp://pool:1", "--user", "u", "--backup-extranonce-subscribe"])
        .expect_one_line_error("extranonce.subscribe to backups without a backup");
    let line = add(&["--standard-basis", "accepted"]).expect_one_line_error("the accepted basis without a pool");
    assert!(line.contains("needs a pool"), "{line}");
    let many: Vec<&str> = (0..8).flat_map(|_| ["--backup-pool", "stratum+tcp://pool:2"]).collect();
    let line = add(&[&["--pool", "stratum+tcp://pool:1", "--user", "u"][..], &many].concat())
        .expect_one_line_error("nine pools");
    assert!(line.contains("1 to 8 pools"), "{line}");
    assert!(op.accounts().is_empty(), "nothing was added");
    op.add_account("bob", "1T", 1);
    let line = op.run(&["account", "set-pool", "bob"]).expect_one_line_error("set-pool without a pool");
    assert!(line.contains("--pool"), "{line}");
    let line = op
        .run(&["account", "set-pool", "nobody", "--pool", "stratum+tcp://pool:1", "--user", "u"])
        .expect_one_line_error("set-pool of no account");
    assert!(line.contains("nobody"), "{line}");
    let line = op
        .run(&["account", "set-pool", "bob", "--no-pool", "--standard-basis", "accepted"])
        .expect_one_line_error("the accepted basis without a pool");
    assert!(line.contains("needs a pool"), "{line}");
    assert!(pools(&op).is_empty());
}

/// A pool that walks the handshake, then floods `mining.notify` (a new job per line, a clean
/// one every 1000th) as fast as the coordinator reads, until `stop`; the bytes it wrote.
fn flooding_pool(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (String, std::thread::JoinHandle<u64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stratum+tcp://{}", listener.local_addr().unwrap());
    let flood = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut writer = socket.try_clone().unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        // configure (refused: no rolling), subscribe, authorize.
        for result in [
            r#"null,"error":[20,"no",null]"#,
            r#"[[["mining.notify","f1"]],"f100",4],"error":null"#,
            r#"true,"error":null"#,
        ] {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let id: Value = serde_json::from_str::<Value>(&line).unwrap()["id"].clone();
            writeln!(writer, r#"{{"id":{id},"result":{result}}}"#).unwrap();
        }
        writeln!(writer, r#"{{"id":null,"method":"mining.set_difficulty","params":[0.0001]}}"#).unwrap();
        let (mut bytes, mut job) = (0u64, 0u64);
        while !stop.load(Ordering::SeqCst) {
            let clean = job % 1000 == 0;
            let notify = format!(
                r#"{{"id":null,"method":"mining.notify","params":["f{job}","{prev}","{coinb1}","{coinb2}",[],"20000000","1d00ffff","{ntime:08x}",{clean}]}}"#,
                prev = "ab".repeat(32),
                coinb1 = "01".repeat(60),
                coinb2 = "02".repeat(60),
                ntime = 1_700_000_000u32,
            );
            if writeln!(writer, "{notify}").is_err() {
                break;
            }
            bytes += notify.len() as u64 + 1;
            job += 1;
        }
        bytes
    });
    (url, flood)
}

#[test]
fn a_pool_flooding_jobs_costs_bounded_memory_and_the_other_account_keeps_earning() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let site = Site::new();
    let honest = pool(&[0x01, 0x02], 4);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (flood_url, flood) = flooding_pool(stop.clone());
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let op = coordinator.operator();
    add_at_pool(&op, "alice", "1E", 1, &[flood_url], "alice.rig", &[]);
    add_at_pool(&op, "bob", "1E", 2, &[honest.url()], "bob.rig", &[]);
    let _nodes = [site.start_node(&coordinator, "n1"), site.start_node(&coordinator, "n2")];
    wait_for("bob's first shares", WAIT, || (honest.counts("bob.rig").valid >= 1).then_some(()));
    let baseline = coordinator.rss_kib();
    // Under the flood, bob's pool keeps getting shares, and the coordinator's memory stays
    // put: the flood is read at the pace the core takes its jobs, superseded jobs dropped.
    let before = honest.counts("bob.rig").valid;
    wait_for("3 more of bob's shares under the flood", WAIT, || {
        (honest.counts("bob.rig").valid >= before + 3).then_some(())
    });
    let peak = coordinator.rss_kib();
    stop.store(true, Ordering::SeqCst);
    let flooded = flood.join().unwrap();
    eprintln!("flooded {} MB; coordinator RSS {baseline} → {peak} KiB", flooded >> 20);
    // 64 lines in flight and one waiting job per pool are a few hundred KiB; 64 MiB is a
    // margin for the allocator and the jobs the core made meanwhile, far below what the
    // flood would take if buffered.
    assert!(peak < baseline + 64 * 1024, "{baseline} → {peak} KiB");
    assert!(pool_of(&pools(&op), "alice")["state"] == "ready", "the flooding pool is still served");
}
