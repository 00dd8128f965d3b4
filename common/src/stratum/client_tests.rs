//! Virtual-time tests of the client session: a scripted pool answers, and time is a number.

use serde_json::json;

use super::*;
use crate::header::Hash256;
use crate::stratum::codec::{Id, Message, Response, RpcError};
use crate::stratum::method::{ConfigureResult, Method, Notify, Submit, SubscribeResult};
use crate::stratum::share::Reject;
use crate::target::CompactTarget;

fn config() -> ClientConfig {
    ClientConfig::new("pool.example", "alice.rig", "secret")
}

/// Everything the session emitted since the last call.
fn drain(s: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The requests among `events`, decoded: (id, method).
fn sent(events: &[ClientEvent]) -> Vec<(u64, Method)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Send(line) => match Message::from_line(line.as_bytes()).unwrap() {
                Message::Call { id, method } => Some((id.as_u64().unwrap(), method)),
                Message::Response(_) => None,
            },
            _ => None,
        })
        .collect()
}

fn answer(s: &mut ClientSession, now: u64, id: u64, result: serde_json::Value) {
    s.handle_line(now, Message::Response(Response::ok(Id::from(id), result)).to_line().as_bytes());
}

fn answer_err(s: &mut ClientSession, now: u64, id: u64, code: i64, msg: &str) {
    s.handle_line(now, Message::Response(Response::err(Id::from(id), RpcError::new(code, msg))).to_line().as_bytes());
}

fn call(s: &mut ClientSession, now: u64, method: Method) {
    s.handle_line(now, Message::Call { id: Id::Null, method }.to_line().as_bytes());
}

fn subscribe_result() -> serde_json::Value {
    SubscribeResult {
        subscriptions: vec![("mining.notify".into(), "sess-1".into())],
        extranonce1: vec![0xc8, 0x58],
        extranonce2_size: 4,
    }
    .to_result()
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

/// A session through configure (pool mask `pool_mask`), subscribe and authorize, at t = 0..3.
fn ready(pool_mask: u32) -> ClientSession {
    let mut s = ClientSession::new(config());
    s.connect(0);
    let first = sent(&drain(&mut s));
    assert!(matches!(first[..], [(1, Method::Configure(_))]));
    answer(&mut s, 1, 1, ConfigureResult { version_rolling_mask: Some(pool_mask) }.to_result());
    assert!(matches!(sent(&drain(&mut s))[..], [(2, Method::Subscribe { .. })]));
    answer(&mut s, 2, 2, subscribe_result());
    assert!(matches!(sent(&drain(&mut s))[..], [(3, Method::Authorize { .. })]));
    answer(&mut s, 3, 3, json!(true));
    assert_eq!(drain(&mut s), vec![ClientEvent::State(ClientState::Ready)]);
    s
}

/// A share on `job` that meets difficulty `2^-24` (about 1 in 256 nonces).
fn share_for(s: &ClientSession, job_id: &str, from: u32) -> Submit {
    let job = s.job(job_id).unwrap();
    let e2 = vec![0, 0, 0, 1];
    let nonce = (from..)
        .find(|&n| job.share_target.is_met_by(&job.header(&e2, 5000, n, job.notify.version).unwrap().block_hash()))
        .unwrap();
    Submit { worker: String::new(), job_id: job_id.into(), extranonce2: e2, ntime: 5000, nonce, version_bits: None }
}

fn easy_job(s: &mut ClientSession, now: u64, id: &str, prev: u8, clean: bool) -> Vec<ClientEvent> {
    call(s, now, Method::SetDifficulty(1.0 / 16_777_216.0));
    call(s, now, Method::Notify(notify(id, prev, clean)));
    drain(s)
}

#[test]
fn configure_offers_our_mask_and_keeps_the_intersection() {
    let mut s = ClientSession::new(config());
    s.connect(0);
    let first = sent(&drain(&mut s));
    let [(1, Method::Configure(offer))] = &first[..] else { panic!("{first:?}") };
    assert_eq!(offer.extensions, ["version-rolling"]);
    assert_eq!(offer.version_rolling_mask, Some(OFFERED_VERSION_MASK));
    let s = ready(0x0fff_ff00);
    assert_eq!(s.version_mask(), 0x0fff_e000);
}

#[test]
fn a_configure_error_or_silence_means_no_version_rolling() {
    let mut s = ClientSession::new(config());
    s.connect(0);
    drain(&mut s);
    answer_err(&mut s, 5, 1, 20, "Method not found");
    assert!(matches!(sent(&drain(&mut s))[..], [(2, Method::Subscribe { .. })]));
    assert_eq!(s.version_mask(), 0);

    let mut s = ClientSession::new(config());
    s.connect(0);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(3_000));
    s.handle_timeout(2_999);
    assert!(drain(&mut s).is_empty(), "not before the deadline");
    s.handle_timeout(3_000);
    assert!(matches!(sent(&drain(&mut s))[..], [(2, Method::Subscribe { .. })]));
    // A late answer is ignored: no rolling on this connection.
    answer(&mut s, 3_001, 1, ConfigureResult { version_rolling_mask: Some(OFFERED_VERSION_MASK) }.to_result());
    assert_eq!(s.version_mask(), 0);
    // set_version_mask cannot switch it on either.
    answer(&mut s, 3_002, 2, subscribe_result());
    call(&mut s, 3_003, Method::SetVersionMask(0x1fff_e000));
    assert_eq!(s.version_mask(), 0);
}

