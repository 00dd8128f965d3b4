//! Share intake benchmark: how many shares per second the coordinator verifies, credits
//! durably and acknowledges, and the acknowledgement latency, from N simulated nodes.
//!
//! `cargo run --release -p hashgrid-coordinator --example intake_bench -- --connections 100 --seconds 10`
//!
//! One process runs a real `Service` (tempdir data dir, 127.0.0.1:0, SQLite with
//! synchronous=FULL) on its own tokio runtime and N real QUIC connections on a second one (a
//! few client endpoints, `--conns-per-endpoint` connections each). Every connection says
//! `Hello::Node`, takes its `Welcome` and `Assign`s, and then floods valid shares of its
//! range with at most `--in-flight` unacknowledged, timing each share from the moment it is
//! handed to QUIC to its `ShareResult`. The shares are found before the timed phase (the CPU
//! search backend, with progress lines), so hashing does not compete with the measurement;
//! the client's QUIC work does, on the same cores — the per-thread CPU split printed at the
//! end shows how much.
//!
//! Each client behaves like a node: it takes `Welcome`, `Assign` and `Revoke` in any order the
//! protocol allows, never sends a share twice (nor one of a revoked range), and stops when its
//! pool runs out (reported) rather than repeat itself. The coordinator's probe is off unless
//! `--probe`: the announced rate only sizes the ranges, the flood is not paced to it.
//!
//! The headline counts accepted (durable) acknowledgements received in the measured window
//! (after `--warmup`), rejections apart and by reason; latencies are those of accepted shares
//! sent in the window. At the end the store is reopened and its credited share count compared
//! with the accepted acknowledgements (equal; on failed connections it may hold more, shares
//! whose acknowledgement never arrived, never fewer). The coordinator's own latency histogram
//! (`/metrics`, share read to acknowledgement queued after the flush) is read at both ends of
//! the window and printed beside the client's figure, which splits the server's part from
//! QUIC and the client.
//!
//! `--micro` instead times the pieces on one thread: the core's share handling, `Store::apply`
//! at several batch sizes, and copies of the credit SQL with the variants docs/bench-intake.md
//! priced (variant E is what store.rs does since schema migration 2). `--micro-store` times only
//! the store thread's part, `Store::apply_unsynced` of 4,096-credit batches, in thread CPU time.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use hashgrid_common::codec;
use hashgrid_common::message::{
    ALPN, ALPN_V2, AdminRequest, AdminResponse, Assignment, AssignmentId, BATCHES_SINCE, CoordinatorMessage, Hello,
    NodeHello, NodeMessage, PROTOCOL_VERSION, Policy, RejectReason, Share, ShareOutcome, close_code,
};
use hashgrid_common::net::{self, FrameReader};
use hashgrid_common::{Header, Target};
use hashgrid_coordinator::core::probe::ProbeConfig;
use hashgrid_coordinator::core::{Command, Core, CoreConfig, StoreOp};
use hashgrid_coordinator::service::limits::ConnectionLimits;
use hashgrid_coordinator::service::server::{Service, ServiceConfig};
use hashgrid_coordinator::service::store::Store;
use hashgrid_coordinator::service::store::backend::StoreLocation;
use hashgrid_node::search::cpu::CpuBackend;
use hashgrid_node::search::{Backend, SearchJob};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "Coordinator share intake benchmark (QUIC on loopback, durable credits)")]
struct Args {
    /// Simulated node connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Flooding before the measured window, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Unacknowledged shares allowed per connection.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Expected hashes per share (the core's `min_share_work`).
    #[arg(long, default_value_t = 16)]
    share_work: u128,
    /// Shares per second the pre-computed pool must be able to feed (pool sizing only).
    #[arg(long, default_value_t = 300_000.0)]
    max_rate: f64,
    /// Offer this many shares per second in total, paced evenly over the connections (open
    /// loop, still capped by --in-flight); 0 floods (closed loop: each ack frees a slot).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Connections per client endpoint (UDP socket).
    #[arg(long, default_value_t = 100)]
    conns_per_endpoint: usize,
    /// Worker threads of the server's tokio runtime (the core thread comes on top).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the clients' tokio runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Where the records go: sqlite (the data dir's file) or a postgres:// URL (an empty
    /// database: the run adds its accounts).
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// Where the temporary data dir goes (default: the system temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the coordinator's rate probe on: it fails clients that deliver less than their
    /// announced rate and revokes their ranges (exercises revocations; lowers the figure).
    #[arg(long)]
    probe: bool,
    /// Time the core, the store and alternative credit SQL on one thread instead.
    #[arg(long)]
    micro: bool,
    /// Time only `Store::apply_unsynced` of 4,096-credit batches on one thread, as the store
    /// thread runs them (checkpointer on, `maintain` between batches), `--rounds` times, each on
    /// a fresh database: per-credit CPU time of the thread and wall time.
    #[arg(long)]
    micro_store: bool,
    /// Rounds of `--micro-store`.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The protocol version the clients speak: 3 sends each write's shares as one `Shares`
    /// message and takes `ShareResults`; 2 sends one `Share` message per share, as before.
    #[arg(long, default_value_t = PROTOCOL_VERSION, value_parser = clap::value_parser!(u16).range(2..=3))]
    protocol: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.connections > 0 && args.in_flight > 0 && args.conns_per_endpoint > 0, "counts must be positive");
    ensure!(args.seconds > 0.0 && args.warmup >= 0.0, "--seconds must be positive");
    print_machine();
    if args.micro {
        return micro(&args);
    }
    if args.micro_store {
        return micro_store(&args);
    }
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent).with_context(|| format!("tempdir in {}", parent.display()))?;
    println!("data dir {} ({})", dir.path().display(), filesystem_of(dir.path()));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("srv-worker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("cli-worker")
        .enable_all()
        .build()?;

    let store: StoreLocation = args.store.parse().map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let server = server_rt.block_on(Service::start(ServiceConfig {
        data_dir: dir.path().to_path_buf(),
        store: store.clone(),
        lease_ttl: hashgrid_coordinator::service::lease::DEFAULT_TTL,
        on_store_loss: Default::default(),
        listen: "127.0.0.1:0".parse()?,
        policy: Some(Policy::Sequential),
        core: bench_core_config(args.share_work, args.probe),
        // Every simulated node connects from loopback.
        limits: ConnectionLimits {
            total: args.connections + 8,
            per_address: args.connections + 8,
            ..ConnectionLimits::default()
        },
        pool_ca: None,
        stratum: None,
    }))?;
    let (addr, data_dir) = (server.local_addr, server.data_dir.clone());
    let ca_pem = std::fs::read(&data_dir.cert_pem)?;
    let node_token = std::fs::read_to_string(&data_dir.node_token)?.trim().to_string();
    let admin_token = std::fs::read_to_string(&data_dir.admin_token)?.trim().to_string();

    // The coordinator's own histogram (arrival on its connection to the acknowledgement handed
    // to the connection's writer) is read at both ends of the window: what the server holds
    // an acknowledgement for, apart from QUIC and the client.
    let metrics = server_rt.block_on(server.serve_http("127.0.0.1:0".parse()?))?;
    let result = client_rt.block_on(run_clients(&args, addr, metrics, &ca_pem, &node_token, &admin_token));
    server_rt.block_on(server.shutdown())?;
    drop(client_rt);
    drop(server_rt);
    let result = result?;

    // The acknowledgements must match what the store (SQLite or PostgreSQL) holds. On a
    // connection that failed, shares may be credited whose acknowledgement never arrived: then
    // the store may hold more, never fewer (every acknowledged share is credited).
    let stored: u64 = store.open(dir.path())?.load()?.accounts.iter().map(|a| a.shares).sum();
    let (accepted, failed) = (result.accepted_total, result.failed);
    let holds = if failed == 0 { stored == accepted } else { stored >= accepted };
    println!(
        "store check: {stored} shares credited in the store ({store}), {accepted} accepted acknowledgements{}",
        match (holds, failed) {
            (true, 0) => " (match)".to_string(),
            (true, _) => format!(
                " (every acknowledged share credited; {} credited on the {failed} failed connection(s) without an acknowledgement received)",
                stored - accepted
            ),
            (false, _) => " (MISMATCH)".to_string(),
        }
    );
    ensure!(holds, "stored credits differ from accepted acknowledgements");
    Ok(())
}

