//! The operator API: turns one `AdminRequest` into an `AdminResponse`, using the core for the
//! farm's live state and the store's `Reader` for the ledger and receipts.

use hashgrid_common::message::{AdminRequest, AdminResponse};

use super::records::Reader;
use crate::core::Core;

/// Most ledger entries one request returns.
pub const LEDGER_PAGE_MAX: u32 = 10_000;

pub(crate) fn admin(core: &mut Core, reader: &mut Reader, now: u64, req: AdminRequest) -> AdminResponse {
    let accounts = |core: &Core| {
        let mut list: Vec<_> = core.accounts().iter().map(|a| a.status()).collect();
        list.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        list
    };
    let done = |r: Result<(), crate::core::AdminError>| match r {
        Ok(()) => AdminResponse::Ok,
        Err(e) => AdminResponse::Error(e.to_string()),
    };
    let store_error = |e: super::store::StoreError| AdminResponse::Error(format!("store: {e}"));
    match req {
        AdminRequest::AccountAdd { name, standard, period_secs, order, chain } => done(core.add_account(
            now,
            &name,
            standard,
            period_secs.map(|s| s.saturating_mul(1000)),
            order,
            chain.as_deref(),
        )),
        AdminRequest::AccountList => AdminResponse::Accounts(accounts(core)),
        AdminRequest::Status => AdminResponse::Status(core.status(now)),
        AdminRequest::JobSubmit { account, header, target } => match core.submit_job(now, &account, header, target) {
            Ok(job) => AdminResponse::JobSubmitted { job },
            Err(e) => AdminResponse::Error(e.to_string()),
        },
        AdminRequest::JobShow { job } => match core.job_status(job) {
            Ok(status) => AdminResponse::Job(status),
            Err(e) => AdminResponse::Error(e.to_string()),
        },
        AdminRequest::PolicySet(policy) => {
            core.set_policy(now, policy);
            AdminResponse::Ok
        }
        AdminRequest::NodeList => AdminResponse::Nodes(core.node_list(now)),
        AdminRequest::NodeDrain { name } => done(core.drain_node(now, &name)),
        AdminRequest::NodePromote { name } => done(core.promote_node(now, &name)),
        AdminRequest::NodeStandby { name } => done(core.standby_node(now, &name)),
        AdminRequest::ChainAdd(params) => done(core.add_chain(now, params)),
        AdminRequest::ChainList => AdminResponse::Chains(core.chain_list(now)),
        AdminRequest::Assignments => AdminResponse::Assignments(core.assignment_list(now)),
        AdminRequest::LedgerShow { since, account, limit } => {
            match reader.ledger(since, account.as_deref(), limit.clamp(1, LEDGER_PAGE_MAX)) {
                Ok(entries) => AdminResponse::Ledger(entries),
                Err(e) => store_error(e),
            }
        }
        AdminRequest::LedgerVerify => match reader.verify_ledger() {
            Ok(verdict) => AdminResponse::LedgerVerified(verdict),
            Err(e) => store_error(e),
        },
        AdminRequest::RolloutSet(rollout) => done(core.set_rollout(now, rollout)),
        AdminRequest::AccountReceipt { name } => match reader.receipt(&name) {
            Ok(Some(receipt)) => AdminResponse::Receipt(receipt),
            Ok(None) => AdminResponse::Error(format!("no account named {name:?}")),
            Err(e) => store_error(e),
        },
    }
}
