//! The hashgrid/3 protocol messages between nodes, the operator CLI and the coordinator.
//!
//! Every connection opens one bidirectional QUIC stream and sends a `Hello` first. A node
//! then exchanges `NodeMessage`s and `CoordinatorMessage`s on it for the life of the
//! connection; an operator sends one `AdminRequest` per stream and reads one `AdminResponse`.
//! Messages travel in the frames of `codec`. docs/protocol.md describes the exchange.

use serde::{Deserialize, Serialize};

use crate::header::{Hash256, Header};
use crate::target::Target;

/// The ALPN of the current protocol version; a peer that offers no version the coordinator
/// speaks is refused during the TLS handshake.
pub const ALPN: &[u8] = b"hashgrid/3";
/// The protocol version carried by `ALPN`.
pub const PROTOCOL_VERSION: u16 = 3;
/// The ALPN of version 2, still accepted from nodes: `v2` holds what differs (an
/// `Assignment` without rolled version bits), and version 2 lacks the share batches
/// (`NodeMessage::Shares`, `CoordinatorMessage::ShareResults`).
pub const ALPN_V2: &[u8] = b"hashgrid/2";
/// The first protocol version with share batches.
pub const BATCHES_SINCE: u16 = 3;
/// The most shares in one `NodeMessage::Shares`, and the most results in one
/// `CoordinatorMessage::ShareResults`: a sender splits a longer batch. Either message encodes
/// in at most about 40 bytes per item, so a full batch is far below `codec::MAX_FRAME`, which
/// caps what a decoder allocates before the count is checked.
pub const MAX_BATCH_SHARES: usize = 1024;
/// The `NodeStatus::protocol` of a Stratum V1 miner on the coordinator's Stratum port.
pub const STRATUM_V1: u16 = 0;
/// The ALPN of version 1, still accepted from nodes (so a farm can upgrade its coordinator
/// first and its nodes one by one): `v1` holds what differs.
pub const ALPN_PREVIOUS: &[u8] = b"hashgrid/1";
/// Every ALPN the coordinator accepts, preferred first.
pub const ALPN_ACCEPTED: [&[u8]; 3] = [ALPN, ALPN_V2, ALPN_PREVIOUS];

/// The protocol version an ALPN names (`None`: not one of ours).
pub fn protocol_version(alpn: &[u8]) -> Option<u16> {
    alpn.strip_prefix(b"hashgrid/").and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok())
}

/// The QUIC application close codes (docs/protocol.md §5): the one table of both sides.
pub mod close_code {
    /// A normal close: the coordinator shutting down, an operator's connection done.
    pub const NORMAL: u32 = 0x00;
    /// A node leaving on purpose (shutdown, SIGTERM): the coordinator hands its ranges over at
    /// once and records a departure, not a failure.
    pub const DEPARTING: u32 = 0x01;
    /// A `Hello` with a wrong token.
    pub const INVALID_TOKEN: u32 = 0x10;
    /// A payload that is not exactly one message of the expected type, or a stream that ends
    /// inside a frame.
    pub const MALFORMED_FRAME: u32 = 0x11;
    /// A length prefix above `codec::MAX_FRAME`.
    pub const FRAME_TOO_LARGE: u32 = 0x12;
    /// Another protocol violation.
    pub const PROTOCOL: u32 = 0x13;
    /// The coordinator gave up on a node (after `CoordinatorMessage::Close`), or failed itself.
    pub const FAILED: u32 = 0x14;
    /// A node `Hello` whose name or software version breaks the rule (printable, capped, the
    /// account name rule): permanent, the node exits instead of retrying.
    pub const INVALID_HELLO: u32 = 0x15;
    /// No `Hello` within the deadline after the handshake.
    pub const NO_HELLO: u32 = 0x16;
    /// A standby coordinator (of a hot-standby pair on PostgreSQL) refuses every connection
    /// until it takes over; the reason is `STANDBY_REASON` followed by the active
    /// coordinator's address, where a client should go instead.
    pub const STANDBY: u32 = 0x17;
    /// The reason of a `STANDBY` close, before the active coordinator's address.
    pub const STANDBY_REASON: &str = "standby; the active coordinator is ";

    /// The active coordinator's address a `STANDBY` close names, if it names one.
    pub fn standby_hint(code: u64, reason: &str) -> Option<&str> {
        (code == u64::from(STANDBY)).then(|| reason.strip_prefix(STANDBY_REASON)).flatten()
    }

    /// The reason nodes built before `DEPARTING` existed close with, under code `NORMAL`, when
    /// they leave on purpose.
    pub const LEGACY_DEPARTING_REASON: &str = "node shutting down";

