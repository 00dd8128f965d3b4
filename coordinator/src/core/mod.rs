//! The scheduling and accounting core: a pure state machine.
//!
//! Inputs are `handle_*` calls and operator requests, each given the current time in Unix
//! milliseconds; outputs are `Command`s taken with `drain_commands` (send a message, close a
//! connection, persist a record). No sockets, clocks or database inside, so every rule is
//! tested with virtual time.
//!
//! Calling order for the shell: feed events, then drain commands and carry them out in order;
//! `Persist` commands must be durable before any `Send` that follows them goes out (a share's
//! acknowledgement follows its credit).
//!
//! What the core decides: which account each range serves (the policy, in `accounts`), which
//! chain each node serves (the balancer, in `balance`), which nonces each range covers (the
//! range books, in `ranges`), whether a share earns credit (`work`), and when a node has
//! failed or is under standard (`probe`) and who takes its work. Every such decision is also
//! written to the hash-chained ledger (`ledger`).

pub mod accounts;
pub mod balance;
pub mod chains;
pub mod ledger;
pub mod probe;
pub mod ranges;
pub mod work;

mod nodes;

use std::collections::{BTreeMap, VecDeque};

use hashgrid_common::message::{
    AssignmentId, ChainParams, ChainStatus, CoordinatorMessage, JobHit, JobId, JobStatus, NodeAssignment, NodeHello,
    NodeId, NodeMessage, NodeStatus, PROTOCOL_VERSION, Policy, RangeRun, RejectReason, Rollout, Share, ShareOutcome,
    Status,
};
use hashgrid_common::{BlockHash, CompactTarget, Header, Target};
use serde_json::json;

pub use accounts::Account;
use chains::Chain;
pub use nodes::NodeState;
use nodes::{Gone, NodeEntry};
use probe::ProbeConfig;
use ranges::Abandon;
use work::{Job, JobKind};

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
    /// Block target of the built-in local chain.
    pub chain_bits: CompactTarget,
    /// Ranges each node holds at once (the current one and those queued behind it).
    pub pipeline: usize,
    /// Window over which a node's delivered rate is measured.
    pub rate_window_ms: u64,
    /// First id of jobs and assignments; give a value never used before (e.g. the start
    /// time) so ids from before a restart are never mistaken for new ones.
    pub id_base: u64,
    /// When a node is under standard (delivered rate or rejects).
    pub probe: ProbeConfig,
    /// The balancer moves a node to another chain only if that cuts the misallocation by
    /// more than this fraction of the node's capacity.
    pub hysteresis: f64,
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
            probe: ProbeConfig::default(),
            hysteresis: 0.5,
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
        chain: String,
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
        chain: String,
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
    ChainAdded {
        params: ChainParams,
        at_ms: u64,
    },
    /// The balancer's table: the chain `node` serves (`None`: none).
    NodeChain {
        node: String,
        chain: Option<String>,
        at_ms: u64,
    },
    RolloutSet(Option<Rollout>),
    /// A scheduling decision for the hash-chained ledger; the store numbers and links it.
    Ledger {
        at_ms: u64,
        kind: &'static str,
        /// JSON text.
        payload: String,
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
    #[error("no node named {0:?} is connected")]
    NoSuchNode(String),
    #[error("no chain named {0:?}")]
    NoSuchChain(String),
    #[error("chain {0:?} already exists")]
    ChainExists(String),
    #[error(transparent)]
    InvalidChain(#[from] chains::InvalidChain),
    #[error("invalid rollout: {0}")]
    InvalidRollout(String),
}

/// State restored from the store at start-up.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub accounts: Vec<Account>,
    /// Height and tip of the built-in chain.
    pub chain: Option<(u64, BlockHash)>,
    pub jobs: Vec<SubmittedJob>,
    /// Added chains, each with its height and tip if it has blocks.
    pub chains: Vec<(ChainParams, Option<(u64, BlockHash)>)>,
    /// The balancer's table: node name → chain.
    pub node_chains: Vec<(String, String)>,
    pub rollout: Option<Rollout>,
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

#[derive(Debug, Clone, Copy)]
struct AssignmentEntry {
    node: NodeId,
    job: JobId,
    version: u32,
    start: u32,
    count: u64,
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
    /// Nodes that failed and are not connected, by name.
    gone: BTreeMap<String, Gone>,
    /// The chain each node name last served (the balancer's table), kept across reconnects.
    node_chains: BTreeMap<String, String>,
    jobs: BTreeMap<JobId, Job>,
    /// The current local-chain template of each account.
    local_jobs: BTreeMap<String, JobId>,
    assignments: BTreeMap<AssignmentId, AssignmentEntry>,
    chains: BTreeMap<String, Chain>,
    stale_jobs: VecDeque<JobId>,
    next_id: u64,
    counters: Counters,
    rollout: Option<RolloutState>,
    out: Vec<Command>,
}

/// A rollout in force and the ranges issued under it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RolloutState {
    rollout: Rollout,
    /// Ranges issued to nodes of the rollout's version, and to the others.
    to_version: u64,
    to_others: u64,
}

