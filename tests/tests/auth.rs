//! Authentication and hostile input at the coordinator's front door, over real QUIC.
//!
//! Proves that the operator CLI with a wrong admin token is refused ("invalid token", exit
//! code 2, one line); that a CLI pinned to a different certificate refuses the coordinator
//! (a certificate error, exit code 2, one line); and that a raw client sending garbage (a
//! frame that is no `Hello`, a bad frame after a valid node hello, an oversized length
//! prefix, a wrong node token) gets just its own connection closed with a reason, while a
//! node already connected keeps hashing and its account keeps receiving credit.

use std::future::Future;
use std::time::Duration;

use hashgrid_common::codec::{self, PREFIX};
use hashgrid_common::message::{CoordinatorMessage, Hello, NodeHello, close_code};
use hashgrid_common::net;
use hashgrid_tests::{Coordinator, Site, wait_for};

mod raw_peer;
use raw_peer::{close_reason, raw_connection};

/// How long the coordinator may take to answer or to close a connection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_wrong_admin_token_is_refused() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let mut operator = coordinator.operator();
    operator.token_file = site.path().join("wrong.token");
    std::fs::write(&operator.token_file, format!("{}\n", "0".repeat(64))).unwrap();

    let line = operator.run(&["status", "--json"]).expect_one_line_error("status with a wrong token");
    eprintln!("{line}");
    assert!(line.contains("invalid token"), "{line}");
}

#[test]
fn a_cli_pinned_to_another_certificate_refuses_the_coordinator() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let mut operator = coordinator.operator();
    // Same names as the coordinator's own certificate; only the key differs.
    let other = rcgen::generate_simple_self_signed(vec![net::SERVER_NAME.to_string(), "127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    operator.ca = site.path().join("other-cert.pem");
    std::fs::write(&operator.ca, other.cert.pem()).unwrap();

    let line = operator.run(&["status", "--json"]).expect_one_line_error("status pinned to another certificate");
    eprintln!("{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(!line.contains("invalid token"), "refused in the handshake, before any token: {line}");
}

#[test]
fn garbage_closes_only_the_offending_connection() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let operator = coordinator.operator();
    // Far more than this test can deliver: the account is served throughout.
    operator.add_account("victim", "100G", 1);
    let _node = site.start_node(&coordinator, "n1");
    wait_for("the node's first credit", Duration::from_secs(30), || {
        (operator.status().account("victim").delivered > 0).then_some(())
    });

    let (code, reason) = on_runtime(garbage_instead_of_hello(&coordinator));
    assert_eq!(code, u64::from(close_code::MALFORMED_FRAME), "{reason}");
    assert!(reason.starts_with("malformed frame"), "{reason}");

    let (code, reason) = on_runtime(garbage_after_node_hello(&coordinator, &garbage_frame()));
    assert_eq!(code, u64::from(close_code::MALFORMED_FRAME), "{reason}");
    assert!(reason.starts_with("malformed frame"), "{reason}");

    let (code, reason) = on_runtime(garbage_after_node_hello(&coordinator, &u32::MAX.to_be_bytes()));
    assert_eq!(code, u64::from(close_code::FRAME_TOO_LARGE), "{reason}");
    assert_eq!(reason, "frame too large");

    let (code, reason) = on_runtime(node_hello_with_wrong_token(&coordinator));
    assert_eq!(code, u64::from(close_code::INVALID_TOKEN), "{reason}");
    assert_eq!(reason, "invalid token");

    // The real node is unaffected: still active, still earning credit for its account; the
    // intruders' connections are gone (listed as failed, since they were lost).
    let before = operator.status();
    let delivered = before.account("victim").delivered;
    wait_for("more credit after the garbage", Duration::from_secs(15), || {
        let status = operator.status();
        let n1_active = status.nodes.iter().any(|n| n.name == "n1" && n.state == "active");
        let others_failed = status.nodes.iter().filter(|n| n.name != "n1").all(|n| n.state == "failed");
        (n1_active && others_failed && status.account("victim").delivered > delivered).then_some(())
    });
}

/// Runs one raw client session on a fresh runtime.
fn on_runtime<T>(session: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().expect("a tokio runtime").block_on(session)
}

/// A frame with a valid length prefix whose payload decodes as no message of the protocol:
/// it starts with enum variant 7, which neither `Hello` nor `NodeMessage` has.
fn garbage_frame() -> Vec<u8> {
    let payload = [7u8, b'g', b'a', b'r', b'b', b'a', b'g', b'e'];
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// A garbage frame where the `Hello` belongs.
async fn garbage_instead_of_hello(coordinator: &Coordinator) -> (u64, String) {
    let (_endpoint, conn) = raw_connection(coordinator).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&garbage_frame()).await.unwrap();
    close_reason(&conn).await
}

/// A valid node hello (as a standby, so it is given no work), the welcome, then `garbage`.
async fn garbage_after_node_hello(coordinator: &Coordinator, garbage: &[u8]) -> (u64, String) {
    let token = std::fs::read_to_string(coordinator.data_dir.join("node.token")).unwrap();
    let (_endpoint, conn) = raw_connection(coordinator).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&codec::encode(&node_hello(token.trim())).unwrap()).await.unwrap();
    let welcome: CoordinatorMessage =
        tokio::time::timeout(REPLY_TIMEOUT, read_frame(&mut recv)).await.expect("a welcome");
    assert!(matches!(welcome, CoordinatorMessage::Welcome { .. }), "{welcome:?}");
    send.write_all(garbage).await.unwrap();
    close_reason(&conn).await
}

async fn node_hello_with_wrong_token(coordinator: &Coordinator) -> (u64, String) {
    let (_endpoint, conn) = raw_connection(coordinator).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&codec::encode(&node_hello(&"0".repeat(64))).unwrap()).await.unwrap();
    close_reason(&conn).await
}

fn node_hello(token: &str) -> Hello {
    Hello::Node(NodeHello {
        token: token.to_string(),
        name: "intruder".to_string(),
        software_version: "0.0.0".to_string(),
        standby: true,
        devices: Vec::new(),
        hashrate: 1e6,
    })
}

/// Reads one codec frame.
async fn read_frame<T: serde::de::DeserializeOwned>(recv: &mut quinn::RecvStream) -> T {
    let mut prefix = [0u8; PREFIX];
    recv.read_exact(&mut prefix).await.expect("a frame prefix");
    let mut payload = vec![0u8; codec::frame_len(prefix).expect("a frame within the cap")];
    recv.read_exact(&mut payload).await.expect("a frame payload");
    codec::decode(&payload).expect("a message")
}
