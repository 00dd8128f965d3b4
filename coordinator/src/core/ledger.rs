//! The assignment ledger: what its entries say (`LedgerRecord`), how an entry is hashed and
//! how a sequence of entries is verified. Pure: the core decides what goes in the ledger (as
//! `StoreOp::Ledger`), the store numbers the entries and links each to the previous one, and
//! `verify` recomputes the chain.
//!
//! An entry's `kind` is its record's serde tag and its `payload` the record's other fields as a
//! JSON object with its keys in sorted order; amounts of work are decimal strings (a JSON
//! number loses precision past 2^53). That is the text the `json!` payloads of earlier
//! versions had, so the entries they wrote decode as records too.
//!
//! An entry's hash is SHA-256 over a domain tag, the sequence number and time (8 bytes each,
//! big-endian), the kind and the payload (each a 4-byte big-endian length, then UTF-8 bytes),
//! and the previous entry's hash (32 zero bytes for the first entry). Changing any field of
//! any entry changes its hash, so the stored hash no longer matches, or the next entry's link
//! does not.

use hashgrid_common::message::{AssignmentId, JobId, LedgerEntry, LedgerVerdict};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::accounts::Work;

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];
const DOMAIN: &[u8] = b"hashgrid-ledger/1";

/// The kinds of entries, one per kind of scheduling decision.
pub mod kind {
    /// A range of a template issued to a node.
    pub const ASSIGNMENT: &str = "assignment";
    /// An account reached its standard.
    pub const STANDARD_REACHED: &str = "standard_reached";
    /// Capacity moved from an account that reached its standard to the next one.
    pub const SWITCH: &str = "switch";
    /// A node failed or was found under standard; its ranges were reassigned.
    pub const FAILOVER: &str = "failover";
    /// A standby (or drained) node made active.
    pub const PROMOTION: &str = "promotion";
    /// An active node made a standby by the operator.
    pub const STANDBY: &str = "standby";
    /// A node told to finish its ranges and take no more.
    pub const DRAIN: &str = "drain";
    /// A node moved from one chain to another by the balancer.
    pub const REBALANCE: &str = "rebalance";
    pub const ACCOUNT_ADDED: &str = "account_added";
    pub const CHAIN_ADDED: &str = "chain_added";
    pub const POLICY: &str = "policy";
    pub const PERIOD_RENEWED: &str = "period_renewed";
    pub const BLOCK_FOUND: &str = "block_found";
    /// A node shut down and handed its ranges over.
    pub const DEPARTURE: &str = "departure";
    /// A rollout began, changed or ended.
    pub const ROLLOUT: &str = "rollout";
    /// An account's pool set, changed or removed.
    pub const POOL_SET: &str = "pool_set";
    /// An account's upstream moved from one pool to another (failover or failback).
    pub const POOL_SWITCH: &str = "pool_switch";
    /// An account's pool refused its credentials.
    pub const POOL_REFUSED: &str = "pool_refused";
    /// An account's pool rejected more than the allowed share of submits.
    pub const POOL_FLAGGED: &str = "pool_flagged";
    /// A Stratum miner was sent an account's job, in its extranonce slot.
    pub const MINER_JOB: &str = "miner_job";
    /// An account's pool extranonce cannot be carved for miners (too short, or full).
    pub const MINER_SLOT_REFUSED: &str = "miner_slot_refused";
}

