//! Operator replies larger than one frame, through the real CLI and coordinator: a receipt of
//! 50,000 shares and a ledger of 30,000 more entries come back whole (in pages), and `--limit`
//! returns one page and names the next.

use std::time::Duration;

use hashgrid_common::{CompactTarget, Hash256, Header, Target};
use hashgrid_coordinator::core::ledger::LedgerRecord;
use hashgrid_coordinator::core::{StoreOp, Work};
use hashgrid_coordinator::service::store::backend::StoreLocation;
use hashgrid_tests::Site;

const SHARES: usize = 50_000;
const LEDGER_ENTRIES: u64 = 30_000;
/// Each share's expected hashes: an easy target, so finding the shares is cheap.
const SHARE_WORK: u128 = 2;

/// `n` real shares of one template meeting a target worth `SHARE_WORK` hashes.
fn shares(n: usize) -> Vec<Header> {
    let template = Header {
        version: 0x2000_0000,
        prev_blockhash: Hash256([9; 32]),
        merkle_root: Hash256::sha256d(b"paging"),
        time: 1_700_000_000,
        bits: CompactTarget(0x1d00ffff),
        nonce: 0,
    };
    let target = Target::from_expected_hashes(SHARE_WORK);
    (0..u32::MAX).map(|n| template.with_nonce(n)).filter(|h| target.is_met_by(&h.block_hash())).take(n).collect()
}

#[test]
fn a_receipt_of_50000_shares_and_a_long_ledger_come_back_whole() {
    let site = Site::new();
    let mut coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    coordinator.operator().add_account("acme", "1T", 1);
    let addr = coordinator.addr.to_string();
    coordinator.terminate(Duration::from_secs(10));

    // Credit the shares and lengthen the ledger directly in the stopped coordinator's store.
    let target = Target::from_expected_hashes(SHARE_WORK);
    let mut ops: Vec<StoreOp> = shares(SHARES)
        .into_iter()
        .map(|header| StoreOp::Credit {
            account: "acme".into(),
            work: Work(target.work()),
            node: "rig-1".into(),
            job: 1,
            header,
            share_target: target,
            at_ms: 1_700_000_000_000,
        })
        .collect();
    ops.extend((0..LEDGER_ENTRIES).map(|i| StoreOp::Ledger {
        at_ms: 1_700_000_000_000 + i,
        record: LedgerRecord::Assignment {
            assignment: i,
            node: "rig-1".into(),
            account: "acme".into(),
            chain: "local".into(),
            job: 1,
            version: 0x2000_0000,
            start: (i as u32).wrapping_mul(65536),
            count: 65536,
            share_work: Work(SHARE_WORK),
            reassigned_from: None,
        },
    }));
    let store: StoreLocation = coordinator.database().store_flag().parse().unwrap();
    store.open(&coordinator.data_dir).unwrap().apply(&ops).unwrap();
    drop(ops);

    let coordinator = site.start_coordinator(&addr, "sequential");
    let op = coordinator.operator();

    // Within the harness's `COMMAND_TIMEOUT`: a debug build re-hashes the 50,000 shares and
    // pages them out of the store in about 3 s on either store (a quiet 2-core machine; the
    // PostgreSQL receipt looks up its pages' upstream outcomes in one query per page, not one
    // per share: BENCHMARKS.md, "Receipts and ledger verify on PostgreSQL beside SQLite").
    let started = std::time::Instant::now();
    let out = op.run(&["account", "receipt", "acme", "--json"]).expect_success("account receipt");
    eprintln!("account receipt of {SHARES} shares: {:?}", started.elapsed());
    let receipt: serde_json::Value = serde_json::from_str(&out).expect("receipt --json");
    assert_eq!(receipt["verified"], true, "{}", receipt["problem"]);
    assert_eq!(receipt["whole"], true);
    let rows = receipt["shares"].as_array().expect("shares");
    assert_eq!(rows.len(), SHARES);
    let total: u128 = rows.iter().map(|s| s["work"].as_u64().unwrap() as u128).sum();
    assert_eq!(total, SHARES as u128 * target.work());
    assert_eq!(receipt["delivered"].as_u64().unwrap() as u128, total);
    let mut nonces: Vec<u64> = rows.iter().map(|s| s["nonce"].as_u64().unwrap()).collect();
    nonces.dedup();
    assert_eq!(nonces.len(), SHARES, "no share twice, oldest first");

    // One page: at most the limit, and the cursor of the next on stderr.
    let page = op.run(&["account", "receipt", "acme", "--limit", "100", "--after", "10", "--json"]);
    assert_eq!(page.code, Some(0), "{page:?}");
    let receipt: serde_json::Value = serde_json::from_str(&page.stdout).unwrap();
    assert_eq!((receipt["shares"].as_array().unwrap().len(), &receipt["whole"]), (100, &serde_json::json!(false)));
    assert!(page.stderr.contains("--after 110"), "{}", page.stderr);

    // The ledger: the entries of the first run, then the 30,000 added.
    let entries = op.ledger(1);
    assert!(entries.len() as u64 > LEDGER_ENTRIES, "{}", entries.len());
    assert!(entries.windows(2).all(|w| w[1].seq == w[0].seq + 1), "every entry once, in order");
    let page = op.run(&["ledger", "show", "--limit", "10000", "--json"]);
    let shown: Vec<serde_json::Value> = serde_json::from_str(&page.stdout).expect("ledger show --json");
    assert!(!shown.is_empty() && shown.len() < 10_000, "one page, cut by its byte budget: {}", shown.len());
    assert!(page.stderr.contains(&format!("--after {}", shown.len())), "{}", page.stderr);
    let started = std::time::Instant::now();
    let out = op.run(&["ledger", "verify"]).expect_success("ledger verify");
    eprintln!("ledger verify of {} entries: {:?}", entries.len(), started.elapsed());
    assert!(out.starts_with("ledger ok"), "{out}");
}
