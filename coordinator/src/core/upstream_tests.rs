//! Virtual-time tests of an account's upstream: a scripted pool answers each link, time is a
//! number, and the failover rules are checked at their edges.

use hashgrid_common::header::Hash256;
use hashgrid_common::stratum::{ConfigureResult, Id, Message, Method, Notify, Response, RpcError, SubscribeResult};
use hashgrid_common::{CompactTarget, Target};
use serde_json::json;

use super::*;

const PRIMARY: &str = "stratum+tcp://primary.example:3333";
const BACKUP: &str = "stratum+tcp://backup.example:3333";

fn config() -> UpstreamConfig {
    UpstreamConfig { silence_ms: 90_000, retry_ms: 5_000, failback_after_ms: 120_000, ..UpstreamConfig::default() }
}

fn upstream(urls: &[&str]) -> Upstream {
    upstream_with(urls, config())
}

fn upstream_with(urls: &[&str], config: UpstreamConfig) -> Upstream {
    let settings = PoolSettings {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        user: "alice.rig".into(),
        password: "x".into(),
        extranonce_subscribe: false,
        backup_extranonce_subscribe: false,
    };
    Upstream::new(settings, config).unwrap()
}

/// A pool's side of the script: the requests of `conn` among `outs`.
fn requests(outs: &[UpstreamOut], conn: u64) -> Vec<(u64, Method)> {
    outs.iter()
        .filter_map(|o| match o {
            UpstreamOut::Send { conn: c, line } if *c == conn => match Message::from_line(line.as_bytes()).unwrap() {
                Message::Call { id, method } => Some((id.as_u64().unwrap(), method)),
                Message::Response(_) => None,
            },
            _ => None,
        })
        .collect()
}

fn connects(outs: &[UpstreamOut]) -> Vec<(u64, String)> {
    outs.iter()
        .filter_map(|o| match o {
            UpstreamOut::Connect { conn, url } => Some((*conn, url.clone())),
            _ => None,
        })
        .collect()
}

fn reply(up: &mut Upstream, now: u64, conn: u64, id: u64, result: serde_json::Value) -> Vec<UpstreamOut> {
    up.handle_line(now, conn, Message::Response(Response::ok(Id::from(id), result)).to_line().as_bytes());
    up.drain()
}

fn notify(id: &str, clean: bool) -> Notify {
    Notify {
        job_id: id.into(),
        prev_blockhash: Hash256([7; 32]),
        coinb1: vec![1, 2, 3],
        coinb2: vec![4, 5],
        merkle_branch: vec![],
        version: 0x2000_0000,
        nbits: CompactTarget(0x1d00ffff),
        ntime: 5000,
        clean_jobs: clean,
    }
}

/// Connects `conn` and walks it through configure, subscribe and authorize (`authorized`: the
/// pool's answer), then sends one job when authorized. The outputs of the last step.
fn handshake(up: &mut Upstream, now: u64, conn: u64, authorized: bool) -> Vec<UpstreamOut> {
    up.handle_connected(now, conn);
    let outs = up.drain();
    let [(id, Method::Configure(_))] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    let outs = reply(up, now, conn, id, ConfigureResult { version_rolling_mask: Some(0x1fff_e000) }.to_result());
    let [(id, Method::Subscribe { .. })] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    let sub = SubscribeResult {
        subscriptions: vec![("mining.notify".into(), format!("s{conn}"))],
        extranonce1: vec![0xaa, conn as u8],
        extranonce2_size: 4,
    };
    let outs = reply(up, now, conn, id, sub.to_result());
    let [(id, Method::Authorize { .. })] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    if !authorized {
        let error = RpcError::new(24, "bad password");
        up.handle_line(now, conn, Message::Response(Response::err(Id::from(id), error)).to_line().as_bytes());
        return up.drain();
    }
    let mut outs = reply(up, now, conn, id, json!(true));
    let call = Message::Call { id: Id::Null, method: Method::Notify(notify(&format!("j{conn}"), true)) };
    up.handle_line(now, conn, call.to_line().as_bytes());
    outs.extend(up.drain());
    outs
}