#[test]
fn set_version_mask_is_intersected_with_ours() {
    let mut s = ready(0x1fff_e000);
    call(&mut s, 10, Method::SetVersionMask(0x00ff_ff00));
    assert_eq!(s.version_mask(), 0x00ff_e000);
    easy_job(&mut s, 11, "a", 1, true);
    assert_eq!(s.job("a").unwrap().version_mask, 0x00ff_e000);
}

#[test]
fn reconnect_resumes_the_previous_session_id() {
    let mut s = ready(0);
    assert_eq!(s.resume_id(), Some("sess-1"));
    s.handle_disconnect(10);
    assert_eq!(drain(&mut s), vec![ClientEvent::State(ClientState::Disconnected)]);
    assert_eq!(s.poll_timeout(), None);
    let mut s2 = s;
    s2.connect(20);
    drain(&mut s2);
    answer_err(&mut s2, 21, 4, 20, "unknown method");
    let subscribe = sent(&drain(&mut s2));
    let [(5, Method::Subscribe { session_id, .. })] = &subscribe[..] else { panic!("{subscribe:?}") };
    assert_eq!(session_id.as_deref(), Some("sess-1"));
}

#[test]
fn a_refused_authorization_is_a_state_and_blocks_submits() {
    let mut s = ClientSession::new(ClientConfig { version_rolling: false, ..config() });
    s.connect(0);
    drain(&mut s);
    answer(&mut s, 1, 1, subscribe_result());
    drain(&mut s);
    answer_err(&mut s, 2, 2, 24, "Unauthorized worker");
    assert_eq!(
        drain(&mut s),
        vec![ClientEvent::State(ClientState::Unauthorized { reason: "24 Unauthorized worker".into() })]
    );
    easy_job(&mut s, 3, "a", 1, true);
    let share = Submit {
        worker: String::new(),
        job_id: "a".into(),
        extranonce2: vec![0; 4],
        ntime: 5000,
        nonce: 0,
        version_bits: None,
    };
    assert_eq!(s.submit(4, share.clone()), Err(Reject::Unauthorized));
    // `result: false` without an error is a refusal too.
    let mut s = ClientSession::new(ClientConfig { version_rolling: false, ..config() });
    s.connect(0);
    answer(&mut s, 1, 1, subscribe_result());
    answer(&mut s, 2, 2, json!(false));
    assert!(matches!(s.state(), ClientState::Unauthorized { .. }));
    let mut s = ClientSession::new(config());
    assert_eq!(s.submit(0, share), Err(Reject::NotSubscribed));
}