/// The core configuration of the benchmark: cheap shares, no failover while the clients
/// pre-compute, no rate probe (the clients announce a rate to size their ranges, then flood
/// or pace regardless of it: judged by it, they would be failed and their ranges revoked),
/// and a block target no pool share meets (filtered below as well).
fn bench_core_config(share_work: u128, probe: bool) -> CoreConfig {
    CoreConfig {
        shares_per_second: 1e12,
        min_share_work: share_work,
        failover_after_ms: 3_600_000,
        probe: if probe {
            ProbeConfig::default()
        } else {
            ProbeConfig { min_rate_ratio: 0.0, ..ProbeConfig::default() }
        },
        ..CoreConfig::default()
    }
}

/// The clients' QUIC idle timeout, ms (see `run_clients`).
const BENCH_IDLE_MS: u32 = 10_000;

struct RunResult {
    accepted_total: u64,
    /// Connections that failed (their last acknowledgements may never have arrived).
    failed: usize,
}

/// Per-connection state shared by its sender and receiver tasks.
struct Flow {
    window: Semaphore,
    /// Send time of share `id`, ns since the bench epoch (0 = not sent).
    sent_ns: Vec<AtomicU64>,
    sent: AtomicUsize,
    sender_done: AtomicBool,
    /// Told when the sender is done (its receiver then drains against a deadline).
    done: tokio::sync::Notify,
    /// Ranges the coordinator revoked (their shares are not sent), and how many.
    revoked: Mutex<HashSet<AssignmentId>>,
    revocations: AtomicUsize,
}

#[derive(Default)]
struct ConnStats {
    /// Latencies (µs) of accepted shares sent inside the measured window.
    latencies_us: Vec<u32>,
    accepted_in_window: u64,
    rejected_in_window: BTreeMap<RejectReason, u64>,
    accepted: u64,
    rejected: BTreeMap<RejectReason, u64>,
    revokes: u64,
    assigns: u64,
    other: u64,
    /// Pool shares not sent because their range was revoked.
    skipped: u64,
    error: Option<String>,
}

struct Clock {
    epoch: Instant,
    window_start_ns: u64,
    window_end_ns: u64,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn in_window(&self, t: u64) -> bool {
        (self.window_start_ns..self.window_end_ns).contains(&t)
    }
}

struct Client {
    conn: quinn::Connection,
    send: quinn::SendStream,
    reader: FrameReader,
    /// The ranges held once joined, in the order they were assigned.
    assignments: Vec<Assignment>,
    /// Messages taken while joining: revocations and assignments (for the report).
    revokes: u64,
    assigns: u64,
}

