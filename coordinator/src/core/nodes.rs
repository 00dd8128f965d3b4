//! What the core knows of each node: its state (active, standby, failed), whether it is
//! draining, its chain, its devices and rates, the ranges it holds, and the evidence about
//! its delivery.

use std::collections::VecDeque;

use hashgrid_common::message::{AssignmentId, DeviceInfo, NodeHello};

use super::accounts::Work;
use super::probe::Probe;

/// A node's role in the farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Takes ranges (unless draining).
    Active,
    /// Connected and measured, takes no ranges until promoted.
    Standby,
    /// Found under standard while connected; takes nothing until an operator promotes it.
    Failed,
}

#[derive(Debug, Clone)]
pub(super) struct NodeEntry {
    pub name: String,
    pub software_version: String,
    pub state: NodeState,
    /// Finishing its ranges; takes no new ones.
    pub draining: bool,
    pub announced: f64,
    pub devices: Vec<DeviceInfo>,
    /// The chain the balancer gave it.
    pub chain: Option<String>,
    /// Live assignments, oldest (the one being searched) first.
    pub assignments: Vec<AssignmentId>,
    pub last_seen_ms: u64,
    /// Accepted shares' (time, work) within the rate window.
    pub credited: VecDeque<(u64, Work)>,
    pub joined_ms: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub probe: Probe,
    /// The protocol version its connection speaks.
    pub protocol: u16,
    /// A Stratum V1 miner: served jobs, not ranges.
    pub miner: Option<Box<super::miners::Miner>>,
}

impl NodeEntry {
    pub fn new(now_ms: u64, hello: &NodeHello) -> Self {
        NodeEntry {
            name: hello.name.clone(),
            software_version: hello.software_version.clone(),
            state: if hello.standby { NodeState::Standby } else { NodeState::Active },
            draining: false,
            announced: if hello.hashrate.is_finite() { hello.hashrate.max(0.0) } else { 0.0 },
            devices: hello.devices.clone(),
            chain: None,
            assignments: Vec::new(),
            last_seen_ms: now_ms,
            credited: VecDeque::new(),
            joined_ms: now_ms,
            accepted: 0,
            rejected: 0,
            probe: Probe::new(now_ms),
            protocol: hashgrid_common::message::PROTOCOL_VERSION,
            miner: None,
        }
    }

    /// Active and not draining.
    pub fn takes_work(&self) -> bool {
        self.state == NodeState::Active && !self.draining
    }

    /// "active", "standby", "failed", "draining" (ranges left) or "drained".
    pub fn state_name(&self) -> &'static str {
        match (self.state, self.draining) {
            (NodeState::Failed, _) => "failed",
            (_, true) if self.assignments.is_empty() => "drained",
            (_, true) => "draining",
            (NodeState::Active, false) => "active",
            (NodeState::Standby, false) => "standby",
        }
    }

    /// The delivered rate from credited shares over the window, hashes per second.
    pub fn delivered_rate(&self, now_ms: u64, window_ms: u64) -> f64 {
        let since = now_ms.saturating_sub(window_ms).max(self.joined_ms);
        let work: u128 = self.credited.iter().filter(|(t, _)| *t >= since).map(|(_, w)| w.0).sum();
        let span = now_ms.saturating_sub(since).max(1000) as f64 / 1000.0;
        work as f64 / span
    }
}

/// A failed node that is no longer connected, kept for `status` until it comes back.
#[derive(Debug, Clone)]
pub(super) struct Gone {
    pub software_version: String,
    pub announced: f64,
    pub devices: Vec<DeviceInfo>,
    pub accepted: u64,
    pub rejected: u64,
    pub protocol: u16,
}

impl From<&NodeEntry> for Gone {
    fn from(n: &NodeEntry) -> Self {
        Gone {
            software_version: n.software_version.clone(),
            announced: n.announced,
            devices: n.devices.clone(),
            accepted: n.accepted,
            rejected: n.rejected,
            protocol: n.protocol,
        }
    }
}
