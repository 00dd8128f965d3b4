//! Stratum V1 miners as nodes: a miner that authorized on the coordinator's Stratum port
//! joins as a node (protocol [`STRATUM_V1`]), is placed by the balancer and the policy like a
//! QUIC node, is failed when its connection ends, and has its rate measured from its credited
//! shares. Instead of ranges it is sent *jobs*.
//!
//! - **Jobs.** The policy chooses the miner's account among those of its chain with work:
//!   - an account at a pool: the pool's job with the miner's own extranonce slot of the
//!     account's carving (extranonce1 = the pool's extranonce1 ‖ the slot prefix,
//!     extranonce2_size = the counter bytes). A new pool job, a new account (with
//!     `clean_jobs`) or a new subscription upstream sends a new job.
//!   - an account on the local chain: the chain's template for the account as a Stratum job
//!     ([`LocalChain::miner_notify`](super::work::LocalChain::miner_notify)), its 8-byte
//!     coinbase extranonce carved the same way (extranonce1 = the slot's 2 bytes,
//!     extranonce2_size = 6). A new tip sends a new job with `clean_jobs`; a share on an old
//!     tip is stale (21), and one that meets the block target extends the chain.
//! - **Slots.** A connection that has subscribed but not authorized is *offered* a slot in its
//!   first job (`ExtranonceSpace::peek_slot`: one not offered to another such connection
//!   while there is one) and holds nothing: connections that never authorize take no slot from
//!   an honest miner. At authorization the offered slot is taken if it is still free; if not,
//!   the miner's next job carries another (`mining.set_extranonce`, or a reconnect for a miner
//!   that did not subscribe to extranonce changes). A miner keeps its slots until its
//!   connection ends (its session may still take shares on any job it was sent); only then
//!   are they given back. So no two miners, and no miner and slot 0 (the QUIC nodes'
//!   templates), ever search the same coinbase.
//! - **Carving refused.** An account whose extranonce2 is too short to carve (3 bytes or
//!   fewer) or whose slots are all in use is skipped for miners; it is ledgered once per
//!   subscription and logged, and a too-short extranonce2 is named in the account's pool
//!   line (`pool list`, `status`). Its miners are served from another account that can
//!   carve: one of their chain first, else one of another chain. A miner served from another
//!   chain keeps its placement (it goes back once its own chain can carve it a slot), and the
//!   balancer counts it, pinned, on the chain it serves.
//! - **Shares.** The miner's session rebuilt and checked the share (coinbase to hash); the
//!   core credits it like a QUIC node's (the `Credit` goes before the acknowledgement), and
//!   when it meets the pool's target submits it upstream with extranonce2 = slot prefix ‖ the
//!   miner's extranonce2. Each credited miner share is stored under a fresh job id, so the
//!   store's uniqueness on (job, version, time, nonce) holds whatever extranonce2 it used.
//! - **Idle.** When every account is up to standard (there is no overflow account), a miner
//!   gets the *idle job*: its chain's local template in the coordinator's own name (the
//!   coinbase tag has no account), in a slot of that chain's carving. Its shares are verified,
//!   answered and counted in the miner's rate, and credited to no account. While some account
//!   is below standard but none has work (its pool is down), a miner keeps its last job.
//! - **Standbys.** A miner joins active. Made a standby (`node standby`), it is *held*: it is
//!   sent nothing (Stratum has no way to stop a miner, and a new job could change its
//!   extranonce, which a miner without `mining.extranonce.subscribe` can only take by
//!   reconnecting), and its shares are answered but credited to no account. Promoted
//!   (`node promote`, or taking over a failed node's capacity), it is sent its account's job
//!   with `clean_jobs` at once.

use std::collections::{BTreeMap, BTreeSet};

use hashgrid_common::message::STRATUM_V1;
use hashgrid_common::stratum::{ExtranonceSpace, MinerShare, Notify, Submit};

use super::work::{LOCAL_EXTRANONCE_SIZE, VERSION_ROLLING_MASK};
use super::*;

/// Jobs of a miner remembered for its shares (its session keeps fewer).
const KEPT_MINER_JOBS: usize = 32;