#[test]
fn extranonce_subscribe_is_sent_only_when_configured_and_set_extranonce_applies_to_following_jobs() {
    let mut s = ClientSession::new(ClientConfig { version_rolling: false, extranonce_subscribe: true, ..config() });
    s.connect(0);
    drain(&mut s);
    answer(&mut s, 1, 1, subscribe_result());
    let methods = sent(&drain(&mut s));
    assert!(matches!(methods[..], [(2, Method::ExtranonceSubscribe), (3, Method::Authorize { .. })]), "{methods:?}");
    answer(&mut s, 2, 2, json!(true));
    answer(&mut s, 2, 3, json!(true));
    easy_job(&mut s, 3, "a", 1, true);
    call(&mut s, 4, Method::SetExtranonce { extranonce1: vec![0xaa, 0xbb, 0xcc], extranonce2_size: 3 });
    easy_job(&mut s, 5, "b", 1, false);
    assert_eq!(s.job("a").unwrap().extranonce1, [0xc8, 0x58]);
    assert_eq!(s.job("b").unwrap().extranonce1, [0xaa, 0xbb, 0xcc]);
    assert_eq!(s.job("b").unwrap().extranonce2_size, 3);

    let mut plain = ready(0);
    drain(&mut plain);
    assert!(!format!("{:?}", sent(&drain(&mut plain))).contains("Extranonce"));
}

#[test]
fn difficulty_applies_to_following_jobs_and_clean_or_new_block_revokes() {
    let mut s = ready(0);
    call(&mut s, 10, Method::Notify(notify("a", 1, true)));
    call(&mut s, 11, Method::SetDifficulty(0.5));
    assert_eq!(s.job("a").unwrap().difficulty, 1.0, "a set_difficulty does not touch a job already given");
    call(&mut s, 12, Method::Notify(notify("b", 1, false)));
    assert_eq!(s.job("b").unwrap().difficulty, 0.5);
    call(&mut s, 13, Method::Notify(notify("c", 2, false)));
    let events = drain(&mut s);
    let revokes: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Job { job, revoke_older } => Some((job.id().to_owned(), *revoke_older)),
            _ => None,
        })
        .collect();
    assert_eq!(revokes, [("a".into(), true), ("b".into(), false), ("c".into(), true)]);
    assert!(s.job("a").is_none() && s.job("b").is_none(), "a new previous block revokes older jobs");
    // A few past jobs are kept for late shares while they stay on the same block.
    for id in ["d", "e", "f"] {
        call(&mut s, 14, Method::Notify(notify(id, 2, false)));
    }
    assert!(s.job("c").is_some() && s.job("f").is_some());
    call(&mut s, 15, Method::Notify(notify("g", 2, false)));
    assert!(s.job("c").is_none(), "only kept_jobs (4) are kept, revoked ones included");
    assert!(s.job("d").is_some());
}

#[test]
fn submits_get_exactly_one_outcome_and_are_never_retried() {
    let mut s = ready(0);
    easy_job(&mut s, 10, "a", 1, true);
    let one = share_for(&s, "a", 0);
    let t1 = s.submit(20, one.clone()).unwrap();
    let events = drain(&mut s);
    let [(id, Method::Submit(wire))] = &sent(&events)[..] else { panic!("{events:?}") };
    assert_eq!(*id, t1);
    assert_eq!(wire.worker, "alice.rig", "the session's user is the worker");
    assert_eq!(s.submit(21, one.clone()), Err(Reject::Duplicate), "checked locally, not sent twice");
    let two = share_for(&s, "a", one.nonce + 1);
    let t2 = s.submit(22, two.clone()).unwrap();
    let three = share_for(&s, "a", two.nonce + 1);
    let t3 = s.submit(23, three).unwrap();
    drain(&mut s);
    answer(&mut s, 30, t1, json!(true));
    answer_err(&mut s, 31, t2, 23, "Low difficulty share");
    assert_eq!(
        drain(&mut s),
        vec![
            ClientEvent::Submitted { ticket: t1, outcome: SubmitOutcome::Accepted },
            ClientEvent::Submitted {
                ticket: t2,
                outcome: SubmitOutcome::Rejected { code: 23, reason: "Low difficulty share".into() }
            },
        ]
    );
    // t3 gets no answer: unknown at its deadline, and nothing is sent again.
    assert_eq!(s.poll_timeout(), Some(23 + 30_000));
    s.handle_timeout(23 + 30_000);
    assert_eq!(drain(&mut s), vec![ClientEvent::Submitted { ticket: t3, outcome: SubmitOutcome::Unknown }]);
    answer(&mut s, 30_100, t3, json!(true));
    assert!(drain(&mut s).is_empty(), "a late answer after the outcome changes nothing");
}

