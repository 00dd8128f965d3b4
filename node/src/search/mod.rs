//! Nonce search: the `Backend` interface shared by the GPU (wgpu) and CPU searches, the search
//! job and its report, CPU verification of every hit, and backend selection.
//!
//! A backend searches nonces `start..start + count` of a header template (the template's own
//! nonce field is ignored) for hashes at or below a target. Whatever the backend, every hit it
//! reports has been re-hashed on the CPU with the reference sha256d (`verify_hit`), so a GPU
//! result is never trusted unverified. Hits come back sorted by nonce.

pub mod cpu;
pub mod gpu;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hashgrid_common::{BlockHash, Header, Target};
use serde::Serialize;

/// The number of nonces in a header: 2^32.
pub const NONCE_SPACE: u64 = 1 << 32;

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("nonce count must be at least 1")]
    EmptyRange,
    #[error("nonce range {start}+{count} goes past nonce 4294967295")]
    RangePastEnd { start: u32, count: u64 },
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("no adapter matches {0:?} (see `hashgrid-node devices`)")]
    UnknownAdapter(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("thread count must be at least 1")]
    NoThreads,
}

/// Nonces `start..start + count` of `header`, searched for hashes meeting `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchJob {
    pub header: Header,
    pub target: Target,
    pub start: u32,
    pub count: u64,
}

impl SearchJob {
    /// A job, checking the range lies inside the 2^32 nonces.
    pub fn new(header: Header, target: Target, start: u32, count: u64) -> Result<Self, SearchError> {
        if count == 0 {
            return Err(SearchError::EmptyRange);
        }
        if start as u64 + count > NONCE_SPACE {
            return Err(SearchError::RangePastEnd { start, count });
        }
        Ok(SearchJob { header, target, start, count })
    }

    /// The last nonce of the range (inclusive).
    pub fn last_nonce(&self) -> u32 {
        (self.start as u64 + self.count - 1) as u32
    }

    /// The sub-range `offset..offset + count` of this job (relative to `start`).
    pub fn slice(&self, offset: u64, count: u64) -> SearchJob {
        debug_assert!(offset + count <= self.count);
        SearchJob { start: (self.start as u64 + offset) as u32, count, ..*self }
    }
}

/// A nonce whose header hash meets the target, verified on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    pub nonce: u32,
    pub hash: BlockHash,
}

/// What a search did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchReport {
    /// Nonces hashed (equals the job's count unless cancelled).
    pub hashes: u64,
    pub elapsed: Duration,
    /// Verified hits, sorted by nonce.
    pub hits: Vec<Hit>,
}

impl SearchReport {
    /// Hashes per second.
    pub fn hashrate(&self) -> f64 {
        self.hashes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Which kind of device a backend runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Gpu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        })
    }
}

/// A nonce search engine bound to one device.
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;
    /// A human-readable device name (adapter name, or CPU model and threads).
    fn device(&self) -> String;
    /// Searches the job's range. Stops early, reporting the hashes done so far, once `cancel`
    /// is set; otherwise hashes exactly `job.count` nonces and reports every hit.
    fn search(&mut self, job: &SearchJob, cancel: &AtomicBool) -> Result<SearchReport, SearchError>;
    /// `search`, told that the caller's next search will be `next`: a backend with a queue
    /// (the GPU) starts on `next` before it returns, so the device does not wait for the host
    /// between slices. A search that turns out to differ from `next` still gets exactly its
    /// own range searched. By default, plain `search`.
    fn search_ahead(
        &mut self,
        job: &SearchJob,
        next: Option<&SearchJob>,
        cancel: &AtomicBool,
    ) -> Result<SearchReport, SearchError> {
        let _ = next;
        self.search(job, cancel)
    }
}

/// Re-hashes `nonce` of the job's header with the reference sha256d; `Some` if it meets the
/// target. Every backend passes its candidates through here before reporting them.
pub fn verify_hit(job: &SearchJob, nonce: u32) -> Option<Hit> {
    let hash = job.header.with_nonce(nonce).block_hash();
    job.target.is_met_by(&hash).then_some(Hit { nonce, hash })
}

/// What `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// A hardware GPU if one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A GPU adapter; a software one (lavapipe/llvmpipe) only if no hardware GPU exists.
    Gpu,
}

/// Opens the backend `choice` asks for. `adapter` picks a GPU by index or name; `threads`
/// sizes the CPU backend (default: all cores).
pub fn open_backend(
    choice: BackendChoice,
    adapter: Option<&str>,
    threads: Option<usize>,
) -> Result<Box<dyn Backend>, SearchError> {
    let cpu = || -> Result<Box<dyn Backend>, SearchError> {
        Ok(Box::new(cpu::CpuBackend::new(threads.unwrap_or_else(cpu::default_threads))?))
    };
    match choice {
        BackendChoice::Cpu => cpu(),
        BackendChoice::Gpu => Ok(Box::new(gpu::GpuBackend::open(adapter, true)?)),
        BackendChoice::Auto => match gpu::GpuBackend::open(adapter, false) {
            Ok(gpu) => Ok(Box::new(gpu)),
            Err(SearchError::UnknownAdapter(name)) => Err(SearchError::UnknownAdapter(name)),
            Err(_) => cpu(),
        },
    }
}
