//! The store's records of accounts at pools (schema step 6), in portable SQL (plain INTEGER,
//! TEXT and BLOB columns):
//!
//! - `account_pools(account, position, url, user_name, password, extranonce_subscribe)`: an
//!   account's pools, the primary at position 0, with the credentials. The password is kept
//!   here and nowhere else: no ledger entry, log line or reply carries it.
//! - `account_basis(account PK, basis)`: the figure an account's standard is measured on
//!   (`delivered` when absent).
//! - `upstream_submits(hash, account, url, pool_job, work, outcome, at_ms, answered_ms)`:
//!   every credited share sent to a pool (`hash` is the share's, as in `shares`), with the
//!   pool's difficulty as `work` (a u128 decimal) and its outcome: `pending` until the answer,
//!   then `accepted`, `rejected: CODE REASON`, `unknown` or `not submitted: REASON`. An
//!   account's `accepted_upstream` is the sum of the work of its accepted rows in its period;
//!   its counts in `pool list` (accepted, rejected by reason, unknown) are rebuilt from all its
//!   rows at start-up ([`COUNTS`], [`counts`]).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use hashgrid_common::BlockHash;
use hashgrid_common::message::{PoolSettings, StandardBasis};

use super::store::{StoreError, parse_u128, to_i64};
use crate::core::upstream::UpstreamCounts;
use crate::core::{Account, Work};

/// Each account's submits by (outcome, work), counted: portable SQL, read by both stores.
pub(crate) const COUNTS: &str = "SELECT account, outcome, work, COUNT(*) FROM upstream_submits
     GROUP BY account, outcome, work ORDER BY account";

/// Each account's upstream counts from the rows of [`COUNTS`]: (account, outcome, work, count).
pub(crate) fn counts(
    rows: impl IntoIterator<Item = (String, String, String, i64)>,
) -> Result<BTreeMap<String, UpstreamCounts>, StoreError> {
    let mut by_account: BTreeMap<String, Vec<(String, Work, u64)>> = BTreeMap::new();
    for (account, outcome, work, n) in rows {
        let work = Work(parse_u128("upstream_submits.work", &work)?);
        by_account.entry(account).or_default().push((outcome, work, n.max(0) as u64));
    }
    Ok(by_account.into_iter().map(|(a, rows)| (a, UpstreamCounts::from_records(rows))).collect())
}

pub(super) const MIGRATION: &str = "CREATE TABLE account_pools (
        account TEXT NOT NULL REFERENCES accounts(name),
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        user_name TEXT NOT NULL,
        password TEXT NOT NULL,
        extranonce_subscribe INTEGER NOT NULL,
        PRIMARY KEY (account, position)
    );
    CREATE TABLE account_basis (
        account TEXT PRIMARY KEY REFERENCES accounts(name),
        basis TEXT NOT NULL
    );
    CREATE TABLE upstream_submits (
        hash BLOB NOT NULL,
        account TEXT NOT NULL REFERENCES accounts(name),
        url TEXT NOT NULL,
        pool_job TEXT NOT NULL,
        work TEXT NOT NULL,
        outcome TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        answered_ms INTEGER
    );
    CREATE INDEX upstream_submits_by_hash ON upstream_submits(hash);
    CREATE INDEX upstream_submits_by_account ON upstream_submits(account, at_ms);";

/// `StoreOp::AccountPoolSet`.
pub(super) fn set_pool(
    tx: &Transaction<'_>,
    account: &str,
    pool: Option<&PoolSettings>,
    basis: StandardBasis,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM account_pools WHERE account = ?1")?.execute([account])?;
    if let Some(pool) = pool {
        let mut insert = tx.prepare_cached(
            "INSERT INTO account_pools (account, position, url, user_name, password, extranonce_subscribe)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (position, url) in pool.urls.iter().enumerate() {
            insert.execute(params![
                account,
                position as i64,
                url,
                pool.user,
                pool.password,
                i64::from(pool.extranonce_subscribe_to(position))
            ])?;
        }
    }
    tx.prepare_cached("DELETE FROM account_basis WHERE account = ?1")?.execute([account])?;
    tx.prepare_cached("INSERT INTO account_basis (account, basis) VALUES (?1, ?2)")?
        .execute(params![account, basis.as_str()])?;
    Ok(())
}

