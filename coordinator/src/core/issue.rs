//! Issuing ranges: the balancer's chain for each node, the policy's account for each
//! range, ranges carved from the books and sized to the node's rate, the rollout's shares,
//! and revoking ranges whose work is no longer wanted.
//!
//! A node of protocol 3 gets ranges spanning `ROLLED_BITS` version bits (k = 4 versions, when
//! the job rolls versions: local templates always, pool templates when the pool agreed to the
//! whole BIP 320 mask); older nodes get one version. A range of n nonces under k versions is
//! n·k hashes: it is sized so, and counts so toward the account's issued work.

use std::collections::BTreeSet;

use super::work::Issued;
use super::*;

/// The version bits a range for a protocol-3 node rolls: k = 2^2 = 4 versions per nonce, so a
/// node can share the first compression's message schedule across them (docs/protocol.md).
pub const ROLLED_BITS: u32 = 2;

/// A rollout in force and the ranges issued under it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RolloutState {
    pub(super) rollout: Rollout,
    /// Ranges issued to nodes of the rollout's version, and to the others.
    pub(super) to_version: u64,
    pub(super) to_others: u64,
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

impl Core {
    /// Nonces for one range of `node` under 2^`bits` versions: `range_ms` of work at its rate
    /// (each nonce is 2^`bits` hashes), in 2^16 steps.
    pub(super) fn range_count(&mut self, node: NodeId, now_ms: u64, bits: u32) -> u64 {
        let rate = self.planning_rate(node, now_ms);
        let count =
            (((rate * self.config.range_ms as f64 / 1000.0) as u64) >> bits).clamp(1 << 16, ranges::NONCE_SPACE);
        count.next_multiple_of(1 << 16).min(ranges::NONCE_SPACE)
    }

    /// The version bits `node`'s ranges roll: `ROLLED_BITS` from protocol 3 on, else none.
    pub(super) fn rolled_bits_for(&self, node: NodeId) -> u32 {
        match self.nodes.get(&node) {
            Some(n) if n.protocol >= 3 && n.miner.is_none() => ROLLED_BITS,
            _ => 0,
        }
    }

    pub(super) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    pub(super) fn account_chain(&self, account: &str) -> &str {
        self.accounts.iter().find(|a| a.name == account).map_or(accounts::DEFAULT_CHAIN, |a| a.chain.as_str())
    }

    /// The rate used to size ranges and share targets: announced, corrected by measurement
    /// once enough shares have come in.
    pub(super) fn planning_rate(&mut self, node: NodeId, now_ms: u64) -> f64 {
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
    /// never harder than a submitted job's own target or a pool job's share target (every hit
    /// must also be a share).
    pub(super) fn share_target_for(&mut self, now_ms: u64, node: NodeId, job: JobId) -> Target {
        let rate = self.planning_rate(node, now_ms);
        let share_work = ((rate / self.config.shares_per_second) as u128).max(self.config.min_share_work);
        let mut share_target = Target::from_expected_hashes(share_work);
        match self.jobs.get(&job).map(|j| &j.kind) {
            Some(JobKind::Submitted { target, .. }) => share_target = share_target.max(*target),
            // Every share the pool would take must reach the coordinator.
            Some(JobKind::Upstream { pool_target, .. }) => share_target = share_target.max(*pool_target),
            _ => {}
        }
        share_target
    }

    /// Rebalances the nodes over the chains, then tops every pipeline up.
    pub(super) fn replan(&mut self, now_ms: u64, reason: &str) {
        self.rebalance(now_ms, reason);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.fill(now_ms, id);
        }
        if !self.subscribed.is_empty() {
            self.serve_subscribed(now_ms);
        }
    }

