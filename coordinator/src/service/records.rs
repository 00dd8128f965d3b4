//! The store's records of chains, the balancer's node-to-chain table and the hash-chained
//! ledger: their schema step, how the store writes them, and `Reader`, a second (read-only)
//! connection the operator API uses for the ledger and receipts without holding up the
//! writer.
//!
//! Tables (added by schema step 3):
//! - `chains(name PK, tx_per_template, bit_rate, difficulty, weight, added_ms)`: chain
//!   parameters (the built-in chain `local` is implicit).
//! - `chain_blocks(chain, height, hash, account)`, PK (chain, height): every chain's blocks
//!   (the built-in chain's former `blocks` rows move here).
//! - `node_chains(node PK, chain, since_ms)`: the chain each node serves, as the balancer set it.
//! - `ledger(seq PK, at_ms, kind, payload, prev_hash, hash)`: one row per scheduling decision;
//!   `hash` is `core::ledger::entry_hash` of the row and `prev_hash` the previous row's hash.
//! - `accounts.chain`: the chain an account draws its work from (default `local`).
//!
//! Schema step 4 adds `ledger.account`, indexed with `seq`: the account the entry is about
//! (`LedgerRecord::account`), NULL for decisions about nodes and chains; `ledger show
//! --account` filters on it. It is not hashed: the payload it is derived from is. Rows written
//! before step 4 are filled by the same rule read from their payloads: `$.from` for a
//! `switch`, else `$.account` (absent, so NULL, in the kinds without an account).

use std::path::Path;
use std::time::Duration;

use hashgrid_common::BlockHash;
use hashgrid_common::message::{ChainParams, LedgerEntry, LedgerVerdict, PageRequest, Receipt, ReceiptCut};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::admin::Pager;
use super::store::{StoreError, fixed, parse_u128, to_i64, to_u64};
use crate::core::ledger::{self, LedgerRecord};

/// Schema step 3.
pub const MIGRATION: &str = "
    CREATE TABLE chains (
        name TEXT PRIMARY KEY,
        tx_per_template INTEGER NOT NULL,
        bit_rate INTEGER NOT NULL,
        difficulty REAL NOT NULL,
        weight REAL NOT NULL,
        added_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE chain_blocks (
        chain TEXT NOT NULL,
        height INTEGER NOT NULL,
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        account TEXT NOT NULL,
        PRIMARY KEY (chain, height)
    ) STRICT;
    INSERT INTO chain_blocks (chain, height, hash, account) SELECT 'local', height, hash, account FROM blocks;
    DROP TABLE blocks;
    CREATE TABLE node_chains (node TEXT PRIMARY KEY, chain TEXT NOT NULL, since_ms INTEGER NOT NULL) STRICT;
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
        hash BLOB NOT NULL CHECK (length(hash) = 32)
    ) STRICT;
    ALTER TABLE accounts ADD COLUMN chain TEXT NOT NULL DEFAULT 'local';";

/// Schema step 4.
pub const LEDGER_ACCOUNT_MIGRATION: &str = "
    ALTER TABLE ledger ADD COLUMN account TEXT;
    UPDATE ledger SET account = CASE kind WHEN 'switch' THEN json_extract(payload, '$.from')
                                          ELSE json_extract(payload, '$.account') END;
    CREATE INDEX ledger_by_account ON ledger(account, seq);";

/// Appends one entry to the ledger, linked to the last one.
pub fn append_ledger(tx: &Transaction<'_>, at_ms: u64, record: &LedgerRecord) -> Result<(), StoreError> {
    let (kind, payload) = record.encode();
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let prev = match last {
        Some((seq, hash)) => Some((to_u64("ledger.seq", seq)?, fixed("ledger.hash", &hash)?)),
        None => None,
    };
    let e = ledger::next_entry(prev, at_ms, &kind, &payload);
    tx.prepare_cached(
        "INSERT INTO ledger (seq, at_ms, kind, payload, prev_hash, hash, account)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        to_i64("ledger.seq", e.seq)?,
        to_i64("ledger.at_ms", e.at_ms)?,
        e.kind,
        e.payload,
        &e.prev_hash[..],
        &e.hash[..],
        record.account()
    ])?;
    Ok(())
}

pub fn add_chain(tx: &Transaction<'_>, params: &ChainParams, at_ms: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO chains (name, tx_per_template, bit_rate, difficulty, weight, added_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        params.name,
        params.tx_per_template,
        to_i64("chains.bit_rate", params.bit_rate)?,
        params.difficulty,
        params.weight,
        to_i64("chains.added_ms", at_ms)?
    ])?;
    Ok(())
}