async fn run_clients(
    args: &Args,
    addr: SocketAddr,
    metrics: SocketAddr,
    ca_pem: &[u8],
    node_token: &str,
    admin_token: &str,
) -> anyhow::Result<RunResult> {
    // The service gets its account over the admin API.
    let admin_endpoint = net::client_endpoint_for(ca_pem, addr)?;
    let add = AdminRequest::AccountAdd {
        name: "bench".into(),
        standard: u128::MAX,
        period_secs: None,
        order: None,
        chain: None,
    };
    match net::admin_request(&admin_endpoint, addr, admin_token, &add).await? {
        AdminResponse::Ok => {}
        other => bail!("account add: {other:?}"),
    }

    // Each connection gets enough nonces for its share of the pool in its first range.
    let total_secs = args.warmup + args.seconds;
    let pool_rate = if args.rate > 0.0 { args.rate * 1.05 } else { args.max_rate };
    let per_conn = (pool_rate * total_secs / args.connections as f64).ceil() as usize + args.in_flight;
    let nonces = (per_conn as f64 * args.share_work as f64 * 1.5) as u64 + (1 << 16);
    let range_secs = CoreConfig::default().range_ms as f64 / 1000.0;
    let hashrate = nonces as f64 / range_secs;

    let alpn = if args.protocol == 2 { ALPN_V2 } else { ALPN };
    let endpoints: Vec<quinn::Endpoint> = (0..args.connections.div_ceil(args.conns_per_endpoint))
        .map(|_| {
            let mut endpoint = net::client_endpoint_for(ca_pem, addr)?;
            let mut config = net::client_config_speaking(ca_pem, alpn)?;
            // The node's 1 s idle timeout is for failover; on two saturated cores shared by
            // 1,000 connections, a few timed out while joining. The coordinator's (10 s) rules.
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(Duration::from_secs(1)));
            transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(BENCH_IDLE_MS))));
            config.transport_config(Arc::new(transport));
            endpoint.set_default_client_config(config);
            Ok::<_, net::NetError>(endpoint)
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.connections);
    // Connect in waves so the handshakes do not all time out together.
    for wave in (0..args.connections).collect::<Vec<_>>().chunks(100) {
        let mut joins = Vec::new();
        for &i in wave {
            let endpoint = endpoints[i / args.conns_per_endpoint].clone();
            let token = node_token.to_string();
            joins.push(tokio::spawn(async move { join(&endpoint, addr, token, i, hashrate).await }));
        }
        for j in joins {
            clients.push(j.await??);
        }
    }
    println!(
        "{} connections joined in {:.2} s over {} client endpoints; each range {} nonces; {} revokes and {} \
         assignments taken while joining",
        clients.len(),
        started.elapsed().as_secs_f64(),
        endpoints.len(),
        clients.iter().find_map(|c| c.assignments.first()).map_or(0, |a| a.count),
        clients.iter().map(|c| c.revokes).sum::<u64>(),
        clients.iter().map(|c| c.assigns).sum::<u64>()
    );

    // Pre-compute every connection's shares.
    let started = Instant::now();
    let ranges: Vec<Vec<Assignment>> = clients.iter().map(|c| c.assignments.clone()).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pools = tokio::task::spawn_blocking(move || find_shares(&ranges, per_conn, threads)).await??;
    let pool_total: usize = pools.iter().map(Vec::len).sum();
    println!(
        "pre-computed {} distinct shares ({} per connection wanted, {} expected hashes each) in {:.2} s",
        pool_total,
        per_conn,
        args.share_work,
        started.elapsed().as_secs_f64()
    );

    // Flood.
    let epoch = Instant::now() + Duration::from_millis(50);
    let clock = Arc::new(Clock {
        epoch,
        window_start_ns: (args.warmup * 1e9) as u64,
        window_end_ns: ((args.warmup + args.seconds) * 1e9) as u64,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let per_second: Arc<Vec<AtomicU64>> =
        Arc::new((0..(total_secs.ceil() as usize + 30)).map(|_| AtomicU64::new(0)).collect());
    let (mut tasks, mut flows) = (Vec::new(), Vec::new());
    let interval_ns = if args.rate > 0.0 { (args.connections as f64 * 1e9 / args.rate) as u64 } else { 0 };
    for (i, (client, pool)) in clients.into_iter().zip(pools).enumerate() {
        let flow = Arc::new(Flow {
            window: Semaphore::new(args.in_flight),
            sent_ns: (0..pool.len()).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicUsize::new(0),
            sender_done: AtomicBool::new(false),
            done: tokio::sync::Notify::new(),
            revoked: Mutex::new(HashSet::new()),
            revocations: AtomicUsize::new(0),
        });
        let Client { conn, send, reader, revokes, assigns, .. } = client;
        let plan = SendPlan {
            in_flight: args.in_flight,
            interval_ns,
            phase_ns: interval_ns * i as u64 / args.connections as u64,
            batched: args.protocol >= BATCHES_SINCE,
        };
        let sender = tokio::spawn(send_loop(send, pool, flow.clone(), clock.clone(), stop.clone(), plan));
        flows.push(flow.clone());
        let receiver = tokio::spawn(recv_loop(reader, flow, clock.clone(), per_second.clone()));
        tasks.push((conn, sender, receiver, revokes, assigns));
    }
    let sampler = CpuSampler::new();
    let ticker = tokio::spawn(progress(epoch, per_second.clone()));
    tokio::time::sleep_until((epoch + Duration::from_secs_f64(args.warmup)).into()).await;
    let cpu_start = sampler.sample();
    let intake_start = intake_histogram(metrics).await;
    tokio::time::sleep_until((epoch + Duration::from_secs_f64(total_secs)).into()).await;
    let cpu_end = sampler.sample();
    let intake_end = intake_histogram(metrics).await;
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    // A sender waiting for a slot stops now rather than wait for acks that may never come.
    for flow in &flows {
        flow.window.close();
    }

    let mut all = ConnStats::default();
    let (mut exhausted, mut failed) = (0, 0);
    let mut quic = [0u64; 4];
    for (conn, sender, receiver, revokes, assigns) in tasks {
        let (exhausted_here, skipped, send) = sender.await?;
        let stats = receiver.await?;
        drop(send);
        let q = conn.stats();
        for (sum, n) in quic.iter_mut().zip([q.udp_tx.datagrams, q.udp_rx.datagrams, q.frame_tx.acks, q.frame_rx.acks])
        {
            *sum += n;
        }
        conn.close(close_code::NORMAL.into(), b"done");
        exhausted += usize::from(exhausted_here);
        if let Some(e) = &stats.error {
            failed += 1;
            all.error.get_or_insert_with(|| e.clone());
        }
        all.latencies_us.extend_from_slice(&stats.latencies_us);
        all.accepted_in_window += stats.accepted_in_window;
        all.accepted += stats.accepted;
        for (r, n) in stats.rejected_in_window {
            *all.rejected_in_window.entry(r).or_default() += n;
        }
        for (r, n) in stats.rejected {
            *all.rejected.entry(r).or_default() += n;
        }
        all.revokes += stats.revokes + revokes;
        all.assigns += stats.assigns + assigns;
        all.other += stats.other;
        all.skipped += skipped;
    }
    for e in &endpoints {
        e.wait_idle().await;
    }

    report(args, &all, &per_second, &cpu_start, &cpu_end);
    server_held_report(&intake_start, &intake_end);
    let per_share = |n: u64| n as f64 / all.accepted.max(1) as f64;
    println!(
        "QUIC datagrams over the whole run, per accepted share: clients sent {:.2}, received {:.2}; ACK frames \
         sent {:.2}, received {:.2}",
        per_share(quic[0]),
        per_share(quic[1]),
        per_share(quic[2]),
        per_share(quic[3])
    );
    // A connection lost under overload is a result, not a reason to skip the store check: what
    // was acknowledged on it must still be credited.
    if let Some(e) = &all.error {
        println!("WARNING: {failed} of {} connection(s) failed, the first: {e}", args.connections);
    }
    if exhausted > 0 && all.skipped > 0 {
        println!(
            "WARNING: {exhausted} connection(s) ran out of pre-computed shares and stopped, {} of them skipped as \
             their ranges were revoked (the clients hold none for ranges assigned since): the figure is a lower bound",
            all.skipped
        );
    } else if exhausted > 0 {
        println!(
            "WARNING: {exhausted} connection(s) ran out of pre-computed shares and stopped: the figure is a lower \
             bound; raise --max-rate"
        );
    }
    Ok(RunResult { accepted_total: all.accepted, failed })
}

/// One line a second while the clients run: the accepted acknowledgements of the second.
async fn progress(epoch: Instant, per_second: Arc<Vec<AtomicU64>>) {
    for s in 1.. {
        tokio::time::sleep_until((epoch + Duration::from_secs(s)).into()).await;
        let n = per_second.get(s as usize - 1).map_or(0, |c| c.load(Ordering::Relaxed));
        println!("  second {s}: {n} accepted");
    }
}

/// Connects, says hello and waits for the welcome and the pipeline's assignments.
async fn join(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    token: String,
    i: usize,
    hashrate: f64,
) -> anyhow::Result<Client> {
    let conn = net::connect(endpoint, addr).await?;
    let (mut send, recv) = conn.open_bi().await?;
    let hello = Hello::Node(NodeHello {
        token,
        name: format!("bench-{i}"),
        software_version: env!("CARGO_PKG_VERSION").into(),
        standby: false,
        devices: Vec::new(),
        hashrate,
    });
    send.write_all(&codec::encode(&hello)?).await?;
    let mut reader = FrameReader::new(recv, "coordinator");
    let mut welcomed = false;
    // Held ranges by id, in assignment order: a range may be revoked, and others assigned, at
    // any time, the welcome included.
    let mut held: BTreeMap<AssignmentId, Assignment> = BTreeMap::new();
    let (mut revokes, mut assigns) = (0, 0);
    let pipeline = CoreConfig::default().pipeline;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !welcomed || held.len() < pipeline {
        let Ok(msg) = tokio::time::timeout_at(deadline.into(), reader.recv::<CoordinatorMessage>()).await else {
            // Welcomed but revoked and not (yet) given new work: it floods what it holds.
            ensure!(welcomed, "bench-{i}: no welcome within 30 s");
            break;
        };
        let msg = msg?.context("stream ended before the assignments")?;
        match msg {
            CoordinatorMessage::Welcome { .. } => welcomed = true,
            CoordinatorMessage::Assign(a) => {
                assigns += 1;
                held.insert(a.id, a);
            }
            CoordinatorMessage::Revoke { assignment } => {
                revokes += 1;
                held.remove(&assignment);
            }
            CoordinatorMessage::Close { reason } => bail!("bench-{i} closed while joining: {reason}"),
            CoordinatorMessage::ShareResult { id, .. } => bail!("bench-{i}: result for share {id} never sent"),
            CoordinatorMessage::ShareResults(_) => bail!("bench-{i}: results for shares never sent"),
        }
    }
    Ok(Client { conn, send, reader, assignments: held.into_values().collect(), revokes, assigns })
}

/// Finds up to `per_conn` shares for each connection in its ranges (skipping any that would
/// also be a local-chain block, which would make every template stale, and any another pool
/// already holds: ranges never overlap, but a duplicate would be rejected, not credited). The
/// work is bounded by the ranges; a line of progress every 2 s.
fn find_shares(ranges: &[Vec<Assignment>], per_conn: usize, threads: usize) -> anyhow::Result<Vec<Vec<Share>>> {
    let block_target = Target::from_compact(CoreConfig::default().chain_bits)?;
    let mut backend = CpuBackend::new(threads)?;
    let cancel = AtomicBool::new(false);
    let mut pools: Vec<Vec<Share>> = Vec::with_capacity(ranges.len());
    let mut taken: HashSet<(u64, u32, u32, u32)> = HashSet::new();
    let started = Instant::now();
    let mut progress_at = started + Duration::from_secs(2);
    for assignments in ranges {
        if Instant::now() >= progress_at {
            progress_at += Duration::from_secs(2);
            println!(
                "  pre-computing: {}/{} connections, {} shares, {:.0} s",
                pools.len(),
                ranges.len(),
                pools.iter().map(Vec::len).sum::<usize>(),
                started.elapsed().as_secs_f64()
            );
        }
        let mut pool = Vec::with_capacity(per_conn);
        'ranges: for a in assignments {
            let mut offset = 0u64;
            while offset < a.count {
                let missing = (per_conn - pool.len()) as u64;
                let share_work = a.share_target.work().max(1) as u64;
                let count = (missing * share_work + missing * share_work / 8 + 4096).min(a.count - offset);
                let job = SearchJob::new(a.header, a.share_target, a.start.wrapping_add(offset as u32), count)?;
                let report = backend.search(&job, &cancel)?;
                offset += count;
                for hit in report.hits {
                    if block_target.is_met_by(&hit.hash)
                        || !taken.insert((a.job, a.header.version, a.header.time, hit.nonce))
                    {
                        continue;
                    }
                    pool.push(Share {
                        id: pool.len() as u64,
                        assignment: a.id,
                        job: a.job,
                        version: a.header.version,
                        time: a.header.time,
                        nonce: hit.nonce,
                    });
                    if pool.len() == per_conn {
                        break 'ranges;
                    }
                }
            }
        }
        pools.push(pool);
    }
    Ok(pools)
}

