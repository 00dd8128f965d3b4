//! Virtual-time tests of the miner: a scripted pool answers, hits are handed in, and the
//! commands that come out are checked.

use hashgrid_common::Header;
use hashgrid_common::stratum::{ClientConfig, Message, Method};
use serde_json::json;

use super::*;

fn drain(m: &mut Miner) -> Vec<MinerCommand> {
    std::iter::from_fn(|| m.poll_command()).collect()
}

/// The requests among `commands`: (id, method).
fn requests(commands: &[MinerCommand]) -> Vec<(u64, Method)> {
    commands
        .iter()
        .filter_map(|c| match c {
            MinerCommand::Send(line) => match Message::from_line(line.as_bytes()).unwrap() {
                Message::Call { id, method } => Some((id.as_u64()?, method)),
                Message::Response(_) => None,
            },
            _ => None,
        })
        .collect()
}

fn searches(commands: &[MinerCommand]) -> Vec<Piece> {
    commands.iter().filter_map(|c| if let MinerCommand::Search(p) = c { Some(*p) } else { None }).collect()
}

/// A nonce whose header meets the piece's share target (found by brute force).
fn hit(piece: &Piece) -> u32 {
    let a = piece.assignment;
    (0..=u32::MAX).find(|&nonce| a.share_target.is_met_by(&Header { nonce, ..a.header }.block_hash())).unwrap()
}

fn line(m: &mut Miner, now: u64, value: serde_json::Value) {
    m.handle_line(now, value.to_string().as_bytes());
}

fn notify(id: &str, prev: &str, clean: bool) -> serde_json::Value {
    json!({"id": null, "method": "mining.notify", "params": [
        id, prev.repeat(32), "0102", "0304", [], "20000000", "1d00ffff", "6b112400", clean]})
}

/// A miner on one CPU, through configure (mask `mask`), subscribe (extranonce2 of
/// `en2_size` bytes), authorize, difficulty 0.0001 and a first job "a".
fn mining(mask: Option<u32>, en2_size: usize, password_ok: bool) -> (Miner, Vec<MinerCommand>) {
    let mut m = Miner::new(ClientSession::new(ClientConfig::new("pool", "u", "p")), [(DeviceClass::Cpu, 1e6)]);
    m.connect(0);
    let configure = match mask {
        Some(mask) => json!({"version-rolling": true, "version-rolling.mask": format!("{mask:08x}")}),
        None => json!({"version-rolling": false}),
    };
    line(&mut m, 1, json!({"id": 1, "result": configure, "error": null}));
    line(&mut m, 2, json!({"id": 2, "result": [[], "c858eeac", en2_size], "error": null}));
    line(&mut m, 3, json!({"id": 3, "result": password_ok, "error": null}));
    line(&mut m, 4, json!({"id": null, "method": "mining.set_difficulty", "params": [0.0001]}));
    line(&mut m, 5, notify("a", "11", true));
    let commands = drain(&mut m);
    (m, commands)
}

#[test]
fn a_job_is_searched_on_fresh_extranonce2_values_and_hits_are_submitted() {
    let (mut m, commands) = mining(None, 4, true);
    let pieces = searches(&commands);
    assert_eq!(pieces.len(), AHEAD);
    assert!(pieces.iter().all(|p| p.assignment.count == NONCE_SPACE && p.assignment.start == 0));
    // Different templates: different merkle roots.
    assert_ne!(pieces[0].assignment.header.merkle_root, pieces[1].assignment.header.merkle_root);
    let nonce = hit(&pieces[1]);
    m.handle_hit(6, pieces[1].assignment.id, nonce);
    let sent = requests(&drain(&mut m));
    let [(id, Method::Submit(submit))] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!((submit.worker.as_str(), submit.job_id.as_str()), ("u", "a"));
    assert_eq!(submit.extranonce2, vec![0, 0, 0, 1]);
    assert_eq!((submit.ntime, submit.nonce, submit.version_bits), (0x6b11_2400, nonce, None));
    line(&mut m, 7, json!({"id": id, "result": true, "error": null}));
    drain(&mut m);
    assert_eq!(m.counts().accepted, 1);
    // A range searched in full is replaced by the next template.
    m.handle_finished(pieces[0].ticket, NONCE_SPACE, true);
    let commands = drain(&mut m);
    assert!(commands.contains(&MinerCommand::Cancel(pieces[0].assignment.id)), "{commands:?}");
    let next = searches(&commands);
    assert_eq!(next.len(), 1);
    let expected: Header = m.client().current_job().unwrap().template(&[0, 0, 0, 2]).unwrap();
    assert_eq!(next[0].assignment.header, expected);
}

