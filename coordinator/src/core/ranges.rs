//! The range book of one header template, or of a group of its versions searched together
//! (`rolled`): how its 2^32 nonces were carved into ranges and what became of each. A range
//! of a group's book is its nonces under every version of the group.
//!
//! Invariants: the ranges are disjoint and together cover exactly `0..next` (the nonces issued
//! so far); every range is in flight with one assignment, done, or abandoned. Abandoned
//! ranges are issued again, whole or split, before fresh nonces, so no work is lost; a range
//! is never in flight with two assignments, so no two nodes ever hold overlapping work.

use std::collections::BTreeMap;

use hashgrid_common::message::AssignmentId;

/// 2^32: the nonces of one header.
pub const NONCE_SPACE: u64 = 1 << 32;

/// What became of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    InFlight(AssignmentId),
    Done,
    /// Given back before it was searched; it will be issued again.
    Abandoned(Abandon),
}

/// Why a range was given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    NodeFailed,
    AccountUpToStandard,
    /// The part of a failed node's range its taker could not hold; issued next.
    Reassigned,
}

impl Fate {
    /// "done", "in_flight", or "abandoned: WHY".
    pub fn describe(&self) -> &'static str {
        match self {
            Fate::InFlight(_) => "in_flight",
            Fate::Done => "done",
            Fate::Abandoned(Abandon::NodeFailed) => "abandoned: node failed",
            Fate::Abandoned(Abandon::AccountUpToStandard) => "abandoned: account up to standard",
            Fate::Abandoned(Abandon::Reassigned) => "abandoned: rest of a handed-over range",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    count: u64,
    fate: Fate,
}

/// Nonces of a template by fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    pub done: u64,
    pub in_flight: u64,
    pub abandoned: u64,
    pub unissued: u64,
    /// Nonces handed from one node to another while in flight (counted each time; a
    /// history, not a fate: those nonces are also in one of the other counts).
    pub reassigned: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RangeBook {
    next: u64,
    ranges: BTreeMap<u64, Range>,
    reassigned: u64,
    /// The version bits rolled together (0: one version).
    rolled: u32,
}

impl RangeBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// The book of a group of versions: the book's version with every combination of the
    /// `rolled` bits.
    pub fn for_group(rolled: u32) -> Self {
        RangeBook { rolled, ..Self::default() }
    }

    /// Issues up to `count` nonces to `assignment`: the first abandoned range (split if larger),
    /// else fresh nonces. `None` when every nonce is issued and none is abandoned.
    pub fn issue(&mut self, count: u64, assignment: AssignmentId) -> Option<(u32, u64)> {
        let count = count.max(1);
        let abandoned = self.ranges.iter().find(|(_, r)| matches!(r.fate, Fate::Abandoned(_))).map(|(&s, &r)| (s, r));
        let (start, count) = match abandoned {
            Some((start, range)) => {
                let take = count.min(range.count);
                if take < range.count {
                    self.ranges.insert(start + take, Range { count: range.count - take, fate: range.fate });
                }
                (start, take)
            }
            None => {
                if self.next >= NONCE_SPACE {
                    return None;
                }
                let start = self.next;
                let take = count.min(NONCE_SPACE - start);
                self.next += take;
                (start, take)
            }
        };
        self.ranges.insert(start, Range { count, fate: Fate::InFlight(assignment) });
        Some((start as u32, count))
    }

    /// Marks the range issued to `assignment` at `start` done; false if it is no longer that
    /// assignment's (it was abandoned and maybe issued again).
    pub fn complete(&mut self, start: u32, assignment: AssignmentId) -> bool {
        self.set_fate(start, assignment, Fate::Done)
    }

    /// Gives back the range issued to `assignment` at `start`.
    pub fn abandon(&mut self, start: u32, assignment: AssignmentId, why: Abandon) -> bool {
        self.set_fate(start, assignment, Fate::Abandoned(why))
    }

    /// Hands the first `count` nonces of the range in flight with `from` at `start` to `to`;
    /// the rest of it, if any, is abandoned (`Reassigned`) and so issued before fresh nonces.
    /// The range is never without a holder or a place in the queue, so no nonce is lost or
    /// issued twice. Returns the count handed over; `None` if `from` does not hold the range.
    pub fn reassign(&mut self, start: u32, from: AssignmentId, to: AssignmentId, count: u64) -> Option<u64> {
        let r = self.ranges.get_mut(&(start as u64)).filter(|r| r.fate == Fate::InFlight(from))?;
        let take = count.clamp(1, r.count);
        let rest = r.count - take;
        *r = Range { count: take, fate: Fate::InFlight(to) };
        if rest > 0 {
            self.ranges.insert(start as u64 + take, Range { count: rest, fate: Fate::Abandoned(Abandon::Reassigned) });
        }
        self.reassigned += take;
        Some(take)
    }

    /// Re-labels the ranges waiting abandoned for `from` as abandoned for `to` (they stay first
    /// in line for the next range issued); the nonces re-labelled.
    pub fn relabel_waiting(&mut self, from: Abandon, to: Abandon) -> u64 {
        let mut relabelled = 0;
        for r in self.ranges.values_mut().filter(|r| r.fate == Fate::Abandoned(from)) {
            r.fate = Fate::Abandoned(to);
            relabelled += r.count;
        }
        relabelled
    }