pub fn set_node_chain(tx: &Transaction<'_>, node: &str, chain: Option<&str>, at_ms: u64) -> Result<(), StoreError> {
    match chain {
        Some(chain) => tx
            .prepare_cached(
                "INSERT INTO node_chains (node, chain, since_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node) DO UPDATE SET chain = excluded.chain, since_ms = excluded.since_ms",
            )?
            .execute(params![node, chain, to_i64("node_chains.since_ms", at_ms)?])?,
        None => tx.prepare_cached("DELETE FROM node_chains WHERE node = ?1")?.execute([node])?,
    };
    Ok(())
}

pub fn add_block(
    tx: &Transaction<'_>,
    chain: &str,
    height: u64,
    hash: &BlockHash,
    account: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO chain_blocks (chain, height, hash, account) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![chain, to_i64("chain_blocks.height", height)?, hash, account])?;
    Ok(())
}

/// What `Store::load` adds for chains: the added chains with their tips, the built-in chain's
/// tip, and the balancer's table.
#[derive(Debug, Default)]
pub struct ChainRecords {
    pub chains: Vec<(ChainParams, Option<(u64, BlockHash)>)>,
    pub local_tip: Option<(u64, BlockHash)>,
    pub node_chains: Vec<(String, String)>,
}

pub fn load_chains(conn: &Connection) -> Result<ChainRecords, StoreError> {
    let tip = |chain: &str| -> Result<Option<(u64, BlockHash)>, StoreError> {
        conn.query_row(
            "SELECT height, hash FROM chain_blocks WHERE chain = ?1 ORDER BY height DESC LIMIT 1",
            [chain],
            |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)),
        )
        .optional()?
        .map(|(h, hash)| Ok((to_u64("chain_blocks.height", h)?, hash)))
        .transpose()
    };
    let mut out = ChainRecords { local_tip: tip(crate::core::accounts::DEFAULT_CHAIN)?, ..ChainRecords::default() };
    let mut stmt =
        conn.prepare("SELECT name, tx_per_template, bit_rate, difficulty, weight FROM chains ORDER BY added_ms, name")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)?, r.get::<_, f64>(3)?, r.get::<_, f64>(4)?))
    })?;
    for row in rows {
        let (name, tx_per_template, bit_rate, difficulty, weight) = row?;
        let bit_rate = to_u64("chains.bit_rate", bit_rate)?;
        let params = ChainParams { name, tx_per_template, bit_rate, difficulty, weight };
        let t = tip(&params.name)?;
        out.chains.push((params, t));
    }
    let mut stmt = conn.prepare("SELECT node, chain FROM node_chains ORDER BY node")?;
    out.node_chains = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    Ok(out)
}

