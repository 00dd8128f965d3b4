//! Share intake and credit: every share is checked (job, version, time, target,
//! duplicate), credited to its account, and may find a block or bring an account up to
//! standard.

use super::*;

impl Core {
    pub(super) fn handle_share(&mut self, now_ms: u64, node: NodeId, share: Share) {
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

    pub(super) fn check_and_credit(&mut self, now_ms: u64, node: NodeId, share: &Share) -> Result<u128, RejectReason> {
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
}
