//! The operator API: turns one `AdminRequest` into an `AdminResponse`.
//!
//! Requests are split in one place, `AdminRequest::needs_core`: those that change state or
//! need the farm's live state go to `admin` on the core thread; every other one (the ledger,
//! its verification, receipts, job history) goes to `read`, on a blocking thread with a read-only
//! connection from `Readers`, so a long read never holds up share intake. `admin` refuses the
//! store-only requests, so one that is routed wrongly gets an error, not a stall.
//!
//! List replies are paged (`Pager`): a page stops at its `limit` or at `PAGE_BYTES` of encoded
//! items, whichever comes first, and names the cursor the next page starts after.

use std::path::PathBuf;
use std::sync::Mutex;

use hashgrid_common::codec;
use hashgrid_common::message::{AdminRequest, AdminResponse, PageRequest, RangeRun};
use serde::Serialize;

use super::store::StoreError;
use super::store::backend::{Records, StoreLocation};
use crate::core::Core;

/// Most items one page holds.
pub const PAGE_ITEMS_MAX: u32 = 10_000;
/// The encoded items of one page stay within this many bytes (the first item excepted), which
/// leaves half of the frame cap for the rest of the reply.
pub const PAGE_BYTES: usize = codec::MAX_FRAME / 2;

/// Answers a request that changes state or needs the core's live state, on the core thread.
pub(crate) fn admin(core: &mut Core, now: u64, req: AdminRequest) -> AdminResponse {
    let done = |r: Result<(), crate::core::AdminError>| match r {
        Ok(()) => AdminResponse::Ok,
        Err(e) => AdminResponse::Error(e.to_string()),
    };
    match req {
        AdminRequest::AccountAdd { name, standard, period_secs, order, chain } => done(core.add_account(
            now,
            &name,
            standard,
            period_secs.map(|s| s.saturating_mul(1000)),
            order,
            chain.as_deref(),
        )),
        AdminRequest::AccountList => {
            let mut list: Vec<_> = core.accounts().iter().map(|a| a.status()).collect();
            list.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
            AdminResponse::Accounts(list)
        }
        AdminRequest::Status => AdminResponse::Status(core.status(now)),
        AdminRequest::JobSubmit { account, header, target } => match core.submit_job(now, &account, header, target) {
            Ok(job) => AdminResponse::JobSubmitted { job },
            Err(e) => AdminResponse::Error(e.to_string()),
        },
        AdminRequest::PolicySet(policy) => {
            core.set_policy(now, policy);
            AdminResponse::Ok
        }
        AdminRequest::NodeList { page } => {
            let (nodes, next) = Pager::of_list(page, core.node_list(now));
            AdminResponse::Nodes { nodes, next }
        }
        AdminRequest::NodeDrain { name } => done(core.drain_node(now, &name)),
        AdminRequest::NodePromote { name } => done(core.promote_node(now, &name)),
        AdminRequest::NodeStandby { name } => done(core.standby_node(now, &name)),
        AdminRequest::ChainAdd(params) => done(core.add_chain(now, params)),
        AdminRequest::ChainList => AdminResponse::Chains(core.chain_list(now)),
        AdminRequest::Assignments => AdminResponse::Assignments(core.assignment_list(now)),
        AdminRequest::RolloutSet(rollout) => done(core.set_rollout(now, rollout)),
        AdminRequest::AccountSetPool { name, pool, basis } => done(core.set_pool(now, &name, pool, basis)),
        AdminRequest::PoolList => AdminResponse::Pools(core.pool_list(now)),
        AdminRequest::LedgerShow { .. }
        | AdminRequest::LedgerVerify
        | AdminRequest::AccountReceipt { .. }
        | AdminRequest::JobShow { .. } => {
            AdminResponse::Error("internal: a read-only request reached the core thread".into())
        }
    }
}

/// Answers a request that only reads what is committed, from a read-only connection.
pub(crate) fn read(reader: &mut dyn Records, req: AdminRequest) -> AdminResponse {
    let store_error = |e: StoreError| AdminResponse::Error(format!("store: {e}"));
    match req {
        AdminRequest::LedgerShow { account, page } => {
            let mut pager = Pager::new(page);
            match reader.ledger(page.after.saturating_add(1), account.as_deref(), pager.rows_wanted()) {
                Ok(rows) => {
                    for e in rows {
                        if !pager.offer(e.seq, e) {
                            break;
                        }
                    }
                    let (entries, next) = pager.finish();
                    AdminResponse::Ledger { entries, next }
                }
                Err(e) => store_error(e),
            }
        }
        AdminRequest::JobShow { job, page } => match reader.job(job) {
            Ok(Some(mut status)) => {
                let next;
                // Keyed by where each run starts, so a run re-painted between two pages (a range
                // finished, abandoned or issued again) moves no other run across the cut.
                let mut runs = std::mem::take(&mut status.runs);
                runs.sort_by_key(run_key);
                (status.runs, next) = Pager::of_keyed(page, runs, run_key);
                AdminResponse::Job { status, next }
            }
            Ok(None) => AdminResponse::Error(format!("no job {job}")),
            Err(e) => store_error(e),
        },
        AdminRequest::LedgerVerify => match reader.verify_ledger() {
            Ok(verdict) => AdminResponse::LedgerVerified(verdict),
            Err(e) => store_error(e),
        },
        AdminRequest::AccountReceipt { name, page, cut } => match reader.receipt(&name, cut, page) {
            Ok(Some(receipt)) => AdminResponse::Receipt(receipt),
            Ok(None) => AdminResponse::Error(format!("no account named {name:?}")),
            Err(e) => store_error(e),
        },
        other => AdminResponse::Error(format!("internal: {other:?} needs the core")),
    }
}

