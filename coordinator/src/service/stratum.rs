//! The Stratum V1 server shell: a TCP listener for existing miners (`serve --stratum ADDR`).
//!
//! - **Admission.** At most `max_connections` miners at once, over both ports: a connection
//!   over the cap is closed on accept, before anything is read or allocated for it (refusals
//!   are logged at most once a second).
//! - **`stratum+ssl://`** (`tls_listen`): a second port where each connection is first a TLS
//!   handshake with the coordinator's certificate (the one nodes pin), within the handshake
//!   deadline, then the same session as on the plain port.
//! - **One task per connection** owns a [`ServerSession`] (common's sans-IO session: the
//!   handshake, limits, share checks, vardiff) and drives it with a monotonic clock: lines read
//!   through a capped [`LineDecoder`], the session's deadlines, and the core's orders.
//! - **Authorization** is the QUIC nodes' token check: the password must be the farm's node
//!   token (compared in constant time). The first authorized worker joins the core as a node
//!   named after it (`handle_miner_joined`); a wrong token is error 24 and a close.
//! - **Shares** that pass the session's checks go to the core; the session answers the miner
//!   only when the core's `ShareRecorded` comes back, which the store thread delivers after the
//!   credit is durable.
//! - **Closing.** A malformed or oversized line, a line flood, a handshake past its deadline,
//!   silence, or an invalid-share streak closes that connection only, with the reason logged;
//!   the core then fails the miner (`NodeLeft`) and re-plans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashgrid_common::message::{NodeId, RejectReason};
use hashgrid_common::stratum::{LineDecoder, Reject, ServerConfig, ServerEvent, ServerSession};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use super::server::{Event, Outgoing};
use super::tls::{DataDir, stratum_tls_config, tokens_equal};
use crate::core::MinerOrder;

/// How the Stratum server runs.
#[derive(Debug, Clone)]
pub struct StratumSettings {
    pub listen: SocketAddr,
    /// The `stratum+ssl://` port, if any.
    pub tls_listen: Option<SocketAddr>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Each connection's session settings (its session id is made per connection).
    pub session: ServerConfig,
}

/// What a listener's connections share.
struct Shared {
    events: mpsc::UnboundedSender<Event>,
    node_token: Arc<String>,
    next_node: Arc<AtomicU64>,
    session: ServerConfig,
    /// The clock the sessions run on.
    epoch: Instant,
}

/// Binds `settings.listen` (and `settings.tls_listen`, with `data_dir`'s certificate) and
/// serves miners until `shutdown`; the addresses bound.
pub(super) async fn listen(
    settings: StratumSettings,
    data_dir: &DataDir,
    events: mpsc::UnboundedSender<Event>,
    node_token: Arc<String>,
    next_node: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Option<SocketAddr>)> {
    let tls = match settings.tls_listen {
        Some(addr) => {
            let config = stratum_tls_config(data_dir).map_err(std::io::Error::other)?;
            Some((TcpListener::bind(addr).await?, tokio_rustls::TlsAcceptor::from(config)))
        }
        None => None,
    };
    let listener = TcpListener::bind(settings.listen).await?;
    let local = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let shared = Arc::new(Shared { events, node_token, next_node, session: settings.session, epoch: Instant::now() });
    let tls_local = match tls {
        Some((tls_listener, acceptor)) => {
            let tls_local = tls_listener.local_addr()?;
            accept(tls_listener, Some(acceptor), permits.clone(), shared.clone(), shutdown.clone());
            info!(local = %tls_local, "Stratum V1 server listening (stratum+ssl)");
            Some(tls_local)
        }
        None => None,
    };
    accept(listener, None, permits, shared, shutdown);
    info!(%local, "Stratum V1 server listening");
    Ok((local, tls_local))
}

