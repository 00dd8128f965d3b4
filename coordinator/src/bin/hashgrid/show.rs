//! How the operator CLI shows things: tables for people, JSON (numbers as JSON numbers) for
//! scripts.
//!
//! Amounts are u128 and JSON carries them whole: the documents that hold amounts (`status`,
//! receipts, ledger payloads) are serialized from typed values with `serde_json::to_string`,
//! which writes any u128, never through `serde_json::Value`, which cannot hold one above
//! u64::MAX. Text that came from the farm (node names, versions, devices, ledger payloads) is
//! printed through `printable`, so no control character reaches the terminal raw.

use std::borrow::Cow;

use hashgrid_common::message::{
    AccountStatus, ChainStatus, JobStatus, LedgerEntry, NodeAssignment, NodeStatus, PoolStatus, Receipt, Rollout,
    Status,
};
use hashgrid_coordinator::amount::format_amount;
use serde::Serialize;
use serde_json::value::RawValue;

/// `text` with its control characters (ESC, newline, ...) escaped as `\u{1b}`, `\n`: what a
/// node calls itself cannot drive the operator's terminal or split a line.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

pub fn print_accounts(list: &[AccountStatus]) {
    print!("{}", accounts_text(list));
}

/// Accounts as a table: standard, delivered, progress and chain.
pub fn accounts_text(list: &[AccountStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>5} {:>12} {:>12} {:>7} {:>8} {:<10}",
        "ACCOUNT", "ORDER", "STANDARD", "DELIVERED", "DONE", "SHARES", "CHAIN"
    );
    for a in list {
        let pct = if a.standard == 0 { 100.0 } else { a.delivered as f64 * 100.0 / a.standard as f64 };
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:>12} {:>12} {:>6.1}% {:>8} {:<10}{}",
            printable(&a.name),
            a.order,
            format_amount(a.standard),
            format_amount(a.delivered),
            pct.min(999.9),
            a.shares,
            printable(&a.chain),
            if a.up_to_standard { "  up to standard" } else { "" }
        );
    }
    out
}

pub fn print_status(status: &Status) {
    print!("{}", status_text(status));
}

/// The status as `status` prints it (and `status --watch` redraws it).
pub fn status_text(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "policy: {}", status.policy.as_str());
    if let Some(r) = &status.rollout {
        let _ = writeln!(out, "rollout: {}% of new ranges to nodes of version {}", r.percent, printable(&r.version));
    }
    out.push_str(&accounts_text(&status.accounts));
    out.push('\n');
    if !status.pools.is_empty() {
        out.push_str(&pools_text(&status.pools));
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:>12} {:>12} {:<16} {:<10} VERSION",
        "NODE", "STATE", "RATE", "ANNOUNCED", "SERVING", "CHAIN"
    );
    for n in &status.nodes {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>10}/s {:>10}/s {:<16} {:<10} {} ({})",
            printable(&n.name),
            n.state,
            format_amount(n.hashrate as u128) + "H",
            format_amount(n.announced_hashrate as u128) + "H",
            printable(n.account.as_deref().unwrap_or("-")),
            printable(n.chain.as_deref().unwrap_or("-")),
            printable(&n.software_version),
            n.protocol_name()
        );
    }
    out
}

/// `status --json`: numbers as JSON numbers, amounts whole.
pub fn status_json(status: &Status) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Json<'a> {
        policy: &'a str,
        rollout: &'a Option<Rollout>,
        accounts: &'a [AccountStatus],
        nodes: Vec<serde_json::Value>,
        pools: &'a [PoolStatus],
    }
    serde_json::to_string(&Json {
        policy: status.policy.as_str(),
        rollout: &status.rollout,
        accounts: &status.accounts,
        nodes: status.nodes.iter().map(node_json).collect(),
        pools: &status.pools,
    })
}

pub fn print_pools(list: &[PoolStatus]) {
    print!("{}", pools_text(list));
}