impl RolloutState {
    /// Whether a node of (`is_version`) may take the next range: each side stays within its
    /// share of the ranges issued since the rollout began.
    fn allows(&self, is_version: bool) -> bool {
        let total = (self.to_version + self.to_others + 1) as u128;
        let p = self.rollout.percent.min(100) as u128;
        if is_version {
            (self.to_version as u128) * 100 < p * total
        } else {
            (self.to_others as u128) * 100 < (100 - p) * total
        }
    }
}

/// Why a node failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    ConnectionLost,
    MissedHeartbeats,
    UnderStandard(probe::Shortfall),
}

impl Failure {
    /// The counter it is tallied under.
    fn label(&self) -> &'static str {
        match self {
            Failure::ConnectionLost => "connection lost",
            Failure::MissedHeartbeats => "missed heartbeats",
            Failure::UnderStandard(_) => "under standard",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::UnderStandard(shortfall) => shortfall.fmt(f),
            other => f.write_str(other.label()),
        }
    }
}

/// Running totals since the core started, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub shares_accepted: u64,
    /// Rejected shares by reason (every reason present, zeros included).
    pub shares_rejected: BTreeMap<RejectReason, u64>,
    /// Nodes failed, by why: "connection lost", "missed heartbeats", "under standard".
    pub failovers: BTreeMap<&'static str, u64>,
    pub promotions: u64,
    pub ranges_issued: u64,
    pub ranges_reassigned: u64,
    pub blocks_found: u64,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        Self::restore(config, Snapshot::default())
    }

    /// A core resuming from stored state.
    pub fn restore(config: CoreConfig, snapshot: Snapshot) -> Self {
        let mut chains = BTreeMap::new();
        chains.insert(accounts::DEFAULT_CHAIN.to_string(), Chain::default_chain(config.chain_bits, snapshot.chain));
        for (params, tip) in snapshot.chains {
            match Chain::new(params.clone(), tip) {
                Ok(chain) => {
                    chains.insert(params.name.clone(), chain);
                }
                Err(e) => tracing::warn!("stored chain {:?} skipped: {e}", params.name),
            }
        }
        let mut core = Core {
            next_id: config.id_base.max(1),
            policy: snapshot.policy,
            accounts: snapshot.accounts,
            nodes: BTreeMap::new(),
            gone: BTreeMap::new(),
            node_chains: snapshot.node_chains.into_iter().collect(),
            jobs: BTreeMap::new(),
            local_jobs: BTreeMap::new(),
            assignments: BTreeMap::new(),
            chains,
            stale_jobs: VecDeque::new(),
            counters: Counters {
                shares_rejected: RejectReason::ALL.iter().map(|&r| (r, 0)).collect(),
                ..Counters::default()
            },
            rollout: snapshot.rollout.map(|rollout| RolloutState { rollout, to_version: 0, to_others: 0 }),
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

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn ledger(&mut self, now_ms: u64, kind: &'static str, payload: serde_json::Value) {
        self.out.push(Command::Persist(StoreOp::Ledger { at_ms: now_ms, kind, payload: payload.to_string() }));
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
        self.add_account_on(now_ms, name, standard, period_ms, order, None)
    }

    /// Adds an account drawing its work from `chain` (the built-in chain when `None`).
    pub fn add_account_on(
        &mut self,
        now_ms: u64,
        name: &str,
        standard: u128,
        period_ms: Option<u64>,
        order: Option<i64>,
        chain: Option<&str>,
    ) -> Result<(), AdminError> {
        if !accounts::valid_name(name) {
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
        let chain = chain.unwrap_or(accounts::DEFAULT_CHAIN);
        if !self.chains.contains_key(chain) {
            return Err(AdminError::NoSuchChain(chain.into()));
        }
        let order = order.unwrap_or_else(|| self.accounts.iter().map(|a| a.order + 1).max().unwrap_or(0));
        let mut account = Account::new(name.into(), standard, period_ms, order, now_ms);
        account.chain = chain.into();
        self.out.push(Command::Persist(StoreOp::AccountAdded {
            name: name.into(),
            standard,
            period_ms,
            order,
            period_start_ms: now_ms,
            chain: chain.into(),
        }));
        self.ledger(
            now_ms,
            ledger::kind::ACCOUNT_ADDED,
            json!({"account": name, "standard": standard.to_string(), "period_ms": period_ms, "order": order, "chain": chain}),
        );
        self.accounts.push(account);
        self.replan(now_ms, "account added");
        Ok(())
    }

    pub fn add_chain(&mut self, now_ms: u64, params: ChainParams) -> Result<(), AdminError> {
        if self.chains.contains_key(&params.name) {
            return Err(AdminError::ChainExists(params.name));
        }
        let chain = Chain::new(params.clone(), None)?;
        self.out.push(Command::Persist(StoreOp::ChainAdded { params: params.clone(), at_ms: now_ms }));
        self.ledger(
            now_ms,
            ledger::kind::CHAIN_ADDED,
            json!({"chain": params.name, "tx_per_template": params.tx_per_template, "bit_rate": params.bit_rate,
                   "difficulty": params.difficulty, "weight": params.weight}),
        );
        self.chains.insert(params.name.clone(), chain);
        self.replan(now_ms, "chain added");
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
        self.ledger(now_ms, ledger::kind::POLICY, json!({"policy": policy.as_str()}));
        // Ranges in flight finish; new ranges follow the new policy.
        self.replan(now_ms, "policy changed");
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
        self.replan(now_ms, "job submitted");
        Ok(id)
    }

    /// A job's coverage: submitted jobs with their hits; local-chain templates with the
    /// chain's block target as theirs (blocks found are in the ledger).
    pub fn job_status(&self, id: JobId) -> Result<JobStatus, AdminError> {
        let job = self.jobs.get(&id).ok_or(AdminError::NoSuchJob(id))?;
        let (target, hits) = match &job.kind {
            JobKind::Submitted { target, hits } => (*target, hits.clone()),
            JobKind::LocalChain { .. } => {
                let chain = self.account_chain(&job.account);
                let target = self.chains.get(chain).map_or(Target::DIFFICULTY_1, |c| c.local.target());
                (target, Vec::new())
            }
        };
        let c = job.coverage();
        let mut runs: Vec<RangeRun> = Vec::new();
        'books: for (&version, book) in &job.books {
            for (start, count, fate) in book.ranges() {
                let fate = fate.describe();
                let full = runs.len() >= MAX_RUNS;
                match runs.last_mut() {
                    Some(r) if r.version == version && r.fate == fate && r.start as u64 + r.count == start => {
                        r.count += count
                    }
                    _ if full => break 'books,
                    _ => runs.push(RangeRun { version, start: start as u32, count, fate: fate.into() }),
                }
            }
        }
        Ok(JobStatus {
            job: id,
            account: job.account.clone(),
            header: job.template,
            target,
            searched: c.done,
            in_flight: c.in_flight,
            abandoned: c.abandoned,
            reassigned: c.reassigned,
            total: ranges::NONCE_SPACE * job.books.len().max(1) as u64,
            hits,
            runs,
        })
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let mut accounts: Vec<_> = self.accounts.iter().map(Account::status).collect();
        accounts.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        Status {
            policy: self.policy,
            accounts,
            nodes: self.node_list(now_ms),
            rollout: self.rollout.as_ref().map(|r| r.rollout.clone()),
        }
    }

    /// Every connected node, then the failed ones that are gone.
    pub fn node_list(&self, now_ms: u64) -> Vec<NodeStatus> {
        let mut list: Vec<NodeStatus> = self
            .nodes
            .iter()
            .map(|(&id, n)| NodeStatus {
                name: n.name.clone(),
                state: n.state_name().into(),
                hashrate: n.delivered_rate(now_ms, self.config.rate_window_ms),
                announced_hashrate: n.announced,
                account: self.serving(id),
                software_version: n.software_version.clone(),
                chain: n.chain.clone(),
                draining: n.draining,
                devices: n.devices.clone(),
                accepted: n.accepted,
                rejected: n.rejected,
                protocol: n.protocol,
            })
            .collect();
        list.extend(self.gone.iter().map(|(name, g)| NodeStatus {
            name: name.clone(),
            state: "failed".into(),
            hashrate: 0.0,
            announced_hashrate: g.announced,
            account: None,
            software_version: g.software_version.clone(),
            chain: None,
            draining: false,
            devices: g.devices.clone(),
            accepted: g.accepted,
            rejected: g.rejected,
            protocol: g.protocol,
        }));
        list
    }

    /// The account a node's current range serves.
    fn serving(&self, node: NodeId) -> Option<String> {
        let n = self.nodes.get(&node)?;
        let a = self.assignments.get(n.assignments.first()?)?;
        self.jobs.get(&a.job).map(|j| j.account.clone())
    }

    /// Chains with their load, nodes and accounts.
    pub fn chain_list(&self, now_ms: u64) -> Vec<ChainStatus> {
        self.chains
            .values()
            .map(|c| {
                let nodes: Vec<&NodeEntry> = self
                    .nodes
                    .values()
                    .filter(|n| n.state == NodeState::Active && n.chain.as_deref() == Some(&c.params.name))
                    .collect();
                ChainStatus {
                    params: c.params.clone(),
                    height: c.local.height,
                    load: c.load(now_ms),
                    measured_bit_rate: c.measured_bit_rate(now_ms),
                    nodes: nodes.iter().map(|n| n.name.clone()).collect(),
                    capacity: nodes.iter().map(|n| n.announced).sum(),
                    accounts: self
                        .accounts
                        .iter()
                        .filter(|a| a.chain == c.params.name)
                        .map(|a| a.name.clone())
                        .collect(),
                }
            })
            .collect()
    }

    /// Which chain and account every connected node serves.
    pub fn assignment_list(&self, now_ms: u64) -> Vec<NodeAssignment> {
        self.nodes
            .iter()
            .map(|(&id, n)| NodeAssignment {
                node: n.name.clone(),
                state: n.state_name().into(),
                chain: n.chain.clone(),
                account: self.serving(id),
                hashrate: n.delivered_rate(now_ms, self.config.rate_window_ms),
                ranges: n.assignments.len() as u32,
            })
            .collect()
    }

    /// `rollout`: from now on, `percent`% of new ranges go to nodes announcing `version` and the
    /// rest to the others (`None` ends the rollout: every node takes ranges again).
    pub fn set_rollout(&mut self, now_ms: u64, rollout: Option<Rollout>) -> Result<(), AdminError> {
        if let Some(r) = &rollout {
            if r.percent > 100 {
                return Err(AdminError::InvalidRollout(format!("{}% is more than 100%", r.percent)));
            }
            if r.version.trim().is_empty() {
                return Err(AdminError::InvalidRollout("name the version".into()));
            }
        }
        self.out.push(Command::Persist(StoreOp::RolloutSet(rollout.clone())));
        self.ledger(
            now_ms,
            ledger::kind::ROLLOUT,
            json!({"version": rollout.as_ref().map(|r| &r.version), "percent": rollout.as_ref().map(|r| r.percent)}),
        );
        self.rollout = rollout.map(|rollout| RolloutState { rollout, to_version: 0, to_others: 0 });
        self.replan(now_ms, "rollout changed");
        Ok(())
    }

    /// `node drain`: the node finishes its ranges and is given no more.
    pub fn drain_node(&mut self, now_ms: u64, name: &str) -> Result<(), AdminError> {
        let ids = self.named(name)?;
        for id in ids {
            let n = self.nodes.get_mut(&id).expect("named");
            if n.draining {
                continue;
            }
            n.draining = true;
            let ranges = n.assignments.len();
            self.ledger(now_ms, ledger::kind::DRAIN, json!({"node": name, "ranges_in_flight": ranges}));
        }
        self.replan(now_ms, "node drained");
        Ok(())
    }

    /// `node promote`: a standby, failed or drained node becomes active.
    pub fn promote_node(&mut self, now_ms: u64, name: &str) -> Result<(), AdminError> {
        for id in self.named(name)? {
            self.promote(now_ms, id, "operator");
        }
        self.replan(now_ms, "node promoted");
        Ok(())
    }

    /// `node standby`: an active node becomes a standby; its ranges are reassigned at once.
    pub fn standby_node(&mut self, now_ms: u64, name: &str) -> Result<(), AdminError> {
        for id in self.named(name)? {
            let n = self.nodes.get_mut(&id).expect("named");
            if n.state == NodeState::Standby && !n.draining {
                continue;
            }
            n.state = NodeState::Standby;
            n.draining = false;
            let ranges = std::mem::take(&mut n.assignments);
            for &r in &ranges {
                self.out.push(Command::Send { node: id, msg: CoordinatorMessage::Revoke { assignment: r } });
            }
            let moved = self.hand_over(now_ms, id, &ranges, None);
            self.ledger(now_ms, ledger::kind::STANDBY, json!({"node": name, "by": "operator", "ranges": moved}));
        }
        self.replan(now_ms, "node made standby");
        Ok(())
    }

    fn named(&self, name: &str) -> Result<Vec<NodeId>, AdminError> {
        let ids: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.name == name).map(|(&id, _)| id).collect();
        if ids.is_empty() { Err(AdminError::NoSuchNode(name.into())) } else { Ok(ids) }
    }

    // ---- node events ----

    /// A node passed authentication and said hello; `node` is the shell's connection id. A
    /// node that failed and comes back joins as a standby.
    pub fn handle_node_joined(&mut self, now_ms: u64, node: NodeId, hello: &NodeHello) {
        self.handle_node_joined_speaking(now_ms, node, hello, PROTOCOL_VERSION);
    }

    /// `handle_node_joined` for a node whose connection speaks protocol version `protocol`.
    pub fn handle_node_joined_speaking(&mut self, now_ms: u64, node: NodeId, hello: &NodeHello, protocol: u16) {
        let mut entry = NodeEntry::new(now_ms, hello);
        entry.protocol = protocol;
        if self.gone.remove(&hello.name).is_some() {
            entry.state = NodeState::Standby;
        }
        if entry.state == NodeState::Active {
            entry.chain = self.node_chains.get(&hello.name).filter(|c| self.chains.contains_key(*c)).cloned();
        }
        self.nodes.insert(node, entry);
        self.out.push(Command::Send {
            node,
            msg: CoordinatorMessage::Welcome { node, heartbeat_ms: self.config.heartbeat_ms },
        });
        self.replan(now_ms, "node joined");
    }

    pub fn handle_node_message(&mut self, now_ms: u64, node: NodeId, msg: NodeMessage) {
        let Some(entry) = self.nodes.get_mut(&node) else { return };
        entry.last_seen_ms = now_ms;
        match msg {
            NodeMessage::Heartbeat { hashrate, devices } => {
                if hashrate.is_finite() && hashrate > 0.0 {
                    entry.announced = hashrate;
                }
                if !devices.is_empty() {
                    entry.devices = devices;
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

    /// The node's connection is gone: it has failed, and its ranges are reassigned at once.
    pub fn handle_node_left(&mut self, now_ms: u64, node: NodeId) {
        self.fail(now_ms, node, Failure::ConnectionLost, false);
    }

    /// The node said goodbye (it is shutting down): its ranges are handed over at once, as in
    /// a failover, but it is not counted as failed.
    pub fn handle_node_departed(&mut self, now_ms: u64, node: NodeId) {
        let Some(n) = self.nodes.remove(&node) else { return };
        let was_active = n.state == NodeState::Active;
        let (promoted, moved) = self.take_over(now_ms, node, n.chain, &n.assignments, was_active, "departure");
        self.ledger(now_ms, ledger::kind::DEPARTURE, json!({"node": n.name, "promoted": promoted, "ranges": moved}));
        self.replan(now_ms, "node left");
    }

    /// Timers: silent nodes, nodes under standard, period renewals.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| now_ms.saturating_sub(n.last_seen_ms) > self.config.failover_after_ms)
            .map(|(&id, _)| id)
            .collect();
        for node in silent {
            self.out.push(Command::Close { node, reason: "missed heartbeats".into() });
            self.fail(now_ms, node, Failure::MissedHeartbeats, false);
        }
        let mut short = Vec::new();
        for (&id, n) in self.nodes.iter_mut() {
            let working = n.assignments.first().and_then(|a| self.assignments.get(a)).map(|a| a.share_target.work());
            let active = n.state == NodeState::Active;
            n.probe.advance(now_ms, n.announced, working.filter(|_| active), &self.config.probe);
            if active && let Some(why) = n.probe.verdict(&self.config.probe) {
                short.push((id, why));
            }
        }
        for (id, why) in short {
            self.fail(now_ms, id, Failure::UnderStandard(why), true);
        }
        if self.rollout.is_some() {
            // A node the rollout held back gets its turn as the shares even out.
            let waiting: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.takes_work() && n.assignments.len() < self.config.pipeline)
                .map(|(&id, _)| id)
                .collect();
            for id in waiting {
                self.fill(now_ms, id);
            }
        }
        let mut renewed = Vec::new();
        for a in &mut self.accounts {
            if a.renew_if_due(now_ms) {
                renewed.push((a.name.clone(), a.period_start_ms));
            }
        }
        for (account, period_start_ms) in &renewed {
            self.out.push(Command::Persist(StoreOp::PeriodRenewed {
                account: account.clone(),
                period_start_ms: *period_start_ms,
            }));
            self.ledger(
                now_ms,
                ledger::kind::PERIOD_RENEWED,
                json!({"account": account, "period_start_ms": period_start_ms}),
            );
        }
        if !renewed.is_empty() {
            self.replan(now_ms, "period renewed");
        }
    }

    fn handle_share(&mut self, now_ms: u64, node: NodeId, share: Share) {
        let outcome = match self.check_and_credit(now_ms, node, &share) {
            Ok(work) => {
                self.counters.shares_accepted += 1;
                ShareOutcome::Accepted { work }
            }
            Err(reason) => {
                *self.counters.shares_rejected.entry(reason).or_default() += 1;
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.rejected += 1;
                    // Only bad work counts against a node: an unknown or stale job (the
                    // coordinator restarted, a block moved the chain) or a duplicate (a share
                    // re-sent after a lost acknowledgement) is not the node's fault.
                    if matches!(
                        reason,
                        RejectReason::AboveTarget | RejectReason::VersionOutsideMask | RejectReason::TimeOutOfWindow
                    ) {
                        n.probe.rejected();
                    }
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
            JobKind::LocalChain { .. } => {
                let chain = self.account_chain(&account_name);
                block = self.chains.get(chain).is_some_and(|c| c.local.target().is_met_by(&verified.hash));
            }
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
            n.probe.accepted();
            n.credited.push_back((now_ms, work));
        }
        let reached = match self.accounts.iter_mut().find(|a| a.name == account_name) {
            Some(a) => {
                let was_below = !a.up_to_standard();
                a.delivered = a.delivered.saturating_add(work);
                a.shares += 1;
                (was_below && a.up_to_standard()).then(|| (a.delivered, a.standard, a.chain.clone()))
            }
            None => None,
        };
        if block {
            self.counters.blocks_found += 1;
            let chain = self.account_chain(&account_name).to_string();
            let height = match self.chains.get_mut(&chain) {
                Some(c) => {
                    c.local.extend(verified.hash);
                    c.local.height
                }
                None => 0,
            };
            self.out.push(Command::Persist(StoreOp::BlockFound {
                chain: chain.clone(),
                height,
                hash: verified.hash,
                account: account_name.clone(),
            }));
            self.ledger(
                now_ms,
                ledger::kind::BLOCK_FOUND,
                json!({"chain": chain, "height": height, "hash": verified.hash.to_string(), "account": account_name}),
            );
            self.retire_local_templates(now_ms, &chain);
        }
        if let Some((delivered, standard, chain)) = &reached {
            self.ledger(
                now_ms,
                ledger::kind::STANDARD_REACHED,
                json!({"account": account_name, "delivered": delivered.to_string(), "standard": standard.to_string(), "chain": chain}),
            );
            // Capacity moves on: ranges still serving this account are given back.
            self.revoke_where(|job| job.account == account_name, Abandon::AccountUpToStandard);
        }
        if block || reached.is_some() {
            self.replan(now_ms, if block { "block found" } else { "account up to standard" });
        }
        if let Some((_, _, chain)) = reached {
            let next = accounts::choose(self.policy, &self.accounts, 1, |i| self.accounts[i].chain != chain)
                .map(|i| self.accounts[i].name.clone());
            self.ledger(
                now_ms,
                ledger::kind::SWITCH,
                json!({"from": account_name, "to": next, "chain": chain, "policy": self.policy.as_str()}),
            );
        }
        Ok(work)
    }

    // ---- failover ----

    /// The node failed (`connected`: it is still connected but under standard). Its ranges
    /// are reassigned at once: all to a standby promoted to active, else spread over the
    /// remaining active nodes, else given back to be issued when capacity returns.
    fn fail(&mut self, now_ms: u64, node: NodeId, failure: Failure, connected: bool) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        let name = n.name.clone();
        let chain = n.chain.clone();
        let ranges = std::mem::take(&mut n.assignments);
        let was_active = n.state == NodeState::Active;
        if connected {
            n.state = NodeState::Failed;
            n.draining = false;
            n.chain = None;
            for &r in &ranges {
                self.out.push(Command::Send { node, msg: CoordinatorMessage::Revoke { assignment: r } });
            }
        } else {
            let n = self.nodes.remove(&node).expect("present");
            self.gone.insert(name.clone(), Gone::from(&n));
        }
        let (promoted, moved) = self.take_over(now_ms, node, chain, &ranges, was_active, "failover");
        if was_active || !moved.is_empty() {
            *self.counters.failovers.entry(failure.label()).or_default() += 1;
            let reason = failure.to_string();
            tracing::info!(node = %name, %reason, ?promoted, ranges = ranges.len(), "failover");
            self.ledger(
                now_ms,
                ledger::kind::FAILOVER,
                json!({"node": name, "reason": reason, "promoted": promoted, "ranges": moved}),
            );
        }
        self.replan(now_ms, "node failed");
    }

    /// The work of a node that stopped (`node` is no longer active): a standby is promoted if
    /// the node was active (it takes the node's chain), then `ranges` are handed over. Returns
    /// the promoted node's name and what happened to each range.
    fn take_over(
        &mut self,
        now_ms: u64,
        node: NodeId,
        chain: Option<String>,
        ranges: &[AssignmentId],
        was_active: bool,
        why: &str,
    ) -> (Option<String>, Vec<serde_json::Value>) {
        let promoted = if was_active { self.standby_to_promote() } else { None };
        if let Some(p) = promoted {
            if chain.is_some() {
                self.set_chain(now_ms, p, chain, why);
            }
            self.promote(now_ms, p, why);
        }
        let moved = self.hand_over(now_ms, node, ranges, promoted);
        (promoted.and_then(|p| self.nodes.get(&p)).map(|p| p.name.clone()), moved)
    }

    /// The connected standby with the highest announced rate.
    fn standby_to_promote(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Standby && !n.draining)
            .max_by(|(a_id, a), (b_id, b)| a.announced.total_cmp(&b.announced).then(b_id.cmp(a_id)))
            .map(|(&id, _)| id)
    }

    fn promote(&mut self, now_ms: u64, node: NodeId, by: &str) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.state == NodeState::Active && !n.draining {
            return;
        }
        let from = n.state_name();
        n.state = NodeState::Active;
        n.draining = false;
        n.probe.reset(now_ms);
        let name = n.name.clone();
        self.counters.promotions += 1;
        self.ledger(now_ms, ledger::kind::PROMOTION, json!({"node": name, "from": from, "by": by}));
    }

    /// Hands the ranges `ranges` of `from` to `to`, or spread over the active nodes, or back
    /// to their books. Returns what happened to each, for the ledger.
    fn hand_over(
        &mut self,
        now_ms: u64,
        from: NodeId,
        ranges: &[AssignmentId],
        to: Option<NodeId>,
    ) -> Vec<serde_json::Value> {
        let mut moved = Vec::new();
        for &id in ranges {
            let Some(a) = self.assignments.get(&id).copied().filter(|a| a.live) else { continue };
            let target = to.or_else(|| {
                let chain = self
                    .nodes
                    .get(&from)
                    .and_then(|n| n.chain.clone())
                    .or_else(|| self.jobs.get(&a.job).map(|j| self.account_chain(&j.account).to_string()));
                self.nodes
                    .iter()
                    .filter(|(id, n)| **id != from && n.takes_work())
                    .min_by_key(|(id, n)| (n.chain != chain, n.assignments.len(), **id))
                    .map(|(&id, _)| id)
            });
            match target {
                Some(t) => {
                    let new = self.reassign(now_ms, id, t);
                    let to_name = self.nodes.get(&t).map(|n| n.name.clone());
                    moved.push(json!({"assignment": id, "job": a.job, "version": a.version, "start": a.start,
                                      "count": a.count, "to": to_name, "new_assignment": new}));
                }
                None => {
                    self.abandon(id, Abandon::NodeFailed);
                    moved.push(json!({"assignment": id, "job": a.job, "version": a.version, "start": a.start,
                                      "count": a.count, "to": null}));
                }
            }
        }
        moved
    }

    /// Gives the live range of assignment `old` to `node` as a new assignment: all of it, or,
    /// when it is longer than `node` should hold at its rate, its first part (the rest waits,
    /// first in line, for the next range issued).
    fn reassign(&mut self, now_ms: u64, old: AssignmentId, node: NodeId) -> Option<AssignmentId> {
        let a = self.assignments.get(&old).copied().filter(|a| a.live)?;
        let new = self.fresh_id();
        let want = self.range_count(node, now_ms);
        let book = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version))?;
        let count = book.reassign(a.start, old, new, want)?;
        self.retire(old);
        let share_target = self.share_target_for(now_ms, node, a.job);
        self.issue_assignment(now_ms, node, new, a.job, a.version, a.start, count, share_target, Some(old));
        Some(new)
    }

    /// Nonces for one range of `node`: `range_ms` of work at its rate, in 2^16 steps.
    fn range_count(&mut self, node: NodeId, now_ms: u64) -> u64 {
        let rate = self.planning_rate(node, now_ms);
        let count = ((rate * self.config.range_ms as f64 / 1000.0) as u64).clamp(1 << 16, ranges::NONCE_SPACE);
        count.next_multiple_of(1 << 16).min(ranges::NONCE_SPACE)
    }

    // ---- allocation ----

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn account_chain(&self, account: &str) -> &str {
        self.accounts.iter().find(|a| a.name == account).map_or(accounts::DEFAULT_CHAIN, |a| a.chain.as_str())
    }

    /// The rate used to size ranges and share targets: announced, corrected by measurement
    /// once enough shares have come in.
    fn planning_rate(&mut self, node: NodeId, now_ms: u64) -> f64 {
        let window = self.config.rate_window_ms;
        let Some(n) = self.nodes.get_mut(&node) else { return 0.0 };
        let measured = n.delivered_rate(now_ms, window);
        while n.credited.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > window) {
            n.credited.pop_front();
        }
        let rate = if n.credited.len() >= 20 { measured } else { n.announced };
        rate.max(1000.0)
    }

    /// The share target for `node` working on `job`: a few shares per second at its rate;
    /// never harder than a submitted job's own target (every hit must also be a share).
    fn share_target_for(&mut self, now_ms: u64, node: NodeId, job: JobId) -> Target {
        let rate = self.planning_rate(node, now_ms);
        let share_work = ((rate / self.config.shares_per_second) as u128).max(self.config.min_share_work);
        let mut share_target = Target::from_expected_hashes(share_work);
        if let Some(JobKind::Submitted { target, .. }) = self.jobs.get(&job).map(|j| &j.kind) {
            share_target = share_target.max(*target);
        }
        share_target
    }

    /// Rebalances the nodes over the chains, then tops every pipeline up.
    fn replan(&mut self, now_ms: u64, reason: &str) {
        self.rebalance(now_ms, reason);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.fill(now_ms, id);
        }
    }

    /// The balancer: chains with demand get active nodes in proportion to their load.
    fn rebalance(&mut self, now_ms: u64, reason: &str) {
        let loads: Vec<balance::ChainLoad> = self
            .chains
            .values()
            .filter(|c| self.accounts.iter().any(|a| a.chain == c.params.name && !a.up_to_standard()))
            .map(|c| balance::ChainLoad { name: c.params.name.clone(), load: c.load(now_ms) })
            .collect();
        let nodes: Vec<balance::NodeCapacity<NodeId>> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.takes_work())
            .map(|(&id, n)| balance::NodeCapacity { node: id, capacity: n.announced, chain: n.chain.clone() })
            .collect();
        if nodes.is_empty() {
            return;
        }
        let plan = balance::balance(&loads, &nodes, self.config.hysteresis);
        for (id, chain) in plan {
            // A chain without demand keeps its nodes' assignment until there is demand again
            // (nothing to move them to); they park.
            if chain.is_some() {
                self.set_chain(now_ms, id, chain, reason);
            }
        }
    }

    fn set_chain(&mut self, now_ms: u64, node: NodeId, chain: Option<String>, reason: &str) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.chain == chain {
            return;
        }
        let from = std::mem::replace(&mut n.chain, chain.clone());
        let name = n.name.clone();
        match &chain {
            Some(c) => self.node_chains.insert(name.clone(), c.clone()),
            None => self.node_chains.remove(&name),
        };
        self.out.push(Command::Persist(StoreOp::NodeChain { node: name.clone(), chain: chain.clone(), at_ms: now_ms }));
        self.ledger(
            now_ms,
            ledger::kind::REBALANCE,
            json!({"node": name, "from": from, "to": chain, "reason": reason}),
        );
    }

    /// Tops the node's pipeline up with ranges for the accounts of its chain the policy
    /// chooses.
    fn fill(&mut self, now_ms: u64, node: NodeId) {
        loop {
            let Some(n) = self.nodes.get(&node) else { return };
            if !n.takes_work() || n.assignments.len() >= self.config.pipeline {
                return;
            }
            let Some(chain) = n.chain.clone() else { return };
            let is_version = self.rollout.as_ref().map(|r| n.software_version == r.rollout.version);
            if let (Some(r), Some(is_version)) = (&self.rollout, is_version)
                && !r.allows(is_version)
            {
                return;
            }
            let count = self.range_count(node, now_ms);
            let Some(account) =
                accounts::choose(self.policy, &self.accounts, count, |i| self.accounts[i].chain != chain)
            else {
                return;
            };
            let account_name = self.accounts[account].name.clone();
            let id = self.fresh_id();
            let Some((job_id, version, start, count)) = self.issue_for(now_ms, &account_name, count, id) else {
                return;
            };
            let share_target = self.share_target_for(now_ms, node, job_id);
            self.accounts[account].issued += count as u128;
            if let (Some(r), Some(is_version)) = (&mut self.rollout, is_version) {
                if is_version {
                    r.to_version += 1;
                } else {
                    r.to_others += 1;
                }
            }
            self.issue_assignment(now_ms, node, id, job_id, version, start, count, share_target, None);
        }
    }

    /// Records and sends a new assignment of a range already taken from its book.
    #[allow(clippy::too_many_arguments)]
    fn issue_assignment(
        &mut self,
        now_ms: u64,
        node: NodeId,
        id: AssignmentId,
        job_id: JobId,
        version: u32,
        start: u32,
        count: u64,
        share_target: Target,
        reassigned_from: Option<AssignmentId>,
    ) {
        let job = &self.jobs[&job_id];
        let header = Header { version, ..job.template };
        let account = job.account.clone();
        let chain = self.account_chain(&account).to_string();
        self.counters.ranges_issued += 1;
        if reassigned_from.is_some() {
            self.counters.ranges_reassigned += 1;
        }
        self.assignments
            .insert(id, AssignmentEntry { node, job: job_id, version, start, count, share_target, live: true });
        let Some(n) = self.nodes.get_mut(&node) else { return };
        n.assignments.push(id);
        let node_name = n.name.clone();
        self.out.push(Command::Persist(StoreOp::AssignmentIssued {
            assignment: id,
            node: node_name.clone(),
            account: account.clone(),
            job: job_id,
            version,
            start,
            count,
            at_ms: now_ms,
        }));
        self.ledger(
            now_ms,
            ledger::kind::ASSIGNMENT,
            json!({"assignment": id, "node": node_name, "account": account, "chain": chain, "job": job_id,
                   "version": version, "start": start, "count": count,
                   "share_work": share_target.work().to_string(), "reassigned_from": reassigned_from}),
        );
        self.out.push(Command::Send {
            node,
            msg: CoordinatorMessage::Assign(hashgrid_common::message::Assignment {
                id,
                job: job_id,
                header,
                share_target,
                start,
                count,
            }),
        });
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
        let chain_name = self.account_chain(account).to_string();
        for _ in 0..2 {
            let job_id = match self.local_jobs.get(account).filter(|j| self.jobs.get(j).is_some_and(|j| !j.stale)) {
                Some(&j) => j,
                None => {
                    let chain = self.chains.get_mut(&chain_name)?;
                    let template = chain.local.template(account, (now_ms / 1000) as u32);
                    chain.record_update(now_ms);
                    let kind = JobKind::LocalChain { height: chain.local.height + 1 };
                    let j = self.fresh_id();
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

    /// `chain` moved: every local template on it is stale. Their assignments are revoked; the
    /// jobs stay known (as stale, for late shares) until `STALE_JOBS_KEPT` newer ones exist.
    fn retire_local_templates(&mut self, _now_ms: u64, chain: &str) {
        let on_chain: Vec<String> =
            self.local_jobs.keys().filter(|account| self.account_chain(account) == chain).cloned().collect();
        let stale: Vec<JobId> = on_chain.iter().filter_map(|a| self.local_jobs.remove(a)).collect();
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

/// Most runs of ranges `job_status` lists (a frame stays far below its size cap).
const MAX_RUNS: usize = 10_000;

/// Stale local templates remembered so late shares are told "stale job".
const STALE_JOBS_KEPT: usize = 64;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover;
