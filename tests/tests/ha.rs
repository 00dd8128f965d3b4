//! A hot-standby pair on one PostgreSQL database, real processes on loopback.
//!
//! - `kill -9` of the active coordinator, `ROUNDS` times in a row: the standby takes the lease
//!   at once (the dead process's session, and its advisory lock, die with it) and serves; the
//!   killed one comes back as the new standby. The nodes and the CLI are given both
//!   addresses, the second as `localhost:PORT` (a host name, resolved at each attempt), and
//!   follow the active one: a node notices the dead one within `net::IDLE_TIMEOUT`. Printed:
//!   the median and maximum time from the kill to the first share acknowledged by the new
//!   active one, and each start's time from taking the lease to listening (from the logs).
//!   Every credit acknowledged before a kill is still there after it, and
//!   `ledger verify` passes at the end.
//! - SIGSTOP of the active one: the standby takes over once the lease expires; after SIGCONT
//!   the paused one is fenced: it commits nothing (the database is unchanged) and exits.
//! - The database lost while running (every session of the coordinator terminated with
//!   `pg_terminate_backend`, twice): with `--on-store-loss retry` the coordinator holds
//!   the acknowledgements, reconnects, takes its lease's lock again, and acknowledges again;
//!   nothing acknowledged is lost. With the default (`exit`) it stops with exit code 2.
//! - A longer outage (the database refusing sessions for seconds) with `retry`: the shares
//!   taken from nodes and awaiting their commit never pass `max_unacknowledged_shares` (the
//!   node's connection is not read meanwhile), the metrics still answer, and once the database
//!   is back the held shares are committed and acknowledged; none acknowledged is lost.
//! - An account at a (test) pool: after the kill, the new active coordinator opens the pool
//!   session and its submits reach the pool.
//!
//! Without PostgreSQL installed these print "SKIPPED" and pass, unless
//! `HASHGRID_REQUIRE_POSTGRES=1` (CI).

use std::time::{Duration, Instant};

use hashgrid_tests::postgres::{Cluster, TestStore, available};
use hashgrid_tests::{Coordinator, Operator, Site, assert_credit_matches_receipts, http_get, metric, wait_for};

/// Kills of the active coordinator in a row.
const ROUNDS: usize = 20;

/// A standby's lease time in these tests (`--lease-ttl`).
const LEASE_TTL: &str = "1s";

/// Generous safety net for one takeover on a loaded machine (not a performance figure).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

fn site_or_skip() -> Option<Site> {
    if !available() {
        eprintln!("SKIPPED: PostgreSQL is not installed");
        return None;
    }
    Some(Site::with_store(TestStore::Postgres(Cluster::shared().create_database())))
}

fn flags() -> [&'static str; 4] {
    ["--failover-after", "3s", "--lease-ttl", LEASE_TTL]
}

/// Waits for a share acknowledged after `since` shares: the account's count as `status` shows
/// it (it answers after the commit).
fn shares(coordinator: &Coordinator) -> u64 {
    coordinator.operator().status().account("acme").shares
}

/// The close code and reason a coordinator answers a new connection with (a standby refuses);
/// `None` when nobody answers (not started yet).
fn refusal(to: &Operator) -> Option<(u64, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ca = std::fs::read(&to.ca).unwrap();
        let endpoint = hashgrid_common::net::client_endpoint(&ca).unwrap();
        let conn = hashgrid_common::net::connect(&endpoint, to.addr).await.ok()?;
        match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => {
                Some((close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned()))
            }
            other => panic!("not an application close: {other}"),
        }
    })
}

/// A UDP port free on loopback now.
fn free_port() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    socket.local_addr().expect("its address").to_string()
}

/// Each start's time from taking the lease to listening, as the coordinators logged it
/// (`since_lease_ms` on their "coordinator listening" line), and how many took over with the
/// warm snapshot as it was.
fn lease_to_listening(site: &Site) -> (Vec<u64>, usize) {
    let (mut found, mut warm) = (Vec::new(), 0);
    for entry in std::fs::read_dir(site.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("coordinator.") && name.ends_with(".log")) {
            continue;
        }
        // Without the terminal's colour codes, if the log has them.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                plain.push(c);
            }
        }
        warm += plain.lines().filter(|l| l.contains("took over with the warm snapshot")).count();
        for line in plain.lines().filter(|l| l.contains("coordinator listening")) {
            let value =
                line.split("since_lease_ms=").nth(1).and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next());
            found.extend(value.and_then(|v| v.parse::<u64>().ok()));
        }
    }
    (found, warm)
}

