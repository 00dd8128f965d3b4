//! Stratum V1 miners as nodes: a miner that authorized on the coordinator's Stratum port
//! joins as a node (protocol [`STRATUM_V1`]), is placed by the balancer and the policy like a
//! QUIC node, is failed when its connection ends, and has its rate measured from its credited
//! shares. Instead of ranges it is sent *jobs*.
//!
//! - **Jobs.** The policy chooses the miner's account among those of its chain whose pool has
//!   a job; the miner gets that pool job with its own extranonce slot of the account's
//!   carving (`ExtranonceSpace::allocate_slot`): extranonce1 = the pool's extranonce1 ‖ the
//!   slot prefix, extranonce2_size = the counter bytes. A new pool job, a new account (with
//!   `clean_jobs`) or a new subscription upstream sends a new job.
//! - **Slots.** A miner keeps the slot it got at an account's subscription until its
//!   connection ends (its session may still take shares on any job it was sent); only then
//!   are its slots given back. So no two miners, and no miner and slot 0 (the QUIC nodes'
//!   templates), ever search the same coinbase.
//! - **Carving refused.** An account whose extranonce2 is too short to carve (3 bytes or
//!   fewer) or whose slots are all in use is skipped for miners; it is ledgered once per
//!   subscription and logged.
//! - **Shares.** The miner's session rebuilt and checked the share (coinbase to hash); the
//!   core credits it like a QUIC node's (the `Credit` goes before the acknowledgement), and
//!   when it meets the pool's target submits it upstream with extranonce2 = slot prefix ‖ the
//!   miner's extranonce2. Each credited miner share is stored under a fresh job id, so the
//!   store's uniqueness on (job, version, time, nonce) holds whatever extranonce2 it used.

use std::collections::{BTreeMap, BTreeSet};

use hashgrid_common::message::STRATUM_V1;
use hashgrid_common::stratum::{MinerShare, Submit};

use super::*;

/// Jobs of a miner remembered for its shares (its session keeps fewer).
const KEPT_MINER_JOBS: usize = 32;

/// What the core keeps of a Stratum miner.
#[derive(Debug, Clone, Default)]
pub(super) struct Miner {
    /// The job sent last: its account, pool job id and the pool subscription's extranonce1.
    serving: Option<(String, String, Vec<u8>)>,
    /// The slot it holds at each account: (the subscription's extranonce1, slot, prefix,
    /// counter bytes).
    slots: BTreeMap<String, (Vec<u8>, u32, Vec<u8>, usize)>,
    /// The jobs it was sent, by tag.
    jobs: BTreeMap<u64, MinerJob>,
}

/// A job sent to a miner, for crediting and forwarding its shares.
#[derive(Debug, Clone)]
struct MinerJob {
    account: String,
    pool_job: String,
    slot_prefix: Vec<u8>,
    pool_target: Target,
    version_mask: u32,
}

impl Core {
    /// A Stratum connection subscribed (not yet authorized): its `mining.subscribe` answer
    /// needs an extranonce, so it is sent a job of the account the policy would choose first
    /// (any chain), in a slot of its own. It is not a node until it authorizes; its end is
    /// reported as `handle_node_left` all the same.
    pub fn handle_miner_subscribed(&mut self, now_ms: u64, node: NodeId) {
        let mut miner = Box::<Miner>::default();
        self.first_job(now_ms, node, &mut miner);
        self.subscribed.insert(node, miner);
    }

    /// Subscribed connections still without a job get one if an account has work now (from
    /// `replan`).
    pub(super) fn serve_subscribed(&mut self, now_ms: u64) {
        let waiting: Vec<NodeId> =
            self.subscribed.iter().filter(|(_, m)| m.serving.is_none()).map(|(&id, _)| id).collect();
        for node in waiting {
            let Some(mut miner) = self.subscribed.remove(&node) else { continue };
            self.first_job(now_ms, node, &mut miner);
            self.subscribed.insert(node, miner);
        }
    }

