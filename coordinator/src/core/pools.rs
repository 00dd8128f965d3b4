//! Accounts at pools: the operator's `set_pool`, the pool connections' inputs, and what an
//! account's [`Upstream`] says, turned into commands, header templates, submits and ledger
//! entries.
//!
//! - **Jobs → ranges.** Each pool job becomes header templates (`JobKind::Upstream`), one per
//!   extranonce2 of slot 0 of the coordinator's carving; a template whose nonces (and rolled
//!   versions, when the pool agreed to the whole BIP 320 mask) run out is followed by the next
//!   extranonce2. `clean_jobs` or a new previous block retires every older template of the
//!   account at once (their ranges are revoked); templates of jobs the session still keeps
//!   stay valid for late shares. While an account's pool has no job (down, refusing it), the
//!   policy skips the account and its capacity goes to the others.
//! - **Pool chains.** Accounts whose pools' jobs build on the same previous block mine one
//!   chain (`chains::pool_chain`), which the balancer weighs as it weighs a local chain, with
//!   the load measured from the job stream: each job's bytes as a work update, its merkle
//!   branch as an estimate of the transactions per template. The policy still picks, within
//!   the chain, which account each range serves.
//! - **Shares upstream.** A credited share that also meets its template's pool target is
//!   submitted (worker = the account's user) and persisted with its outcome; an outcome is
//!   never guessed: no answer is `unknown`.

use hashgrid_common::message::PoolStatus;
use hashgrid_common::stratum::{Carving, Submit, SubmitOutcome};

use super::upstream::{self, UpstreamOut};
use super::*;

impl Core {
    /// Sets (`Some`) or removes (`None`) the account's pool, and the basis of its standard
    /// (unchanged when `None`). The old pool's connections close and its templates retire.
    pub fn set_pool(
        &mut self,
        now_ms: u64,
        account: &str,
        pool: Option<PoolSettings>,
        basis: Option<StandardBasis>,
    ) -> Result<(), AdminError> {
        let Some(a) = self.accounts.iter().position(|a| a.name == account) else {
            return Err(AdminError::NoSuchAccount(account.into()));
        };
        let basis = basis.unwrap_or(self.accounts[a].basis);
        upstream::validate_basis(pool.as_ref(), basis).map_err(AdminError::InvalidPool)?;
        let mut upstream = match &pool {
            Some(p) => Some(Upstream::new(p.clone(), self.config.upstream).map_err(AdminError::InvalidPool)?),
            None => None,
        };
        self.accounts[a].basis = basis;
        if let Some(mut old) = self.upstreams.remove(account) {
            // The account's counts go on (the store rebuilds them from all its submits).
            if let Some(up) = &mut upstream {
                up.restore_counts(old.counts.clone());
            }
            old.close_all(now_ms, "the account's pool changed");
            self.take_upstream_outs(now_ms, account, old.drain());
            self.drop_upstream_jobs(now_ms, account);
        }
        self.out.push(Command::Persist(StoreOp::AccountPoolSet { account: account.into(), pool: pool.clone(), basis }));
        self.ledger(
            now_ms,
            LedgerRecord::PoolSet {
                account: account.into(),
                urls: pool.as_ref().map(|p| p.urls.clone()).unwrap_or_default(),
                user: pool.as_ref().map(|p| p.user.clone()).unwrap_or_default(),
                basis: basis.as_str().into(),
            },
        );
        if let Some(mut up) = upstream {
            up.handle_tick(now_ms, &mut self.next_conn);
            let outs = up.drain();
            self.upstreams.insert(account.into(), up);
            self.take_upstream_outs(now_ms, account, outs);
        }
        self.replan(now_ms, "account pool set");
        Ok(())
    }

    /// Pool connection `conn` is up.
    pub fn handle_pool_connected(&mut self, now_ms: u64, conn: u64) {
        self.with_upstream(now_ms, conn, |up| up.handle_connected(now_ms, conn));
    }