#[test]
fn unanswered_submits_become_unknown_on_disconnect() {
    let mut s = ready(0);
    easy_job(&mut s, 10, "a", 1, true);
    let one = share_for(&s, "a", 0);
    let t1 = s.submit(20, one.clone()).unwrap();
    let t2 = s.submit(21, share_for(&s, "a", one.nonce + 1)).unwrap();
    drain(&mut s);
    answer(&mut s, 22, t1, json!(true));
    s.handle_disconnect(23);
    assert_eq!(
        drain(&mut s),
        vec![
            ClientEvent::Submitted { ticket: t1, outcome: SubmitOutcome::Accepted },
            ClientEvent::Submitted { ticket: t2, outcome: SubmitOutcome::Unknown },
            ClientEvent::State(ClientState::Disconnected),
        ]
    );
    assert!(s.current_job().is_none(), "no job outlives its connection");
    assert_eq!(s.submit(24, one), Err(Reject::NotSubscribed));
}

/// Found by `every_submit_gets_exactly_one_outcome`: a `connect` without a `handle_disconnect`
/// first used to drop the old connection's unanswered submits without an outcome.
#[test]
fn connecting_again_ends_the_old_connection() {
    let mut s = ready(0);
    easy_job(&mut s, 10, "a", 1, true);
    let t1 = s.submit(20, share_for(&s, "a", 0)).unwrap();
    drain(&mut s);
    s.connect(30);
    let events = drain(&mut s);
    assert_eq!(
        events[..2],
        [
            ClientEvent::Submitted { ticket: t1, outcome: SubmitOutcome::Unknown },
            ClientEvent::State(ClientState::Disconnected),
        ]
    );
}

