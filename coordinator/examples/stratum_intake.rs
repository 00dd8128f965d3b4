//! Stratum share intake benchmark: how many shares per second the coordinator's Stratum server
//! verifies, credits durably and acknowledges, from N simulated miners over loopback TCP.
//!
//! `cargo run --release -p hashgrid-coordinator --example stratum_intake -- --miners 1000 --seconds 10`
//! (`scripts/bench-intake-both.sh` runs it beside the QUIC `intake_bench`, for BENCHMARKS.md).
//!
//! One process runs a real `Service` (tempdir data dir, SQLite with synchronous=FULL) with
//! `--stratum` on, one account at an upstream pool, and the pool itself: a TCP Stratum server
//! driven by common's `ServerSession` (difficulty 1, so it is sent almost nothing). Each of the
//! N miners subscribes, authorizes with the node token, takes its job (its own extranonce1),
//! finds shares at difficulty 2^-32 before the timed phase (every header meets it, so finding
//! one costs one hash; the session still rebuilds and hashes each in full), then
//! floods `mining.submit` lines with at most `--in-flight` unanswered. The headline counts the
//! `true` answers in the measured window: each is a share rebuilt from coinbase to hash by the
//! miner's session, credited in SQLite and only then acknowledged. For the run, the sessions'
//! line rate limit is lifted and vardiff is off (a flood is the point); every other check runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hashgrid_common::CompactTarget;
use hashgrid_common::Hash256;
use hashgrid_common::message::{Policy, PoolSettings, StandardBasis};
use hashgrid_common::stratum::{
    Id, Job, LineDecoder, Message, Method, Notify, Response, ServerConfig, ServerEvent, ServerJob, ServerSession,
    SubscribeResult, share_target,
};
use hashgrid_coordinator::core::{CoreConfig, StoreOp, Work};
use hashgrid_coordinator::service::limits::ConnectionLimits;
use hashgrid_coordinator::service::server::{Service, ServiceConfig};
use hashgrid_coordinator::service::store::Store;
use hashgrid_coordinator::service::stratum::StratumSettings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "Coordinator Stratum share intake benchmark (TCP on loopback, durable credits)")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    miners: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Unanswered submits per miner.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Shares found per miner before the timed phase.
    #[arg(long, default_value_t = 200)]
    shares: usize,
}

