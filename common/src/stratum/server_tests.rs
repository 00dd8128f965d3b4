//! Virtual-time tests of the server session: a scripted miner and coordinator, time is a number.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::header::Hash256;
use crate::stratum::vardiff::VardiffConfig;
use crate::target::CompactTarget;

/// Difficulty 2^-24: about one nonce in 256 meets it.
const EASY: f64 = 1.0 / 16_777_216.0;
const E1: [u8; 5] = [0xc8, 0x58, 0xee, 0xac, 0x07];

fn config() -> ServerConfig {
    ServerConfig {
        vardiff: VardiffConfig { start: EASY, min: 1e-9, ..VardiffConfig::default() },
        adjust_difficulty: false,
        ..ServerConfig::new("5e55")
    }
}

fn notify(id: &str, prev: u8, clean: bool) -> Notify {
    Notify {
        job_id: id.into(),
        prev_blockhash: Hash256([prev; 32]),
        coinb1: vec![1, 2, 3],
        coinb2: vec![4, 5],
        merkle_branch: vec![Hash256([9; 32])],
        version: 0x2000_0000,
        nbits: CompactTarget(0x1d00ffff),
        ntime: 5000,
        clean_jobs: clean,
    }
}

fn server_job(tag: u64, upstream_id: &str, prev: u8, clean: bool) -> ServerJob {
    ServerJob {
        tag,
        notify: notify(upstream_id, prev, clean),
        extranonce1: E1.to_vec(),
        extranonce2_size: 3,
        version_mask: 0x1fff_e000,
        pool_difficulty: Some(EASY * 4.0),
        share_difficulty: None,
    }
}

fn drain(s: &mut ServerSession) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The lines among `events`, decoded.
fn lines(events: &[ServerEvent]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Send(line) => Some(Message::from_line(line.as_bytes()).unwrap()),
            _ => None,
        })
        .collect()
}

fn call(s: &mut ServerSession, now: u64, id: u64, method: Method) -> Vec<ServerEvent> {
    s.handle_line(now, Message::Call { id: Id::from(id), method }.to_line().as_bytes());
    drain(s)
}

fn response(events: &[ServerEvent], id: u64) -> Response {
    lines(events)
        .into_iter()
        .find_map(|m| match m {
            Message::Response(r) if r.id == Id::from(id) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer to {id} in {events:?}"))
}

fn notifies(events: &[ServerEvent]) -> Vec<Notify> {
    lines(events)
        .into_iter()
        .filter_map(|m| match m {
            Message::Call { method: Method::Notify(n), .. } => Some(n),
            _ => None,
        })
        .collect()
}

fn authorize_ticket(events: &[ServerEvent]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Authorize { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .expect("an Authorize event")
}

fn shares(events: &[ServerEvent]) -> Vec<(u64, MinerShare)> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Share { ticket, share } => Some((*ticket, (**share).clone())),
            _ => None,
        })
        .collect()
}

/// A session through subscribe and authorize (worker "rig"), given `server_job(1, "up1", 1,
/// true)`; returns it with the first job as the miner saw it.
fn ready() -> (ServerSession, Notify) {
    let mut s = ServerSession::new(config(), 0);
    s.set_job(0, server_job(1, "up1", 1, true)).unwrap();
    let events = call(&mut s, 1, 1, Method::Subscribe { user_agent: Some("cpuminer/2.5.1".into()), session_id: None });
    assert!(s.is_subscribed());
    let events = [events, call(&mut s, 2, 2, authorize("rig", "token"))].concat();
    let ticket = authorize_ticket(&events);
    s.authorized(2, ticket, true);
    let events = drain(&mut s);
    assert!(response(&events, 2).is_true());
    let mut n = notifies(&events);
    assert_eq!(n.len(), 1);
    (s, n.remove(0))
}

fn authorize(user: &str, password: &str) -> Method {
    Method::Authorize { user: user.into(), password: Some(Password(password.into())) }
}

/// The miner's view of a job: what it would build headers from.
fn miner_job(s: &ServerSession, n: &Notify, difficulty: f64) -> Job {
    let (e1, size) = s.extranonce().unwrap();
    Job::new(n.clone(), e1.to_vec(), size, difficulty, s.version_mask()).unwrap()
}

/// A submit on `n` at `difficulty`: one that meets it (`meets`) or one that does not.
fn submit_for(s: &ServerSession, n: &Notify, difficulty: f64, from: u32, meets: bool) -> Submit {
    let job = miner_job(s, n, difficulty);
    let e2 = vec![0, 0, 1];
    let nonce = (from..)
        .find(|&nonce| {
            let hash = job.header(&e2, n.ntime, nonce, n.version).unwrap().block_hash();
            job.share_target.is_met_by(&hash) == meets
        })
        .unwrap();
    Submit {
        worker: "rig".into(),
        job_id: n.job_id.clone(),
        extranonce2: e2,
        ntime: n.ntime,
        nonce,
        version_bits: None,
    }
}

