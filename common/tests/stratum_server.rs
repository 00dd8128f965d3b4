//! The Stratum V1 server session against miners not written here.
//!
//! - Known answers: the recorded cpuminer 2.5.1 session (tests/data/stratum/), replayed from the
//!   miner's side into a `ServerSession`. The session must answer what the recorded pool
//!   answered (job ids aside: the session names its own), and every recorded submit must pass
//!   its share check with the independently verified header and hash; the same share again,
//!   its hex in upper case, is a duplicate (22).
//! - An independent client: the `stratum` crate's own async TCP client, over a real loopback
//!   TCP connection to a test-only shell around a `ServerSession`. It subscribes, authorizes,
//!   builds headers with its own merkle code and the `bitcoin` crate, and submits shares; the
//!   session accepts them, refuses a duplicate (22) and a low share (23), and a wrong token is
//!   refused (24) and closed. Garbage, an oversized line and a flood of lines close their own
//!   connections while the honest client, at the same time, keeps earning.
//! - `session_throughput` (ignored): the figures in BENCHMARKS.md.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hashgrid_common::stratum::{
    Carving, Id, Job, LineDecoder, Message, Method, MinerShare, Notify, ServerConfig, ServerEvent, ServerJob,
    ServerSession, VardiffConfig,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOG: &str = include_str!("data/stratum/cpuminer-session.log");
const VERIFIED: &str = include_str!("data/stratum/cpuminer-session-verified.json");
const BLOCK_1: &str = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048";
const UPSTREAM_E1: [u8; 4] = [0xc8, 0x58, 0xee, 0xac];

/// The recorded rows: (milliseconds, from the miner?, the line).
fn rows() -> Vec<(u64, bool, &'static str)> {
    LOG.lines()
        .map(|row| {
            let mut parts = row.trim_start().splitn(3, ' ');
            let secs: f64 = parts.next().unwrap().parse().unwrap();
            let from_miner = parts.next() == Some("<");
            ((secs * 1000.0) as u64, from_miner, parts.next().unwrap())
        })
        .collect()
}

/// The recorded jobs in order, each with the difficulty set before it.
fn recorded_jobs() -> VecDeque<(f64, Notify)> {
    let mut difficulty = 1.0;
    let mut jobs = VecDeque::new();
    for (_, _, line) in rows() {
        match Message::from_line(line.as_bytes()).unwrap() {
            Message::Call { method: Method::SetDifficulty(d), .. } => difficulty = d,
            Message::Call { method: Method::Notify(n), .. } => jobs.push_back((difficulty, n)),
            _ => {}
        }
    }
    jobs
}

fn server_job(difficulty: f64, notify: Notify) -> ServerJob {
    ServerJob {
        tag: 0,
        notify,
        extranonce1: UPSTREAM_E1.to_vec(),
        extranonce2_size: 2,
        version_mask: 0,
        pool_difficulty: Some(difficulty),
        share_difficulty: Some(difficulty),
    }
}