    /// Whether a node that closed its connection with `code` and `reason` left on purpose:
    /// code `DEPARTING`, or (the one compatibility rule, for nodes of either protocol version
    /// built before `DEPARTING`) code `NORMAL` with `LEGACY_DEPARTING_REASON`.
    pub fn is_departure(code: u64, reason: &str) -> bool {
        code == u64::from(DEPARTING) || (code == u64::from(NORMAL) && reason == LEGACY_DEPARTING_REASON)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn departures_are_told_by_code_and_one_legacy_reason() {
            assert!(is_departure(DEPARTING.into(), "node shutting down"));
            assert!(is_departure(DEPARTING.into(), ""));
            assert!(is_departure(NORMAL.into(), LEGACY_DEPARTING_REASON));
            assert!(!is_departure(NORMAL.into(), "connection lost"));
            assert!(!is_departure(FAILED.into(), LEGACY_DEPARTING_REASON));
            assert!(!is_departure(INVALID_TOKEN.into(), ""));
        }
    }
}

/// A node's identity for the life of a coordinator process.
pub type NodeId = u64;
/// A job: a header template source (a local-chain template or a submitted job).
pub type JobId = u64;
/// One range of nonces issued to one node.
pub type AssignmentId = u64;

/// The first frame of every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Hello {
    Node(NodeHello),
    Admin { token: String },
}

/// What a node says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHello {
    /// The join token from the coordinator's `node.token` file.
    pub token: String,
    /// A name unique in the farm, e.g. the rig's host name.
    pub name: String,
    /// The node build's version (`CARGO_PKG_VERSION`).
    pub software_version: String,
    /// Join as a standby: connected and measured, but given no ranges until promoted.
    pub standby: bool,
    pub devices: Vec<DeviceInfo>,
    /// The node's measured hash rate, hashes per second.
    pub hashrate: f64,
}

/// One compute device of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// "cpu" or "gpu".
    pub kind: String,
    pub name: String,
    pub hashrate: f64,
}

impl DeviceInfo {
    /// The most devices a node may announce.
    pub const MAX_PER_NODE: usize = 64;
    /// The longest device name (bytes).
    pub const MAX_NAME_LEN: usize = 128;

    /// Whether a node's device list is one a coordinator keeps and shows: at most
    /// `MAX_PER_NODE` devices, each of kind "cpu" or "gpu", named in 1 to `MAX_NAME_LEN`
    /// printable ASCII characters (spaces allowed), with a finite, non-negative rate.
    pub fn list_is_valid(devices: &[DeviceInfo]) -> bool {
        devices.len() <= Self::MAX_PER_NODE
            && devices.iter().all(|d| {
                matches!(d.kind.as_str(), "cpu" | "gpu")
                    && !d.name.is_empty()
                    && d.name.len() <= Self::MAX_NAME_LEN
                    && d.name.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                    && d.hashrate.is_finite()
                    && d.hashrate >= 0.0
            })
    }
}

/// Node → coordinator, after `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// A hash at or below the assignment's share target.
    Share(Share),
    /// The node searched its whole range (`hashes` nonces) and has sent every share in it.
    RangeDone { assignment: AssignmentId, hashes: u64 },
    /// Liveness and the current rate (the sum over `devices`), sent every
    /// `Welcome::heartbeat_ms`.
    Heartbeat { hashrate: f64, devices: Vec<DeviceInfo> },
    /// Version 3: several shares in one message (at most `MAX_BATCH_SHARES`), each answered as
    /// if sent alone, in order.
    Shares(Vec<Share>),
}

impl NodeMessage {
    /// The messages this one stands for one share at a time: a `Shares` as its `Share`s, any
    /// other message as itself.
    pub fn unbatched(self) -> Vec<NodeMessage> {
        match self {
            NodeMessage::Shares(shares) => shares.into_iter().map(NodeMessage::Share).collect(),
            other => vec![other],
        }
    }

    /// `shares` as `Shares` messages of at most `MAX_BATCH_SHARES` each (none when empty).
    pub fn batches(shares: &[Share]) -> impl Iterator<Item = NodeMessage> + '_ {
        shares.chunks(MAX_BATCH_SHARES).map(|chunk| NodeMessage::Shares(chunk.to_vec()))
    }
}

/// A node's proof of work: the header of `job` with this version, time and nonce hashes at or
/// below the share target. `id` is the node's own sequence number, echoed in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Share {
    pub id: u64,
    pub assignment: AssignmentId,
    pub job: JobId,
    pub version: u32,
    pub time: u32,
    pub nonce: u32,
}

/// Coordinator → node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    Welcome {
        node: NodeId,
        heartbeat_ms: u32,
    },
    /// Search this range; send shares meeting `share_target`, then `RangeDone`.
    Assign(Assignment),
    /// Stop searching this range (its template went stale, its account is served elsewhere,
    /// or it was reassigned). Shares already found may still be sent.
    Revoke {
        assignment: AssignmentId,
    },
    /// The reply to one `Share`, sent once its credit is durable.
    ShareResult {
        id: u64,
        outcome: ShareOutcome,
    },
    /// The connection is about to close, and why.
    Close {
        reason: String,
    },
    /// Version 3: the replies to several shares (at most `MAX_BATCH_SHARES`), in the order
    /// they would have gone one by one, each sent once its credit is durable.
    ShareResults(Vec<ShareVerdict>),
}

/// One share's reply within `CoordinatorMessage::ShareResults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareVerdict {
    /// The share's `id`.
    pub id: u64,
    pub outcome: ShareOutcome,
}

