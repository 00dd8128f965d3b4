//! The node-local scheduler: which of the node's compute services searches which part of an
//! assigned range. Pure bookkeeping, no threads or I/O, so every rule is a unit test.
//!
//! Owns: each device's class and current rate, the split of a range into contiguous pieces
//! in proportion to those rates (GPUs first, the CPU after them, and a device whose piece
//! would be too small to be worth a dispatch left out, the CPU before any GPU), how far each
//! piece has been searched, the re-split of a failed device's unsearched remainders among the
//! devices left, and when a range is done: only once every one of its pieces is.
//!
//! The caller (the node service) submits the pieces it is handed to the devices' workers,
//! feeds back their progress, ends and failures, and sends `RangeDone` when told to.

use std::collections::{BTreeSet, HashMap};

use hashgrid_common::message::{Assignment, AssignmentId};

/// A device's position in the node's device list.
pub(crate) type DeviceId = usize;

/// Pieces smaller than this are not worth a device of their own (a GPU dispatch, a CPU
/// fan-out); their nonces go to the devices ahead of them.
pub(crate) const MIN_PIECE: u64 = 1 << 16;

/// What a device is, for routing: GPUs take work first, the CPU is the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceClass {
    Gpu,
    Cpu,
}

/// A part of a range for one device: `assignment` is the range's own, with `start` and
/// `count` narrowed to the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The node's own number for the piece, unique for the scheduler's life.
    pub ticket: u64,
    pub device: DeviceId,
    pub assignment: Assignment,
}

/// What the end of a piece means for its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceEnd {
    /// Not a piece of a range still held (revoked, replaced or cleared): nothing to do.
    Stale,
    /// Other pieces of the range are still open.
    Pending,
    /// The last open piece of the range: the whole range is searched.
    RangeDone { assignment: AssignmentId, hashes: u64 },
    /// The piece stopped short without being cancelled, so its range cannot be completed; the
    /// range is forgotten and its other pieces should be cancelled.
    RangeDropped { assignment: AssignmentId },
}

/// What a device failure changes: the pieces re-issued to the devices left, and the ends of
/// pieces the device had searched in full without reporting it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Failover {
    pub pieces: Vec<Piece>,
    pub ends: Vec<PieceEnd>,
}

/// No device is left to search on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every compute device has failed")]
pub(crate) struct NoDevices;

#[derive(Debug)]
struct Device {
    class: DeviceClass,
    /// Hashes per second.
    rate: f64,
    alive: bool,
}

#[derive(Debug)]
struct Range {
    /// Tells a range from an older one that had the same assignment id.
    generation: u64,
    /// Pieces not yet searched in full.
    open: BTreeSet<u64>,
    /// Hashes of the pieces (and parts of failed pieces) already searched.
    hashes: u64,
}

#[derive(Debug)]
struct PieceState {
    piece: Piece,
    generation: u64,
    /// Nonces searched from the piece's start, as its worker reported them.
    done: u64,
}

/// The scheduler over one node's devices.
#[derive(Debug)]
pub(crate) struct Scheduler {
    devices: Vec<Device>,
    ranges: HashMap<AssignmentId, Range>,
    pieces: HashMap<u64, PieceState>,
    next_ticket: u64,
    min_piece: u64,
}

impl Scheduler {
    /// A scheduler over `devices` (class and measured rate), all alive, in the node's order.
    pub fn new(devices: impl IntoIterator<Item = (DeviceClass, f64)>) -> Self {
        Self::with_min_piece(devices, MIN_PIECE)
    }

    /// As `new`, with another smallest piece.
    pub fn with_min_piece(devices: impl IntoIterator<Item = (DeviceClass, f64)>, min_piece: u64) -> Self {
        let devices = devices.into_iter().map(|(class, rate)| Device { class, rate, alive: true }).collect();
        Scheduler {
            devices,
            ranges: HashMap::new(),
            pieces: HashMap::new(),
            next_ticket: 0,
            min_piece: min_piece.max(1),
        }
    }

    /// The device's current rate estimate (hashes per second).
    pub fn rate(&self, device: DeviceId) -> f64 {
        self.devices[device].rate
    }

    pub fn set_rate(&mut self, device: DeviceId, rate: f64) {
        if rate.is_finite() && rate >= 0.0 {
            self.devices[device].rate = rate;
        }
    }

