//! The scheduling and accounting core: a pure state machine.
//!
//! Inputs are `handle_*` calls, each given the current time in Unix milliseconds; outputs are
//! `Command`s taken with `drain_commands` (send a message, close a connection, persist a
//! record). No sockets, clocks or database inside, so every rule is tested with virtual time.
//!
//! Calling order for the shell: feed events, then drain commands and carry them out in order;
//! `Persist` commands must be durable before any `Send` that follows them goes out (a share's
//! acknowledgement follows its credit).

pub mod accounts;
pub mod ranges;
pub mod work;

use std::collections::{BTreeMap, VecDeque};

use hashgrid_common::message::{
    Assignment, AssignmentId, CoordinatorMessage, JobHit, JobId, JobStatus, NodeHello, NodeId, NodeMessage, NodeStatus,
    Policy, RejectReason, Share, ShareOutcome, Status,
};
use hashgrid_common::{BlockHash, CompactTarget, Header, Target};

pub use accounts::Account;
use ranges::Abandon;
use work::{Job, JobKind, LocalChain};

/// Tunables of the core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// How often nodes send heartbeats.
    pub heartbeat_ms: u32,
    /// A node silent this long is failed and its ranges reassigned.
    pub failover_after_ms: u64,
    /// Target duration of one range at the node's rate.
    pub range_ms: u64,
    /// Shares per second each node should submit (variable share difficulty).
    pub shares_per_second: f64,
    /// Floor of a share's work, in expected hashes.
    pub min_share_work: u128,
    /// Seconds after the template's time a share's time may be.
    pub time_window_secs: u32,
    /// Block target of the local chain.
    pub chain_bits: CompactTarget,
    /// Ranges each node holds at once (the current one and those queued behind it).
    pub pipeline: usize,
    /// Window over which a node's delivered rate is measured.
    pub rate_window_ms: u64,
    /// First id of jobs and assignments; give a value never used before (e.g. the start
    /// time) so ids from before a restart are never mistaken for new ones.
    pub id_base: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_ms: 1000,
            failover_after_ms: 3000,
            range_ms: 3000,
            shares_per_second: 5.0,
            min_share_work: 1 << 12,
            time_window_secs: 600,
            chain_bits: CompactTarget(0x1d00ffff),
            pipeline: 2,
            rate_window_ms: 30_000,
            id_base: 1,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Send { node: NodeId, msg: CoordinatorMessage },
    Close { node: NodeId, reason: String },
    Persist(StoreOp),
}

/// A record the shell must make durable.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    AccountAdded {
        name: String,
        standard: u128,
        period_ms: Option<u64>,
        order: i64,
        period_start_ms: u64,
    },
    /// An accepted share: `work` credited to `account`.
    Credit {
        account: String,
        work: u128,
        node: String,
        job: JobId,
        header: Header,
        /// `header`'s block hash, as the core verified it (the store need not hash again).
        hash: BlockHash,
        share_target: Target,
        at_ms: u64,
    },
    PeriodRenewed {
        account: String,
        period_start_ms: u64,
    },
    PolicySet(Policy),
    JobSubmitted {
        job: JobId,
        account: String,
        header: Header,
        target: Target,
    },
    JobHit {
        job: JobId,
        hit: JobHit,
    },
    BlockFound {
        height: u64,
        hash: BlockHash,
        account: String,
    },
    AssignmentIssued {
        assignment: AssignmentId,
        node: String,
        account: String,
        job: JobId,
        version: u32,
        start: u32,
        count: u64,
        at_ms: u64,
    },
}

/// A refused operator request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("account {0:?} already exists")]
    AccountExists(String),
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    #[error("no job {0}")]
    NoSuchJob(JobId),
    #[error("invalid account: {0}")]
    InvalidAccount(String),
}

/// State restored from the store at start-up.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub accounts: Vec<Account>,
    pub chain: Option<(u64, BlockHash)>,
    pub jobs: Vec<SubmittedJob>,
}