/// How one connection sends.
#[derive(Debug, Clone, Copy)]
struct SendPlan {
    in_flight: usize,
    /// Time between shares when paced (0: flood).
    interval_ns: u64,
    /// Offset of this connection's schedule, to spread connections evenly.
    phase_ns: u64,
    /// Each write's shares as one `Shares` message (protocol 3) rather than one `Share` each.
    batched: bool,
}

/// Sends shares while the window (and, when paced, the schedule) allows, batching whatever
/// may go at once into one stream write; each share once, none of a revoked range. Returns
/// whether the pool ran out before the stop (the sender then stops) and how many shares it
/// skipped as revoked.
async fn send_loop(
    mut send: quinn::SendStream,
    pool: Vec<Share>,
    flow: Arc<Flow>,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    plan: SendPlan,
) -> (bool, u64, quinn::SendStream) {
    tokio::time::sleep_until(clock.epoch.into()).await;
    let mut next = 0;
    let mut buf = Vec::with_capacity(plan.in_flight * 40);
    let mut shares = Vec::with_capacity(plan.in_flight);
    let mut exhausted = false;
    let (mut revoked, mut revocations_seen, mut skipped) = (HashSet::new(), 0, 0u64);
    'send: while !stop.load(Ordering::Relaxed) {
        let mut allowed = plan.in_flight;
        if let Some(interval) = std::num::NonZeroU64::new(plan.interval_ns) {
            let now = clock.now_ns();
            // Shares due by now: those scheduled at phase + k * interval <= now.
            let due = if now < plan.phase_ns { 0 } else { ((now - plan.phase_ns) / interval + 1) as usize };
            if due <= next {
                let at = clock.epoch + Duration::from_nanos(plan.phase_ns + next as u64 * interval.get());
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
            allowed = allowed.min(due - next);
        }
        let Ok(permit) = flow.window.acquire().await else { break };
        permit.forget();
        let mut batch = 1;
        while batch < allowed && flow.window.try_acquire().map(|p| p.forget()).is_ok() {
            batch += 1;
        }
        buf.clear();
        let now = clock.now_ns().max(1);
        let revocations = flow.revocations.load(Ordering::Acquire);
        if revocations != revocations_seen {
            revocations_seen = revocations;
            revoked = flow.revoked.lock().expect("not poisoned").clone();
        }
        let mut unused = batch;
        while unused > 0 {
            while next < pool.len() && revoked.contains(&pool[next].assignment) {
                skipped += 1;
                next += 1;
            }
            if next == pool.len() {
                exhausted = true;
                break;
            }
            unused -= 1;
            if plan.batched {
                shares.push(pool[next]);
            } else {
                let Ok(frame) = codec::encode(&NodeMessage::Share(pool[next])) else { break 'send };
                buf.extend_from_slice(&frame);
            }
            flow.sent_ns[next].store(now, Ordering::Relaxed);
            next += 1;
        }
        for msg in NodeMessage::batches(&shares) {
            let Ok(frame) = codec::encode(&msg) else { break 'send };
            buf.extend_from_slice(&frame);
        }
        shares.clear();
        // Slots of the batch left unused (the pool ran out) are not waiting for an ack.
        flow.window.add_permits(unused);
        flow.count_sent(next - skipped as usize);
        if buf.is_empty() || send.write_all(&buf).await.is_err() {
            break;
        }
        if exhausted {
            break;
        }
    }
    flow.count_sent(next - skipped as usize);
    flow.sender_done.store(true, Ordering::Release);
    flow.done.notify_one();
    // The stream stays open until the last acknowledgement is in (dropping it would finish it,
    // which ends the node's session on the coordinator).
    (exhausted, skipped, send)
}

impl Flow {
    /// `n` shares went out so far.
    fn count_sent(&self, n: usize) {
        self.sent.store(n, Ordering::Release);
    }

    /// The coordinator revoked `assignment`: its shares are not sent any more.
    fn revoke(&self, assignment: AssignmentId) {
        self.revoked.lock().expect("not poisoned").insert(assignment);
        self.revocations.fetch_add(1, Ordering::Release);
    }
}

/// Reads acknowledgements until every sent share has one (or 10 s after the sender stopped),
/// taking revocations and new assignments as they come.
async fn recv_loop(
    mut reader: FrameReader,
    flow: Arc<Flow>,
    clock: Arc<Clock>,
    per_second: Arc<Vec<AtomicU64>>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut received = 0usize;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if flow.sender_done.load(Ordering::Acquire) {
            if received >= flow.sent.load(Ordering::Acquire) {
                break;
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
            if Instant::now() > deadline {
                stats.error =
                    Some(format!("{} acknowledgements missing", flow.sent.load(Ordering::Acquire) - received));
                break;
            }
        }
        // Cancel-safe: the reader keeps what it has read, and returns decoded frames at once.
        // While the sender runs, no timer per read (the client shares the server's cores):
        // its end wakes this loop instead; then the drain looks at its deadline every 50 ms.
        let read = if drain_deadline.is_some() || flow.sender_done.load(Ordering::Acquire) {
            tokio::time::timeout(Duration::from_millis(50), reader.recv_batch()).await.ok()
        } else {
            tokio::select! {
                read = reader.recv_batch() => Some(read),
                () = flow.done.notified() => None,
            }
        };
        let (msgs, error) = match read {
            None => continue,
            Some(Ok(Some(msgs))) => (msgs, None),
            Some(Ok(None)) => (Vec::new(), Some("the coordinator ended the stream".to_string())),
            Some(Err((msgs, e))) => (msgs, Some(e.to_string())),
        };
        let now = clock.now_ns();
        for msg in msgs.into_iter().flat_map(CoordinatorMessage::unbatched) {
            match msg {
                CoordinatorMessage::ShareResults(_) => unreachable!("unbatched"),
                CoordinatorMessage::ShareResult { id, outcome } => {
                    received += 1;
                    let sent = flow.sent_ns.get(id as usize).map_or(0, |t| t.load(Ordering::Relaxed));
                    let in_window = clock.in_window(now);
                    match outcome {
                        ShareOutcome::Accepted { .. } => {
                            stats.accepted += 1;
                            stats.accepted_in_window += u64::from(in_window);
                            if sent != 0 && clock.in_window(sent) {
                                stats.latencies_us.push((now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32);
                            }
                            if let Some(slot) = per_second.get((now / 1_000_000_000) as usize) {
                                slot.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        ShareOutcome::Rejected(r) => {
                            *stats.rejected.entry(r).or_default() += 1;
                            if in_window {
                                *stats.rejected_in_window.entry(r).or_default() += 1;
                            }
                        }
                    }
                    flow.window.add_permits(1);
                }
                CoordinatorMessage::Revoke { assignment } => {
                    stats.revokes += 1;
                    flow.revoke(assignment);
                }
                // No pool for a range assigned now: the sender stops when its pool runs out.
                CoordinatorMessage::Assign(_) => stats.assigns += 1,
                CoordinatorMessage::Close { reason } => {
                    stats.error = Some(format!("the coordinator closed: {reason}"));
                }
                CoordinatorMessage::Welcome { .. } => stats.other += 1,
            }
        }
        if let Some(e) = error {
            stats.error = Some(format!("{e} ({:.1} s into the run)", now as f64 / 1e9));
        }
        if stats.error.is_some() {
            break;
        }
    }
    // No slot frees up any more: a sender still waiting for one stops.
    flow.window.close();
    stats
}

fn report(args: &Args, all: &ConnStats, per_second: &[AtomicU64], cpu_start: &CpuSample, cpu_end: &CpuSample) {
    let mut lat = all.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0 }
    };
    let rate = all.accepted_in_window as f64 / args.seconds;
    let rejected: u64 = all.rejected.values().sum();
    let rejected_in_window: u64 = all.rejected_in_window.values().sum();
    let per_reason: Vec<String> =
        all.rejected_in_window.iter().map(|(r, n)| format!("{r:?} {:.0}/s", *n as f64 / args.seconds)).collect();
    println!();
    println!(
        "RESULT protocol={} connections={} in_flight={} offered={} share_work={} window={}s: {:.0} accepted durable \
         shares/s ({:.2}x of the 200k goal); {:.0} rejected/s [{}]; accepted latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         ({} samples)",
        args.protocol,
        args.connections,
        args.in_flight,
        if args.rate > 0.0 { format!("{:.0}/s", args.rate) } else { "flood".into() },
        args.share_work,
        args.seconds,
        rate,
        rate / 200_000.0,
        rejected_in_window as f64 / args.seconds,
        per_reason.join(", "),
        pct(0.50),
        pct(0.99),
        lat.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        lat.len()
    );
    println!(
        "whole run incl. joining, warm-up and drain: {} accepted, {} rejected {:?}, {} revokes, {} assignments, \
         {} pool shares skipped as revoked, {} other messages",
        all.accepted, rejected, all.rejected, all.revokes, all.assigns, all.skipped, all.other
    );
    let secs: Vec<String> = per_second
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .take((args.warmup + args.seconds).ceil() as usize + 1)
        .map(|c| format!("{}k", c / 1000))
        .collect();
    println!("accepted acks per second of the run: {}", secs.join(" "));
    cpu_report(cpu_start, cpu_end);
}

/// The coordinator's `hashgrid_share_intake_seconds` buckets from its `/metrics`: (upper bound
/// in seconds, cumulative count), empty if it cannot be read.
async fn intake_histogram(metrics: SocketAddr) -> Vec<(f64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut page = String::new();
    if let Ok(mut stream) = tokio::net::TcpStream::connect(metrics).await {
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await;
        let _ = stream.read_to_string(&mut page).await;
    }
    page.lines()
        .filter_map(|l| l.strip_prefix("hashgrid_share_intake_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The server's share of the latency in the window: the bucket bounds its p50 and p99 fall
/// under (arrival to acknowledgement handed to the connection's writer, after the flush).
fn server_held_report(start: &[(f64, u64)], end: &[(f64, u64)]) {
    if start.len() != end.len() || end.is_empty() {
        println!("server-side latency: /metrics not read");
        return;
    }
    let window: Vec<(f64, u64)> = start.iter().zip(end).map(|(a, b)| (b.0, b.1.saturating_sub(a.1))).collect();
    let total = window.iter().map(|b| b.1).max().unwrap_or(0);
    let bound = |p: f64| {
        let want = (total as f64 * p).ceil() as u64;
        window.iter().find(|b| b.1 >= want).map_or(f64::NAN, |b| b.0 * 1e3)
    };
    println!(
        "server-side latency (share read to acknowledgement queued, after the flush), {total} shares in the window: \
         p50 <= {:.1} ms, p99 <= {:.1} ms (histogram bucket bounds)",
        bound(0.5),
        bound(0.99)
    );
}

// ---- CPU accounting from /proc ----

#[derive(Debug, Clone, Default)]
struct CpuSample {
    at: Option<Instant>,
    /// Thread id -> (name, CPU ticks (utime + stime)).
    threads: BTreeMap<u64, (String, u64)>,
    /// Whole machine: (busy ticks, total ticks).
    machine: (u64, u64),
    /// This process: ticks.
    process: u64,
}

struct CpuSampler;

impl CpuSampler {
    fn new() -> Self {
        CpuSampler
    }

    fn sample(&self) -> CpuSample {
        let mut threads: BTreeMap<u64, (String, u64)> = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
                let Some((head, _)) = stat.rsplit_once(')') else { continue };
                let name = head.split_once('(').map_or("?", |(_, n)| n).to_string();
                let tid = entry.file_name().to_string_lossy().parse().unwrap_or(0);
                threads.insert(tid, (name, stat_ticks(&stat)));
            }
        }
        let process = std::fs::read_to_string("/proc/self/stat").map_or(0, |s| stat_ticks(&s));
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3)? + v.get(4)?;
                Some((total - idle, total))
            })
            .unwrap_or((0, 0));
        CpuSample { at: Some(Instant::now()), threads, machine, process }
    }
}

/// utime + stime (fields 14 and 15 of a /proc stat line), in clock ticks.
fn stat_ticks(stat: &str) -> u64 {
    let Some((_, tail)) = stat.rsplit_once(')') else { return 0 };
    // `tail` starts at field 3 (the state).
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

fn cpu_report(a: &CpuSample, b: &CpuSample) {
    let (Some(t0), Some(t1)) = (a.at, b.at) else { return };
    let wall = (t1 - t0).as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    let pct = |ticks: u64| ticks as f64 / hz / wall * 100.0;
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    // Per thread, grouped by name (threads that ended inside the window are not counted).
    for (tid, (name, t)) in &b.threads {
        let d = t.saturating_sub(a.threads.get(tid).map_or(0, |(_, t)| *t));
        *groups.entry(name.clone()).or_default() += d;
    }
    let parts: Vec<String> =
        groups.iter().filter(|(_, t)| **t > 0).map(|(n, &t)| format!("{n} {:.0}%", pct(t))).collect();
    let proc_pct = pct(b.process.saturating_sub(a.process));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (busy, total) = (b.machine.0.saturating_sub(a.machine.0), b.machine.1.saturating_sub(a.machine.1));
    let machine_pct = if total > 0 { busy as f64 / total as f64 * 100.0 * cores } else { f64::NAN };
    println!(
        "CPU in the window (100% = one core): this process {:.0}% [{}]; whole machine {:.0}% of {:.0}% \
         (other processes {:.0}%)",
        proc_pct,
        parts.join(", "),
        machine_pct,
        cores * 100.0,
        (machine_pct - proc_pct).max(0.0)
    );
}

fn print_machine() {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine: {model}, {cores} cores available; loadavg {}", load.trim());
}

fn filesystem_of(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return "?".into() };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {}", f[2], f[1])))
        })
        .max()
        .map_or_else(|| "?".into(), |(_, s)| s)
}