impl CoordinatorMessage {
    /// The messages this one stands for one reply at a time: a `ShareResults` as its
    /// `ShareResult`s, any other message as itself.
    pub fn unbatched(self) -> Vec<CoordinatorMessage> {
        match self {
            CoordinatorMessage::ShareResults(verdicts) => verdicts
                .into_iter()
                .map(|ShareVerdict { id, outcome }| CoordinatorMessage::ShareResult { id, outcome })
                .collect(),
            other => vec![other],
        }
    }
}

/// A nonce range of one header template, searched under k = 2^`rolled.count_ones()`
/// versions: the header's own, and each combination of the `rolled` bits flipped in it.
/// A range of n nonces is n·k hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: AssignmentId,
    pub job: JobId,
    /// The template; its nonce field is ignored.
    pub header: Header,
    pub share_target: Target,
    pub start: u32,
    pub count: u64,
    /// The version bits rolled (version 3; 0 for a node of version 2 or 1): inside
    /// `VERSION_ROLLING_MASK`, at most `MAX_ROLLED_BITS` of them (`rolled_bits_are_valid`).
    pub rolled: u32,
}

impl Assignment {
    /// The versions of the range, the header's own first (`rolled_versions`).
    pub fn versions(&self) -> Vec<u32> {
        rolled_versions(self.header.version, self.rolled)
    }

    /// Hashes in the range: nonces times versions.
    pub fn hashes(&self) -> u64 {
        self.count << self.rolled.count_ones()
    }
}

/// The BIP 320 version bits a miner may roll.
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;
/// The most version bits one assignment rolls: k <= 16 versions per nonce.
pub const MAX_ROLLED_BITS: u32 = 4;

/// Whether `rolled` is a valid `Assignment::rolled`: inside the BIP 320 mask, at most
/// `MAX_ROLLED_BITS` bits.
pub fn rolled_bits_are_valid(rolled: u32) -> bool {
    rolled & !VERSION_ROLLING_MASK == 0 && rolled.count_ones() <= MAX_ROLLED_BITS
}

/// The versions `version` with every combination of the `rolled` bits flipped: combination
/// `i` flips the bits of `rolled` that the set bits of `i` select (bit j of `i` = the j-th
/// lowest bit of `rolled`), so `version` itself comes first. 2^`rolled.count_ones()` of them.
pub fn rolled_versions(version: u32, rolled: u32) -> Vec<u32> {
    let bits: Vec<u32> = (0..32).map(|b| 1u32 << b).filter(|b| rolled & b != 0).collect();
    (0u32..1 << bits.len())
        .map(|i| bits.iter().enumerate().filter(|(j, _)| i >> j & 1 == 1).fold(version, |v, (_, b)| v ^ b))
        .collect()
}

/// What became of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareOutcome {
    /// Credited to the job's account: `work` expected hashes.
    Accepted {
        work: u128,
    },
    Rejected(RejectReason),
}

/// Why a share was rejected. The variants are in wire order (a new one is added at the end);
/// `ALL` lists them in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownJob,
    StaleJob,
    TimeOutOfWindow,
    VersionOutsideMask,
    AboveTarget,
    Duplicate,
    /// The share's (job, version, nonce) lies outside every range its node holds, or held until
    /// moments ago: work the node was not given.
    RangeNotHeld,
}

impl RejectReason {
    /// Every reason, in the order the checks run.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::UnknownJob,
        RejectReason::StaleJob,
        RejectReason::TimeOutOfWindow,
        RejectReason::VersionOutsideMask,
        RejectReason::RangeNotHeld,
        RejectReason::AboveTarget,
        RejectReason::Duplicate,
    ];

    /// A stable snake_case name for logs, metrics and the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::UnknownJob => "unknown_job",
            RejectReason::StaleJob => "stale_job",
            RejectReason::TimeOutOfWindow => "time_out_of_window",
            RejectReason::VersionOutsideMask => "version_outside_mask",
            RejectReason::AboveTarget => "above_target",
            RejectReason::Duplicate => "duplicate",
            RejectReason::RangeNotHeld => "range_not_held",
        }
    }

    /// Whether the rejection is evidence against the node: bad work, or work it was not given.
    /// An unknown or stale job (the coordinator restarted, a block moved the chain) or a
    /// duplicate (a share re-sent after a lost acknowledgement) is not the node's fault.
    pub fn is_node_fault(&self) -> bool {
        match self {
            RejectReason::TimeOutOfWindow
            | RejectReason::VersionOutsideMask
            | RejectReason::RangeNotHeld
            | RejectReason::AboveTarget => true,
            RejectReason::UnknownJob | RejectReason::StaleJob | RejectReason::Duplicate => false,
        }
    }
}

/// The allocation policy: how capacity is split across accounts not yet up to standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Policy {
    /// All capacity to the first account (by order) below its standard, then the next.
    #[default]
    Sequential,
    /// Capacity split in proportion to the work each account still lacks.
    Proportional,
}