#[test]
fn subscribe_waits_for_the_first_job_and_work_starts_once_authorized() {
    let mut s = ServerSession::new(config(), 0);
    let events =
        call(&mut s, 1, 1, Method::Subscribe { user_agent: Some("bmminer".into()), session_id: Some("ab".into()) });
    assert_eq!(events, vec![ServerEvent::Subscribed { user_agent: Some("bmminer".into()) }], "no answer yet");
    s.set_job(2, server_job(7, "up1", 1, true)).unwrap();
    let events = drain(&mut s);
    let sub = SubscribeResult::from_result(&response(&events, 1).result).unwrap();
    assert_eq!(sub.extranonce1, E1);
    assert_eq!(sub.extranonce2_size, 3);
    assert_eq!(sub.session_id(), "5e55");
    assert!(notifies(&events).is_empty(), "no work before authorize");
    let events = call(&mut s, 3, 2, authorize("rig", "token"));
    let ServerEvent::Authorize { ticket, worker, password } = &events[0] else { panic!("{events:?}") };
    assert_eq!((worker.as_str(), password.0.as_str()), ("rig", "token"));
    assert_eq!(format!("{password:?}"), "Password(..)", "never printed");
    s.authorized(4, *ticket, true);
    let events = drain(&mut s);
    let lines = lines(&events);
    assert!(matches!(&lines[1], Message::Call { method: Method::SetDifficulty(d), .. } if *d == EASY), "{lines:?}");
    let n = notifies(&events);
    assert_eq!(n[0], Notify { job_id: "1".into(), ..notify("up1", 1, true) });
    assert_eq!(s.current_tag(), Some(7));
}