/// Accounts at pools: the session (state, pool, user, extranonce, difficulty, version mask,
/// job age), delivered and accepted upstream side by side, rejects by reason. Never a
/// password: no reply carries one.
pub fn pools_text(list: &[PoolStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<13} {:<32} {:<16} {:<14} {:>10} {:>8} {:>7} {:>12} {:>12} {:>8} {:>8} {:>7}",
        "ACCOUNT",
        "STATE",
        "POOL",
        "USER",
        "EXTRANONCE",
        "DIFF",
        "MASK",
        "JOB AGE",
        "DELIVERED",
        "ACCEPTED UP",
        "ACCEPTED",
        "REJECTED",
        "UNKNOWN"
    );
    for p in list {
        let rejected: u64 = p.rejected.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            out,
            "{:<16} {:<13} {:<32} {:<16} {:<14} {:>10} {:>8x} {:>7} {:>12} {:>12} {:>8} {:>8} {:>7}{}{}",
            printable(&p.account),
            p.state,
            printable(&format!("{}{}", p.url, if p.pool_index > 0 { " (backup)" } else { "" })),
            printable(&p.user),
            format!("{}+{}{}", p.extranonce1, p.extranonce2_size, if p.extranonce_subscribe { " sub" } else { "" }),
            p.difficulty,
            p.version_mask,
            p.job_age_ms.map_or("-".into(), |ms| format!("{}s", ms / 1000)),
            format_amount(p.delivered),
            format_amount(p.accepted_upstream),
            p.accepted_shares,
            rejected,
            p.unknown,
            if p.flagged { "  FLAGGED: too many rejects" } else { "" },
            p.last_error.as_deref().map(|e| format!("  ({})", printable(e))).unwrap_or_default(),
        );
        for (reason, n) in &p.rejected {
            let _ = writeln!(out, "    rejected {n}: {}", printable(reason));
        }
    }
    out
}

pub fn job_json(job: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job": job.job, "account": job.account, "header": job.header.to_hex(), "target": job.target.to_hex(),
        "searched": job.searched, "in_flight": job.in_flight, "abandoned": job.abandoned,
        "reassigned": job.reassigned, "total": job.total,
        "runs": job.runs.iter().map(|r| serde_json::json!({"version": r.version, "start": r.start, "count": r.count, "fate": r.fate})).collect::<Vec<_>>(),
        "hits": job.hits.iter().map(|h| serde_json::json!({"version": h.version, "time": h.time, "nonce": h.nonce, "hash": h.hash.to_string()})).collect::<Vec<_>>(),
    })
}

pub fn print_job(job: &JobStatus) {
    println!("job {} for {}: header {}", job.job, printable(&job.account), job.header.to_hex());
    println!("target {}", job.target);
    println!(
        "searched {} of {} nonces ({:.2}%), in flight {}, abandoned {}, handed over in failovers {}",
        job.searched,
        job.total,
        job.searched as f64 * 100.0 / job.total as f64,
        job.in_flight,
        job.abandoned,
        job.reassigned
    );
    for r in &job.runs {
        println!("  version {:08x} nonces {}..{}: {}", r.version, r.start, r.start as u64 + r.count, r.fate);
    }
    for h in &job.hits {
        println!("  hit: version {:08x} time {} nonce {} hash {}", h.version, h.time, h.nonce, h.hash);
    }
}

pub fn node_json(n: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "name": n.name, "state": n.state, "hashrate": n.hashrate, "announced_hashrate": n.announced_hashrate,
        "account": n.account, "version": n.software_version, "protocol": n.protocol, "transport": n.protocol_name(), "chain": n.chain, "draining": n.draining,
        "accepted": n.accepted, "rejected": n.rejected,
        "devices": n.devices.iter().map(|d| serde_json::json!({"kind": d.kind, "name": d.name, "hashrate": d.hashrate})).collect::<Vec<_>>(),
    })
}

fn rate(h: f64) -> String {
    format_amount(h.max(0.0) as u128) + "H/s"
}

pub fn print_nodes(nodes: &[NodeStatus]) {
    println!(
        "{:<16} {:<9} {:<11} {:>11} {:>11} {:<10} {:<16} {:>8} {:>8} DEVICES",
        "NODE", "STATE", "PROTOCOL", "RATE", "ANNOUNCED", "CHAIN", "SERVING", "ACCEPTED", "REJECTED"
    );
    for n in nodes {
        let devices: Vec<String> = n
            .devices
            .iter()
            .map(|d| format!("{} {} {}", printable(&d.kind), printable(&d.name), rate(d.hashrate)))
            .collect();
        println!(
            "{:<16} {:<9} {:<11} {:>11} {:>11} {:<10} {:<16} {:>8} {:>8} {}",
            printable(&n.name),
            n.state,
            n.protocol_name(),
            rate(n.hashrate),
            rate(n.announced_hashrate),
            printable(n.chain.as_deref().unwrap_or("-")),
            printable(n.account.as_deref().unwrap_or("-")),
            n.accepted,
            n.rejected,
            devices.join("; ")
        );
    }
}

