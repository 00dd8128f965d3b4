//! Extranonce carving: the coordinator owns a pool session's extranonce2 space and cuts it as
//! `[slot][counter]`, both big-endian.
//!
//! - Slot 0 is hashgrid's own nodes: the coordinator builds their headers itself, one counter
//!   value per header template ([`ExtranonceSpace::next_own`]).
//! - Slots 1.. are for Stratum miners behind the coordinator: a miner with slot `s` gets
//!   extranonce1 = upstream extranonce1 ‖ `s` and extranonce2_size = the counter's size, so
//!   whatever it rolls stays inside its slot ([`ExtranonceSpace::allocate_slot`]).
//! - The slot prefix is 0 bytes when extranonce2 is 3 bytes or fewer (all of it is slot 0's
//!   counter, and no miner slots exist), 1 byte for 4 to 7 bytes, 2 bytes from 8 bytes on.
//!
//! Every handed-out value is unique: counters only grow and are refused once the counter's
//! bytes are used up; a slot is handed out again only after it was released.
//!
//! A connection still in its handshake is *offered* a slot ([`ExtranonceSpace::peek_slot`])
//! without holding it; it takes the slot when it authorizes
//! ([`ExtranonceSpace::take_slot`]), or gets another if that one went meanwhile. So
//! connections that never authorize hold no slot.

use std::collections::{BTreeSet, VecDeque};

use super::StratumError;

/// How an extranonce2 of a given size is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carving {
    extranonce2_size: usize,
    slot_bytes: usize,
}

impl Carving {
    pub fn new(extranonce2_size: usize) -> Self {
        let slot_bytes = match extranonce2_size {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        Carving { extranonce2_size, slot_bytes }
    }

    pub fn extranonce2_size(&self) -> usize {
        self.extranonce2_size
    }

    /// Bytes of slot prefix: 0 when extranonce2 is 3 bytes or fewer, then 1, then 2.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Bytes left for the counter (a miner's extranonce2_size).
    pub fn counter_bytes(&self) -> usize {
        self.extranonce2_size - self.slot_bytes
    }

    /// How many slots exist, slot 0 included.
    pub fn slots(&self) -> u32 {
        1 << (8 * self.slot_bytes)
    }

    /// How many counter values one slot has (saturating at 2^64).
    pub fn counters(&self) -> u128 {
        if self.counter_bytes() >= 8 { 1 << 64 } else { 1u128 << (8 * self.counter_bytes()) }
    }

    /// The slot's prefix bytes (what a miner's extranonce1 is extended with).
    pub fn slot_prefix(&self, slot: u32) -> Vec<u8> {
        slot.to_be_bytes()[4 - self.slot_bytes..].to_vec()
    }

    /// The extranonce2 of `(slot, counter)`: slot then counter, big-endian, zero-padded.
    pub fn extranonce2(&self, slot: u32, counter: u64) -> Vec<u8> {
        let mut out = self.slot_prefix(slot);
        let counter_bytes = self.counter_bytes();
        let be = counter.to_be_bytes();
        if counter_bytes >= 8 {
            out.resize(out.len() + counter_bytes - 8, 0);
            out.extend_from_slice(&be);
        } else {
            out.extend_from_slice(&be[8 - counter_bytes..]);
        }
        out
    }

    /// The `(slot, counter)` an extranonce2 of this carving encodes (inverse of
    /// [`Carving::extranonce2`]); `None` for a wrong size or a counter past 2^64.
    pub fn split(&self, extranonce2: &[u8]) -> Option<(u32, u64)> {
        if extranonce2.len() != self.extranonce2_size {
            return None;
        }
        let (slot, counter) = extranonce2.split_at(self.slot_bytes);
        let slot = slot.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        let (high, low) = counter.split_at(counter.len().saturating_sub(8));
        if high.iter().any(|&b| b != 0) {
            return None;
        }
        Some((slot, low.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))))
    }
}

/// Free slots [`ExtranonceSpace::peek_slot`] looks at, at most.
const PEEK_SCAN: usize = 1024;

/// The extranonce2 space of one upstream session: slot 0's counter and the miners' slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtranonceSpace {
    carving: Carving,
    next_counter: u128,
    next_slot: u32,
    free: VecDeque<u32>,
    in_use: BTreeSet<u32>,
}

