//! Property and differential tests of the Stratum V1 codec and job builder.
//!
//! - Properties: any bytes or mangled lines decode or fail cleanly, never panic; every typed
//!   message written canonically reads back equal; a decoded line, written canonically, reads
//!   back to the same message (canonical writing is idempotent).
//! - Differential: the `stratum` crate (parasitepool's, CC0) is an independent implementation.
//!   On the subset it accepts (job ids are hex u64s, users are `address.worker`, difficulties
//!   are held as compact targets) each side reads what the other writes to the same values,
//!   and its merkle root agrees with the job builder's for the recorded session and for random
//!   jobs.

use hashgrid_common::Hash256;
use hashgrid_common::stratum::method::{Configure, swap_words};
use hashgrid_common::stratum::{
    Id, Job, Message, Method, Notify, Password, Response, RpcError, Submit, SubscribeResult,
};
use hashgrid_common::target::CompactTarget;
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![Just(Id::Null), any::<u64>().prop_map(Id::from), text().prop_map(Id::Str)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn difficulty() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1u64..1_000_000).prop_map(|d| d as f64),
        (1u32..100_000, 0i32..12).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e)),
        (1e-9f64..1e12),
    ]
}

fn hash() -> impl Strategy<Value = Hash256> {
    proptest::array::uniform32(any::<u8>()).prop_map(Hash256)
}

fn notify(job_id: BoxedStrategy<String>) -> impl Strategy<Value = Notify> {
    (
        job_id,
        hash(),
        bytes(200),
        bytes(200),
        proptest::collection::vec(hash(), 0..12),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(job_id, prev, coinb1, coinb2, branch, version, nbits, ntime, clean_jobs)| Notify {
            job_id,
            prev_blockhash: prev,
            coinb1,
            coinb2,
            merkle_branch: branch,
            version,
            nbits: CompactTarget(nbits),
            ntime,
            clean_jobs,
        })
}

fn submit(worker: BoxedStrategy<String>, job_id: BoxedStrategy<String>) -> impl Strategy<Value = Submit> {
    (worker, job_id, bytes(16), any::<u32>(), any::<u32>(), proptest::option::of(any::<u32>())).prop_map(
        |(worker, job_id, extranonce2, ntime, nonce, version_bits)| Submit {
            worker,
            job_id,
            extranonce2,
            ntime,
            nonce,
            version_bits,
        },
    )
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        (proptest::collection::vec(text(), 0..3), proptest::option::of(any::<u32>()), proptest::option::of(0u32..=32))
            .prop_map(|(extensions, mask, bits)| Method::Configure(Configure {
                extensions,
                version_rolling_mask: mask,
                version_rolling_min_bit_count: bits
            })),
        (proptest::option::of(text()), proptest::option::of(text()))
            .prop_map(|(user_agent, session_id)| Method::Subscribe { user_agent, session_id }),
        (text(), proptest::option::of(text()))
            .prop_map(|(user, password)| Method::Authorize { user, password: password.map(Password) }),
        Just(Method::ExtranonceSubscribe),
        difficulty().prop_map(Method::SetDifficulty),
        difficulty().prop_map(Method::SuggestDifficulty),
        (bytes(32), 0usize..=32)
            .prop_map(|(extranonce1, extranonce2_size)| Method::SetExtranonce { extranonce1, extranonce2_size }),
        any::<u32>().prop_map(Method::SetVersionMask),
        notify(text().boxed()).prop_map(Method::Notify),
        submit(text().boxed(), text().boxed()).prop_map(Method::Submit),
        ("[a-z0-9.]{1,12}", proptest::option::of(any::<u16>()), proptest::option::of(any::<u64>()))
            .prop_map(|(host, port, wait_secs)| Method::Reconnect { host: Some(host), port, wait_secs }),
        text().prop_map(Method::ShowMessage),
        Just(Method::GetVersion),
        ("x\\.[a-z_]{1,10}", proptest::collection::vec(any::<i32>(), 0..4))
            .prop_map(|(name, p)| Method::Unknown { name, params: json!(p) }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let result = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), text().prop_map(Value::String)];
    let error = proptest::option::of((-1000i64..1000, text()).prop_map(|(c, m)| RpcError::new(c, m)));
    prop_oneof![
        (id(), method()).prop_map(|(id, method)| Message::Call { id, method }),
        (id(), result, error).prop_map(|(id, result, error)| Message::Response(Response { id, result, error })),
    ]
}