impl Policy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Sequential => "sequential",
            Policy::Proportional => "proportional",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sequential" => Ok(Policy::Sequential),
            "proportional" => Ok(Policy::Proportional),
            other => Err(format!("unknown policy {other:?} (expected sequential or proportional)")),
        }
    }
}

/// Operator → coordinator, one per stream after `Hello::Admin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminRequest {
    AccountAdd {
        name: String,
        standard: u128,
        period_secs: Option<u64>,
        order: Option<i64>,
        chain: Option<String>,
    },
    AccountList,
    Status,
    JobSubmit {
        account: String,
        header: Header,
        target: Target,
    },
    /// A job's progress and hits, with one page of its runs (the cursor is a run's 1-based
    /// position).
    JobShow {
        job: JobId,
        page: PageRequest,
    },
    PolicySet(Policy),
    /// One page of the nodes (the cursor is a node's 1-based position in the list).
    NodeList {
        page: PageRequest,
    },
    /// Finish the node's in-flight ranges, then give it no more.
    NodeDrain {
        name: String,
    },
    /// Make a standby (or drained) node active.
    NodePromote {
        name: String,
    },
    /// Make an active node a standby; its in-flight ranges are reassigned.
    NodeStandby {
        name: String,
    },
    ChainAdd(ChainParams),
    ChainList,
    Assignments,
    /// One page of the ledger entries with `seq > page.after`, optionally only those naming
    /// `account` (the cursor is `seq`).
    LedgerShow {
        account: Option<String>,
        page: PageRequest,
    },
    LedgerVerify,
    /// One page of the account's receipt (the cursor is a share's number). The first page
    /// (`cut: None`) fixes the cut the receipt is taken at; the pages after it pass that cut
    /// back, so that together they hold exactly the shares behind the first page's
    /// `delivered`.
    AccountReceipt {
        name: String,
        page: PageRequest,
        cut: Option<ReceiptCut>,
    },
    /// Start, change (`Some`) or end (`None`) a rollout.
    RolloutSet(Option<Rollout>),
    /// Set (`Some`) or clear (`None`) the account's pool and, when `Some`, the figure its
    /// standard is measured on.
    AccountSetPool {
        name: String,
        pool: Option<PoolSettings>,
        basis: Option<StandardBasis>,
    },
    /// Every account with a pool: its upstream session and figures.
    PoolList,
}

/// Coordinator → operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminResponse {
    Ok,
    Accounts(Vec<AccountStatus>),
    Status(Status),
    JobSubmitted {
        job: JobId,
    },
    /// A job with one page of its runs; `next`: the cursor of the next page of runs.
    Job {
        status: JobStatus,
        next: Option<u64>,
    },
    Nodes {
        nodes: Vec<NodeStatus>,
        next: Option<u64>,
    },
    Chains(Vec<ChainStatus>),
    Assignments(Vec<NodeAssignment>),
    Ledger {
        entries: Vec<LedgerEntry>,
        next: Option<u64>,
    },
    LedgerVerified(LedgerVerdict),
    Receipt(Receipt),
    /// The request was refused; the text says why.
    Error(String),
    Pools(Vec<PoolStatus>),
}

impl AdminRequest {
    /// Whether the request changes state or needs the core's live state (nodes, ranges in
    /// flight, the balancer), and so is answered on the core thread. Every other request only
    /// reads what is committed and is answered from the store's read connection, off the core
    /// thread, so that a long read never holds up share intake.
    pub fn needs_core(&self) -> bool {
        !matches!(
            self,
            AdminRequest::LedgerShow { .. }
                | AdminRequest::LedgerVerify
                | AdminRequest::AccountReceipt { .. }
                | AdminRequest::JobShow { .. }
        )
    }
}

/// Which page of a list to send: the items after the cursor `after` (0: from the first), at
/// most `limit` (0: as many as the coordinator sends in one reply). A reply also stops short
/// of its byte budget (under the frame cap, `codec::MAX_FRAME`), and then says where the next
/// page starts (`next`), which becomes the next request's `after`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub after: u64,
    pub limit: u32,
}

impl PageRequest {
    /// From the first item, as many as fit.
    pub const FIRST: PageRequest = PageRequest { after: 0, limit: 0 };
}

/// Where one sub-account stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub name: String,
    /// The chain the account draws its work from.
    pub chain: String,
    pub order: i64,
    /// Contracted work, expected hashes per period.
    pub standard: u128,
    /// Credited work in the current period.
    pub delivered: u128,
    pub period_secs: Option<u64>,
    pub up_to_standard: bool,
    pub shares: u64,
}

/// One node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// "active", "standby" or "failed".
    pub state: String,
    /// Delivered rate measured from verified shares, hashes per second.
    pub hashrate: f64,
    pub announced_hashrate: f64,
    /// The account it currently hashes for, if any.
    pub account: Option<String>,
    pub software_version: String,
    /// The chain the balancer assigned it to, if any.
    pub chain: Option<String>,
    /// Finishing its ranges and taking no more.
    pub draining: bool,
    /// Its compute devices with their last reported rates.
    pub devices: Vec<DeviceInfo>,
    pub accepted: u64,
    pub rejected: u64,
    /// The protocol version its connection speaks (from ALPN); [`STRATUM_V1`] for a miner.
    pub protocol: u16,
}