impl ExtranonceSpace {
    pub fn new(extranonce2_size: usize) -> Self {
        ExtranonceSpace {
            carving: Carving::new(extranonce2_size),
            next_counter: 0,
            next_slot: 1,
            free: VecDeque::new(),
            in_use: BTreeSet::new(),
        }
    }

    pub fn carving(&self) -> Carving {
        self.carving
    }

    /// The next extranonce2 for hashgrid's own nodes (slot 0); refused once the counter is
    /// used up.
    pub fn next_own(&mut self) -> Result<Vec<u8>, StratumError> {
        if self.next_counter >= self.carving.counters() {
            return Err(StratumError::Exhausted("slot 0's counter is used up"));
        }
        let counter = self.next_counter as u64;
        self.next_counter += 1;
        Ok(self.carving.extranonce2(0, counter))
    }

    /// Counter values slot 0 has left.
    pub fn own_left(&self) -> u128 {
        self.carving.counters() - self.next_counter
    }

    /// A slot for a miner (never 0): released slots first, oldest release first.
    pub fn allocate_slot(&mut self) -> Result<u32, StratumError> {
        let slot = match self.free.pop_front() {
            Some(slot) => slot,
            None if self.next_slot < self.carving.slots() => {
                self.next_slot += 1;
                self.next_slot - 1
            }
            None if self.carving.slot_bytes == 0 => {
                return Err(StratumError::Exhausted("extranonce2 too short to carve miner slots"));
            }
            None => return Err(StratumError::Exhausted("every miner slot is in use")),
        };
        self.in_use.insert(slot);
        Ok(slot)
    }

    /// The slot to offer a connection that has not authorized yet, without holding it: the
    /// first free slot (in [`allocate_slot`](Self::allocate_slot)'s order) that is not
    /// `offered` to another such connection, or the first free slot when every one looked at
    /// is. Refused as `allocate_slot` would be.
    pub fn peek_slot(&self, offered: impl Fn(u32) -> bool) -> Result<u32, StratumError> {
        let mut free = self.free.iter().copied().chain(self.next_slot..self.carving.slots()).take(PEEK_SCAN);
        let first = free.next();
        match first {
            Some(first) if offered(first) => Ok(free.find(|&s| !offered(s)).unwrap_or(first)),
            Some(first) => Ok(first),
            None if self.carving.slot_bytes == 0 => {
                Err(StratumError::Exhausted("extranonce2 too short to carve miner slots"))
            }
            None => Err(StratumError::Exhausted("every miner slot is in use")),
        }
    }

    /// Takes `slot` (one [`peek_slot`](Self::peek_slot) offered) if it is still free; false
    /// when it is in use, 0, or beyond the carving.
    pub fn take_slot(&mut self, slot: u32) -> bool {
        if slot == 0 || slot >= self.carving.slots() || self.in_use.contains(&slot) {
            return false;
        }
        if let Some(i) = self.free.iter().position(|&s| s == slot) {
            self.free.remove(i);
        } else if slot >= self.next_slot {
            self.free.extend(self.next_slot..slot);
            self.next_slot = slot + 1;
        } else {
            return false;
        }
        self.in_use.insert(slot);
        true
    }

    /// Gives a slot back; the caller does this only once no job of that miner is live.
    pub fn release_slot(&mut self, slot: u32) {
        if self.in_use.remove(&slot) {
            self.free.push_back(slot);
        }
    }

