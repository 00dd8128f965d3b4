//! Peers that never authenticate, and hellos that name a node unacceptably, at a real
//! coordinator process over real QUIC.
//!
//! Proves that a connection which says no hello is closed after the hello deadline with a
//! reason, and one whose hello frame is longer than the hello cap at its length prefix; that a node whose name carries terminal escapes and a newline is refused at the
//! hello and the `hashgrid-node` process says so in one line and exits 2; and that the attack
//! of issue 9 (connections that never say hello, each opening many streams that carry large
//! partial frames) leaves the coordinator's resident memory under 32 MiB above where it was,
//! while an honest node keeps earning credit throughout.
//!
//! `attack_figures_before_and_after` (ignored) prints the attack's memory growth for an
//! older coordinator binary (`HASHGRID_BEFORE_COORDINATOR`) and this one in one run, for
//! BENCHMARKS.md.

use std::path::Path;
use std::time::{Duration, Instant};

use hashgrid_common::codec::{MAX_FRAME, PREFIX};
use hashgrid_common::message::close_code;
use hashgrid_common::net;
use hashgrid_coordinator::service::limits::MAX_HELLO;
use hashgrid_tests::{COMMAND_TIMEOUT, Site, binary, run_with_timeout, wait_for};

mod raw_peer;
use raw_peer::{close_reason, raw_connection};

/// Connections the attacker keeps open at once (as in the issue).
const CONNECTIONS: usize = 4;
/// Streams the attacker opens on each connection.
const STREAMS: usize = 50;
/// How long the attack lasts; connections the coordinator closes are opened again.
const ATTACK: Duration = Duration::from_secs(12);
/// How often the honest node's credit and the coordinator's memory are looked at.
const SAMPLE: Duration = Duration::from_secs(3);
/// The most the attack may add to the coordinator's resident memory.
const MAX_GROWTH_KIB: u64 = 32 * 1024;

#[test]
fn a_connection_without_a_hello_is_closed_with_a_reason() {
    // Half a length prefix, then nothing.
    let (code, reason) = first_stream_then_close(&[0, 0]);
    assert_eq!(code, u64::from(close_code::NO_HELLO), "{reason}");
    assert_eq!(reason, "no hello within 5s");
}

#[test]
fn a_hello_longer_than_the_hello_cap_is_refused_at_its_prefix() {
    let (code, reason) = first_stream_then_close(&(MAX_HELLO as u32 + 1).to_be_bytes());
    assert_eq!(code, u64::from(close_code::FRAME_TOO_LARGE), "{reason}");
}

/// Starts a coordinator, sends `bytes` on a connection's first stream, and waits for the
/// coordinator to close it: its close code and reason.
fn first_stream_then_close(bytes: &[u8]) -> (u64, String) {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (_endpoint, conn) = raw_connection(&coordinator).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        close_reason(&conn).await
    })
}

#[test]
fn a_node_named_with_terminal_escapes_is_refused() {
    let site = Site::new();
    let coordinator = site.start_coordinator("127.0.0.1:0", "sequential");
    let cmd = site.node_run(&coordinator, "\u{1b}[2Jrig\nINFO forged", &[]);
    let line = run_with_timeout(cmd, COMMAND_TIMEOUT).expect_one_line_error("a node named with ESC and a newline");
    assert!(line.contains("invalid node name") && !line.contains('\u{1b}'), "{line}");
    let nodes = coordinator.operator().nodes();
    assert!(nodes.is_empty(), "the node never joined: {nodes:?}");
}

#[test]
fn unauthenticated_streams_do_not_hold_memory_and_honest_nodes_keep_earning() {
    let figures = attack(&binary("hashgrid-coordinator"));
    eprintln!("{figures:?}");
    assert!(
        figures.growth_kib < MAX_GROWTH_KIB,
        "the coordinator's RSS grew by {} KiB under the attack (at most {MAX_GROWTH_KIB})",
        figures.growth_kib
    );
}

