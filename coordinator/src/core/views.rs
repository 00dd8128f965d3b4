//! Read views for the operator API, the status page and metrics: the core's state, never
//! changed here.

use super::*;

impl Core {
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A job's coverage: submitted jobs with their hits; local-chain and pool templates with
    /// the block target as theirs (blocks found are in the ledger).
    pub fn job_status(&self, id: JobId) -> Result<JobStatus, AdminError> {
        let job = self.jobs.get(&id).ok_or(AdminError::NoSuchJob(id))?;
        let (target, hits) = match &job.kind {
            JobKind::Submitted { target, hits } => (*target, hits.clone()),
            JobKind::LocalChain { .. } => {
                let chain = self.account_chain(&job.account);
                let target = self.chains.get(chain).map_or(Target::DIFFICULTY_1, |c| c.local.target());
                (target, Vec::new())
            }
            JobKind::Upstream { .. } => (Target::from_compact(job.template.bits).unwrap_or(Target::MAX), Vec::new()),
        };
        let c = job.coverage();
        let mut runs: Vec<RangeRun> = Vec::new();
        'books: for (&version, book) in &job.books {
            for (start, count, fate) in book.ranges() {
                let fate = fate.describe();
                let full = runs.len() >= MAX_RUNS;
                match runs.last_mut() {
                    Some(r) if r.version == version && r.fate == fate && r.start as u64 + r.count == start => {
                        r.count += count
                    }
                    _ if full => break 'books,
                    _ => runs.push(RangeRun { version, start: start as u32, count, fate: fate.into() }),
                }
            }
        }
        Ok(JobStatus {
            job: id,
            account: job.account.clone(),
            header: job.template,
            target,
            searched: c.done,
            in_flight: c.in_flight,
            abandoned: c.abandoned,
            reassigned: c.reassigned,
            total: job.space(),
            hits,
            runs,
        })
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let mut accounts: Vec<_> = self.accounts.iter().map(Account::status).collect();
        accounts.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        Status {
            policy: self.policy,
            accounts,
            nodes: self.node_list(now_ms),
            rollout: self.rollout.as_ref().map(|r| r.rollout.clone()),
            pools: self.pool_list(now_ms),
        }
    }

    /// Every connected node, then the failed ones that are gone.
    pub fn node_list(&self, now_ms: u64) -> Vec<NodeStatus> {
        let mut list: Vec<NodeStatus> = self
            .nodes
            .iter()
            .map(|(&id, n)| NodeStatus {
                name: n.name.clone(),
                state: n.state_name().into(),
                hashrate: n.delivered_rate(now_ms, self.config.rate_window_ms),
                announced_hashrate: n.announced,
                account: self.serving(id),
                software_version: n.software_version.clone(),
                chain: n.chain.clone(),
                draining: n.draining,
                devices: n.devices.clone(),
                accepted: n.accepted,
                rejected: n.rejected,
                protocol: n.protocol,
            })
            .collect();
        list.extend(self.gone.iter().map(|(name, g)| NodeStatus {
            name: name.clone(),
            state: "failed".into(),
            hashrate: 0.0,
            announced_hashrate: g.announced,
            account: None,
            software_version: g.software_version.clone(),
            chain: None,
            draining: false,
            devices: g.devices.clone(),
            accepted: g.accepted,
            rejected: g.rejected,
            protocol: g.protocol,
        }));
        list
    }

    /// The account a node's current range serves.
    pub(super) fn serving(&self, node: NodeId) -> Option<String> {
        let n = self.nodes.get(&node)?;
        if n.miner.is_some() {
            return self.miner_serving(node);
        }
        let a = self.assignments.get(n.assignments.first()?)?;
        self.jobs.get(&a.job).map(|j| j.account.clone())
    }

    /// Chains with their load, nodes and accounts: the local chains, then the pool chains.
    pub fn chain_list(&self, now_ms: u64) -> Vec<ChainStatus> {
        let local = self.chains.values().map(|c| ChainStatus {
            params: c.params.clone(),
            height: c.local.height,
            load: c.load(now_ms),
            measured_bit_rate: c.measured_bit_rate(now_ms),
            nodes: Vec::new(),
            capacity: 0.0,
            accounts: Vec::new(),
        });
        let mut list: Vec<ChainStatus> = local.chain(self.pool_chain_list(now_ms)).collect();
        for c in &mut list {
            let nodes = self
                .nodes
                .values()
                .filter(|n| n.state == NodeState::Active && n.chain.as_deref() == Some(&c.params.name));
            for n in nodes {
                c.nodes.push(n.name.clone());
                c.capacity += n.announced;
            }
            c.accounts = self
                .accounts
                .iter()
                .filter(|a| self.serving_chain(&a.name) == c.params.name)
                .map(|a| a.name.clone())
                .collect();
        }
        list
    }

    /// Which chain and account every connected node serves.
    pub fn assignment_list(&self, now_ms: u64) -> Vec<NodeAssignment> {
        self.nodes
            .iter()
            .map(|(&id, n)| NodeAssignment {
                node: n.name.clone(),
                state: n.state_name().into(),
                chain: n.chain.clone(),
                account: self.serving(id),
                hashrate: n.delivered_rate(now_ms, self.config.rate_window_ms),
                ranges: n.assignments.len() as u32,
            })
            .collect()
    }
}

/// Most runs of ranges `job_status` lists (a frame stays far below its size cap).
const MAX_RUNS: usize = 10_000;