/// What the core keeps of a Stratum miner.
#[derive(Debug, Clone, Default)]
pub(super) struct Miner {
    /// The job sent last: its account, job id (the pool's, or the local height's) and
    /// extranonce1 before the slot.
    serving: Option<(String, String, Vec<u8>)>,
    /// Its slot in each extranonce space it was sent a job of, by (space, the subscription's
    /// extranonce1).
    slots: BTreeMap<(SlotSpace, Vec<u8>), Slot>,
    /// The jobs it was sent, by tag.
    jobs: BTreeMap<u64, MinerJob>,
}

/// An extranonce space miners' slots are carved from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SlotSpace {
    /// The current subscription of this account's pool.
    Pool(String),
    /// This chain's local coinbase extranonce.
    Chain(String),
}

/// A miner's slot in one extranonce space.
#[derive(Debug, Clone)]
struct Slot {
    slot: u32,
    prefix: Vec<u8>,
    counter_bytes: usize,
    /// Taken (the miner authorized), or only offered (still in its handshake).
    held: bool,
}

/// A job sent to a miner, for crediting and forwarding its shares.
#[derive(Debug, Clone)]
struct MinerJob {
    /// `None`: the idle job, credited to no account.
    account: Option<String>,
    slot_prefix: Vec<u8>,
    /// Shares meeting it go to the pool, or extend the local chain.
    pool_target: Target,
    origin: Origin,
}

/// Where a miner's job came from.
#[derive(Debug, Clone)]
enum Origin {
    Pool { pool_job: String, version_mask: u32 },
    Local { chain: String, height: u64 },
}

impl Core {
    /// A Stratum connection subscribed (not yet authorized): its `mining.subscribe` answer
    /// needs an extranonce, so it is sent a job of the account the policy would choose first
    /// (any chain), in a slot offered but not held. It is not a node until it authorizes; its
    /// end is reported as `handle_node_left` all the same.
    pub fn handle_miner_subscribed(&mut self, now_ms: u64, node: NodeId) {
        let mut miner = Box::<Miner>::default();
        self.first_job(now_ms, node, &mut miner);
        self.subscribed.insert(node, miner);
    }

    /// Subscribed connections without a job, or with the idle job, get an account's job if
    /// one has work now (from `replan`).
    pub(super) fn serve_subscribed(&mut self, now_ms: u64) {
        let waiting: Vec<NodeId> = self
            .subscribed
            .iter()
            .filter(|(_, m)| m.serving.as_ref().is_none_or(|(account, _, _)| account.is_empty()))
            .map(|(&id, _)| id)
            .collect();
        for node in waiting {
            let Some(mut miner) = self.subscribed.remove(&node) else { continue };
            self.first_job(now_ms, node, &mut miner);
            self.subscribed.insert(node, miner);
        }
    }

    /// A job of the account the policy would serve first, any chain, for a subscribed miner;
    /// the idle job when every account is up to standard (otherwise the answer to its
    /// subscribe waits for an account's work).
    fn first_job(&mut self, now_ms: u64, node: NodeId, miner: &mut Miner) {
        let mut refused = BTreeSet::new();
        while let Some(i) = accounts::choose(self.policy, &self.accounts, 1, |i| {
            let a = &self.accounts[i];
            refused.contains(&a.name) || !self.has_work(&a.name)
        }) {
            let account = self.accounts[i].name.clone();
            match self.miner_job(now_ms, node, None, miner, Some(&account)) {
                Ok(_) => return,
                Err(reason) => {
                    self.slot_refused(now_ms, &account, reason);
                    refused.insert(account);
                }
            }
        }
        if miner.serving.is_none()
            && self.all_up_to_standard()
            && let Err(reason) = self.miner_job(now_ms, node, None, miner, None)
        {
            tracing::warn!(node, %reason, "no idle job for a subscribed miner");
        }
    }

