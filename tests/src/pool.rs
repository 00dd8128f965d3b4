//! A test Stratum V1 pool: a real TCP server on 127.0.0.1 for end-to-end tests of
//! `hashgrid-node mine` (and any other Stratum client).
//!
//! It answers `mining.configure`, `mining.subscribe` and `mining.authorize` (a wrong password is
//! refused), sends `mining.set_difficulty` and `mining.notify` (synthetic jobs, on demand with
//! [`TestPool::new_job`], or any job, a real block's among them, with [`TestPool::send_job`]),
//! and verifies every `mining.submit` with its own code, written straight from the protocol
//! and sharing nothing with `hashgrid_common::stratum`: coinbase concatenation, merkle fold,
//! the header's bytes, sha256d, and a comparison with the target computed exactly from the
//! difficulty as written on the wire. Each submit is recorded with its verdict and the header
//! derived from it. It is the independent check, so it stays plain: one thread per
//! connection, everything under one lock.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ruint::aliases::U512;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The longest line the pool reads.
const MAX_LINE: u64 = 16 * 1024;

/// How the pool answers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    /// Written on the wire as Rust's `Display` writes it; the target is derived from that text.
    pub difficulty: f64,
    /// The version-rolling mask offered to a `mining.configure`; `None` refuses version rolling.
    pub version_mask: Option<u32>,
    /// The one password accepted; `None` accepts any.
    pub password: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            extranonce1: vec![0xc8, 0x58, 0xee, 0xac],
            extranonce2_size: 4,
            difficulty: 0.0001,
            version_mask: Some(0x1fff_e000),
            password: None,
        }
    }
}

/// A job as the pool sent it, in header byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolJob {
    pub id: String,
    /// The previous block hash as it appears in the header.
    pub prev_hash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

impl PoolJob {
    /// The `mining.notify` params.
    pub fn notify_params(&self) -> Value {
        let branch: Vec<String> = self.branch.iter().map(hex::encode).collect();
        json!([
            self.id,
            hex::encode(swap_words(self.prev_hash)),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            branch,
            format!("{:08x}", self.version),
            format!("{:08x}", self.nbits),
            format!("{:08x}", self.ntime),
            self.clean,
        ])
    }

    /// A job from `mining.notify` params (for replaying recorded sessions).
    pub fn from_notify_params(params: &Value) -> Option<PoolJob> {
        let p = params.as_array()?;
        let bytes = |v: &Value| hex::decode(v.as_str()?).ok();
        let hash = |v: &Value| <[u8; 32]>::try_from(bytes(v)?).ok();
        let word = |v: &Value| u32::from_str_radix(v.as_str()?, 16).ok();
        Some(PoolJob {
            id: p.first()?.as_str()?.to_owned(),
            prev_hash: swap_words(hash(p.get(1)?)?),
            coinb1: bytes(p.get(2)?)?,
            coinb2: bytes(p.get(3)?)?,
            branch: p.get(4)?.as_array()?.iter().map(hash).collect::<Option<_>>()?,
            version: word(p.get(5)?)?,
            nbits: word(p.get(6)?)?,
            ntime: word(p.get(7)?)?,
            clean: p.get(8)?.as_bool()?,
        })
    }
}

/// What the pool derived from one submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub coinbase: Vec<u8>,
    /// sha256d order (as in the header).
    pub merkle_root: [u8; 32],
    pub header: [u8; 80],
    /// sha256d order; displayed reversed.
    pub hash: [u8; 32],
    pub target: U512,
    pub meets_target: bool,
}

/// Derives a share's header and hash from a job and the submit's fields and compares the hash
/// with the target of `difficulty` (decimal text, as the pool wrote it).
pub fn derive_share(
    job: &PoolJob,
    extranonce1: &[u8],
    extranonce2: &[u8],
    ntime: u32,
    nonce: u32,
    version: u32,
    difficulty: &str,
) -> Option<Derived> {
    let coinbase = [job.coinb1.as_slice(), extranonce1, extranonce2, job.coinb2.as_slice()].concat();
    let mut root = sha256d(&coinbase);
    for entry in &job.branch {
        root = sha256d(&[root.as_slice(), entry.as_slice()].concat());
    }
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&version.to_le_bytes());
    header[4..36].copy_from_slice(&job.prev_hash);
    header[36..68].copy_from_slice(&root);
    header[68..72].copy_from_slice(&ntime.to_le_bytes());
    header[72..76].copy_from_slice(&job.nbits.to_le_bytes());
    header[76..80].copy_from_slice(&nonce.to_le_bytes());
    let hash = sha256d(&header);
    let target = difficulty_target(difficulty)?;
    let meets_target = U512::from_le_slice(&hash) <= target;
    Some(Derived { coinbase, merkle_root: root, header, hash, target, meets_target })
}

