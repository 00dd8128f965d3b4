//! Accounts' pool connections, the thin shell of the core's upstream sessions: one tokio task
//! per connection the core asks for (`Command::PoolConnect`), TCP or TLS (`stratum+ssl://`,
//! rustls with the system's roots or the `pool_ca` file), that writes the lines the core sends
//! and feeds back, as [`PoolEvent`]s: the connection up, each line read (through the codec's
//! capped `LineDecoder`, so a pool cannot make the coordinator buffer more than one line of
//! `MAX_LINE` bytes), and its end, once. A connection the core closes reports nothing more.
//!
//! **A flooding pool.** Each connection has at most [`IN_FLIGHT`] lines handed to the core
//! and not yet handled (each [`PoolEvent::Line`] carries a credit, given back when the core
//! drops the event). Lines read meanwhile wait in the connection's queue, where a newer
//! `mining.notify` supersedes the older ones still waiting: the core never saw those, so no
//! range and no late share can be on them; their `clean_jobs` (or a change of previous block)
//! carries over to the newer job, so a revocation is never lost. Other lines keep their order;
//! at [`MAX_WAITING`] of them the connection stops reading and the pool's TCP window closes.
//! So a pool flooding `mining.notify` costs the coordinator at most the jobs it can handle,
//! and at most `(IN_FLIGHT + MAX_WAITING + 1) × MAX_LINE` bytes. Lines still waiting when the
//! pool closes are dropped: the connection's jobs end with it.
//!
//! Owned by the store thread: the core's pool commands are carried out after the records
//! before them are durable, like every other command (a share's credit before its submit).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hashgrid_common::stratum::{LineDecoder, Message, Method, PoolUrl};
use hashgrid_common::stratum_net::{self, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of one connection handed to the core and not yet handled.
pub(crate) const IN_FLIGHT: usize = 64;
/// Lines of one connection read and waiting for the core, besides one `mining.notify`.
pub(crate) const MAX_WAITING: usize = 256;

/// What a pool connection reports to the core.
#[derive(Debug)]
pub(crate) enum PoolEvent {
    Connected {
        conn: u64,
    },
    /// A line; its credit goes back to its connection when the event is dropped.
    Line {
        conn: u64,
        line: Vec<u8>,
        _credit: OwnedSemaphorePermit,
    },
    Closed {
        conn: u64,
        reason: String,
    },
}

/// The open pool connections.
pub(crate) struct PoolConnections {
    runtime: tokio::runtime::Handle,
    report: Arc<dyn Fn(PoolEvent) + Send + Sync>,
    /// PEM certificates trusted for TLS pools instead of the system's roots.
    pool_ca: Option<Vec<u8>>,
    /// Built at the first TLS pool.
    tls: Option<Result<TlsConnector, String>>,
    /// Each connection's queue of lines to write; dropping it closes the connection.
    links: HashMap<u64, mpsc::UnboundedSender<String>>,
}

impl PoolConnections {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        pool_ca: Option<Vec<u8>>,
        report: impl Fn(PoolEvent) + Send + Sync + 'static,
    ) -> Self {
        PoolConnections { runtime, report: Arc::new(report), pool_ca, tls: None, links: HashMap::new() }
    }

    /// Opens connection `conn` to `url`; its events follow.
    pub(crate) fn connect(&mut self, conn: u64, url: &str) {
        let url: PoolUrl = match url.parse() {
            Ok(url) => url,
            Err(e) => return (self.report)(PoolEvent::Closed { conn, reason: e.to_string() }),
        };
        let tls = match url.tls {
            true => match self.tls.get_or_insert_with(|| stratum_net::tls_connector(self.pool_ca.as_deref())) {
                Ok(tls) => Some(tls.clone()),
                Err(e) => return (self.report)(PoolEvent::Closed { conn, reason: format!("TLS: {e}") }),
            },
            false => None,
        };
        let (lines, outgoing) = mpsc::unbounded_channel();
        self.links.insert(conn, lines);
        let report = self.report.clone();
        self.runtime.spawn(async move {
            let reason = serve(conn, &url, tls, outgoing, &*report).await;
            if let Some(reason) = reason {
                warn!(conn, pool = %url.addr(None), "pool connection ended: {}", reason.escape_debug());
                report(PoolEvent::Closed { conn, reason });
            }
        });
    }

    pub(crate) fn send(&mut self, conn: u64, line: String) {
        if let Some(link) = self.links.get(&conn) {
            let _ = link.send(line);
        }
    }

    pub(crate) fn close(&mut self, conn: u64, reason: &str) {
        if self.links.remove(&conn).is_some() {
            info!(conn, "closing a pool connection: {}", reason.escape_debug());
        }
    }
}

