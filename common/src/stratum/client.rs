//! The Stratum V1 client session, sans I/O: the coordinator's upstream pool connection and
//! `hashgrid-node mine` both drive one per pool connection.
//!
//! # Calling order
//! - [`ClientSession::connect`] when a connection is up: it queues the first request.
//! - `handle_*` for inputs: [`handle_line`](ClientSession::handle_line) for each line read,
//!   [`handle_timeout`](ClientSession::handle_timeout) when [`poll_timeout`](ClientSession::poll_timeout)'s
//!   deadline passes, [`handle_disconnect`](ClientSession::handle_disconnect) when the
//!   connection is gone.
//! - [`submit`](ClientSession::submit) to send a share (it is checked first, locally).
//! - [`poll_event`](ClientSession::poll_event) until `None` after each call: lines to write,
//!   state changes, jobs, submit outcomes, reconnect requests, closes.
//!
//! Times are milliseconds on any monotonic clock the caller chooses.
//!
//! # The protocol as followed
//! - `mining.configure` first, offering version rolling with [`OFFERED_VERSION_MASK`]; the mask
//!   in force is the pool's ∩ ours. An error, a refusal, or no answer within
//!   `configure_timeout_ms` means no version rolling (a late answer is ignored).
//! - `mining.subscribe [agent, session id]`, the session id of the previous subscription when
//!   reconnecting; then `mining.extranonce.subscribe` (when configured) and `mining.authorize`.
//!   A refused authorization is the state [`ClientState::Unauthorized`].
//! - `mining.set_difficulty` and `mining.set_extranonce` apply to the jobs that follow; each
//!   [`Job`] carries the values in force when it arrived. `mining.set_version_mask` changes the
//!   mask (∩ ours) for following jobs when version rolling was agreed.
//! - `mining.notify` → [`ClientEvent::Job`]; `clean_jobs` or a new previous block revokes every
//!   older job. A few past jobs are kept for late shares.
//! - `client.reconnect` is followed only to the same host (or none given).
//! - Submits are never retried: each gets exactly one outcome, accepted, rejected (with the
//!   pool's code and reason), or unknown (no answer within `submit_timeout_ms`, or the
//!   connection dropped first).
//! - A pool that sends nothing for `silence_timeout_ms` is closed ([`ClientEvent::Close`]).
//! - A line that does not decode closes the connection with the decoder's reason.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde_json::json;

use super::codec::{Id, Line, Message, Response, RpcError};
use super::job::Job;
use super::method::{Configure, ConfigureResult, Method, Notify, Submit, SubscribeResult};
use super::server::Password;
use super::share::{DEFAULT_TIME_WINDOW_SECS, Reject, ShareVerifier};

/// The version bits hashgrid offers to roll (BIP 320's general-purpose bits 13..28).
pub const OFFERED_VERSION_MASK: u32 = 0x1fff_e000;