impl NodeStatus {
    /// "stratum-v1", or "hashgrid/N".
    pub fn protocol_name(&self) -> String {
        if self.protocol == STRATUM_V1 { "stratum-v1".into() } else { format!("hashgrid/{}", self.protocol) }
    }
}

/// A chain's declared parameters: the load it puts on the farm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainParams {
    pub name: String,
    /// Transactions per header template.
    pub tx_per_template: u32,
    /// Bytes per second of work updates the chain generates.
    pub bit_rate: u64,
    /// Block difficulty (pool difficulty 1 = bits 1d00ffff).
    pub difficulty: f64,
    /// Relative priority of the chain's load.
    pub weight: f64,
}

/// A chain with its load and the nodes serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainStatus {
    pub params: ChainParams,
    pub height: u64,
    /// The chain's load as the balancer weighs it (declared, corrected by measurement).
    pub load: f64,
    /// Measured work updates, bytes per second.
    pub measured_bit_rate: f64,
    pub nodes: Vec<String>,
    /// Sum of the announced rates of its nodes, hashes per second.
    pub capacity: f64,
    pub accounts: Vec<String>,
}

/// Which chain and account a node serves now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAssignment {
    pub node: String,
    pub state: String,
    pub chain: Option<String>,
    pub account: Option<String>,
    pub hashrate: f64,
    /// Ranges in flight.
    pub ranges: u32,
}

/// One entry of the assignment ledger: a scheduling decision, chained to the previous entry
/// by `prev_hash` (SHA-256 of that entry's canonical bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// assignment, switch, failover, promotion, rebalance, standard_reached, ...
    pub kind: String,
    /// The decision's details as JSON text.
    pub payload: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// What `ledger verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerVerdict {
    pub entries: u64,
    /// The first entry whose stored hash or link does not match, and why.
    pub first_bad: Option<(u64, String)>,
}

/// One page of an account's delivery receipt: accepted shares that make up its credit. The
/// shares of all the pages taken at one `cut` add up to the first page's `delivered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub account: String,
    pub standard: u128,
    /// The credit of the period up to `cut` (on the first page; later pages repeat the cut
    /// they were asked for and the credit as it is now).
    pub delivered: u128,
    pub period_start_ms: u64,
    pub cut: ReceiptCut,
    pub shares: Vec<ReceiptShare>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<u64>,
}

/// The point a receipt is taken at: the account's period and the last share credited in it
/// when the first page was read (shares are numbered in the order they were credited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptCut {
    pub period_start_ms: u64,
    pub last_share: u64,
}

/// One accepted share: re-hash `header` (its nonce included) and compare with `share_target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptShare {
    pub header: Header,
    pub share_target: Target,
    pub work: u128,
    pub node: String,
    pub at_ms: u64,
    /// What the account's pool said of it: `accepted`, `rejected: CODE REASON`, `unknown`
    /// (no answer), `pending`, `not submitted: REASON`; `None`: not sent to a pool (it did not
    /// meet the pool's target, or the account has no pool).
    pub upstream: Option<String>,
}

/// The whole farm at a glance: `hashgrid status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub policy: Policy,
    pub accounts: Vec<AccountStatus>,
    pub nodes: Vec<NodeStatus>,
    /// The rollout in force, if any.
    pub rollout: Option<Rollout>,
    /// The upstream session of every account with a pool.
    pub pools: Vec<PoolStatus>,
}

/// Where an account mines: its Stratum V1 pool, then its backups in order, and the
/// credentials (the password is stored, never shown or logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSettings {
    /// `stratum+tcp://HOST:PORT` or `stratum+ssl://HOST:PORT`, the primary first.
    pub urls: Vec<String>,
    pub user: String,
    pub password: String,
    /// Send `mining.extranonce.subscribe` to the primary (some pools drop connections that
    /// send it), and to the backups.
    pub extranonce_subscribe: bool,
    pub backup_extranonce_subscribe: bool,
}

impl PoolSettings {
    /// Whether to send `mining.extranonce.subscribe` to the pool at `index` (0: the primary).
    pub fn extranonce_subscribe_to(&self, index: usize) -> bool {
        if index == 0 { self.extranonce_subscribe } else { self.backup_extranonce_subscribe }
    }
}

impl std::fmt::Debug for PoolSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSettings")
            .field("urls", &self.urls)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("extranonce_subscribe", &self.extranonce_subscribe)
            .field("backup_extranonce_subscribe", &self.backup_extranonce_subscribe)
            .finish()
    }
}

/// The figure an account's standard is measured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StandardBasis {
    /// Locally verified work on live jobs.
    #[default]
    Delivered,
    /// The pool's difficulty times its accepted shares.
    Accepted,
}

impl StandardBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            StandardBasis::Delivered => "delivered",
            StandardBasis::Accepted => "accepted",
        }
    }
}

