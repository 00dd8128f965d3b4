//! The operator API: turns one `AdminRequest` into an `AdminResponse`, using the core for
//! the farm's live state.

use hashgrid_common::message::{AdminRequest, AdminResponse};

use crate::core::Core;

pub(crate) fn admin(core: &mut Core, now: u64, req: AdminRequest) -> AdminResponse {
    let accounts = |core: &Core| {
        let mut list: Vec<_> = core.accounts().iter().map(|a| a.status()).collect();
        list.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        list
    };
    match req {
        AdminRequest::AccountAdd { name, standard, period_secs, order, chain: _ } => {
            match core.add_account(now, &name, standard, period_secs.map(|s| s.saturating_mul(1000)), order) {
                Ok(()) => AdminResponse::Ok,
                Err(e) => AdminResponse::Error(e.to_string()),
            }
        }
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
        other => AdminResponse::Error(format!("not supported by this coordinator yet: {other:?}")),
    }
}
