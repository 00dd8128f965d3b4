//! The search worker: one dedicated thread that owns one device's backend for the life of the
//! node (a compute service; a node runs one per device).
//!
//! It opens the backend, measures its rate (about a second of searching, as `bench` does),
//! then takes assignments from a queue in order and searches each in slices worth about a
//! quarter of a second, so a revoked range stops quickly and hits are reported as they are
//! found rather than at the end of a range. Everything it learns goes back as `WorkerEvent`s
//! tagged with its device, in order: a range's hits always come before its `Finished`, and a
//! failure comes after everything the worker reported searched. A slice's hits are reported
//! only if the whole slice was searched, so the nonces past the last `Progress` of a failed
//! worker are exactly the ones still to search.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hashgrid_common::message::{Assignment, AssignmentId};
use hashgrid_common::{Header, Target};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::scheduler::DeviceId;
use crate::search::{Backend, BackendKind, NONCE_SPACE, SearchError, SearchJob};

/// How long one slice of a range should take.
pub(crate) const SLICE_TARGET: Duration = Duration::from_millis(250);
/// The smallest slice, in nonces.
const MIN_SLICE: u64 = 1 << 12;

/// What the worker found out about its backend before taking work.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    pub kind: BackendKind,
    pub device: String,
    /// Measured hashes per second.
    pub hashrate: f64,
}

/// Opens a device's backend, on the worker thread.
pub(crate) type Opener = Box<dyn FnOnce() -> Result<Box<dyn Backend>, SearchError> + Send>;

/// One range (or a piece of one) to search.
#[derive(Debug)]
pub(crate) struct Work {
    /// The node's own number for this piece of work, unique for the node's life (assignment
    /// ids are not: a restarted coordinator may reuse them).
    pub ticket: u64,
    pub assignment: Assignment,
    pub cancel: Arc<AtomicBool>,
}

/// What the worker reports.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// A verified hit in a range: its nonce under one of the range's versions.
    Hit { assignment: Assignment, version: u32, nonce: u32 },
    /// A slice of the piece `ticket` was searched (its hits already reported): a rate sample.
    Progress { ticket: u64, hashes: u64, elapsed: Duration },
    /// A range ended: searched in full (`complete`) or cancelled.
    Finished { ticket: u64, assignment: AssignmentId, hashes: u64, complete: bool },
    /// A range that cannot be searched (it runs past the last nonce, or is empty).
    Invalid { ticket: u64, assignment: AssignmentId, error: SearchError },
    /// The backend failed; the worker has stopped.
    Failed(SearchError),
}

/// A worker event and the device it comes from.
#[derive(Debug)]
pub(crate) struct DeviceEvent {
    pub device: DeviceId,
    pub event: WorkerEvent,
}

/// The sending side of the events channel, for one device.
#[derive(Debug)]
struct Events {
    device: DeviceId,
    tx: tokio_mpsc::UnboundedSender<DeviceEvent>,
}

impl Events {
    /// `false` once the receiver is gone.
    fn send(&self, event: WorkerEvent) -> bool {
        self.tx.send(DeviceEvent { device: self.device, event }).is_ok()
    }
}