    pub fn is_alive(&self, device: DeviceId) -> bool {
        self.devices[device].alive
    }

    /// The devices that can take work, in routing order: GPUs, fastest first, then the CPU.
    pub fn routing_order(&self) -> Vec<(DeviceId, f64)> {
        let mut alive: Vec<(DeviceId, &Device)> = self.devices.iter().enumerate().filter(|(_, d)| d.alive).collect();
        alive.sort_by(|(a, da), (b, db)| {
            let class = |d: &Device| u8::from(d.class == DeviceClass::Cpu);
            class(da).cmp(&class(db)).then(db.rate.total_cmp(&da.rate)).then(a.cmp(b))
        });
        alive.into_iter().map(|(id, d)| (id, d.rate)).collect()
    }

    /// Whether the range `id` is held (assigned, not yet done, revoked or dropped).
    pub fn holds(&self, id: AssignmentId) -> bool {
        self.ranges.contains_key(&id)
    }

    /// Takes a range and splits it between the living devices; the pieces to submit. A range
    /// with the id of one still held replaces it (the old one's pieces become stale). An
    /// empty range gets no pieces; with no device left, `NoDevices`.
    pub fn assign(&mut self, assignment: Assignment) -> Result<Vec<Piece>, NoDevices> {
        let order = self.routing_order();
        if order.is_empty() {
            return Err(NoDevices);
        }
        let generation = self.next_ticket;
        self.forget(assignment.id);
        self.ranges.insert(assignment.id, Range { generation, open: BTreeSet::new(), hashes: 0 });
        Ok(self.issue(assignment, generation, assignment.start, assignment.count, &order))
    }

    /// Records that the piece `ticket` has done `hashes` more hashes (each nonce is hashed
    /// under every version of the range).
    pub fn progress(&mut self, ticket: u64, hashes: u64) {
        if let Some(state) = self.pieces.get_mut(&ticket) {
            let nonces = hashes >> state.piece.assignment.rolled.count_ones();
            state.done = (state.done + nonces).min(state.piece.assignment.count);
        }
    }

    /// The piece `ticket` ended after `hashes` hashes: searched in full (`complete`) or not.
    pub fn finished(&mut self, ticket: u64, hashes: u64, complete: bool) -> PieceEnd {
        let Some(state) = self.pieces.remove(&ticket) else { return PieceEnd::Stale };
        let id = state.piece.assignment.id;
        let Some(range) = self.ranges.get_mut(&id).filter(|r| r.generation == state.generation) else {
            return PieceEnd::Stale;
        };
        range.open.remove(&ticket);
        if !complete {
            self.forget(id);
            return PieceEnd::RangeDropped { assignment: id };
        }
        range.hashes += hashes;
        if !range.open.is_empty() {
            return PieceEnd::Pending;
        }
        let hashes = range.hashes;
        self.ranges.remove(&id);
        PieceEnd::RangeDone { assignment: id, hashes }
    }

    /// Forgets the range `id` (revoked); `false` if it was not held.
    pub fn revoke(&mut self, id: AssignmentId) -> bool {
        self.forget(id)
    }

    /// Forgets every range (the connection they belong to is gone); their ids.
    pub fn clear(&mut self) -> Vec<AssignmentId> {
        self.pieces.clear();
        self.ranges.drain().map(|(id, _)| id).collect()
    }

    /// The device has failed: it takes no more work, and the unsearched remainder of each of
    /// its open pieces is split between the devices left. `NoDevices` when none is left and
    /// some range is still held.
    pub fn device_failed(&mut self, device: DeviceId) -> Result<Failover, NoDevices> {
        let mut failover = Failover::default();
        if !std::mem::replace(&mut self.devices[device].alive, false) {
            return Ok(failover);
        }
        let order = self.routing_order();
        if order.is_empty() {
            // Nothing can finish the ranges held now.
            return if self.ranges.is_empty() { Ok(failover) } else { Err(NoDevices) };
        }
        let mut lost: Vec<u64> =
            self.pieces.iter().filter(|(_, s)| s.piece.device == device).map(|(t, _)| *t).collect();
        lost.sort_unstable();
        for ticket in lost {
            let Some(state) = self.pieces.get(&ticket) else { continue };
            let (assignment, generation, done) = (state.piece.assignment, state.generation, state.done);
            let left = assignment.count - done;
            if left == 0 {
                // Searched in full, its end lost with the device.
                failover.ends.push(self.finished(ticket, done, true));
                continue;
            }
            self.pieces.remove(&ticket);
            let Some(range) = self.ranges.get_mut(&assignment.id).filter(|r| r.generation == generation) else {
                continue;
            };
            range.open.remove(&ticket);
            range.hashes += done;
            let start = (u64::from(assignment.start) + done) as u32;
            failover.pieces.extend(self.issue(assignment, generation, start, left, &order));
        }
        Ok(failover)
    }