impl std::str::FromStr for StandardBasis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delivered" => Ok(StandardBasis::Delivered),
            "accepted" => Ok(StandardBasis::Accepted),
            other => Err(format!("unknown standard basis {other:?} (expected delivered or accepted)")),
        }
    }
}

/// One account's upstream session (`hashgrid pool list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub account: String,
    /// disconnected, connecting, configuring, subscribing, authorizing, ready, unauthorized.
    pub state: String,
    /// The pool in use (or being tried), and its place in the list (0: the primary).
    pub url: String,
    pub pool_index: u32,
    pub user: String,
    /// Whether `mining.extranonce.subscribe` is sent to that pool.
    pub extranonce_subscribe: bool,
    /// extranonce1 (hex) and extranonce2's size, once subscribed.
    pub extranonce1: String,
    pub extranonce2_size: u32,
    pub difficulty: f64,
    pub version_mask: u32,
    /// Milliseconds since the last job, if any.
    pub job_age_ms: Option<u64>,
    /// Work credited on the account's live jobs (the account's `delivered`).
    pub delivered: u128,
    /// The pool's difficulty-as-work of its accepted shares, this period.
    pub accepted_upstream: u128,
    pub accepted_shares: u64,
    /// Rejected submits by the pool's reason.
    pub rejected: Vec<(String, u64)>,
    /// Submits without an answer (timeout, or the connection dropped first).
    pub unknown: u64,
    /// More than the configured share of submits rejected.
    pub flagged: bool,
    pub basis: StandardBasis,
    /// The last refusal or error, e.g. the pool's reason for refusing the credentials.
    pub last_error: Option<String>,
    /// Pool switches (failovers and failbacks) since the coordinator started.
    pub switches: u64,
}

/// Send `percent`% of new ranges to nodes announcing software `version`, the rest to the
/// others (`hashgrid rollout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub version: String,
    pub percent: u8,
}

/// A submitted job: its progress and the hits found so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: JobId,
    pub account: String,
    pub header: Header,
    pub target: Target,
    /// Nonces searched (ranges done).
    pub searched: u64,
    /// Nonces in ranges still in flight.
    pub in_flight: u64,
    /// Nonces of ranges abandoned and not yet searched again.
    pub abandoned: u64,
    /// Nonces handed from one node to another while in flight (failover), counted each time.
    pub reassigned: u64,
    /// Nonces in the job's space.
    pub total: u64,
    pub hits: Vec<JobHit>,
    /// The issued nonces by fate, in runs: adjacent ranges with the same fate merged (in a
    /// reply, one page of them).
    pub runs: Vec<RangeRun>,
}

/// Consecutive nonces of one rolled version of a job that share a fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRun {
    pub version: u32,
    pub start: u32,
    pub count: u64,
    /// "done", "in_flight", or "abandoned: WHY".
    pub fate: String,
}

/// A header of a submitted job that meets the job's own target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHit {
    pub version: u32,
    pub time: u32,
    pub nonce: u32,
    pub hash: Hash256,
}

/// What an `Assignment` is in version 2 (and 1): no rolled version bits. The core issues
/// only single-version ranges (`rolled` = 0) to nodes of those versions, and `for_node`
/// writes them in this form.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    use super::{AssignmentId, JobId, NodeId, ShareOutcome};
    use crate::header::Header;
    use crate::target::Target;

    /// `super::Assignment` without `rolled`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Assignment {
        pub id: AssignmentId,
        pub job: JobId,
        pub header: Header,
        pub share_target: Target,
        pub start: u32,
        pub count: u64,
    }

    /// Coordinator → node in versions 1 and 2.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum CoordinatorMessage {
        Welcome { node: NodeId, heartbeat_ms: u32 },
        Assign(Assignment),
        Revoke { assignment: AssignmentId },
        ShareResult { id: u64, outcome: ShareOutcome },
        Close { reason: String },
    }

    impl From<super::CoordinatorMessage> for CoordinatorMessage {
        /// The version-2 form; an assignment's `rolled` bits, which the core never gives a
        /// node of version 2, are dropped.
        fn from(msg: super::CoordinatorMessage) -> Self {
            use super::CoordinatorMessage as M;
            match msg {
                M::Welcome { node, heartbeat_ms } => CoordinatorMessage::Welcome { node, heartbeat_ms },
                M::Assign(a) => {
                    debug_assert_eq!(a.rolled, 0, "a version-rolled range for a version-2 node");
                    let super::Assignment { id, job, header, share_target, start, count, rolled: _ } = a;
                    CoordinatorMessage::Assign(Assignment { id, job, header, share_target, start, count })
                }
                M::Revoke { assignment } => CoordinatorMessage::Revoke { assignment },
                M::ShareResult { id, outcome } => CoordinatorMessage::ShareResult { id, outcome },
                M::Close { reason } => CoordinatorMessage::Close { reason },
                // The service sends batches only to nodes of `BATCHES_SINCE` or later.
                M::ShareResults(_) => {
                    debug_assert!(false, "a share batch for a version-2 node");
                    CoordinatorMessage::Close { reason: "share batches need protocol 3".into() }
                }
            }
        }
    }

    impl From<CoordinatorMessage> for super::CoordinatorMessage {
        fn from(msg: CoordinatorMessage) -> Self {
            use super::CoordinatorMessage as M;
            match msg {
                CoordinatorMessage::Welcome { node, heartbeat_ms } => M::Welcome { node, heartbeat_ms },
                CoordinatorMessage::Assign(Assignment { id, job, header, share_target, start, count }) => {
                    M::Assign(super::Assignment { id, job, header, share_target, start, count, rolled: 0 })
                }
                CoordinatorMessage::Revoke { assignment } => M::Revoke { assignment },
                CoordinatorMessage::ShareResult { id, outcome } => M::ShareResult { id, outcome },
                CoordinatorMessage::Close { reason } => M::Close { reason },
            }
        }
    }
}