fn switches(outs: &[UpstreamOut]) -> Vec<(String, String)> {
    outs.iter()
        .filter_map(|o| match o {
            UpstreamOut::Switched { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dropped_connection_fails_over_to_the_backup_at_once() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(primary, ref url)] = connects(&up.drain())[..] else { panic!() };
    assert_eq!(url, PRIMARY);
    let outs = handshake(&mut up, 10, primary, true);
    assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Job { revoke_older: true, .. })));
    assert!(up.has_work());
    assert_eq!(up.state(), "ready");

    up.handle_closed(1000, primary, "the pool closed the connection");
    let outs = up.drain();
    assert!(outs.contains(&UpstreamOut::Lost));
    assert_eq!(switches(&outs), vec![(PRIMARY.to_string(), BACKUP.to_string())]);
    assert!(!up.has_work(), "no work until the backup sends a job");
    // The next pool is tried at once, not after a dead-pool timer.
    up.handle_tick(1000, &mut ids);
    let [(backup, ref url)] = connects(&up.drain())[..] else { panic!() };
    assert_eq!(url, BACKUP);
    handshake(&mut up, 1010, backup, true);
    assert!(up.has_work());
    assert_eq!(up.url(), (BACKUP, 1));
}

#[test]
fn a_round_of_failures_waits_the_retry_interval() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(primary, _)] = connects(&up.drain())[..] else { panic!() };
    up.handle_closed(5, primary, "connection refused");
    up.handle_tick(5, &mut ids);
    let [(backup, _)] = connects(&up.drain())[..] else { panic!() };
    up.handle_closed(10, backup, "connection refused");
    up.drain();
    up.handle_tick(10 + 4_999, &mut ids);
    assert!(connects(&up.drain()).is_empty(), "waits retry_ms after a whole round failed");
    up.handle_tick(10 + 5_000, &mut ids);
    assert_eq!(connects(&up.drain())[0].1, PRIMARY);
}

#[test]
fn a_silent_pool_is_dead_after_the_silence_timeout() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(primary, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, primary, true);
    up.handle_tick(89_999, &mut ids);
    assert!(switches(&up.drain()).is_empty());
    up.handle_tick(90_000, &mut ids);
    let outs = up.drain();
    assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Close { conn, .. } if *conn == primary)), "{outs:?}");
    assert_eq!(switches(&outs), vec![(PRIMARY.to_string(), BACKUP.to_string())]);
}

#[test]
fn a_refused_authorization_is_reported_once_and_gets_no_work() {
    let mut up = upstream(&[PRIMARY]);
    let mut ids = 1;
    let mut refusals = 0;
    let mut now = 0;
    for _ in 0..3 {
        up.handle_tick(now, &mut ids);
        let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
        let outs = handshake(&mut up, now, conn, false);
        refusals += outs.iter().filter(|o| matches!(o, UpstreamOut::Refused { .. })).count();
        assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Close { .. })));
        assert_eq!(up.state(), "unauthorized");
        assert!(!up.has_work());
        assert!(up.last_error.as_deref().unwrap().contains("bad password"));
        now += 5_000;
    }
    assert_eq!(refusals, 1, "the same refusal is ledgered once");
}

/// An upstream on its backup (the primary refused the connection), with a probe of the
/// primary opened: (upstream, conn counter, backup, probe).
fn on_backup_probing() -> (Upstream, u64, u64, u64) {
    // Pools that stay quiet longer than the failback time without being taken for dead.
    let mut up = upstream_with(&[PRIMARY, BACKUP], UpstreamConfig { silence_ms: 1 << 40, ..config() });
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(primary, _)] = connects(&up.drain())[..] else { panic!() };
    up.handle_closed(1, primary, "refused");
    up.handle_tick(1, &mut ids);
    let [(backup, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 2, backup, true);
    // On the backup: the primary is probed.
    up.handle_tick(3, &mut ids);
    let [(probe, ref url)] = connects(&up.drain())[..] else { panic!() };
    assert_eq!(url, PRIMARY);
    (up, ids, backup, probe)
}