/// `StoreOp::UpstreamSubmitted`.
pub(super) fn submitted(
    tx: &Transaction<'_>,
    account: &str,
    hash: &BlockHash,
    url: &str,
    pool_job: &str,
    work: Work,
    at_ms: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO upstream_submits (hash, account, url, pool_job, work, outcome, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
    )?
    .execute(params![hash, account, url, pool_job, work.to_string(), to_i64("at_ms", at_ms)?])?;
    Ok(())
}

/// `StoreOp::UpstreamOutcome`.
pub(super) fn outcome(tx: &Transaction<'_>, hash: &BlockHash, outcome: &str, at_ms: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE upstream_submits SET outcome = ?1, answered_ms = ?2 WHERE hash = ?3 AND outcome = 'pending'",
    )?
    .execute(params![outcome, to_i64("answered_ms", at_ms)?, hash])?;
    Ok(())
}

/// Every account's upstream counts.
pub(super) fn load_counts(conn: &Connection) -> Result<BTreeMap<String, UpstreamCounts>, StoreError> {
    let mut stmt = conn.prepare(COUNTS)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    counts(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every account's pool settings; and, into `accounts`, each one's basis and accepted
/// upstream work of its current period.
pub(super) fn load(conn: &Connection, accounts: &mut [Account]) -> Result<Vec<(String, PoolSettings)>, StoreError> {
    let mut pools: Vec<(String, PoolSettings)> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT account, url, user_name, password, extranonce_subscribe FROM account_pools
         ORDER BY account, position",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get::<_, i64>(4)?))
    })?;
    for row in rows {
        let (account, url, user, password, subscribe) = row?;
        match pools.last_mut().filter(|(a, _)| *a == account) {
            Some((_, p)) => {
                p.urls.push(url);
                p.backup_extranonce_subscribe = subscribe != 0;
            }
            None => pools.push((
                account,
                PoolSettings {
                    urls: vec![url],
                    user,
                    password,
                    extranonce_subscribe: subscribe != 0,
                    backup_extranonce_subscribe: false,
                },
            )),
        }
    }
    let mut basis = conn.prepare_cached("SELECT basis FROM account_basis WHERE account = ?1")?;
    let mut accepted = conn.prepare_cached(
        "SELECT work FROM upstream_submits WHERE account = ?1 AND answered_ms >= ?2 AND outcome = 'accepted'",
    )?;
    for a in accounts.iter_mut() {
        if let Some(b) = basis.query_row([&a.name], |r| r.get::<_, String>(0)).optional()? {
            a.basis = b.parse().map_err(|detail| StoreError::Corrupt { what: "account_basis.basis", detail })?;
        }
        let rows = accepted
            .query_map(params![a.name, to_i64("period_start_ms", a.period_start_ms)?], |r| r.get::<_, String>(0))?;
        for work in rows {
            a.accepted_upstream =
                a.accepted_upstream.saturating_add(Work(parse_u128("upstream_submits.work", &work?)?));
        }
    }
    Ok(pools)
}

/// Submits a previous process left unanswered: their connection is gone, so their outcome is
/// `unknown` (never accepted). Call before the core starts.
pub(super) fn close_pending(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute("UPDATE upstream_submits SET outcome = 'unknown' WHERE outcome = 'pending'", [])?)
}