/// A scheduling decision, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LedgerRecord {
    /// A range of a template issued to a node.
    Assignment {
        assignment: AssignmentId,
        node: String,
        account: String,
        chain: String,
        job: JobId,
        version: u32,
        start: u32,
        count: u64,
        share_work: Work,
        reassigned_from: Option<AssignmentId>,
    },
    /// An account reached its standard.
    StandardReached {
        account: String,
        delivered: Work,
        standard: Work,
        chain: String,
    },
    /// Capacity moved from the account `from`, up to its standard, to the next one on its chain.
    Switch {
        from: String,
        to: Option<String>,
        chain: String,
        policy: String,
    },
    /// A node failed or was found under standard; its ranges moved.
    Failover {
        node: String,
        reason: String,
        promoted: Option<String>,
        ranges: Vec<RangeMove>,
    },
    /// A standby (or drained or failed) node made active.
    Promotion {
        node: String,
        from: String,
        by: String,
    },
    /// An active node made a standby by the operator; its ranges moved.
    Standby {
        node: String,
        by: String,
        ranges: Vec<RangeMove>,
    },
    /// A node told to finish its ranges and take no more.
    Drain {
        node: String,
        ranges_in_flight: usize,
    },
    /// A node moved from one chain to another by the balancer.
    Rebalance {
        node: String,
        from: Option<String>,
        to: Option<String>,
        reason: String,
    },
    AccountAdded {
        account: String,
        standard: Work,
        period_ms: Option<u64>,
        order: i64,
        chain: String,
    },
    ChainAdded {
        chain: String,
        tx_per_template: u32,
        bit_rate: u64,
        difficulty: f64,
        weight: f64,
    },
    Policy {
        policy: String,
    },
    PeriodRenewed {
        account: String,
        period_start_ms: u64,
    },
    /// A share met its chain's block target; `hash` is the block hash in display order.
    BlockFound {
        chain: String,
        height: u64,
        hash: String,
        account: String,
    },
    /// A node shut down and handed its ranges over.
    Departure {
        node: String,
        promoted: Option<String>,
        ranges: Vec<RangeMove>,
    },
    /// A rollout began or changed (`None`s: it ended).
    Rollout {
        version: Option<String>,
        percent: Option<u8>,
    },
    /// An account's pools (primary first; none: removed), user and standard basis. Never the
    /// password.
    PoolSet {
        account: String,
        urls: Vec<String>,
        user: String,
        basis: String,
    },
    /// An account's upstream moved from the pool `from` to `to`.
    PoolSwitch {
        account: String,
        from: String,
        to: String,
        reason: String,
    },
    /// The pool at `url` refused the account's credentials.
    PoolRefused {
        account: String,
        url: String,
        reason: String,
    },
    /// The account's pool rejected `rejected` of `answered` submits.
    PoolFlagged {
        account: String,
        rejected: u64,
        answered: u64,
    },
    /// A coordinator of a hot-standby pair took the lease (PostgreSQL store) with `epoch` and
    /// became the active one, serving at `coordinator`.
    Takeover {
        epoch: i64,
        coordinator: String,
    },
    /// The Stratum miner `node` was sent the pool job `pool_job` of `account` in extranonce
    /// slot `slot`; `switched`: it served another account (or none) before.
    MinerJob {
        node: String,
        account: String,
        pool_job: String,
        slot: u32,
        switched: bool,
    },
    /// `account`'s pool extranonce could not be carved for miners; they are served elsewhere.
    MinerSlotRefused {
        account: String,
        reason: String,
    },
}

/// What became of one range of a node that stopped: handed to the node `to` as
/// `new_assignment`, or (`to` is `None`) given back to its book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeMove {
    pub assignment: AssignmentId,
    pub job: JobId,
    pub version: u32,
    pub start: u32,
    pub count: u64,
    pub to: Option<String>,
    /// Absent in entries of earlier versions when `to` is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_assignment: Option<AssignmentId>,
}

impl LedgerRecord {
    /// The entry's `kind` and `payload`.
    pub fn encode(&self) -> (String, String) {
        let mut value = serde_json::to_value(self).expect("a record is plain data with string keys");
        let kind = match value.as_object_mut().and_then(|fields| fields.remove("kind")) {
            Some(serde_json::Value::String(kind)) => kind,
            other => unreachable!("an internally tagged enum serializes its tag as a string, not {other:?}"),
        };
        (kind, value.to_string())
    }

    /// The record an entry's `kind` and `payload` describe.
    pub fn decode(kind: &str, payload: &str) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(payload)?;
        if let Some(fields) = value.as_object_mut() {
            fields.insert("kind".into(), kind.into());
        }
        serde_json::from_value(value)
    }

    /// The account the decision is about, the ledger's `account` column: the account served,
    /// added, renewed, up to its standard or finding the block; for a switch, the account the
    /// capacity moved from. Decisions about nodes and chains have none.
    pub fn account(&self) -> Option<&str> {
        match self {
            LedgerRecord::Assignment { account, .. }
            | LedgerRecord::StandardReached { account, .. }
            | LedgerRecord::AccountAdded { account, .. }
            | LedgerRecord::PeriodRenewed { account, .. }
            | LedgerRecord::BlockFound { account, .. }
            | LedgerRecord::PoolSet { account, .. }
            | LedgerRecord::PoolSwitch { account, .. }
            | LedgerRecord::PoolRefused { account, .. }
            | LedgerRecord::PoolFlagged { account, .. }
            | LedgerRecord::MinerJob { account, .. }
            | LedgerRecord::MinerSlotRefused { account, .. } => Some(account),
            LedgerRecord::Switch { from, .. } => Some(from),
            LedgerRecord::Failover { .. }
            | LedgerRecord::Promotion { .. }
            | LedgerRecord::Standby { .. }
            | LedgerRecord::Drain { .. }
            | LedgerRecord::Rebalance { .. }
            | LedgerRecord::ChainAdded { .. }
            | LedgerRecord::Policy { .. }
            | LedgerRecord::Departure { .. }
            | LedgerRecord::Rollout { .. }
            | LedgerRecord::Takeover { .. } => None,
        }
    }
}

