//! The node service against a scripted coordinator on loopback QUIC.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashgrid_common::message::{
    ALPN, Assignment, CoordinatorMessage, DeviceInfo, Hello, NodeHello, NodeMessage, Share, ShareOutcome,
};
use hashgrid_common::{Header, Target};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::search::cpu::CpuBackend;
use crate::search::{Backend, NONCE_SPACE, SearchJob, SearchReport, gpu, verify_hit};
use hashgrid_common::net::{FrameReader, FramedStream};

const TOKEN: &str = "secret-node-token";
/// Long enough for any step of these tests, short enough that a hang fails quickly.
const STEP: Duration = Duration::from_secs(20);

/// A self-signed coordinator certificate and key, as the coordinator's data dir holds them.
fn certificate() -> (Vec<u8>, quinn::ServerConfig) {
    let certified = rcgen::generate_simple_self_signed(vec![net::SERVER_NAME.to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    (certified.cert.pem().into_bytes(), config)
}

/// A coordinator whose every step the test scripts.
struct Coordinator {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    ca_pem: Vec<u8>,
}

impl Coordinator {
    fn start() -> Coordinator {
        let (ca_pem, config) = certificate();
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = endpoint.local_addr().unwrap();
        Coordinator { endpoint, addr, ca_pem }
    }

    fn node_config(&self) -> NodeConfig {
        NodeConfig {
            backend: BackendChoice::Cpu,
            threads: Some(2),
            ..NodeConfig::new(self.addr, self.ca_pem.clone(), TOKEN.into(), "rig-7".into())
        }
    }

    /// Accepts the next connection and reads its hello.
    async fn accept(&self) -> Peer {
        let step = async {
            let conn = self.endpoint.accept().await.unwrap().await.unwrap();
            let (send, recv) = conn.accept_bi().await.unwrap();
            let mut stream = FramedStream::with_peer(send, recv, "node");
            let Some(Hello::Node(hello)) = stream.recv::<Hello>().await.unwrap() else {
                panic!("expected a node hello")
            };
            let (reader, writer) = stream.split();
            Peer { conn, reader, writer, hello, unbatched: Default::default() }
        };
        tokio::time::timeout(STEP, step).await.expect("no connection from the node")
    }
}

/// One node connection, coordinator side.
struct Peer {
    conn: quinn::Connection,
    reader: FrameReader,
    /// The rest of a `Shares` batch, taken one share at a time.
    unbatched: std::collections::VecDeque<NodeMessage>,
    writer: net::FrameWriter,
    hello: NodeHello,
}

impl Peer {
    async fn send(&mut self, msg: CoordinatorMessage) {
        self.writer.send(&msg).await.unwrap();
    }

    async fn welcome(&mut self, heartbeat_ms: u32) {
        self.send(CoordinatorMessage::Welcome { node: 1, heartbeat_ms }).await;
    }

    /// The next message, heartbeats included.
    async fn next_any(&mut self) -> NodeMessage {
        while self.unbatched.is_empty() {
            let msg = tokio::time::timeout(STEP, self.reader.recv::<NodeMessage>())
                .await
                .expect("the node went quiet")
                .unwrap()
                .expect("the node ended the stream");
            self.unbatched.extend(msg.unbatched());
        }
        self.unbatched.pop_front().expect("one message at least")
    }

    /// The next message other than a heartbeat.
    async fn next(&mut self) -> NodeMessage {
        loop {
            match self.next_any().await {
                NodeMessage::Heartbeat { .. } => continue,
                other => return other,
            }
        }
    }

    /// Reads until `RangeDone`, answering every share with `answer`; the shares and the
    /// hashes reported.
    async fn collect_range(&mut self, answer: Option<ShareOutcome>) -> (Vec<Share>, u64, u64) {
        let mut shares = Vec::new();
        loop {
            match self.next().await {
                NodeMessage::Share(share) => {
                    shares.push(share);
                    if let Some(outcome) = answer {
                        self.send(CoordinatorMessage::ShareResult { id: share.id, outcome }).await;
                    }
                }
                NodeMessage::RangeDone { assignment, hashes } => return (shares, assignment, hashes),
                NodeMessage::Heartbeat { .. } | NodeMessage::Shares(_) => unreachable!(),
            }
        }
    }
}

/// Runs a node on the given devices in the background.
fn start_node_on(
    config: NodeConfig,
    planned: Vec<compute::Planned>,
) -> (JoinHandle<Result<(), NodeError>>, oneshot::Sender<()>) {
    start_node(NodeConfig { planned: Some(planned), ..config })
}

/// Runs a node in the background; send on the returned sender to stop it.
fn start_node(config: NodeConfig) -> (JoinHandle<Result<(), NodeError>>, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(run_node(config, async move {
        let _ = stopped.await;
    }));
    (node, stop)
}

async fn finish(node: JoinHandle<Result<(), NodeError>>) -> Result<(), NodeError> {
    tokio::time::timeout(STEP, node).await.expect("the node did not stop").unwrap()
}

/// A share target met by about one hash in 4096.
fn easy_target() -> Target {
    Target::from_difficulty(1.0 / f64::from(1u32 << 20)).unwrap()
}

fn assignment(id: u64, start: u32, count: u64, share_target: Target) -> Assignment {
    let mut header = Header::from_bytes(&[0x11; 80]);
    header.version = 0x2000_0000;
    header.time = 1_700_000_000 + id as u32;
    Assignment { id, job: 40 + id, header, share_target, start, count, rolled: 0 }
}

/// Every nonce of the assignment that meets its share target, by brute force on the CPU.
fn brute_force(a: &Assignment) -> BTreeSet<u32> {
    let job = SearchJob::new(a.header, a.share_target, a.start, a.count).unwrap();
    (a.start..=job.last_nonce()).filter(|&n| verify_hit(&job, n).is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_the_verified_hits_then_range_done() {
    let coordinator = Coordinator::start();
    let (node, stop) = start_node(coordinator.node_config());
    let mut peer = coordinator.accept().await;
    assert_eq!(peer.hello.token, TOKEN);
    assert_eq!(peer.hello.name, "rig-7");
    assert_eq!(peer.hello.software_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(peer.hello.devices.len(), 1);
    assert_eq!(peer.hello.devices[0].kind, "cpu");
    assert!(peer.hello.hashrate > 0.0);

    peer.welcome(100).await;
    let range = assignment(5, 1_000, 200_000, easy_target());
    peer.send(CoordinatorMessage::Assign(range)).await;
    let (shares, done, hashes) = peer.collect_range(Some(ShareOutcome::Accepted { work: 1 << 20 })).await;
    assert_eq!((done, hashes), (5, 200_000));

    let expected = brute_force(&range);
    assert!(expected.len() > 20, "the target should give dozens of hits, got {}", expected.len());
    let found: BTreeSet<u32> = shares.iter().map(|s| s.nonce).collect();
    assert_eq!(found, expected);
    assert_eq!(found.len(), shares.len(), "no hit is sent twice");
    let ids: BTreeSet<u64> = shares.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), shares.len(), "share ids are unique");
    for share in &shares {
        assert_eq!((share.assignment, share.job), (5, 45));
        assert_eq!((share.version, share.time), (range.header.version, range.header.time));
    }

    // Heartbeats keep coming while idle.
    assert!(matches!(peer.next_any().await, NodeMessage::Heartbeat { hashrate, .. } if hashrate > 0.0));

    stop.send(()).unwrap();
    finish(node).await.unwrap();
    match tokio::time::timeout(STEP, peer.conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), u64::from(close_code::DEPARTING));
            assert_eq!(&close.reason[..], SHUTDOWN_REASON.as_bytes());
        }
        other => panic!("expected a graceful close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_stops_a_long_range_and_the_queue_moves_on() {
    let coordinator = Coordinator::start();
    let (node, stop) = start_node(coordinator.node_config());
    let mut peer = coordinator.accept().await;
    peer.welcome(1_000).await;
    // The whole nonce space: minutes of work at test speed. The next range is queued behind.
    peer.send(CoordinatorMessage::Assign(assignment(1, 0, NONCE_SPACE, Target::DIFFICULTY_1))).await;
    let next = assignment(2, 7, 20_000, easy_target());
    peer.send(CoordinatorMessage::Assign(next)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = Instant::now();
    peer.send(CoordinatorMessage::Revoke { assignment: 1 }).await;
    let (shares, done, hashes) = peer.collect_range(None).await;
    assert_eq!((done, hashes), (2, 20_000), "the revoked range must not be reported done");
    assert!(revoked.elapsed() < Duration::from_secs(3), "revoke took {:?}", revoked.elapsed());
    assert_eq!(shares.iter().map(|s| s.nonce).collect::<BTreeSet<_>>(), brute_force(&next));
    stop.send(()).unwrap();
    finish(node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_lost_connection_and_resends_unanswered_shares() {
    let coordinator = Coordinator::start();
    let (node, stop) = start_node(coordinator.node_config());
    let mut first = coordinator.accept().await;
    first.welcome(1_000).await;
    first.send(CoordinatorMessage::Assign(assignment(1, 0, 100_000, easy_target()))).await;
    // Answer only the first share, then "restart" before answering the rest.
    let mut shares = Vec::new();
    loop {
        match first.next().await {
            NodeMessage::Share(share) => {
                if shares.is_empty() {
                    let outcome = ShareOutcome::Accepted { work: 1 };
                    first.send(CoordinatorMessage::ShareResult { id: share.id, outcome }).await;
                }
                shares.push(share);
            }
            NodeMessage::RangeDone { .. } => break,
            NodeMessage::Heartbeat { .. } | NodeMessage::Shares(_) => unreachable!(),
        }
    }
    assert!(shares.len() > 5, "{} shares", shares.len());
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.conn.close(0x14u32.into(), b"coordinator restarting");

    let mut second = coordinator.accept().await;
    assert_eq!(second.hello.name, "rig-7");
    second.welcome(1_000).await;
    let mut resent = Vec::new();
    while resent.len() < shares.len() - 1 {
        match second.next().await {
            NodeMessage::Share(share) => resent.push(share),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(resent, shares[1..], "unanswered shares come again, in order, with their ids");
    for share in &resent {
        let outcome = ShareOutcome::Rejected(hashgrid_common::message::RejectReason::StaleJob);
        second.send(CoordinatorMessage::ShareResult { id: share.id, outcome }).await;
    }
    // The new connection works: a new range is searched and reported.
    let range = assignment(3, 500, 10_000, easy_target());
    second.send(CoordinatorMessage::Assign(range)).await;
    let (new_shares, done, hashes) = second.collect_range(None).await;
    assert_eq!((done, hashes), (3, 10_000));
    assert_eq!(new_shares.iter().map(|s| s.nonce).collect::<BTreeSet<_>>(), brute_force(&range));
    assert!(new_shares.iter().all(|s| s.id > shares.last().unwrap().id), "ids keep counting up");
    stop.send(()).unwrap();
    finish(node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_permanent_error() {
    let coordinator = Coordinator::start();
    let (node, _stop) = start_node(NodeConfig { token: "wrong".into(), ..coordinator.node_config() });
    let peer = coordinator.accept().await;
    assert_eq!(peer.hello.token, "wrong");
    peer.conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
    let err = finish(node).await.unwrap_err();
    assert_eq!(err.to_string(), "coordinator closed the connection: invalid token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_other_than_the_pinned_one_is_a_permanent_error() {
    let coordinator = Coordinator::start();
    let (other_ca, _) = certificate();
    let (node, _stop) = start_node(NodeConfig { ca_pem: other_ca, ..coordinator.node_config() });
    // The handshake only proceeds once the coordinator accepts.
    let endpoint = coordinator.endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let _ = incoming.await;
        }
    });
    let err = finish(node).await.unwrap_err();
    assert!(matches!(err, NodeError::Net(NetError::Certificate(_))), "{err:?}");
    assert!(err.to_string().contains("not the pinned one"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_coordinator_is_away_returns_promptly() {
    let coordinator = Coordinator::start();
    let config = coordinator.node_config();
    drop(coordinator);
    let (node, stop) = start_node(config);
    tokio::time::sleep(MEASURE_FOR + Duration::from_millis(500)).await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    finish(node).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(3), "shutdown took {:?}", asked.elapsed());
}

#[test]
fn an_unusable_ca_is_refused() {
    let config = NodeConfig { ca_pem: b"not a certificate".to_vec(), ..Coordinator::config_for_tests() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = runtime.block_on(run_node(config, std::future::pending())).unwrap_err();
    assert!(matches!(err, NodeError::Net(NetError::BadCa(_))), "{err:?}");
}

impl Coordinator {
    fn config_for_tests() -> NodeConfig {
        NodeConfig {
            standby: true,
            backend: BackendChoice::Cpu,
            threads: Some(1),
            ..NodeConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)), Vec::new(), TOKEN.into(), "rig".into())
        }
    }
}

/// Reads until `RangeDone`; the shares (each answered as accepted) and the `RangeDone`.
async fn shares_until_done(peer: &mut Peer) -> (Vec<Share>, u64, u64) {
    peer.collect_range(Some(ShareOutcome::Accepted { work: 1 })).await
}

/// After a range is done: nothing but heartbeats (no second `RangeDone`, no late share) for a
/// few heartbeats; the last heartbeat's device rates.
async fn only_heartbeats(peer: &mut Peer, beats: usize) -> Vec<DeviceInfo> {
    let mut devices = Vec::new();
    for _ in 0..beats {
        match peer.next_any().await {
            NodeMessage::Heartbeat { hashrate, devices: d } => {
                let sum: f64 = d.iter().map(|d| d.hashrate).sum();
                assert!((hashrate - sum).abs() <= 1e-6 * hashrate.max(1.0), "{hashrate} is the sum of {d:?}");
                devices = d;
            }
            other => panic!("expected only heartbeats after RangeDone, got {other:?}"),
        }
    }
    devices
}

fn require_gpu() -> bool {
    std::env::var("HASHGRID_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The first GPU adapter's index (lavapipe in CI), or `None` after printing why the test is
/// skipped; with `HASHGRID_REQUIRE_GPU=1` a missing adapter fails the test.
fn first_adapter() -> Option<String> {
    match gpu::list_adapters().first() {
        Some(adapter) => Some(adapter.index.to_string()),
        None if !require_gpu() => {
            eprintln!("SKIPPED: no GPU/Vulkan adapter");
            None
        }
        None => panic!("HASHGRID_REQUIRE_GPU=1 but there is no GPU/Vulkan adapter"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_and_the_cpu_split_a_range_and_find_every_share_once() {
    let Some(adapter) = first_adapter() else { return };
    let coordinator = Coordinator::start();
    let (node, stop) = start_node(NodeConfig {
        devices: Some(Devices::List(vec![DeviceSpec::Gpu(adapter), DeviceSpec::Cpu])),
        threads: Some(1),
        ..coordinator.node_config()
    });
    let mut peer = coordinator.accept().await;
    let hello = peer.hello.devices.clone();
    assert_eq!(hello.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>(), ["gpu", "cpu"], "{hello:?}");
    assert!(hello.iter().all(|d| d.hashrate > 0.0), "{hello:?}");
    let sum: f64 = hello.iter().map(|d| d.hashrate).sum();
    assert!((peer.hello.hashrate - sum).abs() <= 1e-6 * sum, "the hello's rate is the devices' sum");

    peer.welcome(200).await;
    // A few hundred thousand nonces per device at lavapipe's few MH/s.
    let range = assignment(8, 3_000_000, 1_500_000, easy_target());
    peer.send(CoordinatorMessage::Assign(range)).await;
    let (shares, done, hashes) = shares_until_done(&mut peer).await;
    assert_eq!((done, hashes), (8, 1_500_000));
    let expected = brute_force(&range);
    let found: BTreeSet<u32> = shares.iter().map(|s| s.nonce).collect();
    assert_eq!(found, expected);
    assert_eq!(found.len(), shares.len(), "no hit is sent twice");
    assert!(shares.iter().all(|s| (s.assignment, s.job) == (8, 48)));

    // Both devices searched: each one's rate estimate has moved off its start-up measurement,
    // which only the slices it searched can do. And the range is reported done only once.
    let after = only_heartbeats(&mut peer, 3).await;
    assert_eq!(after.len(), 2);
    for (before, after) in hello.iter().zip(&after) {
        assert_eq!((&before.kind, &before.name), (&after.kind, &after.name));
        assert_ne!(before.hashrate, after.hashrate, "{} searched no piece", before.name);
    }
    stop.send(()).unwrap();
    finish(node).await.unwrap();
}

/// A CPU search throttled to `rate` hashes per second that calls itself a GPU and fails on
/// its `fail_at`-th search of a real range (the start-up measurement's searches don't count).
struct Flaky {
    cpu: CpuBackend,
    rate: f64,
    fail_at: Option<usize>,
    searches: usize,
}

impl Flaky {
    fn planned(label: &str, rate: f64, fail_at: Option<usize>) -> compute::Planned {
        compute::Planned {
            label: label.into(),
            open: Box::new(move || Ok(Box::new(Flaky { cpu: CpuBackend::new(1)?, rate, fail_at, searches: 0 }))),
        }
    }
}

impl Backend for Flaky {
    fn kind(&self) -> crate::search::BackendKind {
        if self.fail_at.is_some() { crate::search::BackendKind::Gpu } else { crate::search::BackendKind::Cpu }
    }

    fn device(&self) -> String {
        format!("flaky {}", self.fail_at.is_some())
    }

    fn search(&mut self, job: &SearchJob, cancel: &std::sync::atomic::AtomicBool) -> Result<SearchReport, SearchError> {
        // The measurement hashes a header of 0x5a bytes.
        if job.header != Header::from_bytes(&[0x5a; 80]) {
            self.searches += 1;
            if Some(self.searches) == self.fail_at {
                return Err(SearchError::Gpu("device lost".into()));
            }
        }
        let mut report = self.cpu.search(job, cancel)?;
        let floor = Duration::from_secs_f64(report.hashes as f64 / self.rate);
        if report.elapsed < floor {
            std::thread::sleep(floor - report.elapsed);
            report.elapsed = floor;
        }
        Ok(report)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_devices_unsearched_rest_goes_to_the_other_device() {
    let coordinator = Coordinator::start();
    // Both at 1 MH/s: slices of about 250,000 nonces, so the flaky one searches one slice of
    // its half of the range, fails on its second, and the other device takes the rest.
    let planned = vec![Flaky::planned("flaky", 1e6, Some(2)), Flaky::planned("steady", 1e6, None)];
    let (node, stop) = start_node_on(coordinator.node_config(), planned);
    let mut peer = coordinator.accept().await;
    assert_eq!(peer.hello.devices.len(), 2);
    peer.welcome(200).await;
    let range = assignment(3, 77, 1_000_000, easy_target());
    peer.send(CoordinatorMessage::Assign(range)).await;
    let (shares, done, hashes) = shares_until_done(&mut peer).await;
    assert_eq!((done, hashes), (3, 1_000_000));
    let found: BTreeSet<u32> = shares.iter().map(|s| s.nonce).collect();
    assert_eq!(found, brute_force(&range));
    assert_eq!(found.len(), shares.len(), "no hit is sent twice");
    // The failed device is no longer reported; the node keeps working on the other.
    let devices = only_heartbeats(&mut peer, 2).await;
    assert_eq!(devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["flaky false"]);
    let next = assignment(4, 0, 100_000, easy_target());
    peer.send(CoordinatorMessage::Assign(next)).await;
    let (shares, done, hashes) = shares_until_done(&mut peer).await;
    assert_eq!((done, hashes), (4, 100_000));
    assert_eq!(shares.iter().map(|s| s.nonce).collect::<BTreeSet<_>>(), brute_force(&next));
    stop.send(()).unwrap();
    finish(node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_device_failing_stops_the_node() {
    let coordinator = Coordinator::start();
    let (node, _stop) = start_node_on(coordinator.node_config(), vec![Flaky::planned("flaky", 1e6, Some(1))]);
    let mut peer = coordinator.accept().await;
    peer.welcome(1_000).await;
    peer.send(CoordinatorMessage::Assign(assignment(1, 0, 100_000, easy_target()))).await;
    let err = finish(node).await.unwrap_err();
    assert_eq!(err.to_string(), "search backend: GPU error: device lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_rate_replaces_the_measured_one() {
    let coordinator = Coordinator::start();
    let (node, stop) = start_node(NodeConfig {
        devices: Some(Devices::List(vec![DeviceSpec::Cpu])),
        announce_rate: Some(5e12),
        ..coordinator.node_config()
    });
    let mut peer = coordinator.accept().await;
    assert_eq!(peer.hello.hashrate, 5e12);
    assert_eq!(peer.hello.devices.len(), 1);
    assert_eq!(peer.hello.devices[0].hashrate, 5e12);
    peer.welcome(100).await;
    let devices = only_heartbeats(&mut peer, 2).await;
    assert_eq!(devices[0].hashrate, 5e12);
    stop.send(()).unwrap();
    finish(node).await.unwrap();
}
