//! One account's upstream: its Stratum V1 session with its pool, the failover over the
//! account's backup pools, the failback to the primary, and the account's upstream figures.
//! Pure: times in, [`UpstreamOut`]s out; the core turns them into commands, jobs and ledger
//! entries (`pools.rs`).
//!
//! # Failover
//! - The session in use (the *main* link) talks to `pools[active]`. When it ends (the pool
//!   closed the connection, sent something unusable, refused the credentials, or said nothing
//!   for `silence_ms`, the session's own dead-pool timer), the next pool in the list is tried
//!   at once: a dropped TCP connection is a certain sign, so no waiting as cgminer's 90 s
//!   dead-pool timer waits for a silent one. Once every pool failed in a row, the next try
//!   waits `retry_ms`.
//! - While on a backup, a *probe* link to the primary is opened every `retry_ms`; once the
//!   probe has been authorized and up for `failback_after_ms` without a drop, it becomes the
//!   main link (failback) and the backup's connection is closed.
//! - Every switch is an [`UpstreamOut::Switched`] (the core ledgers it); a refused
//!   authorization is an [`UpstreamOut::Refused`] once until the next successful one, and
//!   shows as the state `unauthorized` meanwhile.
//! - When the main link goes, its jobs go with it ([`UpstreamOut::Lost`]): the next pool has
//!   other jobs and extranonces.
//!
//! Connection ids come from the caller's counter (`next_conn`), so that they are unique
//! across accounts; each link's events name its id, and events for an id no longer in use
//! are ignored.

use std::collections::BTreeMap;

use hashgrid_common::message::{PoolSettings, StandardBasis};
use hashgrid_common::stratum::{
    ClientConfig, ClientEvent, ClientSession, ClientState, ExtranonceSpace, Job as PoolJob, Line, PoolUrl, Reject,
    Submit, SubmitOutcome,
};

use hashgrid_common::header::Hash256;

use super::accounts::Work;
use super::chains::WorkUpdates;

/// How many subscriptions' extranonce2 spaces are remembered (one per pool, with room).
const SPACES: usize = 8;

/// Timers and thresholds of upstream sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// A pool silent this long is dead (cgminer: 90 s).
    pub silence_ms: u64,
    /// Wait between rounds of connection attempts once every pool failed (cgminer: 5 s), and
    /// between probes of the primary while on a backup.
    pub retry_ms: u64,
    /// The primary must have been up this long before it is failed back to (cgminer: 120 s).
    pub failback_after_ms: u64,
    /// A submit unanswered this long is `unknown` (never retried).
    pub submit_timeout_ms: u64,
    /// An account whose pool rejects more than this fraction of (at least `min_answers`)
    /// answered submits is flagged.
    pub max_reject_ratio: f64,
    pub min_answers: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            silence_ms: 90_000,
            retry_ms: 5_000,
            failback_after_ms: 120_000,
            submit_timeout_ms: 30_000,
            max_reject_ratio: 0.2,
            min_answers: 20,
        }
    }
}

/// What an upstream asks of the core, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamOut {
    Connect {
        conn: u64,
        url: String,
    },
    Send {
        conn: u64,
        line: Line,
    },
    Close {
        conn: u64,
        reason: String,
    },
    /// A job from the main link; `revoke_older`: every older job is no longer worth searching.
    Job {
        job: PoolJob,
        revoke_older: bool,
    },
    /// The outcome of the submit `(conn, ticket)`.
    Submitted {
        conn: u64,
        ticket: u64,
        outcome: SubmitOutcome,
    },
    /// The main link moved from one pool to another.
    Switched {
        from: String,
        to: String,
        reason: String,
    },
    /// The pool at `url` refused the credentials.
    Refused {
        url: String,
        reason: String,
    },
    /// The main link is gone: its jobs are void.
    Lost,
    /// The pool rejected more than the allowed share of submits.
    Flagged {
        rejected: u64,
        answered: u64,
    },
}

/// An account's submits upstream by outcome, as `pool list` shows them: kept across changes
/// of its pools, and rebuilt from the recorded outcomes ([`outcome_text`]) at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    pub accepted_shares: u64,
    /// The pool's difficulty as work, summed over the accepted shares.
    pub accepted_work: Work,
    /// Rejected shares by the pool's reason (printable, at most 100 characters).
    pub rejected: BTreeMap<String, u64>,
    /// Submits whose answer never came.
    pub unknown: u64,
}

