//! The PostgreSQL store against the SQLite one: the same ops give the same snapshot, the same
//! ledger (and verdict), receipts and job history; a batch with a duplicate share writes
//! nothing on either; an unreachable database at start is one line and exit 2; with
//! `OnStoreLoss::Retry`, a batch whose session was lost is written once: again when its commit
//! did not happen, not again when it did (the lease row's commit count says which); with
//! `sslmode=verify-full` every session (store, lease, reader) is TLS, and a server whose
//! certificate the given CA did not sign is refused in one line, exit 2.
//!
//! Runs on a throwaway cluster (`hashgrid_tests::postgres`); without PostgreSQL installed it
//! prints "SKIPPED" and passes, unless `HASHGRID_REQUIRE_POSTGRES=1` (CI).

use hashgrid_common::message::{ChainParams, JobHit, PageRequest, Policy};
use hashgrid_common::{CompactTarget, Hash256, Header, Target};
use hashgrid_coordinator::core::ledger::LedgerRecord;
use hashgrid_coordinator::core::{StoreOp, Work};
use hashgrid_coordinator::service::store::backend::{Durable, OnStoreLoss, Records, StoreLocation};
use hashgrid_coordinator::service::store::pg::dialect;
use hashgrid_coordinator::service::store::{MIGRATIONS, StoreError};
use hashgrid_tests::postgres::{Cluster, available};
use hashgrid_tests::{Outcome, binary, run_with_timeout};

const T0: u64 = 1_700_000_000_000;

fn postgres_or_skip() -> Option<&'static Cluster> {
    if !available() {
        eprintln!("SKIPPED: PostgreSQL is not installed");
        return None;
    }
    Some(Cluster::shared())
}

fn header(seed: u8, nonce: u32) -> Header {
    Header {
        version: 0x2000_0000,
        prev_blockhash: Hash256([seed; 32]),
        merkle_root: Hash256::sha256d(&[seed]),
        time: 1_700_000_000,
        bits: CompactTarget(0x1d00ffff),
        nonce,
    }
}

fn credit(account: &str, job: u64, header: Header, at_ms: u64) -> StoreOp {
    let share_target = Target::from_expected_hashes(1 << 20);
    StoreOp::Credit {
        account: account.into(),
        work: Work(share_target.work()),
        node: "rig-1".into(),
        job,
        header,
        share_target,
        at_ms,
    }
}

/// One of every kind of op, in two batches.
fn history() -> [Vec<StoreOp>; 2] {
    let submitted = header(2, 0);
    let added = |name: &str, standard: u128, period_ms, order| StoreOp::AccountAdded {
        name: name.into(),
        standard: Work(standard),
        period_ms,
        order,
        period_start_ms: T0,
        chain: "local".into(),
    };
    let mut first = vec![
        added("bob", u128::MAX - 3, None, 2),
        added("alice", 5_000, Some(60_000), 1),
        added("Zed", 7, None, 1),
        StoreOp::PolicySet(Policy::Proportional),
        StoreOp::JobSubmitted {
            job: 7,
            account: "bob".into(),
            header: submitted,
            target: Target::from_expected_hashes(4),
        },
        StoreOp::TemplateMade { job: 3, account: "alice".into(), header: header(1, 0), target: Target::MAX },
        StoreOp::ChainAdded {
            params: ChainParams {
                name: "alt".into(),
                tx_per_template: 10,
                bit_rate: 2000,
                difficulty: 2.5,
                weight: 3.0,
            },
            at_ms: T0,
        },
        StoreOp::NodeChain { node: "rig-1".into(), chain: Some("alt".into()), at_ms: T0 },
        StoreOp::NodeChain { node: "gone".into(), chain: Some("alt".into()), at_ms: T0 },
        StoreOp::NodeChain { node: "gone".into(), chain: None, at_ms: T0 + 1 },
    ];
    for (id, job, start) in [(8u64, 3u64, 0u32), (9, 7, 0), (10, 7, 1 << 20)] {
        first.push(StoreOp::AssignmentIssued {
            assignment: id,
            node: "rig-1".into(),
            account: "alice".into(),
            job,
            version: 0x2000_0000,
            start,
            count: 1 << 20,
            at_ms: T0,
        });
        first.push(StoreOp::Ledger {
            at_ms: T0 + id,
            record: LedgerRecord::PeriodRenewed { account: "alice".into(), period_start_ms: id },
        });
    }
    first.extend((0..3).map(|n| credit("alice", 3, header(1, n), T0 + 10)));
    first.push(StoreOp::PeriodRenewed { account: "alice".into(), period_start_ms: T0 + 60_000 });
    first.extend((3..7).map(|n| credit("alice", 3, header(1, n), T0 + 60_010)));
    let mut second: Vec<StoreOp> = (0..5).map(|n| credit("bob", 7, header(2, n), T0 + 20)).collect();
    second.push(StoreOp::JobHit {
        job: 7,
        hit: JobHit { version: submitted.version, time: submitted.time, nonce: 4, hash: header(2, 4).block_hash() },
    });
    // Two of bob's shares went to a pool: one answered, one not (receipts name the outcomes).
    for (n, answered) in [(1, true), (3, false)] {
        let hash = header(2, n).block_hash();
        second.push(StoreOp::UpstreamSubmitted {
            account: "bob".into(),
            hash,
            url: "stratum+tcp://pool:3333".into(),
            pool_job: "j1".into(),
            work: Work(1 << 20),
            at_ms: T0 + 30,
        });
        if answered {
            second.push(StoreOp::UpstreamOutcome { hash, outcome: "accepted".into(), at_ms: T0 + 31 });
        }
    }
    second.push(StoreOp::RangeFate { assignment: 9, fate: "done", handed: 0 });
    second.push(StoreOp::RangeFate { assignment: 9, fate: "abandoned: node failed", handed: 5 });
    second.push(StoreOp::BlockFound {
        chain: "local".into(),
        height: 1,
        hash: header(1, 2).block_hash(),
        account: "alice".into(),
    });
    second.push(StoreOp::BlockFound {
        chain: "alt".into(),
        height: 4,
        hash: header(1, 3).block_hash(),
        account: "bob".into(),
    });
    second.push(StoreOp::Ledger {
        at_ms: T0 + 99,
        record: LedgerRecord::PeriodRenewed { account: "bob".into(), period_start_ms: 99 },
    });
    [first, second]
}