    /// The balancer: chains with demand get active nodes in proportion to their load.
    pub(super) fn rebalance(&mut self, now_ms: u64, reason: &str) {
        let mut loads: Vec<balance::ChainLoad> = self
            .chains
            .values()
            .filter(|c| {
                self.accounts.iter().any(|a| {
                    self.serving_chain(&a.name) == c.params.name && !a.up_to_standard() && self.has_work(&a.name)
                })
            })
            .map(|c| balance::ChainLoad { name: c.params.name.clone(), load: c.load(now_ms) })
            .collect();
        loads.extend(self.pool_chain_loads(now_ms));
        let nodes: Vec<balance::NodeCapacity<NodeId>> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.takes_work())
            .map(|(&id, n)| {
                // A miner served from another chain's account counts where it serves (pinned).
                let elsewhere = self.miner_serving_chain(id).filter(|c| n.chain.as_ref().is_some_and(|own| own != c));
                let pinned = elsewhere.is_some();
                let chain = elsewhere.or_else(|| n.chain.clone());
                balance::NodeCapacity { node: id, capacity: n.announced, chain, pinned }
            })
            .collect();
        if nodes.is_empty() {
            return;
        }
        let pinned: BTreeSet<NodeId> = nodes.iter().filter(|n| n.pinned).map(|n| n.node).collect();
        let plan = balance::balance(&loads, &nodes, self.config.hysteresis);
        for (id, chain) in plan {
            // A chain without demand keeps its nodes' assignment until there is demand again
            // (nothing to move them to); they park. A pinned miner keeps its placement, so it
            // goes back to its own chain's accounts once one can carve it a slot.
            if chain.is_some() && !pinned.contains(&id) {
                self.set_chain(now_ms, id, chain, reason);
            }
        }
    }

    pub(super) fn set_chain(&mut self, now_ms: u64, node: NodeId, chain: Option<String>, reason: &str) {
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
        self.ledger(now_ms, LedgerRecord::Rebalance { node: name, from, to: chain, reason: reason.into() });
    }

    /// Tops the node's pipeline up with ranges for the accounts of its chain the policy
    /// chooses.
    pub(super) fn fill(&mut self, now_ms: u64, node: NodeId) {
        if self.nodes.get(&node).is_some_and(|n| n.miner.is_some()) {
            return self.fill_miner(now_ms, node);
        }
        let mut rebalanced = false;
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
            let bits = self.rolled_bits_for(node);
            let count = self.range_count(node, now_ms, bits);
            let Some(account) = accounts::choose(self.policy, &self.accounts, count << bits, |i| {
                self.serving_chain(&self.accounts[i].name) != chain || !self.has_work(&self.accounts[i].name)
            }) else {
                // A pool chain ran out of work (its pools' extranonce spaces used up, which
                // replans nothing by itself): the balancer moves the node to a chain that has
                // some, once.
                if !rebalanced && self.upstreams.values().any(|up| up.chain.as_deref() == Some(&chain)) {
                    rebalanced = true;
                    self.rebalance(now_ms, "chain out of work");
                    continue;
                }
                return;
            };
            let account_name = self.accounts[account].name.clone();
            let id = self.fresh_id();
            let Some((job_id, range)) = self.issue_for(now_ms, &account_name, count, id, bits) else {
                return;
            };
            let share_target = self.share_target_for(now_ms, node, job_id);
            self.accounts[account].issued += (range.count as u128) << range.rolled.count_ones();
            if let (Some(r), Some(is_version)) = (&mut self.rollout, is_version) {
                if is_version {
                    r.to_version += 1;
                } else {
                    r.to_others += 1;
                }
            }
            self.issue_assignment(now_ms, node, id, job_id, range, share_target, None);
        }
    }

    /// Records and sends a new assignment of a range already taken from its book.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue_assignment(
        &mut self,
        now_ms: u64,
        node: NodeId,
        id: AssignmentId,
        job_id: JobId,
        range: Issued,
        share_target: Target,
        reassigned_from: Option<AssignmentId>,
    ) {
        let Issued { version, rolled, start, count } = range;
        let job = &self.jobs[&job_id];
        let header = Header { version, ..job.template };
        let account = job.account.clone();
        let chain = self.serving_chain(&account).to_string();
        self.counters.ranges_issued += 1;
        if reassigned_from.is_some() {
            self.counters.ranges_reassigned += 1;
        }
        let Some(n) = self.nodes.get_mut(&node) else { return };
        n.assignments.push(id);
        let node_name = n.name.clone();
        self.assignments.insert(
            id,
            AssignmentEntry {
                node,
                holder: node_name.clone(),
                job: job_id,
                version,
                rolled,
                start,
                count,
                share_target,
                share_work: Work::of(&share_target),
                live: true,
                retired_ms: 0,
            },
        );
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
            LedgerRecord::Assignment {
                assignment: id,
                node: node_name,
                account,
                chain,
                job: job_id,
                version,
                start,
                count,
                share_work: Work::of(&share_target),
                reassigned_from,
            },
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
                rolled,
            }),
        });
    }

    /// A range of up to `count` nonces under 2^`bits` versions (where the job rolls versions)
    /// for `account`: its oldest submitted job with work left, else its pool's template if it
    /// has a pool, else its local-chain template (a new one when the current is stale or
    /// exhausted).
    pub(super) fn issue_for(
        &mut self,
        now_ms: u64,
        account: &str,
        count: u64,
        id: AssignmentId,
        bits: u32,
    ) -> Option<(JobId, Issued)> {
        let submitted = self
            .jobs
            .values_mut()
            .filter(|j| j.account == account && !j.stale && matches!(j.kind, JobKind::Submitted { .. }))
            .find(|j| !j.is_exhausted());
        if let Some(job) = submitted
            && let Some(range) = job.issue(count, id, bits)
        {
            return Some((job.id, range));
        }
        if self.upstreams.contains_key(account) {
            return self.issue_upstream(account, count, id, bits);
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
                    let target = chain.local.target();
                    let j = self.fresh_id();
                    self.out.push(Command::Persist(StoreOp::TemplateMade {
                        job: j,
                        account: account.into(),
                        header: template,
                        target,
                    }));
                    self.jobs.insert(j, Job::new(j, account.into(), kind, template, true));
                    self.local_jobs.insert(account.into(), j);
                    j
                }
            };
            let job = self.jobs.get_mut(&job_id).expect("just found or made");
            match job.issue(count, id, bits) {
                Some(range) => return Some((job_id, range)),
                None => job.stale = true,
            }
        }
        None
    }

    /// Removes an assignment from its node's pipeline (it stays known, for late shares).
    pub(super) fn retire(&mut self, now_ms: u64, id: AssignmentId) {
        if let Some(a) = self.assignments.get_mut(&id).filter(|a| a.live) {
            a.live = false;
            a.retired_ms = now_ms;
            if let Some(n) = self.nodes.get_mut(&a.node) {
                n.assignments.retain(|&x| x != id);
            }
        }
    }

    pub(super) fn abandon(&mut self, now_ms: u64, id: AssignmentId, why: Abandon) {
        let Some(a) = self.assignments.get(&id).cloned().filter(|a| a.live) else { return };
        if let Some(book) = self.jobs.get_mut(&a.job).and_then(|j| j.book_mut(a.version))
            && book.abandon(a.start, id, why)
        {
            let fate = ranges::Fate::Abandoned(why).describe();
            self.out.push(Command::Persist(StoreOp::RangeFate { assignment: id, fate, handed: 0 }));
        }
        self.retire(now_ms, id);
    }

    /// Revokes every live assignment of jobs matching `pred`, telling the nodes.
    pub(super) fn revoke_where(&mut self, now_ms: u64, pred: impl Fn(&Job) -> bool, why: Abandon) {
        let ids: Vec<(AssignmentId, NodeId)> = self
            .assignments
            .iter()
            .filter(|(_, a)| a.live && self.jobs.get(&a.job).is_some_and(&pred))
            .map(|(&id, a)| (id, a.node))
            .collect();
        for (id, node) in ids {
            self.abandon(now_ms, id, why);
            self.out.push(Command::Send { node, msg: CoordinatorMessage::Revoke { assignment: id } });
        }
        if why == Abandon::AccountUpToStandard {
            self.relabel_waiting_rests(&pred);
        }
    }

    /// The rests of handed-over ranges of jobs matching `pred` (whose account is up to
    /// standard) are not waiting to be searched any more: they are abandoned because the account
    /// is up to standard, in the books and in the stored history. Still first in line if the
    /// account gets work again.
    fn relabel_waiting_rests(&mut self, pred: &impl Fn(&Job) -> bool) {
        for job in self.jobs.values_mut().filter(|j| pred(j)) {
            for book in job.books.values_mut() {
                book.relabel_waiting(Abandon::Reassigned, Abandon::AccountUpToStandard);
            }
        }
        let fate = ranges::Fate::Abandoned(Abandon::AccountUpToStandard).describe();
        let jobs = &self.jobs;
        let (done, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.waiting_rests)
            .into_iter()
            .filter(|(_, (job, _))| jobs.contains_key(job))
            .partition(|(_, (job, _))| jobs.get(job).is_some_and(pred));
        self.waiting_rests = kept;
        for (assignment, (_, handed)) in done {
            self.out.push(Command::Persist(StoreOp::RangeFate { assignment, fate, handed }));
        }
    }

    /// `chain` moved: every local template on it is stale (`retire_jobs`).
    pub(super) fn retire_local_templates(&mut self, now_ms: u64, chain: &str) {
        let on_chain: Vec<String> =
            self.local_jobs.keys().filter(|account| self.account_chain(account) == chain).cloned().collect();
        let stale: Vec<JobId> = on_chain.iter().filter_map(|a| self.local_jobs.remove(a)).collect();
        self.retire_jobs(now_ms, &stale);
    }

    /// The jobs `stale` are no longer worth searching: their assignments are revoked; the jobs
    /// stay known (as stale, for late shares) until `STALE_JOBS_KEPT` newer ones exist.
    pub(super) fn retire_jobs(&mut self, now_ms: u64, stale: &[JobId]) {
        let ids: Vec<(AssignmentId, NodeId)> = self
            .assignments
            .iter()
            .filter(|(_, a)| a.live && stale.contains(&a.job))
            .map(|(&id, a)| (id, a.node))
            .collect();
        for (id, node) in ids {
            self.retire(now_ms, id);
            self.out.push(Command::Send { node, msg: CoordinatorMessage::Revoke { assignment: id } });
        }
        for &j in stale {
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
mod tests {
    use super::super::tests::{Farm, T0, core, find_share, hello};
    use super::*;
    use hashgrid_common::message::Assignment;

    /// A protocol-3 node gets ranges of 4 versions, sized as n·4 hashes; a protocol-2 node
    /// beside it gets one version and never a (version, nonce) of the other's; a share under
    /// any version of a range is credited, one under a version outside it is not held; and a
    /// failed protocol-3 node's range waits for a node that reads it rather than going to the
    /// protocol-2 one.
    #[test]
    fn protocol_3_nodes_get_ranges_of_four_versions() {
        let mut core = core();
        let mut farm = Farm::default();
        core.add_account(T0, "a", 1 << 40, None, None, None).unwrap();
        core.handle_node_joined(T0, 1, &hello("new", 1e6, false), 3);
        core.handle_node_joined(T0, 2, &hello("old", 1e6, false), 2);
        farm.absorb(&mut core);
        let (new, old) = (farm.held[&1].clone(), farm.held[&2].clone());
        assert!(!new.is_empty() && !old.is_empty());
        // 1 MH/s for 3 s: 3 M hashes, in 2^16-nonce steps: 750 k nonces under 4 versions round
        // up to 786,432; 3 M nonces under one to 3,014,656.
        assert!(new.iter().all(|a| a.rolled == 0x6000 && a.count == 786_432), "{new:?}");
        assert!(old.iter().all(|a| a.rolled == 0 && a.count == 3_014_656), "{old:?}");
        for a in &new {
            for b in &old {
                let overlap = a.start < b.start + b.count as u32 && b.start < a.start + a.count as u32;
                assert!(!(overlap && a.versions().contains(&b.header.version)), "{a:?} and {b:?}");
            }
        }

        // A share under the range's fourth version is its node's; under a version outside
        // the group (inside the BIP 320 mask) it is not held.
        let a = new[0];
        let under = |version: u32| Assignment { header: Header { version, ..a.header }, ..a };
        let fourth = a.versions()[3];
        let share = Share { id: 1, ..find_share(&under(fourth), 0).unwrap() };
        assert_eq!(share.version, fourth);
        core.handle_node_message(T0 + 1, 1, NodeMessage::Share(share));
        let outside = Share { id: 2, ..find_share(&under(a.header.version ^ 0x0100_0000), 0).unwrap() };
        core.handle_node_message(T0 + 1, 1, NodeMessage::Share(outside));
        farm.absorb(&mut core);
        assert!(matches!(farm.results[0], (1, 1, ShareOutcome::Accepted { .. })), "{:?}", farm.results);
        assert_eq!(farm.results[1], (1, 2, ShareOutcome::Rejected(RejectReason::RangeNotHeld)));

        // The protocol-3 node fails: its ranges do not go to the protocol-2 node.
        core.handle_node_left(T0 + 2, 1);
        farm.absorb(&mut core);
        assert!(farm.held[&2].iter().all(|b| b.rolled == 0), "{:?}", farm.held[&2]);
        let job = core.job_status(a.job).unwrap();
        assert!(job.abandoned >= 4 * a.count, "the range waits for a protocol-3 node: {job:?}");
        core.handle_node_joined(T0 + 3, 3, &hello("newer", 1e6, false), 3);
        farm.absorb(&mut core);
        assert_eq!((farm.held[&3][0].start, farm.held[&3][0].header.version), (a.start, a.header.version));
    }
}
