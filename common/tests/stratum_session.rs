//! Known answers: a real cpuminer 2.5.1 session recorded on the wire, with each of its 155
//! shares verified independently (tests/data/stratum/README.md). The codec must parse every
//! line, the job builder must rebuild every coinbase, merkle root and header, the verifier must
//! reproduce every hash, target and verdict, and the client session, driven by the recorded
//! pool lines, must send what cpuminer sent and see every share accepted.

use std::collections::HashMap;

use hashgrid_common::Hash256;
use hashgrid_common::stratum::{
    ClientConfig, ClientEvent, ClientSession, ClientState, Id, Job, Message, Method, Response, ShareVerifier, Submit,
    SubmitOutcome, SubscribeResult,
};
use serde_json::Value;

const LOG: &str = include_str!("data/stratum/cpuminer-session.log");
const VERIFIED: &str = include_str!("data/stratum/cpuminer-session-verified.json");
const BLOCK_1: &str = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048";

/// The recorded rows: (seconds, from the miner?, the line).
fn rows() -> Vec<(f64, bool, &'static str)> {
    LOG.lines()
        .map(|row| {
            let row = row.trim_start();
            let (secs, rest) = row.split_once(' ').unwrap();
            let (dir, json) = rest.split_once(' ').unwrap();
            (secs.parse().unwrap(), dir == "<", json)
        })
        .collect()
}

fn verified() -> Value {
    serde_json::from_str(VERIFIED).unwrap()
}

#[test]
fn the_codec_parses_every_line_and_writes_it_back_canonically() {
    let rows = rows();
    assert_eq!(rows.len(), 320);
    let mut submits = 0;
    for (_, from_miner, line) in &rows {
        let message = Message::from_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        if let Message::Call { method: Method::Submit(_), .. } = &message {
            assert!(from_miner);
            submits += 1;
        }
        assert!(!matches!(&message, Message::Call { method: Method::Unknown { .. }, .. }), "{line}");
        // Canonical writing round-trips, and means the same JSON as the recorded line.
        let canonical = message.to_line();
        assert_eq!(Message::from_line(canonical.as_bytes()).unwrap(), message);
        let recorded: Value = serde_json::from_str(line).unwrap();
        let written: Value = serde_json::from_str(&canonical).unwrap();
        for key in ["id", "method", "params", "result", "error"] {
            if recorded.get(key).is_some() {
                assert_eq!(written.get(key), recorded.get(key), "{key} of {line}");
            }
        }
    }
    assert_eq!(submits, 155);
}