#[test]
fn a_wrong_token_is_error_24_then_closed() {
    let mut s = ServerSession::new(config(), 0);
    s.set_job(0, server_job(1, "up1", 1, true)).unwrap();
    call(&mut s, 1, 1, Method::Subscribe { user_agent: None, session_id: None });
    let ticket = authorize_ticket(&call(&mut s, 2, 2, authorize("rig", "wrong")));
    s.authorized(3, ticket, false);
    let events = drain(&mut s);
    assert_eq!(response(&events, 2).error, Some(RpcError::new(24, "Unauthorized worker")));
    assert!(matches!(events.last(), Some(ServerEvent::Close { reason }) if reason.contains("authorization refused")));
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn submits_are_checked_in_order_with_codes() {
    // 25 before subscribing, 24 before authorizing.
    let mut s = ServerSession::new(config(), 0);
    let submit = Submit {
        worker: "rig".into(),
        job_id: "1".into(),
        extranonce2: vec![0, 0, 1],
        ntime: 5000,
        nonce: 0,
        version_bits: None,
    };
    assert_eq!(response(&call(&mut s, 1, 9, Method::Submit(submit.clone())), 9).error.unwrap().code, 25);
    s.set_job(1, server_job(1, "up1", 1, true)).unwrap();
    call(&mut s, 1, 1, Method::Subscribe { user_agent: None, session_id: None });
    assert_eq!(response(&call(&mut s, 2, 9, Method::Submit(submit.clone())), 9).error.unwrap().code, 24);

    let (mut s, n) = ready();
    let good = submit_for(&s, &n, EASY, 0, true);
    let low = submit_for(&s, &n, EASY, 0, false);
    let cases = [
        (Submit { worker: "other".into(), ..good.clone() }, 24, "Unauthorized worker"),
        (Submit { job_id: "99".into(), ..good.clone() }, 21, "Job not found"),
        (Submit { extranonce2: vec![0, 1], ..good.clone() }, 20, "Invalid extranonce2 size"),
        (Submit { ntime: 4999, ..good.clone() }, 20, "Ntime out of range"),
        (Submit { version_bits: Some(0x0000_0001), ..good.clone() }, 20, "Invalid version bits"),
        (low, 23, "Low difficulty share"),
    ];
    for (i, (submit, code, reason)) in cases.into_iter().enumerate() {
        let events = call(&mut s, 10, 100 + i as u64, Method::Submit(submit));
        assert_eq!(response(&events, 100 + i as u64).error, Some(RpcError::new(code, reason)));
        assert!(matches!(events.last(), Some(ServerEvent::Rejected { reject, .. }) if reject.code() == code));
    }
    // The share passes; the miner hears `true` only once the coordinator recorded it.
    let events = call(&mut s, 11, 200, Method::Submit(good.clone()));
    let [(ticket, share)] = &shares(&events)[..] else { panic!("{events:?}") };
    assert!(lines(&events).is_empty());
    assert_eq!((share.tag, share.upstream_job_id.as_str(), share.difficulty), (1, "up1", EASY));
    assert_eq!(share.accepted.hash, share.accepted.header.block_hash());
    assert!(share.accepted.share_target.is_met_by(&share.accepted.hash));
    let pool = share_target(EASY * 4.0).unwrap();
    assert_eq!(share.meets_pool_target, pool.is_met_by(&share.accepted.hash));
    s.share_recorded(*ticket, Ok(()));
    assert!(response(&drain(&mut s), 200).is_true());
    // The same share in upper-case hex: a duplicate, keyed on the values.
    let line = Message::Call { id: Id::from(201), method: Method::Submit(good.clone()) }.to_line();
    let upper = line.replace(&format!("{:08x}", good.nonce), &format!("{:08X}", good.nonce));
    assert_ne!(upper, line);
    s.handle_line(12, upper.as_bytes());
    assert_eq!(response(&drain(&mut s), 201).error.unwrap().code, 22);
}

#[test]
fn a_coordinator_refusal_reaches_the_miner() {
    let (mut s, n) = ready();
    let good = submit_for(&s, &n, EASY, 0, true);
    let events = call(&mut s, 5, 3, Method::Submit(good));
    let [(ticket, _)] = &shares(&events)[..] else { panic!() };
    s.share_recorded(*ticket, Err(RpcError::new(21, "Stale share")));
    assert_eq!(response(&drain(&mut s), 3).error, Some(RpcError::new(21, "Stale share")));
    s.share_recorded(*ticket, Ok(()));
    assert!(drain(&mut s).is_empty(), "one answer per share");
}

#[test]
fn difficulty_applies_to_the_following_jobs() {
    let (mut s, first) = ready();
    s.set_difficulty(10, EASY * 2.0);
    let events = drain(&mut s);
    assert_eq!(events[0], ServerEvent::Difficulty(EASY * 2.0));
    let second = notifies(&events).remove(0);
    assert_eq!(second.job_id, "2");
    assert!(!second.clean_jobs, "the first job stays live");
    // A share meeting only the old difficulty passes on the first job, not on the second.
    let job2 = miner_job(&s, &second, EASY * 2.0);
    let job1 = miner_job(&s, &first, EASY);
    let e2 = vec![0, 0, 1];
    let nonce = (0..)
        .find(|&nonce| {
            let hash = job1.header(&e2, 5000, nonce, first.version).unwrap().block_hash();
            job1.share_target.is_met_by(&hash) && !job2.share_target.is_met_by(&hash)
        })
        .unwrap();
    let on = |id: &str| Submit {
        worker: "rig".into(),
        job_id: id.into(),
        extranonce2: e2.clone(),
        ntime: 5000,
        nonce,
        version_bits: None,
    };
    assert_eq!(response(&call(&mut s, 11, 5, Method::Submit(on("2"))), 5).error.unwrap().code, 23);
    let events = call(&mut s, 12, 6, Method::Submit(on("1")));
    assert_eq!(shares(&events)[0].1.difficulty, EASY);
    // Suggested difficulties are clamped to the bounds, and never above the pool's.
    call(&mut s, 13, 7, Method::SuggestDifficulty(1e-20));
    assert_eq!(s.difficulty(), 1e-9);
    call(&mut s, 14, 8, Method::SuggestDifficulty(1e20));
    assert_eq!(s.difficulty(), EASY * 4.0, "the job's pool difficulty");
}

#[test]
fn clean_jobs_make_older_jobs_stale() {
    let (mut s, first) = ready();
    let good = submit_for(&s, &first, EASY, 0, true);
    s.set_job(5, server_job(2, "up2", 2, true)).unwrap();
    let n = notifies(&drain(&mut s)).remove(0);
    assert_eq!((n.job_id.as_str(), n.clean_jobs), ("2", true));
    assert_eq!(response(&call(&mut s, 6, 3, Method::Submit(good)), 3).error, Some(RpcError::new(21, "Stale share")));
}

#[test]
fn version_rolling_is_the_intersection_and_changes_are_announced() {
    let mut s = ServerSession::new(config(), 0);
    let c = Configure {
        extensions: vec!["version-rolling".into(), "minimum-difficulty".into()],
        ..Configure::version_rolling(0x1fff_ff00)
    };
    let r = response(&call(&mut s, 1, 1, Method::Configure(c)), 1);
    assert_eq!(
        r.result,
        json!({"version-rolling": true, "version-rolling.mask": "1fffe000", "minimum-difficulty": false})
    );
    // Too few bits for the miner: no rolling.
    let mut t = ServerSession::new(config(), 0);
    let c = Configure { version_rolling_min_bit_count: Some(17), ..Configure::version_rolling(0xffff_ffff) };
    assert_eq!(response(&call(&mut t, 1, 1, Method::Configure(c)), 1).result, json!({"version-rolling": false}));

    s.set_job(1, ServerJob { version_mask: 0x00ff_f000, ..server_job(1, "up1", 1, true) }).unwrap();
    call(&mut s, 2, 2, Method::Subscribe { user_agent: None, session_id: None });
    let ticket = authorize_ticket(&call(&mut s, 3, 3, authorize("rig", "t")));
    s.authorized(3, ticket, true);
    let events = lines(&drain(&mut s));
    let position = |f: &dyn Fn(&Method) -> bool| {
        events.iter().position(|m| matches!(m, Message::Call { method, .. } if f(method))).unwrap()
    };
    let mask_at = position(&|m| matches!(m, Method::SetVersionMask(0x00ff_e000)));
    assert!(mask_at < position(&|m| matches!(m, Method::Notify(_))), "the new mask goes out before the job");
    assert_eq!(s.version_mask(), 0x00ff_e000);
}

#[test]
fn rolled_version_bits_are_checked_against_the_mask() {
    let mut s = ServerSession::new(config(), 0);
    call(&mut s, 0, 1, Method::Configure(Configure::version_rolling(0x1fff_e000)));
    s.set_job(0, server_job(1, "up1", 1, true)).unwrap();
    call(&mut s, 1, 2, Method::Subscribe { user_agent: None, session_id: None });
    let ticket = authorize_ticket(&call(&mut s, 2, 3, authorize("rig", "t")));
    s.authorized(2, ticket, true);
    let n = notifies(&drain(&mut s)).remove(0);
    let job = miner_job(&s, &n, EASY);
    let e2 = vec![0, 0, 1];
    let bits = 0x0000_6000;
    let nonce = (0..)
        .find(|&nonce| {
            let hash = job.header(&e2, 5000, nonce, job.rolled_version(bits)).unwrap().block_hash();
            job.share_target.is_met_by(&hash)
        })
        .unwrap();
    let submit = Submit {
        worker: "rig".into(),
        job_id: "1".into(),
        extranonce2: e2,
        ntime: 5000,
        nonce,
        version_bits: Some(bits),
    };
    let events = call(&mut s, 3, 4, Method::Submit(submit.clone()));
    assert_eq!(shares(&events)[0].1.accepted.header.version, 0x2000_6000);
    let outside = Submit { version_bits: Some(0x2000_0000), ..submit };
    assert_eq!(response(&call(&mut s, 4, 5, Method::Submit(outside)), 5).error.unwrap().code, 20);
}

#[test]
fn an_extranonce_change_is_sent_or_the_miner_reconnects() {
    let moved = |s: &mut ServerSession| {
        s.set_job(
            10,
            ServerJob { extranonce1: vec![0xaa, 0x01], extranonce2_size: 6, ..server_job(2, "up9", 3, false) },
        )
        .unwrap();
        drain(s)
    };
    let (mut s, _) = ready();
    let events = moved(&mut s);
    assert!(matches!(
        &lines(&events)[0],
        Message::Call { method: Method::Reconnect { host: None, port: None, wait_secs: None }, .. }
    ));
    assert!(matches!(events.last(), Some(ServerEvent::Close { .. })));

    let (mut s, _) = ready();
    assert!(response(&call(&mut s, 5, 9, Method::ExtranonceSubscribe), 9).is_true());
    let events = lines(&moved(&mut s));
    assert!(
        matches!(&events[0], Message::Call { method: Method::SetExtranonce { extranonce1, extranonce2_size: 6 }, .. } if extranonce1 == &[0xaa, 0x01])
    );
    let Message::Call { method: Method::Notify(n), .. } = &events[1] else { panic!("{events:?}") };
    assert!(n.clean_jobs, "older jobs were built on the old extranonce");
    assert_eq!(s.extranonce(), Some((&[0xaa, 0x01][..], 6)));
}

#[test]
fn invalid_share_streaks_escalate_and_a_valid_share_ends_them() {
    let (mut s, n) = ready();
    let low = |from| submit_for(&s, &n, EASY, from, false);
    let (a, b, c, d) = (low(0), low(1_000), low(2_000), low(3_000));
    call(&mut s, 1_000, 10, Method::Submit(a.clone()));
    assert_eq!(s.escalation(), Escalation::None);
    let events = call(&mut s, 61_000, 11, Method::Submit(b));
    assert!(events.contains(&ServerEvent::Escalated(Escalation::ResendWork)));
    let resent = notifies(&events);
    assert_eq!((resent[0].job_id.as_str(), resent[0].clean_jobs), ("2", true));
    // A valid share ends the streak.
    let n2 = resent[0].clone();
    let good = submit_for(&s, &n2, EASY, 0, true);
    call(&mut s, 62_000, 12, Method::Submit(good));
    assert_eq!(s.escalation(), Escalation::None);
    let low2 = |from| submit_for(&s, &n2, EASY, from, false);
    let (e, f) = (low2(0), low2(1_000));
    call(&mut s, 70_000, 13, Method::Submit(e));
    call(&mut s, 131_000, 14, Method::Submit(f));
    let events = call(&mut s, 191_000, 15, Method::Submit(Submit { job_id: "2".into(), ..c }));
    assert!(events.contains(&ServerEvent::Escalated(Escalation::Reconnect)), "{events:?}");
    assert!(lines(&events).iter().any(|m| matches!(m, Message::Call { method: Method::Reconnect { .. }, .. })));
    let events = call(&mut s, 250_000, 16, Method::Submit(d));
    assert!(matches!(events.last(), Some(ServerEvent::Close { reason }) if reason.contains("only invalid shares")));
}

#[test]
fn limits_close_the_connection_with_a_reason() {
    let close_reason = |events: Vec<ServerEvent>| match events.last() {
        Some(ServerEvent::Close { reason }) => reason.clone(),
        other => panic!("no close: {other:?}"),
    };
    let mut s = ServerSession::new(config(), 0);
    s.handle_line(1, &vec![b' '; 16 * 1024 + 3]);
    assert!(close_reason(drain(&mut s)).contains("exceeds"));
    let mut s = ServerSession::new(config(), 0);
    s.handle_line(1, b"{\"id\": 1, \"method\": ");
    assert!(close_reason(drain(&mut s)).contains("malformed"));
    let mut s = ServerSession::new(config(), 0);
    for _ in 0..200 {
        s.handle_line(1, b"{\"id\": 1, \"method\": \"mining.ping\", \"params\": []}");
    }
    assert!(!s.is_closed(), "the burst is allowed");
    s.handle_line(1, b"{\"id\": null, \"method\": \"mining.ping\", \"params\": []}");
    assert!(close_reason(drain(&mut s)).contains("limit"));
    // Unknown methods: an error when asked, nothing for a notification.
    let mut s = ServerSession::new(config(), 0);
    let r = response(&call(&mut s, 1, 3, Method::Unknown { name: "mining.ping".into(), params: json!([]) }), 3);
    assert_eq!(r.error.unwrap().code, 20);
    s.handle_line(1, b"{\"id\": null, \"method\": \"mining.ping\", \"params\": []}");
    assert!(drain(&mut s).is_empty());
    // The handshake deadline, then silence.
    let mut s = ServerSession::new(config(), 0);
    assert_eq!(s.poll_timeout(), Some(30_000));
    s.handle_timeout(29_999);
    assert!(!s.is_closed());
    s.handle_timeout(30_000);
    assert!(close_reason(drain(&mut s)).contains("within 30000 ms"));
    let (mut s, _) = ready();
    assert_eq!(s.poll_timeout(), Some(2 + 600_000));
    s.handle_timeout(600_002);
    assert!(close_reason(drain(&mut s)).contains("said nothing"));
}

#[test]
fn valid_shares_are_not_held_to_the_line_rate_limit() {
    // A miner faster than the rate limit at its job's pool difficulty (the vardiff may not
    // raise it above the pool's): 100 valid shares a second for 6 s, twice the 50 lines a
    // second the bucket refills (600 lines against 200 + 6 · 50 = 500 tokens).
    let (mut s, n) = ready();
    let mut from = 0;
    for i in 0..600u64 {
        let submit = submit_for(&s, &n, EASY, from, true);
        from = submit.nonce + 1;
        let events = call(&mut s, 10 + i * 10, 100 + i, Method::Submit(submit));
        let share = shares(&events);
        assert_eq!(share.len(), 1, "share {i}: {events:?}");
        s.share_recorded(share[0].0, Ok(()));
        assert!(response(&drain(&mut s), 100 + i).is_true());
    }
    assert!(!s.is_closed());
    // Invalid shares at the same pace are lines like any other: the limit closes them.
    let (mut s, n) = ready();
    let mut from = 0;
    for i in 0..600u64 {
        let submit = submit_for(&s, &n, EASY, from, false);
        from = submit.nonce + 1;
        if s.is_closed() {
            break;
        }
        call(&mut s, 10 + i * 10, 100 + i, Method::Submit(submit));
    }
    assert!(s.is_closed(), "a flood of invalid shares is closed by the line rate limit");
}

#[test]
fn vardiff_retargets_from_accepted_shares() {
    let mut config = config();
    config.adjust_difficulty = true;
    config.vardiff.retarget_shares = 4;
    let mut s = ServerSession::new(config, 0);
    s.set_job(0, server_job(1, "up1", 1, true)).unwrap();
    call(&mut s, 0, 1, Method::Subscribe { user_agent: None, session_id: None });
    let ticket = authorize_ticket(&call(&mut s, 0, 2, authorize("rig", "t")));
    s.authorized(0, ticket, true);
    let n = notifies(&drain(&mut s)).remove(0);
    // Four shares in 4 ms at 2^-24: the miner is far faster than 2 shares a second.
    let mut from = 0;
    let mut events = Vec::new();
    for i in 0..4u64 {
        let submit = submit_for(&s, &n, EASY, from, true);
        from = submit.nonce + 1;
        events.extend(call(&mut s, 1 + i, 10 + i, Method::Submit(submit)));
    }
    let raised = events.iter().find_map(|e| match e {
        ServerEvent::Difficulty(d) => Some(*d),
        _ => None,
    });
    assert!(raised.is_some_and(|d| d > EASY), "{events:?}");
    assert_eq!(notifies(&events).last().unwrap().job_id, "2");
    assert!(s.hashrate(4) == 0.0, "the estimate restarts after raising");
}

// Properties.

/// A submit's values, written with its hex in either case.
#[derive(Debug, Clone)]
struct SubmitValues {
    job: String,
    e2: u8,
    ntime: u32,
    nonce: u32,
    bits: Option<u32>,
}

impl SubmitValues {
    fn line(&self, id: &serde_json::Value, upper: bool) -> Vec<u8> {
        let case = |s: String| if upper { s.to_uppercase() } else { s };
        let mut p = vec![
            json!("rig"),
            json!(self.job),
            json!(case(format!("0000{:02x}", self.e2))),
            json!(case(format!("{:08x}", self.ntime))),
            json!(case(format!("{:08x}", self.nonce))),
        ];
        if let Some(b) = self.bits {
            p.push(json!(case(format!("{b:08x}"))));
        }
        serde_json::to_vec(&json!({"id": id, "method": "mining.submit", "params": p})).unwrap()
    }
}

fn arbitrary_line() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![Just(json!(null)), (0u64..50).prop_map(|n| json!(n)), "[a-z]{0,3}".prop_map(|s| json!(s))];
    let method = prop_oneof![
        4 => Just(json!(["mining.subscribe", ["m/1"]])),
        4 => Just(json!(["mining.authorize", ["rig", "t"]])),
        1 => Just(json!(["mining.authorize", ["rig2", "bad"]])),
        4 => Just(json!(["mining.extranonce.subscribe", []])),
        4 => (1e-10f64..1e-8).prop_map(|d| json!(["mining.suggest_difficulty", [d]])),
        4 => any::<u32>().prop_map(
            |m| json!(["mining.configure", [["version-rolling"], {"version-rolling.mask": format!("{m:08x}")}]])
        ),
    ];
    let call = (id, method)
        .prop_map(|(id, m)| serde_json::to_vec(&json!({"id": id, "method": m[0], "params": m[1]})).unwrap());
    // Garbage closes the session, so it comes rarely.
    prop_oneof![20 => call, 1 => proptest::collection::vec(any::<u8>(), 0..40)]
}

