//! The Stratum V1 server session, sans I/O: one per miner connection to the coordinator's
//! Stratum port. The coordinator's shell feeds it the miner's lines, the time, the jobs and its
//! answers to authorizations and shares; it hands back lines to write and events.
//!
//! # Calling order
//! - [`ServerSession::new`] when a connection is accepted.
//! - `handle_*` for inputs: [`handle_line`](ServerSession::handle_line) for each line read,
//!   [`handle_timeout`](ServerSession::handle_timeout) when
//!   [`poll_timeout`](ServerSession::poll_timeout)'s deadline passes,
//!   [`handle_disconnect`](ServerSession::handle_disconnect) when the connection is gone.
//! - Mutators, from the coordinator: [`set_job`](ServerSession::set_job) (the miner's work,
//!   with its extranonce slot), [`authorized`](ServerSession::authorized) (the answer to a
//!   [`ServerEvent::Authorize`]), [`share_recorded`](ServerSession::share_recorded) (a
//!   [`ServerEvent::Share`] is credited: only then is the miner told `true`),
//!   [`set_difficulty`](ServerSession::set_difficulty).
//! - [`poll_event`](ServerSession::poll_event) until `None` after each call. A
//!   [`ServerEvent::Close`] means: write the lines queued before it, then close.
//!
//! # The protocol as served
//! - `mining.configure` (BIP 310): version rolling with the mask `upstream ∩ ours ∩ miner's`;
//!   fewer bits than the miner's `min-bit-count` (or none) is `"version-rolling": false`. When
//!   a later job's upstream mask changes that intersection, `mining.set_version_mask` goes out
//!   before the job. Other extensions are answered `false`.
//! - `mining.subscribe`: `[[["mining.set_difficulty", id], ["mining.notify", id]],
//!   extranonce1, extranonce2_size]` from the job in force (the answer waits for the first job);
//!   a resumed session id is not honoured, the miner gets a fresh subscription.
//! - `mining.authorize [worker, password]`: [`ServerEvent::Authorize`]; a refusal is error 24
//!   and a close. `mining.extranonce.subscribe`: `true`, and later extranonce changes are sent
//!   as `mining.set_extranonce` (a miner without it is asked to reconnect instead).
//! - `mining.suggest_difficulty`: honoured within the vardiff bounds, for the following jobs.
//! - The miner's difficulty never exceeds its job's pool difficulty
//!   ([`ServerJob::pool_difficulty`]): the vardiff, a suggestion or the coordinator's setting
//!   above it is brought down to it, so every share the pool would take reaches the
//!   coordinator.
//! - Work starts once subscribed and authorized: `mining.set_difficulty` when the difficulty
//!   changed, then `mining.notify` under a job id of this session's own (lowercase hex). A
//!   difficulty change re-sends the current job under a new id, so it applies at once; each job
//!   keeps the difficulty and version mask it was sent with.
//! - `mining.submit`, checked in order: 25 not subscribed, 24 worker not authorized, then the
//!   [`ShareVerifier`]'s 21 job not found or stale, 20 extranonce2 size, time window, version
//!   bits outside the mask, 23 low difficulty, 22 duplicate (on the values). A rejection is an
//!   error reply; a pass is a [`ServerEvent::Share`], answered once the coordinator has
//!   recorded it.
//! - Unknown methods (and methods only a server sends) get error 20 when they carry an id and
//!   are ignored as notifications; responses from the miner are ignored.
//!
//! # Limits
//! - A line longer than `max_line`, or one that does not decode, closes the connection with
//!   the reason; so do more lines than the token bucket allows (`lines_per_sec`, `line_burst`).
//!   A share that passes the checks gives its token back: it is proof of work at the miner's
//!   difficulty, and that difficulty may not rise above the job's pool difficulty, so a miner
//!   fast for its pool sends more valid shares than the bucket allows and must not be closed
//!   for it (it would be failed, and its capacity re-planned, every few seconds).
//! - No subscribe and authorize within `handshake_timeout_ms`, or no line for
//!   `silence_timeout_ms`: closed.
//! - At most `max_workers` workers and `max_pending` requests awaiting the coordinator.
//! - Only invalid shares for `resend_work_after_ms`: the current job again with `clean_jobs`;
//!   for `reconnect_after_ms`: `client.reconnect`; for `disconnect_after_ms`: closed (ckpool's
//!   60/120/180 s). One valid share ends the streak.
//!
//! Times are milliseconds on any monotonic clock the caller chooses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Map, Value, json};