#[test]
fn kill_9_of_the_active_coordinator_hands_over_to_the_standby_every_time() {
    let Some(site) = site_or_skip() else { return };
    let ports = [free_port(), free_port()];
    let mut active = site.start_coordinator_with(&ports[0], "sequential", &flags());
    active.operator().add_account("acme", "1000P", 1);
    let mut standby = site.spawn_coordinator(&ports[1], "sequential", &flags());
    // Two nodes and the CLI given both addresses, one by host name: they follow the active one.
    // (`--coordinator` adds to the list: the harness names the active one first.)
    let by_name = |addr: &str| addr.replace("127.0.0.1:", "localhost:");
    let other_by_name = by_name(&ports[1]);
    let other = ["--coordinator", &other_by_name];
    // Each node counts the acknowledgements it received on its `/metrics`, across every takeover.
    let nodes: Vec<_> = (1..=2).map(|n| site.start_node_http(&active, &format!("n{n}"), &other)).collect();
    let via_standby = Operator { addr: ports[1].parse().unwrap(), ..active.operator() };
    // Until its first look at the lease, a standby names no active coordinator.
    let hint = format!("{}{}", hashgrid_common::message::close_code::STANDBY_REASON, ports[0]);
    wait_for("the standby to name the active coordinator", TAKEOVER_TIMEOUT, || {
        refusal(&via_standby).is_some_and(|(_, reason)| reason == hint).then_some(())
    });
    let active_by_name = by_name(&ports[0]);
    let out = via_standby.run(&["--coordinator", &active_by_name, "status"]).expect_success("status to the pair");
    // The standby (first in the list) names the active one by IP: that is where the answer
    // comes from. (The nodes reach the standby by name when the active one dies.)
    assert!(out.starts_with(&format!("active coordinator: {}\n", ports[0])), "{out}");
    // Given only the standby, the CLI goes where its refusal points.
    via_standby.run(&["account", "list"]).expect_success("account list via the standby's hint");
    let (code, _) = refusal(&via_standby).expect("the standby's answer");
    assert_eq!(code, u64::from(hashgrid_common::message::close_code::STANDBY));

    let mut acknowledged = wait_for("the first credited share", TAKEOVER_TIMEOUT, || {
        let n = shares(&active);
        (n > 0).then_some(n)
    });
    let mut to_first_ack = Vec::new();
    for round in 1..=ROUNDS {
        assert!(standby.is_running(), "the standby exited");
        let port = active.addr.to_string();
        active.kill();
        let killed = Instant::now();
        let next = standby.listening(TAKEOVER_TIMEOUT);
        let listening = killed.elapsed();
        let after_takeover = shares(&next);
        assert!(
            after_takeover >= acknowledged,
            "round {round}: {acknowledged} shares acknowledged, {after_takeover} kept"
        );
        standby = site.spawn_coordinator(&port, "sequential", &flags());
        wait_for("a share acknowledged by the new active coordinator", TAKEOVER_TIMEOUT, || {
            (shares(&next) > after_takeover).then_some(())
        });
        let first_ack = killed.elapsed();
        eprintln!("round {round}: listening {listening:?}, first acknowledged share {first_ack:?} after the kill");
        to_first_ack.push(first_ack);
        acknowledged = shares(&next);
        active = next;
    }
    to_first_ack.sort();
    eprintln!(
        "kill -9 to the first acknowledged share on the new active, {ROUNDS} rounds: median {:?}, max {:?}",
        to_first_ack[ROUNDS / 2],
        to_first_ack[ROUNDS - 1]
    );
    let (mut since_lease, warm) = lease_to_listening(&site);
    since_lease.sort();
    eprintln!("takeovers with the warm snapshot: {warm} (the others loaded it again)");
    assert!(since_lease.len() > ROUNDS, "each takeover logs its time: {since_lease:?}");
    eprintln!(
        "lease taken to listening, {} starts: median {} ms, max {} ms",
        since_lease.len(),
        since_lease[since_lease.len() / 2],
        since_lease[since_lease.len() - 1]
    );
    let op = active.operator();
    wait_for("both nodes on the last active coordinator", TAKEOVER_TIMEOUT, || {
        (op.status().active_nodes() == 2).then_some(())
    });
    // Counted against the nodes' own acknowledgements: every share a node saw accepted, under any
    // of the coordinators, is in the store (read after the nodes' counts, so it can only be more).
    let acked: Vec<(String, f64)> = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, http))| {
            let (code, text) = http_get(*http, "/metrics");
            assert_eq!(code, 200, "{text}");
            let accepted = metric(&text, "hashgrid_rig_shares_accepted_total").expect("the node's accepted count");
            (format!("n{}", i + 1), accepted)
        })
        .collect();
    drop(nodes);
    let db = active.database();
    for (node, accepted) in &acked {
        let stored = db.rows(&format!("SELECT CAST(count(*) AS TEXT) FROM shares WHERE node = '{node}'"))[0][0].clone();
        let stored: f64 = stored.expect("a count").parse().expect("a number");
        assert!(*accepted > 0.0, "{node} had a share acknowledged");
        assert!(stored >= *accepted, "{node}: {accepted} shares acknowledged to it, {stored} stored");
    }
    let accounts = op.settled_accounts();
    assert!(accounts[0].shares >= acknowledged, "acknowledged credit lost: {acknowledged} vs {accounts:?}");
    assert_credit_matches_receipts(&active.database(), &accounts);
    let out = op.run(&["ledger", "verify"]).expect_success("ledger verify");
    assert!(out.starts_with("ledger ok"), "{out}");
    // Every takeover is in the ledger with its epoch: the first start, then one per kill.
    let epochs: Vec<_> =
        op.ledger(1).into_iter().filter(|e| e.kind == "takeover").map(|e| e.payload["epoch"].clone()).collect();
    assert_eq!(epochs, (1..=ROUNDS as i64 + 1).map(serde_json::Value::from).collect::<Vec<_>>());
    drop(standby);
}

