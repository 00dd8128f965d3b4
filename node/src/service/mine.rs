//! `hashgrid-node mine`, the standalone Stratum V1 miner: the I/O shell around [`Miner`].
//!
//! Owns: the pool URL (`stratum+tcp://HOST:PORT`, or `stratum+ssl://` / `stratum+tls://` over
//! rustls, trusting the system's roots or a `--pool-ca` file), the TCP/TLS connection and its
//! reconnects with backoff, reading lines through the codec's capped [`LineDecoder`], the
//! timer, and the devices' workers (started and measured as `run` starts them). Every
//! decision is the miner's; this file only moves bytes, events and time.
//!
//! The first connection must succeed (an unreachable pool at start is most likely a typo:
//! the error says so); after that, a lost connection is retried forever, with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hashgrid_common::message::AssignmentId;
use hashgrid_common::stratum::{ClientConfig, ClientSession, LineDecoder};
use hashgrid_common::stratum_net::{self, PoolStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::miner::{MineCounts, Miner, MinerCommand};
use super::scheduler::DeviceClass;
use super::session::{BACKOFF_MAX, BACKOFF_MIN};
use super::worker::{DeviceEvent, Work, Worker, WorkerEvent};
use super::{Devices, NodeError, Started, plan_devices, start_devices, stop_workers};
use crate::search::{BackendChoice, BackendKind};

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use hashgrid_common::stratum::{PoolUrl, PoolUrlError};

/// How to mine: the pool, the credentials, the devices. Its `Debug` never shows the password.
pub struct MineConfig {
    pub pool: PoolUrl,
    pub user: String,
    pub password: String,
    /// PEM certificates trusted for a TLS pool instead of the system's roots.
    pub pool_ca: Option<Vec<u8>>,
    pub backend: BackendChoice,
    pub adapter: Option<String>,
    pub threads: Option<usize>,
    pub devices: Option<Devices>,
}

impl std::fmt::Debug for MineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MineConfig")
            .field("pool", &self.pool)
            .field("user", &self.user)
            .field("password", &hashgrid_common::stratum::Password(String::new()))
            .field("backend", &self.backend)
            .field("adapter", &self.adapter)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Why mining stopped.
#[derive(Debug, thiserror::Error)]
pub enum MineError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot reach the pool at {pool}: {error}")]
    Unreachable { pool: String, error: String },
    #[error("the pool refused user {user:?}: {reason}")]
    Unauthorized { user: String, reason: String },
    #[error("--pool-ca: {0}")]
    PoolCa(String),
    #[error("every compute device has failed")]
    NoDevices,
}

/// Mines until `shutdown` resolves; the share counts. Errors: bad `--pool-ca`, a device that
/// cannot open, the pool unreachable at start, refused credentials.
pub async fn run_miner(config: MineConfig, shutdown: impl Future<Output = ()>) -> Result<MineCounts, MineError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let tls = match config.pool.tls {
        true => Some(stratum_net::tls_connector(config.pool_ca.as_deref()).map_err(MineError::PoolCa)?),
        false => None,
    };
    let (planned, single) =
        plan_devices(None, config.devices.as_ref(), config.backend, &config.adapter, config.threads);
    let Some(Started { workers, ready, events }) = start_devices(planned, single, shutdown.as_mut()).await? else {
        return Ok(MineCounts::default());
    };
    for (id, r) in ready.iter().enumerate() {
        info!(device = id, backend = %r.kind, name = %r.device, hashrate = format_args!("{:.2} MH/s", r.hashrate / 1e6), "search backend ready");
    }
    let class = |kind| if kind == BackendKind::Gpu { DeviceClass::Gpu } else { DeviceClass::Cpu };
    let mut client = ClientConfig::new(&config.pool.host, &config.user, &config.password);
    client.user_agent = concat!("hashgrid-node/", env!("CARGO_PKG_VERSION")).into();
    let miner = Miner::new(ClientSession::new(client), ready.iter().map(|r| (class(r.kind), r.hashrate)));
    let mut shell = Shell {
        miner,
        pool: config.pool,
        user: config.user,
        tls,
        workers: workers.into_iter().map(Some).collect(),
        events,
        cancels: HashMap::new(),
        started: Instant::now(),
    };
    let result = shell.run(shutdown.as_mut()).await;
    for (_, cancel) in shell.cancels.drain() {
        cancel.store(true, Ordering::Relaxed);
    }
    let counts = shell.miner.counts();
    stop_workers(shell.workers.into_iter().flatten().collect()).await;
    result.map(|()| counts)
}