impl UpstreamCounts {
    pub fn count(&mut self, outcome: &SubmitOutcome, work: Work) {
        match outcome {
            SubmitOutcome::Accepted => {
                self.accepted_shares += 1;
                self.accepted_work = self.accepted_work.saturating_add(work);
            }
            SubmitOutcome::Rejected { reason, .. } => *self.rejected.entry(printable(reason)).or_default() += 1,
            SubmitOutcome::Unknown => self.unknown += 1,
        }
    }

    /// The counts of recorded outcomes: (text as [`outcome_text`] wrote it, the pool's
    /// difficulty as work, how many). `pending` counts as unknown (its connection is gone);
    /// `not submitted` is not counted, as it was not when it happened.
    pub fn from_records(rows: impl IntoIterator<Item = (String, Work, u64)>) -> Self {
        let mut counts = UpstreamCounts::default();
        for (text, work, n) in rows {
            if text == "accepted" {
                counts.accepted_shares += n;
                counts.accepted_work = counts.accepted_work.saturating_add(Work(work.0.saturating_mul(n as u128)));
            } else if let Some(rest) = text.strip_prefix("rejected: ") {
                let reason = rest.split_once(' ').map_or("", |(_, reason)| reason);
                *counts.rejected.entry(reason.to_string()).or_default() += n;
            } else if text == "unknown" || text == "pending" {
                counts.unknown += n;
            }
        }
        counts
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Submits the pool answered.
    pub fn answered(&self) -> u64 {
        self.rejected() + self.accepted_shares
    }
}

/// A submit's outcome as recorded with its share: `accepted`, `rejected: CODE REASON` or
/// `unknown`.
pub fn outcome_text(outcome: &SubmitOutcome) -> String {
    match outcome {
        SubmitOutcome::Accepted => "accepted".to_string(),
        SubmitOutcome::Rejected { code, reason } => format!("rejected: {code} {}", printable(reason)),
        SubmitOutcome::Unknown => "unknown".to_string(),
    }
}

/// A pool's text as kept: printable, at most 100 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// One connection and its session.
#[derive(Debug)]
struct Link {
    conn: u64,
    /// The pool's index in the account's list.
    pool: usize,
    session: ClientSession,
    /// When the session last became ready.
    ready_since: Option<u64>,
    /// The shell reported the connection up.
    open: bool,
}

/// One account's upstream.
#[derive(Debug)]
pub struct Upstream {
    pub settings: PoolSettings,
    urls: Vec<PoolUrl>,
    config: UpstreamConfig,
    main: Option<Link>,
    probe: Option<Link>,
    /// The pool the main link uses or will try next.
    active: usize,
    /// When to open the main link again (`None`: it is open).
    retry_at: Option<u64>,
    probe_at: u64,
    /// Pools failed in a row since the last ready session.
    failures: usize,
    /// The port `client.reconnect` asked for, used for the next connection to the same pool.
    reconnect_port: Option<u16>,
    /// The credentials' refusal, until a session is authorized again.
    refused: Option<String>,
    pub last_error: Option<String>,
    /// The extranonce2 spaces of the subscriptions seen, newest last: (extranonce1, size, space).
    /// At most `SPACES` are kept, so a returning extranonce1 (failback, resume) keeps counting.
    spaces: Vec<(Vec<u8>, usize, ExtranonceSpace)>,
    /// The last session id each pool (by index) gave, resumed on the next link to it.
    resume_ids: BTreeMap<usize, String>,
    /// The newest job of the main link and when it came.
    pub current: Option<PoolJob>,
    /// The extranonce2 space of the current job ran out: no more templates until the next job.
    exhausted: bool,
    pub last_job_ms: Option<u64>,
    /// The pool chain of the account (`chains::pool_chain`) and the previous block it was
    /// placed on: that of its latest job.
    pub chain: Option<String>,
    pub chain_prev: Option<Hash256>,
    /// The jobs of the main link, measured as the chain's load.
    pub updates: WorkUpdates,
    pub switches: u64,
    pub counts: UpstreamCounts,
    pub flagged: bool,
    out: Vec<UpstreamOut>,
}

/// Checks an account's pool settings: 1 to 8 pools with valid URLs, a user, sizes capped.
pub fn validate(settings: &PoolSettings) -> Result<Vec<PoolUrl>, String> {
    if settings.urls.is_empty() || settings.urls.len() > 8 {
        return Err(format!("give 1 to 8 pools, not {}", settings.urls.len()));
    }
    let printable = |s: &str| s.chars().all(|c| !c.is_control());
    if settings.user.is_empty() || settings.user.len() > 256 || !printable(&settings.user) {
        return Err("the pool user must be 1-256 printable characters".into());
    }
    if settings.password.len() > 256 || !printable(&settings.password) {
        return Err("the pool password must be at most 256 printable characters".into());
    }
    settings.urls.iter().map(|u| u.parse::<PoolUrl>().map_err(|e| e.to_string())).collect()
}

/// The standard-basis rule: the accepted basis needs a pool.
pub fn validate_basis(pool: Option<&PoolSettings>, basis: StandardBasis) -> Result<(), String> {
    if pool.is_none() && basis == StandardBasis::Accepted {
        return Err("the accepted standard basis needs a pool".into());
    }
    Ok(())
}

impl Upstream {
    /// An upstream that connects to its primary at the first `handle_tick`.
    pub fn new(settings: PoolSettings, config: UpstreamConfig) -> Result<Self, String> {
        let urls = validate(&settings)?;
        Ok(Upstream {
            settings,
            urls,
            config,
            main: None,
            probe: None,
            active: 0,
            retry_at: Some(0),
            probe_at: 0,
            failures: 0,
            reconnect_port: None,
            refused: None,
            last_error: None,
            spaces: Vec::new(),
            resume_ids: BTreeMap::new(),
            current: None,
            exhausted: false,
            last_job_ms: None,
            chain: None,
            chain_prev: None,
            updates: WorkUpdates::default(),
            switches: 0,
            counts: UpstreamCounts::default(),
            flagged: false,
            out: Vec::new(),
        })
    }