    pub fn slots_in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn carving_by_size() {
        for (size, slot_bytes) in [(0, 0), (2, 0), (3, 0), (4, 1), (7, 1), (8, 2), (16, 2)] {
            let c = Carving::new(size);
            assert_eq!(c.slot_bytes(), slot_bytes, "size {size}");
            assert_eq!(c.extranonce2(0, 1).len(), size.max(c.slot_bytes()));
        }
        let c = Carving::new(4);
        assert_eq!(c.extranonce2(3, 0x0102), vec![3, 0, 1, 2]);
        assert_eq!(c.split(&[3, 0, 1, 2]), Some((3, 0x0102)));
        assert_eq!(Carving::new(2).extranonce2(0, 0x0102), vec![1, 2]);
        let c = Carving::new(12);
        assert_eq!(c.extranonce2(0x0203, 5), vec![2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(c.split(&c.extranonce2(0x0203, u64::MAX)), Some((0x0203, u64::MAX)));
        assert_eq!(c.split(&[1, 2]), None);
    }

    #[test]
    fn exhaustion_is_refused() {
        let mut s = ExtranonceSpace::new(1);
        for i in 0..256u32 {
            assert_eq!(s.next_own().unwrap(), vec![i as u8]);
        }
        assert!(matches!(s.next_own(), Err(StratumError::Exhausted(_))));
        assert!(matches!(s.allocate_slot(), Err(StratumError::Exhausted(_))), "no slots under 4 bytes");

        let mut s = ExtranonceSpace::new(4);
        let slots: Vec<u32> = (0..255).map(|_| s.allocate_slot().unwrap()).collect();
        assert_eq!(slots, (1..256).collect::<Vec<_>>());
        assert!(s.allocate_slot().is_err());
        s.release_slot(7);
        s.release_slot(7);
        assert_eq!(s.allocate_slot().unwrap(), 7);
        assert!(s.allocate_slot().is_err());
        assert_eq!(s.own_left(), 1 << 24);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Own,
        Allocate,
        Release(usize),
        /// Peek (with `offered` slots below this skipped), then take.
        PeekTake(u32),
        Take(u32),
    }

    #[test]
    fn offered_slots_are_not_held() {
        let mut s = ExtranonceSpace::new(4);
        // Any number of offers to connections still in their handshake hold nothing.
        assert_eq!(s.peek_slot(|_| false).unwrap(), 1);
        assert_eq!(s.peek_slot(|slot| slot < 3).unwrap(), 3, "slots offered to others are skipped");
        assert_eq!(s.peek_slot(|_| true).unwrap(), 1, "when all are offered, the first is shared");
        assert_eq!(s.slots_in_use(), 0);
        assert!(s.take_slot(3));
        assert!(!s.take_slot(3), "taken once");
        assert_eq!(s.allocate_slot().unwrap(), 1);
        assert_eq!(s.allocate_slot().unwrap(), 2);
        assert_eq!(s.allocate_slot().unwrap(), 4);
        assert!(!s.take_slot(0) && !s.take_slot(256));
        assert!(matches!(ExtranonceSpace::new(3).peek_slot(|_| false), Err(StratumError::Exhausted(_))));
    }

    proptest! {
        /// Whatever the order of requests, no two handed-out (slot, counter) pairs collide:
        /// slot 0's values are distinct, no live miner slot is 0 or held twice, and no value of
        /// slot 0 falls in a miner's slot.
        #[test]
        fn no_two_pairs_collide(size in 1usize..10, ops in proptest::collection::vec(prop_oneof![
            3 => Just(Op::Own), 2 => Just(Op::Allocate), 1 => (0usize..64).prop_map(Op::Release),
            1 => (0u32..300).prop_map(Op::PeekTake), 1 => (0u32..300).prop_map(Op::Take)], 0..400)) {
            let mut s = ExtranonceSpace::new(size);
            let carving = s.carving();
            let mut own = HashSet::new();
            let mut live: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Own => if let Ok(e2) = s.next_own() {
                        prop_assert_eq!(e2.len(), size);
                        prop_assert_eq!(carving.split(&e2).map(|(slot, _)| slot), Some(0));
                        prop_assert!(own.insert(e2));
                    },
                    Op::Allocate => if let Ok(slot) = s.allocate_slot() {
                        prop_assert!(slot != 0 && slot < carving.slots());
                        prop_assert!(!live.contains(&slot));
                        live.push(slot);
                    },
                    Op::PeekTake(below) => if let Ok(slot) = s.peek_slot(|slot| slot < below) {
                        prop_assert!(s.take_slot(slot), "a peeked slot is free");
                        prop_assert!(slot != 0 && !live.contains(&slot));
                        live.push(slot);
                    },
                    Op::Take(slot) => if s.take_slot(slot) {
                        prop_assert!(slot != 0 && slot < carving.slots());
                        prop_assert!(!live.contains(&slot));
                        live.push(slot);
                    } else {
                        prop_assert!(slot == 0 || slot >= carving.slots() || live.contains(&slot));
                    },
                    Op::Release(i) => if !live.is_empty() {
                        let slot = live.remove(i % live.len());
                        s.release_slot(slot);
                    },
                }
            }
            prop_assert_eq!(s.slots_in_use(), live.len());
            for e2 in &own {
                let prefix = &e2[..carving.slot_bytes()];
                prop_assert!(live.iter().all(|&slot| carving.slot_prefix(slot) != prefix));
            }
        }
    }
}