/// The hash of an entry with these fields.
pub fn entry_hash(seq: u64, at_ms: u64, kind: &str, payload: &str, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in [kind.as_bytes(), payload.as_bytes()] {
        h.update((field.len() as u32).to_be_bytes());
        h.update(field);
    }
    h.update(prev_hash);
    h.finalize().into()
}

/// Recomputes the chain over `entries` (in sequence order, starting at the first entry) and
/// names the first entry that does not match.
pub fn verify(entries: impl IntoIterator<Item = LedgerEntry>) -> LedgerVerdict {
    let mut prev = GENESIS;
    let mut count = 0;
    for (expected_seq, e) in (1u64..).zip(entries) {
        count += 1;
        let problem = if e.seq != expected_seq {
            Some(format!("sequence number {} where {expected_seq} was due", e.seq))
        } else if e.prev_hash != prev {
            Some("its link does not match the previous entry's hash".to_string())
        } else if entry_hash(e.seq, e.at_ms, &e.kind, &e.payload, &e.prev_hash) != e.hash {
            Some("its contents do not match its hash".to_string())
        } else {
            None
        };
        if let Some(why) = problem {
            return LedgerVerdict { entries: count, first_bad: Some((e.seq, why)) };
        }
        prev = e.hash;
    }
    LedgerVerdict { entries: count, first_bad: None }
}

/// Builds the chained entry that follows `prev` (`None`: the first entry).
pub fn next_entry(prev: Option<(u64, [u8; 32])>, at_ms: u64, kind: &str, payload: &str) -> LedgerEntry {
    let (seq, prev_hash) = match prev {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS),
    };
    let hash = entry_hash(seq, at_ms, kind, payload, &prev_hash);
    LedgerEntry { seq, at_ms, kind: kind.into(), payload: payload.into(), prev_hash, hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<LedgerEntry> {
        let mut out: Vec<LedgerEntry> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash));
            out.push(next_entry(prev, 1000 + i, kind::ASSIGNMENT, &format!("{{\"i\":{i}}}")));
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(chain(5)), LedgerVerdict { entries: 5, first_bad: None });
        assert_eq!(verify(Vec::new()), LedgerVerdict { entries: 0, first_bad: None });
    }

    #[test]
    fn any_change_names_the_entry() {
        let good = chain(6);
        let mut payload = good.clone();
        payload[3].payload = "{\"i\":99}".into();
        assert_eq!(verify(payload).first_bad.unwrap().0, 4);

        let mut time = good.clone();
        time[1].at_ms += 1;
        assert_eq!(verify(time).first_bad.unwrap().0, 2);

        // Rewriting an entry with a fresh hash breaks the next entry's link.
        let mut rehashed = good.clone();
        rehashed[2].kind = kind::FAILOVER.into();
        rehashed[2].hash =
            entry_hash(3, rehashed[2].at_ms, &rehashed[2].kind, &rehashed[2].payload, &rehashed[2].prev_hash);
        let bad = verify(rehashed).first_bad.unwrap();
        assert_eq!(bad.0, 4, "{bad:?}");

        let mut gap = good.clone();
        gap.remove(2);
        assert_eq!(verify(gap).first_bad.unwrap().0, 4);
    }

    #[test]
    fn the_hash_is_pinned() {
        // A fixed vector, so the format cannot drift silently.
        let e = next_entry(None, 1_700_000_000_000, "assignment", "{}");
        assert_eq!(e.prev_hash, GENESIS);
        assert_eq!(e.seq, 1);
        let mut h = Sha256::new();
        h.update(b"hashgrid-ledger/1");
        h.update(1u64.to_be_bytes());
        h.update(1_700_000_000_000u64.to_be_bytes());
        h.update(10u32.to_be_bytes());
        h.update(b"assignment");
        h.update(2u32.to_be_bytes());
        h.update(b"{}");
        h.update([0u8; 32]);
        assert_eq!(e.hash, <[u8; 32]>::from(h.finalize()));
    }
}