/// Accepts miners on `listener` (TLS first with `tls`) while the cap allows.
fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let (mut refused, mut logged_at) = (0u64, None::<Instant>);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!("stratum accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => return,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refused += 1;
                if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    warn!("refused {refused} Stratum connection(s): the connection cap is reached");
                    (refused, logged_at) = (0, Some(Instant::now()));
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (shared, tls) = (shared.clone(), tls.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let Some(tls) = tls else { return serve_miner(stream, peer, &shared).await };
                // The TLS handshake is part of the miner's handshake, under the same deadline.
                let limit = Duration::from_millis(shared.session.handshake_timeout_ms);
                match tokio::time::timeout(limit, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_miner(stream, peer, &shared).await,
                    Ok(Err(e)) => debug!(%peer, "stratum+ssl handshake failed: {e}"),
                    Err(_) => debug!(%peer, "stratum+ssl handshake not done within {limit:?}"),
                }
            });
        }
    });
}

/// Serves one miner connection (plain TCP, or TLS over it) until it closes or is closed.
async fn serve_miner<S: AsyncRead + AsyncWrite + Unpin>(stream: S, peer: SocketAddr, shared: &Shared) {
    let node: NodeId = shared.next_node.fetch_add(1, Ordering::Relaxed);
    let now = || shared.epoch.elapsed().as_millis() as u64;
    let mut config = shared.session.clone();
    config.session_id = format!("{node:016x}");
    let mut decoder = LineDecoder::with_cap(config.max_line);
    let mut session = ServerSession::new(config, now());
    let (outbox, mut orders) = mpsc::unbounded_channel();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = vec![0u8; 4096];
    let mut out = String::new();
    let mut user_agent = String::from("stratum-v1");
    let (mut subscribed, mut joined) = (false, false);
    // A worker authorized before the connection subscribed joins once it has.
    let mut early_worker = None;
    // Shares the session rejected, reported to the core as counts at most once a second (one
    // event per reject would let a flooding miner load the core thread).
    let mut rejected = RejectCounts::default();
    let reason = 'serve: loop {
        let mut closing = None;
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::Send(line) => out.push_str(&line),
                ServerEvent::Subscribed { user_agent: agent } => {
                    if let Some(agent) = agent {
                        user_agent = agent.chars().filter(|c| !c.is_control()).take(64).collect();
                    }
                    // The subscribe answer needs an extranonce: the core sends a first job.
                    if !subscribed {
                        subscribed = true;
                        if shared.events.send(Event::MinerSubscribed { node, outbox: outbox.clone() }).is_err() {
                            break 'serve "coordinator stopping".to_string();
                        }
                        if let Some(worker) = early_worker.take() {
                            joined = true;
                            let _ =
                                shared.events.send(Event::MinerJoined { node, worker, user_agent: user_agent.clone() });
                        }
                    }
                }
                ServerEvent::Authorize { ticket, worker, password } => {
                    let ok = tokens_equal(&password.0, &shared.node_token);
                    if ok && !subscribed && !joined {
                        early_worker.get_or_insert(worker);
                    } else if ok && !joined {
                        joined = true;
                        info!(node, %peer, worker = %worker.escape_debug(), "miner joined");
                        let joined = Event::MinerJoined { node, worker, user_agent: user_agent.clone() };
                        if shared.events.send(joined).is_err() {
                            break 'serve "coordinator stopping".to_string();
                        }
                    }
                    session.authorized(now(), ticket, ok);
                }
                ServerEvent::Share { ticket, share } => {
                    let share = Event::MinerShare { node, ticket, share, at: Instant::now() };
                    if shared.events.send(share).is_err() {
                        break 'serve "coordinator stopping".to_string();
                    }
                }
                ServerEvent::Rejected { reject, .. } => {
                    debug!(node, "share rejected: {}", reject.reason());
                    rejected.add(reject, now());
                }
                ServerEvent::Difficulty(d) => debug!(node, "difficulty {d}"),
                ServerEvent::Escalated(level) => warn!(node, %peer, "invalid-share streak: {level:?}"),
                ServerEvent::Close { reason } => closing = Some(reason),
            }
        }
        if !out.is_empty() {
            let written = writer.write_all(out.as_bytes()).await;
            out.clear();
            if let Err(e) = written {
                break format!("write failed: {e}");
            }
        }
        if joined && let Some(counts) = rejected.due(now()) {
            let _ = shared.events.send(Event::MinerRejected { node, counts });
        }
        if let Some(reason) = closing {
            break reason;
        }
        let wake = match (session.poll_timeout(), rejected.report_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = wake.map(|at| tokio::time::Instant::from_std(shared.epoch + Duration::from_millis(at)));
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => break "the miner closed the connection".into(),
                Err(e) => break format!("read failed: {e}"),
                Ok(n) => {
                    let pushed = decoder.push(&buf[..n]);
                    let at = now();
                    while let Some(line) = decoder.next_line() {
                        session.handle_line(at, &line);
                    }
                    if let Err(e) = pushed {
                        // The lines before the bad one were the miner's; answer them first.
                        while let Some(ServerEvent::Send(line)) = session.poll_event() {
                            out.push_str(&line);
                        }
                        let _ = writer.write_all(out.as_bytes()).await;
                        break e.to_string();
                    }
                }
            },
            order = orders.recv() => match order {
                Some(Outgoing::Miner(MinerOrder::Job(job))) => {
                    // The session keeps the miner's difficulty at or below the pool's.
                    if let Err(e) = session.set_job(now(), *job) {
                        warn!(node, "cannot hand the miner its job: {e}");
                    }
                }
                Some(Outgoing::Miner(MinerOrder::ShareRecorded { ticket, result })) => {
                    session.share_recorded(ticket, result)
                }
                Some(Outgoing::Close { reason, .. }) => break reason,
                Some(Outgoing::Message(_)) => {}
                None => break "coordinator stopping".into(),
            },
            _ = sleep_until(deadline) => {
                if session.poll_timeout().is_some_and(|at| at <= now()) {
                    session.handle_timeout(now());
                }
            }
        }
    };
    session.handle_disconnect(now());
    info!(node, %peer, "miner connection closed: {}", reason.escape_debug());
    let _ = writer.shutdown().await;
    if subscribed {
        if joined && let Some(counts) = rejected.take() {
            let _ = shared.events.send(Event::MinerRejected { node, counts });
        }
        let _ = shared.events.send(Event::NodeLeft { node, departed: false });
    }
}