#[test]
fn failback_waits_until_the_primary_was_up_for_the_failback_time() {
    let (mut up, mut ids, backup, probe) = on_backup_probing();
    let outs = handshake(&mut up, 100, probe, true);
    assert!(!outs.iter().any(|o| matches!(o, UpstreamOut::Job { .. })), "a probe's jobs are not searched");
    up.handle_tick(100 + 119_999, &mut ids);
    assert!(switches(&up.drain()).is_empty(), "not before 120 s up");
    assert_eq!(up.url(), (BACKUP, 1));
    up.handle_tick(100 + 120_000, &mut ids);
    let outs = up.drain();
    assert_eq!(switches(&outs), vec![(BACKUP.to_string(), PRIMARY.to_string())]);
    assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Close { conn, .. } if *conn == backup)));
    assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Job { revoke_older: true, .. })));
    assert_eq!(up.url(), (PRIMARY, 0));
    assert!(up.has_work());
}

#[test]
fn a_probe_that_drops_restarts_the_failback_clock() {
    let (mut up, mut ids, _, probe) = on_backup_probing();
    handshake(&mut up, 3, probe, true);
    up.handle_closed(60_000, probe, "dropped");
    up.drain();
    up.handle_tick(60_000 + 5_000, &mut ids);
    let [(probe, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 65_000, probe, true);
    up.handle_tick(121_000, &mut ids);
    assert!(switches(&up.drain()).is_empty(), "the first probe's uptime does not count");
    up.handle_tick(185_000, &mut ids);
    assert_eq!(switches(&up.drain()), vec![(BACKUP.to_string(), PRIMARY.to_string())]);
}

#[test]
fn submits_unanswered_at_a_drop_are_unknown_and_rejects_flag_the_account() {
    let mut up = upstream(&[PRIMARY]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, conn, true);
    let job = up.current.clone().unwrap();
    assert_eq!(job.share_target, Target::DIFFICULTY_1);
    let e2 = up.next_extranonce2(&job).unwrap();
    assert_eq!(e2, vec![0, 0, 0, 0], "slot 0, counter 0");
    assert_eq!(up.next_extranonce2(&job).unwrap(), vec![0, 0, 0, 1]);
    let share = |nonce| Submit {
        worker: String::new(),
        job_id: "j1".into(),
        extranonce2: e2.clone(),
        ntime: 5000,
        nonce,
        version_bits: None,
    };
    // Difficulty 1 is far above these shares: the session's own check refuses them.
    assert_eq!(up.submit(0, share(1)), Err(Reject::LowDifficulty));

    for _ in 0..20 {
        up.count_outcome(&SubmitOutcome::Rejected { code: 23, reason: "Low difficulty".into() }, Work(1));
    }
    let outs = up.drain();
    assert_eq!(outs, vec![UpstreamOut::Flagged { rejected: 20, answered: 20 }]);
    assert!(up.flagged);
    up.count_outcome(&SubmitOutcome::Unknown, Work(1));
    assert_eq!(up.counts.unknown, 1);
    assert!(up.drain().is_empty(), "flagged once");
}

#[test]
fn bad_settings_are_refused() {
    let ok = PoolSettings {
        urls: vec![PRIMARY.into()],
        user: "u".into(),
        password: String::new(),
        extranonce_subscribe: false,
        backup_extranonce_subscribe: false,
    };
    assert!(validate(&ok).is_ok());
    assert!(validate(&PoolSettings { urls: vec![], ..ok.clone() }).is_err());
    assert!(validate(&PoolSettings { urls: vec!["http://x:1".into()], ..ok.clone() }).is_err());
    assert!(validate(&PoolSettings { user: String::new(), ..ok.clone() }).is_err());
    assert!(validate(&PoolSettings { user: "a\nb".into(), ..ok.clone() }).is_err());
    assert!(validate(&PoolSettings { urls: vec![PRIMARY.into(); 9], ..ok }).is_err());
}

#[test]
fn client_reconnect_returns_to_the_same_pool_on_its_port_after_the_wait() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, conn, true);
    let call = Message::Call {
        id: Id::Null,
        method: Method::Reconnect { host: Some("primary.example".into()), port: Some(4444), wait_secs: Some(3) },
    };
    up.handle_line(10, conn, call.to_line().as_bytes());
    let outs = up.drain();
    assert!(outs.iter().any(|o| matches!(o, UpstreamOut::Close { conn: c, .. } if *c == conn)));
    assert!(switches(&outs).is_empty(), "not a failover");
    up.handle_tick(10 + 2_999, &mut ids);
    assert!(connects(&up.drain()).is_empty());
    up.handle_tick(10 + 3_000, &mut ids);
    assert_eq!(connects(&up.drain())[0].1, "stratum+tcp://primary.example:4444");
    // Another host: not followed.
    let mut up = upstream(&[PRIMARY]);
    up.handle_tick(0, &mut ids);
    let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, conn, true);
    let call = Message::Call {
        id: Id::Null,
        method: Method::Reconnect { host: Some("evil.example".into()), port: None, wait_secs: None },
    };
    up.handle_line(10, conn, call.to_line().as_bytes());
    assert!(!up.drain().iter().any(|o| matches!(o, UpstreamOut::Close { .. })));
    assert!(up.has_work());
}