// ---- micro benchmarks ----

/// Shares in the micro benchmarks.
const MICRO_SHARES: usize = 200_000;

/// The start of the micro benchmarks' virtual clock, ms.
const MICRO_T0: u64 = 1_700_000_000_000;

/// A core with one account ("bench") and `--connections` nodes, one range each, and
/// `MICRO_SHARES` valid shares of those ranges interleaved as they arrive from many
/// connections (so the share index sees as many insertion points as in a run).
fn micro_shares(args: &Args) -> anyhow::Result<(Core, Vec<(u64, Share)>)> {
    let n_shares = MICRO_SHARES;

    // The core: --connections nodes, one range each, their shares interleaved as they arrive
    // from many connections (so the share index sees as many insertion points as in a run).
    let nodes = args.connections;
    let per_node = n_shares.div_ceil(nodes);
    let mut core = Core::new(bench_core_config(args.share_work, false));
    let t0 = MICRO_T0;
    core.add_account(t0, "bench", u128::MAX, None, None, None).map_err(anyhow::Error::msg)?;
    let mut ranges = Vec::new();
    for node in 1..=nodes as u64 {
        let hello = NodeHello {
            token: String::new(),
            name: format!("bench-{node}"),
            software_version: "0".into(),
            standby: false,
            devices: Vec::new(),
            hashrate: (per_node as f64 * args.share_work as f64 * 1.5 + 65536.0) / 3.0,
        };
        core.handle_node_joined(t0, node, &hello, hashgrid_common::message::PROTOCOL_VERSION);
        ranges.push(
            core.drain_commands()
                .into_iter()
                .filter_map(|c| match c {
                    Command::Send { msg: CoordinatorMessage::Assign(a), .. } => Some(a),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pools = find_shares(&ranges, per_node, threads)?;
    let mut shares: Vec<(u64, Share)> = Vec::with_capacity(per_node * nodes);
    for k in 0..per_node {
        for (i, pool) in pools.iter().enumerate() {
            if let Some(s) = pool.get(k) {
                shares.push((i as u64 + 1, *s));
            }
        }
    }
    shares.truncate(n_shares);
    ensure!(shares.len() == n_shares, "found only {} shares", shares.len());
    println!("micro: {n_shares} shares from {nodes} nodes, interleaved");
    Ok((core, shares))
}

/// The `StoreOp`s the core persists for `shares` (handled in batches of 512, as arriving).
fn micro_ops(core: &mut Core, shares: &[(u64, Share)]) -> Vec<StoreOp> {
    let mut ops = Vec::with_capacity(shares.len());
    for chunk in shares.chunks(512) {
        for &(node, s) in chunk {
            core.handle_node_message(MICRO_T0 + 1000, node, NodeMessage::Share(s));
        }
        ops.extend(core.drain_commands().into_iter().filter_map(|c| match c {
            Command::Persist(op) => Some(op),
            _ => None,
        }));
    }
    ops
}

/// A fresh store in `parent` with the account "bench" the micro benchmarks credit.
fn micro_store_open(parent: &Path) -> anyhow::Result<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir_in(parent)?;
    let mut store = Store::open(&dir.path().join("hashgrid.db"))?;
    store.apply(&[StoreOp::AccountAdded {
        name: "bench".into(),
        standard: hashgrid_coordinator::core::Work(u128::MAX),
        period_ms: None,
        order: 0,
        period_start_ms: MICRO_T0,
        chain: "local".into(),
    }])?;
    Ok((dir, store))
}

/// This thread's CPU time (utime + stime), in clock ticks (USER_HZ, 100 per second).
fn thread_ticks() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat").map_or(0, |s| stat_ticks(&s))
}

/// This process's CPU time (utime + stime of every thread), in clock ticks.
fn process_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0, |s| stat_ticks(&s))
}