    /// One line from pool connection `conn` (without its end of line, at most the codec's cap).
    pub fn handle_pool_line(&mut self, now_ms: u64, conn: u64, line: &[u8]) {
        self.with_upstream(now_ms, conn, |up| up.handle_line(now_ms, conn, line));
    }

    /// Pool connection `conn` ended, or could not be opened.
    pub fn handle_pool_closed(&mut self, now_ms: u64, conn: u64, reason: &str) {
        self.with_upstream(now_ms, conn, |up| up.handle_closed(now_ms, conn, reason));
        self.pool_conns.remove(&conn);
    }

    /// The pools' timers (from `handle_tick`).
    pub(super) fn tick_upstreams(&mut self, now_ms: u64) {
        let accounts: Vec<String> = self.upstreams.keys().cloned().collect();
        for account in accounts {
            let Some(up) = self.upstreams.get_mut(&account) else { continue };
            up.handle_tick(now_ms, &mut self.next_conn);
            let outs = up.drain();
            self.take_upstream_outs(now_ms, &account, outs);
        }
    }

    /// Whether ranges can be issued for `account` now: always, unless it has a pool without a
    /// job (down, or refusing it).
    pub(super) fn has_work(&self, account: &str) -> bool {
        self.upstreams.get(account).is_none_or(Upstream::has_work)
    }

    fn with_upstream(&mut self, now_ms: u64, conn: u64, f: impl FnOnce(&mut Upstream)) {
        let Some(account) = self.pool_conns.get(&conn).cloned() else { return };
        let Some(up) = self.upstreams.get_mut(&account).filter(|up| up.holds(conn)) else { return };
        f(up);
        let outs = up.drain();
        self.take_upstream_outs(now_ms, &account, outs);
    }

    fn take_upstream_outs(&mut self, now_ms: u64, account: &str, outs: Vec<UpstreamOut>) {
        let mut replan = false;
        for out in outs {
            match out {
                UpstreamOut::Connect { conn, url } => {
                    self.pool_conns.insert(conn, account.into());
                    self.out.push(Command::PoolConnect { conn, url });
                }
                UpstreamOut::Send { conn, line } => self.out.push(Command::PoolSend { conn, line: line.into() }),
                UpstreamOut::Close { conn, reason } => {
                    self.pool_conns.remove(&conn);
                    self.out.push(Command::PoolClose { conn, reason });
                }
                UpstreamOut::Job { job, revoke_older } => {
                    self.place_on_pool_chain(now_ms, account, &job);
                    self.pool_job(now_ms, account, revoke_older);
                    replan = true;
                }
                UpstreamOut::Submitted { conn, ticket, outcome } => self.submitted(now_ms, conn, ticket, outcome),
                UpstreamOut::Switched { from, to, reason } => {
                    self.ledger(now_ms, LedgerRecord::PoolSwitch { account: account.into(), from, to, reason });
                }
                UpstreamOut::Refused { url, reason } => {
                    self.ledger(now_ms, LedgerRecord::PoolRefused { account: account.into(), url, reason });
                }
                UpstreamOut::Lost => {
                    self.drop_upstream_jobs(now_ms, account);
                    replan = true;
                }
                UpstreamOut::Flagged { rejected, answered } => {
                    self.ledger(now_ms, LedgerRecord::PoolFlagged { account: account.into(), rejected, answered });
                }
            }
        }
        if replan {
            self.replan(now_ms, "pool work changed");
        }
    }

    /// The chain whose nodes serve `account`: its pool chain once its pool sent a job, else
    /// its local chain.
    pub(super) fn serving_chain(&self, account: &str) -> &str {
        match self.upstreams.get(account).and_then(|up| up.chain.as_deref()) {
            Some(chain) => chain,
            None => self.account_chain(account),
        }
    }

    /// The pool chains with demand (an account on it below its standard with a job), and
    /// their loads, each counted once.
    pub(super) fn pool_chain_loads(&self, now_ms: u64) -> Vec<balance::ChainLoad> {
        let loads = chains::pool_chain_loads(
            self.upstreams.values().filter_map(|up| Some((up.chain.as_deref()?, &up.updates))),
            now_ms,
        );
        let demand = |chain: &str| {
            self.accounts.iter().any(|a| {
                !a.up_to_standard()
                    && self.has_work(&a.name)
                    && self.upstreams.get(&a.name).is_some_and(|up| up.chain.as_deref() == Some(chain))
            })
        };
        loads.into_iter().filter(|(c, _)| demand(c)).map(|(name, load)| balance::ChainLoad { name, load }).collect()
    }