    /// Splits `start..start + count` of the range between `order` and registers the pieces.
    fn issue(
        &mut self,
        assignment: Assignment,
        generation: u64,
        start: u32,
        count: u64,
        order: &[(DeviceId, f64)],
    ) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (device, piece_start, piece_count) in split(start, count, order, self.min_piece) {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let piece = Piece {
                ticket,
                device,
                assignment: Assignment { start: piece_start, count: piece_count, ..assignment },
            };
            self.pieces.insert(ticket, PieceState { piece, generation, done: 0 });
            if let Some(range) = self.ranges.get_mut(&assignment.id) {
                range.open.insert(ticket);
            }
            pieces.push(piece);
        }
        pieces
    }

    /// Drops the range `id` and its pieces; `false` if it was not held.
    fn forget(&mut self, id: AssignmentId) -> bool {
        let Some(range) = self.ranges.remove(&id) else { return false };
        for ticket in range.open {
            self.pieces.remove(&ticket);
        }
        true
    }
}

/// Splits `count` nonces from `start` into contiguous pieces, one per device of `order` (in
/// that order), sized in proportion to the devices' rates; the sizes sum to `count` exactly.
/// While some piece would be under `min_piece` and more than one device is left, the last
/// such device in `order` is left out and the split is redone. Rates that are not positive
/// count as zero; if all are, the split is even.
pub(crate) fn split(start: u32, count: u64, order: &[(DeviceId, f64)], min_piece: u64) -> Vec<(DeviceId, u32, u64)> {
    if count == 0 || order.is_empty() {
        return Vec::new();
    }
    let mut devices: Vec<(DeviceId, f64)> = order.to_vec();
    loop {
        let sizes = proportional(count, &devices);
        let small = sizes.iter().rposition(|&size| size < min_piece);
        match small {
            Some(i) if devices.len() > 1 => {
                devices.remove(i);
            }
            _ => {
                let mut at = u64::from(start);
                return devices
                    .iter()
                    .zip(sizes)
                    .filter(|(_, size)| *size > 0)
                    .map(|(&(device, _), size)| {
                        let piece = (device, at as u32, size);
                        at += size;
                        piece
                    })
                    .collect();
            }
        }
    }
}

