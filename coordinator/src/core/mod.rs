//! The scheduling and accounting core: a pure state machine. No sockets, clocks or database
//! inside, so every rule is tested with virtual time.
//!
//! What the core decides: which account each range serves (the policy, in `accounts`), which
//! chain each node serves (the balancer, in `balance`), which nonces each range covers (the
//! range books, in `ranges`), whether a share earns credit (`work`), and when a node has
//! failed or is under standard (`probe`) and who takes its work. Every such decision is also
//! written to the hash-chained ledger (`ledger`).
//!
//! # The contract
//!
//! [`Core`]'s methods come in four kinds, each in its own file:
//!
//! - **Getters** (`views`): `status`, `node_list`, `chain_list`, `assignment_list`,
//!   `job_status`, `accounts`, `counters`, `config`, `policy`. They read and never change state.
//! - **Inputs** (`events`): `handle_node_joined`, `handle_node_message`, `handle_node_left`,
//!   `handle_node_departed` and `handle_tick`, one per thing that happened to the shell; for
//!   accounts' pool connections `handle_pool_connected`, `handle_pool_line` and
//!   `handle_pool_closed` (`pools`); for Stratum miners `handle_miner_joined` and
//!   `handle_miner_share` (`miners`; a miner leaves as a node does). Their
//!   work is done in `intake` (shares), `takeover` (failures) and `issue` (ranges).
//! - **Operator mutators** (`operator`): `add_account`, `add_chain`, `set_policy`,
//!   `submit_job`, `set_rollout`, `drain_node`, `promote_node`, `standby_node`; `set_pool`
//!   (`pools`). Each checks the
//!   request and either refuses it with an [`AdminError`], changing nothing, or applies it.
//! - **Output**: `drain_commands`, the [`Command`]s produced since its last call.
//!
//! Every input and mutator takes `now_ms`, the current time in Unix milliseconds; the core
//! never reads a clock.
//!
//! # Calling order
//!
//! 1. Build the core with `Core::restore` from the store's `Snapshot` (or `Core::new`), with an
//!    `id_base` never used before.
//! 2. For each event, call the one input or mutator that matches it, with `now_ms` never less
//!    than the previous call's. Call `handle_tick` regularly (every 100 ms in the shell): it is
//!    the only input that notices silence, under-delivery and period ends.
//! 3. After a call or a batch of calls, `drain_commands` and carry the commands out.
//!
//! # What the shell guarantees
//!
//! - Commands are carried out in the order drained.
//! - Every `Persist` is durable before any `Send` or `Close` drained after it goes out: a
//!   share's acknowledgement follows its credit, so nothing acknowledged is lost.
//! - `NodeId`s are the shell's connection ids, never reused while the process runs; a node is
//!   joined (after authentication) before its messages are fed, and every joined node's end is
//!   reported once, as `handle_node_left` (a failure) or `handle_node_departed` (a goodbye).
//! - Messages from a node are fed in the order they arrived on its connection.
//! - If a `Persist` cannot be made durable, nothing drained after it is carried out and the
//!   core is fed no more.

pub mod accounts;
pub mod balance;
pub mod chains;
pub mod ledger;
pub mod probe;
pub mod ranges;
pub mod upstream;
pub mod work;

mod events;
mod intake;
mod issue;
mod miners;
mod nodes;
mod operator;
mod pools;
mod takeover;
mod views;

use std::collections::{BTreeMap, VecDeque};

use hashgrid_common::message::{
    AssignmentId, ChainParams, ChainStatus, CoordinatorMessage, JobHit, JobId, JobStatus, NodeAssignment, NodeHello,
    NodeId, NodeMessage, NodeStatus, Policy, PoolSettings, RangeRun, RejectReason, Rollout, Share, ShareOutcome,
    StandardBasis, Status,
};
use hashgrid_common::stratum::{RpcError, ServerJob};
use hashgrid_common::{BlockHash, CompactTarget, Header, Target};