use super::StratumError;
use super::client::OFFERED_VERSION_MASK;
use super::codec::{Id, MAX_LINE, Message, Response, RpcError};
use super::difficulty::share_target;
use super::job::Job;
use super::method::{Configure, ConfigureResult, MAX_TEXT, Method, Notify, Submit, SubscribeResult};
use super::share::{Accepted, DEFAULT_KEPT_JOBS, DEFAULT_TIME_WINDOW_SECS, Reject, ShareVerifier};
use super::vardiff::{Vardiff, VardiffConfig};
use crate::target::Target;

/// What one miner connection is allowed, and how it is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The subscription id given in `mining.subscribe`'s answer.
    pub session_id: String,
    /// The version bits this side lets miners roll (∩ the upstream's and the miner's).
    pub version_mask: u32,
    /// `mining.subscribe` and a successful `mining.authorize` must both happen within this.
    pub handshake_timeout_ms: u64,
    /// A miner that sends nothing for this long is closed.
    pub silence_timeout_ms: u64,
    /// The longest line accepted (at most [`MAX_LINE`]); the shell's `LineDecoder` uses it too.
    pub max_line: usize,
    /// The token bucket on lines: refilled at `lines_per_sec`, holding at most `line_burst`.
    pub lines_per_sec: f64,
    pub line_burst: f64,
    /// Invalid-share escalation: how long a streak of only invalid shares lasts before the
    /// work is resent, the miner is asked to reconnect, and it is disconnected.
    pub resend_work_after_ms: u64,
    pub reconnect_after_ms: u64,
    pub disconnect_after_ms: u64,
    /// Jobs kept for late shares, current one included.
    pub kept_jobs: usize,
    pub time_window_secs: u32,
    /// Workers one connection may authorize.
    pub max_workers: usize,
    /// Authorizations and shares awaiting the coordinator's answer.
    pub max_pending: usize,
    /// The difficulty's start and bounds, and how it adjusts.
    pub vardiff: VardiffConfig,
    /// Retarget with `vardiff`; when false the difficulty changes only by
    /// `mining.suggest_difficulty` or [`ServerSession::set_difficulty`].
    pub adjust_difficulty: bool,
}

impl ServerConfig {
    pub fn new(session_id: impl Into<String>) -> Self {
        ServerConfig {
            session_id: session_id.into(),
            version_mask: OFFERED_VERSION_MASK,
            handshake_timeout_ms: 30_000,
            silence_timeout_ms: 600_000,
            max_line: 16 * 1024,
            lines_per_sec: 50.0,
            line_burst: 200.0,
            resend_work_after_ms: 60_000,
            reconnect_after_ms: 120_000,
            disconnect_after_ms: 180_000,
            kept_jobs: DEFAULT_KEPT_JOBS,
            time_window_secs: DEFAULT_TIME_WINDOW_SECS,
            max_workers: 16,
            max_pending: 256,
            vardiff: VardiffConfig::default(),
            adjust_difficulty: true,
        }
    }