    /// The pool chains as `chain list` shows them (without nodes and accounts): measured
    /// transactions per template and bit rate, the difficulty of the latest block target.
    pub(super) fn pool_chain_list(&self, now_ms: u64) -> Vec<ChainStatus> {
        let loads = chains::pool_chain_loads(
            self.upstreams.values().filter_map(|up| Some((up.chain.as_deref()?, &up.updates))),
            now_ms,
        );
        loads
            .into_iter()
            .map(|(name, load)| {
                let busiest = self
                    .upstreams
                    .values()
                    .filter(|up| up.chain.as_deref() == Some(&name))
                    .max_by(|a, b| a.updates.load(now_ms).total_cmp(&b.updates.load(now_ms)))
                    .expect("a chain has an account");
                let difficulty = busiest
                    .current
                    .as_ref()
                    .and_then(|j| Target::from_compact(j.notify.nbits).ok())
                    .map_or(0.0, |t| t.difficulty());
                let params = ChainParams {
                    name,
                    tx_per_template: busiest.updates.tx_per_template(),
                    bit_rate: 0,
                    difficulty,
                    weight: 1.0,
                };
                ChainStatus {
                    params,
                    height: 0,
                    load,
                    measured_bit_rate: busiest.updates.bit_rate(now_ms),
                    nodes: Vec::new(),
                    capacity: 0.0,
                    accounts: Vec::new(),
                }
            })
            .collect()
    }

    /// Measures `job` into the account's job stream and places the account on the pool chain
    /// of the job's previous block.
    fn place_on_pool_chain(&mut self, now_ms: u64, account: &str, job: &hashgrid_common::stratum::Job) {
        let n = &job.notify;
        let bytes = 80 + n.coinb1.len() + n.coinb2.len() + 32 * n.merkle_branch.len();
        let prev = n.prev_blockhash;
        let Some(up) = self.upstreams.get(account) else { return };
        let chain = if up.chain_prev == Some(prev) && up.chain.is_some() {
            up.chain.clone()
        } else {
            let others = self
                .upstreams
                .iter()
                .filter(|(a, _)| a.as_str() != account)
                .map(|(_, other)| (other.chain.as_deref(), other.chain_prev));
            chains::pool_chain((up.chain.as_deref(), up.chain_prev), prev, others).map(str::to_string)
        };
        let chain = chain.unwrap_or_else(|| {
            let in_use = |c: &str| self.upstreams.values().any(|up| up.chain.as_deref() == Some(c));
            let base = format!("pool:{account}");
            (1..)
                .map(|i| if i == 1 { base.clone() } else { format!("{base}.{i}") })
                .find(|c| !in_use(c))
                .expect("a free name")
        });
        let up = self.upstreams.get_mut(account).expect("looked up");
        up.updates.record_pool_job(now_ms, bytes as u64, n.merkle_branch.len());
        up.chain = Some(chain);
        up.chain_prev = Some(prev);
    }

    /// Every template of the account's pool retires (its ranges revoked).
    fn drop_upstream_jobs(&mut self, now_ms: u64, account: &str) {
        self.upstream_current.remove(account);
        let jobs: Vec<JobId> = self.upstream_jobs.remove(account).map(Vec::from).unwrap_or_default();
        self.retire_jobs(now_ms, &jobs);
    }