pub use accounts::{Account, Work};
use chains::Chain;
use issue::RolloutState;
use ledger::{LedgerRecord, RangeMove};
pub use nodes::NodeState;
use nodes::{Gone, NodeEntry};
use probe::ProbeConfig;
use ranges::Abandon;
use upstream::{Upstream, UpstreamConfig};
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
    /// How long after a range stops being live (finished, revoked, handed over) its node's
    /// late shares for it are still taken: longer than a node's reconnect and re-send.
    pub late_share_grace_ms: u64,
    /// Accounts' pool sessions: failover, failback, submits.
    pub upstream: UpstreamConfig,
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
            late_share_grace_ms: 60_000,
            upstream: UpstreamConfig::default(),
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Send {
        node: NodeId,
        msg: CoordinatorMessage,
    },
    Close {
        node: NodeId,
        reason: String,
    },
    Persist(StoreOp),
    /// Open connection `conn` to the pool at `url` (a valid pool URL); report
    /// `handle_pool_connected`, then each line, then `handle_pool_closed` once (also when it
    /// cannot be opened).
    PoolConnect {
        conn: u64,
        url: String,
    },
    /// Write `line` (it ends with `\n`) to pool connection `conn`.
    PoolSend {
        conn: u64,
        line: String,
    },
    /// Close pool connection `conn` (nothing more is reported for it).
    PoolClose {
        conn: u64,
        reason: String,
    },
    /// Hand an order to the Stratum miner `node`'s session (`miners`).
    Miner {
        node: NodeId,
        order: MinerOrder,
    },
}

/// What the core tells a Stratum miner's session.
#[derive(Debug, Clone, PartialEq)]
pub enum MinerOrder {
    /// Its next job (`ServerSession::set_job`).
    Job(Box<ServerJob>),
    /// The share `ticket` is recorded (`Ok`) or refused (`ServerSession::share_recorded`).
    ShareRecorded { ticket: u64, result: Result<(), RpcError> },
}