/// Replays the miner's recorded lines into a server session, the coordinator's part played by
/// the test: the recorded jobs, the password `x`, every share recorded. Each recorded pool line
/// must be the session's next line.
#[test]
fn the_recorded_cpuminer_session_replays_against_the_server() {
    let verified: Value = serde_json::from_str(VERIFIED).unwrap();
    let verified = verified["shares"].as_array().unwrap();
    let mut config = ServerConfig::new("deadbeef");
    config.adjust_difficulty = false;
    config.vardiff = VardiffConfig { start: 0.0001, min: 0.0001, max: 1.0, ..VardiffConfig::default() };
    config.lines_per_sec = 1000.0;
    config.line_burst = 1000.0;
    config.check().unwrap();
    let mut jobs = recorded_jobs();
    let mut session = ServerSession::new(config, 0);
    // The coordinator has the first job before the miner subscribes.
    let (d, first) = jobs.pop_front().unwrap();
    session.set_job(0, server_job(d, first)).unwrap();

    let mut out: VecDeque<Message> = VecDeque::new();
    let mut our_ids: HashMap<String, String> = HashMap::new();
    let mut shares: Vec<MinerShare> = Vec::new();
    let pump = |session: &mut ServerSession, now: u64, out: &mut VecDeque<Message>, shares: &mut Vec<MinerShare>| {
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::Send(line) => out.push_back(Message::from_line(line.as_bytes()).unwrap()),
                ServerEvent::Authorize { ticket, worker, password } => {
                    session.authorized(now, ticket, worker == "testuser" && password.0 == "x")
                }
                ServerEvent::Share { ticket, share } => {
                    shares.push(*share);
                    session.share_recorded(ticket, Ok(()));
                }
                ServerEvent::Close { reason } => panic!("closed: {reason}"),
                _ => {}
            }
        }
    };
    let mut compared = 0;
    for (now, from_miner, line) in rows() {
        let recorded = Message::from_line(line.as_bytes()).unwrap();
        if from_miner {
            let Message::Call { method, .. } = &recorded else { panic!("{line}") };
            let Method::Submit(submit) = method else {
                session.handle_line(now, line.as_bytes());
                pump(&mut session, now, &mut out, &mut shares);
                continue;
            };
            // The recorded job id, as this session named the job.
            let ours = &our_ids[&submit.job_id];
            let line = line.replace(&format!("\"{}\"", submit.job_id), &format!("\"{ours}\""));
            session.handle_line(now, line.as_bytes());
            pump(&mut session, now, &mut out, &mut shares);
            let share = shares.last().unwrap_or_else(|| panic!("no share for {line}"));
            let row = &verified[shares.len() - 1];
            assert_eq!(share.accepted.header.to_hex(), row["header"].as_str().unwrap());
            assert_eq!(share.accepted.hash.to_string(), row["hash"].as_str().unwrap());
            assert_eq!(share.accepted.share_target.to_hex(), row["target"].as_str().unwrap());
            assert!(share.meets_pool_target);
            assert_eq!(share.upstream_job_id, submit.job_id);
            // The same share, its time and nonce in upper case: a duplicate (answered now, not
            // recorded).
            let mut upper = line.clone();
            for field in [format!("{:08x}", submit.ntime), format!("{:08x}", submit.nonce)] {
                upper = upper.replace(&field, &field.to_uppercase());
            }
            assert_ne!(upper, line);
            session.handle_line(now, upper.as_bytes());
            pump(&mut session, now, &mut out, &mut shares);
            let Some(Message::Response(r)) = out.pop_back() else { panic!("no answer to {upper}") };
            assert_eq!(r.error.map(|e| e.code), Some(22), "{upper}");
        } else {
            if out.is_empty()
                && let Message::Call { method: Method::SetDifficulty(_), .. } = recorded
            {
                // The pool moves on: the coordinator gives the session the next job.
                let (d, next) = jobs.pop_front().unwrap();
                session.set_job(now, server_job(d, next)).unwrap();
                pump(&mut session, now, &mut out, &mut shares);
            }
            let ours = out.pop_front().unwrap_or_else(|| panic!("the session said nothing where the pool said {line}"));
            match (&recorded, &ours) {
                (
                    Message::Call { method: Method::Notify(theirs), .. },
                    Message::Call { id: Id::Null, method: Method::Notify(n) },
                ) => {
                    assert_eq!(&Notify { job_id: theirs.job_id.clone(), ..n.clone() }, theirs);
                    our_ids.insert(theirs.job_id.clone(), n.job_id.clone());
                }
                _ => assert_eq!(ours, recorded, "{line}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 163, "every pool line: 2 handshake answers, 3 × (difficulty, job), 155 share answers");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(shares.len(), 155);
    let block = shares.iter().find(|s| s.upstream_job_id == "b1").unwrap();
    assert_eq!(block.accepted.hash.to_string(), BLOCK_1);
    assert!(block.accepted.meets_block_target);
}

/// A test-only shell: accepts one TCP connection and moves bytes between it and a
/// `ServerSession`, playing the coordinator (jobs, the token, recording shares). Returns the
/// shares it recorded and why the session closed (`None`: the miner hung up).
async fn serve_one(
    listener: TcpListener,
    config: ServerConfig,
    job: ServerJob,
    token: &'static str,
) -> (Vec<MinerShare>, Option<String>) {
    let (stream, _) = listener.accept().await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut decoder = LineDecoder::with_cap(config.max_line);
    let mut session = ServerSession::new(config, now());
    session.set_job(now(), job).unwrap();
    let mut shares = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::Send(line) => write.write_all(line.as_bytes()).await.unwrap(),
                ServerEvent::Authorize { ticket, password, .. } => {
                    session.authorized(now(), ticket, password.0 == token)
                }
                ServerEvent::Share { ticket, share } => {
                    shares.push(*share);
                    session.share_recorded(ticket, Ok(()));
                }
                ServerEvent::Close { reason } => return (shares, Some(reason)),
                _ => {}
            }
        }
        let wait = Duration::from_millis(session.poll_timeout().unwrap().saturating_sub(now()));
        tokio::select! {
            read = read.read(&mut buf) => {
                let n = read.unwrap_or(0);
                if n == 0 {
                    return (shares, None);
                }
                if let Err(e) = decoder.push(&buf[..n]) {
                    return (shares, Some(e.to_string()));
                }
                while let Some(line) = decoder.next_line() {
                    session.handle_line(now(), &line);
                }
            }
            _ = tokio::time::sleep(wait) => session.handle_timeout(now()),
        }
    }
}