#[test]
fn a_paused_active_coordinator_is_fenced_after_the_takeover() {
    let Some(site) = site_or_skip() else { return };
    let mut paused = site.start_coordinator_with("127.0.0.1:0", "sequential", &flags());
    paused.operator().add_account("acme", "1000P", 1);
    let standby = site.spawn_coordinator("127.0.0.1:0", "sequential", &flags());
    let node = site.start_node(&paused, "n1");
    wait_for("the first credited share", TAKEOVER_TIMEOUT, || (shares(&paused) > 0).then_some(()));

    paused.signal("STOP");
    let active = standby.listening(TAKEOVER_TIMEOUT);
    let epoch = |db: &hashgrid_tests::Database| db.rows("SELECT CAST(epoch AS TEXT) FROM lease")[0][0].clone();
    let db = active.database();
    let taken_over = epoch(&db);
    let count = "SELECT CAST(count(*) AS TEXT) FROM shares";
    let (shares_then, ledger_then) = (db.rows(count), db.rows("SELECT CAST(count(*) AS TEXT) FROM ledger"));

    // Awake again, the paused one has a node's shares and heartbeats to commit: each fails.
    paused.signal("CONT");
    let (code, log) = paused.exited(TAKEOVER_TIMEOUT).expect("the fenced coordinator stops");
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("fenced"), "{log}");
    drop(node);
    assert_eq!(db.rows(count), shares_then, "the fenced coordinator committed shares");
    assert_eq!(db.rows("SELECT CAST(count(*) AS TEXT) FROM ledger"), ledger_then, "it committed ledger entries");
    assert_eq!(epoch(&db), taken_over);
    let out = active.operator().run(&["ledger", "verify"]).expect_success("ledger verify");
    assert!(out.starts_with("ledger ok"), "{out}");
}