/// One connection until it ends: `Some(reason)` when it ended by itself, `None` when the core
/// closed it.
async fn serve(
    conn: u64,
    url: &PoolUrl,
    tls: Option<TlsConnector>,
    mut outgoing: mpsc::UnboundedReceiver<String>,
    report: &(dyn Fn(PoolEvent) + Send + Sync),
) -> Option<String> {
    let mut stream = match stratum_net::open(url, None, tls.as_ref(), CONNECT_TIMEOUT).await {
        Ok(stream) => stream,
        Err(e) => return Some(format!("cannot connect: {e}")),
    };
    info!(conn, pool = %url.addr(None), "pool connected");
    report(PoolEvent::Connected { conn });
    let mut decoder = LineDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    let credits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut waiting = Waiting::default();
    loop {
        while !waiting.lines.is_empty() {
            let Ok(credit) = credits.clone().try_acquire_owned() else { break };
            let line = waiting.lines.pop_front().expect("not empty");
            report(PoolEvent::Line { conn, line, _credit: credit });
        }
        tokio::select! {
            credit = credits.clone().acquire_owned(), if !waiting.lines.is_empty() => {
                let line = waiting.lines.pop_front().expect("not empty");
                report(PoolEvent::Line { conn, line, _credit: credit.expect("never closed") });
            }
            line = outgoing.recv() => match line {
                Some(line) => {
                    if let Err(e) = stream.write_all(line.as_bytes()).await {
                        return Some(format!("write: {e}"));
                    }
                }
                None => {
                    let _ = stream.shutdown().await;
                    return None;
                }
            },
            read = stream.read(&mut buf), if waiting.lines.len() <= MAX_WAITING => match read {
                Ok(0) => return Some("the pool closed the connection".into()),
                Err(e) => return Some(format!("read: {e}")),
                Ok(n) => {
                    if let Err(e) = decoder.push(&buf[..n]) {
                        return Some(e.to_string());
                    }
                    while let Some(line) = decoder.next_line() {
                        waiting.push(line);
                    }
                }
            },
        }
    }
}

/// A connection's lines read and not yet handed to the core, with at most one
/// `mining.notify`: the newest, carrying the revocation of those it superseded.
#[derive(Debug, Default)]
struct Waiting {
    lines: VecDeque<Vec<u8>>,
}

impl Waiting {
    fn push(&mut self, line: Vec<u8>) {
        let Some(mut notify) = notify_of(&line) else { return self.lines.push_back(line) };
        let mut superseded = false;
        self.lines.retain(|waiting| match notify_of(waiting) {
            Some(older) => {
                // The newer job revokes what the older would have: clean_jobs, or its block.
                if older.clean_jobs || older.prev_blockhash != notify.prev_blockhash {
                    notify.clean_jobs = true;
                }
                superseded = true;
                false
            }
            None => true,
        });
        match superseded {
            false => self.lines.push_back(line),
            true => {
                let message = Message::Call { id: hashgrid_common::stratum::Id::Null, method: Method::Notify(notify) };
                self.lines.push_back(message.to_line().into_bytes());
            }
        }
    }
}