/// `count` in parts proportional to the rates: each boundary is the rounded cumulative
/// share, so the parts are never negative and always sum to `count`.
fn proportional(count: u64, devices: &[(DeviceId, f64)]) -> Vec<u64> {
    let weight = |rate: f64| if rate.is_finite() && rate > 0.0 { rate } else { 0.0 };
    let total: f64 = devices.iter().map(|&(_, rate)| weight(rate)).sum();
    let weights: Vec<f64> = devices
        .iter()
        .map(|&(_, rate)| if total > 0.0 { weight(rate) / total } else { 1.0 / devices.len() as f64 })
        .collect();
    let mut sizes = Vec::with_capacity(devices.len());
    let (mut cumulative, mut previous) = (0.0, 0u64);
    for (i, w) in weights.iter().enumerate() {
        cumulative += w;
        let boundary = if i + 1 == weights.len() {
            count
        } else {
            ((count as f64 * cumulative).round() as u64).clamp(previous, count)
        };
        sizes.push(boundary - previous);
        previous = boundary;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use hashgrid_common::{Header, Target};
    use proptest::prelude::*;

    use super::*;

    fn range(id: AssignmentId, start: u32, count: u64) -> Assignment {
        Assignment {
            id,
            job: 7,
            header: Header::from_bytes(&[3; 80]),
            share_target: Target::DIFFICULTY_1,
            start,
            count,
            rolled: 0,
        }
    }

    /// Checks the pieces tile `start..start + count` in order with no gap or overlap.
    fn assert_tiles(pieces: &[(DeviceId, u32, u64)], start: u32, count: u64) {
        let mut at = u64::from(start);
        for &(_, piece_start, piece_count) in pieces {
            assert_eq!(u64::from(piece_start), at, "{pieces:?}");
            assert!(piece_count > 0);
            at += piece_count;
        }
        assert_eq!(at, u64::from(start) + count, "{pieces:?}");
    }

    #[test]
    fn a_split_is_proportional_to_the_rates_and_sums_to_the_range() {
        let pieces = split(1_000, 1_000_000, &[(0, 3e9), (2, 1e9)], MIN_PIECE);
        assert_eq!(pieces, vec![(0, 1_000, 750_000), (2, 751_000, 250_000)]);
        let pieces = split(0, 10_000_000, &[(1, 2e6), (0, 5e6), (2, 3e6)], MIN_PIECE);
        assert_eq!(pieces, vec![(1, 0, 2_000_000), (0, 2_000_000, 5_000_000), (2, 7_000_000, 3_000_000)]);
    }

    #[test]
    fn a_split_reaches_the_last_nonce() {
        let start = u32::MAX - 999_999;
        let pieces = split(start, 1_000_000, &[(0, 1.0), (1, 1.0), (2, 1.0)], 1);
        assert_tiles(&pieces, start, 1_000_000);
        assert_eq!(pieces.iter().map(|p| p.2).collect::<Vec<_>>(), vec![333_333, 333_334, 333_333]);
        let whole = split(0, 1 << 32, &[(0, 7.0), (1, 3.0)], MIN_PIECE);
        assert_tiles(&whole, 0, 1 << 32);
    }

    #[test]
    fn a_device_whose_piece_would_be_too_small_is_left_out_last_first() {
        // The CPU (last in routing order) would get 1,000 nonces: the GPU takes them all.
        assert_eq!(split(5, 100_000, &[(1, 99e6), (0, 1e6)], MIN_PIECE), vec![(1, 5, 100_000)]);
        // Two equal devices and a range too small for two pieces: the first one keeps it.
        assert_eq!(split(0, 100_000, &[(3, 1e6), (4, 1e6)], MIN_PIECE), vec![(3, 0, 100_000)]);
        // One device always gets the range, however small.
        assert_eq!(split(9, 1, &[(2, 1e6)], MIN_PIECE), vec![(2, 9, 1)]);
    }

    #[test]
    fn unmeasured_devices_split_evenly_and_a_zero_rate_gets_nothing() {
        assert_eq!(split(0, 200_000, &[(0, 0.0), (1, f64::NAN)], 1), vec![(0, 0, 100_000), (1, 100_000, 100_000)]);
        assert_eq!(split(0, 200_000, &[(0, 0.0), (1, 5.0)], 1), vec![(1, 0, 200_000)]);
    }

    proptest! {
        #[test]
        fn every_split_tiles_its_range(
            start in any::<u32>(),
            count in 1u64..=(1 << 32),
            rates in proptest::collection::vec(0.0f64..1e10, 1..6),
            min_piece in 1u64..(1 << 20),
        ) {
            let count = count.min((1u64 << 32) - u64::from(start)).max(1);
            let order: Vec<(DeviceId, f64)> = rates.into_iter().enumerate().collect();
            let pieces = split(start, count, &order, min_piece);
            assert_tiles(&pieces, start, count);
            let devices: BTreeSet<DeviceId> = pieces.iter().map(|p| p.0).collect();
            prop_assert_eq!(devices.len(), pieces.len(), "one piece per device");
            if pieces.len() > 1 {
                prop_assert!(pieces.iter().all(|p| p.2 >= min_piece));
            }
        }
    }

    #[test]
    fn gpus_come_first_fastest_first_then_the_cpu() {
        let scheduler = Scheduler::new([(DeviceClass::Cpu, 9e9), (DeviceClass::Gpu, 1e9), (DeviceClass::Gpu, 2e9)]);
        let order: Vec<DeviceId> = scheduler.routing_order().into_iter().map(|(d, _)| d).collect();
        assert_eq!(order, vec![2, 1, 0]);
    }

    #[test]
    fn range_done_comes_only_after_every_piece() {
        let mut scheduler = Scheduler::new([(DeviceClass::Gpu, 3e6), (DeviceClass::Cpu, 1e6)]);
        let pieces = scheduler.assign(range(4, 100, 1_000_000)).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].device, pieces[0].assignment.start, pieces[0].assignment.count), (0, 100, 750_000));
        assert_eq!((pieces[1].device, pieces[1].assignment.start, pieces[1].assignment.count), (1, 750_100, 250_000));
        assert!(pieces.iter().all(|p| p.assignment.id == 4 && p.assignment.job == 7));
        assert_eq!(scheduler.finished(pieces[1].ticket, 250_000, true), PieceEnd::Pending);
        assert!(scheduler.holds(4));
        assert_eq!(
            scheduler.finished(pieces[0].ticket, 750_000, true),
            PieceEnd::RangeDone { assignment: 4, hashes: 1_000_000 }
        );
        assert!(!scheduler.holds(4));
        // A second end of the same piece (it cannot happen, but) changes nothing.
        assert_eq!(scheduler.finished(pieces[0].ticket, 750_000, true), PieceEnd::Stale);
    }

    #[test]
    fn a_failed_devices_unsearched_remainder_goes_to_the_others() {
        let mut scheduler =
            Scheduler::with_min_piece([(DeviceClass::Gpu, 2e6), (DeviceClass::Gpu, 1e6), (DeviceClass::Cpu, 1e6)], 1);
        let pieces = scheduler.assign(range(9, 0, 400_000)).unwrap();
        let sizes: Vec<(DeviceId, u32, u64)> =
            pieces.iter().map(|p| (p.device, p.assignment.start, p.assignment.count)).collect();
        assert_eq!(sizes, vec![(0, 0, 200_000), (1, 200_000, 100_000), (2, 300_000, 100_000)]);
        // The first GPU searched 50,000 nonces of its piece, then failed.
        scheduler.progress(pieces[0].ticket, 30_000);
        scheduler.progress(pieces[0].ticket, 20_000);
        let reissued = scheduler.device_failed(0).unwrap().pieces;
        let sizes: Vec<(DeviceId, u32, u64)> =
            reissued.iter().map(|p| (p.device, p.assignment.start, p.assignment.count)).collect();
        // The remainder 50,000..200,000 is split between the two left, GPU first.
        assert_eq!(sizes, vec![(1, 50_000, 75_000), (2, 125_000, 75_000)]);
        assert!(!scheduler.is_alive(0));
        // The failed piece's late end (if any) is stale; the rest complete the range.
        assert_eq!(scheduler.finished(pieces[0].ticket, 50_000, false), PieceEnd::Stale);
        assert_eq!(scheduler.finished(pieces[1].ticket, 100_000, true), PieceEnd::Pending);
        assert_eq!(scheduler.finished(reissued[0].ticket, 75_000, true), PieceEnd::Pending);
        assert_eq!(scheduler.finished(pieces[2].ticket, 100_000, true), PieceEnd::Pending);
        assert_eq!(
            scheduler.finished(reissued[1].ticket, 75_000, true),
            PieceEnd::RangeDone { assignment: 9, hashes: 400_000 }
        );
        // New ranges avoid the failed device.
        let next = scheduler.assign(range(10, 0, 1_000_000)).unwrap();
        assert!(next.iter().all(|p| p.device != 0));
        // A second failure report of the same device changes nothing.
        assert_eq!(scheduler.device_failed(0).unwrap(), Failover::default());
    }

    #[test]
    fn queued_pieces_of_a_failed_device_are_reissued_whole() {
        let mut scheduler = Scheduler::with_min_piece([(DeviceClass::Gpu, 1e6), (DeviceClass::Cpu, 1e6)], 1);
        let a = scheduler.assign(range(1, 0, 200)).unwrap();
        let b = scheduler.assign(range(2, 1_000, 200)).unwrap();
        scheduler.progress(a[0].ticket, 40);
        let reissued = scheduler.device_failed(0).unwrap().pieces;
        let parts: Vec<(AssignmentId, DeviceId, u32, u64)> =
            reissued.iter().map(|p| (p.assignment.id, p.device, p.assignment.start, p.assignment.count)).collect();
        assert_eq!(parts, vec![(1, 1, 40, 60), (2, 1, 1_000, 100)]);
        assert_eq!(scheduler.finished(a[1].ticket, 100, true), PieceEnd::Pending);
        assert_eq!(
            scheduler.finished(reissued[0].ticket, 60, true),
            PieceEnd::RangeDone { assignment: 1, hashes: 200 }
        );
        assert_eq!(scheduler.finished(b[1].ticket, 100, true), PieceEnd::Pending);
        assert_eq!(
            scheduler.finished(reissued[1].ticket, 100, true),
            PieceEnd::RangeDone { assignment: 2, hashes: 200 }
        );
    }

    #[test]
    fn a_piece_searched_in_full_before_its_device_failed_counts_as_done() {
        let mut scheduler = Scheduler::with_min_piece([(DeviceClass::Gpu, 1e6), (DeviceClass::Cpu, 1e6)], 1);
        let pieces = scheduler.assign(range(8, 0, 100)).unwrap();
        assert_eq!(scheduler.finished(pieces[1].ticket, 50, true), PieceEnd::Pending);
        scheduler.progress(pieces[0].ticket, 50);
        let failover = scheduler.device_failed(0).unwrap();
        assert_eq!(failover.pieces, vec![]);
        assert_eq!(failover.ends, vec![PieceEnd::RangeDone { assignment: 8, hashes: 100 }]);
    }

    #[test]
    fn the_last_device_failing_with_work_held_is_an_error() {
        let mut scheduler = Scheduler::new([(DeviceClass::Cpu, 1e6)]);
        assert_eq!(scheduler.device_failed(0), Ok(Failover::default()), "nothing held, nothing lost");
        let mut scheduler = Scheduler::new([(DeviceClass::Cpu, 1e6)]);
        scheduler.assign(range(1, 0, 10)).unwrap();
        assert_eq!(scheduler.device_failed(0), Err(NoDevices));
        assert_eq!(scheduler.assign(range(2, 0, 10)), Err(NoDevices));
    }

    #[test]
    fn revoke_and_replacement_make_every_piece_stale() {
        let mut scheduler = Scheduler::with_min_piece([(DeviceClass::Gpu, 1e6), (DeviceClass::Cpu, 1e6)], 1);
        let old = scheduler.assign(range(3, 0, 1_000)).unwrap();
        let new = scheduler.assign(range(3, 5_000, 1_000)).unwrap();
        assert_eq!(scheduler.finished(old[0].ticket, 500, true), PieceEnd::Stale);
        assert_eq!(scheduler.finished(old[1].ticket, 500, true), PieceEnd::Stale);
        assert!(scheduler.revoke(3));
        assert!(!scheduler.revoke(3));
        assert_eq!(scheduler.finished(new[0].ticket, 500, false), PieceEnd::Stale);
        assert_eq!(scheduler.finished(new[1].ticket, 500, true), PieceEnd::Stale);
        // A failure with nothing held re-issues nothing.
        assert_eq!(scheduler.device_failed(0), Ok(Failover::default()));
    }

    #[test]
    fn a_piece_that_stops_short_drops_its_range() {
        let mut scheduler = Scheduler::with_min_piece([(DeviceClass::Gpu, 1e6), (DeviceClass::Cpu, 1e6)], 1);
        let pieces = scheduler.assign(range(6, 0, 1_000)).unwrap();
        assert_eq!(scheduler.finished(pieces[0].ticket, 10, false), PieceEnd::RangeDropped { assignment: 6 });
        assert!(!scheduler.holds(6));
        assert_eq!(scheduler.finished(pieces[1].ticket, 500, true), PieceEnd::Stale);
    }

    #[test]
    fn clear_forgets_every_range() {
        let mut scheduler = Scheduler::new([(DeviceClass::Cpu, 1e6)]);
        let a = scheduler.assign(range(1, 0, 10)).unwrap();
        scheduler.assign(range(2, 0, 10)).unwrap();
        let mut cleared = scheduler.clear();
        cleared.sort_unstable();
        assert_eq!(cleared, vec![1, 2]);
        assert_eq!(scheduler.finished(a[0].ticket, 10, true), PieceEnd::Stale);
        assert_eq!(scheduler.device_failed(0), Ok(Failover::default()));
    }
}
