//! Job history in the store: the local-chain templates and the fate of every issued range,
//! so that `job show` is answered from SQLite (off the core thread) and still knows every job
//! after a restart.
//!
//! Tables (added by this schema step):
//! - `templates(job PK, account, header, target)`: the local-chain templates the core made
//!   (submitted jobs are in `jobs`).
//! - `range_fates(assignment PK, fate, handed)`: what became of an issued range (a row of
//!   `assignments`): `done` or `abandoned: WHY` (`core::ranges::Fate::describe`); `handed` is
//!   the nonces of it handed to a new assignment in a failover. A range with no row is in
//!   flight; at start-up the ranges of the previous process that are still without one become
//!   `abandoned: coordinator restarted` (the restarted core issues their nonces again).
//!
//! A job's runs come from painting its issued ranges in the order they were issued (assignment
//! ids grow): where ranges overlap (a range abandoned and issued again, the head of a range
//! handed over), the later one's fate is the nonces' fate.

use std::collections::BTreeMap;

use hashgrid_common::message::{JobHit, JobId, JobStatus, RangeRun};
use hashgrid_common::{Header, Target};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::store::{StoreError, to_i64, to_u64};
use crate::core::ranges::NONCE_SPACE;

/// The schema step of job history.
pub const MIGRATION: &str = "
    CREATE TABLE templates (
        job INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        header BLOB NOT NULL CHECK (length(header) = 80),
        target BLOB NOT NULL CHECK (length(target) = 32)
    ) STRICT;
    CREATE TABLE range_fates (
        assignment INTEGER PRIMARY KEY,
        fate TEXT NOT NULL,
        handed INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX assignments_by_job ON assignments(job, version, id);";

/// The fate of ranges a stopped coordinator left in flight.
pub const RESTARTED: &str = "abandoned: coordinator restarted";

pub fn add_template(
    tx: &Transaction<'_>,
    job: JobId,
    account: &str,
    header: &Header,
    target: &Target,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO templates (job, account, header, target) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![to_i64("job", job)?, account, header, target])?;
    Ok(())
}

pub fn set_fate(tx: &Transaction<'_>, assignment: u64, fate: &str, handed: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO range_fates (assignment, fate, handed) VALUES (?1, ?2, ?3)
         ON CONFLICT (assignment) DO UPDATE SET fate = excluded.fate, handed = excluded.handed",
    )?
    .execute(params![to_i64("assignment", assignment)?, fate, to_i64("handed", handed)?])?;
    Ok(())
}

/// Gives every range still without a fate the fate `RESTARTED` (call before the core starts).
pub fn close_open_ranges(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO range_fates (assignment, fate, handed)
         SELECT id, ?1, 0 FROM assignments WHERE id NOT IN (SELECT assignment FROM range_fates)",
        [RESTARTED],
    )?)
}

/// The job's status from the store, with every run; `None`: no such job.
pub fn job_status(conn: &Connection, job: JobId) -> Result<Option<JobStatus>, StoreError> {
    let id = to_i64("job", job)?;
    let found = conn
        .prepare_cached(
            "SELECT account, header, target FROM jobs WHERE id = ?1
             UNION ALL SELECT account, header, target FROM templates WHERE job = ?1",
        )?
        .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Header>(1)?, r.get::<_, Target>(2)?)))
        .optional()?;
    let Some((account, header, target)) = found else { return Ok(None) };
    let mut hits =
        conn.prepare_cached("SELECT version, time, nonce, hash FROM job_hits WHERE job = ?1 ORDER BY rowid")?;
    let hits = hits
        .query_map([id], |r| Ok(JobHit { version: r.get(0)?, time: r.get(1)?, nonce: r.get(2)?, hash: r.get(3)? }))?
        .collect::<Result<Vec<_>, _>>()?;

    let mut stmt = conn.prepare_cached(
        "SELECT a.version, a.start, a.count, f.fate, f.handed FROM assignments a
         LEFT JOIN range_fates f ON f.assignment = a.id WHERE a.job = ?1 ORDER BY a.id",
    )?;
    let ranges = stmt.query_map([id], |r| {
        Ok(IssuedRange { version: r.get(0)?, start: r.get(1)?, count: r.get(2)?, fate: r.get(3)?, handed: r.get(4)? })
    })?;
    status_of(job, (account, header, target), hits, ranges.map(|r| r.map_err(StoreError::from))).map(Some)
}

/// An issued range as the store keeps it: a row of `assignments` with its `range_fates` row.
#[derive(Debug)]
pub(super) struct IssuedRange {
    pub version: u32,
    pub start: u32,
    pub count: i64,
    pub fate: Option<String>,
    pub handed: Option<i64>,
}