/// The share target of a difficulty written in decimal: floor(0xffff·2^208 / d), exactly.
pub fn difficulty_target(text: &str) -> Option<U512> {
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
        || fraction.len() > 40
    {
        return None;
    }
    let numerator: U512 = format!("{whole}{fraction}").parse().ok()?;
    if numerator.is_zero() {
        return None;
    }
    let denominator = U512::from(10u8).pow(U512::from(fraction.len()));
    let diff1 = U512::from(0xffffu32) << 208;
    Some(diff1 * denominator / numerator)
}

fn sha256d(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(bytes)).into()
}

/// Reverses the byte order of each 4-byte word (Stratum's prevhash encoding).
fn swap_words(mut bytes: [u8; 32]) -> [u8; 32] {
    for word in bytes.chunks_mut(4) {
        word.reverse();
    }
    bytes
}

/// What the pool made of a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Unknown or malformed job, wrong sizes, version bits outside the mask, or a hash above
    /// the target: the reason.
    Invalid(String),
    Duplicate,
    /// For a job revoked by a later `clean_jobs` one.
    Stale,
    Unauthorized,
}

/// One submit the pool received, in arrival order.
#[derive(Debug, Clone)]
pub struct ShareRecord {
    pub worker: String,
    pub job_id: String,
    pub verdict: Verdict,
    /// The header the pool derived from the submit, for one that got as far as hashing.
    pub header: Option<[u8; 80]>,
}

/// Shares per verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub valid: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub stale: u64,
    pub unauthorized: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Newest last; `bool`: revoked.
    jobs: Vec<(PoolJob, bool)>,
    next_job: u32,
    clients: Vec<Arc<Mutex<TcpStream>>>,
    shares: Vec<ShareRecord>,
    seen: HashSet<(String, Vec<u8>, u32, u32, u32)>,
    authorized_failures: u64,
    authorized: u64,
}