/// A read-only connection for the operator API.
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Reader { conn })
    }

    /// Entries with `seq >= since`, oldest first, at most `limit`; with `account`, only those
    /// about that account (the `account` column).
    pub fn ledger(&self, since: u64, account: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        let since = to_i64("since", since)?;
        let mut stmt = match account {
            None => self.conn.prepare_cached(
                "SELECT seq, at_ms, kind, payload, prev_hash, hash FROM ledger
                 WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?,
            Some(_) => self.conn.prepare_cached(
                "SELECT seq, at_ms, kind, payload, prev_hash, hash FROM ledger
                 WHERE account = ?3 AND seq >= ?1 ORDER BY seq LIMIT ?2",
            )?,
        };
        let rows = match account {
            None => stmt.query_map(params![since, limit], row_entry)?,
            Some(account) => stmt.query_map(params![since, limit, account], row_entry)?,
        };
        let mut out = Vec::new();
        for row in rows {
            out.push(entry(row?)?);
        }
        Ok(out)
    }

    /// The last entry's sequence number (the ledger's length: it starts at 1); 0 when empty.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> = self.conn.prepare_cached("SELECT max(seq) FROM ledger")?.query_row([], |r| r.get(0))?;
        to_u64("ledger.seq", seq.unwrap_or(0))
    }

    /// Recomputes the whole chain and names the first entry that does not match; then checks
    /// that each entry is a `LedgerRecord` whose account is the one in its `account` column
    /// (the column is not hashed, so it is checked against the payload, which is).
    pub fn verify_ledger(&self) -> Result<LedgerVerdict, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT seq, at_ms, kind, payload, prev_hash, hash, account FROM ledger ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((row_entry(r)?, r.get::<_, Option<String>>(6)?)))?;
        verdict(rows.map(|row| row.map_err(StoreError::from)))
    }

    /// The job's status, every run (`history`); `None`: no such job.
    pub fn job(
        &self,
        job: hashgrid_common::message::JobId,
    ) -> Result<Option<hashgrid_common::message::JobStatus>, StoreError> {
        super::history::job_status(&self.conn, job)
    }

    /// One page of the account's receipt, read in one transaction. Without a `cut`, the cut is
    /// taken now (the current period and its last share), and `delivered` is the credit up to
    /// it: the shares of every page at that cut add up to it. `None`: no such account.
    pub fn receipt(
        &mut self,
        account: &str,
        cut: Option<ReceiptCut>,
        page: PageRequest,
    ) -> Result<Option<Receipt>, StoreError> {
        let tx = self.conn.transaction()?;
        let Some((standard, delivered, period_start_ms)) = tx
            .query_row("SELECT standard, delivered, period_start_ms FROM accounts WHERE name = ?1", [account], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let period_start_ms = to_u64("accounts.period_start_ms", period_start_ms)?;
        let cut = match cut {
            Some(cut) => cut,
            None => {
                let last: Option<i64> = tx
                    .prepare_cached("SELECT max(id) FROM shares WHERE account = ?1 AND period_start_ms = ?2")?
                    .query_row(params![account, to_i64("period_start_ms", period_start_ms)?], |r| r.get(0))?;
                ReceiptCut { period_start_ms, last_share: to_u64("shares.id", last.unwrap_or(0))? }
            }
        };
        let mut pager = Pager::new(page);
        super::store::receipt_shares(&tx, account, cut.period_start_ms, (page.after, cut.last_share), |id, share| {
            pager.offer(id, share)
        })?;
        receipt_page(account, (standard.as_str(), delivered.as_str()), cut, pager, |hashes| {
            hashes.iter().map(|hash| super::upstream_store::share_outcome(&tx, hash)).collect()
        })
        .map(Some)
    }
}

/// A receipt page, from the account's row (`standard`, `delivered`), the cut and the page's
/// shares, as either store reads them, each share with its upstream outcome if it was sent to
/// a pool (`upstream_outcomes`, the store's lookup by share hash: given the page's hashes, their
/// outcomes in the same order, looked up at once so that a store across a network answers a
/// page in one round trip, not one per share).
pub(super) fn receipt_page(
    account: &str,
    (standard, delivered): (&str, &str),
    cut: ReceiptCut,
    pager: Pager<hashgrid_common::message::ReceiptShare>,
    upstream_outcomes: impl FnOnce(&[hashgrid_common::BlockHash]) -> Result<Vec<Option<String>>, StoreError>,
) -> Result<Receipt, StoreError> {
    let (mut shares, next) = pager.finish();
    let hashes: Vec<_> = shares.iter().map(|share| share.header.block_hash()).collect();
    let outcomes = upstream_outcomes(&hashes)?;
    if outcomes.len() != shares.len() {
        return Err(StoreError::Corrupt {
            what: "upstream_submits",
            detail: format!("{} outcomes for {} shares", outcomes.len(), shares.len()),
        });
    }
    for (share, outcome) in shares.iter_mut().zip(outcomes) {
        share.upstream = outcome;
    }
    Ok(Receipt {
        account: account.into(),
        standard: parse_u128("accounts.standard", standard)?,
        delivered: parse_u128("accounts.delivered", delivered)?,
        period_start_ms: cut.period_start_ms,
        cut,
        shares,
        next,
    })
}

/// The verdict on a whole ledger, its rows (entry and `account` column) in `seq` order, as
/// either store reads them: recomputes the chain and names the first entry that does not match;
/// then checks that each entry is a `LedgerRecord` whose account is the one in its `account`
/// column (the column is not hashed, so it is checked against the payload, which is).
pub(super) fn verdict(
    rows: impl IntoIterator<Item = Result<(RawEntry, Option<String>), StoreError>>,
) -> Result<LedgerVerdict, StoreError> {
    let mut entries = Vec::new();
    let mut accounts = Vec::new();
    let mut malformed = None;
    for row in rows {
        let (raw, account) = row?;
        match entry(raw) {
            Ok(e) => {
                entries.push(e);
                accounts.push(account);
            }
            Err(e) => {
                malformed = Some((entries.len() as u64 + 1, e.to_string()));
                break;
            }
        }
    }
    let records = entries.iter().zip(&accounts).find_map(|(e, account)| {
        let why = match LedgerRecord::decode(&e.kind, &e.payload) {
            Ok(record) if record.account() == account.as_deref() => return None,
            Ok(_) => "its account column does not match its payload".to_string(),
            Err(err) => format!("its payload is not a ledger record: {err}"),
        };
        Some((e.seq, why))
    });
    let verdict = ledger::verify(entries);
    Ok(match (verdict.first_bad, malformed, records) {
        (Some(bad), _, _) => LedgerVerdict { entries: verdict.entries, first_bad: Some(bad) },
        (None, Some(bad), _) => LedgerVerdict { entries: verdict.entries + 1, first_bad: Some(bad) },
        (None, None, bad) => LedgerVerdict { entries: verdict.entries, first_bad: bad },
    })
}