/// The lowest usable difficulty: every header meets it.
const DIFFICULTY: f64 = 1.0 / 4_294_967_296.0;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let pool = server_rt.block_on(start_pool())?;
    let mut store = Store::open(&dir.path().join("hashgrid.db"))?;
    store.apply(&[
        StoreOp::AccountAdded {
            name: "alice".into(),
            standard: Work(u128::MAX >> 1),
            period_ms: None,
            order: 1,
            period_start_ms: 0,
            chain: "local".into(),
        },
        StoreOp::AccountPoolSet {
            account: "alice".into(),
            pool: Some(PoolSettings {
                urls: vec![format!("stratum+tcp://{pool}")],
                user: "alice.rig".into(),
                password: "x".into(),
                extranonce_subscribe: false,
                backup_extranonce_subscribe: false,
            }),
            basis: StandardBasis::Delivered,
        },
    ])?;
    drop(store);
    let mut session = ServerConfig::new("");
    session.lines_per_sec = 1e9;
    session.line_burst = 1e9;
    session.adjust_difficulty = false;
    // Finding the shares takes the cores for a while before the flood.
    (session.handshake_timeout_ms, session.silence_timeout_ms) = (3_600_000, 3_600_000);
    session.max_pending = args.in_flight.max(1) * 2;
    (session.vardiff.start, session.vardiff.min) = (DIFFICULTY, DIFFICULTY);
    let stratum = StratumSettings {
        listen: "127.0.0.1:0".parse()?,
        tls_listen: None,
        max_connections: args.miners + 16,
        session,
    };
    let config = ServiceConfig {
        data_dir: dir.path().into(),
        store: Default::default(),
        lease_ttl: hashgrid_coordinator::service::lease::DEFAULT_TTL,
        on_store_loss: Default::default(),
        listen: "127.0.0.1:0".parse()?,
        policy: Some(Policy::Sequential),
        core: CoreConfig::default(),
        limits: ConnectionLimits::default(),
        pool_ca: None,
        stratum: Some(stratum),
    };
    let service = server_rt.block_on(Service::start(config))?;
    let addr = service.stratum_addr.context("no stratum address")?;
    let token = std::fs::read_to_string(dir.path().join("node.token"))?.trim().to_string();
    println!("stratum on {addr}; {} miners, {} shares each to find", args.miners, args.shares);

    let epoch = Instant::now();
    let counted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let (start_tx, start_flood) = tokio::sync::watch::channel(false);
    let ready = Arc::new(AtomicU64::new(0));
    let result = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..args.miners {
            let (token, counted, rejected, start_flood, ready) =
                (token.clone(), counted.clone(), rejected.clone(), start_flood.clone(), ready.clone());
            let (shares, in_flight) = (args.shares, args.in_flight);
            tasks.push(tokio::spawn(async move {
                miner(i, addr, &token, shares, in_flight, &counted, &rejected, start_flood, &ready).await
            }));
        }
        while (ready.load(Ordering::Relaxed) as usize) < args.miners {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(t) = tasks.iter_mut().find(|t| t.is_finished()) {
                match t.await {
                    Ok(Err(e)) => bail!("a miner failed: {e:#}"),
                    other => bail!("a miner ended: {other:?}"),
                }
            }
        }
        println!(
            "{} miners ready after {:.1} s; flooding",
            ready.load(Ordering::Relaxed),
            epoch.elapsed().as_secs_f64()
        );
        start_tx.send_replace(true);
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let before = counted.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        let n = counted.load(Ordering::Relaxed) - before;
        let secs = t0.elapsed().as_secs_f64();
        for t in &tasks {
            t.abort();
        }
        anyhow::Ok((n, secs))
    })?;
    let (n, secs) = result;
    println!(
        "accepted and acknowledged: {n} shares in {secs:.2} s = {:.0} shares/s ({} rejected in all)",
        n as f64 / secs,
        rejected.load(Ordering::Relaxed)
    );
    drop(client_rt);
    server_rt.block_on(service.shutdown())?;
    Ok(())
}

/// The upstream pool: common's `ServerSession` over TCP, one job, difficulty 1, every share
/// taken.
async fn start_pool() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(pool_connection(stream));
        }
    });
    Ok(addr)
}

async fn pool_connection(stream: TcpStream) {
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut config = ServerConfig::new("pool");
    config.adjust_difficulty = false;
    let mut session = ServerSession::new(config, now());
    let notify = Notify {
        job_id: "p1".into(),
        prev_blockhash: Hash256([7; 32]),
        coinb1: vec![1; 40],
        coinb2: vec![2; 40],
        merkle_branch: vec![Hash256([3; 32]); 8],
        version: 0x2000_0000,
        nbits: CompactTarget(0x1d00ffff),
        ntime: (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()) as u32,
        clean_jobs: true,
    };
    let job = ServerJob {
        tag: 1,
        notify,
        extranonce1: vec![0xab, 0xcd, 0xef, 0x01],
        extranonce2_size: 8,
        version_mask: 0x1fff_e000,
        pool_difficulty: None,
        share_difficulty: Some(1.0),
    };
    let _ = session.set_job(now(), job);
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = LineDecoder::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let mut out = String::new();
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::Send(line) => out.push_str(&line),
                ServerEvent::Authorize { ticket, .. } => session.authorized(now(), ticket, true),
                ServerEvent::Share { ticket, .. } => session.share_recorded(ticket, Ok(())),
                ServerEvent::Close { .. } => return,
                _ => {}
            }
        }
        if writer.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if decoder.push(&buf[..n]).is_err() {
                    return;
                }
                while let Some(line) = decoder.next_line() {
                    session.handle_line(now(), &line);
                }
            }
        }
    }
}