/// A valid mainnet address (BIP 173's example) and a worker: the `stratum` crate wants users so.
const USER: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4.rig1";
/// Difficulty 2^-24: about one header in 256 meets it.
const EASY: f64 = 1.0 / 16_777_216.0;

/// The first recorded job, for miner slot 7 of an upstream extranonce2 of 8 bytes.
fn slot_job(carving: Carving) -> ServerJob {
    let (_, notify) = recorded_jobs().pop_front().unwrap();
    let mut extranonce1 = UPSTREAM_E1.to_vec();
    extranonce1.extend(carving.slot_prefix(7));
    ServerJob {
        tag: 42,
        notify,
        extranonce1,
        extranonce2_size: carving.counter_bytes(),
        version_mask: 0,
        pool_difficulty: Some(EASY * 16.0),
        share_difficulty: Some(EASY),
    }
}

fn easy_config() -> ServerConfig {
    let mut config = ServerConfig::new("1");
    config.adjust_difficulty = false;
    config.vardiff = VardiffConfig { start: EASY, min: EASY, ..VardiffConfig::default() };
    config.check().unwrap();
    config
}

fn client(addr: std::net::SocketAddr, password: &str) -> stratum::client::Client {
    stratum::client::Client::new(
        addr.to_string(),
        USER.parse().unwrap(),
        Some(password.into()),
        "independent/1".into(),
        Duration::from_secs(10),
    )
}

fn stratum_code(e: stratum::client::ClientError) -> i32 {
    match e {
        stratum::client::ClientError::Stratum { response } => response.error_code,
        other => panic!("not a Stratum error: {other}"),
    }
}

/// The `stratum` crate's client at `addr`: subscribes, authorizes, takes the job, finds eight
/// shares with its own merkle code and the `bitcoin` crate's header hash, submits them, then a
/// duplicate (22) and a low share (23). Returns the eight nonces.
async fn mine_eight(addr: std::net::SocketAddr, job: &ServerJob) -> Vec<u32> {
    let client = client(addr, "node-token");
    let mut events = client.connect().await.unwrap();
    let (sub, _, _) = client.subscribe().await.unwrap();
    assert_eq!(sub.enonce1.as_bytes(), &job.extranonce1[..]);
    assert_eq!(sub.enonce2_size, job.extranonce2_size);
    client.authorize().await.unwrap();
    let (mut difficulty, mut notify) = (None, None);
    while notify.is_none() {
        match events.recv().await.unwrap() {
            stratum::client::Event::SetDifficulty(d) => difficulty = Some(d),
            stratum::client::Event::Notify(n) => notify = Some(n),
            other => panic!("{other:?}"),
        }
    }
    let (difficulty, n) = (difficulty.expect("set_difficulty before the job"), notify.unwrap());
    // The reference holds a difficulty as a compact target: close, not exact.
    assert!((difficulty.as_f64() / EASY - 1.0).abs() < 1e-3, "{difficulty:?}");
    // The reference's own coinbase, merkle root, header and hash.
    let target = difficulty.to_target();
    let enonce2 = stratum::Extranonce::from_bytes(&[0, 0, 0, 0, 0, 1]);
    let root = stratum::merkle_root(&n.coinb1, &n.coinb2, &sub.enonce1, &enonce2, &n.merkle_branches).unwrap();
    let header = |nonce: u32| bitcoin::block::Header {
        version: n.version.into(),
        prev_blockhash: n.prevhash.clone().into(),
        merkle_root: root.into(),
        time: n.ntime.into(),
        bits: n.nbits.into(),
        nonce,
    };
    let meets = |nonce: u32| target.is_met_by(header(nonce).block_hash());
    let found: Vec<u32> = (0..).filter(|&nonce| meets(nonce)).take(8).collect();
    for &nonce in &found {
        client.submit(n.job_id, enonce2.clone(), n.ntime, nonce.into(), None).await.unwrap();
    }
    let again = client.submit(n.job_id, enonce2.clone(), n.ntime, found[0].into(), None).await;
    assert_eq!(stratum_code(again.unwrap_err()), 22);
    let low = (0..).find(|&nonce| !meets(nonce)).unwrap();
    let low = client.submit(n.job_id, enonce2.clone(), n.ntime, low.into(), None).await;
    assert_eq!(stratum_code(low.unwrap_err()), 23);
    client.disconnect().await;
    found
}

