//! Node events and timers: a node joins, sends a message, leaves or says goodbye, and
//! the tick that finds silent nodes, nodes under standard and periods to renew.

use hashgrid_common::message::DeviceInfo;

use super::takeover::Failure;
use super::*;

impl Core {
    /// A node passed authentication and said hello over a connection speaking protocol
    /// version `protocol`; `node` is the shell's connection id. A node that failed and comes
    /// back joins as a standby.
    pub fn handle_node_joined(&mut self, now_ms: u64, node: NodeId, hello: &NodeHello, protocol: u16) {
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
                // A list the hello would have refused is ignored (the rate still counts).
                if !devices.is_empty() && DeviceInfo::list_is_valid(&devices) {
                    entry.devices = devices;
                }
            }
            NodeMessage::Share(share) => self.handle_share(now_ms, node, share),
            NodeMessage::Shares(shares) => shares.into_iter().for_each(|share| self.handle_share(now_ms, node, share)),
            NodeMessage::RangeDone { assignment, .. } => {
                if let Some(a) = self.assignments.get(&assignment).cloned().filter(|a| a.node == node && a.live) {
                    if let Some(book) = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version))
                        && book.complete(a.start, assignment)
                    {
                        let fate = ranges::Fate::Done.describe();
                        self.out.push(Command::Persist(StoreOp::RangeFate { assignment, fate, handed: 0 }));
                    }
                    self.retire(now_ms, assignment);
                }
                self.fill(now_ms, node);
            }
        }
    }

    /// The node's connection is gone: it has failed, and its ranges are reassigned at once.
    pub fn handle_node_left(&mut self, now_ms: u64, node: NodeId) {
        self.drop_subscribed(node);
        self.fail(now_ms, node, Failure::ConnectionLost, false);
    }

    /// The node said goodbye (it is shutting down): its ranges are handed over at once, as in
    /// a failover, but it is not counted as failed.
    pub fn handle_node_departed(&mut self, now_ms: u64, node: NodeId) {
        let Some(n) = self.nodes.remove(&node) else { return };
        if let Some(miner) = &n.miner {
            self.release_miner_slots(miner);
        }
        let was_active = n.state == NodeState::Active;
        let (promoted, moved) = self.take_over(now_ms, node, n.chain, &n.assignments, was_active, "departure");
        self.ledger(now_ms, LedgerRecord::Departure { node: n.name, promoted, ranges: moved });
        self.replan(now_ms, "node left");
    }

    /// Timers: silent nodes, nodes under standard, period renewals, the pools' timers.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            // A miner sends no heartbeats: its session's silence timeout closes it.
            .filter(|(_, n)| n.miner.is_none() && now_ms.saturating_sub(n.last_seen_ms) > self.config.failover_after_ms)
            .map(|(&id, _)| id)
            .collect();
        for node in silent {
            self.out.push(Command::Close { node, reason: "missed heartbeats".into() });
            self.fail(now_ms, node, Failure::MissedHeartbeats, false);
        }
        let mut short = Vec::new();
        for (&id, n) in self.nodes.iter_mut().filter(|(_, n)| n.miner.is_none()) {
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
                LedgerRecord::PeriodRenewed { account: account.clone(), period_start_ms: *period_start_ms },
            );
        }
        if !renewed.is_empty() {
            self.replan(now_ms, "period renewed");
        }
        self.tick_upstreams(now_ms);
    }
}