/// One simulated miner: handshake, shares found, then the flood.
#[allow(clippy::too_many_arguments)]
async fn miner(
    i: usize,
    addr: SocketAddr,
    token: &str,
    shares: usize,
    in_flight: usize,
    counted: &AtomicU64,
    rejected: &AtomicU64,
    mut start: tokio::sync::watch::Receiver<bool>,
    ready: &AtomicU64,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let call = |id: u64, method: Method| Message::Call { id: Id::from(id), method }.to_line();
    let hello = call(1, Method::Subscribe { user_agent: Some("bench".into()), session_id: None })
        + &call(
            2,
            Method::Authorize {
                user: format!("m{i}"),
                password: Some(hashgrid_common::stratum::Password(token.into())),
            },
        );
    writer.write_all(hello.as_bytes()).await?;
    let (mut sub, mut notify) = (None, None);
    while sub.is_none() || notify.is_none() {
        let Some(line) = lines.next_line().await? else { bail!("miner {i}: closed in the handshake") };
        match Message::from_line(line.as_bytes())? {
            Message::Response(Response { id, result, .. }) if id == Id::from(1) => {
                sub = Some(SubscribeResult::from_result(&result)?)
            }
            Message::Call { method: Method::Notify(n), .. } => notify = Some(n),
            _ => {}
        }
    }
    let (sub, notify) = (sub.unwrap(), notify.unwrap());
    let job = Job::new(notify, sub.extranonce1.clone(), sub.extranonce2_size, DIFFICULTY, 0)?;
    let worker = format!("m{i}");
    let found = tokio::task::spawn_blocking(move || find(&job, &worker, sub.extranonce2_size, shares)).await?;
    ready.fetch_add(1, Ordering::Relaxed);
    start.wait_for(|go| *go).await?;
    let mut next = 0usize;
    let mut pending = 0usize;
    let mut id = 10u64;
    loop {
        let mut batch = String::new();
        while pending < in_flight && next < found.len() {
            batch += &found[next].replace("{ID}", &id.to_string());
            id += 1;
            next += 1;
            pending += 1;
        }
        if !batch.is_empty() {
            writer.write_all(batch.as_bytes()).await?;
        }
        if pending == 0 {
            return Ok(());
        }
        let Some(line) = lines.next_line().await? else { bail!("miner {i}: closed") };
        if let Ok(Message::Response(r)) = Message::from_line(line.as_bytes()) {
            pending -= 1;
            if r.is_true() {
                counted.fetch_add(1, Ordering::Relaxed);
            } else {
                rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `count` submit lines (with `{ID}` for the id) of shares of `job` at `DIFFICULTY`.
fn find(job: &Job, worker: &str, extranonce2_size: usize, count: usize) -> Vec<String> {
    let target = share_target(DIFFICULTY).expect("a valid difficulty");
    let mut out = Vec::with_capacity(count);
    let mut e2 = vec![0u8; extranonce2_size];
    let mut nonce = 0u32;
    while out.len() < count {
        let header = job.header(&e2, job.notify.ntime, nonce, job.notify.version).expect("sizes checked");
        if target.is_met_by(&header.block_hash()) {
            out.push(format!(
                "{{\"id\":{{ID}},\"method\":\"mining.submit\",\"params\":[\"{}\",\"{}\",\"{}\",\"{:08x}\",\"{:08x}\"]}}\n",
                worker,
                job.notify.job_id,
                hex::encode(&e2),
                job.notify.ntime,
                nonce
            ));
        }
        nonce = nonce.wrapping_add(1);
        if nonce == 0 {
            e2[0] = e2[0].wrapping_add(1);
        }
    }
    out
}