/// The handle to the worker thread.
#[derive(Debug)]
pub(crate) struct Worker {
    work: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread for `device`; `ready` resolves once the backend is open and measured.
    pub fn start(
        device: DeviceId,
        open: Opener,
        measure_for: Duration,
        events: tokio_mpsc::UnboundedSender<DeviceEvent>,
    ) -> std::io::Result<(Worker, oneshot::Receiver<Result<Ready, SearchError>>)> {
        let (work_tx, work_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let events = Events { device, tx: events };
        let thread = std::thread::Builder::new().name(format!("hashgrid-search-{device}")).spawn(move || {
            let opened = open().and_then(|mut backend| measure(backend.as_mut(), measure_for).map(|m| (backend, m)));
            match opened {
                Ok((backend, (hashrate, slice))) => {
                    let ready = Ready { kind: backend.kind(), device: backend.device(), hashrate };
                    if ready_tx.send(Ok(ready)).is_ok() {
                        serve(backend, slice, &work_rx, &events);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        Ok((Worker { work: Some(work_tx), thread: Some(thread) }, ready_rx))
    }

    /// Queues a range; `false` if the worker has stopped.
    pub fn submit(&self, work: Work) -> bool {
        self.work.as_ref().is_some_and(|tx| tx.send(work).is_ok())
    }

    /// Closes the queue and waits (at most `patience`) for the thread to finish its slice.
    /// The caller cancels the running range first.
    pub async fn stop(mut self, patience: Duration) {
        self.work = None;
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(patience, joined).await.is_err() {
                tracing::warn!("the search thread is still busy; leaving it behind");
            }
        }
    }
}

/// Measures the backend for about `budget`: slices double until one takes a tenth of the
/// budget, then the rest of the budget is measured. Returns the rate and the slice size that
/// takes about `SLICE_TARGET`.
fn measure(backend: &mut dyn Backend, budget: Duration) -> Result<(f64, u64), SearchError> {
    // Any header will do; the target is hard enough that hits are rare.
    let header = Header::from_bytes(&[0x5a; 80]);
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let mut slice = MIN_SLICE;
    let (mut start, mut hashes, mut elapsed) = (0u64, 0u64, Duration::ZERO);
    let mut warm = false;
    loop {
        if start + slice > NONCE_SPACE {
            start = 0;
        }
        let report = backend.search(&SearchJob::new(header, Target::DIFFICULTY_1, start as u32, slice)?, &cancel)?;
        start += slice;
        if warm {
            hashes += report.hashes;
            elapsed += report.elapsed;
        } else if report.elapsed >= budget / 10 || started.elapsed() >= budget / 2 {
            warm = true;
        } else {
            slice = (slice * 2).min(NONCE_SPACE);
        }
        if started.elapsed() >= budget && hashes > 0 {
            break;
        }
    }
    let hashrate = hashes as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok((hashrate, slice_for(hashrate)))
}

/// The slice size that takes about `SLICE_TARGET` at `hashrate`.
fn slice_for(hashrate: f64) -> u64 {
    ((hashrate * SLICE_TARGET.as_secs_f64()) as u64).clamp(MIN_SLICE, NONCE_SPACE)
}

/// The search of a queued range: nonces `start..start + count` of its header, under each of
/// its versions, for shares.
fn search_job(assignment: &Assignment) -> Result<SearchJob, SearchError> {
    SearchJob::new(assignment.header, assignment.share_target, assignment.start, assignment.count)?
        .with_rolled(assignment.rolled)
}

/// Searches queued ranges until the queue closes or the events receiver is gone. Each slice
/// announces the next one to the backend (`Backend::search_ahead`): the next slice of the
/// range, or, for a range's last slice, the first slice of the next range if one is already
/// queued.
fn serve(mut backend: Box<dyn Backend>, mut slice: u64, work: &mpsc::Receiver<Work>, events: &Events) {
    // A range taken off the queue early, to announce its first slice.
    let mut queued: Option<Work> = None;
    while let Some(Work { ticket, assignment, cancel }) = queued.take().or_else(|| work.recv().ok()) {
        let job = match search_job(&assignment) {
            Ok(job) => job,
            Err(error) => {
                if !events.send(WorkerEvent::Invalid { ticket, assignment: assignment.id, error }) {
                    return;
                }
                continue;
            }
        };
        // Slices are counted in nonces (each hashed under every version); rates in hashes.
        let versions = job.version_count();
        let mut done = 0u64;
        let mut complete = true;
        // The size announced for the next slice, which the backend may have started on.
        let mut announced: Option<u64> = None;
        while done < job.count {
            if cancel.load(Ordering::Relaxed) {
                complete = false;
                break;
            }
            let count = announced.take().unwrap_or(slice / versions).max(1).min(job.count - done);
            let after = done + count;
            let next = if after < job.count {
                Some(job.slice(after, (slice / versions).max(1).min(job.count - after)))
            } else {
                queued = queued.or_else(|| work.try_recv().ok());
                queued
                    .as_ref()
                    .and_then(|w| search_job(&w.assignment).ok())
                    .map(|j| j.slice(0, (slice / j.version_count()).max(1).min(j.count)))
            };
            let report = match backend.search_ahead(&job.slice(done, count), next.as_ref(), &cancel) {
                Ok(report) => report,
                Err(e) => {
                    let _ = events.send(WorkerEvent::Failed(e));
                    return;
                }
            };
            done += report.hashes / versions;
            for hit in &report.hits {
                if !events.send(WorkerEvent::Hit { assignment, version: hit.version, nonce: hit.nonce }) {
                    return;
                }
            }
            if !events.send(WorkerEvent::Progress { ticket, hashes: report.hashes, elapsed: report.elapsed }) {
                return;
            }
            if report.hashes < count * versions {
                complete = false;
                break;
            }
            if count == slice / versions && !report.elapsed.is_zero() {
                slice = slice_for(report.hashrate());
            }
            announced = next.filter(|_| after < job.count).map(|next| next.count);
        }
        let finished = WorkerEvent::Finished { ticket, assignment: assignment.id, hashes: done * versions, complete };
        if !events.send(finished) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::search::SearchReport;
    use crate::search::cpu::CpuBackend;

    /// Each call's slice and the slice it announced as next.
    type Calls = Arc<Mutex<Vec<(SearchJob, Option<SearchJob>)>>>;

    /// The CPU search, throttled to 1 MH/s so that ranges take several slices, recording its
    /// calls.
    struct Recorder {
        cpu: CpuBackend,
        calls: Calls,
    }

    impl Backend for Recorder {
        fn kind(&self) -> BackendKind {
            BackendKind::Cpu
        }

        fn device(&self) -> String {
            "recorder".into()
        }

        fn search(&mut self, job: &SearchJob, cancel: &AtomicBool) -> Result<SearchReport, SearchError> {
            let mut report = self.cpu.search(job, cancel)?;
            let floor = Duration::from_secs_f64(report.hashes as f64 / 1e6);
            if report.elapsed < floor {
                std::thread::sleep(floor - report.elapsed);
                report.elapsed = floor;
            }
            Ok(report)
        }

        fn search_ahead(
            &mut self,
            job: &SearchJob,
            next: Option<&SearchJob>,
            cancel: &AtomicBool,
        ) -> Result<SearchReport, SearchError> {
            self.calls.lock().unwrap().push((*job, next.copied()));
            self.search(job, cancel)
        }
    }

    fn range(id: u64, start: u32, count: u64) -> Assignment {
        let mut header = Header::from_bytes(&[0x22; 80]);
        header.time = id as u32;
        Assignment { id, job: id, header, share_target: Target::DIFFICULTY_1, start, count, rolled: 0 }
    }

    /// Every slice the worker searches was announced by the call before it, across the slices
    /// of a range and from one queued range to the next; the last announces nothing.
    #[tokio::test]
    async fn each_slice_is_announced_by_the_one_before() {
        let calls: Calls = Arc::default();
        let recorded = Arc::clone(&calls);
        let open: Opener = Box::new(move || Ok(Box::new(Recorder { cpu: CpuBackend::new(1)?, calls: recorded })));
        let (events_tx, mut events) = tokio_mpsc::unbounded_channel();
        let (worker, ready) = Worker::start(0, open, Duration::from_millis(200), events_tx).unwrap();
        ready.await.unwrap().unwrap();
        calls.lock().unwrap().clear();
        // At 1 MH/s a slice is about 250,000 nonces: three slices each.
        let ranges = [range(1, 0, 600_000), range(2, 5_000_000, 600_000)];
        for (ticket, assignment) in ranges.iter().enumerate() {
            let work = Work { ticket: ticket as u64, assignment: *assignment, cancel: Arc::default() };
            assert!(worker.submit(work));
        }
        let mut finished = 0;
        while finished < ranges.len() {
            if let WorkerEvent::Finished { complete, .. } = events.recv().await.unwrap().event {
                assert!(complete);
                finished += 1;
            }
        }
        worker.stop(Duration::from_secs(5)).await;

        let calls = calls.lock().unwrap().clone();
        assert!(calls.len() >= 6, "several slices per range: {calls:?}");
        for pair in calls.windows(2) {
            assert_eq!(pair[0].1, Some(pair[1].0), "each slice is the one announced before it");
        }
        assert_eq!(calls.last().unwrap().1, None, "nothing is queued after the last range");
        let searched: u64 = calls.iter().map(|(job, _)| job.count).sum();
        assert_eq!(searched, 1_200_000, "every nonce once");
        let second = calls.iter().position(|(job, _)| job.header == ranges[1].header).unwrap();
        assert_eq!(calls[second].0.start, 5_000_000, "range 2's first slice was announced by range 1's last");
    }
}
