//! Nonce search: the `Backend` interface shared by the GPU (wgpu) and CPU searches, the search
//! job and its report, CPU verification of every hit, and backend selection.
//!
//! A backend searches nonces `start..start + count` of a header template (the template's own
//! nonce field is ignored) for hashes at or below a target, under each of the job's versions:
//! the template's own and, for a version-rolled job, every combination of its `rolled` bits
//! (k = 2^bits versions, `SearchJob::versions`; a range of n nonces is n·k hashes). Whatever
//! the backend, every hit it reports has been re-hashed on the CPU with the reference sha256d
//! (`verify_hit`), so a GPU result is never trusted unverified. Hits come back sorted by
//! nonce, then version.

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
    #[error("rolled version bits {0:#010x} are more than {MAX_ROLLED_BITS} or outside the BIP 320 mask")]
    BadRolledBits(u32),
}

/// The most version bits one search rolls (k <= 16 versions per nonce): the cap a node checks
/// before it allocates anything for an assignment.
pub const MAX_ROLLED_BITS: u32 = hashgrid_common::message::MAX_ROLLED_BITS;

/// Nonces `start..start + count` of `header`, under each of its versions (`versions`),
/// searched for hashes meeting `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchJob {
    pub header: Header,
    pub target: Target,
    pub start: u32,
    pub count: u64,
    /// The version bits rolled (inside the BIP 320 mask, at most `MAX_ROLLED_BITS`): 0 for the
    /// header's own version only.
    pub rolled: u32,
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
        Ok(SearchJob { header, target, start, count, rolled: 0 })
    }

    /// This job under every combination of the `rolled` version bits, checking them.
    pub fn with_rolled(self, rolled: u32) -> Result<Self, SearchError> {
        if !hashgrid_common::message::rolled_bits_are_valid(rolled) {
            return Err(SearchError::BadRolledBits(rolled));
        }
        Ok(SearchJob { rolled, ..self })
    }

    /// The versions searched, the header's own first (k = 2^`rolled.count_ones()` of them).
    pub fn versions(&self) -> Vec<u32> {
        hashgrid_common::message::rolled_versions(self.header.version, self.rolled)
    }

    /// The versions searched per nonce.
    pub fn version_count(&self) -> u64 {
        1 << self.rolled.count_ones()
    }

    /// Hashes in the whole job: nonces times versions.
    pub fn hashes(&self) -> u64 {
        self.count * self.version_count()
    }

    /// This job's range under one version only.
    pub fn for_version(&self, version: u32) -> SearchJob {
        SearchJob { header: Header { version, ..self.header }, rolled: 0, ..*self }
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

/// A nonce and version whose header hash meets the target, verified on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    pub nonce: u32,
    pub version: u32,
    pub hash: BlockHash,
}

/// What a search did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchReport {
    /// Hashes done: nonces times versions (equals `SearchJob::hashes` unless cancelled).
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
    /// Searches the job's range under each of its versions. Stops early, reporting the hashes
    /// done so far, once `cancel` is set; otherwise hashes exactly `job.hashes()` and reports
    /// every hit.
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

/// Re-hashes `nonce` of the job's header (its own version) with the reference sha256d;
/// `Some` if it meets the target. Every backend passes its candidates through here (with
/// `SearchJob::for_version` for a rolled version) before reporting them.
pub fn verify_hit(job: &SearchJob, nonce: u32) -> Option<Hit> {
    let hash = job.header.with_nonce(nonce).block_hash();
    job.target.is_met_by(&hash).then_some(Hit { nonce, version: job.header.version, hash })
}

/// Searches a version-rolled job one version at a time with `search` (the single-version
/// search of a backend that shares nothing across versions), each version's search told the
/// next (the caller's `next` after the last). Cancelled part way, it reports exactly the
/// hashes done (the versions finished, and part of the one under way).
pub fn search_each_version(
    job: &SearchJob,
    next: Option<&SearchJob>,
    cancel: &AtomicBool,
    mut search: impl FnMut(&SearchJob, Option<&SearchJob>, &AtomicBool) -> Result<SearchReport, SearchError>,
) -> Result<SearchReport, SearchError> {
    let started = std::time::Instant::now();
    let versions = job.versions();
    let (mut hashes, mut hits) = (0, Vec::new());
    for (i, &version) in versions.iter().enumerate() {
        let one = job.for_version(version);
        let after = match versions.get(i + 1) {
            Some(&v) => Some(job.for_version(v)),
            None => next.map(|n| n.for_version(n.header.version)),
        };
        let report = search(&one, after.as_ref(), cancel)?;
        hashes += report.hashes;
        hits.extend(report.hits);
        if report.hashes < one.count {
            break;
        }
    }
    hits.sort();
    Ok(SearchReport { hashes, elapsed: started.elapsed(), hits })
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