pub(super) type RawEntry = (i64, i64, String, String, Vec<u8>, Vec<u8>);

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

pub(super) fn entry((seq, at_ms, kind, payload, prev_hash, hash): RawEntry) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        seq: to_u64("ledger.seq", seq)?,
        at_ms: to_u64("ledger.at_ms", at_ms)?,
        kind,
        payload,
        prev_hash: fixed("ledger.prev_hash", &prev_hash)?,
        hash: fixed("ledger.hash", &hash)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StoreOp;
    use crate::service::store::Store;

    fn ledger_op(i: u64) -> StoreOp {
        let record = LedgerRecord::PeriodRenewed { account: format!("a{}", i % 2), period_start_ms: i };
        StoreOp::Ledger { at_ms: 1_700_000_000_000 + i, record }
    }

    /// Entries as the coordinator wrote them before the ledger was typed (`json!` payloads,
    /// keys sorted), and before schema step 4: an account and a chain both named "acme".
    const OLD_ENTRIES: [(&str, &str); 17] = [
        ("account_added", r#"{"account":"acme","chain":"local","order":1,"period_ms":null,"standard":"5000000"}"#),
        ("account_added", r#"{"account":"beta","chain":"local","order":2,"period_ms":60000,"standard":"7"}"#),
        ("chain_added", r#"{"bit_rate":1000,"chain":"acme","difficulty":2.0,"tx_per_template":10,"weight":1.0}"#),
        ("rebalance", r#"{"from":null,"node":"rig","reason":"chain added","to":"acme"}"#),
        (
            "assignment",
            r#"{"account":"acme","assignment":7,"chain":"local","count":65536,"job":6,"node":"rig","reassigned_from":null,"share_work":"4096","start":0,"version":536870912}"#,
        ),
        (
            "failover",
            r#"{"node":"rig","promoted":"spare","ranges":[{"assignment":7,"count":65536,"job":6,"new_assignment":9,"start":0,"to":"spare","version":536870912},{"assignment":8,"count":65536,"job":6,"start":65536,"to":null,"version":536870912}],"reason":"missed heartbeats"}"#,
        ),
        ("promotion", r#"{"by":"failover","from":"standby","node":"spare"}"#),
        ("standard_reached", r#"{"account":"acme","chain":"local","delivered":"5001216","standard":"5000000"}"#),
        ("switch", r#"{"chain":"local","from":"acme","policy":"sequential","to":"beta"}"#),
        ("rebalance", r#"{"from":"acme","node":"rig","reason":"account up to standard","to":"local"}"#),
        ("period_renewed", r#"{"account":"beta","period_start_ms":1700000060000}"#),
        (
            "block_found",
            r#"{"account":"beta","chain":"local","hash":"00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048","height":1}"#,
        ),
        ("drain", r#"{"node":"rig","ranges_in_flight":2}"#),
        ("standby", r#"{"by":"operator","node":"rig","ranges":[]}"#),
        ("policy", r#"{"policy":"proportional"}"#),
        ("rollout", r#"{"percent":10,"version":"1.2.0"}"#),
        ("departure", r#"{"node":"spare","promoted":null,"ranges":[]}"#),
    ];

    #[test]
    fn a_ledger_written_before_the_account_column_verifies_and_filters_by_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        {
            // A version-3 database, its rows inserted as the old `append_ledger` did.
            let conn = Connection::open(&path).unwrap();
            for sql in &crate::service::store::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            let mut prev = None;
            for (i, (kind, payload)) in OLD_ENTRIES.iter().enumerate() {
                let e = ledger::next_entry(prev, 1_700_000_000_000 + i as u64, kind, payload);
                conn.execute(
                    "INSERT INTO ledger (seq, at_ms, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![e.seq as i64, e.at_ms as i64, e.kind, e.payload, &e.prev_hash[..], &e.hash[..]],
                )
                .unwrap();
                prev = Some((e.seq, e.hash));
            }
        }
        let mut store = Store::open(&path).unwrap();
        let reader = Reader::open(&path).unwrap();
        let n = OLD_ENTRIES.len() as u64;
        assert_eq!(reader.verify_ledger().unwrap(), LedgerVerdict { entries: n, first_bad: None });
        // Every old entry reads as a record that writes the same text, and the migration
        // filled its column by the record's rule.
        let raw = Connection::open(&path).unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for e in reader.ledger(1, None, 100).unwrap() {
            let record = LedgerRecord::decode(&e.kind, &e.payload).unwrap_or_else(|err| panic!("{e:?}: {err}"));
            assert_eq!(record.encode(), (e.kind.clone(), e.payload.clone()));
            kinds.insert(e.kind.clone());
            let column: Option<String> =
                raw.query_row("SELECT account FROM ledger WHERE seq = ?1", [e.seq as i64], |r| r.get(0)).unwrap();
            assert_eq!(column.as_deref(), record.account(), "{e:?}");
        }
        assert_eq!(kinds.len(), 15, "every kind of record");
        // The account's own entries, not the rebalance rows of the chain of the same name.
        let seqs = |account| reader.ledger(1, Some(account), 100).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs("acme"), [1, 5, 8, 9]);
        assert_eq!(seqs("beta"), [2, 11, 12]);
        // New entries chain on.
        store.apply(&[ledger_op(1)]).unwrap();
        assert_eq!(reader.verify_ledger().unwrap(), LedgerVerdict { entries: n + 1, first_bad: None });
        assert_eq!(seqs("a1"), [n + 1]);
        // The column is not hashed, but an edit to it is caught against the payload.
        raw.execute("UPDATE ledger SET account = 'beta' WHERE seq = 5", []).unwrap();
        let bad = reader.verify_ledger().unwrap().first_bad.unwrap();
        assert_eq!(bad.0, 5, "{bad:?}");
        assert!(bad.1.contains("account column"), "{bad:?}");
    }

    #[test]
    fn the_ledger_chains_across_batches_and_names_a_tampered_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let mut store = Store::open(&path).unwrap();
        store.apply(&(0..3).map(ledger_op).collect::<Vec<_>>()).unwrap();
        store.apply(&(3..6).map(ledger_op).collect::<Vec<_>>()).unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert_eq!(reader.verify_ledger().unwrap(), LedgerVerdict { entries: 6, first_bad: None });
        let all = reader.ledger(1, None, 100).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        assert!(all.windows(2).all(|w| w[1].prev_hash == w[0].hash));
        assert_eq!(reader.ledger(2, Some("a1"), 100).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4, 6]);
        assert_eq!(reader.ledger(1, None, 2).unwrap().len(), 2);
        assert_eq!(reader.last_seq().unwrap(), 6);

        // Someone edits row 4 directly in the file.
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE ledger SET payload = '{\"account\":\"mallory\"}' WHERE seq = 4", []).unwrap();
        let verdict = reader.verify_ledger().unwrap();
        assert_eq!(verdict.first_bad.as_ref().map(|b| b.0), Some(4), "{verdict:?}");
        assert!(verdict.first_bad.unwrap().1.contains("do not match its hash"));
        assert!(reader.receipt("nobody", None, PageRequest::FIRST).unwrap().is_none());
    }

    #[test]
    fn chains_and_the_node_table_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let params =
            ChainParams { name: "alt".into(), tx_per_template: 10, bit_rate: 2000, difficulty: 2.0, weight: 3.0 };
        let hash = hashgrid_common::Hash256([7; 32]);
        Store::open(&path)
            .unwrap()
            .apply(&[
                StoreOp::ChainAdded { params: params.clone(), at_ms: 5 },
                StoreOp::BlockFound { chain: "alt".into(), height: 1, hash, account: "x".into() },
                StoreOp::NodeChain { node: "rig".into(), chain: Some("alt".into()), at_ms: 6 },
                StoreOp::NodeChain { node: "gone".into(), chain: Some("alt".into()), at_ms: 6 },
                StoreOp::NodeChain { node: "gone".into(), chain: None, at_ms: 7 },
            ])
            .unwrap();
        let snap = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(snap.chains, vec![(params, Some((1, hash)))]);
        assert_eq!(snap.chain, None);
        assert_eq!(snap.node_chains, vec![("rig".to_string(), "alt".to_string())]);
    }
}