#[tokio::test]
async fn the_stratum_crates_client_mines_through_the_server_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let carving = Carving::new(8);
    let job = slot_job(carving);
    let server = tokio::spawn(serve_one(listener, easy_config(), job.clone(), "node-token"));
    let found =
        tokio::time::timeout(Duration::from_secs(60), mine_eight(addr, &job)).await.expect("the client finished");
    let (shares, closed) = server.await.unwrap();
    assert_eq!(closed, None, "the miner hung up");
    assert_eq!(shares.iter().map(|s| s.submit.nonce).collect::<Vec<_>>(), found);
    // What the coordinator forwards: the slot prefix put back in front of the miner's
    // extranonce2 gives the same header on the upstream job.
    let upstream = Job::new(job.notify.clone(), UPSTREAM_E1.to_vec(), 8, EASY, 0).unwrap();
    for share in &shares {
        assert_eq!(share.tag, 42);
        let e2 = [carving.slot_prefix(7), share.submit.extranonce2.clone()].concat();
        let header = upstream.header(&e2, share.submit.ntime, share.submit.nonce, upstream.notify.version).unwrap();
        assert_eq!(header, share.accepted.header);
        assert_eq!(carving.split(&e2).map(|(slot, _)| slot), Some(7));
    }
}

/// Garbage, an oversized line and a flood each close their own connection, with the reason;
/// an honest miner on its own connection at the same time keeps earning.
#[tokio::test]
async fn garbage_and_floods_close_only_their_own_connection() {
    let job = slot_job(Carving::new(8));
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        servers.push(tokio::spawn(serve_one(listener, easy_config(), job.clone(), "node-token")));
    }
    let hostile = |addr, bytes: Vec<u8>| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The session may close before everything is written: that is the point.
        let _ = stream.write_all(&bytes).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    };
    let garbage = b"{\"id\": 1, \"method\": \"mining.subscribe\", \"params\": [}\n".to_vec();
    let oversized = vec![b'x'; 20_000];
    let flood = b"{\"id\":1,\"method\":\"mining.ping\",\"params\":[]}\n".repeat(400);
    let all = async {
        tokio::join!(
            mine_eight(addrs[3], &job),
            hostile(addrs[0], garbage),
            hostile(addrs[1], oversized),
            hostile(addrs[2], flood)
        )
    };
    let (found, ..) = tokio::time::timeout(Duration::from_secs(60), all).await.expect("every client finished");
    let mut reasons = Vec::new();
    for server in servers {
        reasons.push(server.await.unwrap());
    }
    assert!(reasons[0].1.as_deref().unwrap().contains("malformed"), "{:?}", reasons[0].1);
    assert!(reasons[1].1.as_deref().unwrap().contains("exceeds"), "{:?}", reasons[1].1);
    assert!(reasons[2].1.as_deref().unwrap().contains("limit"), "{:?}", reasons[2].1);
    assert_eq!(reasons[3].1, None, "the honest miner hung up by itself");
    assert_eq!(reasons[3].0.len(), found.len());
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_24_and_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_one(listener, easy_config(), slot_job(Carving::new(8)), "node-token"));
    let test = async {
        let client = client(addr, "guess");
        let mut events = client.connect().await.unwrap();
        client.subscribe().await.unwrap();
        assert_eq!(stratum_code(client.authorize().await.unwrap_err()), 24);
        loop {
            if let stratum::client::Event::Disconnected = events.recv().await.unwrap() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), test).await.expect("the client was disconnected");
    let (shares, closed) = server.await.unwrap();
    assert!(shares.is_empty());
    assert!(closed.unwrap().contains("authorization refused"));
}