    /// A new job from the account's pool: older templates retire when it revokes them or the
    /// session no longer keeps their job; the first template of the new job is made.
    fn pool_job(&mut self, now_ms: u64, account: &str, revoke_older: bool) {
        let templates = self.upstream_jobs.remove(account).unwrap_or_default();
        let up = &self.upstreams[account];
        let kept = |j: &JobId| match self.jobs.get(j).map(|j| &j.kind) {
            Some(JobKind::Upstream { pool_job, .. }) => {
                !revoke_older && up.current.as_ref().is_some_and(|c| c.id() != pool_job) && up.keeps(pool_job)
            }
            _ => false,
        };
        let (keep, retire): (VecDeque<JobId>, VecDeque<JobId>) = templates.into_iter().partition(kept);
        self.retire_jobs(now_ms, &Vec::from(retire));
        self.upstream_jobs.insert(account.into(), keep);
        self.upstream_current.remove(account);
        self.new_template(account);
    }

    /// A new template of the account's current pool job, with the next extranonce2.
    fn new_template(&mut self, account: &str) -> Option<JobId> {
        let up = self.upstreams.get_mut(account)?;
        let job = up.current.clone()?;
        let extranonce2 = up.next_extranonce2(&job)?;
        let template = job.template(&extranonce2).ok()?;
        let id = self.fresh_id();
        let kind = JobKind::Upstream {
            pool_job: job.id().to_owned(),
            extranonce2,
            pool_target: job.share_target,
            version_mask: job.version_mask,
        };
        // Roll versions only when the pool agreed to the whole BIP 320 mask our books roll.
        let roll = job.version_mask & work::VERSION_ROLLING_MASK == work::VERSION_ROLLING_MASK;
        self.out.push(Command::Persist(StoreOp::TemplateMade {
            job: id,
            account: account.into(),
            header: template,
            target: Target::from_compact(template.bits).unwrap_or(job.share_target),
        }));
        self.jobs.insert(id, Job::new(id, account.into(), kind, template, roll));
        self.upstream_jobs.entry(account.into()).or_default().push_back(id);
        self.upstream_current.insert(account.into(), id);
        Some(id)
    }

    /// A range of the account's current pool template; the next template when it runs out.
    pub(super) fn issue_upstream(
        &mut self,
        account: &str,
        count: u64,
        id: AssignmentId,
        bits: u32,
    ) -> Option<(JobId, work::Issued)> {
        for _ in 0..2 {
            let job_id = match self.upstream_current.get(account) {
                Some(&j) => j,
                None => self.new_template(account)?,
            };
            let job = self.jobs.get_mut(&job_id)?;
            match job.issue(count, id, bits) {
                Some(range) => return Some((job_id, range)),
                None => {
                    self.upstream_current.remove(account);
                }
            }
        }
        None
    }

    /// After a share of a pool template is credited: submits it if it meets the pool's target.
    pub(super) fn submit_upstream(&mut self, now_ms: u64, account: &str, job: JobId, header: &Header, hash: BlockHash) {
        // Looked at before anything is cloned: most shares go no further.
        let Some(JobKind::Upstream { pool_target, .. }) = self.jobs.get(&job).map(|j| &j.kind) else { return };
        if !pool_target.is_met_by(&hash) {
            return;
        }
        let Some(JobKind::Upstream { pool_job, extranonce2, pool_target, version_mask }) =
            self.jobs.get(&job).map(|j| j.kind.clone())
        else {
            return;
        };
        let Some(up) = self.upstreams.get(account) else { return };
        let share = Submit {
            worker: up.settings.user.clone(),
            job_id: pool_job,
            extranonce2,
            ntime: header.time,
            nonce: header.nonce,
            version_bits: (version_mask != 0).then_some(header.version & version_mask),
        };
        self.send_upstream(now_ms, account, share, hash, pool_target);
    }

    /// Submits a credited share (`hash`, meeting `pool_target`) to the account's pool and
    /// records it; its outcome follows (`submitted`).
    pub(super) fn send_upstream(
        &mut self,
        now_ms: u64,
        account: &str,
        share: Submit,
        hash: BlockHash,
        pool_target: Target,
    ) {
        let Some(up) = self.upstreams.get_mut(account) else { return };
        let pool_job = share.job_id.clone();
        let work = Work::of(&pool_target);
        let url = up.url().0.to_owned();
        let submitted = up.submit(now_ms, share);
        let outs = up.drain();
        self.out.push(Command::Persist(StoreOp::UpstreamSubmitted {
            account: account.into(),
            hash,
            url,
            pool_job,
            work,
            at_ms: now_ms,
        }));
        match submitted {
            Ok((conn, ticket)) => {
                self.submits.insert((conn, ticket), PendingSubmit { account: account.into(), hash, work });
            }
            Err(reject) => self.out.push(Command::Persist(StoreOp::UpstreamOutcome {
                hash,
                outcome: format!("not submitted: {}", reject.reason()),
                at_ms: now_ms,
            })),
        }
        self.take_upstream_outs(now_ms, account, outs);
    }