/// The job's status from its record and its issued ranges in issue order, as either store
/// reads them.
pub(super) fn status_of(
    job: JobId,
    (account, header, target): (String, Header, Target),
    hits: Vec<JobHit>,
    ranges: impl IntoIterator<Item = Result<IssuedRange, StoreError>>,
) -> Result<JobStatus, StoreError> {
    // Paint each version's ranges in issue order: the later range's fate wins.
    let mut painted: BTreeMap<u32, BTreeMap<u64, (u64, String)>> = BTreeMap::new();
    let mut reassigned = 0u64;
    for range in ranges {
        let IssuedRange { version, start, count, fate, handed } = range?;
        reassigned += to_u64("range_fates.handed", handed.unwrap_or(0))?;
        let start = u64::from(start);
        let end = (start + to_u64("assignments.count", count)?).min(NONCE_SPACE);
        paint(painted.entry(version).or_default(), start, end, fate.unwrap_or_else(|| "in_flight".into()));
    }

    let mut status = JobStatus {
        job,
        account,
        header,
        target,
        searched: 0,
        in_flight: 0,
        abandoned: 0,
        reassigned,
        total: NONCE_SPACE * painted.len().max(1) as u64,
        hits,
        runs: Vec::new(),
    };
    for (version, ranges) in painted {
        for (start, (end, fate)) in ranges {
            let count = end - start;
            match fate.as_str() {
                "done" => status.searched += count,
                "in_flight" => status.in_flight += count,
                _ => status.abandoned += count,
            }
            match status.runs.last_mut() {
                Some(r) if r.version == version && r.fate == fate && u64::from(r.start) + r.count == start => {
                    r.count += count
                }
                _ => status.runs.push(RangeRun { version, start: start as u32, count, fate }),
            }
        }
    }
    Ok(status)
}

/// Sets the nonces `start..end` of `map` (disjoint ranges by start: (end, fate)) to `fate`.
fn paint(map: &mut BTreeMap<u64, (u64, String)>, start: u64, end: u64, fate: String) {
    let overlapping: Vec<u64> = map.range(..end).rev().take_while(|(_, (e, _))| *e > start).map(|(&s, _)| s).collect();
    for s in overlapping {
        let (e, f) = map.remove(&s).expect("listed above");
        if s < start {
            map.insert(s, (start, f.clone()));
        }
        if e > end {
            map.insert(end, (e, f));
        }
    }
    map.insert(start, (end, fate));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig};
    use crate::service::records::Reader;
    use crate::service::store::Store;
    use crate::service::store::tests::{node_hello as hello, step as run};
    use hashgrid_common::message::{Assignment, CoordinatorMessage, NodeMessage, PROTOCOL_VERSION};

    /// `job show` from the store says what the core says, and after a restart (when the core
    /// has forgotten the ranges) still knows the job: what was done stays done, and what was
    /// in flight is named as lost to the restart.
    #[test]
    fn job_history_matches_the_core_and_survives_a_restart() {
        let config = CoreConfig { min_share_work: 16, shares_per_second: 1e9, id_base: 1, ..CoreConfig::default() };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hashgrid.db");
        let mut store = Store::open(&path).unwrap();
        let mut core = Core::new(config);
        // Runs `f` on the core, makes its records durable and returns the ranges it assigned.
        let mut step = |core: &mut Core, f: &dyn Fn(&mut Core)| -> Vec<Assignment> {
            let sent = run(core, &mut store, f);
            sent.into_iter()
                .filter_map(|m| if let CoordinatorMessage::Assign(a) = m { Some(a) } else { None })
                .collect()
        };
        let job = std::cell::Cell::new(0);
        step(&mut core, &|core| {
            core.add_account(1, "bob", u128::MAX, None, Some(1), None).unwrap();
            let header = Header::from_bytes(&[3; 80]);
            job.set(core.submit_job(1, "bob", header, Target::from_expected_hashes(1 << 40)).unwrap());
        });
        let first = step(&mut core, &|core| core.handle_node_joined(2, 1, &hello("rig-1"), PROTOCOL_VERSION));
        assert!(first.len() >= 2 && first.iter().all(|a| a.job == job.get()), "{first:?}");
        let done = first[0];
        step(&mut core, &|core| {
            core.handle_node_message(3, 1, NodeMessage::RangeDone { assignment: done.id, hashes: done.count })
        });
        step(&mut core, &|core| core.handle_node_joined(4, 2, &hello("rig-2"), PROTOCOL_VERSION));
        // rig-1 fails: its ranges are handed to rig-2.
        step(&mut core, &|core| core.handle_node_left(5, 1));

        let reader = Reader::open(&path).unwrap();
        let live = core.job_status(job.get()).unwrap();
        let stored = reader.job(job.get()).unwrap().expect("the job is in the store");
        assert_eq!(stored, live);
        assert!(live.searched == done.count && live.in_flight > 0 && live.reassigned > 0, "{live:?}");

        // Restart: the ranges in flight are lost with the process.
        drop((core, store, reader));
        let store = Store::open(&path).unwrap();
        assert!(store.close_open_ranges().unwrap() > 0);
        let after = Reader::open(&path).unwrap().job(job.get()).unwrap().unwrap();
        assert_eq!((after.searched, after.in_flight, after.total), (live.searched, 0, live.total));
        assert_eq!(after.abandoned, live.abandoned + live.in_flight);
        assert!(after.runs.iter().any(|r| r.fate == RESTARTED), "{after:?}");
        assert!(Reader::open(&path).unwrap().job(987_654).unwrap().is_none());
    }

    #[test]
    fn a_later_range_paints_over_an_earlier_one() {
        let mut map = BTreeMap::new();
        paint(&mut map, 0, 100, "abandoned: node failed".into());
        paint(&mut map, 100, 200, "done".into());
        paint(&mut map, 0, 40, "done".into());
        paint(&mut map, 60, 150, "in_flight".into());
        let got: Vec<(u64, u64, &str)> = map.iter().map(|(&s, (e, f))| (s, *e, f.as_str())).collect();
        assert_eq!(
            got,
            [(0, 40, "done"), (40, 60, "abandoned: node failed"), (60, 150, "in_flight"), (150, 200, "done")]
        );
    }
}