    /// A job of the account the policy would serve first, any chain, for a subscribed miner.
    fn first_job(&mut self, now_ms: u64, node: NodeId, miner: &mut Miner) {
        let mut refused = BTreeSet::new();
        while let Some(i) = accounts::choose(self.policy, &self.accounts, 1, |i| {
            let a = &self.accounts[i];
            refused.contains(&a.name) || !self.upstreams.contains_key(&a.name) || !self.has_work(&a.name)
        }) {
            let account = self.accounts[i].name.clone();
            match self.miner_job(now_ms, node, None, miner, &account) {
                Ok(_) => break,
                Err(reason) => {
                    self.slot_refused(now_ms, &account, reason);
                    refused.insert(account);
                }
            }
        }
    }

    /// A Stratum miner authorized with the node token as its password; `node` is the shell's
    /// connection id and `worker` its name. It joins active (a miner cannot be held back as a
    /// standby: it mines whatever job it was sent last).
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
        let miner = self.subscribed.remove(&node).unwrap_or_default();
        if let Some((account, pool_job, _)) = &miner.serving
            && let Some((_, slot, _, _)) = miner.slots.get(account)
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

    /// A share the miner's session verified: credited, acknowledged after its credit, and sent
    /// upstream when it meets the pool's target.
    pub fn handle_miner_share(&mut self, now_ms: u64, node: NodeId, ticket: u64, share: &MinerShare) {
        let job = self.nodes.get(&node).and_then(|n| n.miner.as_ref()).and_then(|m| m.jobs.get(&share.tag)).cloned();
        let Some(job) = job else {
            *self.counters.shares_rejected.entry(RejectReason::UnknownJob).or_default() += 1;
            let result = Err(RpcError::new(21, "job not found"));
            self.out.push(Command::Miner { node, order: MinerOrder::ShareRecorded { ticket, result } });
            return;
        };
        let accepted = &share.accepted;
        let work = Work::of(&accepted.share_target);
        let job_id = self.fresh_id();
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
        self.counters.shares_accepted += 1;
        self.out.push(Command::Persist(StoreOp::Credit {
            account: job.account.clone(),
            work,
            node: node_name,
            job: job_id,
            header: accepted.header,
            hash: accepted.hash,
            share_target: accepted.share_target,
            at_ms: now_ms,
        }));
        let reached = self.credit_account(&job.account, work);
        if job.pool_target.is_met_by(&accepted.hash)
            && let Some(worker) = self.upstreams.get(&job.account).map(|up| up.settings.user.clone())
        {
            let mut extranonce2 = job.slot_prefix.clone();
            extranonce2.extend_from_slice(&share.submit.extranonce2);
            let submit = Submit {
                worker,
                job_id: job.pool_job.clone(),
                extranonce2,
                ntime: share.submit.ntime,
                nonce: share.submit.nonce,
                version_bits: (job.version_mask != 0).then_some(accepted.header.version & job.version_mask),
            };
            self.send_upstream(now_ms, &job.account, submit, accepted.hash, job.pool_target);
        }
        self.out.push(Command::Miner { node, order: MinerOrder::ShareRecorded { ticket, result: Ok(()) } });
        if let Some((counted, standard, chain)) = reached {
            self.standard_reached(now_ms, &job.account, counted, standard, chain);
        }
    }

    /// A connection that subscribed but never authorized ended: its slots are given back.
    pub(super) fn drop_subscribed(&mut self, node: NodeId) {
        if let Some(miner) = self.subscribed.remove(&node) {
            self.release_miner_slots(&miner);
        }
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
        for (account, (extranonce1, slot, _, _)) in &miner.slots {
            if let Some(up) = self.upstreams.get_mut(account) {
                up.release_slot(extranonce1, *slot);
            }
        }
    }

