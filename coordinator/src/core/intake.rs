//! Share intake and credit: every share is checked (job, time, version, the range its node
//! holds, target, duplicate), credited to its account, and may find a block or bring an
//! account up to standard.

use super::work::HeldRange;
use super::*;

impl Core {
    pub(super) fn handle_share(&mut self, now_ms: u64, node: NodeId, share: Share) {
        let outcome = match self.check_and_credit(now_ms, node, &share) {
            Ok(work) => {
                self.counters.shares_accepted += 1;
                ShareOutcome::Accepted { work: work.0 }
            }
            Err(reason) => {
                self.count_rejected(node, reason, 1);
                ShareOutcome::Rejected(reason)
            }
        };
        self.out.push(Command::Send { node, msg: CoordinatorMessage::ShareResult { id: share.id, outcome } });
    }

    /// Counts `n` of `node`'s shares rejected for `reason`: in the counters, in the node's
    /// total, and, where the fault is the node's, in its under-delivery evidence.
    pub(super) fn count_rejected(&mut self, node: NodeId, reason: RejectReason, n: u64) {
        *self.counters.shares_rejected.entry(reason).or_default() += n;
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.rejected += n;
            if reason.is_node_fault() {
                entry.probe.rejected(n);
            }
        }
    }

    pub(super) fn check_and_credit(&mut self, now_ms: u64, node: NodeId, share: &Share) -> Result<Work, RejectReason> {
        let a =
            self.assignments.get(&share.assignment).filter(|a| a.job == share.job).ok_or(RejectReason::UnknownJob)?;
        // A share is bound to the node it was issued to (by name: its shares may come over a
        // later connection), while the range is live and for a grace period after.
        let holder = self.nodes.get(&node).is_some_and(|n| n.name == a.holder);
        let in_time = a.live || now_ms.saturating_sub(a.retired_ms) <= self.config.late_share_grace_ms;
        let range = HeldRange { version: a.version, rolled: a.rolled, start: a.start, count: a.count };
        if holder && !in_time && range.contains(share.version, share.nonce) {
            // Its own work, re-sent after an outage longer than the grace period: too late to
            // credit (the range was handed over or finished), but no fault of the node.
            return Err(RejectReason::StaleJob);
        }
        let held = (holder && in_time).then_some(range);
        let (share_target, work) = (a.share_target, a.share_work);
        let job = self.jobs.get_mut(&share.job).ok_or(RejectReason::UnknownJob)?;
        let verified = job.check_share(
            share.version,
            share.time,
            share.nonce,
            held.as_ref(),
            &share_target,
            self.config.time_window_secs,
        )?;
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
            JobKind::Upstream { .. } => {}
        }
        let node_name = self.nodes.get(&node).map(|n| n.name.clone()).unwrap_or_default();
        self.out.push(Command::Persist(StoreOp::Credit {
            account: account_name.clone(),
            work,
            node: node_name,
            job: job_id,
            header: verified.header,
            share_target,
            at_ms: now_ms,
        }));
        if let Some(n) = self.nodes.get_mut(&node) {
            n.accepted += 1;
            n.probe.accepted(now_ms);
            n.credited.push_back((now_ms, work));
        }
        let reached = self.credit_account(&account_name, work);
        self.submit_upstream(now_ms, &account_name, job_id, &verified.header, verified.hash);
        if block {
            self.block_found(now_ms, &account_name, verified.hash, reached.is_none());
        }
        if let Some((counted, standard, chain)) = reached {
            self.standard_reached(now_ms, &account_name, counted, standard, chain);
        }
        Ok(work)
    }

    /// A share of `account` with `hash` met its local chain's block target: the chain is
    /// extended (stored, ledgered), its templates go stale, and the farm is re-planned if
    /// `replan` (no account reached its standard with that share).
    pub(super) fn block_found(&mut self, now_ms: u64, account: &str, hash: BlockHash, replan: bool) {
        self.counters.blocks_found += 1;
        let chain = self.account_chain(account).to_string();
        let height = match self.chains.get_mut(&chain) {
            Some(c) => {
                c.local.extend(hash);
                c.local.height
            }
            None => 0,
        };
        self.out.push(Command::Persist(StoreOp::BlockFound {
            chain: chain.clone(),
            height,
            hash,
            account: account.into(),
        }));
        let record =
            LedgerRecord::BlockFound { chain: chain.clone(), height, hash: hash.to_string(), account: account.into() };
        self.ledger(now_ms, record);
        self.retire_local_templates(now_ms, &chain);
        if replan {
            self.replan(now_ms, "block found");
        }
    }

    /// Adds a credited share's `work` to `account`; (counted, standard, chain) if that brought
    /// it up to its standard.
    pub(super) fn credit_account(&mut self, account: &str, work: Work) -> Option<(Work, Work, String)> {
        let a = self.accounts.iter_mut().find(|a| a.name == account)?;
        let was_below = !a.up_to_standard();
        a.delivered = a.delivered.saturating_add(work);
        a.shares += 1;
        let reached = (was_below && a.up_to_standard()).then(|| (a.counted(), a.standard));
        reached.map(|(counted, standard)| (counted, standard, self.serving_chain(account).to_string()))
    }

    /// `account` reached its standard (`counted` of `standard`): ledgered, its ranges revoked,
    /// and capacity moves on to the next account of its chain.
    pub(super) fn standard_reached(
        &mut self,
        now_ms: u64,
        account: &str,
        counted: Work,
        standard: Work,
        chain: String,
    ) {
        self.ledger(
            now_ms,
            LedgerRecord::StandardReached {
                account: account.into(),
                delivered: counted,
                standard,
                chain: chain.clone(),
            },
        );
        // Capacity moves on: ranges still serving this account are given back.
        self.revoke_where(now_ms, |job| job.account == account, Abandon::AccountUpToStandard);
        self.replan(now_ms, "account up to standard");
        let next =
            accounts::choose(self.policy, &self.accounts, 1, |i| self.serving_chain(&self.accounts[i].name) != chain)
                .map(|i| self.accounts[i].name.clone());
        let policy = self.policy.as_str().into();
        self.ledger(now_ms, LedgerRecord::Switch { from: account.into(), to: next, chain, policy });
    }
}