#[test]
fn a_returning_extranonce1_continues_its_counter() {
    let mut up = upstream(&[PRIMARY]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, conn, true);
    let a = up.current.clone().unwrap();
    let mut b = a.clone();
    b.extranonce1 = vec![0xbb, 0xbb];
    assert_eq!(up.next_extranonce2(&a).unwrap(), vec![0, 0, 0, 0]);
    assert_eq!(up.next_extranonce2(&a).unwrap(), vec![0, 0, 0, 1]);
    assert_eq!(up.next_extranonce2(&b).unwrap(), vec![0, 0, 0, 0], "a new extranonce1 starts its own space");
    assert_eq!(up.next_extranonce2(&a).unwrap(), vec![0, 0, 0, 2], "A(X) -> B(Y) -> A(X) repeats no header");
}

/// The session id the `mining.subscribe` on `conn` offers, after its configure.
fn subscribe_session(up: &mut Upstream, now: u64, conn: u64) -> Option<String> {
    up.handle_connected(now, conn);
    let outs = up.drain();
    let [(id, Method::Configure(_))] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    let outs = reply(up, now, conn, id, ConfigureResult { version_rolling_mask: Some(0x1fff_e000) }.to_result());
    let [(_, Method::Subscribe { session_id, .. })] = &requests(&outs, conn)[..] else { panic!("{outs:?}") };
    session_id.clone()
}

#[test]
fn a_new_link_to_a_pool_resumes_its_last_session() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(primary, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 10, primary, true);
    up.handle_closed(1000, primary, "the pool closed the connection");
    up.handle_tick(1000, &mut ids);
    let [(backup, _)] = connects(&up.drain())[..] else { panic!() };
    assert_eq!(subscribe_session(&mut up, 1010, backup), None, "the backup never gave a session");
    up.handle_closed(1020, backup, "the pool closed the connection");
    up.handle_tick(1020 + config().retry_ms, &mut ids);
    let [(again, ref url)] = connects(&up.drain())[..] else { panic!() };
    assert_eq!(url, PRIMARY);
    assert_eq!(subscribe_session(&mut up, 1030 + config().retry_ms, again), Some(format!("s{primary}")));
}

#[test]
fn every_pool_down_for_ten_minutes_records_a_bounded_number_of_switches() {
    let mut up = upstream(&[PRIMARY, BACKUP]);
    let mut ids = 1;
    let mut switched = 0;
    let mut attempts = 0;
    let mut now = 0;
    while now < 600_000 {
        up.handle_tick(now, &mut ids);
        for (conn, _) in connects(&up.drain()) {
            attempts += 1;
            up.handle_closed(now, conn, "connection refused");
        }
        switched += switches(&up.drain()).len();
        now += 100;
    }
    assert!(attempts > 20, "the pools were retried: {attempts}");
    assert_eq!(switched, 0, "no pool was ever ready: nothing to switch from");
}