#[derive(Debug)]
struct Shared {
    config: PoolConfig,
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running pool; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct TestPool {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl PoolConfig {
    /// A pool with these extranonces and difficulty that accepts only `password`.
    pub fn with_password(extranonce1: &[u8], extranonce2_size: usize, difficulty: f64, password: &str) -> Self {
        PoolConfig {
            extranonce1: extranonce1.to_vec(),
            extranonce2_size,
            difficulty,
            password: Some(password.into()),
            ..PoolConfig::default()
        }
    }
}

impl TestPool {
    /// Listens on 127.0.0.1 (a free port), with a first job ready.
    pub fn start(config: PoolConfig) -> TestPool {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test pool");
        let addr = listener.local_addr().expect("the test pool's address");
        let shared = Arc::new(Shared { config, state: Mutex::new(State::default()), stop: AtomicBool::new(false) });
        let pool = TestPool { addr, shared: shared.clone() };
        pool.new_job(true);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(&shared, stream));
            }
        });
        pool
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `stratum+tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("stratum+tcp://{}", self.addr)
    }

    /// Makes a new synthetic job (a new previous block when `clean`), sends it to every
    /// connected client and returns its id.
    pub fn new_job(&self, clean: bool) -> String {
        let mut state = self.shared.state();
        let n = state.next_job;
        state.next_job += 1;
        let prev_seed = state.jobs.iter().filter(|(j, _)| j.clean).count() as u32 + u32::from(clean);
        let job = PoolJob {
            id: format!("j{n}"),
            prev_hash: sha256d(&prev_seed.to_le_bytes()),
            coinb1: [&[1, 0, 0, 0, 1][..], &[0; 32], &[0xff; 4], &[0x16, 0x03], &n.to_le_bytes()[..3]].concat(),
            coinb2: [&b"\x0b/test-pool/"[..], &[0xff; 4], &[1, 0x20, 0x5f, 0xa0, 0x12], &[0; 8]].concat(),
            branch: vec![sha256d(b"branch 0"), sha256d(&n.to_le_bytes())],
            version: 0x2000_0000,
            nbits: 0x1d00_ffff,
            ntime: 0x6b11_2400 + n,
            clean,
        };
        drop(state);
        self.send_job(job)
    }

    /// Sends `job` (e.g. one replayed from a recorded session) to every connected client, and
    /// to every client that subscribes later until the next job; its id.
    pub fn send_job(&self, job: PoolJob) -> String {
        let mut state = self.shared.state();
        if job.clean {
            for (_, revoked) in &mut state.jobs {
                *revoked = true;
            }
        }
        state.jobs.push((job.clone(), false));
        let line = call("mining.notify", job.notify_params());
        state.clients.retain(|client| send(client, &line));
        job.id
    }

    /// Every submit so far, in arrival order.
    pub fn shares(&self) -> Vec<ShareRecord> {
        self.shared.state().shares.clone()
    }

    /// The counts of one worker's submits.
    pub fn counts(&self, worker: &str) -> Counts {
        let mut counts = Counts::default();
        for share in self.shared.state().shares.iter().filter(|s| s.worker == worker) {
            *match share.verdict {
                Verdict::Valid => &mut counts.valid,
                Verdict::Invalid(_) => &mut counts.invalid,
                Verdict::Duplicate => &mut counts.duplicate,
                Verdict::Stale => &mut counts.stale,
                Verdict::Unauthorized => &mut counts.unauthorized,
            } += 1;
        }
        counts
    }

    /// Per worker counts.
    pub fn all_counts(&self) -> BTreeMap<String, Counts> {
        let workers: HashSet<String> = self.shared.state().shares.iter().map(|s| s.worker.clone()).collect();
        workers.into_iter().map(|w| (w.clone(), self.counts(&w))).collect()
    }

    /// How many authorizations were refused.
    pub fn refused_authorizations(&self) -> u64 {
        self.shared.state().authorized_failures
    }

    /// How many authorizations were accepted (one per connection of a single-worker miner).
    pub fn authorizations(&self) -> u64 {
        self.shared.state().authorized
    }

    /// Drops every client connection (as a pool restart would).
    pub fn disconnect_all(&self) {
        for client in self.shared.state().clients.drain(..) {
            let _ = client.lock().map(|s| s.shutdown(Shutdown::Both));
        }
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        self.disconnect_all();
    }
}

fn call(method: &str, params: Value) -> String {
    json!({"id": null, "method": method, "params": params}).to_string()
}

/// Writes one line; `false` once the client is gone.
fn send(client: &Mutex<TcpStream>, line: &str) -> bool {
    let Ok(mut stream) = client.lock() else { return false };
    stream.write_all(format!("{line}\n").as_bytes()).is_ok()
}

/// One connection's session: request by request until it closes or the pool stops.
fn serve(shared: &Shared, stream: TcpStream) {
    let Ok(writer) = stream.try_clone() else { return };
    let writer = Arc::new(Mutex::new(writer));
    let mut reader = BufReader::new(stream);
    let mut version_mask = 0u32;
    let mut authorized: HashSet<String> = HashSet::new();
    let config = &shared.config;
    let difficulty = format!("{}", config.difficulty);
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with(b"\n") => return, // over the cap
            Ok(_) => {}
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(request) = serde_json::from_slice::<Value>(&line) else { return };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        let reply = |result: Value, error: Value| json!({"id": id, "result": result, "error": error}).to_string();
        let str_param = |i: usize| params.get(i).and_then(Value::as_str).unwrap_or_default().to_owned();
        match request.get("method").and_then(Value::as_str).unwrap_or_default() {
            "mining.configure" => {
                let asked = params
                    .get(1)
                    .and_then(|p| p.get("version-rolling.mask"))
                    .and_then(Value::as_str)
                    .and_then(|m| u32::from_str_radix(m, 16).ok())
                    .unwrap_or(u32::MAX);
                let result = match config.version_mask {
                    Some(mask) => {
                        version_mask = mask & asked;
                        json!({"version-rolling": true, "version-rolling.mask": format!("{version_mask:08x}")})
                    }
                    None => json!({"version-rolling": false}),
                };
                send(&writer, &reply(result, Value::Null));
            }
            "mining.subscribe" => {
                let result = json!([
                    [["mining.set_difficulty", "d1"], ["mining.notify", "n1"]],
                    hex::encode(&config.extranonce1),
                    config.extranonce2_size,
                ]);
                send(&writer, &reply(result, Value::Null));
            }
            "mining.authorize" => {
                let ok = config.password.as_ref().is_none_or(|p| *p == str_param(1));
                if !ok {
                    shared.state().authorized_failures += 1;
                    send(&writer, &reply(Value::Bool(false), json!([24, "wrong password", null])));
                    continue;
                }
                authorized.insert(str_param(0));
                send(&writer, &reply(Value::Bool(true), Value::Null));
                let mut state = shared.state();
                state.authorized += 1;
                send(&writer, &format!(r#"{{"id":null,"method":"mining.set_difficulty","params":[{difficulty}]}}"#));
                if let Some((job, _)) = state.jobs.last() {
                    let job = PoolJob { clean: true, ..job.clone() };
                    send(&writer, &call("mining.notify", job.notify_params()));
                }
                state.clients.push(writer.clone());
            }
            "mining.submit" => {
                let worker = str_param(0);
                let job_id = str_param(1);
                let (verdict, header) = if authorized.contains(&worker) {
                    check_submit(shared, &params, version_mask, &difficulty)
                } else {
                    (Verdict::Unauthorized, None)
                };
                let answer = match &verdict {
                    Verdict::Valid => reply(Value::Bool(true), Value::Null),
                    Verdict::Invalid(reason) => reply(Value::Null, json!([23, reason, null])),
                    Verdict::Duplicate => reply(Value::Null, json!([22, "duplicate share", null])),
                    Verdict::Stale => reply(Value::Null, json!([21, "stale job", null])),
                    Verdict::Unauthorized => reply(Value::Null, json!([24, "unauthorized worker", null])),
                };
                shared.state().shares.push(ShareRecord { worker, job_id, verdict, header });
                send(&writer, &answer);
            }
            _ => {
                send(&writer, &reply(Value::Null, json!([20, "unsupported method", null])));
            }
        }
    }
}

/// `[worker, job_id, extranonce2, ntime, nonce, version_bits?]` against the pool's jobs; with
/// the header derived, once the submit got that far.
fn check_submit(shared: &Shared, params: &Value, version_mask: u32, difficulty: &str) -> (Verdict, Option<[u8; 80]>) {
    let invalid = |reason: &str| (Verdict::Invalid(reason.into()), None);
    let field = |i: usize| params.get(i).and_then(Value::as_str);
    let word = |i: usize| field(i).filter(|s| s.len() == 8).and_then(|s| u32::from_str_radix(s, 16).ok());
    let mut state = shared.state();
    let Some((job, revoked)) = field(1).and_then(|id| state.jobs.iter().rev().find(|(j, _)| j.id == id)).cloned()
    else {
        return invalid("job not found");
    };
    if revoked {
        return (Verdict::Stale, None);
    }
    let Some(extranonce2) = field(2).and_then(|s| hex::decode(s).ok()) else {
        return invalid("extranonce2 is not hex");
    };
    if extranonce2.len() != shared.config.extranonce2_size {
        return invalid(&format!("extranonce2 of {} bytes", extranonce2.len()));
    }
    let (Some(ntime), Some(nonce)) = (word(3), word(4)) else {
        return invalid("ntime or nonce is not 8 hex digits");
    };
    if ntime < job.ntime || ntime > job.ntime + 7000 {
        return invalid("ntime out of range");
    }
    let version = match params.get(5) {
        None | Some(Value::Null) => job.version,
        Some(_) => match word(5) {
            Some(bits) if bits & !version_mask == 0 => (job.version & !version_mask) | bits,
            _ => return invalid("version bits outside the mask"),
        },
    };
    let extranonce1 = shared.config.extranonce1.clone();
    let Some(derived) = derive_share(&job, &extranonce1, &extranonce2, ntime, nonce, version, difficulty) else {
        return invalid("bad difficulty");
    };
    let verdict = if !derived.meets_target {
        Verdict::Invalid("hash above the target".into())
    } else if !state.seen.insert((job.id.clone(), extranonce2, ntime, nonce, version)) {
        Verdict::Duplicate
    } else {
        Verdict::Valid
    };
    (verdict, Some(derived.header))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../common/tests/data/stratum/");

    fn display(hash: [u8; 32]) -> String {
        let mut reversed = hash;
        reversed.reverse();
        hex::encode(reversed)
    }

    /// Replays the recorded cpuminer session: every submit derives the recorded coinbase,
    /// merkle root, header, hash and target, and meets it.
    #[test]
    fn verifier_agrees_with_the_recorded_session() {
        let log = std::fs::read_to_string(format!("{DATA}cpuminer-session.log")).unwrap();
        let verified: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{DATA}cpuminer-session-verified.json")).unwrap())
                .unwrap();
        let extranonce1 = hex::decode(verified["extranonce1"].as_str().unwrap()).unwrap();
        let rows = verified["shares"].as_array().unwrap();
        let (mut jobs, mut difficulty, mut checked) = (BTreeMap::new(), String::new(), 0);
        for line in log.lines() {
            let json = &line[line.find('{').unwrap()..];
            let message: Value = serde_json::from_str(json).unwrap();
            let params = &message["params"];
            match message["method"].as_str() {
                Some("mining.set_difficulty") => difficulty = params[0].to_string(),
                Some("mining.notify") => {
                    let job = PoolJob::from_notify_params(params).unwrap();
                    assert_eq!(PoolJob::from_notify_params(&job.notify_params()).as_ref(), Some(&job));
                    jobs.insert(job.id.clone(), job);
                }
                Some("mining.submit") => {
                    let row = &rows[checked];
                    assert_eq!(&row["submit"], params);
                    assert_eq!(row["difficulty"].to_string(), difficulty);
                    let word = |i: usize| u32::from_str_radix(params[i].as_str().unwrap(), 16).unwrap();
                    let job = &jobs[params[1].as_str().unwrap()];
                    let extranonce2 = hex::decode(params[2].as_str().unwrap()).unwrap();
                    let d = derive_share(job, &extranonce1, &extranonce2, word(3), word(4), job.version, &difficulty)
                        .unwrap();
                    assert_eq!(hex::encode(&d.coinbase), row["coinbase"].as_str().unwrap());
                    assert_eq!(display(d.merkle_root), row["merkle_root"].as_str().unwrap());
                    assert_eq!(hex::encode(d.header), row["header"].as_str().unwrap());
                    assert_eq!(display(d.hash), row["hash"].as_str().unwrap());
                    assert_eq!(format!("{:064x}", d.target), row["target"].as_str().unwrap());
                    assert!(d.meets_target);
                    // One nonce off no longer meets the target (all but certainly).
                    let off =
                        derive_share(job, &extranonce1, &extranonce2, word(3), word(4) ^ 1, job.version, &difficulty);
                    assert!(!off.unwrap().meets_target);
                    checked += 1;
                }
                _ => {}
            }
        }
        assert_eq!(checked, rows.len());
        assert_eq!(checked, 155);
    }

    #[test]
    fn difficulty_targets() {
        let diff1 = U512::from(0xffffu32) << 208;
        assert_eq!(difficulty_target("1"), Some(diff1));
        assert_eq!(difficulty_target("1.0"), Some(diff1));
        assert_eq!(difficulty_target("0.5"), Some(diff1 * U512::from(2u8)));
        assert_eq!(difficulty_target("65536"), Some(diff1 >> 16));
        for bad in ["0", "0.0", "", ".", "-1", "1e-4", "x"] {
            assert_eq!(difficulty_target(bad), None, "{bad}");
        }
    }

    /// The pool's own verdicts over TCP: a wrong share is invalid, a valid one (found here by
    /// brute force) is valid once and then a duplicate, a revoked job's share is stale.
    #[test]
    fn pool_verdicts_over_tcp() {
        let pool =
            TestPool::start(PoolConfig { password: Some("pw".into()), difficulty: 0.000001, ..PoolConfig::default() });
        let stream = TcpStream::connect(pool.addr()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut ask = |request: Value| {
            writeln!(writer, "{request}").unwrap();
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                let done = v["id"] == request["id"];
                lines.push(v);
                if done {
                    return lines.pop().unwrap();
                }
            }
        };
        ask(json!({"id": 1, "method": "mining.subscribe", "params": []}));
        let refused = ask(json!({"id": 2, "method": "mining.authorize", "params": ["w", "bad"]}));
        assert_eq!(refused["result"], false);
        assert_eq!(pool.refused_authorizations(), 1);
        let ok = ask(json!({"id": 3, "method": "mining.authorize", "params": ["w", "pw"]}));
        assert_eq!(ok["result"], true);
        let job = pool.shared.state().jobs.last().unwrap().0.clone();
        let en1 = pool.shared.config.extranonce1.clone();
        let nonce = (0u32..)
            .find(|&n| derive_share(&job, &en1, &[0; 4], job.ntime, n, job.version, "0.000001").unwrap().meets_target)
            .unwrap();
        let submit = |id: u32, nonce: u32| {
            json!({"id": id, "method": "mining.submit",
                   "params": ["w", job.id, "00000000", format!("{:08x}", job.ntime), format!("{nonce:08x}")]})
        };
        assert_eq!(ask(submit(4, nonce))["result"], true);
        assert_eq!(ask(submit(5, nonce))["error"][0], 22);
        assert_eq!(ask(submit(6, nonce + 1))["error"][0], 23);
        pool.new_job(true);
        let stale = ask(submit(7, nonce));
        assert_eq!(stale["error"][0], 21);
        let counts = pool.counts("w");
        assert_eq!(counts, Counts { valid: 1, invalid: 1, duplicate: 1, stale: 1, unauthorized: 0 });
    }
}