    // Getters.

    /// Whether the main link is authorized and has a job to search.
    pub fn has_work(&self) -> bool {
        self.main.as_ref().is_some_and(|l| *l.session.state() == ClientState::Ready)
            && self.current.is_some()
            && !self.exhausted
    }

    /// The URL of the pool in use or tried next, and its index.
    pub fn url(&self) -> (&str, usize) {
        let i = self.main.as_ref().map_or(self.active, |l| l.pool);
        (&self.settings.urls[i], i)
    }

    /// The state as `pool list` shows it.
    pub fn state(&self) -> String {
        match (self.main.as_ref().map(|l| (l.open, l.session.state())), &self.refused) {
            (Some((_, ClientState::Ready)), _) => "ready".into(),
            (_, Some(_)) => "unauthorized".into(),
            (None, None) => "disconnected".into(),
            (Some((false, _)), None) => "connecting".into(),
            (Some((true, state)), None) => format!("{state:?}").to_lowercase(),
        }
    }

    /// extranonce1, extranonce2 size, difficulty and version mask of the main link.
    pub fn session_view(&self) -> Option<(&[u8], usize, f64, u32)> {
        let s = &self.main.as_ref()?.session;
        let (e1, size) = s.extranonce()?;
        Some((e1, size, s.difficulty(), s.version_mask()))
    }

    /// The main link's connection, if it holds this one (for the submit keys).
    pub fn main_conn(&self) -> Option<u64> {
        self.main.as_ref().map(|l| l.conn)
    }

    /// Whether the main link's session still keeps the pool job `id` live (for late shares).
    pub fn keeps(&self, id: &str) -> bool {
        self.main.as_ref().is_some_and(|l| l.session.job(id).is_some())
    }

    pub fn holds(&self, conn: u64) -> bool {
        self.main.as_ref().is_some_and(|l| l.conn == conn) || self.probe.as_ref().is_some_and(|l| l.conn == conn)
    }

    /// The next extranonce2 for a template of `job` (slot 0, rolling the counter), or `None`
    /// when the space is used up. A new subscription's extranonces start a new space; the same
    /// extranonce1 again (a resumed session) keeps counting, so no value repeats.
    pub fn next_extranonce2(&mut self, job: &PoolJob) -> Option<Vec<u8>> {
        self.ensure_space(job);
        let next = self.spaces.last_mut().and_then(|(_, _, space)| space.next_own().ok());
        self.exhausted = next.is_none();
        next
    }