/// Read-only connections for `read`, one per concurrent request, kept for reuse.
#[derive(Debug)]
pub(crate) struct Readers {
    store: StoreLocation,
    data_dir: PathBuf,
    idle: Mutex<Vec<Box<dyn Records>>>,
}

impl Readers {
    /// Opens the first connection now, so a missing database is an error at start-up.
    pub fn open(store: StoreLocation, data_dir: PathBuf) -> Result<Readers, StoreError> {
        let first = store.reader(&data_dir)?;
        Ok(Readers { store, data_dir, idle: Mutex::new(vec![first]) })
    }

    /// Answers a store-only request on the calling (blocking) thread.
    pub fn answer(&self, req: AdminRequest) -> AdminResponse {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut reader = match idle.map_or_else(|| self.store.reader(&self.data_dir), Ok) {
            Ok(r) => r,
            Err(e) => return AdminResponse::Error(format!("store: {e}")),
        };
        let response = read(reader.as_mut(), req);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(reader);
        response
    }
}

/// One page of a list reply, filled in cursor order until its limit or `PAGE_BYTES`.
#[derive(Debug)]
pub(crate) struct Pager<T> {
    items: Vec<T>,
    limit: usize,
    bytes: usize,
    last: u64,
    next: Option<u64>,
}

impl<T: Serialize> Pager<T> {
    pub fn new(page: PageRequest) -> Self {
        let limit = if page.limit == 0 { PAGE_ITEMS_MAX } else { page.limit.min(PAGE_ITEMS_MAX) };
        Pager { items: Vec::new(), limit: limit as usize, bytes: 0, last: page.after, next: None }
    }

    /// How many rows to read for the page: one more than it can hold, so that a next page is
    /// known to follow when that one comes back.
    pub fn rows_wanted(&self) -> u32 {
        self.limit as u32 + 1
    }

    /// Offers the next item, whose cursor is `cursor`. `false` when the page is full: the item
    /// is not taken and the page says where the next one starts.
    pub fn offer(&mut self, cursor: u64, item: T) -> bool {
        let size = codec::encode(&item).map_or(usize::MAX, |frame| frame.len());
        if self.items.len() >= self.limit || (!self.items.is_empty() && self.bytes.saturating_add(size) > PAGE_BYTES) {
            self.next = Some(self.last);
            return false;
        }
        self.bytes = self.bytes.saturating_add(size);
        self.items.push(item);
        self.last = cursor;
        true
    }

    /// The page's items and the cursor of the next page (`None`: this is the last).
    pub fn finish(self) -> (Vec<T>, Option<u64>) {
        (self.items, self.next)
    }

    /// A page of a list held whole in memory and sorted by `key` (each item's cursor; keys
    /// start at 1): the items whose key is above the page's cursor.
    pub fn of_keyed(page: PageRequest, list: Vec<T>, key: impl Fn(&T) -> u64) -> (Vec<T>, Option<u64>) {
        let mut pager = Pager::new(page);
        for item in list.into_iter().filter(|item| key(item) > page.after) {
            if !pager.offer(key(&item), item) {
                break;
            }
        }
        pager.finish()
    }

    /// A page of a list held whole in memory, whose cursor is an item's 1-based position.
    pub fn of_list(page: PageRequest, list: Vec<T>) -> (Vec<T>, Option<u64>) {
        let mut pager = Pager::new(page);
        let skip = usize::try_from(page.after).unwrap_or(usize::MAX);
        for (position, item) in (1..).zip(list).skip(skip) {
            if !pager.offer(position, item) {
                break;
            }
        }
        pager.finish()
    }
}