    /// The pool's answer to a submit: recorded with the share, counted, and credited as
    /// accepted upstream.
    fn submitted(&mut self, now_ms: u64, conn: u64, ticket: u64, outcome: SubmitOutcome) {
        let Some(PendingSubmit { account, hash, work }) = self.submits.remove(&(conn, ticket)) else { return };
        let text = upstream::outcome_text(&outcome);
        self.out.push(Command::Persist(StoreOp::UpstreamOutcome { hash, outcome: text, at_ms: now_ms }));
        if let Some(up) = self.upstreams.get_mut(&account) {
            up.count_outcome(&outcome, work);
            // Its flag now, not at the pool's next event (this runs inside the outs' loop).
            let outs = up.drain();
            self.take_upstream_outs(now_ms, &account, outs);
        }
        if outcome != SubmitOutcome::Accepted {
            return;
        }
        let Some(a) = self.accounts.iter_mut().find(|a| a.name == account) else { return };
        let was_below = !a.up_to_standard();
        a.accepted_upstream = a.accepted_upstream.saturating_add(work);
        if was_below && a.up_to_standard() {
            let (counted, standard) = (a.counted(), a.standard);
            let chain = self.serving_chain(&account).to_string();
            self.standard_reached(now_ms, &account, counted, standard, chain);
        }
    }

    /// Every account with a pool: its session and figures (`pool list`).
    pub fn pool_list(&self, now_ms: u64) -> Vec<PoolStatus> {
        self.upstreams
            .iter()
            .map(|(account, up)| {
                let a = self.accounts.iter().find(|a| &a.name == account);
                let (url, index) = up.url();
                let (extranonce1, size, difficulty, mask) = up
                    .session_view()
                    .map_or((String::new(), 0, 0.0, 0), |(e1, size, d, m)| (hex::encode(e1), size as u32, d, m));
                PoolStatus {
                    account: account.clone(),
                    state: up.state(),
                    url: url.into(),
                    pool_index: index as u32,
                    user: up.settings.user.clone(),
                    extranonce_subscribe: up.settings.extranonce_subscribe_to(index),
                    extranonce1,
                    extranonce2_size: size,
                    difficulty,
                    version_mask: mask,
                    job_age_ms: up.last_job_ms.filter(|_| up.current.is_some()).map(|t| now_ms.saturating_sub(t)),
                    delivered: a.map_or(0, |a| a.delivered.0),
                    accepted_upstream: a.map_or(0, |a| a.accepted_upstream.0),
                    accepted_shares: up.counts.accepted_shares,
                    rejected: up.counts.rejected.iter().map(|(r, n)| (r.clone(), *n)).collect(),
                    unknown: up.counts.unknown,
                    flagged: up.flagged,
                    basis: a.map_or_else(StandardBasis::default, |a| a.basis),
                    last_error: with_carving_note(up.last_error.clone(), size as usize),
                    switches: up.switches,
                }
            })
            .collect()
    }
}

/// The pool's last error, with a note when its extranonce2 (`size` bytes, 0: not subscribed)
/// is too short to carve miners' slots: Stratum miners are then served from other accounts.
fn with_carving_note(last_error: Option<String>, size: usize) -> Option<String> {
    if size == 0 || Carving::new(size).slot_bytes() > 0 {
        return last_error;
    }
    let note = format!("extranonce2 of {size} bytes is too short to carve a slot for miners");
    Some(match last_error {
        Some(error) => format!("{error}; {note}"),
        None => note,
    })
}