    /// The extranonce2 space of `job`'s subscription, where miners' slots are carved (never
    /// slot 0; refused when the extranonce2 is too short to carve or every slot is in use).
    pub fn slot_space(&mut self, job: &PoolJob) -> &mut ExtranonceSpace {
        self.ensure_space(job);
        &mut self.spaces.last_mut().expect("just made").2
    }

    /// Gives back a miner's slot of the subscription with `extranonce1` (nothing if that
    /// subscription's space is gone: its slots went with it).
    pub fn release_slot(&mut self, extranonce1: &[u8], slot: u32) {
        if let Some((_, _, space)) = self.spaces.iter_mut().find(|(e1, _, _)| e1 == extranonce1) {
            space.release_slot(slot);
        }
    }

    /// Makes the space of `job`'s extranonces the last (current) one: the space it had if the
    /// same extranonce1 and size were seen before (its counter continues), else a new one; at
    /// most `SPACES` are kept, the oldest dropped first.
    fn ensure_space(&mut self, job: &PoolJob) {
        let at = self.spaces.iter().position(|(e1, size, _)| *e1 == job.extranonce1 && *size == job.extranonce2_size);
        let entry = match at {
            Some(i) => self.spaces.remove(i),
            None => (job.extranonce1.clone(), job.extranonce2_size, ExtranonceSpace::new(job.extranonce2_size)),
        };
        if self.spaces.len() >= SPACES {
            self.spaces.remove(0);
        }
        self.spaces.push(entry);
    }

    // Inputs.

    /// Timers: connection retries, the session's deadlines, the failback probe.
    pub fn handle_tick(&mut self, now_ms: u64, next_conn: &mut u64) {
        if self.main.is_none() && self.retry_at.is_some_and(|at| now_ms >= at) {
            self.retry_at = None;
            let pool = self.active;
            self.main = Some(self.open_link(pool, next_conn));
        }
        for probe in [false, true] {
            let link = if probe { self.probe.as_mut() } else { self.main.as_mut() };
            if let Some(link) = link
                && link.session.poll_timeout().is_some_and(|at| now_ms >= at)
            {
                link.session.handle_timeout(now_ms);
                self.pump(now_ms, probe);
            }
        }
        let on_backup = self.main.as_ref().is_some_and(|l| l.pool != 0 && l.ready_since.is_some());
        if on_backup && self.probe.is_none() && now_ms >= self.probe_at {
            self.probe_at = now_ms + self.config.retry_ms;
            self.probe = Some(self.open_link(0, next_conn));
        }
        if self.probe.as_ref().and_then(|p| p.ready_since).is_some_and(|t| now_ms >= t + self.config.failback_after_ms)
        {
            self.fail_back(now_ms);
        }
    }

    /// The shell's connection `conn` is up.
    pub fn handle_connected(&mut self, now_ms: u64, conn: u64) {
        if let Some((probe, link)) = self.link_mut(conn) {
            link.open = true;
            link.session.connect(now_ms);
            self.pump(now_ms, probe);
        }
    }

    pub fn handle_line(&mut self, now_ms: u64, conn: u64, line: &[u8]) {
        if let Some((probe, link)) = self.link_mut(conn) {
            link.session.handle_line(now_ms, line);
            self.pump(now_ms, probe);
        }
    }

    /// The connection `conn` ended (or could not be opened), for `reason`.
    pub fn handle_closed(&mut self, now_ms: u64, conn: u64, reason: &str) {
        let Some((probe, link)) = self.link_mut(conn) else { return };
        link.session.handle_disconnect(now_ms);
        if !probe {
            self.last_error = Some(reason.chars().filter(|c| !c.is_control()).take(200).collect());
        }
        self.pump(now_ms, probe);
        self.link_lost(now_ms, probe, reason);
    }

    /// Sends a share on the main link; `(conn, ticket)` names its outcome.
    pub fn submit(&mut self, now_ms: u64, share: Submit) -> Result<(u64, u64), Reject> {
        let link = self.main.as_mut().ok_or(Reject::NotSubscribed)?;
        let conn = link.conn;
        let ticket = link.session.submit(now_ms, share)?;
        self.pump(now_ms, false);
        Ok((conn, ticket))
    }