    fn set_fate(&mut self, start: u32, assignment: AssignmentId, fate: Fate) -> bool {
        match self.ranges.get_mut(&(start as u64)) {
            Some(r) if r.fate == Fate::InFlight(assignment) => {
                r.fate = fate;
                true
            }
            _ => false,
        }
    }

    /// The version bits searched together in each of this book's ranges.
    pub fn rolled(&self) -> u32 {
        self.rolled
    }

    /// True when every nonce is searched.
    pub fn is_complete(&self) -> bool {
        self.next >= NONCE_SPACE && self.ranges.values().all(|r| r.fate == Fate::Done)
    }

    /// True when nothing more can be issued now.
    pub fn is_exhausted(&self) -> bool {
        self.next >= NONCE_SPACE && !self.ranges.values().any(|r| matches!(r.fate, Fate::Abandoned(_)))
    }

    pub fn coverage(&self) -> Coverage {
        let mut c = Coverage { unissued: NONCE_SPACE - self.next, reassigned: self.reassigned, ..Coverage::default() };
        for r in self.ranges.values() {
            match r.fate {
                Fate::InFlight(_) => c.in_flight += r.count,
                Fate::Done => c.done += r.count,
                Fate::Abandoned(_) => c.abandoned += r.count,
            }
        }
        c
    }

    /// Every range with its fate, in nonce order: (start, count, fate).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, Fate)> + '_ {
        self.ranges.iter().map(|(&s, r)| (s, r.count, r.fate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn abandoned_ranges_are_reissued_first_and_split() {
        let mut book = RangeBook::new();
        assert_eq!(book.issue(1000, 1), Some((0, 1000)));
        assert_eq!(book.issue(1000, 2), Some((1000, 1000)));
        assert!(book.abandon(0, 1, Abandon::NodeFailed));
        assert_eq!(book.issue(400, 3), Some((0, 400)));
        assert_eq!(book.issue(1000, 4), Some((400, 600)));
        assert_eq!(book.issue(10, 5), Some((2000, 10)));
        assert!(!book.complete(0, 1), "the old holder's range is no longer its own");
        assert!(book.complete(0, 3));
        assert_eq!(
            book.coverage(),
            Coverage { done: 400, in_flight: 1610, abandoned: 0, unissued: NONCE_SPACE - 2010, reassigned: 0 }
        );
    }

    #[test]
    fn the_last_range_ends_at_the_last_nonce() {
        let mut book = RangeBook::new();
        assert_eq!(book.issue(NONCE_SPACE - 5, 1), Some((0, NONCE_SPACE - 5)));
        assert_eq!(book.issue(100, 2), Some((u32::MAX - 4, 5)));
        assert_eq!(book.issue(100, 3), None);
        assert!(book.is_exhausted());
        assert!(book.complete(0, 1) && book.complete(u32::MAX - 4, 2));
        assert!(book.is_complete());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Issue(u64),
        Complete(usize),
        Abandon(usize),
        Reassign(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..(1 << 31)).prop_map(Op::Issue),
            any::<usize>().prop_map(Op::Complete),
            any::<usize>().prop_map(Op::Abandon),
            any::<usize>().prop_map(Op::Reassign),
        ]
    }

    proptest! {
        /// Ranges never overlap, together cover exactly the issued nonces, and none is lost.
        #[test]
        fn ranges_are_disjoint_and_complete(ops in proptest::collection::vec(op(), 1..200)) {
            let mut book = RangeBook::new();
            let mut live: Vec<(u32, AssignmentId)> = Vec::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::Issue(n) => {
                        next_id += 1;
                        if let Some((start, _)) = book.issue(n, next_id) {
                            live.push((start, next_id));
                        }
                    }
                    Op::Complete(i) if !live.is_empty() => {
                        let (s, a) = live.remove(i % live.len());
                        prop_assert!(book.complete(s, a));
                    }
                    Op::Abandon(i) if !live.is_empty() => {
                        let (s, a) = live.remove(i % live.len());
                        prop_assert!(book.abandon(s, a, Abandon::NodeFailed));
                    }
                    Op::Reassign(i) if !live.is_empty() => {
                        let k = i % live.len();
                        next_id += 1;
                        let (s, a) = live[k];
                        // Half of it, or all of a one-nonce range.
                        prop_assert!(book.reassign(s, a, next_id, (i as u64 % 3) << 20).is_some());
                        prop_assert!(!book.complete(s, a), "the old holder no longer holds it");
                        live[k] = (s, next_id);
                    }
                    _ => {}
                }
                let mut expected_start = 0;
                for (start, count, _) in book.ranges() {
                    prop_assert_eq!(start, expected_start);
                    prop_assert!(count > 0);
                    expected_start = start + count;
                }
                prop_assert_eq!(expected_start, book.next);
                let c = book.coverage();
                prop_assert_eq!(c.done + c.in_flight + c.abandoned + c.unissued, NONCE_SPACE);
            }
        }
    }
}