    /// A Stratum miner authorized with the node token as its password; `node` is the shell's
    /// connection id and `worker` its name. It joins active (a miner cannot be held back as a
    /// standby: it mines whatever job it was sent last). The slots it was offered are taken;
    /// one that another miner took meanwhile is dropped, with the job that carried it, and the
    /// miner is sent a job in a slot of its own.
    pub fn handle_miner_joined(&mut self, now_ms: u64, node: NodeId, worker: &str, user_agent: &str) {
        let hello = NodeHello {
            token: String::new(),
            name: worker.into(),
            software_version: user_agent.into(),
            standby: false,
            devices: Vec::new(),
            hashrate: 0.0,
        };
        let mut entry = NodeEntry::new(now_ms, &hello);
        entry.protocol = STRATUM_V1;
        let mut miner = self.subscribed.remove(&node).unwrap_or_default();
        self.take_offered_slots(&mut miner);
        if let Some((account, pool_job, e1)) = miner.serving.as_ref().filter(|(a, _, _)| !a.is_empty())
            && let Some(Slot { slot, .. }) = miner.slots.get(&(self.slot_space_of(account), e1.clone()))
        {
            let record = LedgerRecord::MinerJob {
                node: worker.into(),
                account: account.clone(),
                pool_job: pool_job.clone(),
                slot: *slot,
                switched: true,
            };
            self.ledger(now_ms, record);
        }
        entry.miner = Some(miner);
        self.gone.remove(worker);
        entry.chain = self.node_chains.get(worker).filter(|c| self.chains.contains_key(*c)).cloned();
        self.nodes.insert(node, entry);
        self.replan(now_ms, "miner joined");
    }

    /// Shares the miner's session rejected itself (stale, duplicate, low difficulty, …), sent
    /// by the shell as counts at most once a second: counted as a node's rejections are, so
    /// `node list`, the metrics and the under-delivery probe see a miner's bad work too. The
    /// session has already answered each of them.
    pub fn handle_miner_rejected(&mut self, node: NodeId, counts: &[(RejectReason, u64)]) {
        if self.nodes.get(&node).is_none_or(|n| n.miner.is_none()) {
            return;
        }
        for &(reason, n) in counts {
            self.count_rejected(node, reason, n);
        }
    }