#[test]
fn a_pool_notice_is_kept_as_the_last_error() {
    let mut up = upstream(&[PRIMARY]);
    let mut ids = 1;
    up.handle_tick(0, &mut ids);
    let [(conn, _)] = connects(&up.drain())[..] else { panic!() };
    handshake(&mut up, 0, conn, true);
    assert_eq!(up.last_error, None);
    let call = Message::Call { id: Id::Null, method: Method::ShowMessage("maintenance at\n noon".into()) };
    up.handle_line(10, conn, call.to_line().as_bytes());
    assert_eq!(up.last_error.as_deref(), Some("pool says: maintenance at noon"));
}

#[test]
fn counts_rebuilt_from_the_recorded_outcomes_equal_the_counts_kept() {
    let outcomes = [
        SubmitOutcome::Accepted,
        SubmitOutcome::Rejected { code: 23, reason: "Low difficulty share".into() },
        SubmitOutcome::Accepted,
        SubmitOutcome::Unknown,
        SubmitOutcome::Rejected { code: 21, reason: "Job not found (=stale)\n".into() },
        SubmitOutcome::Rejected { code: 23, reason: "Low difficulty share".into() },
    ];
    let mut kept = UpstreamCounts::default();
    for (i, o) in outcomes.iter().enumerate() {
        kept.count(o, Work(1 << i));
    }
    let rows = outcomes.iter().enumerate().map(|(i, o)| (outcome_text(o), Work(1 << i), 1));
    assert_eq!(UpstreamCounts::from_records(rows), kept);
    assert_eq!((kept.accepted_shares, kept.accepted_work, kept.unknown, kept.rejected()), (2, Work(5), 1, 3));
}

/// The requests `conn` sends once subscribed: with or without `mining.extranonce.subscribe`.
fn after_subscribe(up: &mut Upstream, now: u64, conn: u64) -> Vec<(u64, Method)> {
    up.handle_connected(now, conn);
    let outs = up.drain();
    let [(id, Method::Configure(_))] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    let outs = reply(up, now, conn, id, ConfigureResult { version_rolling_mask: Some(0x1fff_e000) }.to_result());
    let [(id, Method::Subscribe { .. })] = requests(&outs, conn)[..] else { panic!("{outs:?}") };
    let sub = SubscribeResult { subscriptions: vec![], extranonce1: vec![1], extranonce2_size: 4 };
    requests(&reply(up, now, conn, id, sub.to_result()), conn)
}

#[test]
fn extranonce_subscribe_is_sent_to_each_pool_as_set_for_it() {
    for (primary_on, backup_on) in [(false, true), (true, false)] {
        let settings = PoolSettings {
            urls: vec![PRIMARY.into(), BACKUP.into()],
            user: "alice.rig".into(),
            password: "x".into(),
            extranonce_subscribe: primary_on,
            backup_extranonce_subscribe: backup_on,
        };
        let mut up = Upstream::new(settings, config()).unwrap();
        let mut ids = 1;
        up.handle_tick(0, &mut ids);
        let [(primary, _)] = connects(&up.drain())[..] else { panic!() };
        let sent = after_subscribe(&mut up, 10, primary);
        assert_eq!(sent.iter().any(|(_, m)| *m == Method::ExtranonceSubscribe), primary_on, "{sent:?}");
        up.handle_closed(20, primary, "the pool closed the connection");
        up.drain();
        up.handle_tick(20, &mut ids);
        let [(backup, ref url)] = connects(&up.drain())[..] else { panic!() };
        assert_eq!(url, BACKUP);
        let sent = after_subscribe(&mut up, 30, backup);
        assert_eq!(sent.iter().any(|(_, m)| *m == Method::ExtranonceSubscribe), backup_on, "{sent:?}");
    }
}