/// A job run's cursor: its version and first nonce, plus one (cursors start at 1).
fn run_key(run: &RangeRun) -> u64 {
    (u64::from(run.version) << 32 | u64::from(run.start)).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;
    use hashgrid_common::message::{ChainParams, Policy, ReceiptCut};

    /// One request of every kind.
    fn every_request() -> Vec<AdminRequest> {
        let page = PageRequest::FIRST;
        let header = hashgrid_common::Header::from_bytes(&[0; 80]);
        let chain = ChainParams { name: "alt".into(), tx_per_template: 1, bit_rate: 1, difficulty: 1.0, weight: 1.0 };
        vec![
            AdminRequest::AccountAdd { name: "a".into(), standard: 1, period_secs: None, order: None, chain: None },
            AdminRequest::AccountList,
            AdminRequest::Status,
            AdminRequest::JobSubmit { account: "a".into(), header, target: hashgrid_common::Target::MAX },
            AdminRequest::JobShow { job: 1, page },
            AdminRequest::PolicySet(Policy::Sequential),
            AdminRequest::NodeList { page },
            AdminRequest::NodeDrain { name: "n".into() },
            AdminRequest::NodePromote { name: "n".into() },
            AdminRequest::NodeStandby { name: "n".into() },
            AdminRequest::ChainAdd(chain),
            AdminRequest::ChainList,
            AdminRequest::Assignments,
            AdminRequest::LedgerShow { account: None, page },
            AdminRequest::LedgerVerify,
            AdminRequest::AccountReceipt {
                name: "a".into(),
                page,
                cut: Some(ReceiptCut { period_start_ms: 0, last_share: 0 }),
            },
            AdminRequest::RolloutSet(None),
        ]
    }

    /// The split is made in one place, and the core path refuses what it must never see: a
    /// read-only request routed to the core thread would be answered with an error.
    #[test]
    fn read_only_requests_never_reach_the_core() {
        let store_only: Vec<String> = every_request()
            .into_iter()
            .filter(|r| !r.needs_core())
            .map(|r| format!("{r:?}").split([' ', '{']).next().unwrap().to_string())
            .collect();
        assert_eq!(store_only, ["JobShow", "LedgerShow", "LedgerVerify", "AccountReceipt"]);
        let mut core = Core::new(CoreConfig::default());
        for req in every_request().into_iter().filter(|r| !r.needs_core()) {
            let reply = admin(&mut core, 1, req.clone());
            assert!(matches!(&reply, AdminResponse::Error(e) if e.contains("read-only")), "{req:?}: {reply:?}");
        }

        // And the read path answers them from the store.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        super::super::store::Store::open(&path).unwrap();
        let readers = Readers::open(StoreLocation::Sqlite, dir.path().to_path_buf()).unwrap();
        for req in every_request().into_iter().filter(|r| !r.needs_core()) {
            let reply = readers.answer(req.clone());
            let fine = match &reply {
                AdminResponse::Error(e) => e == "no account named \"a\"" || e == "no job 1",
                _ => true,
            };
            assert!(fine, "{req:?}: {reply:?}");
        }
    }

    #[test]
    fn job_run_pages_are_cut_where_a_run_starts_so_re_painting_moves_nothing_across() {
        let run =
            |version: u32, start: u32, count: u64, fate: &str| RangeRun { version, start, count, fate: fate.into() };
        let before =
            vec![run(1, 0, 10, "done"), run(1, 10, 10, "in_flight"), run(1, 20, 10, "done"), run(2, 0, 5, "done")];
        let (first, next) = Pager::of_keyed(PageRequest { after: 0, limit: 2 }, before, run_key);
        assert_eq!(first.len(), 2);
        // Between the pages the first run splits (part done, part abandoned): by position the
        // second page would repeat the run at 10; by key it goes on where the first page ended.
        let after = vec![
            run(1, 0, 5, "done"),
            run(1, 5, 5, "abandoned: node failed"),
            run(1, 10, 10, "done"),
            run(1, 20, 10, "done"),
            run(2, 0, 5, "done"),
        ];
        let after_cut = PageRequest { after: next.expect("a next page"), limit: 0 };
        let (rest, last) = Pager::of_keyed(after_cut, after, run_key);
        assert_eq!(rest.iter().map(|r| (r.version, r.start)).collect::<Vec<_>>(), [(1, 20), (2, 0)]);
        assert_eq!(last, None);
    }

    #[test]
    fn a_page_stops_at_its_limit_or_its_byte_budget_and_names_the_next_cursor() {
        let list: Vec<u32> = (0..10).collect();
        assert_eq!(Pager::of_list(PageRequest { after: 0, limit: 4 }, list.clone()), (vec![0, 1, 2, 3], Some(4)));
        assert_eq!(Pager::of_list(PageRequest { after: 8, limit: 4 }, list.clone()), (vec![8, 9], None));
        assert_eq!(Pager::of_list(PageRequest { after: 10, limit: 0 }, list.clone()), (vec![], None));
        assert_eq!(Pager::of_list(PageRequest::FIRST, list).1, None);

        // 100 KiB items: five fit the budget, the sixth starts the next page.
        let big = vec![vec![7u8; 100 << 10]; 12];
        let (page, next) = Pager::of_list(PageRequest::FIRST, big.clone());
        assert_eq!((page.len(), next), (5, Some(5)));
        assert!(codec::encode(&page).is_ok(), "the page fits one frame");
        let (rest, next) = Pager::of_list(PageRequest { after: 5, limit: 0 }, big);
        assert_eq!((rest.len(), next), (5, Some(10)));

        // An item larger than the budget still goes out alone.
        let (page, next) = Pager::of_list(PageRequest::FIRST, vec![vec![1u8; 600 << 10], vec![2u8; 10]]);
        assert_eq!((page.len(), next), (1, Some(1)));
    }
}