#[test]
fn version_bits_go_out_only_inside_the_mask() {
    let mut s = ready(0x1fff_e000);
    easy_job(&mut s, 10, "a", 1, true);
    let mut share = share_for(&s, "a", 0);
    share.version_bits = Some(0x0000_0001);
    assert_eq!(s.submit(11, share), Err(Reject::VersionOutsideMask));
    let job = s.job("a").unwrap().clone();
    let e2 = vec![0, 0, 0, 2];
    let bits = 0x0000_6000;
    let nonce = (0..)
        .find(|&n| {
            job.share_target.is_met_by(&job.header(&e2, 5000, n, job.rolled_version(bits)).unwrap().block_hash())
        })
        .unwrap();
    let rolled = Submit {
        worker: String::new(),
        job_id: "a".into(),
        extranonce2: e2,
        ntime: 5000,
        nonce,
        version_bits: Some(bits),
    };
    s.submit(12, rolled).unwrap();
    let line = match drain(&mut s).pop() {
        Some(ClientEvent::Send(line)) => line,
        other => panic!("{other:?}"),
    };
    assert!(line.contains(r#""00006000"]"#), "{line:?}");
}

#[test]
fn client_reconnect_is_followed_only_to_the_same_host() {
    let mut s = ready(0);
    call(&mut s, 10, Method::Reconnect { host: Some("evil.example".into()), port: Some(1), wait_secs: None });
    assert!(matches!(drain(&mut s)[..], [ClientEvent::Notice(_)]));
    call(&mut s, 11, Method::Reconnect { host: Some("POOL.example".into()), port: Some(3334), wait_secs: Some(5) });
    assert_eq!(drain(&mut s), vec![ClientEvent::Reconnect { port: Some(3334), wait_secs: 5 }]);
    call(&mut s, 12, Method::Reconnect { host: None, port: None, wait_secs: None });
    assert_eq!(drain(&mut s), vec![ClientEvent::Reconnect { port: None, wait_secs: 0 }]);
}

#[test]
fn a_silent_pool_is_closed() {
    let mut s = ready(0);
    assert_eq!(s.poll_timeout(), Some(3 + 90_000));
    s.handle_timeout(90_002);
    assert!(drain(&mut s).is_empty());
    call(&mut s, 50_000, Method::ShowMessage("hello".into()));
    assert_eq!(drain(&mut s), vec![ClientEvent::Notice("pool says: hello".into())]);
    s.handle_timeout(90_003);
    assert!(drain(&mut s).is_empty(), "hearing from the pool pushed the deadline");
    s.handle_timeout(140_000);
    let events = drain(&mut s);
    assert!(
        matches!(&events[..], [ClientEvent::Close { .. }, ClientEvent::State(ClientState::Disconnected)]),
        "{events:?}"
    );
}

#[test]
fn requests_from_the_pool_are_answered_and_garbage_closes() {
    let mut s = ready(0);
    s.handle_line(10, br#"{"id": 77, "method": "client.get_version", "params": []}"#);
    s.handle_line(11, br#"{"id": "x", "method": "mining.ping", "params": []}"#);
    s.handle_line(12, br#"{"id": null, "method": "mining.whatever", "params": [1]}"#);
    let lines: Vec<Message> = drain(&mut s)
        .into_iter()
        .map(|e| match e {
            ClientEvent::Send(l) => Message::from_line(l.as_bytes()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(matches!(&lines[..], [Message::Response(a), Message::Response(b)]
        if a.id == Id::from(77) && a.result.as_str().is_some_and(|v| v.starts_with("hashgrid/"))
        && b.id == Id::Str("x".into()) && b.error.is_some()));
    s.handle_line(13, b"{not json");
    let events = drain(&mut s);
    assert!(
        matches!(&events[..], [ClientEvent::Close { reason }, ClientEvent::State(ClientState::Disconnected)] if reason.contains("malformed"))
    );
}

#[derive(Debug, Clone)]
enum Step {
    /// A line from the pool: the `k`-th meaningful one, about the latest request or the one
    /// before.
    Pool(u8, u64),
    Garbage(Vec<u8>),
    Advance(u64),
    Submit(u32),
    Disconnect,
    Connect,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        12 => (any::<u8>(), 0u64..2).prop_map(|(k, back)| Step::Pool(k, back)),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Step::Garbage),
        3 => (0u64..40_000).prop_map(Step::Advance),
        6 => any::<u32>().prop_map(Step::Submit),
        1 => Just(Step::Disconnect),
        4 => Just(Step::Connect),
    ]
}

/// The `k`-th of a few pool lines that matter, answering request `id` where it is an answer.
fn pool_line(k: u8, id: u64) -> String {
    let message = match k % 11 {
        0 => Message::Response(Response::ok(Id::from(id), subscribe_result())),
        1 | 2 => Message::Response(Response::ok(Id::from(id), json!(true))),
        3 => {
            let easy = Message::Call { id: Id::Null, method: Method::SetDifficulty(1.0 / 16_777_216.0) };
            let job = Method::Notify(notify(&format!("j{}", id % 5), (id % 2) as u8, id.is_multiple_of(3)));
            return easy.to_line() + &Message::Call { id: Id::Null, method: job }.to_line();
        }
        4 => Message::Response(Response::err(Id::from(id), RpcError::new(23, "Low difficulty share"))),
        5 => Message::Response(Response::ok(Id::from(id), json!(false))),
        6 => Message::Call {
            id: Id::Null,
            method: Method::SetExtranonce { extranonce1: vec![id as u8], extranonce2_size: (id % 9) as usize },
        },
        7 => Message::Call { id: Id::Null, method: Method::SetVersionMask(id as u32 * 0x2000) },
        8 => Message::Call { id: Id::Null, method: Method::Reconnect { host: None, port: None, wait_secs: Some(id) } },
        9 => Message::Call { id: Id::from(id), method: Method::GetVersion },
        _ => Message::Response(Response::ok(
            Id::from(id),
            ConfigureResult { version_rolling_mask: Some(u32::MAX) }.to_result(),
        )),
    };
    message.to_line()
}

/// What the property test has seen: tickets, outcomes per ticket, request ids sent.
#[derive(Default)]
struct Seen {
    tickets: std::collections::BTreeSet<u64>,
    outcomes: std::collections::BTreeMap<u64, usize>,
    requests: std::collections::BTreeSet<u64>,
    /// Request id → method name.
    methods: std::collections::BTreeMap<u64, String>,
}

impl Seen {
    fn take(&mut self, s: &mut ClientSession) -> Result<(), proptest::test_runner::TestCaseError> {
        for e in drain(s) {
            match e {
                ClientEvent::Submitted { ticket, .. } => *self.outcomes.entry(ticket).or_default() += 1,
                ClientEvent::Send(line) => {
                    if let Message::Call { id, method } = Message::from_line(line.as_bytes()).unwrap() {
                        let id = id.as_u64().unwrap();
                        proptest::prop_assert!(self.requests.insert(id), "a request id sent twice");
                        self.methods.insert(id, method.name().to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

proptest::proptest! {
    /// Whatever the pool sends and whenever the connection drops, the session never panics,
    /// every ticket gets exactly one outcome (all of them by the final disconnect), and no
    /// request is ever sent twice. The scripted pool answers one of the two latest requests.
    #[test]
    fn every_submit_gets_exactly_one_outcome(steps in proptest::collection::vec(step(), 0..200)) {
        let mut s = ClientSession::new(ClientConfig { version_rolling: false, ..config() });
        let mut now = 0u64;
        let mut seen = Seen::default();
        s.connect(now);
        seen.take(&mut s)?;
        for st in steps {
            match st {
                Step::Pool(k, back) => {
                    let latest = seen.requests.iter().next_back().copied().unwrap_or(0);
                    let id = latest.saturating_sub(back % 2);
                    // Mostly what a pool would answer, sometimes anything from the menu.
                    let line = match (k % 4, seen.methods.get(&id).map(String::as_str)) {
                        (0, _) => pool_line(k / 4, id),
                        (1, _) => pool_line(3, id),
                        (_, Some("mining.subscribe")) => pool_line(0, id),
                        (_, Some("mining.submit")) if k & 8 == 0 => pool_line(4, id),
                        (_, Some("mining.configure")) => pool_line(10, id),
                        _ => pool_line(1, id),
                    };
                    for line in line.lines() {
                        s.handle_line(now, line.as_bytes());
                    }
                }
                Step::Garbage(bytes) => s.handle_line(now, &bytes),
                Step::Advance(ms) => {
                    now += ms;
                    s.handle_timeout(now);
                }
                Step::Submit(from) => {
                    if let Some(job) = s.current_job().cloned() {
                        let e2 = vec![0; job.extranonce2_size];
                        let (ntime, version) = (job.notify.ntime, job.notify.version);
                        let meets = |n: u32| job.share_target.is_met_by(&job.header(&e2, ntime, n, version).unwrap().block_hash());
                        let nonce = (from..from.saturating_add(4096)).find(|&n| meets(n)).unwrap_or(from);
                        let share = Submit { worker: String::new(), job_id: job.id().into(), extranonce2: e2, ntime, nonce, version_bits: None };
                        if let Ok(ticket) = s.submit(now, share) {
                            proptest::prop_assert!(seen.tickets.insert(ticket));
                        }
                    }
                }
                Step::Disconnect => s.handle_disconnect(now),
                Step::Connect => s.connect(now),
            }
            seen.take(&mut s)?;
        }
        s.handle_disconnect(now);
        seen.take(&mut s)?;
        proptest::prop_assert_eq!(seen.outcomes.keys().copied().collect::<std::collections::BTreeSet<_>>(), seen.tickets);
        proptest::prop_assert!(seen.outcomes.values().all(|&n| n == 1), "{:?}", seen.outcomes);
    }
}

#[test]
fn debug_never_shows_the_password() {
    let s = ClientSession::new(ClientConfig::new("pool", "alice.rig", "hunter2-secret"));
    let shown = format!("{s:?} {:?} {:#?}", ClientConfig::new("pool", "alice.rig", "hunter2-secret"), s);
    assert!(shown.contains("alice.rig"), "{shown}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
}

#[test]
fn the_authorize_request_hides_its_password_from_debug_but_sends_it() {
    let mut s = ClientSession::new(ClientConfig::new("pool", "alice.rig", "hunter2-secret"));
    s.connect(0);
    drain(&mut s);
    answer(&mut s, 1, 1, ConfigureResult { version_rolling_mask: Some(0x1fff_e000) }.to_result());
    drain(&mut s);
    answer(&mut s, 2, 2, subscribe_result());
    // The session holds the authorize line unread, then hands it out.
    let held = format!("{s:?}");
    let events = drain(&mut s);
    let [ClientEvent::Send(line), ..] = &events[..] else { panic!("{events:?}") };
    let Message::Call { method, .. } = Message::from_line(line.as_bytes()).unwrap() else { panic!() };
    let message = Message::from_line(line.as_bytes()).unwrap();
    let shown = format!("{held} {events:?} {line:?} {method:?} {message:?} {message:#?}");
    assert!(shown.contains("alice.rig") && shown.contains("Authorize"), "{shown}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    // The line itself carries it to the pool.
    assert!(line.contains("\"hunter2-secret\""), "{}", line.0);
    // Other lines show as they are.
    assert!(format!("{:?}", Line("{\"id\":1}\n".into())).contains("{\\\"id\\\":1}"));
}