/// `--micro-store`: the store thread's work per credit, alone on this thread.
fn micro_store(args: &Args) -> anyhow::Result<()> {
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let (mut core, shares) = micro_shares(args)?;
    let ops = micro_ops(&mut core, &shares);
    let batch = 4096;
    println!(
        "Store::apply_unsynced of {} credits in batches of {batch} (checkpointer on, maintain between \
         batches), data dir on {}:",
        ops.len(),
        filesystem_of(&parent)
    );
    let mut per_credit = Vec::new();
    for round in 1..=args.rounds {
        let (dir, mut store) = micro_store_open(&parent)?;
        let checkpointer = store.checkpointer()?;
        let (ticks, process, started) = (thread_ticks(), process_ticks(), Instant::now());
        for chunk in ops.chunks(batch) {
            store.apply_unsynced(chunk)?;
            store.maintain()?;
        }
        let cpu = (thread_ticks() - ticks) as f64 / 100.0;
        let wall = started.elapsed().as_secs_f64();
        // The checkpointer's share: its thread ends with the handle, so count the process.
        drop(checkpointer);
        let process = (process_ticks() - process) as f64 / 100.0;
        let us = cpu * 1e6 / ops.len() as f64;
        per_credit.push(us);
        // Nothing is checkpointed in a round this short: the WAL holds every page written.
        let bytes = std::fs::metadata(dir.path().join("hashgrid.db-wal")).map_or(0, |m| m.len());
        println!(
            "  round {round}: {us:.2} µs CPU per credit ({:.2} µs wall; with the checkpointer {:.2} µs), \
             {:.0} credits per CPU-second, WAL {:.0} bytes per credit",
            wall * 1e6 / ops.len() as f64,
            process * 1e6 / ops.len() as f64,
            ops.len() as f64 / cpu,
            bytes as f64 / ops.len() as f64,
        );
    }
    per_credit.sort_by(f64::total_cmp);
    println!("micro-store median: {:.2} µs CPU per credit", per_credit[per_credit.len() / 2]);
    Ok(())
}