#[derive(Debug, Clone)]
enum Step {
    Line(Vec<u8>),
    Submit(SubmitValues, bool),
    /// An earlier submit again, in this hex case.
    Again(prop::sample::Index, bool),
    Job(u8, bool),
    Tick,
}

fn steps() -> impl Strategy<Value = Vec<(u64, Step)>> {
    let bits = proptest::option::weighted(0.2, 0u32..4);
    let submit = ((1u64..6), 0u8..2, 4999u32..5002, 0u32..32, bits, any::<bool>()).prop_map(
        |(job, e2, ntime, nonce, bits, upper)| {
            let bits = bits.map(|b| b << 13);
            (SubmitValues { job: format!("{job:x}"), e2, ntime, nonce, bits }, upper)
        },
    );
    let step = prop_oneof![
        2 => arbitrary_line().prop_map(Step::Line),
        6 => submit.prop_map(|(v, upper)| Step::Submit(v, upper)),
        3 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, upper)| Step::Again(i, upper)),
        1 => (0u8..3, any::<bool>()).prop_map(|(p, c)| Step::Job(p, c)),
        1 => Just(Step::Tick),
    ];
    let dt = prop_oneof![8 => 0u64..2_000, 1 => 0u64..100_000];
    proptest::collection::vec((dt, step), 0..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever a miner sends, in whatever order and time: nothing panics; every share passed
    /// on re-hashes to its hash and meets the target of the job it names; no share's values are
    /// passed on twice on one job (whatever the hex case); escalation never steps back while
    /// only invalid shares come; time only moves forward.
    #[test]
    fn arbitrary_miners_never_break_the_session(steps in steps(), adjust in any::<bool>(), handshake in any::<bool>()) {
        let mut config = config();
        config.adjust_difficulty = adjust;
        config.vardiff.retarget_shares = 3;
        // 2^-32, the lowest usable difficulty: nearly every nonce meets it, so shares pass and
        // repeat; suggested difficulties make low ones likely again.
        config.vardiff.start = 1.0 / 4_294_967_296.0;
        config.vardiff.min = config.vardiff.start;
        config.check().unwrap();
        let mut s = ServerSession::new(config, 0);
        let mut now = 0;
        let mut seen = std::collections::HashSet::new();
        let mut submits: Vec<SubmitValues> = Vec::new();
        if handshake {
            s.set_job(0, server_job(0, "up", 0, true)).unwrap();
            s.handle_line(0, br#"{"id": 1, "method": "mining.subscribe", "params": []}"#);
            s.handle_line(0, br#"{"id": 2, "method": "mining.authorize", "params": ["rig", "t"]}"#);
        }
        let mut last_escalation = Escalation::None;
        let mut jobs: std::collections::HashMap<String, Job> = std::collections::HashMap::new();
        let mut job_tag = 0;
        for (dt, step) in steps {
            now += dt;
            match step {
                Step::Line(line) => s.handle_line(now, &line),
                Step::Submit(values, upper) => {
                    s.handle_line(now, &values.line(&json!(7), upper));
                    submits.push(values);
                }
                Step::Again(i, upper) => {
                    if !submits.is_empty() {
                        s.handle_line(now, &submits[i.index(submits.len())].line(&json!(8), upper));
                    }
                }
                Step::Job(prev, clean) => {
                    job_tag += 1;
                    s.set_job(now, server_job(job_tag, "up", prev, clean)).unwrap();
                }
                Step::Tick => s.handle_timeout(now),
            }
            while let Some(event) = s.poll_event() {
                match event {
                    ServerEvent::Authorize { ticket, password, .. } => s.authorized(now, ticket, password.0 == "t"),
                    ServerEvent::Send(line) => {
                        if let Ok(Message::Call { method: Method::Notify(n), .. }) = Message::from_line(line.as_bytes()) {
                            // The miner's view of the job, for re-hashing what the session accepts.
                            let (e1, size) = s.extranonce().unwrap();
                            jobs.insert(n.job_id.clone(), Job::new(n, e1.to_vec(), size, 1.0, 0).unwrap());
                        }
                    }
                    ServerEvent::Share { ticket, share } => {
                        let a = &share.accepted;
                        prop_assert_eq!(a.header.block_hash(), a.hash);
                        prop_assert!(a.share_target.is_met_by(&a.hash));
                        prop_assert_eq!(a.share_target, share_target(share.difficulty).unwrap());
                        let job = &jobs[&share.submit.job_id];
                        let version = a.header.version;
                        let rebuilt = job.header(&share.submit.extranonce2, share.submit.ntime, share.submit.nonce, version).unwrap();
                        prop_assert_eq!(rebuilt.block_hash(), a.hash);
                        let key = (share.submit.job_id.clone(), share.submit.extranonce2.clone(), share.submit.ntime, share.submit.nonce, version);
                        prop_assert!(seen.insert(key), "a share passed twice");
                        s.share_recorded(ticket, Ok(()));
                    }
                    ServerEvent::Escalated(stage) => {
                        prop_assert!(stage > last_escalation);
                        last_escalation = stage;
                    }
                    ServerEvent::Close { .. } => prop_assert!(s.is_closed()),
                    _ => {}
                }
            }
            if s.escalation() == Escalation::None {
                last_escalation = Escalation::None;
            }
            prop_assert_eq!(s.poll_timeout().is_none(), s.is_closed());
        }
    }

    /// Escalation is monotone in virtual time: with only invalid shares, a later share never
    /// sees an earlier stage, and the stage is the one the thresholds give.
    #[test]
    fn escalation_is_monotone(gaps in proptest::collection::vec(0u64..50_000, 1..40)) {
        let (mut s, n) = ready();
        let mut now = 10;
        let mut start = None;
        let mut previous = Escalation::None;
        for (i, gap) in gaps.into_iter().enumerate() {
            now += gap;
            let low = submit_for(&s, &n, EASY, 0, false);
            s.handle_line(now, Message::Call { id: Id::from(i as u64), method: Method::Submit(low) }.to_line().as_bytes());
            drain(&mut s);
            let since = *start.get_or_insert(now);
            let stage = s.escalation();
            prop_assert!(stage >= previous);
            let expected = match now - since {
                e if e >= 180_000 => Escalation::Disconnect,
                e if e >= 120_000 => Escalation::Reconnect,
                e if e >= 60_000 => Escalation::ResendWork,
                _ => Escalation::None,
            };
            prop_assert_eq!(stage, expected);
            previous = stage;
            if s.is_closed() {
                break;
            }
        }
    }
}

#[derive(Debug, Clone)]
enum DiffStep {
    /// A job whose pool difficulty is EASY · 2^k.
    Job(i32),
    /// The miner suggests EASY · 2^k.
    Suggest(i32),
    /// The coordinator sets EASY · 2^k.
    Set(i32),
    /// An accepted share after this many milliseconds (fast shares drive the vardiff up).
    Share(u64),
    Tick(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the vardiff, the miner's suggestions and the coordinator do, the miner is never
    /// asked for more than its job's pool difficulty: every job goes out at or below it, and
    /// every share passed on was checked at or below it (a share the pool would take is never
    /// refused as low difficulty).
    #[test]
    fn the_miners_difficulty_never_exceeds_the_pools(steps in proptest::collection::vec(prop_oneof![
        1 => (-3i32..4).prop_map(DiffStep::Job),
        1 => (-3i32..12).prop_map(DiffStep::Suggest),
        1 => (-3i32..12).prop_map(DiffStep::Set),
        6 => (0u64..50).prop_map(DiffStep::Share),
        1 => (0u64..120_000).prop_map(DiffStep::Tick),
    ], 0..40)) {
        let mut config = config();
        config.adjust_difficulty = true;
        config.vardiff.retarget_shares = 3;
        let mut s = ServerSession::new(config, 0);
        s.set_job(0, server_job(1, "up1", 1, true)).unwrap();
        call(&mut s, 1, 1, Method::Subscribe { user_agent: None, session_id: None });
        let events = call(&mut s, 2, 2, authorize("rig", "token"));
        s.authorized(2, authorize_ticket(&events), true);
        let (mut now, mut tag, mut nonce_from) = (2u64, 1u64, 0u32);
        let mut pools = std::collections::HashMap::from([(1u64, EASY * 4.0)]);
        let mut pool = EASY * 4.0;
        let (mut sent, mut latest) = (None::<f64>, None::<Notify>);
        let mut events = drain(&mut s);
        for step in steps {
            for event in &events {
                match event {
                    ServerEvent::Send(line) => match Message::from_line(line.as_bytes()).unwrap() {
                        Message::Call { method: Method::SetDifficulty(d), .. } => sent = Some(d),
                        Message::Call { method: Method::Notify(n), .. } => {
                            let d = sent.expect("a difficulty before the first job");
                            prop_assert!(d <= pool, "job at {} above the pool's {}", d, pool);
                            latest = Some(n);
                        }
                        _ => {}
                    },
                    ServerEvent::Share { ticket, share } => {
                        prop_assert!(share.difficulty <= pools[&share.tag], "{} > {}", share.difficulty, pools[&share.tag]);
                        s.share_recorded(*ticket, Ok(()));
                    }
                    _ => {}
                }
            }
            let pow = |k: i32| EASY * 2f64.powi(k);
            match step {
                DiffStep::Job(k) => {
                    tag += 1;
                    pool = pow(k);
                    pools.insert(tag, pool);
                    s.set_job(now, ServerJob { pool_difficulty: Some(pool), ..server_job(tag, "up", 1, false) }).unwrap();
                }
                DiffStep::Suggest(k) => s.handle_line(now, Message::Call { id: Id::from(9), method: Method::SuggestDifficulty(pow(k)) }.to_line().as_bytes()),
                DiffStep::Set(k) => s.set_difficulty(now, pow(k)),
                DiffStep::Share(dt) => {
                    now += dt;
                    if let (Some(n), Some(d)) = (&latest, sent) {
                        let submit = submit_for(&s, n, d, nonce_from, true);
                        nonce_from = submit.nonce + 1;
                        s.handle_line(now, Message::Call { id: Id::from(7), method: Method::Submit(submit) }.to_line().as_bytes());
                    }
                }
                DiffStep::Tick(dt) => {
                    now += dt;
                    s.handle_timeout(now);
                }
            }
            events = drain(&mut s);
            if s.is_closed() {
                break;
            }
        }
    }
}