#[test]
fn a_clean_job_cancels_the_old_ranges_and_old_hits_are_not_submitted() {
    let (mut m, commands) = mining(None, 4, true);
    let old = searches(&commands);
    line(&mut m, 6, notify("b", "22", true));
    let commands = drain(&mut m);
    let cancelled: Vec<AssignmentId> =
        commands.iter().filter_map(|c| if let MinerCommand::Cancel(id) = c { Some(*id) } else { None }).collect();
    assert_eq!(cancelled.len(), AHEAD);
    assert!(old.iter().all(|p| cancelled.contains(&p.assignment.id)));
    let new = searches(&commands);
    assert_eq!(new.len(), AHEAD);
    // A late hit of the old job is dropped, not sent.
    m.handle_hit(7, old[0].assignment.id, hit(&old[0]));
    assert!(requests(&drain(&mut m)).is_empty());
    assert_eq!(m.counts().dropped, 1);
    m.handle_hit(8, new[0].assignment.id, hit(&new[0]));
    let sent = requests(&drain(&mut m));
    assert!(matches!(&sent[..], [(_, Method::Submit(s))] if s.job_id == "b"));
}

#[test]
fn version_bits_roll_once_extranonce2_is_used_up() {
    let (mut m, commands) = mining(Some(0x0000_6000), 1, true);
    let mut templates: Vec<Piece> = searches(&commands);
    // 256 extranonce2 values × 4 version-bit values, then nothing more.
    for _ in 0..(256 * 4) {
        let piece = templates.remove(0);
        m.handle_finished(piece.ticket, NONCE_SPACE, true);
        templates.extend(searches(&drain(&mut m)));
    }
    assert!(templates.is_empty());
    let (mut m, commands) = mining(Some(0x0000_6000), 1, true);
    let mut last = searches(&commands)[0];
    for _ in 0..256 {
        m.handle_finished(last.ticket, NONCE_SPACE, true);
        last = *searches(&drain(&mut m)).last().unwrap();
    }
    assert_eq!(last.assignment.header.version, 0x2000_2000);
    m.handle_hit(9, last.assignment.id, hit(&last));
    let sent = requests(&drain(&mut m));
    let [(_, Method::Submit(submit))] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(submit.version_bits, Some(0x2000));
    assert_eq!(submit.extranonce2, vec![1]);
}

#[test]
fn refused_credentials_stop_the_miner() {
    let (_, commands) = mining(None, 4, false);
    assert!(searches(&commands).is_empty());
    assert!(commands.iter().any(|c| matches!(c, MinerCommand::Unauthorized { .. })), "{commands:?}");
}

#[test]
fn a_lost_connection_cancels_every_range() {
    let (mut m, commands) = mining(None, 4, true);
    let pieces = searches(&commands);
    m.handle_disconnect(9);
    let commands = drain(&mut m);
    assert_eq!(commands.iter().filter(|c| matches!(c, MinerCommand::Cancel(_))).count(), pieces.len());
    m.handle_hit(10, pieces[0].assignment.id, 1);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn deposit_spreads_bits_over_the_mask() {
    assert_eq!(deposit(0, 0x1fff_e000), 0);
    assert_eq!(deposit(1, 0x1fff_e000), 0x2000);
    assert_eq!(deposit(0b101, 0b1_0110), 0b1_0010);
    assert_eq!(deposit(u32::MAX, 0x1fff_e000), 0x1fff_e000);
}

#[test]
fn a_new_extranonce1_starts_the_templates_over() {
    let (mut m, commands) = mining(None, 1, true);
    let mut templates: Vec<Piece> = searches(&commands);
    // 256 extranonce2 values, then the space is used up.
    while !templates.is_empty() {
        let piece = templates.remove(0);
        m.handle_finished(piece.ticket, NONCE_SPACE, true);
        templates.extend(searches(&drain(&mut m)));
    }
    line(&mut m, 10, json!({"id": null, "method": "mining.set_extranonce", "params": ["c858eead", 1]}));
    line(&mut m, 11, notify("b", "22", true));
    let pieces = searches(&drain(&mut m));
    assert_eq!(pieces.len(), AHEAD, "a new extranonce1 is a new space");
    let expected: Header = m.client().current_job().unwrap().template(&[0]).unwrap();
    assert_eq!(pieces[0].assignment.header, expected);
}
