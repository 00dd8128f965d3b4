//! Fuzzes the Stratum V1 server session: arbitrary lines from a miner, between jobs and ticks.
//!
//! The input is cut at `\n`. A piece starting with byte 0x01 gives the session a job (the next
//! byte picks the previous block and the clean flag), one starting with 0x02 is a deadline
//! tick, anything else is a line from the miner. Every piece moves virtual time on by its first
//! byte in seconds. The coordinator's part: the password `t` is right, every share is recorded.
//! The properties checked:
//!
//! - nothing panics, whatever the lines and their order;
//! - every share passed on re-hashes to its hash, and the hash meets its target;
//! - no share's values are passed on twice on one job (whatever the hex spelling);
//! - a session that says Close is closed, and then has no deadline.

#![no_main]

use std::collections::HashSet;

use hashgrid_common::Hash256;
use hashgrid_common::stratum::{Notify, ServerConfig, ServerEvent, ServerJob, ServerSession, VardiffConfig};
use hashgrid_common::target::CompactTarget;
use libfuzzer_sys::fuzz_target;

fn job(tag: u64, control: u8) -> ServerJob {
    ServerJob {
        tag,
        notify: Notify {
            job_id: format!("up{tag}"),
            prev_blockhash: Hash256([control & 0x03; 32]),
            coinb1: vec![1, 2, 3],
            coinb2: vec![4, 5],
            merkle_branch: vec![Hash256([9; 32])],
            version: 0x2000_0000,
            nbits: CompactTarget(0x1d00ffff),
            ntime: 5000,
            clean_jobs: control & 0x04 != 0,
        },
        extranonce1: vec![0xc8, 0x58, 0xee, 0xac, control >> 4],
        extranonce2_size: 3,
        version_mask: 0x1fff_e000,
        pool_difficulty: Some(1.0 / 65_536.0),
        share_difficulty: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut config = ServerConfig::new("f");
    // 2^-32: nearly every header meets it, so shares pass and can repeat.
    config.vardiff = VardiffConfig { start: 1.0 / 4_294_967_296.0, min: 1.0 / 4_294_967_296.0, ..VardiffConfig::default() };
    config.vardiff.retarget_shares = 4;
    config.max_line = 4096;
    config.check().expect("a valid configuration");
    let mut session = ServerSession::new(config, 0);
    let mut now = 0u64;
    let mut tags = 0;
    let mut seen = HashSet::new();
    for piece in data.split(|&b| b == b'\n') {
        now += u64::from(piece.first().copied().unwrap_or(0)) * 1000;
        match piece {
            [0x01, control, ..] => {
                tags += 1;
                session.set_job(now, job(tags, *control)).expect("a valid job");
            }
            [0x02, ..] => session.handle_timeout(now),
            line => session.handle_line(now, line),
        }
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::Authorize { ticket, password, .. } => session.authorized(now, ticket, password.0 == "t"),
                ServerEvent::Share { ticket, share } => {
                    let a = &share.accepted;
                    assert_eq!(a.header.block_hash(), a.hash, "the header does not hash to the share's hash");
                    assert!(a.share_target.is_met_by(&a.hash), "a share above its target passed");
                    let s = &share.submit;
                    assert!(
                        seen.insert((s.job_id.clone(), s.extranonce2.clone(), s.ntime, s.nonce, a.header.version)),
                        "a share passed twice"
                    );
                    session.share_recorded(ticket, Ok(()));
                }
                ServerEvent::Close { .. } => assert!(session.is_closed()),
                _ => {}
            }
        }
        assert_eq!(session.poll_timeout().is_none(), session.is_closed());
    }
});