pub fn chain_json(c: &ChainStatus) -> serde_json::Value {
    serde_json::json!({
        "name": c.params.name, "tx_per_template": c.params.tx_per_template, "bit_rate": c.params.bit_rate,
        "difficulty": c.params.difficulty, "weight": c.params.weight, "height": c.height, "load": c.load,
        "measured_bit_rate": c.measured_bit_rate, "nodes": c.nodes, "capacity": c.capacity, "accounts": c.accounts,
    })
}

pub fn print_chains(chains: &[ChainStatus]) {
    println!(
        "{:<12} {:>8} {:>10} {:>10} {:>6} {:>7} {:>7} {:>11}  NODES / ACCOUNTS",
        "CHAIN", "TX/TMPL", "BIT RATE", "DIFFICULTY", "WEIGHT", "HEIGHT", "LOAD", "CAPACITY"
    );
    for c in chains {
        println!(
            "{:<12} {:>8} {:>8}/s {:>10} {:>6} {:>7} {:>7.2} {:>11}  {} / {}",
            printable(&c.params.name),
            c.params.tx_per_template,
            format_amount(c.params.bit_rate as u128) + "B",
            c.params.difficulty,
            c.params.weight,
            c.height,
            c.load,
            rate(c.capacity),
            if c.nodes.is_empty() { "-".to_string() } else { printable(&c.nodes.join(",")).into_owned() },
            if c.accounts.is_empty() { "-".to_string() } else { printable(&c.accounts.join(",")).into_owned() },
        );
    }
}

pub fn print_assignments(list: &[NodeAssignment]) {
    println!("{:<16} {:<9} {:<12} {:<16} {:>11} {:>6}", "NODE", "STATE", "CHAIN", "ACCOUNT", "RATE", "RANGES");
    for a in list {
        println!(
            "{:<16} {:<9} {:<12} {:<16} {:>11} {:>6}",
            printable(&a.node),
            a.state,
            printable(a.chain.as_deref().unwrap_or("-")),
            printable(a.account.as_deref().unwrap_or("-")),
            rate(a.hashrate),
            a.ranges
        );
    }
}

/// One entry of `ledger show --json`: its payload as the JSON it is, verbatim (amounts whole),
/// or as a string if it is not JSON.
#[derive(Serialize)]
pub struct LedgerJson<'a> {
    seq: u64,
    at_ms: u64,
    kind: &'a str,
    payload: Payload<'a>,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

pub fn ledger_json(e: &LedgerEntry) -> LedgerJson<'_> {
    let payload = serde_json::from_str(&e.payload).map_or(Payload::Text(&e.payload), Payload::Json);
    LedgerJson {
        seq: e.seq,
        at_ms: e.at_ms,
        kind: &e.kind,
        payload,
        prev_hash: hex::encode(e.prev_hash),
        hash: hex::encode(e.hash),
    }
}

pub fn print_ledger(entries: &[LedgerEntry]) {
    for e in entries {
        let at = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms));
        println!(
            "{:>7} {} {:<16} {} {}",
            e.seq,
            at,
            printable(&e.kind),
            &hex::encode(e.hash)[..12],
            printable(&e.payload)
        );
    }
}

/// Re-hashes every share of the receipt: each must meet its target and be worth its work, no
/// header may repeat, and (for a `whole` receipt, not one page of it) the works must add up to
/// the delivered total. The shares' total, or the first problem.
pub fn check_receipt(r: &Receipt, whole: bool) -> Result<u128, String> {
    let mut seen = std::collections::HashSet::new();
    let mut total: u128 = 0;
    for (i, s) in r.shares.iter().enumerate() {
        let hash = s.header.block_hash();
        if !s.share_target.is_met_by(&hash) {
            return Err(format!("share {i} (hash {hash}) does not meet its target"));
        }
        if s.share_target.work() != s.work {
            return Err(format!(
                "share {i} claims {} hashes of work; its target is worth {}",
                s.work,
                s.share_target.work()
            ));
        }
        if !seen.insert(s.header.to_bytes()) {
            return Err(format!("share {i} appears twice"));
        }
        total = total.saturating_add(s.work);
    }
    if whole && total != r.delivered {
        return Err(format!("the shares add up to {total} hashes, the account was credited {}", r.delivered));
    }
    Ok(total)
}