/// Replays the pool's side: subscribe result, difficulties and jobs into a `ShareVerifier`,
/// and checks each recorded submit against the independently verified row.
#[test]
fn the_job_builder_and_verifier_reproduce_every_share() {
    let verified = verified();
    let shares = verified["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 155);
    let mut verifier = ShareVerifier::default();
    let mut difficulty = 1.0;
    let mut subscription: Option<SubscribeResult> = None;
    let mut jobs: HashMap<String, Job> = HashMap::new();
    let mut checked = 0;
    let mut block_1_seen = false;
    for (_, _, line) in rows() {
        match Message::from_line(line.as_bytes()).unwrap() {
            Message::Response(r) if r.id == Id::from(1) => {
                subscription = Some(SubscribeResult::from_result(&r.result).unwrap());
            }
            Message::Call { method: Method::SetDifficulty(d), .. } => difficulty = d,
            Message::Call { method: Method::Notify(n), .. } => {
                let sub = subscription.as_ref().unwrap();
                let job = Job::new(n, sub.extranonce1.clone(), sub.extranonce2_size, difficulty, 0).unwrap();
                jobs.insert(job.id().to_owned(), job.clone());
                verifier.add_job(job);
            }
            Message::Call { method: Method::Submit(submit), .. } => {
                let row = &shares[checked];
                let expected: Vec<&str> =
                    row["submit"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(
                    expected,
                    [
                        &*submit.worker,
                        &submit.job_id,
                        &hex::encode(&submit.extranonce2),
                        &format!("{:08x}", submit.ntime),
                        &format!("{:08x}", submit.nonce)
                    ]
                );
                let job = &jobs[&submit.job_id];
                assert_eq!(job.difficulty, row["difficulty"].as_f64().unwrap());
                assert_eq!(hex::encode(job.coinbase(&submit.extranonce2).unwrap()), row["coinbase"].as_str().unwrap());
                assert_eq!(
                    job.merkle_root(&submit.extranonce2).unwrap().to_string(),
                    row["merkle_root"].as_str().unwrap()
                );
                assert_eq!(job.share_target.to_hex(), row["target"].as_str().unwrap(), "the pool's exact target");
                let accepted = verifier.check(&submit).unwrap_or_else(|r| panic!("share {checked} refused: {r:?}"));
                assert!(row["meets_difficulty"].as_bool().unwrap());
                assert_eq!(accepted.header.to_hex(), row["header"].as_str().unwrap());
                assert_eq!(accepted.hash.to_string(), row["hash"].as_str().unwrap());
                assert_eq!(accepted.share_target, job.share_target);
                if submit.job_id == "b1" {
                    assert_eq!(accepted.hash.to_string(), BLOCK_1);
                    assert!(accepted.meets_block_target, "block #1 meets its own bits");
                    block_1_seen = true;
                }
                // The same share again, spelled in upper case, is a duplicate.
                let upper = line.replace(&format!("{:08x}", submit.nonce), &format!("{:08X}", submit.nonce));
                let Message::Call { method: Method::Submit(again), .. } = Message::from_line(upper.as_bytes()).unwrap()
                else {
                    panic!()
                };
                assert_eq!(verifier.check(&again), Err(hashgrid_common::stratum::Reject::Duplicate));
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 155);
    assert!(block_1_seen);
}

#[test]
fn block_1_header_hashes_to_the_real_block_hash() {
    let verified = verified();
    let row = verified["shares"].as_array().unwrap().iter().find(|r| r["submit"][1] == "b1").unwrap();
    let header = hashgrid_common::Header::from_hex(row["header"].as_str().unwrap()).unwrap();
    assert_eq!(header.block_hash(), BLOCK_1.parse::<Hash256>().unwrap());
    assert_eq!(header.prev_blockhash.to_string(), "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
}

/// Drives a `ClientSession` with the pool's recorded lines. cpuminer sent no mining.configure,
/// so version rolling is not offered. The pool answered every submit with id 4 (cpuminer's
/// fixed id); each answer is given the session's own ticket instead.
#[test]
fn the_client_session_follows_the_recorded_pool() {
    let mut config = ClientConfig::new("127.0.0.1", "testuser", "x");
    config.user_agent = "cpuminer/2.5.1".into();
    config.version_rolling = false;
    let mut session = ClientSession::new(config);
    let mut sent: Vec<String> = Vec::new();
    let mut jobs: Vec<(String, bool)> = Vec::new();
    let mut outcomes: Vec<(u64, SubmitOutcome)> = Vec::new();
    let mut last_ticket = None;
    let drain = |session: &mut ClientSession,
                 sent: &mut Vec<String>,
                 jobs: &mut Vec<(String, bool)>,
                 outcomes: &mut Vec<(u64, SubmitOutcome)>| {
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Send(line) => sent.push(line.into()),
                ClientEvent::Job { job, revoke_older } => jobs.push((job.id().to_owned(), revoke_older)),
                ClientEvent::Submitted { ticket, outcome } => outcomes.push((ticket, outcome)),
                ClientEvent::State(_) | ClientEvent::Notice(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    session.connect(0);
    drain(&mut session, &mut sent, &mut jobs, &mut outcomes);
    let mut miner_calls = 0;
    for (secs, from_miner, line) in rows() {
        let now = (secs * 1000.0) as u64;
        session.handle_timeout(now);
        let message = Message::from_line(line.as_bytes()).unwrap();
        if from_miner {
            let Message::Call { method, .. } = message else { panic!() };
            if let Method::Submit(share) = &method {
                last_ticket = Some(session.submit(now, share.clone()).unwrap());
                drain(&mut session, &mut sent, &mut jobs, &mut outcomes);
            }
            // The session sent what cpuminer sent (ids aside).
            let ours = Message::from_line(sent[miner_calls].as_bytes()).unwrap();
            let Message::Call { method: our_method, .. } = ours else { panic!() };
            assert_eq!(our_method, method, "{line}");
            miner_calls += 1;
        } else {
            let line = match message {
                Message::Response(r) if r.id == Id::from(4) => {
                    Message::Response(Response { id: Id::from(last_ticket.unwrap()), ..r }).to_line()
                }
                _ => line.to_owned(),
            };
            session.handle_line(now, line.as_bytes());
            drain(&mut session, &mut sent, &mut jobs, &mut outcomes);
        }
    }
    assert_eq!(miner_calls, 157);
    assert_eq!(sent.len(), 157);
    assert_eq!(session.state(), &ClientState::Ready);
    assert_eq!(jobs, [("j1".into(), true), ("j2".into(), true), ("b1".into(), true)]);
    assert_eq!(outcomes.len(), 155);
    assert!(outcomes.iter().all(|(_, o)| *o == SubmitOutcome::Accepted));
    assert_eq!(session.current_job().unwrap().difficulty, 1.0);
    assert_eq!(session.resume_id(), Some("deadbeef"));
}

#[test]
fn a_refused_submit_is_not_sent() {
    let mut session =
        ClientSession::new(ClientConfig { version_rolling: false, ..ClientConfig::new("h", "testuser", "x") });
    session.connect(0);
    for (_, from_miner, line) in rows().into_iter().take(6) {
        if !from_miner {
            session.handle_line(1, line.as_bytes());
        }
    }
    while session.poll_event().is_some() {}
    let low = Submit {
        worker: "testuser".into(),
        job_id: "j1".into(),
        extranonce2: vec![0, 0],
        ntime: 0x6b1124a3,
        nonce: 0,
        version_bits: None,
    };
    assert_eq!(session.submit(2, low), Err(hashgrid_common::stratum::Reject::LowDifficulty));
    assert_eq!(session.poll_event(), None);
}