/// Decodes, and when that works checks that canonical writing is idempotent.
fn decode_and_recode(line: &[u8]) {
    if let Ok(message) = Message::from_line(line) {
        let canonical = message.to_line();
        let again = Message::from_line(canonical.as_bytes()).unwrap_or_else(|e| panic!("{canonical}: {e}"));
        assert_eq!(again.to_line(), canonical);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(line in bytes(512)) {
        decode_and_recode(&line);
    }

    #[test]
    fn mangled_lines_never_panic(message in message(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut line = message.to_line().into_bytes();
        let i = flip.index(line.len());
        line[i] = byte;
        decode_and_recode(&line);
        line.truncate(cut.index(line.len()));
        decode_and_recode(&line);
    }

    #[test]
    fn encode_then_decode_round_trips(message in message()) {
        let line = message.to_line();
        prop_assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        prop_assert_eq!(Message::from_line(line.as_bytes()).unwrap(), message);
    }

    #[test]
    fn subscribe_results_round_trip(subs in proptest::collection::vec((text(), text()), 0..3), e1 in bytes(32), size in 0usize..=32) {
        let result = SubscribeResult { subscriptions: subs, extranonce1: e1, extranonce2_size: size };
        prop_assert_eq!(SubscribeResult::from_result(&result.to_result()).unwrap(), result);
    }
}

#[test]
fn caps_are_typed_errors() {
    use hashgrid_common::stratum::StratumError;
    let n = |branch: usize, coinb1: usize| {
        let params = json!([
            "j",
            "00".repeat(32),
            "00".repeat(coinb1),
            "",
            vec!["00".repeat(32); branch],
            "20000000",
            "1d00ffff",
            "00000000",
            true
        ]);
        Method::from_parts("mining.notify", &params)
    };
    assert!(n(32, 100).is_ok());
    assert!(matches!(n(33, 100), Err(StratumError::BranchTooLong { count: 33, max: 32 })));
    assert!(matches!(n(0, 40_000), Err(StratumError::CoinbaseTooLarge { .. })));
    let sub = json!([[], "00".repeat(33), 4]);
    assert!(matches!(SubscribeResult::from_result(&sub), Err(StratumError::ExtranonceTooLong { .. })));
    let sub = json!([[], "00", 33]);
    assert!(matches!(SubscribeResult::from_result(&sub), Err(StratumError::ExtranonceTooLong { .. })));
    let submit = json!(["w", "j", "00".repeat(33), "0", "0"]);
    assert!(matches!(Method::from_parts("mining.submit", &submit), Err(StratumError::ExtranonceTooLong { .. })));
    // Unknown methods are not errors; tolerant spellings read as the canonical values.
    let Ok(Method::Unknown { name, .. }) = Method::from_parts("mining.ping", &json!([])) else { panic!() };
    assert_eq!(name, "mining.ping");
    let Ok(Method::Submit(s)) = Method::from_parts("mining.submit", &json!(["w", "j", "AB", "0x6B1124A3", "1", null]))
    else {
        panic!()
    };
    assert_eq!((s.extranonce2, s.ntime, s.nonce, s.version_bits), (vec![0xab], 0x6b1124a3, 1, None));
}

// Differential tests against the `stratum` crate.

/// A valid mainnet address (BIP 173's example), as the reference crate wants users to be.
const ADDRESS: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";

fn hex_job_id() -> BoxedStrategy<String> {
    any::<u64>().prop_map(|n| format!("{n:x}")).boxed()
}

fn worker() -> BoxedStrategy<String> {
    "[a-z0-9]{1,8}".prop_map(|w| format!("{ADDRESS}.{w}")).boxed()
}

/// Our line, read by the reference, written back by it, read by us.
fn through_reference(message: &Message) -> Message {
    let line = message.to_line();
    let theirs: stratum::Message =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reference refused {line}: {e}"));
    let back = serde_json::to_string(&theirs).unwrap();
    Message::from_line(back.as_bytes()).unwrap_or_else(|e| panic!("we refused the reference's {back}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn notify_agrees_with_the_reference(n in notify(hex_job_id()), id in any::<u64>()) {
        let message = Message::Call { id: Id::Null, method: Method::Notify(n.clone()) };
        prop_assert_eq!(through_reference(&message), message.clone());
        let line = message.to_line();
        let theirs: stratum::Message = serde_json::from_str(&line).unwrap();
        let stratum::Message::Notification { method: stratum::Method::Notify(t) } = theirs else { panic!("{line}") };
        prop_assert_eq!(t.job_id.to_string(), n.job_id.clone());
        let their_prev: [u8; 32] = *bitcoin_hash(&t.prevhash);
        prop_assert_eq!(their_prev, n.prev_blockhash.0);
        prop_assert_eq!(&t.coinb1, &hex::encode(&n.coinb1));
        let branch: Vec<[u8; 32]> = t.merkle_branches.iter().map(|m| *m.as_byte_array()).collect();
        prop_assert_eq!(branch, n.merkle_branch.iter().map(|h| h.0).collect::<Vec<_>>());
        prop_assert_eq!(u32::from(t.ntime), n.ntime);
        prop_assert_eq!(t.clean_jobs, n.clean_jobs);
        // The same job's merkle root, from both builders.
        let e1 = stratum::Extranonce::from_bytes(&[0xc8, 0x58, 0xee, 0xac]);
        let e2 = stratum::Extranonce::from_bytes(&id.to_be_bytes());
        let theirs = stratum::merkle_root(&t.coinb1, &t.coinb2, &e1, &e2, &t.merkle_branches).unwrap();
        let job = Job::new(n, vec![0xc8, 0x58, 0xee, 0xac], 8, 1.0, 0).unwrap();
        prop_assert_eq!(*theirs.as_byte_array(), job.merkle_root(&id.to_be_bytes()).unwrap().0);
    }

    #[test]
    fn submit_agrees_with_the_reference(s in submit(worker(), hex_job_id()), id in any::<u64>()) {
        prop_assume!(!s.extranonce2.is_empty());
        let message = Message::Call { id: Id::from(id), method: Method::Submit(s.clone()) };
        prop_assert_eq!(through_reference(&message), message.clone());
        let theirs: stratum::Message = serde_json::from_str(&message.to_line()).unwrap();
        let stratum::Message::Request { method: stratum::Method::Submit(t), .. } = theirs else { panic!() };
        prop_assert_eq!(t.username.as_str(), s.worker.as_str());
        prop_assert_eq!(t.enonce2.as_bytes(), &s.extranonce2[..]);
        prop_assert_eq!((u32::from(t.ntime), u32::from(t.nonce)), (s.ntime, s.nonce));
    }

    #[test]
    fn subscribe_authorize_and_reconnect_agree_with_the_reference(
        agent in "[a-z/0-9.]{1,12}", session in proptest::option::of(bytes(8).prop_filter("non-empty", |b| !b.is_empty())),
        w in worker(), password in proptest::option::of("[a-z]{1,8}"), port in any::<u16>(), wait in any::<u32>(), id in any::<u64>(),
    ) {
        let calls = [
            Method::Subscribe { user_agent: Some(agent), session_id: session.map(hex::encode) },
            Method::Authorize { user: w, password: password.map(Password) },
            Method::Reconnect { host: Some("pool.example".into()), port: Some(port), wait_secs: Some(u64::from(wait)) },
        ];
        for method in calls {
            let message = Message::Call { id: Id::from(id), method };
            prop_assert_eq!(through_reference(&message), message);
        }
    }

    #[test]
    fn difficulty_agrees_with_the_reference_to_its_precision(d in difficulty()) {
        // The reference holds a difficulty as a compact target (15 to 23 bits of precision),
        // and below 0.001 its float-to-target scaling keeps fewer digits still.
        prop_assume!(d >= 0.001);
        let message = Message::Call { id: Id::Null, method: Method::SetDifficulty(d) };
        let Message::Call { method: Method::SetDifficulty(back), .. } = through_reference(&message) else { panic!() };
        prop_assert!((back / d - 1.0).abs() < 1e-4 || (d >= 1.0 && (back - d.floor()).abs() / d < 1e-4), "{d} -> {back}");
    }
}

#[test]
fn responses_and_errors_agree_with_the_reference() {
    for line in [
        r#"{"id": 4, "result": true, "error": null}"#,
        r#"{"id": 4, "result": null, "error": [23, "Low difficulty share", null]}"#,
        r#"{"id": 1, "result": [[["mining.set_difficulty", "deadbeef"], ["mining.notify", "deadbeef"]], "c858eeac", 2], "error": null}"#,
    ] {
        let ours = Message::from_line(line.as_bytes()).unwrap();
        assert_eq!(through_reference(&ours), ours, "{line}");
    }
    let sub: stratum::SubscribeResponse =
        serde_json::from_value(json!([[["mining.notify", "ab"]], "c858eeac", 4])).unwrap();
    let ours = SubscribeResult::from_result(&serde_json::to_value(&sub).unwrap()).unwrap();
    assert_eq!(ours.extranonce1, sub.enonce1.as_bytes());
    assert_eq!(ours.extranonce2_size, sub.enonce2_size);
    assert_eq!(ours.subscriptions, sub.subscriptions);
}

/// The recorded session's jobs, read by both: the same previous block, and for every recorded
/// share the same merkle root. The reference refuses job ids `j1` and `j2` (not hex), so the
/// synthetic jobs are renamed for it; block #1's `b1` is hex and goes through as recorded.
#[test]
fn the_recorded_session_agrees_with_the_reference() {
    const LOG: &str = include_str!("data/stratum/cpuminer-session.log");
    let mut jobs = std::collections::HashMap::new();
    let mut roots = 0;
    for row in LOG.lines() {
        let line = row.trim_start().splitn(3, ' ').nth(2).unwrap();
        let ours = Message::from_line(line.as_bytes()).unwrap();
        match ours {
            Message::Call { method: Method::Notify(n), .. } => {
                let line = line.replace("\"j1\"", "\"a1\"").replace("\"j2\"", "\"a2\"");
                let theirs: stratum::Message = serde_json::from_str(&line).unwrap();
                let stratum::Message::Notification { method: stratum::Method::Notify(t) } = theirs else { panic!() };
                assert_eq!(*bitcoin_hash(&t.prevhash), n.prev_blockhash.0);
                assert_eq!(swap_words(swap_words(n.prev_blockhash.0)), n.prev_blockhash.0);
                jobs.insert(n.job_id.clone(), (Job::new(n, vec![0xc8, 0x58, 0xee, 0xac], 2, 1.0, 0).unwrap(), t));
            }
            Message::Call { method: Method::Submit(s), .. } => {
                let (job, t) = &jobs[&s.job_id];
                let e1 = stratum::Extranonce::from_bytes(&job.extranonce1);
                let e2 = stratum::Extranonce::from_bytes(&s.extranonce2);
                let theirs = stratum::merkle_root(&t.coinb1, &t.coinb2, &e1, &e2, &t.merkle_branches).unwrap();
                assert_eq!(*theirs.as_byte_array(), job.merkle_root(&s.extranonce2).unwrap().0);
                roots += 1;
            }
            _ => {}
        }
    }
    assert_eq!(roots, 155);
}

/// The reference's previous-block hash, in header byte order, read from its own `BlockHash`
/// (whose `Debug` shows Bitcoin's reversed display order), not from its notify encoding.
fn bitcoin_hash(prev: &stratum::PrevHash) -> Box<[u8; 32]> {
    let debug = format!("{prev:?}");
    let display = debug.trim_start_matches("PrevHash(").trim_end_matches(')');
    Box::new(display.parse::<Hash256>().unwrap_or_else(|e| panic!("{debug}: {e}")).0)
}