    /// A share the miner's session verified: credited, acknowledged after its credit, and sent
    /// upstream when it meets the pool's target (or extends the local chain when it meets the
    /// block target). A share of the idle job, or of a miner held back (standby, draining), is
    /// acknowledged and counted in the miner's rate, and credited to no account.
    pub fn handle_miner_share(&mut self, now_ms: u64, node: NodeId, ticket: u64, share: &MinerShare) {
        let job = self.nodes.get(&node).and_then(|n| n.miner.as_ref()).and_then(|m| m.jobs.get(&share.tag)).cloned();
        let stale = match &job {
            Some(MinerJob { origin: Origin::Local { chain, height }, .. }) => {
                self.chains.get(chain).is_none_or(|c| c.local.height + 1 != *height)
            }
            Some(_) => false,
            None => true,
        };
        let Some(job) = job.filter(|_| !stale) else {
            *self.counters.shares_rejected.entry(RejectReason::UnknownJob).or_default() += 1;
            let result = Err(RpcError::new(21, "job not found or stale"));
            self.out.push(Command::Miner { node, order: MinerOrder::ShareRecorded { ticket, result } });
            return;
        };
        let accepted = &share.accepted;
        let work = Work::of(&accepted.share_target);
        let window = self.config.rate_window_ms;
        let Some(n) = self.nodes.get_mut(&node) else { return };
        n.last_seen_ms = now_ms;
        n.accepted += 1;
        n.probe.accepted(now_ms);
        n.credited.push_back((now_ms, work));
        while n.credited.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > window) {
            n.credited.pop_front();
        }
        n.announced = n.delivered_rate(now_ms, window);
        let node_name = n.name.clone();
        // Idle work, or a miner held as a standby: answered, credited to no account.
        let Some(account) = job.account.clone().filter(|_| n.takes_work()) else {
            self.out.push(Command::Miner { node, order: MinerOrder::ShareRecorded { ticket, result: Ok(()) } });
            return;
        };
        self.counters.shares_accepted += 1;
        let job_id = self.fresh_id();
        self.out.push(Command::Persist(StoreOp::Credit {
            account: account.clone(),
            work,
            node: node_name,
            job: job_id,
            header: accepted.header,
            share_target: accepted.share_target,
            at_ms: now_ms,
        }));
        let reached = self.credit_account(&account, work);
        let meets_pool = job.pool_target.is_met_by(&accepted.hash);
        match &job.origin {
            Origin::Pool { pool_job, version_mask } if meets_pool => {
                if let Some(worker) = self.upstreams.get(&account).map(|up| up.settings.user.clone()) {
                    let mut extranonce2 = job.slot_prefix.clone();
                    extranonce2.extend_from_slice(&share.submit.extranonce2);
                    let submit = Submit {
                        worker,
                        job_id: pool_job.clone(),
                        extranonce2,
                        ntime: share.submit.ntime,
                        nonce: share.submit.nonce,
                        version_bits: (*version_mask != 0).then_some(accepted.header.version & version_mask),
                    };
                    self.send_upstream(now_ms, &account, submit, accepted.hash, job.pool_target);
                }
            }
            _ => {}
        }
        self.out.push(Command::Miner { node, order: MinerOrder::ShareRecorded { ticket, result: Ok(()) } });
        if matches!(job.origin, Origin::Local { .. }) && meets_pool {
            self.block_found(now_ms, &account, accepted.hash, reached.is_none());
        }
        if let Some((counted, standard, chain)) = reached {
            self.standard_reached(now_ms, &account, counted, standard, chain);
        }
    }

    /// A connection that subscribed but never authorized ended (it held no slot).
    pub(super) fn drop_subscribed(&mut self, node: NodeId) {
        self.subscribed.remove(&node);
    }

    /// Ledgers (once per account and reason) that miners cannot be served from `account`.
    fn slot_refused(&mut self, now_ms: u64, account: &str, reason: String) {
        if self.carving_refused.insert((account.to_string(), reason.clone())) {
            tracing::warn!(%account, %reason, "miners cannot be served from this account's pool");
            self.ledger(now_ms, LedgerRecord::MinerSlotRefused { account: account.into(), reason });
        }
    }

    /// Gives back the slots of a miner whose connection ended (no job of it is live).
    pub(super) fn release_miner_slots(&mut self, miner: &Miner) {
        for ((space, extranonce1), slot) in miner.slots.iter().filter(|(_, s)| s.held) {
            match space {
                SlotSpace::Pool(account) => {
                    if let Some(up) = self.upstreams.get_mut(account) {
                        up.release_slot(extranonce1, slot.slot);
                    }
                }
                SlotSpace::Chain(chain) => {
                    if let Some(c) = self.chains.get_mut(chain) {
                        c.local.slots.release_slot(slot.slot);
                    }
                }
            }
        }
    }

    /// At authorization: takes the slots the miner was offered; one gone meanwhile is dropped
    /// with every job (so the next job carries a slot of the miner's own).
    fn take_offered_slots(&mut self, miner: &mut Miner) {
        let offered: Vec<(SlotSpace, Vec<u8>)> =
            miner.slots.iter().filter(|(_, s)| !s.held).map(|(key, _)| key.clone()).collect();
        for key in offered {
            let slot = miner.slots[&key].slot;
            if self.slot_space(&key.0, &key.1).is_some_and(|space| space.take_slot(slot)) {
                miner.slots.get_mut(&key).expect("listed").held = true;
            } else {
                miner.slots.remove(&key);
                miner.serving = None;
                miner.jobs.clear();
            }
        }
    }

    /// The extranonce space miners' slots come from, if it is still current.
    fn slot_space(&mut self, space: &SlotSpace, extranonce1: &[u8]) -> Option<&mut ExtranonceSpace> {
        match space {
            SlotSpace::Pool(account) => {
                let up = self.upstreams.get_mut(account)?;
                let job = up.current.clone().filter(|j| j.extranonce1 == extranonce1)?;
                Some(up.slot_space(&job))
            }
            SlotSpace::Chain(chain) => Some(&mut self.chains.get_mut(chain)?.local.slots),
        }
    }

    /// Where `account`'s miners' slots are carved: its pool's subscription, or its chain's
    /// coinbase.
    fn slot_space_of(&self, account: &str) -> SlotSpace {
        if self.upstreams.contains_key(account) {
            SlotSpace::Pool(account.into())
        } else {
            SlotSpace::Chain(self.account_chain(account).into())
        }
    }

    /// The miner's work: the policy's account of its chain; a new job when the account, its
    /// job or its subscription changed. A miner held back (standby, draining) is sent nothing
    /// (its shares are not credited); when every account is up to standard it gets the idle
    /// job; otherwise, while no account of its chain has work, it keeps its last job.
    pub(super) fn fill_miner(&mut self, now_ms: u64, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if !n.takes_work() {
            // Held: once it takes work again, its account's job goes out afresh (clean).
            if let Some(miner) = n.miner.as_mut() {
                miner.serving = None;
            }
            return;
        }
        let chain = n.chain.clone();
        let count = self.range_count(node, now_ms, 0);
        let mut refused = BTreeSet::new();
        // The accounts of its chain first; when one of them cannot carve a slot and none can
        // serve it, the policy's choice among the other chains' accounts.
        for own in [true, false] {
            if !own && refused.is_empty() {
                break;
            }
            while let Some(chain) = chain.as_ref()
                && let Some(i) = accounts::choose(self.policy, &self.accounts, count, |i| {
                    let a = &self.accounts[i];
                    (self.serving_chain(&a.name) == chain.as_str()) != own
                        || refused.contains(&a.name)
                        || !self.has_work(&a.name)
                })
            {
                let account = self.accounts[i].name.clone();
                match self.with_miner(now_ms, node, Some(&account)) {
                    Ok(sent) => {
                        if sent {
                            self.accounts[i].issued += count as u128;
                        }
                        return;
                    }
                    Err(reason) => {
                        self.slot_refused(now_ms, &account, reason);
                        refused.insert(account);
                    }
                }
            }
        }
        if self.all_up_to_standard()
            && let Err(reason) = self.with_miner(now_ms, node, None)
        {
            tracing::warn!(node, %reason, "no idle job for a miner");
        }
    }

    fn all_up_to_standard(&self) -> bool {
        self.accounts.iter().all(|a| a.up_to_standard())
    }

    /// [`miner_job`](Self::miner_job) for the joined miner `node`.
    fn with_miner(&mut self, now_ms: u64, node: NodeId, account: Option<&str>) -> Result<bool, String> {
        let Some(n) = self.nodes.get_mut(&node) else { return Ok(false) };
        let name = n.name.clone();
        let mut miner = n.miner.take().unwrap_or_default();
        let sent = self.miner_job(now_ms, node, Some(&name), &mut miner, account);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.miner = Some(miner);
        }
        sent
    }

    /// What `account` (`None`: the idle job, on the miner's chain) has for miners now:
    /// (slot space, job id, extranonce1 before the slot); `None` when it has no work.
    fn offer_key(&self, node: NodeId, account: Option<&str>) -> Option<(SlotSpace, String, Vec<u8>)> {
        let local = |chain: &str| {
            let height = self.chains.get(chain)?.local.height + 1;
            Some((SlotSpace::Chain(chain.into()), format!("local-{height}"), Vec::new()))
        };
        match account {
            Some(a) => match self.upstreams.get(a) {
                Some(up) => {
                    up.current.as_ref().map(|j| (SlotSpace::Pool(a.into()), j.id().into(), j.extranonce1.clone()))
                }
                None => local(self.account_chain(a)),
            },
            // The miner's own chain when it is a local one; a miner placed on a pool chain
            // idles on the default local chain (or, without one, the first).
            None => {
                let own =
                    self.nodes.get(&node).and_then(|n| n.chain.as_deref()).filter(|c| self.chains.contains_key(*c));
                let default = self.chains.contains_key(accounts::DEFAULT_CHAIN).then_some(accounts::DEFAULT_CHAIN);
                local(own.or(default).or_else(|| self.chains.keys().next().map(String::as_str))?)
            }
        }
    }

    /// The job of `key` ([`offer_key`](Self::offer_key)) for `account`: its notify,
    /// extranonce2 size before the slot, version mask, pool difficulty and target, origin.
    fn offer(
        &self,
        now_ms: u64,
        key: &SlotSpace,
        account: Option<&str>,
    ) -> Option<(Notify, usize, u32, f64, Target, Origin)> {
        match key {
            SlotSpace::Pool(a) => {
                let job = self.upstreams.get(a)?.current.clone()?;
                let origin = Origin::Pool { pool_job: job.id().into(), version_mask: job.version_mask };
                Some((job.notify, job.extranonce2_size, job.version_mask, job.difficulty, job.share_target, origin))
            }
            SlotSpace::Chain(chain) => {
                let local = &self.chains.get(chain)?.local;
                let target = local.target();
                let notify = local.miner_notify(account.unwrap_or(""), (now_ms / 1000) as u32);
                let origin = Origin::Local { chain: chain.clone(), height: local.height + 1 };
                Some((notify, LOCAL_EXTRANONCE_SIZE, VERSION_ROLLING_MASK, target.difficulty(), target, origin))
            }
        }
    }

    /// Sends the miner `account`'s current job (`None`: the idle job) if it is not what the
    /// miner has; whether one was sent, or why no slot can be carved for the miner.
    /// `name`: the miner's, once it is a node (it then takes a slot, and its jobs are
    /// ledgered); before that it is only offered one.
    fn miner_job(
        &mut self,
        now_ms: u64,
        node: NodeId,
        name: Option<&str>,
        miner: &mut Miner,
        account: Option<&str>,
    ) -> Result<bool, String> {
        let Some((space, job_id, pool_extranonce1)) = self.offer_key(node, account) else { return Ok(false) };
        let serving = (account.unwrap_or_default().to_string(), job_id.clone(), pool_extranonce1.clone());
        if miner.serving.as_ref() == Some(&serving) {
            return Ok(false);
        }
        let Some((mut notify, extranonce2_size, version_mask, difficulty, pool_target, origin)) =
            self.offer(now_ms, &space, account)
        else {
            return Ok(false);
        };
        let key = (space, pool_extranonce1);
        let slot = match miner.slots.get(&key) {
            Some(slot) => slot.clone(),
            None => {
                // Slots offered to other connections still in their handshake.
                let offered: BTreeSet<u32> = match name {
                    Some(_) => BTreeSet::new(),
                    None => self.subscribed.values().filter_map(|m| m.slots.get(&key)).map(|s| s.slot).collect(),
                };
                let space = self.slot_space(&key.0, &key.1).ok_or("the job's subscription is gone")?;
                let carving = space.carving();
                let (slot, held) = match name {
                    Some(_) => (space.allocate_slot(), true),
                    None => (space.peek_slot(|s| offered.contains(&s)), false),
                };
                let slot = slot.map_err(|e| e.to_string())?;
                let slot =
                    Slot { slot, prefix: carving.slot_prefix(slot), counter_bytes: carving.counter_bytes(), held };
                miner.slots.insert(key.clone(), slot.clone());
                slot
            }
        };
        debug_assert_eq!(slot.prefix.len() + slot.counter_bytes, extranonce2_size);
        let switched = miner.serving.as_ref().is_none_or(|(a, _, _)| *a != serving.0);
        miner.serving = Some(serving);
        let tag = self.next_id;
        self.next_id += 1;
        notify.clean_jobs |= switched;
        let mut extranonce1 = key.1.clone();
        extranonce1.extend_from_slice(&slot.prefix);
        let job =
            MinerJob { account: account.map(String::from), slot_prefix: slot.prefix.clone(), pool_target, origin };
        miner.jobs.insert(tag, job);
        while miner.jobs.len() > KEPT_MINER_JOBS {
            miner.jobs.pop_first();
        }
        if let (Some(name), Some(account)) = (name, account) {
            let record = LedgerRecord::MinerJob {
                node: name.into(),
                account: account.into(),
                pool_job: job_id,
                slot: slot.slot,
                switched,
            };
            self.ledger(now_ms, record);
        }
        let server_job = ServerJob {
            tag,
            notify,
            extranonce1,
            extranonce2_size: slot.counter_bytes,
            version_mask,
            pool_difficulty: Some(difficulty),
            share_difficulty: None,
        };
        self.out.push(Command::Miner { node, order: MinerOrder::Job(Box::new(server_job)) });
        Ok(true)
    }

    /// The chain of the account a miner's last job serves (none for the idle job, or a node
    /// that is not a miner).
    pub(super) fn miner_serving_chain(&self, node: NodeId) -> Option<String> {
        self.miner_serving(node).map(|account| self.serving_chain(&account).to_string())
    }

    /// The account a miner's last job serves (none for the idle job).
    pub(super) fn miner_serving(&self, node: NodeId) -> Option<String> {
        let miner = self.nodes.get(&node)?.miner.as_ref()?;
        miner.serving.as_ref().map(|(a, _, _)| a.clone()).filter(|a| !a.is_empty())
    }
}