/// Ends every session on the coordinator's database but the one asking (the coordinator's store,
/// lease and reader sessions): what a database restart or failover does to a client.
fn terminate_sessions(db: &hashgrid_tests::Database) -> usize {
    let ended = db.rows(
        "SELECT CAST(pg_terminate_backend(pid) AS TEXT) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    ended.len()
}

#[test]
fn a_database_lost_while_running_holds_the_acknowledgements_then_they_resume() {
    let Some(site) = site_or_skip() else { return };
    let retry = [&flags()[..], &["--on-store-loss", "retry"]].concat();
    let mut coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &retry);
    let op = coordinator.operator();
    op.add_account("acme", "1000P", 1);
    let node = site.start_node(&coordinator, "n1");
    let db = coordinator.database();
    let mut acknowledged = wait_for("the first credited share", TAKEOVER_TIMEOUT, || {
        let n = shares(&coordinator);
        (n > 0).then_some(n)
    });
    for round in 1..=2 {
        // The store's session at least (the lease's is replaced only at its next renewal).
        assert!(terminate_sessions(&db) >= 1, "round {round}: no session of the coordinator");
        // Counted after the loss (a status reply waits for the commits queued before it): a
        // higher count later can only come from a commit on a new session.
        let after_loss = shares(&coordinator);
        assert!(after_loss >= acknowledged, "round {round}: {acknowledged} acknowledged, {after_loss} kept");
        acknowledged = wait_for("a share acknowledged after the database came back", TAKEOVER_TIMEOUT, || {
            let n = shares(&coordinator);
            (n > after_loss).then_some(n)
        });
        assert!(coordinator.is_running(), "round {round}: the coordinator exited instead of retrying");
    }
    // The lease's lock is held again (the lease's session is replaced at its next renewal,
    // within lease_ttl / 3: a standby started before then would rightly take over): a standby
    // started now stays one, and names this one.
    wait_for("the lease's lock held again", TAKEOVER_TIMEOUT, || {
        let held = db.rows(
            "SELECT CAST(count(*) AS TEXT) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
        );
        (held[0][0].as_deref() == Some("1")).then_some(())
    });
    let port = free_port();
    let standby = site.spawn_coordinator(&port, "sequential", &flags());
    let via_standby = Operator { addr: port.parse().unwrap(), ..op.clone() };
    let hint = format!("{}{}", hashgrid_common::message::close_code::STANDBY_REASON, coordinator.addr);
    wait_for("the standby to name the active coordinator", TAKEOVER_TIMEOUT, || {
        refusal(&via_standby).is_some_and(|(_, reason)| reason == hint).then_some(())
    });
    drop(node);
    let accounts = op.settled_accounts();
    assert!(accounts[0].shares >= acknowledged, "acknowledged credit lost: {acknowledged} vs {accounts:?}");
    assert_credit_matches_receipts(&db, &accounts);
    let out = op.run(&["ledger", "verify"]).expect_success("ledger verify");
    assert!(out.starts_with("ledger ok"), "{out}");
    drop(standby);
    drop(coordinator);

    // The default: the coordinator stops, exit code 2, with the reason.
    let mut exits = site.start_coordinator_with("127.0.0.1:0", "sequential", &flags());
    let node = site.start_node(&exits, "n2");
    let before = shares(&exits);
    wait_for("a share credited", TAKEOVER_TIMEOUT, || (shares(&exits) > before).then_some(()));
    terminate_sessions(&exits.database());
    let (code, log) = exits.exited(TAKEOVER_TIMEOUT).expect("the coordinator stops");
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("store"), "{log}");
    drop(node);
    exits.kill();
}