#[cfg(test)]
mod rolled_tests {
    use super::*;
    use crate::codec::{PREFIX, decode, encode};

    fn assignment(rolled: u32) -> Assignment {
        let header = Header::from_bytes(&[7; 80]);
        Assignment { id: 9, job: 4, header, share_target: Target::MAX, start: 100, count: 1 << 16, rolled }
    }

    #[test]
    fn rolled_versions_flip_every_combination_of_the_bits() {
        assert_eq!(rolled_versions(0x2000_0000, 0), vec![0x2000_0000]);
        assert_eq!(rolled_versions(0x2000_6000, 0x0000_6000), vec![0x2000_6000, 0x2000_4000, 0x2000_2000, 0x2000_0000]);
        let versions = rolled_versions(0x2345_6000, 0x1001_a000);
        assert_eq!(versions.len(), 16);
        let distinct: std::collections::BTreeSet<u32> = versions.iter().copied().collect();
        assert_eq!(distinct.len(), 16);
        assert!(versions.iter().all(|v| (v ^ 0x2345_6000) & !0x1001_a000 == 0));
        assert!(rolled_bits_are_valid(0x1001_a000) && rolled_bits_are_valid(0));
        assert!(!rolled_bits_are_valid(0x0000_1000), "outside the BIP 320 mask");
        assert!(!rolled_bits_are_valid(0x0003_e000), "five bits");
        assert_eq!(assignment(0x6000).hashes(), 4 << 16);
    }

    #[test]
    fn a_version_2_node_reads_assignments_without_rolled_bits() {
        let msg = CoordinatorMessage::Assign(assignment(0));
        for protocol in [1, 2] {
            let frame = encode(&for_node(protocol, msg.clone())).unwrap();
            let read: CoordinatorMessage = decode::<v2::CoordinatorMessage>(&frame[PREFIX..]).unwrap().into();
            assert_eq!(read, msg, "protocol {protocol}");
            assert!(decode::<CoordinatorMessage>(&frame[PREFIX..]).is_err(), "4 bytes short of a version-3 one");
        }
        // Everything but an assignment reads the same in versions 2 and 3.
        for other in [CoordinatorMessage::Revoke { assignment: 3 }, CoordinatorMessage::Close { reason: "x".into() }] {
            assert_eq!(encode(&for_node(2, other.clone())).unwrap(), encode(&other).unwrap());
        }
        let rolled = CoordinatorMessage::Assign(assignment(0x1e000));
        let frame = encode(&for_node(3, rolled.clone())).unwrap();
        assert_eq!(decode::<CoordinatorMessage>(&frame[PREFIX..]).unwrap(), rolled);
        assert_eq!(protocol_version(ALPN_V2), Some(2));
    }
}

/// A coordinator message in the form a node of `protocol` reads: as is for version 3, the
/// version-2 form (`v2`) for versions 2 and 1, with version 1's reasons (`v1::downgrade`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ForNode {
    Current(CoordinatorMessage),
    V2(v2::CoordinatorMessage),
}