/// `HASHGRID_BEFORE_COORDINATOR=/path/to/old/hashgrid-coordinator cargo test -p hashgrid-tests
/// --test unauthenticated -- --ignored --nocapture`: the same attack on both builds.
#[test]
#[ignore = "a measurement: needs HASHGRID_BEFORE_COORDINATOR, prints figures"]
fn attack_figures_before_and_after() {
    let before = std::env::var_os("HASHGRID_BEFORE_COORDINATOR").expect("HASHGRID_BEFORE_COORDINATOR");
    for (label, path) in [("before", Path::new(&before).to_path_buf()), ("after", binary("hashgrid-coordinator"))] {
        let figures = attack(&path);
        println!(
            "{label}: RSS {} KiB before the attack, peak {} KiB during it (+{} KiB), {} KiB 3 s after it; \
             honest node credited in {}/{} windows of {:?}",
            figures.baseline_kib,
            figures.peak_kib,
            figures.growth_kib,
            figures.after_kib,
            figures.windows_earned,
            figures.windows,
            SAMPLE
        );
    }
}

/// What one attack did.
#[derive(Debug)]
struct Figures {
    baseline_kib: u64,
    peak_kib: u64,
    growth_kib: u64,
    after_kib: u64,
    windows: usize,
    windows_earned: usize,
}

/// Starts `coordinator_binary` with an honest node earning for an account, attacks it for
/// `ATTACK`, and checks the node was credited in every `SAMPLE` window.
fn attack(coordinator_binary: &Path) -> Figures {
    let site = Site::new();
    let coordinator =
        site.start_coordinator_binary(coordinator_binary, "127.0.0.1:0", "sequential", &["--failover-after", "3s"]);
    let operator = coordinator.operator();
    // Far more than this test can deliver: the account is served throughout.
    operator.add_account("honest", "1E", 1);
    let _node = site.start_node(&coordinator, "honest-rig");
    wait_for("the honest node's first credit", Duration::from_secs(30), || {
        (operator.status().account("honest").delivered > 0).then_some(())
    });
    let baseline_kib = coordinator.rss_kib();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let attacker = {
        let (ca, addr) = (std::fs::read(coordinator.data_dir.join("cert.pem")).unwrap(), coordinator.addr);
        runtime.spawn(async move {
            let endpoint = net::client_endpoint_for(&ca, addr).expect("a client endpoint");
            let stop = Instant::now() + ATTACK;
            let connections =
                (0..CONNECTIONS).map(|_| tokio::spawn(attacking_connection(endpoint.clone(), addr, stop)));
            for connection in connections.collect::<Vec<_>>() {
                let _ = connection.await;
            }
        })
    };

    let mut peak_kib = baseline_kib;
    let (mut windows, mut windows_earned) = (0, 0);
    let mut delivered = operator.status().account("honest").delivered;
    let started = Instant::now();
    while started.elapsed() < ATTACK {
        std::thread::sleep(SAMPLE);
        peak_kib = peak_kib.max(coordinator.rss_kib());
        let now = operator.status().account("honest").delivered;
        windows += 1;
        windows_earned += usize::from(now > delivered);
        delivered = now;
    }
    runtime.block_on(attacker).unwrap();
    peak_kib = peak_kib.max(coordinator.rss_kib());
    std::thread::sleep(SAMPLE);
    let after_kib = coordinator.rss_kib();
    drop(runtime);
    assert_eq!(windows_earned, windows, "the honest node was credited in every window of {SAMPLE:?}");
    Figures { baseline_kib, peak_kib, growth_kib: peak_kib - baseline_kib, after_kib, windows, windows_earned }
}

/// One attacking connection, opened again whenever the coordinator closes it, until `stop`:
/// no hello, `STREAMS` streams, each with the length prefix of a frame at the cap and all of
/// that frame but its last byte.
async fn attacking_connection(endpoint: quinn::Endpoint, addr: std::net::SocketAddr, stop: Instant) {
    let mut partial = (MAX_FRAME as u32).to_be_bytes().to_vec();
    partial.resize(PREFIX + MAX_FRAME - 1, 0x55);
    let partial = std::sync::Arc::new(partial);
    while Instant::now() < stop {
        let Ok(conn) = net::connect(&endpoint, addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let streams: Vec<_> = (0..STREAMS)
            .map(|_| {
                let (conn, partial) = (conn.clone(), partial.clone());
                tokio::spawn(async move {
                    let Ok((mut send, _recv)) = conn.open_bi().await else { return };
                    let _ = send.write_all(&partial).await;
                    // Keep the stream (and the bytes the coordinator holds for it) open.
                    let _ = conn.closed().await;
                })
            })
            .collect();
        let deadline = tokio::time::Instant::from_std(stop);
        tokio::select! {
            _ = conn.closed() => {}
            () = tokio::time::sleep_until(deadline) => conn.close(0u32.into(), b"done"),
        }
        for stream in streams {
            let _ = stream.await;
        }
    }
}