/// Everything the two stores answer, as text to compare.
fn everything(store: &mut dyn Durable, reader: &mut dyn Records) -> Vec<String> {
    let page = PageRequest { after: 0, limit: 0 };
    let mut out = vec![format!("{:?}", store.load().unwrap())];
    out.push(format!("{:?}", reader.ledger(1, None, 100).unwrap()));
    out.push(format!("{:?}", reader.ledger(2, Some("bob"), 100).unwrap()));
    out.push(format!("{:?}", reader.last_seq().unwrap()));
    out.push(format!("{:?}", reader.verify_ledger().unwrap()));
    for account in ["alice", "bob", "nobody"] {
        out.push(format!("{:?}", reader.receipt(account, None, page).unwrap()));
    }
    out.push(format!("{:?}", reader.receipt("alice", None, PageRequest { after: 0, limit: 2 }).unwrap()));
    for job in [3, 7, 99] {
        out.push(format!("{:?}", reader.job(job).unwrap()));
    }
    out
}

#[test]
fn the_postgres_store_answers_what_the_sqlite_store_answers() {
    let Some(cluster) = postgres_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut answers = Vec::new();
    for location in [StoreLocation::Sqlite, StoreLocation::Postgres(cluster.create_database())] {
        let mut store = location.open(dir.path()).unwrap();
        for batch in history() {
            store.apply(&batch).unwrap();
        }
        let mut reader = location.reader(dir.path()).unwrap();
        let before = everything(store.as_mut(), reader.as_mut());
        assert_eq!(store.close_open_ranges().unwrap(), 2, "{location}: ranges 8 and 10 were in flight");
        // Reopened (migrations do not run twice), the store answers the same.
        drop(store);
        let mut store = location.open(dir.path()).unwrap();
        let after = everything(store.as_mut(), reader.as_mut());
        assert_ne!(before, after, "closing the open ranges shows in job history");
        answers.push((location, after));
    }
    let (sqlite, postgres) = (&answers[0].1, &answers[1].1);
    for (s, p) in sqlite.iter().zip(postgres) {
        assert_eq!(s, p);
    }
    assert!(sqlite[4].contains("first_bad: None"), "{}", sqlite[4]);
    let bob = &sqlite[6];
    assert!(bob.contains("Some(\"accepted\")") && bob.contains("Some(\"pending\")"), "{bob}");
}