/// Times the core's share handling, `Store::apply` and alternative credit SQL, one thread each.
fn micro(args: &Args) -> anyhow::Result<()> {
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let n_shares = MICRO_SHARES;
    let (mut core, shares) = micro_shares(args)?;
    let t0 = MICRO_T0;

    let mut ops: Vec<StoreOp> = Vec::with_capacity(n_shares);
    let batch = 512;
    let started = Instant::now();
    for chunk in shares.chunks(batch) {
        for &(node, s) in chunk {
            core.handle_node_message(t0 + 1000, node, NodeMessage::Share(s));
        }
        let commands = core.drain_commands();
        // As the server loop does: clone the persist ops out, then walk the commands.
        ops.extend(commands.iter().filter_map(|c| if let Command::Persist(op) = c { Some(op.clone()) } else { None }));
        let sends = commands.iter().filter(|c| matches!(c, Command::Send { .. })).count();
        std::hint::black_box(sends);
    }
    let core_us = started.elapsed().as_secs_f64() * 1e6 / n_shares as f64;
    println!("core: {core_us:.2} µs per share (handle_node_message + drain + op clone, batches of {batch})");
    let rehash = {
        let h = Header::from_bytes(&[1; 80]);
        let started = Instant::now();
        for n in 0..n_shares as u32 {
            std::hint::black_box(h.with_nonce(n).block_hash());
        }
        started.elapsed().as_secs_f64() * 1e6 / n_shares as f64
    };
    println!("  of which one sha256d of a header (Header::block_hash): {rehash:.2} µs");
    let encode_us = {
        let msg = CoordinatorMessage::ShareResult { id: 12345, outcome: ShareOutcome::Accepted { work: 16 } };
        let started = Instant::now();
        for _ in 0..n_shares {
            std::hint::black_box(codec::encode(&msg)?);
        }
        started.elapsed().as_secs_f64() * 1e6 / n_shares as f64
    };
    println!("codec::encode of one ShareResult: {encode_us:.2} µs");

    // The real store at several batch sizes.
    println!("Store::apply (synchronous=FULL, WAL) of Credit batches, data dir on {}:", filesystem_of(&parent));
    for &size in &[1usize, 16, 128, 1024, 4096] {
        let (_dir, mut store) = micro_store_open(&parent)?;
        let limit = if size == 1 { 2000 } else { ops.len() };
        let started = Instant::now();
        let mut batches = 0;
        for chunk in ops[..limit].chunks(size) {
            store.apply(chunk)?;
            batches += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  batch {size:>5}: {:>8.3} ms per batch, {:>6.2} µs per credit, {:>9.0} credits/s",
            secs * 1e3 / batches as f64,
            secs * 1e6 / limit as f64,
            limit as f64 / secs
        );
    }

    // Copies of the credit SQL, as the report priced them (E is what store.rs does now).
    let credits: Vec<Credit> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Credit { account, work, node, job, header, share_target, at_ms } => Some(Credit {
                account: account.clone(),
                work: work.0,
                node: node.clone(),
                job: *job,
                header: *header,
                hash: header.block_hash().0,
                share_target: *share_target,
                at_ms: *at_ms,
            }),
            _ => None,
        })
        .collect();
    println!("credit SQL variants (1024 credits per transaction, median of 3 runs):");
    for variant in VARIANTS {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir_in(&parent)?;
            let mut alt = AltStore::open(&dir.path().join("alt.db"), variant)?;
            let started = Instant::now();
            for chunk in credits.chunks(1024) {
                alt.apply(chunk)?;
            }
            runs.push(started.elapsed().as_secs_f64());
            alt.check(&credits)?;
        }
        runs.sort_by(f64::total_cmp);
        let secs = runs[1];
        println!(
            "  {:<64} {:>6.2} µs per credit, {:>9.0} credits/s",
            variant.name,
            secs * 1e6 / credits.len() as f64,
            credits.len() as f64 / secs
        );
    }
    fsync_probe(&parent)?;
    Ok(())
}

/// The disk's durable-write latency: 4 KiB appended and fdatasync'd, 200 times.
fn fsync_probe(parent: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = tempfile::tempdir_in(parent)?;
    let mut file = std::fs::File::create(dir.path().join("probe"))?;
    let page = [0x5au8; 4096];
    let mut times: Vec<f64> = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "fsync probe (4 KiB append + fdatasync): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times[100], times[197], times[199]
    );
    Ok(())
}

struct Credit {
    account: String,
    work: u128,
    node: String,
    job: u64,
    header: Header,
    hash: [u8; 32],
    share_target: Target,
    at_ms: u64,
}

/// A variant of the credit SQL: store.rs's before schema migration 2 (BASE), and the changes
/// priced on the way to E (what store.rs does since).
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    /// Re-hash the header in the store (store.rs does; the core already has the hash).
    rehash: bool,
    /// SELECT + UPDATE the account once per batch instead of once per credit.
    per_batch_account: bool,
    /// Rows per INSERT statement.
    rows_per_insert: usize,
    /// Keep the `shares_by_account` index.
    account_index: bool,
    /// synchronous=FULL (durable at commit) rather than NORMAL.
    sync_full: bool,
    /// SQLite's automatic checkpoints in the committing thread (else: none, a cost probe).
    autocheckpoint: bool,
    /// `PRAGMA cache_size` in MiB (None: SQLite's default, 2 MiB).
    cache_mib: Option<i64>,
    /// Keep UNIQUE (job, version, time, nonce) (else: plain INSERTs, duplicates left to the core).
    unique_index: bool,
    /// A plain index on `job` (for `Store::load`'s per-job share query) when the UNIQUE one is gone.
    job_index: bool,
    /// `PRAGMA foreign_keys=ON` (every share row checks its account).
    foreign_keys: bool,
}

const BASE: Variant = Variant {
    name: "baseline (store.rs Credit before migration 2)",
    rehash: true,
    per_batch_account: false,
    rows_per_insert: 1,
    account_index: true,
    sync_full: true,
    autocheckpoint: true,
    cache_mib: None,
    unique_index: true,
    job_index: false,
    foreign_keys: true,
};

const C: Variant = Variant { name: "", rehash: false, per_batch_account: true, rows_per_insert: 16, ..BASE };
const D: Variant = Variant { cache_mib: Some(64), ..C };

const E: Variant = Variant { unique_index: false, job_index: true, ..D };

