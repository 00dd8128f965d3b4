//! Failure and take-over: a failed or departing node's ranges go to a promoted standby, or
//! spread over the active nodes, or back to their books.

use super::*;

/// Why a node failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Failure {
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

impl Core {
    /// The node failed (`connected`: it is still connected but under standard). Its ranges
    /// are reassigned at once: all to a standby promoted to active, else spread over the
    /// remaining active nodes, else given back to be issued when capacity returns.
    pub(super) fn fail(&mut self, now_ms: u64, node: NodeId, failure: Failure, connected: bool) {
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
            if let Some(miner) = &n.miner {
                self.release_miner_slots(miner);
            }
        }
        let (promoted, moved) = self.take_over(now_ms, node, chain, &ranges, was_active, "failover");
        if was_active || !moved.is_empty() {
            *self.counters.failovers.entry(failure.label()).or_default() += 1;
            let reason = failure.to_string();
            tracing::info!(node = %name, %reason, ?promoted, ranges = ranges.len(), "failover");
            self.ledger(now_ms, LedgerRecord::Failover { node: name, reason, promoted, ranges: moved });
        }
        self.replan(now_ms, "node failed");
    }

    /// The work of a node that stopped (`node` is no longer active): a standby is promoted if
    /// the node was active (it takes the node's chain), then `ranges` are handed over. Returns
    /// the promoted node's name and what happened to each range.
    pub(super) fn take_over(
        &mut self,
        now_ms: u64,
        node: NodeId,
        chain: Option<String>,
        ranges: &[AssignmentId],
        was_active: bool,
        why: &str,
    ) -> (Option<String>, Vec<RangeMove>) {
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
    pub(super) fn standby_to_promote(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Standby && !n.draining)
            .max_by(|(a_id, a), (b_id, b)| a.announced.total_cmp(&b.announced).then(b_id.cmp(a_id)))
            .map(|(&id, _)| id)
    }

    pub(super) fn promote(&mut self, now_ms: u64, node: NodeId, by: &str) {
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
        self.ledger(now_ms, LedgerRecord::Promotion { node: name, from: from.into(), by: by.into() });
    }

    /// Hands the ranges `ranges` of `from` to `to`, or spread over the active nodes, or back
    /// to their books. Returns what happened to each, for the ledger.
    pub(super) fn hand_over(
        &mut self,
        now_ms: u64,
        from: NodeId,
        ranges: &[AssignmentId],
        to: Option<NodeId>,
    ) -> Vec<RangeMove> {
        let mut moved = Vec::new();
        for &id in ranges {
            let Some(a) = self.assignments.get(&id).cloned().filter(|a| a.live) else { continue };
            // A range of several versions goes only to a node that reads them (protocol 3).
            let reads = |n: &NodeEntry| a.rolled == 0 || n.protocol >= 3;
            let target = to.filter(|t| self.nodes.get(t).is_some_and(reads)).or_else(|| {
                let chain = self
                    .nodes
                    .get(&from)
                    .and_then(|n| n.chain.clone())
                    .or_else(|| self.jobs.get(&a.job).map(|j| self.serving_chain(&j.account).to_string()));
                self.nodes
                    .iter()
                    .filter(|(id, n)| **id != from && n.takes_work() && reads(n))
                    .min_by_key(|(id, n)| (n.chain != chain, n.assignments.len(), **id))
                    .map(|(&id, _)| id)
            });
            let (to, new_assignment) = match target {
                Some(t) => {
                    let new = self.reassign(now_ms, id, t);
                    (self.nodes.get(&t).map(|n| n.name.clone()), new)
                }
                None => {
                    self.abandon(now_ms, id, Abandon::NodeFailed);
                    (None, None)
                }
            };
            moved.push(RangeMove {
                assignment: id,
                job: a.job,
                version: a.version,
                start: a.start,
                count: a.count,
                to,
                new_assignment,
            });
        }
        moved
    }

    /// Gives the live range of assignment `old` to `node` as a new assignment: all of it, or,
    /// when it is longer than `node` should hold at its rate, its first part (the rest waits,
    /// first in line, for the next range issued).
    pub(super) fn reassign(&mut self, now_ms: u64, old: AssignmentId, node: NodeId) -> Option<AssignmentId> {
        let a = self.assignments.get(&old).cloned().filter(|a| a.live)?;
        let new = self.fresh_id();
        let want = self.range_count(node, now_ms, a.rolled.count_ones());
        let book = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version))?;
        let count = book.reassign(a.start, old, new, want)?;
        // The rest of the old range waits, abandoned, for the next range issued.
        let fate = ranges::Fate::Abandoned(ranges::Abandon::Reassigned).describe();
        self.out.push(Command::Persist(StoreOp::RangeFate { assignment: old, fate, handed: count }));
        if count < a.count {
            self.waiting_rests.insert(old, (a.job, count));
        }
        self.retire(now_ms, old);
        let share_target = self.share_target_for(now_ms, node, a.job);
        let range = work::Issued { version: a.version, rolled: a.rolled, start: a.start, count };
        self.issue_assignment(now_ms, node, new, a.job, range, share_target, Some(old));
        Some(new)
    }
}