/// `account receipt --json`: amounts whole; `whole`: every page of the receipt was fetched, so
/// the total was checked too.
pub fn receipt_json(r: &Receipt, check: &Result<u128, String>, whole: bool) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Share<'a> {
        header: String,
        nonce: u32,
        target: String,
        work: u128,
        node: &'a str,
        at_ms: u64,
        hash: String,
        upstream: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Json<'a> {
        account: &'a str,
        standard: u128,
        delivered: u128,
        period_start_ms: u64,
        last_share: u64,
        whole: bool,
        verified: bool,
        problem: Option<&'a String>,
        shares: Vec<Share<'a>>,
    }
    let shares = r
        .shares
        .iter()
        .map(|s| Share {
            header: s.header.to_hex(),
            nonce: s.header.nonce,
            target: s.share_target.to_hex(),
            work: s.work,
            node: &s.node,
            at_ms: s.at_ms,
            hash: s.header.block_hash().to_string(),
            upstream: s.upstream.as_deref(),
        })
        .collect();
    serde_json::to_string(&Json {
        account: &r.account,
        standard: r.standard,
        delivered: r.delivered,
        period_start_ms: r.period_start_ms,
        last_share: r.cut.last_share,
        whole,
        verified: check.is_ok(),
        problem: check.as_ref().err(),
        shares,
    })
}

pub fn print_receipt(r: &Receipt, check: &Result<u128, String>, whole: bool) {
    println!(
        "account {}: delivered {} of {} hashes in {} shares (period from {} ms)",
        printable(&r.account),
        format_amount(r.delivered),
        format_amount(r.standard),
        r.shares.len(),
        r.period_start_ms
    );
    println!("{:<160} {:<64} {:>12} {:<16} UPSTREAM", "HEADER", "TARGET", "WORK", "NODE");
    for s in &r.shares {
        println!(
            "{} {} {:>12} {:<16} {}",
            s.header.to_hex(),
            s.share_target.to_hex(),
            s.work,
            printable(&s.node),
            printable(s.upstream.as_deref().unwrap_or("-"))
        );
    }
    match check {
        Ok(total) if !whole => println!(
            "verified: every share of this page re-hashed meets its target; they add up to {total} hashes \
             (the total is checked on a whole receipt)"
        ),
        Ok(total) => println!("verified: every share re-hashed meets its target; they add up to {total} hashes"),
        Err(problem) => println!("NOT verified: {problem}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(printable("rig-07 (GPU 0)"), Cow::Borrowed("rig-07 (GPU 0)")));
        assert_eq!(printable("\u{1b}[2Jrig\nINFO x\r\u{7}\u{9b}"), "\\u{1b}[2Jrig\\nINFO x\\r\\u{7}\\u{9b}");
        assert!(!printable("\u{1b}]0;title\u{7}").chars().any(char::is_control));
    }

    #[test]
    fn amounts_above_u64_are_json_numbers_in_full() {
        let account = AccountStatus {
            name: "big".into(),
            chain: "local".into(),
            order: 1,
            standard: 20_000_000_000_000_000_000,
            delivered: u128::MAX,
            period_secs: None,
            up_to_standard: false,
            shares: 0,
        };
        let status = Status {
            policy: hashgrid_common::message::Policy::Sequential,
            accounts: vec![account],
            nodes: vec![],
            rollout: None,
            pools: vec![],
        };
        let json = status_json(&status).unwrap();
        assert!(json.contains("\"standard\":20000000000000000000"), "{json}");
        assert!(json.contains(&format!("\"delivered\":{}", u128::MAX)), "{json}");
        let receipt = Receipt {
            account: "big".into(),
            standard: 20_000_000_000_000_000_000,
            delivered: 0,
            period_start_ms: 0,
            cut: hashgrid_common::message::ReceiptCut { period_start_ms: 0, last_share: 0 },
            shares: vec![],
            next: None,
        };
        let json = receipt_json(&receipt, &Ok(0), true).unwrap();
        assert!(json.contains("\"standard\":20000000000000000000"), "{json}");
        let entry = LedgerEntry {
            seq: 1,
            at_ms: 2,
            kind: "account_add".into(),
            payload: "{\"standard\":20000000000000000000}".into(),
            prev_hash: [0; 32],
            hash: [1; 32],
        };
        let json = serde_json::to_string(&ledger_json(&entry)).unwrap();
        assert!(json.contains("\"payload\":{\"standard\":20000000000000000000}"), "{json}");
    }
}