/// What a session needs to know about its pool and itself. Its `Debug` never shows the
/// password.
#[derive(Clone)]
pub struct ClientConfig {
    /// The pool's host, as connected to: `client.reconnect` is followed only to it.
    pub host: String,
    pub user: String,
    pub password: String,
    pub user_agent: String,
    /// Offer BIP 310 version rolling.
    pub version_rolling: bool,
    /// Send `mining.extranonce.subscribe` (some pools drop connections that send it).
    pub extranonce_subscribe: bool,
    pub configure_timeout_ms: u64,
    pub submit_timeout_ms: u64,
    pub silence_timeout_ms: u64,
    /// Jobs kept for late shares, current one included.
    pub kept_jobs: usize,
    /// A session id from an earlier connection to this pool, offered in `mining.subscribe`.
    pub resume_id: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("password", &Password(String::new()))
            .field("user_agent", &self.user_agent)
            .field("version_rolling", &self.version_rolling)
            .field("extranonce_subscribe", &self.extranonce_subscribe)
            .field("resume_id", &self.resume_id)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    pub fn new(host: impl Into<String>, user: impl Into<String>, password: impl Into<String>) -> Self {
        ClientConfig {
            host: host.into(),
            user: user.into(),
            password: password.into(),
            user_agent: concat!("hashgrid/", env!("CARGO_PKG_VERSION")).into(),
            version_rolling: true,
            extranonce_subscribe: false,
            configure_timeout_ms: 3_000,
            submit_timeout_ms: 30_000,
            silence_timeout_ms: 90_000,
            kept_jobs: 4,
            resume_id: None,
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    Disconnected,
    Configuring,
    Subscribing,
    Authorizing,
    /// Subscribed and authorized: jobs are live and shares may be submitted.
    Ready,
    /// The pool refused the credentials; no share is submitted.
    Unauthorized {
        reason: String,
    },
}

/// The one outcome each submit gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    Accepted,
    Rejected {
        code: i64,
        reason: String,
    },
    /// No answer in time, or the connection dropped before one: never counted as accepted.
    Unknown,
}

/// What the session asks of its shell, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A line to write to the pool (ends with `\n`).
    Send(Line),
    State(ClientState),
    /// A new job; `revoke_older` says every older job is no longer worth searching.
    Job {
        job: Job,
        revoke_older: bool,
    },
    /// The outcome of the submit with this ticket (from [`ClientSession::submit`]).
    Submitted {
        ticket: u64,
        outcome: SubmitOutcome,
    },
    /// The pool asked to reconnect to the same host (on `port` if given) after `wait_secs`.
    Reconnect {
        port: Option<u16>,
        wait_secs: u64,
    },
    /// Close the connection, for this reason; then call `handle_disconnect`.
    Close {
        reason: String,
    },
    /// Something the pool said or did that an operator may want to see.
    Notice(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Configure,
    Subscribe,
    ExtranonceSubscribe,
    Authorize,
    Submit,
}

/// One connection's worth of Stratum V1 client state, and what carries over reconnects.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: ClientState,
    next_id: u64,
    /// Request id → what it was and when it stops being waited for.
    pending: BTreeMap<u64, (Pending, u64)>,
    last_heard_ms: u64,
    connected: bool,
    version_mask: u32,
    rolling_agreed: bool,
    difficulty: f64,
    subscription: Option<SubscribeResult>,
    /// The session id to resume on the next connection.
    resume_id: Option<String>,
    jobs: ShareVerifier,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    pub fn new(config: ClientConfig) -> Self {
        let jobs = ShareVerifier::new(config.kept_jobs, DEFAULT_TIME_WINDOW_SECS);
        let resume_id = config.resume_id.clone();
        ClientSession {
            config,
            state: ClientState::Disconnected,
            next_id: 1,
            pending: BTreeMap::new(),
            last_heard_ms: 0,
            connected: false,
            version_mask: 0,
            rolling_agreed: false,
            difficulty: 1.0,
            subscription: None,
            resume_id,
            jobs,
            events: VecDeque::new(),
        }
    }

    // Getters.

    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// The version mask in force (0 when not rolling).
    pub fn version_mask(&self) -> u32 {
        self.version_mask
    }

    /// The difficulty that the next job will carry.
    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    /// extranonce1 and extranonce2_size for the next job, once subscribed.
    pub fn extranonce(&self) -> Option<(&[u8], usize)> {
        self.subscription.as_ref().map(|s| (s.extranonce1.as_slice(), s.extranonce2_size))
    }

    /// The session id a reconnect will resume.
    pub fn resume_id(&self) -> Option<&str> {
        self.resume_id.as_deref()
    }

    /// A kept job that is still live.
    pub fn job(&self, job_id: &str) -> Option<&Job> {
        self.jobs.live_job(job_id)
    }

    /// The newest job.
    pub fn current_job(&self) -> Option<&Job> {
        self.jobs.current()
    }

    // Inputs.

    /// A connection is up: starts the handshake (ending the previous connection first, if the
    /// shell did not report its end).
    pub fn connect(&mut self, now_ms: u64) {
        // A new connection without word of the old one's end: the old one ended all the same,
        // and its unanswered submits are unknown.
        self.handle_disconnect(now_ms);
        self.connected = true;
        self.last_heard_ms = now_ms;
        self.pending.clear();
        self.version_mask = 0;
        self.rolling_agreed = false;
        self.subscription = None;
        self.jobs = ShareVerifier::new(self.config.kept_jobs, DEFAULT_TIME_WINDOW_SECS);
        if self.config.version_rolling {
            let deadline = now_ms.saturating_add(self.config.configure_timeout_ms);
            self.request(
                Pending::Configure,
                deadline,
                Method::Configure(Configure::version_rolling(OFFERED_VERSION_MASK)),
            );
            self.set_state(ClientState::Configuring);
        } else {
            self.subscribe();
        }
    }