    /// Counts a submit's outcome (`work`: the pool's difficulty as work); flags the account
    /// when the pool rejects too many.
    pub fn count_outcome(&mut self, outcome: &SubmitOutcome, work: Work) {
        self.counts.count(outcome, work);
        if !self.flagged && self.rejects_too_many() {
            self.flagged = true;
            let (rejected, answered) = (self.counts.rejected(), self.counts.answered());
            self.out.push(UpstreamOut::Flagged { rejected, answered });
        }
    }

    /// Takes over the account's counts (from the store at start-up, or from the account's
    /// former pool settings), and the flag they imply (already ledgered when it was raised).
    pub fn restore_counts(&mut self, counts: UpstreamCounts) {
        self.counts = counts;
        self.flagged = self.rejects_too_many();
    }

    fn rejects_too_many(&self) -> bool {
        let answered = self.counts.answered();
        answered >= self.config.min_answers
            && self.counts.rejected() as f64 > self.config.max_reject_ratio * answered as f64
    }

    /// Closes every link (the account's pool was changed or removed).
    pub fn close_all(&mut self, now_ms: u64, reason: &str) {
        for link in [self.probe.take(), self.main.take()].into_iter().flatten() {
            self.shut(now_ms, link, reason);
        }
        self.current = None;
        self.retry_at = None;
    }

    // Outputs.

    pub fn drain(&mut self) -> Vec<UpstreamOut> {
        std::mem::take(&mut self.out)
    }

    // Internals.

    fn open_link(&mut self, pool: usize, next_conn: &mut u64) -> Link {
        let conn = *next_conn;
        *next_conn += 1;
        let url = &self.urls[pool];
        let mut client = ClientConfig::new(&url.host, &self.settings.user, &self.settings.password);
        client.extranonce_subscribe = self.settings.extranonce_subscribe_to(pool);
        client.silence_timeout_ms = self.config.silence_ms;
        client.submit_timeout_ms = self.config.submit_timeout_ms;
        client.resume_id = self.resume_ids.get(&pool).cloned();
        let url = match self.reconnect_port.take() {
            Some(port) => format!("{}://{}", if url.tls { "stratum+ssl" } else { "stratum+tcp" }, url.addr(Some(port))),
            None => self.settings.urls[pool].clone(),
        };
        self.out.push(UpstreamOut::Connect { conn, url });
        Link { conn, pool, session: ClientSession::new(client), ready_since: None, open: false }
    }

    fn link_mut(&mut self, conn: u64) -> Option<(bool, &mut Link)> {
        if let Some(l) = self.main.as_mut().filter(|l| l.conn == conn) {
            return Some((false, l));
        }
        self.probe.as_mut().filter(|l| l.conn == conn).map(|l| (true, l))
    }

    /// Takes the session's events of the main link (`probe` false) or the probe.
    fn pump(&mut self, now_ms: u64, probe: bool) {
        let mut ended = None;
        let mut reconnect = None;
        loop {
            let link = if probe { self.probe.as_mut() } else { self.main.as_mut() };
            let Some(link) = link else { return };
            let conn = link.conn;
            let pool = link.pool;
            let Some(event) = link.session.poll_event() else { break };
            match event {
                ClientEvent::Send(line) => self.out.push(UpstreamOut::Send { conn, line }),
                ClientEvent::State(ClientState::Ready) => {
                    link.ready_since = Some(now_ms);
                    if let Some(id) = link.session.resume_id() {
                        self.resume_ids.insert(pool, id.to_string());
                    }
                    if !probe {
                        self.failures = 0;
                        self.refused = None;
                    }
                }
                ClientEvent::State(ClientState::Unauthorized { reason }) => {
                    let url = self.settings.urls[pool].clone();
                    if self.refused.as_deref() != Some(&reason) {
                        self.out.push(UpstreamOut::Refused { url, reason: reason.clone() });
                    }
                    self.last_error = Some(format!("authorization refused: {reason}"));
                    self.refused = Some(reason);
                    ended = Some("authorization refused".to_string());
                }
                ClientEvent::State(_) => {}
                ClientEvent::Job { job, revoke_older } => {
                    if !probe {
                        self.exhausted = false;
                        self.current = Some(job.clone());
                        self.last_job_ms = Some(now_ms);
                        self.out.push(UpstreamOut::Job { job, revoke_older });
                    }
                }
                ClientEvent::Submitted { ticket, outcome } => {
                    self.out.push(UpstreamOut::Submitted { conn, ticket, outcome })
                }
                ClientEvent::Reconnect { port, wait_secs } => {
                    ended = Some(format!("the pool asked to reconnect in {wait_secs} s"));
                    reconnect = Some((port, wait_secs.min(600)));
                }
                ClientEvent::Close { reason } => {
                    self.last_error = Some(reason.clone());
                    ended = Some(reason);
                }
                // Rolling refused, a reconnect elsewhere refused, `client.show_message`: the
                // last one is shown with the pool (capped, printable).
                ClientEvent::Notice(text) => {
                    self.last_error = Some(text.chars().filter(|c| !c.is_control()).take(200).collect());
                }
            }
        }
        if let Some(reason) = ended {
            let link = if probe { self.probe.as_mut() } else { self.main.as_mut() };
            if let Some(link) = link {
                link.session.handle_disconnect(now_ms);
                let conn = link.conn;
                self.out.push(UpstreamOut::Close { conn, reason: reason.clone() });
            }
            // The disconnect's own events (unknown submits) first.
            self.pump(now_ms, probe);
            match reconnect.filter(|_| !probe) {
                // `client.reconnect` (the session follows it only to the same host): the same
                // pool again after the wait, not a failure.
                Some((port, wait_secs)) => {
                    let link = self.main.take().expect("the main link");
                    self.current = None;
                    self.out.push(UpstreamOut::Lost);
                    self.active = link.pool;
                    self.reconnect_port = port;
                    self.retry_at = Some(now_ms + wait_secs * 1000);
                }
                None => self.link_lost(now_ms, probe, &reason),
            }
        }
    }