/// A connection's session-rejected shares not yet reported to the core, by reason.
#[derive(Default)]
struct RejectCounts {
    counts: BTreeMap<RejectReason, u64>,
    /// When the first unreported reject came (ms since the service epoch).
    since_ms: Option<u64>,
}

impl RejectCounts {
    /// How often a connection reports its rejects.
    const EVERY_MS: u64 = 1_000;

    fn add(&mut self, reject: Reject, now_ms: u64) {
        if let Some(reason) = reject.counted_as() {
            *self.counts.entry(reason).or_default() += 1;
            self.since_ms.get_or_insert(now_ms);
        }
    }

    /// When the pending counts are due.
    fn report_at(&self) -> Option<u64> {
        self.since_ms.map(|since| since + Self::EVERY_MS)
    }

    /// The pending counts, if a second has passed since the first of them.
    fn due(&mut self, now_ms: u64) -> Option<Vec<(RejectReason, u64)>> {
        self.report_at().filter(|&at| at <= now_ms).and_then(|_| self.take())
    }

    fn take(&mut self) -> Option<Vec<(RejectReason, u64)>> {
        self.since_ms = None;
        let counts: Vec<_> = std::mem::take(&mut self.counts).into_iter().collect();
        (!counts.is_empty()).then_some(counts)
    }
}

/// Resolves once the service shuts down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_are_reported_as_counts_a_second_after_the_first_of_them() {
        let mut counts = RejectCounts::default();
        counts.add(Reject::NotSubscribed, 100);
        assert_eq!(counts.report_at(), None, "a line refused before the miner joined is no share");
        counts.add(Reject::JobNotFound, 200);
        counts.add(Reject::JobNotFound, 700);
        counts.add(Reject::LowDifficulty, 900);
        assert_eq!(counts.report_at(), Some(1_200));
        assert_eq!(counts.due(1_199), None);
        let due = counts.due(1_200).unwrap();
        assert_eq!(due, vec![(RejectReason::UnknownJob, 2), (RejectReason::AboveTarget, 1)]);
        assert_eq!((counts.report_at(), counts.take()), (None, None));
    }
}