    /// One line from the pool.
    pub fn handle_line(&mut self, now_ms: u64, line: &[u8]) {
        if !self.connected {
            return;
        }
        self.last_heard_ms = now_ms;
        match Message::from_line(line) {
            Ok(Message::Response(r)) => self.on_response(r),
            Ok(Message::Call { id, method }) => self.on_call(id, method),
            Err(e) => self.close(format!("malformed line from the pool: {e}")),
        }
    }

    /// Deadlines: configure answer, submit answers, silence.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.connected {
            return;
        }
        let expired: Vec<(u64, Pending)> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now_ms)
            .map(|(&id, &(p, _))| (id, p))
            .collect();
        for (id, what) in expired {
            self.pending.remove(&id);
            match what {
                Pending::Configure => {
                    self.events
                        .push_back(ClientEvent::Notice("no answer to mining.configure: no version rolling".into()));
                    self.subscribe();
                }
                Pending::Submit => {
                    self.events.push_back(ClientEvent::Submitted { ticket: id, outcome: SubmitOutcome::Unknown })
                }
                _ => {}
            }
        }
        if now_ms >= self.last_heard_ms.saturating_add(self.config.silence_timeout_ms) {
            self.close(format!("the pool said nothing for {} ms", self.config.silence_timeout_ms));
        }
    }

    /// The connection is gone: unanswered submits become unknown and every job is dropped.
    pub fn handle_disconnect(&mut self, _now_ms: u64) {
        if !self.connected {
            return;
        }
        self.connected = false;
        for (id, (what, _)) in std::mem::take(&mut self.pending) {
            if what == Pending::Submit {
                self.events.push_back(ClientEvent::Submitted { ticket: id, outcome: SubmitOutcome::Unknown });
            }
        }
        self.jobs = ShareVerifier::new(self.config.kept_jobs, DEFAULT_TIME_WINDOW_SECS);
        self.set_state(ClientState::Disconnected);
    }

    /// Checks a share locally (job live, sizes, time, version bits, the job's pool target,
    /// duplicate) and, when it passes, sends it as `mining.submit` with this session's user as
    /// the worker. Returns the ticket its outcome will name.
    pub fn submit(&mut self, now_ms: u64, share: Submit) -> Result<u64, Reject> {
        match self.state {
            ClientState::Ready => {}
            ClientState::Unauthorized { .. } | ClientState::Authorizing => return Err(Reject::Unauthorized),
            _ => return Err(Reject::NotSubscribed),
        }
        let share = Submit { worker: self.config.user.clone(), ..share };
        self.jobs.check(&share)?;
        let deadline = now_ms.saturating_add(self.config.submit_timeout_ms);
        Ok(self.request(Pending::Submit, deadline, Method::Submit(share)))
    }

    // Outputs.

    /// The next event, in the order they arose.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let silence = self.last_heard_ms.saturating_add(self.config.silence_timeout_ms);
        Some(self.pending.values().map(|&(_, deadline)| deadline).fold(silence, u64::min))
    }

    // Internals.

    fn set_state(&mut self, state: ClientState) {
        if self.state != state {
            self.state = state.clone();
            self.events.push_back(ClientEvent::State(state));
        }
    }

    fn close(&mut self, reason: String) {
        self.events.push_back(ClientEvent::Close { reason });
        self.handle_disconnect(0);
    }

    fn send(&mut self, message: Message) {
        self.events.push_back(ClientEvent::Send(Line(message.to_line())));
    }

    fn request(&mut self, what: Pending, deadline_ms: u64, method: Method) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, (what, deadline_ms));
        self.send(Message::Call { id: Id::from(id), method });
        id
    }

    fn subscribe(&mut self) {
        let method =
            Method::Subscribe { user_agent: Some(self.config.user_agent.clone()), session_id: self.resume_id.clone() };
        // Handshake answers are bounded by the silence deadline, not by their own.
        self.request(Pending::Subscribe, u64::MAX, method);
        self.set_state(ClientState::Subscribing);
    }

    fn on_response(&mut self, r: Response) {
        let Some((what, _)) = r.id.as_u64().and_then(|id| self.pending.remove(&id)) else {
            return; // an answer to nothing we wait for (late, or a pool's own numbering)
        };
        match what {
            Pending::Configure => {
                let mask =
                    if r.error.is_none() { ConfigureResult::from_result(&r.result).version_rolling_mask } else { None };
                self.rolling_agreed = mask.is_some();
                self.version_mask = mask.unwrap_or(0) & OFFERED_VERSION_MASK;
                if mask.is_none() {
                    self.events.push_back(ClientEvent::Notice("the pool refused version rolling".into()));
                }
                self.subscribe();
            }
            Pending::Subscribe => {
                let parsed = match r.error {
                    Some(e) => Err(format!("mining.subscribe refused: {} {}", e.code, e.message)),
                    None => SubscribeResult::from_result(&r.result).map_err(|e| format!("bad subscribe result: {e}")),
                };
                match parsed {
                    Ok(sub) => {
                        self.resume_id = Some(sub.session_id());
                        self.subscription = Some(sub);
                        if self.config.extranonce_subscribe {
                            self.request(Pending::ExtranonceSubscribe, u64::MAX, Method::ExtranonceSubscribe);
                        }
                        let method = Method::Authorize {
                            user: self.config.user.clone(),
                            password: Some(Password(self.config.password.clone())),
                        };
                        self.request(Pending::Authorize, u64::MAX, method);
                        self.set_state(ClientState::Authorizing);
                    }
                    Err(reason) => self.close(reason),
                }
            }
            Pending::ExtranonceSubscribe => {
                if !r.is_true() {
                    self.events.push_back(ClientEvent::Notice("the pool refused mining.extranonce.subscribe".into()));
                }
            }
            Pending::Authorize => {
                if r.is_true() {
                    self.set_state(ClientState::Ready);
                } else {
                    let reason = r
                        .error
                        .map_or_else(|| "authorization refused".to_owned(), |e| format!("{} {}", e.code, e.message));
                    self.set_state(ClientState::Unauthorized { reason });
                }
            }
            Pending::Submit => {
                let outcome = match (r.is_true(), r.error) {
                    (true, _) => SubmitOutcome::Accepted,
                    (false, Some(e)) => SubmitOutcome::Rejected { code: e.code, reason: e.message },
                    (false, None) => SubmitOutcome::Rejected { code: 20, reason: "rejected".into() },
                };
                let ticket = r.id.as_u64().unwrap_or_default();
                self.events.push_back(ClientEvent::Submitted { ticket, outcome });
            }
        }
    }

    fn on_call(&mut self, id: Id, method: Method) {
        match method {
            Method::SetDifficulty(d) => self.difficulty = d,
            Method::SetExtranonce { extranonce1, extranonce2_size } => match &mut self.subscription {
                Some(sub) => {
                    sub.extranonce1 = extranonce1;
                    sub.extranonce2_size = extranonce2_size;
                }
                None => self
                    .events
                    .push_back(ClientEvent::Notice("mining.set_extranonce before subscribing: ignored".into())),
            },
            Method::SetVersionMask(mask) => {
                if self.rolling_agreed {
                    self.version_mask = mask & OFFERED_VERSION_MASK;
                }
            }
            Method::Notify(notify) => self.on_notify(notify),
            Method::Reconnect { host, port, wait_secs } => {
                let same = host.as_deref().is_none_or(|h| h.eq_ignore_ascii_case(&self.config.host));
                if same {
                    self.events.push_back(ClientEvent::Reconnect { port, wait_secs: wait_secs.unwrap_or(0) });
                } else {
                    self.events.push_back(ClientEvent::Notice(format!(
                        "client.reconnect to another host ({}) not followed",
                        host.unwrap_or_default()
                    )));
                }
            }
            Method::ShowMessage(text) => self.events.push_back(ClientEvent::Notice(format!("pool says: {text}"))),
            Method::GetVersion => {
                if id != Id::Null {
                    let version = self.config.user_agent.clone();
                    self.send(Message::Response(Response::ok(id, json!(version))));
                }
            }
            other => {
                if id != Id::Null {
                    let error = RpcError::new(20, format!("method {} not supported", other.name()));
                    self.send(Message::Response(Response::err(id, error)));
                }
            }
        }
    }

    fn on_notify(&mut self, notify: Notify) {
        let Some(sub) = &self.subscription else {
            self.events.push_back(ClientEvent::Notice("mining.notify before subscribing: ignored".into()));
            return;
        };
        match Job::new(notify, sub.extranonce1.clone(), sub.extranonce2_size, self.difficulty, self.version_mask) {
            Ok(job) => {
                let revoke_older = self.jobs.add_job(job.clone());
                self.events.push_back(ClientEvent::Job { job, revoke_older });
            }
            Err(e) => self.close(format!("unusable job from the pool: {e}")),
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