/// `msg` for a node speaking `protocol` (see `ForNode`).
pub fn for_node(protocol: u16, msg: CoordinatorMessage) -> ForNode {
    match protocol {
        1 => ForNode::V2(v1::downgrade(msg).into()),
        2 => ForNode::V2(msg.into()),
        _ => ForNode::Current(msg),
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use crate::codec::{self, CodecError, PREFIX};

    fn share(id: u64) -> Share {
        Share { id, assignment: u64::MAX - id, job: u64::MAX, version: u32::MAX, time: u32::MAX, nonce: u32::MAX }
    }

    #[test]
    fn shares_split_into_capped_batches_and_unbatch_in_order() {
        let shares: Vec<Share> = (0..MAX_BATCH_SHARES as u64 * 2 + 1).map(share).collect();
        let batches: Vec<NodeMessage> = NodeMessage::batches(&shares).collect();
        let sizes: Vec<usize> =
            batches.iter().map(|b| if let NodeMessage::Shares(s) = b { s.len() } else { 0 }).collect();
        assert_eq!(sizes, vec![MAX_BATCH_SHARES, MAX_BATCH_SHARES, 1]);
        let back: Vec<NodeMessage> = batches.into_iter().flat_map(NodeMessage::unbatched).collect();
        assert_eq!(back, shares.iter().copied().map(NodeMessage::Share).collect::<Vec<_>>());
        assert_eq!(NodeMessage::batches(&[]).count(), 0, "no empty batch");
        let beat = NodeMessage::Heartbeat { hashrate: 1.0, devices: Vec::new() };
        assert_eq!(beat.clone().unbatched(), vec![beat]);

        let verdicts = vec![
            ShareVerdict { id: 1, outcome: ShareOutcome::Accepted { work: u128::MAX } },
            ShareVerdict { id: 2, outcome: ShareOutcome::Rejected(RejectReason::Duplicate) },
        ];
        let results = CoordinatorMessage::ShareResults(verdicts).unbatched();
        assert_eq!(
            results,
            vec![
                CoordinatorMessage::ShareResult { id: 1, outcome: ShareOutcome::Accepted { work: u128::MAX } },
                CoordinatorMessage::ShareResult { id: 2, outcome: ShareOutcome::Rejected(RejectReason::Duplicate) },
            ]
        );
    }

    /// A full batch of the largest shares and results fits one frame with room to spare.
    #[test]
    fn a_full_batch_of_the_largest_items_fits_a_frame() {
        let shares = NodeMessage::Shares((0..MAX_BATCH_SHARES as u64).map(|i| share(u64::MAX - i)).collect());
        let frame = codec::encode(&shares).unwrap();
        assert!(frame.len() < codec::MAX_FRAME / 16, "{} bytes", frame.len());
        assert_eq!(codec::decode::<NodeMessage>(&frame[PREFIX..]).unwrap(), shares);
        let worst = ShareVerdict { id: u64::MAX, outcome: ShareOutcome::Accepted { work: u128::MAX } };
        let results = CoordinatorMessage::ShareResults(vec![worst; MAX_BATCH_SHARES]);
        let frame = codec::encode(&results).unwrap();
        assert!(frame.len() < codec::MAX_FRAME / 16, "{} bytes", frame.len());
        assert_eq!(codec::decode::<CoordinatorMessage>(&frame[PREFIX..]).unwrap(), results);
    }

    /// A batch that claims more shares than its frame could hold is refused by the decoder
    /// before it allocates them.
    #[test]
    fn a_batch_claiming_more_shares_than_its_frame_holds_is_refused() {
        let mut frame = codec::encode(&NodeMessage::Shares(vec![share(1)])).unwrap();
        // The variant (one byte), then the length: 1 becomes u64::MAX (varint tag 253, 8 bytes).
        assert_eq!(frame[PREFIX + 1], 1);
        frame.splice(PREFIX + 1..PREFIX + 2, [253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let refused = codec::decode::<NodeMessage>(&frame[PREFIX..]);
        assert!(matches!(refused, Err(CodecError::Malformed(_))), "{refused:?}");
    }
}

/// The messages of protocol version 1 that differ from the current version, and their
/// conversion. A version-1 node sends `Heartbeat { hashrate }` without per-device rates, and
/// knows no `RejectReason::RangeNotHeld` (it is told `UnknownJob` instead); it reads
/// assignments as version 2 does (`v2`); everything else a node sends or receives is the
/// same in versions 1 and 2.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use super::{AssignmentId, CoordinatorMessage, RejectReason, Share, ShareOutcome};

    /// Node → coordinator in version 1.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum NodeMessage {
        Share(Share),
        RangeDone { assignment: AssignmentId, hashes: u64 },
        Heartbeat { hashrate: f64 },
    }

    impl From<NodeMessage> for super::NodeMessage {
        fn from(msg: NodeMessage) -> Self {
            match msg {
                NodeMessage::Share(share) => super::NodeMessage::Share(share),
                NodeMessage::RangeDone { assignment, hashes } => super::NodeMessage::RangeDone { assignment, hashes },
                NodeMessage::Heartbeat { hashrate } => super::NodeMessage::Heartbeat { hashrate, devices: Vec::new() },
            }
        }
    }

    /// A message for a version-1 node: the reasons it does not know become the nearest it does.
    pub fn downgrade(msg: CoordinatorMessage) -> CoordinatorMessage {
        match msg {
            CoordinatorMessage::ShareResult { id, outcome: ShareOutcome::Rejected(RejectReason::RangeNotHeld) } => {
                CoordinatorMessage::ShareResult { id, outcome: ShareOutcome::Rejected(RejectReason::UnknownJob) }
            }
            other => other,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_version_1_node_is_told_only_reasons_it_knows() {
            let told = |reason| match downgrade(CoordinatorMessage::ShareResult {
                id: 7,
                outcome: ShareOutcome::Rejected(reason),
            }) {
                CoordinatorMessage::ShareResult { id: 7, outcome: ShareOutcome::Rejected(r) } => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(told(RejectReason::RangeNotHeld), RejectReason::UnknownJob);
            for reason in RejectReason::ALL.into_iter().filter(|&r| r != RejectReason::RangeNotHeld) {
                assert_eq!(told(reason), reason, "the six reasons of version 1 pass unchanged");
            }
        }
    }
}