#[test]
fn a_batch_with_a_duplicate_share_writes_nothing_on_postgres() {
    let Some(cluster) = postgres_or_skip() else { return };
    let location = StoreLocation::Postgres(cluster.create_database());
    let dir = tempfile::tempdir().unwrap();
    let mut store = location.open(dir.path()).unwrap();
    store.apply(&history()[0]).unwrap();
    let before = format!("{:?}", store.load().unwrap());
    let again =
        [credit("bob", 7, header(2, 0), T0), credit("bob", 7, header(2, 1), T0), credit("bob", 7, header(2, 0), T0)];
    let err = store.apply(&again).unwrap_err();
    assert!(matches!(err, StoreError::DuplicateShare { job: 7, nonce: 0, .. }), "{err}");
    assert_eq!(format!("{:?}", store.load().unwrap()), before);
    let err = store.apply(&[credit("nobody", 1, header(3, 0), T0)]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownAccount(ref n) if n == "nobody"), "{err}");
    assert_eq!(format!("{:?}", store.load().unwrap()), before);
}

/// Schema step 7 (shares without `version`, `time`, `nonce`, `hash`) on PostgreSQL: a
/// version-6 database keeps every share, its receipt row and the seen set `load` reads from
/// it, and takes new credits after it.
#[test]
fn a_version_6_database_keeps_its_shares_and_receipts_on_postgres() {
    let Some(cluster) = postgres_or_skip() else { return };
    let url = cluster.create_database();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let steps: Vec<String> = MIGRATIONS[..6].iter().map(|step| dialect(step)).collect();
    client.batch_execute(&steps.join(";\n")).unwrap();
    client
        .batch_execute("CREATE TABLE schema_version (version BIGINT NOT NULL); INSERT INTO schema_version VALUES (6);")
        .unwrap();
    let share_target = Target::from_expected_hashes(1 << 20);
    let work = share_target.work();
    let old: Vec<Header> = (0..3).map(|nonce| header(4, nonce)).collect();
    client
        .execute(
            "INSERT INTO accounts (name, standard, period_ms, sort_order, delivered, period_start_ms, shares, chain)
             VALUES ('alice', '1000000000000', NULL, 0, $1, $2, 3, 'local')",
            &[&(3 * work).to_string(), &(T0 as i64)],
        )
        .unwrap();
    client
        .execute(
            "INSERT INTO jobs (id, account, header, target) VALUES (3, 'alice', $1, $2)",
            &[&&header(4, 0).to_bytes()[..], &&Target::MAX.to_be_bytes()[..]],
        )
        .unwrap();
    for h in &old {
        client
            .execute(
                "INSERT INTO shares (account, period_start_ms, node, job, version, time, nonce, header, hash,
                                     share_target, work, at_ms)
                 VALUES ('alice', $1, 'rig-1', 3, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &(T0 as i64),
                    &i64::from(h.version),
                    &i64::from(h.time),
                    &i64::from(h.nonce),
                    &&h.to_bytes()[..],
                    &&h.block_hash().0[..],
                    &&share_target.to_be_bytes()[..],
                    &work.to_string(),
                    &(T0 as i64 + 5),
                ],
            )
            .unwrap();
    }

    let location = StoreLocation::Postgres(url);
    let dir = tempfile::tempdir().unwrap();
    let mut store = location.open(dir.path()).unwrap();
    let snapshot = store.load().unwrap();
    let seen: Vec<_> = old.iter().map(|h| (h.version, h.time, h.nonce)).collect();
    assert_eq!(snapshot.jobs[0].shares, seen, "the job's seen set, read from the headers");
    store.apply(&[credit("alice", 3, header(4, 3), T0 + 6)]).unwrap();
    let mut reader = location.reader(dir.path()).unwrap();
    let receipt = reader.receipt("alice", None, PageRequest { after: 0, limit: 0 }).unwrap().unwrap();
    let got: Vec<_> = receipt.shares.iter().map(|s| (s.header, s.share_target, s.work, s.at_ms)).collect();
    let mut want: Vec<_> = old.iter().map(|&h| (h, share_target, work, T0 + 5)).collect();
    want.push((header(4, 3), share_target, work, T0 + 6));
    assert_eq!(got, want, "the old shares, in order, then the new one");
    assert_eq!(receipt.delivered, 4 * work);
    let columns: Vec<String> = client
        .query("SELECT column_name::TEXT FROM information_schema.columns WHERE table_name = 'shares' ORDER BY ordinal_position", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["id", "account", "period_start_ms", "node", "job", "header", "share_target", "work", "at_ms"]);
}