/// The upstream outcome of the share `hash` (`None`: never sent to a pool).
pub(super) fn share_outcome(conn: &Connection, hash: &BlockHash) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT outcome FROM upstream_submits WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::super::store::Store;
    use super::*;
    use crate::core::StoreOp;
    use hashgrid_common::Hash256;

    fn pool(urls: &[&str]) -> PoolSettings {
        PoolSettings {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            user: "alice.rig".into(),
            password: "s3cret".into(),
            extranonce_subscribe: true,
            backup_extranonce_subscribe: true,
        }
    }

    /// An account's pools, basis and accepted-upstream work survive a restart; a renewed
    /// period starts accepted-upstream over.
    #[test]
    fn pools_and_upstream_outcomes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let t0 = 1_700_000_000_000;
        let added = |name: &str| StoreOp::AccountAdded {
            name: name.into(),
            standard: Work(10),
            period_ms: Some(60_000),
            order: 1,
            period_start_ms: t0,
            chain: "local".into(),
        };
        let submitted = |seed: u8, at_ms| StoreOp::UpstreamSubmitted {
            account: "alice".into(),
            hash: Hash256([seed; 32]),
            url: "stratum+tcp://a:1".into(),
            pool_job: "j1".into(),
            work: Work(1 << 100),
            at_ms,
        };
        let outcome = |seed: u8, outcome: &str| StoreOp::UpstreamOutcome {
            hash: Hash256([seed; 32]),
            outcome: outcome.into(),
            at_ms: t0 + 5,
        };
        // extranonce.subscribe to the primary and not the backups, kept per pool.
        let alice_pool = || PoolSettings {
            backup_extranonce_subscribe: false,
            ..pool(&["stratum+tcp://a:1", "stratum+ssl://b:2", "stratum+tcp://c:3"])
        };
        let ops = vec![
            added("alice"),
            added("bob"),
            StoreOp::AccountPoolSet {
                account: "alice".into(),
                pool: Some(alice_pool()),
                basis: StandardBasis::Accepted,
            },
            StoreOp::AccountPoolSet {
                account: "bob".into(),
                pool: Some(pool(&["stratum+tcp://c:3"])),
                basis: StandardBasis::Delivered,
            },
            StoreOp::AccountPoolSet { account: "bob".into(), pool: None, basis: StandardBasis::Delivered },
            submitted(1, t0 + 1),
            submitted(2, t0 + 2),
            submitted(3, t0 + 3),
            submitted(4, t0 + 4),
            // Sent in the last period, accepted in this one: counted in this one, as in memory.
            submitted(5, t0 - 1),
            outcome(5, "accepted"),
            outcome(1, "accepted"),
            outcome(2, "accepted"),
            outcome(3, "rejected: 23 Low difficulty share"),
            // A late answer never overwrites the first.
            outcome(1, "unknown"),
        ];
        Store::open(&path).unwrap().apply(&ops).unwrap();
        let store = Store::open(&path).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.pools, vec![("alice".to_string(), alice_pool())]);
        let alice = &snap.accounts[0];
        assert_eq!((alice.basis, alice.accepted_upstream), (StandardBasis::Accepted, Work(3 << 100)));
        assert_eq!(snap.accounts[1].basis, StandardBasis::Delivered);
        // pool list's counts come back: 3 accepted, 1 rejected by its reason, the pending one
        // unknown (its connection is gone).
        let counts = &snap.pool_counts["alice"];
        assert_eq!((counts.accepted_shares, counts.accepted_work, counts.unknown), (3, Work(3 << 100), 1));
        assert_eq!(counts.rejected, [("Low difficulty share".to_string(), 1)].into_iter().collect());
        assert!(!snap.pool_counts.contains_key("bob"));
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            share_outcome(&conn, &Hash256([3; 32])).unwrap().as_deref(),
            Some("rejected: 23 Low difficulty share")
        );
        assert_eq!(share_outcome(&conn, &Hash256([4; 32])).unwrap().as_deref(), Some("pending"));
        assert_eq!(store.close_pending_submits().unwrap(), 1, "a restart ends the connection");
        assert_eq!(share_outcome(&conn, &Hash256([4; 32])).unwrap().as_deref(), Some("unknown"));
        assert_eq!(share_outcome(&conn, &Hash256([9; 32])).unwrap(), None);

        Store::open(&path)
            .unwrap()
            .apply(&[StoreOp::PeriodRenewed { account: "alice".into(), period_start_ms: t0 + 60_000 }])
            .unwrap();
        let snap = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(snap.accounts[0].accepted_upstream, Work::ZERO, "a new period starts over");
    }
}