struct Shell {
    miner: Miner,
    pool: PoolUrl,
    user: String,
    tls: Option<tokio_rustls::TlsConnector>,
    workers: Vec<Option<Worker>>,
    events: mpsc::UnboundedReceiver<DeviceEvent>,
    cancels: HashMap<AssignmentId, Arc<AtomicBool>>,
    started: Instant,
}

/// How one connection ended.
enum End {
    Shutdown,
    /// Reconnect after this long (on this port).
    Again {
        wait: Option<Duration>,
        port: Option<u16>,
    },
}

impl Shell {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run<S: Future<Output = ()>>(&mut self, mut shutdown: Pin<&mut S>) -> Result<(), MineError> {
        let mut failures = 0u32;
        let mut port = self.pool.port;
        let mut ever_connected = false;
        loop {
            let addr = self.pool.addr(Some(port));
            let connected = tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                c = stratum_net::open(&self.pool, Some(port), self.tls.as_ref(), CONNECT_TIMEOUT) => c,
            };
            let wait = match connected {
                Ok(stream) => {
                    ever_connected = true;
                    info!(pool = %addr, "connected");
                    match self.serve(stream, shutdown.as_mut(), &mut failures).await? {
                        End::Shutdown => return Ok(()),
                        End::Again { wait, port: new_port } => {
                            port = new_port.unwrap_or(port);
                            wait
                        }
                    }
                }
                Err(error) if !ever_connected => return Err(MineError::Unreachable { pool: addr, error }),
                Err(error) => {
                    warn!(pool = %addr, %error, "cannot connect");
                    None
                }
            };
            let wait = wait.unwrap_or_else(|| {
                failures = failures.saturating_add(1);
                BACKOFF_MIN.saturating_mul(1 << failures.min(16)).min(BACKOFF_MAX)
            });
            tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
                // Devices keep reporting while disconnected (cancelled pieces ending).
                () = self.drain_devices_forever() => {}
            }
        }
    }

    /// One connection, until it ends.
    async fn serve<S: Future<Output = ()>>(
        &mut self,
        mut stream: Box<dyn PoolStream>,
        mut shutdown: Pin<&mut S>,
        failures: &mut u32,
    ) -> Result<End, MineError> {
        let mut decoder = LineDecoder::new();
        let mut buf = vec![0u8; 16 * 1024];
        let now = self.now();
        self.miner.connect(now);
        loop {
            if let Some(end) = self.carry_out(&mut stream).await? {
                let now = self.now();
                self.miner.handle_disconnect(now);
                self.carry_out(&mut stream).await?;
                return Ok(end);
            }
            if *self.miner.client().state() == hashgrid_common::stratum::ClientState::Ready {
                *failures = 0;
            }
            let deadline = self.miner.poll_timeout().map(|ms| self.started + Duration::from_millis(ms));
            let timer = super::sleep_until(deadline);
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    let now = self.now();
                    self.miner.handle_disconnect(now);
                    self.carry_out(&mut stream).await?;
                    let _ = stream.shutdown().await;
                    return Ok(End::Shutdown);
                }
                () = timer => {
                    let now = self.now();
                    self.miner.handle_timeout(now);
                }
                read = stream.read(&mut buf) => {
                    let now = self.now();
                    match read {
                        Ok(0) | Err(_) => {
                            warn!("the pool closed the connection");
                            self.miner.handle_disconnect(now);
                            self.carry_out(&mut stream).await?;
                            return Ok(End::Again { wait: None, port: None });
                        }
                        Ok(n) => {
                            if let Err(e) = decoder.push(&buf[..n]) {
                                warn!(error = %e, "closing the connection");
                                self.miner.handle_disconnect(now);
                                self.carry_out(&mut stream).await?;
                                return Ok(End::Again { wait: None, port: None });
                            }
                            while let Some(line) = decoder.next_line() {
                                self.miner.handle_line(now, &line);
                            }
                        }
                    }
                }
                event = self.events.recv() => {
                    let event = event.ok_or(NodeError::WorkerGone)?;
                    self.device_event(event)?;
                }
            }
        }
    }

    /// Carries out the miner's commands; `Some` when the connection is to end.
    async fn carry_out(&mut self, stream: &mut Box<dyn PoolStream>) -> Result<Option<End>, MineError> {
        let mut end = None;
        while let Some(command) = self.miner.poll_command() {
            match command {
                MinerCommand::Send(line) => {
                    if end.is_none() && stream.write_all(line.as_bytes()).await.is_err() {
                        warn!("cannot write to the pool");
                        end = Some(End::Again { wait: None, port: None });
                    }
                }
                MinerCommand::Search(piece) => {
                    let cancel = self.cancels.entry(piece.assignment.id).or_default().clone();
                    let work = Work { ticket: piece.ticket, assignment: piece.assignment, cancel };
                    let worker = self.workers[piece.device].as_ref();
                    if !worker.is_some_and(|worker| worker.submit(work)) {
                        self.workers[piece.device] = None;
                        self.miner.handle_device_failed(piece.device).map_err(|_| MineError::NoDevices)?;
                    }
                }
                MinerCommand::Cancel(id) => {
                    if let Some(cancel) = self.cancels.remove(&id) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                MinerCommand::Close { reason } => {
                    warn!(%reason, "closing the connection");
                    end.get_or_insert(End::Again { wait: None, port: None });
                }
                MinerCommand::Reconnect { port, wait_secs } => {
                    info!(?port, wait_secs, "the pool asked to reconnect");
                    end = Some(End::Again { wait: Some(Duration::from_secs(wait_secs.min(600))), port });
                }
                MinerCommand::Unauthorized { reason } => {
                    return Err(MineError::Unauthorized { user: self.user.clone(), reason });
                }
                MinerCommand::Notice(text) => info!("{text}"),
            }
        }
        Ok(end)
    }

    fn device_event(&mut self, DeviceEvent { device, event }: DeviceEvent) -> Result<(), MineError> {
        let now = self.now();
        match event {
            WorkerEvent::Hit { assignment, nonce, .. } => self.miner.handle_hit(now, assignment.id, nonce),
            WorkerEvent::Progress { ticket, hashes, .. } => self.miner.handle_progress(ticket, hashes),
            WorkerEvent::Finished { ticket, hashes, complete, .. } => {
                self.miner.handle_finished(ticket, hashes, complete)
            }
            WorkerEvent::Invalid { ticket, error, .. } => {
                warn!(%error, "a range could not be searched");
                self.miner.handle_finished(ticket, 0, false);
            }
            WorkerEvent::Failed(error) => {
                warn!(device, %error, "device failed");
                self.workers[device] = None;
                self.miner.handle_device_failed(device).map_err(|_| MineError::NoDevices)?;
            }
        }
        Ok(())
    }

    /// Feeds device events to the miner while there is no connection (never returns).
    async fn drain_devices_forever(&mut self) {
        while let Some(event) = self.events.recv().await {
            let _ = self.device_event(event);
            while let Some(command) = self.miner.poll_command() {
                if let MinerCommand::Cancel(id) = command
                    && let Some(cancel) = self.cancels.remove(&id)
                {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let config = MineConfig {
            pool: "stratum+tcp://pool:3333".parse().unwrap(),
            user: "alice.rig".into(),
            password: "hunter2-secret".into(),
            pool_ca: None,
            backend: BackendChoice::Cpu,
            adapter: None,
            threads: None,
            devices: None,
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("alice.rig") && !shown.contains("hunter2-secret"), "{shown}");
    }
}