    /// Checks what a configuration file could get wrong.
    pub fn check(&self) -> Result<(), StratumError> {
        let bad = |what: &'static str| Err(StratumError::Config(what));
        self.vardiff.check()?;
        if self.session_id.len() > MAX_TEXT {
            return bad("stratum: session id too long");
        }
        if self.max_line == 0 || self.max_line > MAX_LINE {
            return bad("stratum: max_line must be in 1..=65536");
        }
        if !(self.lines_per_sec.is_finite() && self.lines_per_sec > 0.0 && self.line_burst >= 1.0) {
            return bad("stratum: lines_per_sec must be positive and line_burst at least 1");
        }
        if !(self.resend_work_after_ms <= self.reconnect_after_ms
            && self.reconnect_after_ms <= self.disconnect_after_ms)
        {
            return bad("stratum: escalation thresholds must not decrease (resend ≤ reconnect ≤ disconnect)");
        }
        if self.max_workers == 0 || self.max_pending == 0 {
            return bad("stratum: max_workers and max_pending must be positive");
        }
        Ok(())
    }
}

/// A job for one miner, from the coordinator: an upstream (or local) notify and the miner's
/// extranonce slot.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerJob {
    /// The coordinator's own reference (account, upstream job); returned with every share.
    pub tag: u64,
    /// The job as the upstream sent it; its `job_id` is the upstream's, its `clean_jobs` is
    /// passed on (set it when the miner moves to another account).
    pub notify: Notify,
    /// Upstream extranonce1 ‖ the miner's slot prefix.
    pub extranonce1: Vec<u8>,
    /// What remains of the upstream extranonce2 after the slot prefix.
    pub extranonce2_size: usize,
    /// The upstream's version mask in force (0: no version rolling).
    pub version_mask: u32,
    /// The upstream pool's difficulty for this job: shares meeting it are to be forwarded.
    pub pool_difficulty: Option<f64>,
    /// The miner's difficulty from this job on (clamped to the vardiff bounds; the vardiff
    /// starts afresh from it); `None` keeps the session's own.
    pub share_difficulty: Option<f64>,
}

/// A share that passed every check, for the coordinator to credit and perhaps forward.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerShare {
    /// The [`ServerJob::tag`] of the job it was found on.
    pub tag: u64,
    pub upstream_job_id: String,
    /// As the miner sent it, decoded (its job id is this session's).
    pub submit: Submit,
    pub accepted: Accepted,
    /// The miner's difficulty on that job (its share target is `accepted.share_target`).
    pub difficulty: f64,
    /// The hash also meets the upstream pool's target.
    pub meets_pool_target: bool,
}

/// A miner's password (the farm's node token): its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// How far a streak of invalid shares has escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Escalation {
    None,
    ResendWork,
    Reconnect,
    Disconnect,
}

/// What the session asks of its shell and the coordinator, or tells them.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A line to write to the miner (ends with `\n`).
    Send(String),
    /// The miner subscribed, with this user agent.
    Subscribed { user_agent: Option<String> },
    /// Check the worker's password; answer with [`ServerSession::authorized`].
    Authorize { ticket: u64, worker: String, password: Password },
    /// Credit the share; answer with [`ServerSession::share_recorded`].
    Share { ticket: u64, share: Box<MinerShare> },
    /// A share was refused (already answered to the miner).
    Rejected { worker: String, reject: Reject },
    /// The miner's difficulty for the following jobs.
    Difficulty(f64),
    /// A streak of invalid shares reached this stage.
    Escalated(Escalation),
    /// Close the connection, for this reason, after writing the lines queued before it.
    Close { reason: String },
}

#[derive(Debug)]
enum Pending {
    Authorize { id: Id, worker: String },
    Share { id: Id },
}

/// Where a job this session sent came from.
#[derive(Debug)]
struct Origin {
    job_id: String,
    tag: u64,
    upstream_job_id: String,
    pool_target: Option<Target>,
}