/// A submitted job as stored.
#[derive(Debug, Clone)]
pub struct SubmittedJob {
    pub job: JobId,
    pub account: String,
    pub header: Header,
    pub target: Target,
    pub hits: Vec<JobHit>,
    /// Credited shares (version, time, nonce), so none is credited twice after a restart.
    pub shares: Vec<(u32, u32, u32)>,
}

#[derive(Debug, Clone)]
struct NodeEntry {
    name: String,
    software_version: String,
    standby: bool,
    announced: f64,
    assignments: Vec<AssignmentId>,
    last_seen_ms: u64,
    /// Accepted shares' (time, work) within the rate window.
    credited: VecDeque<(u64, u128)>,
    joined_ms: u64,
    accepted: u64,
    rejected: u64,
}

#[derive(Debug, Clone, Copy)]
struct AssignmentEntry {
    node: NodeId,
    job: JobId,
    version: u32,
    start: u32,
    share_target: Target,
    live: bool,
}

/// The coordinator's scheduling and accounting state.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    policy: Policy,
    accounts: Vec<Account>,
    nodes: BTreeMap<NodeId, NodeEntry>,
    jobs: BTreeMap<JobId, Job>,
    /// The current local-chain template of each account.
    local_jobs: BTreeMap<String, JobId>,
    assignments: BTreeMap<AssignmentId, AssignmentEntry>,
    chain: LocalChain,
    stale_jobs: VecDeque<JobId>,
    next_id: u64,
    out: Vec<Command>,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        Self::restore(config, Snapshot::default())
    }

    /// A core resuming from stored state.
    pub fn restore(config: CoreConfig, snapshot: Snapshot) -> Self {
        let chain = match snapshot.chain {
            Some((height, tip)) => LocalChain::at(height, tip, config.chain_bits),
            None => LocalChain::new(config.chain_bits),
        };
        let mut core = Core {
            next_id: config.id_base.max(1),
            policy: snapshot.policy,
            accounts: snapshot.accounts,
            nodes: BTreeMap::new(),
            jobs: BTreeMap::new(),
            local_jobs: BTreeMap::new(),
            assignments: BTreeMap::new(),
            chain,
            stale_jobs: VecDeque::new(),
            config,
            out: Vec::new(),
        };
        for s in snapshot.jobs {
            let mut job =
                Job::new(s.job, s.account, JobKind::Submitted { target: s.target, hits: s.hits }, s.header, false);
            for (v, t, n) in s.shares {
                job.mark_seen(v, t, n);
            }
            core.next_id = core.next_id.max(s.job + 1);
            core.jobs.insert(s.job, job);
        }
        core
    }

    /// Commands produced since the last call, in the order they must be carried out.
    pub fn drain_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.out)
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    // ---- operator requests ----

    pub fn add_account(
        &mut self,
        now_ms: u64,
        name: &str,
        standard: u128,
        period_ms: Option<u64>,
        order: Option<i64>,
    ) -> Result<(), AdminError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(AdminError::InvalidAccount(format!("{name:?}: use 1-64 letters, digits, '-', '_' or '.'")));
        }
        if standard == 0 {
            return Err(AdminError::InvalidAccount("the standard must be more than 0 hashes".into()));
        }
        if period_ms == Some(0) {
            return Err(AdminError::InvalidAccount("the period must be longer than 0".into()));
        }
        if self.accounts.iter().any(|a| a.name == name) {
            return Err(AdminError::AccountExists(name.into()));
        }
        let order = order.unwrap_or_else(|| self.accounts.iter().map(|a| a.order + 1).max().unwrap_or(0));
        let account = Account::new(name.into(), standard, period_ms, order, now_ms);
        self.out.push(Command::Persist(StoreOp::AccountAdded {
            name: name.into(),
            standard,
            period_ms,
            order,
            period_start_ms: now_ms,
        }));
        self.accounts.push(account);
        self.fill_all(now_ms);
        Ok(())
    }

    pub fn set_policy(&mut self, now_ms: u64, policy: Policy) {
        if policy == self.policy {
            return;
        }
        self.policy = policy;
        for a in &mut self.accounts {
            a.issued = 0;
        }
        self.out.push(Command::Persist(StoreOp::PolicySet(policy)));
        // Ranges in flight finish; new ranges follow the new policy.
        self.fill_all(now_ms);
    }

    pub fn submit_job(
        &mut self,
        now_ms: u64,
        account: &str,
        header: Header,
        target: Target,
    ) -> Result<JobId, AdminError> {
        if !self.accounts.iter().any(|a| a.name == account) {
            return Err(AdminError::NoSuchAccount(account.into()));
        }
        let id = self.fresh_id();
        let job = Job::new(id, account.into(), JobKind::Submitted { target, hits: Vec::new() }, header, false);
        self.jobs.insert(id, job);
        self.out.push(Command::Persist(StoreOp::JobSubmitted { job: id, account: account.into(), header, target }));
        self.fill_all(now_ms);
        Ok(id)
    }

    pub fn job_status(&self, id: JobId) -> Result<JobStatus, AdminError> {
        let job = self.jobs.get(&id).ok_or(AdminError::NoSuchJob(id))?;
        let JobKind::Submitted { target, hits } = &job.kind else { return Err(AdminError::NoSuchJob(id)) };
        let c = job.coverage();
        Ok(JobStatus {
            job: id,
            account: job.account.clone(),
            header: job.template,
            target: *target,
            searched: c.done,
            in_flight: c.in_flight,
            abandoned: c.abandoned,
            total: ranges::NONCE_SPACE,
            hits: hits.clone(),
        })
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let mut accounts: Vec<_> = self.accounts.iter().map(Account::status).collect();
        accounts.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        let nodes = self
            .nodes
            .iter()
            .map(|(&id, n)| NodeStatus {
                name: n.name.clone(),
                state: if n.standby { "standby" } else { "active" }.into(),
                hashrate: self.delivered_rate(id, now_ms),
                announced_hashrate: n.announced,
                account: n
                    .assignments
                    .first()
                    .and_then(|a| self.assignments.get(a))
                    .and_then(|a| self.jobs.get(&a.job))
                    .map(|j| j.account.clone()),
                software_version: n.software_version.clone(),
                chain: None,
                draining: false,
                devices: Vec::new(),
                accepted: n.accepted,
                rejected: n.rejected,
            })
            .collect();
        Status { policy: self.policy, accounts, nodes }
    }

    // ---- node events ----

    /// A node passed authentication and said hello; `node` is the shell's connection id.
    pub fn handle_node_joined(&mut self, now_ms: u64, node: NodeId, hello: &NodeHello) {
        self.nodes.insert(
            node,
            NodeEntry {
                name: hello.name.clone(),
                software_version: hello.software_version.clone(),
                standby: hello.standby,
                announced: if hello.hashrate.is_finite() { hello.hashrate.max(0.0) } else { 0.0 },
                assignments: Vec::new(),
                last_seen_ms: now_ms,
                credited: VecDeque::new(),
                joined_ms: now_ms,
                accepted: 0,
                rejected: 0,
            },
        );
        self.out.push(Command::Send {
            node,
            msg: CoordinatorMessage::Welcome { node, heartbeat_ms: self.config.heartbeat_ms },
        });
        self.fill(now_ms, node);
    }

    pub fn handle_node_message(&mut self, now_ms: u64, node: NodeId, msg: NodeMessage) {
        let Some(entry) = self.nodes.get_mut(&node) else { return };
        entry.last_seen_ms = now_ms;
        match msg {
            NodeMessage::Heartbeat { hashrate, .. } => {
                if hashrate.is_finite() && hashrate > 0.0 {
                    entry.announced = hashrate;
                }
            }
            NodeMessage::Share(share) => self.handle_share(now_ms, node, share),
            NodeMessage::RangeDone { assignment, .. } => {
                if let Some(a) = self.assignments.get(&assignment).copied().filter(|a| a.node == node && a.live) {
                    if let Some(book) = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version)) {
                        book.complete(a.start, assignment);
                    }
                    self.retire(assignment);
                }
                self.fill(now_ms, node);
            }
        }
    }

    /// The node's connection is gone: its ranges go back to be issued to others.
    pub fn handle_node_left(&mut self, now_ms: u64, node: NodeId) {
        let Some(entry) = self.nodes.remove(&node) else { return };
        for id in entry.assignments {
            self.abandon(id, Abandon::NodeFailed);
        }
        self.fill_all(now_ms);
    }

    /// Timers: failed nodes, period renewals.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| now_ms.saturating_sub(n.last_seen_ms) > self.config.failover_after_ms)
            .map(|(&id, _)| id)
            .collect();
        for node in silent {
            self.out.push(Command::Close { node, reason: "missed heartbeats".into() });
            self.handle_node_left(now_ms, node);
        }
        let mut renewed = false;
        for a in &mut self.accounts {
            if a.renew_if_due(now_ms) {
                renewed = true;
                self.out.push(Command::Persist(StoreOp::PeriodRenewed {
                    account: a.name.clone(),
                    period_start_ms: a.period_start_ms,
                }));
            }
        }
        if renewed {
            self.fill_all(now_ms);
        }
    }

    fn handle_share(&mut self, now_ms: u64, node: NodeId, share: Share) {
        let outcome = match self.check_and_credit(now_ms, node, &share) {
            Ok(work) => ShareOutcome::Accepted { work },
            Err(reason) => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.rejected += 1;
                }
                ShareOutcome::Rejected(reason)
            }
        };
        self.out.push(Command::Send { node, msg: CoordinatorMessage::ShareResult { id: share.id, outcome } });
    }

    fn check_and_credit(&mut self, now_ms: u64, node: NodeId, share: &Share) -> Result<u128, RejectReason> {
        let assignment = self
            .assignments
            .get(&share.assignment)
            .filter(|a| a.job == share.job)
            .copied()
            .ok_or(RejectReason::UnknownJob)?;
        let job = self.jobs.get_mut(&share.job).ok_or(RejectReason::UnknownJob)?;
        let verified = job.check_share(
            share.version,
            share.time,
            share.nonce,
            &assignment.share_target,
            self.config.time_window_secs,
        )?;
        let work = assignment.share_target.work();
        let account_name = job.account.clone();
        let job_id = job.id;
        let mut block = false;
        match &mut job.kind {
            JobKind::Submitted { target, hits } => {
                if target.is_met_by(&verified.hash) {
                    let hit =
                        JobHit { version: share.version, time: share.time, nonce: share.nonce, hash: verified.hash };
                    hits.push(hit);
                    self.out.push(Command::Persist(StoreOp::JobHit { job: job_id, hit }));
                }
            }
            JobKind::LocalChain { .. } => block = self.chain.target().is_met_by(&verified.hash),
        }
        let node_name = self.nodes.get(&node).map(|n| n.name.clone()).unwrap_or_default();
        self.out.push(Command::Persist(StoreOp::Credit {
            account: account_name.clone(),
            work,
            node: node_name,
            job: job_id,
            header: verified.header,
            hash: verified.hash,
            share_target: assignment.share_target,
            at_ms: now_ms,
        }));
        if let Some(n) = self.nodes.get_mut(&node) {
            n.accepted += 1;
            n.credited.push_back((now_ms, work));
        }
        let reached = match self.accounts.iter_mut().find(|a| a.name == account_name) {
            Some(a) => {
                let was_below = !a.up_to_standard();
                a.delivered = a.delivered.saturating_add(work);
                a.shares += 1;
                was_below && a.up_to_standard()
            }
            None => false,
        };
        if block {
            self.chain.extend(verified.hash);
            self.out.push(Command::Persist(StoreOp::BlockFound {
                height: self.chain.height,
                hash: verified.hash,
                account: account_name.clone(),
            }));
            self.retire_local_templates();
        }
        if reached {
            // Capacity moves on: ranges still serving this account are given back.
            self.revoke_where(|job| job.account == account_name, Abandon::AccountUpToStandard);
        }
        if block || reached {
            self.fill_all(now_ms);
        }
        Ok(work)
    }

    // ---- allocation ----

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// The node's delivered rate, from its credited shares over the rate window.
    fn delivered_rate(&self, node: NodeId, now_ms: u64) -> f64 {
        let Some(n) = self.nodes.get(&node) else { return 0.0 };
        let since = now_ms.saturating_sub(self.config.rate_window_ms).max(n.joined_ms);
        let work: u128 = n.credited.iter().filter(|(t, _)| *t >= since).map(|(_, w)| w).sum();
        let span = (now_ms - since).max(1000) as f64 / 1000.0;
        work as f64 / span
    }

    /// The rate used to size ranges and share targets: announced, corrected by measurement
    /// once enough shares have come in.
    fn planning_rate(&mut self, node: NodeId, now_ms: u64) -> f64 {
        let window = self.config.rate_window_ms;
        let measured = self.delivered_rate(node, now_ms);
        let Some(n) = self.nodes.get_mut(&node) else { return 0.0 };
        while n.credited.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > window) {
            n.credited.pop_front();
        }
        let rate = if n.credited.len() >= 20 { measured } else { n.announced };
        rate.max(1000.0)
    }

    fn fill_all(&mut self, now_ms: u64) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.fill(now_ms, id);
        }
    }

    /// Tops the node's pipeline up with ranges for the accounts the policy chooses.
    fn fill(&mut self, now_ms: u64, node: NodeId) {
        loop {
            let Some(n) = self.nodes.get(&node) else { return };
            if n.standby || n.assignments.len() >= self.config.pipeline {
                return;
            }
            let rate = self.planning_rate(node, now_ms);
            let count = ((rate * self.config.range_ms as f64 / 1000.0) as u64).clamp(1 << 16, ranges::NONCE_SPACE);
            let count = count.next_multiple_of(1 << 16).min(ranges::NONCE_SPACE);
            let share_work = ((rate / self.config.shares_per_second) as u128).max(self.config.min_share_work);
            let Some(account) = accounts::choose(self.policy, &self.accounts, count, |_| false) else { return };
            let account_name = self.accounts[account].name.clone();
            let id = self.fresh_id();
            let Some((job_id, version, start, count)) = self.issue_for(now_ms, &account_name, count, id) else {
                return;
            };
            let job = &self.jobs[&job_id];
            let mut share_target = Target::from_expected_hashes(share_work);
            if let JobKind::Submitted { target, .. } = &job.kind {
                // Every hit of the job must also be a share.
                share_target = share_target.max(*target);
            }
            let header = Header { version, ..job.template };
            self.accounts[account].issued += count as u128;
            self.assignments
                .insert(id, AssignmentEntry { node, job: job_id, version, start, share_target, live: true });
            let n = self.nodes.get_mut(&node).expect("checked above");
            n.assignments.push(id);
            let node_name = n.name.clone();
            self.out.push(Command::Persist(StoreOp::AssignmentIssued {
                assignment: id,
                node: node_name,
                account: account_name,
                job: job_id,
                version,
                start,
                count,
                at_ms: now_ms,
            }));
            self.out.push(Command::Send {
                node,
                msg: CoordinatorMessage::Assign(Assignment { id, job: job_id, header, share_target, start, count }),
            });
        }
    }

    /// A range for `account`: its oldest submitted job with work left, else its local-chain
    /// template (a new one when the current is stale or exhausted).
    fn issue_for(
        &mut self,
        now_ms: u64,
        account: &str,
        count: u64,
        id: AssignmentId,
    ) -> Option<(JobId, u32, u32, u64)> {
        let submitted = self
            .jobs
            .values_mut()
            .filter(|j| j.account == account && !j.stale && matches!(j.kind, JobKind::Submitted { .. }))
            .find(|j| !j.is_exhausted());
        if let Some(job) = submitted
            && let Some((v, s, n)) = job.issue(count, id)
        {
            return Some((job.id, v, s, n));
        }
        for _ in 0..2 {
            let job_id = match self.local_jobs.get(account).filter(|j| self.jobs.get(j).is_some_and(|j| !j.stale)) {
                Some(&j) => j,
                None => {
                    let template = self.chain.template(account, (now_ms / 1000) as u32);
                    let j = self.fresh_id();
                    let kind = JobKind::LocalChain { height: self.chain.height + 1 };
                    self.jobs.insert(j, Job::new(j, account.into(), kind, template, true));
                    self.local_jobs.insert(account.into(), j);
                    j
                }
            };
            let job = self.jobs.get_mut(&job_id).expect("just found or made");
            match job.issue(count, id) {
                Some((v, s, n)) => return Some((job_id, v, s, n)),
                None => job.stale = true,
            }
        }
        None
    }

    /// Removes an assignment from its node's pipeline (it stays known, for late shares).
    fn retire(&mut self, id: AssignmentId) {
        if let Some(a) = self.assignments.get_mut(&id) {
            a.live = false;
            if let Some(n) = self.nodes.get_mut(&a.node) {
                n.assignments.retain(|&x| x != id);
            }
        }
    }

    fn abandon(&mut self, id: AssignmentId, why: Abandon) {
        let Some(a) = self.assignments.get(&id).copied().filter(|a| a.live) else { return };
        if let Some(book) = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version)) {
            book.abandon(a.start, id, why);
        }
        self.retire(id);
    }

    /// Revokes every live assignment of jobs matching `pred`, telling the nodes.
    fn revoke_where(&mut self, pred: impl Fn(&Job) -> bool, why: Abandon) {
        let ids: Vec<(AssignmentId, NodeId)> = self
            .assignments
            .iter()
            .filter(|(_, a)| a.live && self.jobs.get(&a.job).is_some_and(&pred))
            .map(|(&id, a)| (id, a.node))
            .collect();
        for (id, node) in ids {
            self.abandon(id, why);
            self.out.push(Command::Send { node, msg: CoordinatorMessage::Revoke { assignment: id } });
        }
    }

    /// The chain moved: every local template is stale. Their assignments are revoked; the
    /// jobs stay known (as stale, for late shares) until `STALE_JOBS_KEPT` newer ones exist.
    fn retire_local_templates(&mut self) {
        let stale: Vec<JobId> = std::mem::take(&mut self.local_jobs).into_values().collect();
        let ids: Vec<(AssignmentId, NodeId)> = self
            .assignments
            .iter()
            .filter(|(_, a)| a.live && stale.contains(&a.job))
            .map(|(&id, a)| (id, a.node))
            .collect();
        for (id, node) in ids {
            self.retire(id);
            self.out.push(Command::Send { node, msg: CoordinatorMessage::Revoke { assignment: id } });
        }
        for j in stale {
            if let Some(job) = self.jobs.get_mut(&j) {
                job.retire();
            }
            self.stale_jobs.push_back(j);
        }
        while self.stale_jobs.len() > STALE_JOBS_KEPT {
            if let Some(j) = self.stale_jobs.pop_front() {
                self.jobs.remove(&j);
                self.assignments.retain(|_, a| a.job != j);
            }
        }
    }
}

/// Stale local templates remembered so late shares are told "stale job".
const STALE_JOBS_KEPT: usize = 64;

#[cfg(test)]
mod tests;
