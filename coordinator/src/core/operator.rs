//! Operator requests: accounts, chains, the policy, submitted jobs, rollouts, and node
//! drain, promote and standby. Each checks its request, persists it and replans.

use super::*;

impl Core {
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

    pub(super) fn named(&self, name: &str) -> Result<Vec<NodeId>, AdminError> {
        let ids: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.name == name).map(|(&id, _)| id).collect();
        if ids.is_empty() { Err(AdminError::NoSuchNode(name.into())) } else { Ok(ids) }
    }
}