/// One miner connection's worth of Stratum V1 server state.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    closed: bool,
    created_ms: u64,
    last_heard_ms: u64,
    tokens: f64,
    tokens_ms: u64,
    subscribed: bool,
    /// A `mining.subscribe` waiting for the first job (its extranonce).
    pending_subscribe: Option<Id>,
    extranonce_subscribed: bool,
    /// extranonce1 and extranonce2_size as the miner knows them.
    given: Option<(Vec<u8>, usize)>,
    workers: BTreeSet<String>,
    /// The miner's mask ∩ ours, once version rolling is agreed.
    miner_mask: Option<u32>,
    /// The mask the miner was last told.
    announced_mask: Option<u32>,
    /// The coordinator's current job and its pool target.
    current: Option<(ServerJob, Option<Target>)>,
    sent_difficulty: Option<f64>,
    vardiff: Vardiff,
    jobs: ShareVerifier,
    origins: VecDeque<Origin>,
    next_job: u64,
    next_ticket: u64,
    pending: BTreeMap<u64, Pending>,
    invalid_since: Option<u64>,
    escalation: Escalation,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// A session for a connection accepted at `now_ms`. `config` should have passed
    /// [`ServerConfig::check`].
    pub fn new(config: ServerConfig, now_ms: u64) -> Self {
        let vardiff = Vardiff::new(config.vardiff.clone(), now_ms);
        let jobs = ShareVerifier::new(config.kept_jobs, config.time_window_secs);
        ServerSession {
            tokens: config.line_burst,
            config,
            closed: false,
            created_ms: now_ms,
            last_heard_ms: now_ms,
            tokens_ms: now_ms,
            subscribed: false,
            pending_subscribe: None,
            extranonce_subscribed: false,
            given: None,
            workers: BTreeSet::new(),
            miner_mask: None,
            announced_mask: None,
            current: None,
            sent_difficulty: None,
            vardiff,
            jobs,
            origins: VecDeque::new(),
            next_job: 1,
            next_ticket: 1,
            pending: BTreeMap::new(),
            invalid_since: None,
            escalation: Escalation::None,
            events: VecDeque::new(),
        }
    }

    // Getters.

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// The workers authorized on this connection.
    pub fn workers(&self) -> impl Iterator<Item = &str> {
        self.workers.iter().map(String::as_str)
    }

    /// The difficulty the next job will carry: the vardiff's, never above the current job's
    /// pool difficulty.
    pub fn difficulty(&self) -> f64 {
        let d = self.vardiff.difficulty();
        self.pool_difficulty().map_or(d, |p| d.min(p))
    }

    /// The version mask the next job will carry (0: no rolling).
    pub fn version_mask(&self) -> u32 {
        self.miner_mask.map_or(0, |m| m & self.upstream_mask())
    }

    /// The hashrate measured from accepted shares, hashes per second.
    pub fn hashrate(&self, now_ms: u64) -> f64 {
        self.vardiff.hashrate(now_ms)
    }

    /// extranonce1 and extranonce2_size as the miner knows them.
    pub fn extranonce(&self) -> Option<(&[u8], usize)> {
        self.given.as_ref().map(|(e1, n)| (e1.as_slice(), *n))
    }

    pub fn escalation(&self) -> Escalation {
        self.escalation
    }

    /// The tag of the coordinator's current job for this miner.
    pub fn current_tag(&self) -> Option<u64> {
        self.current.as_ref().map(|(job, _)| job.tag)
    }

    // Inputs.

    /// One line from the miner (with or without its newline).
    pub fn handle_line(&mut self, now_ms: u64, line: &[u8]) {
        if self.closed {
            return;
        }
        self.last_heard_ms = now_ms;
        if line.len() > self.config.max_line + 2 {
            return self.close(format!("line of {} bytes exceeds the {}-byte cap", line.len(), self.config.max_line));
        }
        let refill = now_ms.saturating_sub(self.tokens_ms) as f64 * self.config.lines_per_sec / 1000.0;
        self.tokens = (self.tokens + refill).min(self.config.line_burst);
        self.tokens_ms = now_ms;
        if self.tokens < 1.0 {
            return self.close(format!(
                "more lines than the limit of {} a second (burst {})",
                self.config.lines_per_sec, self.config.line_burst
            ));
        }
        self.tokens -= 1.0;
        match Message::from_line(line) {
            Ok(Message::Call { id, method }) => self.on_call(now_ms, id, method),
            Ok(Message::Response(_)) => {}
            Err(e) => self.close(format!("malformed line from the miner: {e}")),
        }
    }

    /// Deadlines: handshake, silence, vardiff.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.closed {
            return;
        }
        if !self.handshake_done() && now_ms >= self.created_ms.saturating_add(self.config.handshake_timeout_ms) {
            return self.close(format!(
                "no mining.subscribe and mining.authorize within {} ms",
                self.config.handshake_timeout_ms
            ));
        }
        if now_ms >= self.last_heard_ms.saturating_add(self.config.silence_timeout_ms) {
            return self.close(format!("the miner said nothing for {} ms", self.config.silence_timeout_ms));
        }
        if self.config.adjust_difficulty && self.ready() && self.vardiff.handle_timeout(now_ms).is_some() {
            self.difficulty_changed(now_ms);
        }
    }

    /// The connection is gone: nothing more is sent, pending answers are dropped.
    pub fn handle_disconnect(&mut self, _now_ms: u64) {
        self.closed = true;
        self.pending.clear();
    }

    // Mutators (the coordinator).

    /// The miner's work from now on. The first job answers a waiting `mining.subscribe`; once
    /// the miner is subscribed and authorized each job is sent at once. A job whose
    /// extranonce differs from what the miner was given is sent after `mining.set_extranonce`
    /// (with `clean_jobs`) when the miner subscribed to extranonce changes; otherwise the miner
    /// is asked to reconnect and the connection is closed. Refuses a job that cannot be built
    /// (sizes, pool difficulty).
    pub fn set_job(&mut self, now_ms: u64, job: ServerJob) -> Result<(), StratumError> {
        if self.closed {
            return Ok(());
        }
        Job::new(job.notify.clone(), job.extranonce1.clone(), job.extranonce2_size, 1.0, 0)?;
        let pool_target = job.pool_difficulty.map(share_target).transpose()?;
        let extranonce = (job.extranonce1.clone(), job.extranonce2_size);
        let mut clean = job.notify.clean_jobs;
        let share_difficulty = job.share_difficulty;
        self.current = Some((job, pool_target));
        if let Some(d) = share_difficulty {
            self.vardiff.set(now_ms, d);
        }
        if (self.cap_to_pool(now_ms) || share_difficulty.is_some()) && self.sent_difficulty != Some(self.difficulty()) {
            self.events.push_back(ServerEvent::Difficulty(self.difficulty()));
        }
        if let Some(id) = self.pending_subscribe.take() {
            self.answer_subscribe(now_ms, id);
            return Ok(());
        }
        if self.subscribed && self.given.as_ref() != Some(&extranonce) {
            if !self.extranonce_subscribed {
                self.notify(Method::Reconnect { host: None, port: None, wait_secs: None });
                self.close("the miner's extranonce changed and it did not subscribe to extranonce changes".into());
                return Ok(());
            }
            self.notify(Method::SetExtranonce { extranonce1: extranonce.0.clone(), extranonce2_size: extranonce.1 });
            self.given = Some(extranonce);
            clean = true;
        }
        if self.ready() && self.jobs.current().is_some() {
            self.send_job(clean);
        } else {
            self.start_work(now_ms);
        }
        Ok(())
    }

    /// The answer to [`ServerEvent::Authorize`] `ticket`: a refusal is error 24, then a close.
    pub fn authorized(&mut self, now_ms: u64, ticket: u64, ok: bool) {
        if self.closed || !matches!(self.pending.get(&ticket), Some(Pending::Authorize { .. })) {
            return;
        }
        let Some(Pending::Authorize { id, worker }) = self.pending.remove(&ticket) else { return };
        if ok {
            self.workers.insert(worker);
            self.reply(id, json!(true));
            self.start_work(now_ms);
        } else {
            self.reply_err(id, Reject::Unauthorized.to_error());
            self.close(format!("worker {}: authorization refused", truncate(&worker)));
        }
    }

    /// The answer to [`ServerEvent::Share`] `ticket`: `Ok` once the share is recorded (the
    /// miner is told `true`), or the error to tell the miner.
    pub fn share_recorded(&mut self, ticket: u64, result: Result<(), RpcError>) {
        if self.closed || !matches!(self.pending.get(&ticket), Some(Pending::Share { .. })) {
            return;
        }
        let Some(Pending::Share { id }) = self.pending.remove(&ticket) else { return };
        match result {
            Ok(()) => self.reply(id, json!(true)),
            Err(e) => self.reply_err(id, e),
        }
    }

    /// Sets the miner's difficulty (clamped to the vardiff bounds) for the following jobs; the
    /// current job is re-sent under a new id so that it applies at once.
    pub fn set_difficulty(&mut self, now_ms: u64, difficulty: f64) {
        if self.closed {
            return;
        }
        self.vardiff.set(now_ms, difficulty);
        self.difficulty_changed(now_ms);
    }

    // Outputs.

    /// The next event, in the order they arose.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let mut deadline = self.last_heard_ms.saturating_add(self.config.silence_timeout_ms);
        if !self.handshake_done() {
            deadline = deadline.min(self.created_ms.saturating_add(self.config.handshake_timeout_ms));
        }
        if self.config.adjust_difficulty && self.ready() {
            deadline = deadline.min(self.vardiff.poll_timeout());
        }
        Some(deadline)
    }

    // Internals.

    fn handshake_done(&self) -> bool {
        self.subscribed && !self.workers.is_empty()
    }

    /// Subscribed, authorized and given a job: work flows.
    fn ready(&self) -> bool {
        !self.closed && self.handshake_done() && self.current.is_some()
    }

    fn upstream_mask(&self) -> u32 {
        self.current.as_ref().map_or(self.config.version_mask, |(job, _)| job.version_mask)
    }

    fn close(&mut self, reason: String) {
        if !self.closed {
            self.closed = true;
            self.pending.clear();
            self.events.push_back(ServerEvent::Close { reason });
        }
    }

    fn send(&mut self, message: Message) {
        self.events.push_back(ServerEvent::Send(message.to_line()));
    }

    fn reply(&mut self, id: Id, result: Value) {
        if id != Id::Null {
            self.send(Message::Response(Response::ok(id, result)));
        }
    }

    fn reply_err(&mut self, id: Id, error: RpcError) {
        if id != Id::Null {
            self.send(Message::Response(Response::err(id, error)));
        }
    }

    fn notify(&mut self, method: Method) {
        self.send(Message::Call { id: Id::Null, method });
    }

    fn ticket(&mut self, pending: Pending) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.insert(ticket, pending);
        ticket
    }

    fn on_call(&mut self, now_ms: u64, id: Id, method: Method) {
        match method {
            Method::Configure(c) => self.on_configure(id, c),
            Method::Subscribe { user_agent, .. } => {
                self.events.push_back(ServerEvent::Subscribed { user_agent });
                if self.current.is_some() {
                    self.answer_subscribe(now_ms, id);
                } else if self.pending_subscribe.is_none() {
                    self.pending_subscribe = Some(id);
                } else {
                    self.reply_err(id, RpcError::new(20, "mining.subscribe already pending"));
                }
            }
            Method::Authorize { user, password } => self.on_authorize(id, user, password.map(|p| p.0)),
            Method::ExtranonceSubscribe => {
                self.extranonce_subscribed = true;
                self.reply(id, json!(true));
            }
            Method::SuggestDifficulty(d) => {
                self.reply(id, json!(true));
                self.vardiff.set(now_ms, d);
                self.difficulty_changed(now_ms);
            }
            Method::Submit(submit) => self.on_submit(now_ms, id, submit),
            other => {
                let error = RpcError::new(20, format!("method {} not supported", truncate(other.name())));
                self.reply_err(id, error);
            }
        }
    }

    fn on_configure(&mut self, id: Id, c: Configure) {
        let mut result = Map::new();
        for extension in c.extensions.iter().filter(|e| *e != "version-rolling") {
            result.insert(truncate(extension), json!(false));
        }
        if c.extensions.iter().any(|e| e == "version-rolling") {
            let requested = c.version_rolling_mask.unwrap_or(self.config.version_mask) & self.config.version_mask;
            let mask = requested & self.upstream_mask();
            let enough = mask != 0 && mask.count_ones() >= c.version_rolling_min_bit_count.unwrap_or(0);
            self.miner_mask = enough.then_some(requested);
            self.announced_mask = enough.then_some(mask);
            let answer = ConfigureResult { version_rolling_mask: self.announced_mask }.to_result();
            if let Value::Object(answer) = answer {
                result.extend(answer);
            }
        }
        self.reply(id, Value::Object(result));
    }

    fn answer_subscribe(&mut self, now_ms: u64, id: Id) {
        let Some((job, _)) = &self.current else { return };
        let extranonce = (job.extranonce1.clone(), job.extranonce2_size);
        let sid = self.config.session_id.clone();
        let result = SubscribeResult {
            subscriptions: vec![("mining.set_difficulty".into(), sid.clone()), ("mining.notify".into(), sid)],
            extranonce1: extranonce.0.clone(),
            extranonce2_size: extranonce.1,
        };
        self.given = Some(extranonce);
        self.subscribed = true;
        self.reply(id, result.to_result());
        self.start_work(now_ms);
    }

    fn on_authorize(&mut self, id: Id, worker: String, password: Option<String>) {
        if self.workers.contains(&worker) {
            return self.reply(id, json!(true));
        }
        if self.workers.len() >= self.config.max_workers {
            return self.reply_err(id, RpcError::new(20, "too many workers on one connection"));
        }
        if self.pending.len() >= self.config.max_pending {
            return self.reply_err(id, RpcError::new(20, "too many requests awaiting an answer"));
        }
        let ticket = self.ticket(Pending::Authorize { id, worker: worker.clone() });
        let password = Password(password.unwrap_or_default());
        self.events.push_back(ServerEvent::Authorize { ticket, worker, password });
    }

    fn on_submit(&mut self, now_ms: u64, id: Id, submit: Submit) {
        if self.pending.len() >= self.config.max_pending {
            return self.reply_err(id, RpcError::new(20, "too many shares awaiting an answer"));
        }
        match self.check(&submit) {
            Ok(share) => {
                // Work, not chatter: the line's token comes back.
                self.tokens = (self.tokens + 1.0).min(self.config.line_burst);
                self.invalid_since = None;
                self.escalation = Escalation::None;
                let ticket = self.ticket(Pending::Share { id });
                self.events.push_back(ServerEvent::Share { ticket, share: Box::new(share) });
                if self.config.adjust_difficulty && self.vardiff.on_share(now_ms).is_some() {
                    self.difficulty_changed(now_ms);
                }
            }
            Err(reject) => {
                self.reply_err(id, reject.to_error());
                self.events.push_back(ServerEvent::Rejected { worker: submit.worker, reject });
                self.invalid(now_ms);
            }
        }
    }

    /// The checks in order: subscribed, worker authorized, then the verifier's.
    fn check(&mut self, submit: &Submit) -> Result<MinerShare, Reject> {
        if !self.subscribed {
            return Err(Reject::NotSubscribed);
        }
        if !self.workers.contains(&submit.worker) {
            return Err(Reject::Unauthorized);
        }
        let accepted = self.jobs.check(submit)?;
        let origin = self.origins.iter().find(|o| o.job_id == submit.job_id).ok_or(Reject::JobNotFound)?;
        Ok(MinerShare {
            tag: origin.tag,
            upstream_job_id: origin.upstream_job_id.clone(),
            meets_pool_target: origin.pool_target.is_some_and(|t| t.is_met_by(&accepted.hash)),
            difficulty: self.jobs.live_job(&submit.job_id).map_or(0.0, |j| j.difficulty),
            submit: submit.clone(),
            accepted,
        })
    }

    /// An invalid share at `now_ms`: escalates a streak of only invalid shares.
    fn invalid(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(*self.invalid_since.get_or_insert(now_ms));
        let stage = if elapsed >= self.config.disconnect_after_ms {
            Escalation::Disconnect
        } else if elapsed >= self.config.reconnect_after_ms {
            Escalation::Reconnect
        } else if elapsed >= self.config.resend_work_after_ms {
            Escalation::ResendWork
        } else {
            Escalation::None
        };
        if stage <= self.escalation {
            return;
        }
        self.escalation = stage;
        self.events.push_back(ServerEvent::Escalated(stage));
        match stage {
            Escalation::ResendWork if self.ready() => self.send_job(true),
            Escalation::Reconnect => self.notify(Method::Reconnect { host: None, port: None, wait_secs: None }),
            Escalation::Disconnect => self.close(format!("only invalid shares for {} s", elapsed / 1000)),
            _ => {}
        }
    }

    /// The current job's pool difficulty.
    fn pool_difficulty(&self) -> Option<f64> {
        self.current.as_ref().and_then(|(job, _)| job.pool_difficulty)
    }

    /// Brings the vardiff down to the current job's pool difficulty if it is above it (a share
    /// the pool would take must never be refused as low difficulty); whether it did.
    fn cap_to_pool(&mut self, now_ms: u64) -> bool {
        match self.pool_difficulty() {
            Some(pool) if self.vardiff.difficulty() > pool => {
                self.vardiff.set(now_ms, pool);
                true
            }
            _ => false,
        }
    }

    /// The vardiff moved (a retarget, a suggestion, the coordinator): capped to the pool's
    /// difficulty, and the current job re-sent under it if that changed what the miner has.
    fn difficulty_changed(&mut self, now_ms: u64) {
        self.cap_to_pool(now_ms);
        let difficulty = self.difficulty();
        if self.sent_difficulty == Some(difficulty) {
            return;
        }
        self.events.push_back(ServerEvent::Difficulty(difficulty));
        if self.ready() && self.jobs.current().is_some() {
            self.send_job(false);
        }
    }

    /// Sends the first job once subscribed, authorized and given one; the vardiff's evidence
    /// starts there.
    fn start_work(&mut self, now_ms: u64) {
        if self.ready() && self.jobs.current().is_none() {
            let d = self.difficulty();
            self.vardiff.set(now_ms, d);
            self.send_job(true);
        }
    }

    /// Sends the current job under a new id, after `mining.set_version_mask` and
    /// `mining.set_difficulty` where they changed.
    fn send_job(&mut self, clean: bool) {
        let (Some((upstream, pool_target)), Some((extranonce1, extranonce2_size))) = (&self.current, &self.given)
        else {
            return;
        };
        let mask = self.version_mask();
        let difficulty = self.difficulty();
        let job_id = format!("{:x}", self.next_job);
        let notify = Notify { job_id: job_id.clone(), clean_jobs: clean, ..upstream.notify.clone() };
        let origin = Origin {
            job_id,
            tag: upstream.tag,
            upstream_job_id: upstream.notify.job_id.clone(),
            pool_target: *pool_target,
        };
        let job = match Job::new(notify.clone(), extranonce1.clone(), *extranonce2_size, difficulty, mask) {
            Ok(job) => job,
            Err(e) => return self.close(format!("cannot build the miner's job: {e}")),
        };
        self.next_job += 1;
        if self.miner_mask.is_some() && self.announced_mask != Some(mask) {
            self.announced_mask = Some(mask);
            self.notify(Method::SetVersionMask(mask));
        }
        if self.sent_difficulty != Some(difficulty) {
            self.sent_difficulty = Some(difficulty);
            self.notify(Method::SetDifficulty(difficulty));
        }
        self.jobs.add_job(job);
        self.origins.push_back(origin);
        while self.origins.len() > self.config.kept_jobs.max(1) {
            self.origins.pop_front();
        }
        self.notify(Method::Notify(notify));
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