#[test]
fn an_unreachable_database_at_start_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let mut cmd = std::process::Command::new(binary("hashgrid-coordinator"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--store", "postgres://hg:secret@127.0.0.1:1/hashgrid"])
        .env("RUST_LOG", "warn");
    let out: Outcome = run_with_timeout(cmd, std::time::Duration::from_secs(20));
    let line = out.expect_one_line_error("serve with an unreachable database");
    assert!(line.contains("cannot connect to the database postgres://hg:***@127.0.0.1:1/hashgrid"), "{line}");
    assert!(!line.contains("secret"), "{line}");
    let mut cmd = std::process::Command::new(binary("hashgrid-coordinator"));
    cmd.args(["serve", "--store", "mysql://db"]).arg("--data-dir").arg(dir.path());
    let line = run_with_timeout(cmd, std::time::Duration::from_secs(20)).expect_one_line_error("a bad --store");
    assert!(line.contains("--store") && line.contains("postgres://"), "{line}");
}

#[test]
fn a_lost_session_writes_the_batch_once_whether_or_not_its_commit_happened() {
    let Some(cluster) = postgres_or_skip() else { return };
    let url = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Postgres(url.clone());
    let ttl = std::time::Duration::from_secs(10);
    let mut store = location.open_active(dir.path(), "127.0.0.1:1", ttl, OnStoreLoss::Retry, |_| {}).unwrap();
    store.apply(&history()[0]).unwrap();
    let mut side = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let count =
        |side: &mut postgres::Client| -> i64 { side.query_one("SELECT count(*) FROM shares", &[]).unwrap().get(0) };
    // Every session of the store (and of its lease) ends, as in a database restart.
    let terminate = |side: &mut postgres::Client| {
        side.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    };
    let before = count(&mut side);

    // The commit did not happen: the batch is written on the new session.
    terminate(&mut side);
    store.apply(&[credit("bob", 7, header(9, 1), T0)]).unwrap();
    assert_eq!(count(&mut side), before + 1);

    // The commit happened but its answer was lost (the lease row counted it): not written again.
    side.execute("UPDATE lease SET commits = commits + 1", &[]).unwrap();
    terminate(&mut side);
    store.apply(&[credit("bob", 7, header(9, 2), T0)]).unwrap();
    assert_eq!(count(&mut side), before + 1, "a batch whose commit had happened was written again");

    // And on from there: the next batches count on.
    store.apply(&[credit("bob", 7, header(9, 3), T0)]).unwrap();
    assert_eq!(count(&mut side), before + 2);

    // A takeover while the session was lost: fenced, nothing written.
    side.execute("UPDATE lease SET epoch = epoch + 1", &[]).unwrap();
    terminate(&mut side);
    let err = store.apply(&[credit("bob", 7, header(9, 4), T0)]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert_eq!(count(&mut side), before + 2);
}

/// The epoch a standby took over at, and the snapshot it loaded first (`Debug` text).
type TakenOver = (Option<i64>, String);

/// A standby coordinator's store at 127.0.0.1:2, waiting on its own thread for the lease: it
/// tells the active holder's address on `waiting` at each look, and once it has taken over
/// gives its epoch and the snapshot it loaded first, as the service does.
fn spawn_standby(
    location: &StoreLocation,
    dir: &std::path::Path,
    ttl: std::time::Duration,
) -> (std::thread::JoinHandle<Result<TakenOver, StoreError>>, std::sync::mpsc::Receiver<String>) {
    let (told, waiting) = std::sync::mpsc::channel();
    let (location, dir) = (location.clone(), dir.to_path_buf());
    let standby = std::thread::spawn(move || {
        let mut store = location.open_active(&dir, "127.0.0.1:2", ttl, OnStoreLoss::Exit, |held| {
            let _ = told.send(held.address.clone());
        })?;
        Ok((store.epoch(), format!("{:?}", store.load()?)))
    });
    (standby, waiting)
}

#[test]
fn a_warm_standby_takes_over_with_the_snapshot_a_cold_load_reads() {
    let Some(cluster) = postgres_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ttl = std::time::Duration::from_secs(10);
    for writes_after_warm in [true, false] {
        let location = StoreLocation::Postgres(cluster.create_database());
        let mut active = location.open_active(dir.path(), "127.0.0.1:1", ttl, OnStoreLoss::Exit, |_| {}).unwrap();
        active.apply(&history()[0]).unwrap();
        let (standby, waiting) = spawn_standby(&location, dir.path(), ttl);
        // The standby loads its snapshot before its first look at the lease.
        assert_eq!(waiting.recv().unwrap(), "127.0.0.1:1");
        let warm_loaded = format!("{:?}", location.open(dir.path()).unwrap().load().unwrap());
        if writes_after_warm {
            // Within the standby's refresh interval (`WARM_EVERY`, 1 s): these writes are
            // usually not in its snapshot yet, and must be in what it serves.
            active.apply(&history()[1]).unwrap();
            active.close_open_ranges().unwrap();
            active.close_pending_submits().unwrap();
        }
        // The active one stops: its lease's session ends and the standby takes over.
        drop(active);
        let (epoch, taken_over) = standby.join().unwrap().unwrap();
        assert_eq!(epoch, Some(2));
        let cold = format!("{:?}", location.open(dir.path()).unwrap().load().unwrap());
        assert_eq!(taken_over, cold, "writes after the warm load: {writes_after_warm}");
        assert_eq!(cold != warm_loaded, writes_after_warm, "the writes show in the snapshot");
    }
}

#[test]
fn a_standby_whose_sessions_are_lost_reconnects_and_takes_over() {
    let Some(cluster) = postgres_or_skip() else { return };
    let url = cluster.create_database();
    let location = StoreLocation::Postgres(url.clone());
    let dir = tempfile::tempdir().unwrap();
    let ttl = std::time::Duration::from_secs(10);
    let mut active = location.open_active(dir.path(), "127.0.0.1:1", ttl, OnStoreLoss::Exit, |_| {}).unwrap();
    active.apply(&history()[0]).unwrap();
    let (standby, waiting) = spawn_standby(&location, dir.path(), ttl);
    assert_eq!(waiting.recv().unwrap(), "127.0.0.1:1");
    // Every session ends (a database restart): the standby's store and lease sessions too.
    let mut side = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    side.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
        &[],
    )
    .unwrap();
    active.apply(&history()[1]).unwrap_err();
    drop(active);
    let (epoch, taken_over) = standby.join().unwrap().expect("the standby reconnects and takes over");
    assert_eq!(epoch, Some(2));
    assert_eq!(taken_over, format!("{:?}", location.open(dir.path()).unwrap().load().unwrap()));
}

#[test]
fn sslmode_verify_full_puts_every_session_on_tls_and_refuses_a_server_it_cannot_verify() {
    let Some(cluster) = postgres_or_skip() else { return };
    let url = cluster.create_database();
    let ca = cluster.ca_pem();
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let dir = tempfile::tempdir().unwrap();
    let location: StoreLocation = tls_url.parse().unwrap();
    let ttl = std::time::Duration::from_secs(10);
    let mut store = location.open_active(dir.path(), "127.0.0.1:1", ttl, OnStoreLoss::Exit, |_| {}).unwrap();
    store.apply(&history()[0]).unwrap();
    let mut reader = location.reader(dir.path()).unwrap();
    assert!(reader.verify_ledger().unwrap().first_bad.is_none());
    // The store's, the lease's and the reader's sessions, seen from a plain one.
    let mut side = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let sessions = |side: &mut postgres::Client, tls: bool| -> i64 {
        side.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND s.ssl = $1 AND a.pid <> pg_backend_pid()",
            &[&tls],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!((sessions(&mut side, true), sessions(&mut side, false)), (3, 0));
    drop((store, reader));

    // A CA that did not sign the server's certificate: one line, exit 2, no password shown.
    let other_ca = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let wrong =
        format!("{}?sslmode=verify-full&sslrootcert={}", url.replace("postgres@", "postgres:pw@"), other_ca.display());
    let mut cmd = std::process::Command::new(binary("hashgrid-coordinator"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--store", &wrong]).arg("--data-dir").arg(dir.path());
    cmd.env("RUST_LOG", "warn");
    let line = run_with_timeout(cmd, std::time::Duration::from_secs(20)).expect_one_line_error("an unverified server");
    assert!(line.contains("cannot connect to the database") && line.contains("certificate"), "{line}");
    assert!(!line.contains(":pw@"), "{line}");
    // A missing root file is named.
    let missing = format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let mut cmd = std::process::Command::new(binary("hashgrid-coordinator"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--store", &missing]).arg("--data-dir").arg(dir.path());
    cmd.env("RUST_LOG", "warn");
    let line = run_with_timeout(cmd, std::time::Duration::from_secs(20)).expect_one_line_error("a missing sslrootcert");
    assert!(line.contains("sslrootcert /nonexistent/ca.pem"), "{line}");
}