/// Throughput of the session itself, for BENCHMARKS.md (prints, asserts nothing about speed):
/// `cargo test --locked --release -p hashgrid-common --test stratum_server session_throughput
/// -- --ignored --nocapture`. 1,000 sessions, subscribed and authorized, each fed `mining.submit`
/// lines in turn on one thread: decode, check (coinbase, merkle root, header, sha256d, target,
/// duplicate), the Share event, the coordinator's `share_recorded`, the `true` line. The
/// reference, in the same run: the bare `ShareVerifier::check` on the same shares, decoded.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn session_throughput() {
    const MINERS: usize = 1_000;
    const PER_MINER: u32 = 200;
    let (_, notify) = recorded_jobs().pop_front().unwrap();
    let mut config = ServerConfig::new("b");
    config.adjust_difficulty = false;
    // 2^-32: every header meets it, so every share is accepted (each still hashed in full).
    config.vardiff = VardiffConfig { start: 1.0 / 4_294_967_296.0, min: 1.0 / 4_294_967_296.0, ..Default::default() };
    config.lines_per_sec = 1e9;
    config.line_burst = 1e9;
    let mut sessions: Vec<ServerSession> = (0..MINERS)
        .map(|i| {
            let mut s = ServerSession::new(config.clone(), 0);
            let mut job = server_job(1.0 / 4_294_967_296.0, notify.clone());
            job.extranonce1.extend((i as u16).to_be_bytes());
            s.set_job(0, job).unwrap();
            s.handle_line(0, br#"{"id":1,"method":"mining.subscribe","params":[]}"#);
            s.handle_line(0, br#"{"id":2,"method":"mining.authorize","params":["w","x"]}"#);
            while let Some(e) = s.poll_event() {
                if let ServerEvent::Authorize { ticket, .. } = e {
                    s.authorized(0, ticket, true);
                }
            }
            s
        })
        .collect();
    let lines: Vec<Vec<u8>> = (0..PER_MINER)
        .map(|nonce| {
            format!(
                r#"{{"id":9,"method":"mining.submit","params":["w","1","0000","{:08x}","{nonce:08x}"]}}"#,
                notify.ntime
            )
            .into_bytes()
        })
        .collect();
    let start = Instant::now();
    let (mut answers, mut accepted) = (0u64, 0u64);
    for line in &lines {
        for s in &mut sessions {
            s.handle_line(1, line);
            while let Some(e) = s.poll_event() {
                match e {
                    ServerEvent::Share { ticket, .. } => {
                        accepted += 1;
                        s.share_recorded(ticket, Ok(()));
                    }
                    ServerEvent::Send(_) => answers += 1,
                    // One hash in 65,536 is above even this target.
                    ServerEvent::Rejected { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    let session_secs = start.elapsed().as_secs_f64();
    assert_eq!(answers, MINERS as u64 * u64::from(PER_MINER));

    // The reference: the verifier alone, on decoded shares of the same jobs.
    let mut verifiers: Vec<hashgrid_common::stratum::ShareVerifier> = (0..MINERS)
        .map(|i| {
            let mut e1 = UPSTREAM_E1.to_vec();
            e1.extend((i as u16).to_be_bytes());
            let mut v = hashgrid_common::stratum::ShareVerifier::default();
            v.add_job(Job::new(notify.clone(), e1, 2, 1.0 / 4_294_967_296.0, 0).unwrap());
            v
        })
        .collect();
    let submits: Vec<hashgrid_common::stratum::Submit> = lines
        .iter()
        .map(|l| match Message::from_line(l).unwrap() {
            Message::Call { method: Method::Submit(s), .. } => {
                hashgrid_common::stratum::Submit { job_id: notify.job_id.clone(), ..s }
            }
            _ => unreachable!(),
        })
        .collect();
    let start = Instant::now();
    let mut passed = 0u64;
    for submit in &submits {
        for v in &mut verifiers {
            passed += u64::from(v.check(submit).is_ok());
        }
    }
    let verifier_secs = start.elapsed().as_secs_f64();
    assert_eq!(passed, accepted);
    let rate = |secs: f64| answers as f64 / secs;
    println!(
        "{MINERS} sessions, {answers} shares ({accepted} accepted): session {:.0} shares/s, verifier alone {:.0} shares/s, ratio {:.2}",
        rate(session_secs),
        rate(verifier_secs),
        verifier_secs / session_secs
    );
}