const VARIANTS: [Variant; 10] = [
    BASE,
    Variant { name: "A: hash passed in, no re-hash", rehash: false, ..BASE },
    Variant { name: "B: A + account read/updated once per batch", rehash: false, per_batch_account: true, ..BASE },
    Variant { name: "C: B + 16-row INSERT statements", ..C },
    Variant { name: "D: C + cache_size 64 MiB", ..D },
    Variant { name: "E: D + UNIQUE (job, version, time, nonce) -> INDEX (job)", ..E },
    Variant { name: "probe: E without shares_by_account index", account_index: false, ..E },
    Variant { name: "probe: E without auto-checkpoints in the commit path", autocheckpoint: false, ..E },
    Variant { name: "probe: E with foreign_keys=OFF", foreign_keys: false, ..E },
    Variant { name: "probe: E with synchronous=NORMAL (not durable at commit)", sync_full: false, ..E },
];

struct AltStore {
    conn: rusqlite::Connection,
    variant: Variant,
}

impl AltStore {
    fn open(path: &Path, variant: Variant) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", if variant.sync_full { "FULL" } else { "NORMAL" })?;
        if !variant.autocheckpoint {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        if let Some(mib) = variant.cache_mib {
            conn.pragma_update(None, "cache_size", -mib * 1024)?;
        }
        conn.pragma_update(None, "foreign_keys", if variant.foreign_keys { "ON" } else { "OFF" })?;
        conn.execute_batch(
            "CREATE TABLE accounts (
                name TEXT PRIMARY KEY, standard TEXT NOT NULL, period_ms INTEGER, sort_order INTEGER NOT NULL,
                delivered TEXT NOT NULL, period_start_ms INTEGER NOT NULL, shares INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE shares (
                id INTEGER PRIMARY KEY,
                account TEXT NOT NULL REFERENCES accounts(name),
                period_start_ms INTEGER NOT NULL,
                node TEXT NOT NULL,
                job INTEGER NOT NULL,
                version INTEGER NOT NULL,
                time INTEGER NOT NULL,
                nonce INTEGER NOT NULL,
                header BLOB NOT NULL CHECK (length(header) = 80),
                hash BLOB NOT NULL CHECK (length(hash) = 32),
                share_target BLOB NOT NULL CHECK (length(share_target) = 32),
                work TEXT NOT NULL,
                at_ms INTEGER NOT NULL
            ) STRICT;
            INSERT INTO accounts VALUES ('bench', '340282366920938463463374607431768211455', NULL, 0, '0', 0, 0);
            CREATE TABLE assignments (
                id INTEGER NOT NULL, node TEXT NOT NULL, account TEXT NOT NULL, job INTEGER NOT NULL,
                version INTEGER NOT NULL, start INTEGER NOT NULL, count INTEGER NOT NULL, at_ms INTEGER NOT NULL
            ) STRICT;",
        )?;
        if variant.unique_index {
            conn.execute_batch("CREATE UNIQUE INDEX shares_unique ON shares(job, version, time, nonce);")?;
        }
        if variant.job_index {
            conn.execute_batch("CREATE INDEX shares_by_job ON shares(job);")?;
        }
        if variant.account_index {
            conn.execute_batch("CREATE INDEX shares_by_account ON shares(account, period_start_ms);")?;
        }
        Ok(AltStore { conn, variant })
    }

    fn apply(&mut self, credits: &[Credit]) -> anyhow::Result<()> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Self::apply_in(&tx, self.variant, credits)?;
        tx.commit()?;
        Ok(())
    }

    /// The credits of one batch inside the caller's transaction.
    fn apply_in(tx: &rusqlite::Transaction<'_>, v: Variant, credits: &[Credit]) -> anyhow::Result<()> {
        // Per-batch account state: name -> (delivered, period_start_ms, shares added).
        let mut accounts: BTreeMap<String, (u128, i64, i64)> = BTreeMap::new();
        let mut rows: Vec<(i64, &Credit)> = Vec::with_capacity(credits.len());
        for c in credits {
            let period_start_ms: i64 = if !v.per_batch_account {
                let (delivered, period): (String, i64) = tx
                    .prepare_cached("SELECT delivered, period_start_ms FROM accounts WHERE name = ?1")?
                    .query_row([&c.account], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let delivered: u128 = delivered.parse::<u128>()?.saturating_add(c.work);
                tx.prepare_cached("UPDATE accounts SET delivered = ?1, shares = shares + 1 WHERE name = ?2")?
                    .execute(rusqlite::params![delivered.to_string(), c.account])?;
                period
            } else {
                if !accounts.contains_key(&c.account) {
                    let (delivered, period): (String, i64) = tx
                        .prepare_cached("SELECT delivered, period_start_ms FROM accounts WHERE name = ?1")?
                        .query_row([&c.account], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    accounts.insert(c.account.clone(), (delivered.parse()?, period, 0));
                }
                let entry = accounts.get_mut(&c.account).expect("inserted above");
                entry.0 = entry.0.saturating_add(c.work);
                entry.2 += 1;
                entry.1
            };
            rows.push((period_start_ms, c));
        }
        let cols =
            "(account, period_start_ms, node, job, version, time, nonce, header, hash, share_target, work, at_ms)";
        let placeholders = |n: usize| {
            (0..n)
                .map(|r| format!("({})", (1..=12).map(|k| format!("?{}", r * 12 + k)).collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let conflict = if v.unique_index { "ON CONFLICT (job, version, time, nonce) DO NOTHING" } else { "" };
        let multi = format!("INSERT INTO shares {cols} VALUES {} {conflict}", placeholders(v.rows_per_insert));
        let single = format!("INSERT INTO shares {cols} VALUES {} {conflict}", placeholders(1));
        for group in rows.chunks(v.rows_per_insert) {
            let sql = if group.len() == v.rows_per_insert { &multi } else { &single };
            let per = if group.len() == v.rows_per_insert { group.len() } else { 1 };
            for part in group.chunks(per) {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(part.len() * 12);
                for &(period_start_ms, c) in part {
                    let hash = if v.rehash { c.header.block_hash().0 } else { c.hash };
                    values.extend([
                        c.account.clone().into(),
                        period_start_ms.into(),
                        c.node.clone().into(),
                        (c.job as i64).into(),
                        i64::from(c.header.version).into(),
                        i64::from(c.header.time).into(),
                        i64::from(c.header.nonce).into(),
                        c.header.to_bytes().to_vec().into(),
                        hash.to_vec().into(),
                        c.share_target.value().to_be_bytes::<32>().to_vec().into(),
                        c.work.to_string().into(),
                        (c.at_ms as i64).into(),
                    ]);
                }
                let inserted = stmt.execute(rusqlite::params_from_iter(values))?;
                ensure!(inserted == part.len(), "duplicate share");
            }
        }
        for (name, (delivered, _, added)) in accounts {
            tx.prepare_cached("UPDATE accounts SET delivered = ?1, shares = shares + ?2 WHERE name = ?3")?
                .execute(rusqlite::params![delivered.to_string(), added, name])?;
        }
        Ok(())
    }

    fn check(&self, credits: &[Credit]) -> anyhow::Result<()> {
        let (shares, delivered): (i64, String) =
            self.conn.query_row("SELECT shares, delivered FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let work: u128 = credits.iter().map(|c| c.work).sum();
        ensure!(
            shares as usize == credits.len() && delivered == work.to_string(),
            "variant {:?} lost credits",
            self.variant
        );
        Ok(())
    }
}