#[test]
fn while_the_database_is_lost_the_shares_awaiting_their_commit_stay_bounded_then_are_acknowledged() {
    let Some(site) = site_or_skip() else { return };
    // A small bound and a fast share rate: the node finds about 40 shares a second, so the
    // bound is reached within a second or two of the outage.
    const CAP: u64 = 30;
    let config = site.path().join("backlog.toml");
    std::fs::write(&config, format!("max_unacknowledged_shares = {CAP}\nshares_per_second = 40.0\n")).unwrap();
    // failover_after longer than the outage: the node's heartbeats are not read while its
    // connection waits for room, and this test is about the bound, not a failover.
    let flags = ["--failover-after", "60s", "--on-store-loss", "retry", "--http", "127.0.0.1:0"];
    let flags = [&flags[..], &["--config", config.to_str().unwrap()]].concat();
    let mut coordinator = site.start_coordinator_with("127.0.0.1:0", "sequential", &flags);
    let op = coordinator.operator();
    op.add_account("acme", "1000P", 1);
    let (node, node_http) = site.start_node_http(&coordinator, "n1", &[]);
    let http = coordinator.http.expect("--http");
    let before = wait_for("the first credited share", TAKEOVER_TIMEOUT, || {
        let n = shares(&coordinator);
        (n > 0).then_some(n)
    });

    // The outage: the database refuses new sessions and the coordinator's are ended.
    let hashgrid_tests::Database::Postgres(url) = coordinator.database() else { unreachable!("a PostgreSQL site") };
    let name = url.rsplit('/').next().unwrap().to_string();
    let mut admin = Cluster::shared().connect("postgres").unwrap();
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).unwrap();
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&name]).unwrap();
    let unacknowledged = || {
        let (status, page) = hashgrid_tests::http_get(http, "/metrics");
        assert_eq!(status, 200, "the metrics answer while the database is lost: {page}");
        metric(&page, "hashgrid_shares_unacknowledged").expect("the backlog gauge") as u64
    };
    wait_for("the shares awaiting their commit to reach the bound", TAKEOVER_TIMEOUT, || {
        (unacknowledged() >= CAP).then_some(())
    });
    // An observation window, not a timing bound: in 3 s the node finds about 120 more shares,
    // four times the bound; without the bound the gauge passes it within the window.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        let held = unacknowledged();
        assert!(held <= CAP, "{held} shares awaiting their commit, over the bound of {CAP}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(coordinator.is_running(), "the coordinator exited instead of retrying");

    // The database is back: the held shares are committed, then acknowledged, and intake goes
    // on (the node's count is of acknowledgements it received).
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).unwrap();
    let node_acks = || {
        let (_, page) = hashgrid_tests::http_get(node_http, "/metrics");
        metric(&page, "hashgrid_rig_shares_accepted_total").map_or(0, |v| v as u64)
    };
    let resumed = wait_for("acknowledgements past the bound after the outage", TAKEOVER_TIMEOUT, || {
        let n = shares(&coordinator);
        (n > before + CAP).then_some(n)
    });
    wait_for("the node to receive acknowledgements again", TAKEOVER_TIMEOUT, || (node_acks() > before).then_some(()));
    let acknowledged = node_acks();
    drop(node);
    let accounts = op.settled_accounts();
    assert!(
        accounts[0].shares >= resumed.max(acknowledged),
        "acknowledged credit lost: {acknowledged} vs {accounts:?}"
    );
    assert_credit_matches_receipts(&coordinator.database(), &accounts);
    let out = op.run(&["ledger", "verify"]).expect_success("ledger verify");
    assert!(out.starts_with("ledger ok"), "{out}");
}

#[test]
fn the_new_active_coordinator_reopens_the_pool_session_and_submits() {
    use hashgrid_tests::pool::{PoolConfig, TestPool};
    let Some(site) = site_or_skip() else { return };
    // About 430k hashes per share: several a second from a debug-build CPU node.
    let pool = TestPool::start(PoolConfig::with_password(&[0xc8, 0x58], 4, 0.0001, "pw"));
    let ports = [free_port(), free_port()];
    let mut active = site.start_coordinator_with(&ports[0], "sequential", &flags());
    let op = active.operator();
    let args = ["account", "add", "acme", "--standard", "15M", "--pool", &pool.url(), "--user", "acme.rig"];
    op.run(&[&args[..], &["--password", "pw"]].concat()).expect_success("account add at the pool");
    let standby = site.spawn_coordinator(&ports[1], "sequential", &flags());
    let node = site.start_node_with(&active, "n1", &["--coordinator", &ports[1]]);
    let before = wait_for("shares submitted to the pool", TAKEOVER_TIMEOUT, || {
        let valid = pool.counts("acme.rig").valid;
        (valid > 0).then_some(valid)
    });

    active.kill();
    let next = standby.listening(TAKEOVER_TIMEOUT);
    // The pool session comes from the new active one: its submits are new valid shares.
    wait_for("a share submitted by the new active coordinator", TAKEOVER_TIMEOUT, || {
        (pool.counts("acme.rig").valid > before).then_some(())
    });
    let out = next.operator().run(&["pool", "list"]).expect_success("pool list");
    assert!(out.contains("ready"), "{out}");
    let counts = pool.counts("acme.rig");
    assert_eq!((counts.invalid, counts.unauthorized), (0, 0), "{counts:?}");
    drop(node);
}
