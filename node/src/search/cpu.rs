//! The CPU search backend: the nonce range split across N threads, each hashing from the
//! header midstate with the portable SHA-256 compression.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hashgrid_common::sha256::{compress, header_tail_block, second_hash};
use hashgrid_common::target::state_meets;

use super::{Backend, BackendKind, Hit, SearchError, SearchJob, SearchReport, verify_hit};

/// All the cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Searches with `threads` OS threads.
#[derive(Debug)]
pub struct CpuBackend {
    threads: usize,
}

impl CpuBackend {
    pub fn new(threads: usize) -> Result<Self, SearchError> {
        if threads == 0 {
            return Err(SearchError::NoThreads);
        }
        Ok(CpuBackend { threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Nonces between cancellation checks.
const CHUNK: u64 = 1 << 16;

/// Searches one contiguous slice; returns hashes done and candidate nonces.
fn search_slice(job: &SearchJob, cancel: &AtomicBool) -> (u64, Vec<u32>) {
    let midstate = job.header.midstate().0;
    let tail = job.header.tail_words();
    let target = job.target.to_le_words();
    let mut found = Vec::new();
    let mut done = 0u64;
    while done < job.count {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let n = CHUNK.min(job.count - done);
        let first = job.start as u64 + done;
        for nonce in first..first + n {
            let nonce = nonce as u32;
            let mut state = midstate;
            compress(&mut state, &header_tail_block(&tail, nonce));
            if state_meets(&second_hash(&state), &target) {
                found.push(nonce);
            }
        }
        done += n;
    }
    (done, found)
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    fn search(&mut self, job: &SearchJob, cancel: &AtomicBool) -> Result<SearchReport, SearchError> {
        let started = Instant::now();
        let threads = (self.threads as u64).min(job.count.div_ceil(CHUNK)).max(1);
        let per = job.count.div_ceil(threads);
        let results: Vec<(u64, Vec<u32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| i * per)
                .take_while(|&offset| offset < job.count)
                .map(|offset| {
                    let slice = job.slice(offset, per.min(job.count - offset));
                    s.spawn(move || search_slice(&slice, cancel))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("search thread panicked")).collect()
        });
        let hashes = results.iter().map(|r| r.0).sum();
        let mut hits: Vec<Hit> = results
            .into_iter()
            .flat_map(|r| r.1)
            .filter_map(|nonce| verify_hit(job, nonce))
            .collect();
        hits.sort();
        Ok(SearchReport { hashes, elapsed: started.elapsed(), hits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashgrid_common::{CompactTarget, Header, Target};

    const GENESIS_HEX: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

    #[test]
    fn finds_the_genesis_nonce() {
        let header = Header::from_hex(GENESIS_HEX).unwrap();
        let target = Target::from_compact(CompactTarget(0x1d00ffff)).unwrap();
        let job = SearchJob::new(header.with_nonce(0), target, 2_083_236_893 - 1000, 3000).unwrap();
        let report = CpuBackend::new(2).unwrap().search(&job, &AtomicBool::new(false)).unwrap();
        assert_eq!(report.hashes, 3000);
        assert_eq!(report.hits.len(), 1);
        assert_eq!(report.hits[0].nonce, 2_083_236_893);
        assert_eq!(report.hits[0].hash, header.block_hash());
    }

    #[test]
    fn easy_target_hits_match_brute_force() {
        let header = Header::from_hex(GENESIS_HEX).unwrap();
        let target = Target::from_difficulty(1.0 / 1_048_576.0).unwrap();
        let job = SearchJob::new(header, target, u32::MAX - 99_999, 100_000).unwrap();
        let report = CpuBackend::new(3).unwrap().search(&job, &AtomicBool::new(false)).unwrap();
        let expected: Vec<u32> = (u32::MAX - 99_999..=u32::MAX)
            .filter(|&n| target.is_met_by(&header.with_nonce(n).block_hash()))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(report.hits.iter().map(|h| h.nonce).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn cancel_stops_early() {
        let header = Header::from_hex(GENESIS_HEX).unwrap();
        let job = SearchJob::new(header, Target::DIFFICULTY_1, 0, 1 << 30).unwrap();
        let report = CpuBackend::new(1).unwrap().search(&job, &AtomicBool::new(true)).unwrap();
        assert_eq!(report.hashes, 0);
    }
}