/// A record the shell must make durable.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    AccountAdded {
        name: String,
        standard: Work,
        period_ms: Option<u64>,
        order: i64,
        period_start_ms: u64,
        chain: String,
    },
    /// An accepted share: `work` credited to `account`.
    Credit {
        account: String,
        work: Work,
        node: String,
        job: JobId,
        header: Header,
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
    /// A local-chain template was made for `account` (job history: `job show` after a
    /// restart).
    TemplateMade {
        job: JobId,
        account: String,
        header: Header,
        target: Target,
    },
    /// What became of an issued range (`ranges::Fate::describe`); `handed`: the nonces of it
    /// handed over to a new assignment in a failover.
    RangeFate {
        assignment: AssignmentId,
        fate: &'static str,
        handed: u64,
    },
    /// The account's pool (`None`: none) and the figure its standard is measured on.
    AccountPoolSet {
        account: String,
        pool: Option<PoolSettings>,
        basis: StandardBasis,
    },
    /// A credited share (`hash`) was sent to the account's pool at `url` as `pool_job`; its
    /// `work` is the pool's difficulty as work. Its outcome follows as `UpstreamOutcome`.
    UpstreamSubmitted {
        account: String,
        hash: BlockHash,
        url: String,
        pool_job: String,
        work: Work,
        at_ms: u64,
    },
    /// The pool's answer to the submit of share `hash`: "accepted", "rejected: REASON",
    /// "unknown", or "not submitted: REASON".
    UpstreamOutcome {
        hash: BlockHash,
        outcome: String,
        at_ms: u64,
    },
    /// A scheduling decision for the hash-chained ledger; the store numbers and links it.
    Ledger {
        at_ms: u64,
        record: LedgerRecord,
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
    #[error("invalid pool: {0}")]
    InvalidPool(String),
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
    /// Accounts' pools.
    pub pools: Vec<(String, PoolSettings)>,
    /// Accounts' submits upstream by outcome.
    pub pool_counts: BTreeMap<String, upstream::UpstreamCounts>,
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

/// A range issued to a node: the nonces `start..start + count` of `version` of `job`.
#[derive(Debug, Clone)]
struct AssignmentEntry {
    /// The connection it was sent over.
    node: NodeId,
    /// The name of the node holding it: the node may send its shares over a later connection.
    holder: String,
    job: JobId,
    version: u32,
    /// The version bits rolled with `version` (`Assignment::rolled`).
    rolled: u32,
    start: u32,
    count: u64,
    share_target: Target,
    /// `Work::of(&share_target)`, the credit of each of its shares (worked out once).
    share_work: Work,
    /// Still in its node's pipeline (not finished, revoked or handed over).
    live: bool,
    /// When it stopped being live (meaningful once `live` is false): its late shares are
    /// accepted for `CoreConfig::late_share_grace_ms` after that.
    retired_ms: u64,
}

/// The coordinator's scheduling and accounting state (see the module's contract).
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
    /// Ranges handed over in part, whose rest waits abandoned (`Abandon::Reassigned`) to be
    /// issued again: the old assignment, with its job and the nonces handed over.
    waiting_rests: BTreeMap<AssignmentId, (JobId, u64)>,
    next_id: u64,
    counters: Counters,
    rollout: Option<RolloutState>,
    /// Accounts' pool sessions, by account.
    upstreams: BTreeMap<String, Upstream>,
    /// Pool connection → account.
    pool_conns: BTreeMap<u64, String>,
    next_conn: u64,
    /// Templates made from each account's pool jobs, oldest first.
    upstream_jobs: BTreeMap<String, VecDeque<JobId>>,
    /// The template of each account's pool job being issued now.
    upstream_current: BTreeMap<String, JobId>,
    /// Submits waiting for the pool's answer, by (connection, ticket).
    submits: BTreeMap<(u64, u64), PendingSubmit>,
    /// (account, reason) pairs whose miner-slot refusal was ledgered (`miners`).
    carving_refused: std::collections::BTreeSet<(String, String)>,
    /// Stratum connections subscribed but not yet authorized, with the job they were sent.
    subscribed: BTreeMap<NodeId, Box<miners::Miner>>,
    out: Vec<Command>,
}

/// A share sent to a pool, waiting for its answer.
#[derive(Debug, Clone)]
struct PendingSubmit {
    account: String,
    hash: BlockHash,
    /// The pool's difficulty as work.
    work: Work,
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
            waiting_rests: BTreeMap::new(),
            counters: Counters {
                shares_rejected: RejectReason::ALL.iter().map(|&r| (r, 0)).collect(),
                ..Counters::default()
            },
            rollout: snapshot.rollout.map(|rollout| RolloutState { rollout, to_version: 0, to_others: 0 }),
            upstreams: BTreeMap::new(),
            pool_conns: BTreeMap::new(),
            next_conn: 1,
            upstream_jobs: BTreeMap::new(),
            upstream_current: BTreeMap::new(),
            submits: BTreeMap::new(),
            carving_refused: Default::default(),
            subscribed: BTreeMap::new(),
            config,
            out: Vec::new(),
        };
        let mut counts = snapshot.pool_counts;
        for (account, settings) in snapshot.pools {
            match Upstream::new(settings, core.config.upstream) {
                Ok(mut up) => {
                    up.restore_counts(counts.remove(&account).unwrap_or_default());
                    core.upstreams.insert(account, up);
                }
                Err(e) => tracing::warn!("stored pool of account {account:?} skipped: {e}"),
            }
        }
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
        // The next batch is sized like this one: room for it now, rather than growing by
        // doubling (each step a copy of every command so far).
        let room = self.out.len();
        std::mem::replace(&mut self.out, Vec::with_capacity(room))
    }

    fn ledger(&mut self, now_ms: u64, record: LedgerRecord) {
        self.out.push(Command::Persist(StoreOp::Ledger { at_ms: now_ms, record }));
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover;
#[cfg(test)]
mod tests_miners;
#[cfg(test)]
mod tests_pools;