    /// The miner's work: the policy's account of its chain; a new job when the account, its
    /// pool job or its subscription changed.
    pub(super) fn fill_miner(&mut self, now_ms: u64, node: NodeId) {
        let Some(n) = self.nodes.get(&node) else { return };
        let Some(chain) = n.chain.clone().filter(|_| n.takes_work()) else { return };
        let count = self.range_count(node, now_ms, 0);
        let mut refused = BTreeSet::new();
        loop {
            let Some(i) = accounts::choose(self.policy, &self.accounts, count, |i| {
                let a = &self.accounts[i];
                a.chain != chain
                    || refused.contains(&a.name)
                    || !self.has_work(&a.name)
                    || !self.upstreams.contains_key(&a.name)
            }) else {
                return;
            };
            let account = self.accounts[i].name.clone();
            let Some(n) = self.nodes.get_mut(&node) else { return };
            let name = n.name.clone();
            let mut miner = n.miner.take().unwrap_or_default();
            let sent = self.miner_job(now_ms, node, Some(&name), &mut miner, &account);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.miner = Some(miner);
            }
            match sent {
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

    /// Sends the miner `account`'s current pool job if it is not what the miner has; whether
    /// one was sent, or why the account's extranonce cannot give the miner a slot.
    /// `name`: the miner's, once it is a node (its jobs are then ledgered).
    fn miner_job(
        &mut self,
        now_ms: u64,
        node: NodeId,
        name: Option<&str>,
        miner: &mut Miner,
        account: &str,
    ) -> Result<bool, String> {
        let Some(up) = self.upstreams.get_mut(account) else { return Ok(false) };
        let Some(job) = up.current.clone() else { return Ok(false) };
        let serving = (account.to_string(), job.id().to_string(), job.extranonce1.clone());
        if miner.serving.as_ref() == Some(&serving) {
            return Ok(false);
        }
        let (slot, prefix, counter_bytes) = match miner.slots.get(account).filter(|s| s.0 == job.extranonce1) {
            Some((_, slot, prefix, bytes)) => (*slot, prefix.clone(), *bytes),
            None => {
                let (slot, carving) = up.allocate_slot(&job).map_err(|e| e.to_string())?;
                let prefix = carving.slot_prefix(slot);
                let bytes = carving.counter_bytes();
                miner.slots.insert(account.into(), (job.extranonce1.clone(), slot, prefix.clone(), bytes));
                (slot, prefix, bytes)
            }
        };
        let switched = miner.serving.as_ref().is_none_or(|(a, _, _)| a != account);
        miner.serving = Some(serving);
        let tag = self.next_id;
        self.next_id += 1;
        let mut notify = job.notify.clone();
        notify.clean_jobs |= switched;
        let mut extranonce1 = job.extranonce1.clone();
        extranonce1.extend_from_slice(&prefix);
        miner.jobs.insert(
            tag,
            MinerJob {
                account: account.into(),
                pool_job: job.id().into(),
                slot_prefix: prefix,
                pool_target: job.share_target,
                version_mask: job.version_mask,
            },
        );
        while miner.jobs.len() > KEPT_MINER_JOBS {
            miner.jobs.pop_first();
        }
        if let Some(name) = name {
            let record = LedgerRecord::MinerJob {
                node: name.into(),
                account: account.into(),
                pool_job: job.id().into(),
                slot,
                switched,
            };
            self.ledger(now_ms, record);
        }
        let server_job = ServerJob {
            tag,
            notify,
            extranonce1,
            extranonce2_size: counter_bytes,
            version_mask: job.version_mask,
            pool_difficulty: Some(job.difficulty),
            share_difficulty: None,
        };
        self.out.push(Command::Miner { node, order: MinerOrder::Job(Box::new(server_job)) });
        Ok(true)
    }

    /// The account a miner's last job serves.
    pub(super) fn miner_serving(&self, node: NodeId) -> Option<String> {
        let miner = self.nodes.get(&node)?.miner.as_ref()?;
        miner.serving.as_ref().map(|(a, _, _)| a.clone())
    }
}