    /// Ends a link that is no longer in use: its unanswered submits become unknown, and the
    /// shell closes its connection.
    fn shut(&mut self, now_ms: u64, mut link: Link, reason: &str) {
        link.session.handle_disconnect(now_ms);
        while let Some(event) = link.session.poll_event() {
            if let ClientEvent::Submitted { ticket, outcome } = event {
                self.out.push(UpstreamOut::Submitted { conn: link.conn, ticket, outcome });
            }
        }
        self.out.push(UpstreamOut::Close { conn: link.conn, reason: reason.into() });
    }

    /// A link ended: a probe is dropped; the main link fails over to the next pool.
    fn link_lost(&mut self, now_ms: u64, probe: bool, reason: &str) {
        if probe {
            self.probe = None;
            return;
        }
        let Some(link) = self.main.take() else { return };
        self.current = None;
        self.out.push(UpstreamOut::Lost);
        self.failures += 1;
        let next = (link.pool + 1) % self.urls.len();
        self.active = next;
        // A whole round failed: wait before the next; otherwise the next pool at once.
        self.retry_at = Some(if self.failures >= self.urls.len() { now_ms + self.config.retry_ms } else { now_ms });
        // Only leaving a pool that had been ready is a switch: a round of pools that all fail
        // to come up is retried quietly (no ledger record per attempt).
        if next != link.pool && link.ready_since.is_some() {
            self.switches += 1;
            self.out.push(UpstreamOut::Switched {
                from: self.settings.urls[link.pool].clone(),
                to: self.settings.urls[next].clone(),
                reason: reason.into(),
            });
        }
        if self.probe.is_some() && next == 0 {
            // The primary is being probed already: let the probe become the main link.
            self.fail_back(now_ms);
        }
    }

    /// The probe of the primary becomes the main link.
    fn fail_back(&mut self, now_ms: u64) {
        let Some(probe) = self.probe.take() else { return };
        let stable = probe.ready_since.is_some();
        if let Some(old) = self.main.take() {
            let from = self.settings.urls[old.pool].clone();
            self.shut(now_ms, old, "failing back to the primary pool");
            self.out.push(UpstreamOut::Lost);
            self.switches += 1;
            self.out.push(UpstreamOut::Switched {
                from,
                to: self.settings.urls[0].clone(),
                reason: format!("the primary was up for {} s", self.config.failback_after_ms / 1000),
            });
        }
        self.active = 0;
        self.retry_at = None;
        self.failures = 0;
        self.current = probe.session.current_job().cloned();
        let job = self.current.clone();
        self.main = Some(probe);
        if let Some(job) = job.filter(|_| stable) {
            self.last_job_ms = Some(now_ms);
            self.out.push(UpstreamOut::Job { job, revoke_older: true });
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