/// The job of a `mining.notify` line (looked at only when the line names the method).
fn notify_of(line: &[u8]) -> Option<hashgrid_common::stratum::Notify> {
    const NAME: &[u8] = b"mining.notify";
    if !line.windows(NAME.len()).any(|w| w == NAME) {
        return None;
    }
    match Message::from_line(line) {
        Ok(Message::Call { method: Method::Notify(notify), .. }) => Some(notify),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hashgrid_common::header::Hash256;
    use hashgrid_common::stratum::{Id, Notify};
    use hashgrid_common::target::CompactTarget;
    use tokio::net::TcpListener;

    use super::*;

    fn notify_line(id: u32, prev: u8, clean: bool) -> Vec<u8> {
        let notify = Notify {
            job_id: format!("j{id}"),
            prev_blockhash: Hash256([prev; 32]),
            coinb1: vec![1; 40],
            coinb2: vec![2; 40],
            merkle_branch: vec![Hash256([9; 32]); 4],
            version: 0x2000_0000,
            nbits: CompactTarget(0x1d00ffff),
            ntime: 1_700_000_000,
            clean_jobs: clean,
        };
        Message::Call { id: Id::Null, method: Method::Notify(notify) }.to_line().into_bytes()
    }

    fn job(line: &[u8]) -> (String, bool) {
        let n = notify_of(line).expect("a notify");
        (n.job_id, n.clean_jobs)
    }

    #[test]
    fn a_waiting_job_is_superseded_and_its_revocation_carried_over() {
        let mut w = Waiting::default();
        let other = br#"{"id":null,"method":"mining.set_difficulty","params":[2]}"#.to_vec();
        w.push(notify_line(1, 1, true));
        w.push(other.clone());
        w.push(notify_line(2, 1, false));
        // One job waits, the newest, clean as the one it superseded; the other line stays.
        assert_eq!(w.lines.len(), 2);
        assert_eq!(w.lines[0], other);
        assert_eq!(job(&w.lines[1]), ("j2".into(), true));
        // A new block is a revocation too.
        let mut w = Waiting::default();
        w.push(notify_line(1, 1, false));
        w.push(notify_line(2, 2, false));
        assert_eq!(job(&w.lines[0]), ("j2".into(), true));
        // Same block, nothing clean: the newer job as it came.
        let mut w = Waiting::default();
        w.push(notify_line(1, 1, false));
        w.push(notify_line(2, 1, false));
        assert_eq!(w.lines.iter().map(|l| l.as_slice()).collect::<Vec<_>>(), vec![notify_line(2, 1, false).as_slice()]);
    }

    /// A pool floods 60 000 jobs (about 33 MB) and closes, while the core handles none: no
    /// more than `IN_FLIGHT` lines reach it, yet the connection reads to the end (the close
    /// is reported): the superseded jobs were dropped as they came, not buffered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flooding_pool_hands_the_core_a_bounded_number_of_lines_and_is_read_to_the_end() {
        const JOBS: u32 = 60_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for id in 0..JOBS {
                socket.write_all(&notify_line(id, 1, id == JOBS / 2)).await.unwrap();
            }
            socket.shutdown().await.unwrap();
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pools = PoolConnections::new(tokio::runtime::Handle::current(), None, move |e| {
            let _ = tx.send(e);
        });
        pools.connect(1, &format!("stratum+tcp://{addr}"));
        // The core (this test) holds every event until the connection's end.
        let mut held = Vec::new();
        loop {
            let e = rx.recv().await.expect("the connection reports its end");
            let end = matches!(e, PoolEvent::Closed { .. });
            held.push(e);
            if end {
                break;
            }
        }
        let lines = held.iter().filter(|e| matches!(e, PoolEvent::Line { .. })).count();
        assert_eq!(lines, IN_FLIGHT, "lines handed over while none was handled");
    }
}
