//! Fuzzes the Stratum V1 codec and job builder.
//!
//! The first input byte picks how the rest is cut into chunks and the extranonce sizes; the
//! rest is a byte stream as a pool or miner might send it. The stream goes through a
//! `LineDecoder` and every line through `Message::from_line`. The properties checked:
//!
//! - nothing panics: a refused line or an over-long one is an error, never a crash;
//! - the chunking does not matter: the decoder yields the same lines however the stream is cut;
//! - canonical writing is idempotent: a decoded message written and read again is written the
//!   same way;
//! - every `mining.notify` that decodes builds a job whose coinbase, merkle root and header
//!   can be made for any extranonce2 of the job's size, and every `mining.submit` against the
//!   newest job is checked by the share verifier without panicking; a share that passes meets
//!   its target.

#![no_main]

use hashgrid_common::stratum::{Job, LineDecoder, Message, Method, ShareVerifier, Submit};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fn lines(pieces: impl Iterator<Item = Vec<u8>>) -> (Vec<Vec<u8>>, bool) {
    let mut dec = LineDecoder::with_cap(CAP);
    let mut out = Vec::new();
    for piece in pieces {
        if dec.push(&piece).is_err() {
            return (out, false);
        }
        while let Some(line) = dec.next_line() {
            assert!(line.len() <= CAP + 1, "a line longer than the cap came out");
            out.push(line);
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let chunk = 1 + usize::from(seed & 0x3f);
    let (whole, whole_ok) = lines(std::iter::once(stream.to_vec()));
    let (chunked, chunked_ok) = lines(stream.chunks(chunk).map(<[u8]>::to_vec));
    assert_eq!(whole_ok, chunked_ok);
    if whole_ok {
        assert_eq!(whole, chunked);
    }

    let extranonce1 = vec![0xc8; usize::from(seed >> 6)];
    let extranonce2_size = 1 + usize::from(seed >> 6);
    let mut verifier = ShareVerifier::new(4, 7000);
    let mut difficulty = 1.0;
    for line in &whole {
        let Ok(message) = Message::from_line(line) else { continue };
        let canonical = message.to_line();
        let again = Message::from_line(canonical.as_bytes()).expect("a canonical line must decode");
        assert_eq!(again.to_line(), canonical, "canonical writing is not idempotent");
        let Message::Call { method, .. } = message else { continue };
        match method {
            Method::SetDifficulty(d) => difficulty = d,
            Method::Notify(notify) => {
                let Ok(job) = Job::new(notify, extranonce1.clone(), extranonce2_size, difficulty, 0x1fff_e000) else {
                    continue;
                };
                let e2 = vec![0x5a; extranonce2_size];
                let coinbase = job.coinbase(&e2).expect("extranonce2 of the job's size");
                assert_eq!(coinbase.len(), job.notify.coinb1.len() + extranonce1.len() + e2.len() + job.notify.coinb2.len());
                let header = job.template(&e2).expect("a template");
                assert_eq!(header.merkle_root, job.merkle_root(&e2).unwrap());
                verifier.add_job(job);
            }
            Method::Submit(submit) => {
                if let Ok(accepted) = verifier.check(&submit) {
                    assert!(accepted.share_target.is_met_by(&accepted.hash));
                    let Submit { job_id, .. } = submit;
                    assert!(verifier.live_job(&job_id).is_some());
                }
            }
            _ => {}
        }
    }
});
