//! Accounts' pool connections, the thin shell of the core's upstream sessions: one tokio task
//! per connection the core asks for (`Command::PoolConnect`), TCP or TLS (`stratum+ssl://`,
//! rustls with the system's roots or the `pool_ca` file), that writes the lines the core sends
//! and feeds back, as [`PoolEvent`]s: the connection up, each line read (through the codec's
//! capped `LineDecoder`, so a pool cannot make the coordinator buffer more than one line of
//! `MAX_LINE` bytes), and its end, once. A connection the core closes reports nothing more.
//!
//! Owned by the store thread: the core's pool commands are carried out after the records
//! before them are durable, like every other command (a share's credit before its submit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hashgrid_common::stratum::{LineDecoder, PoolUrl};
use hashgrid_common::stratum_net::{self, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pool connection reports to the core.
#[derive(Debug)]
pub(crate) enum PoolEvent {
    Connected { conn: u64 },
    Line { conn: u64, line: Vec<u8> },
    Closed { conn: u64, reason: String },
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
    loop {
        tokio::select! {
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
            read = stream.read(&mut buf) => match read {
                Ok(0) => return Some("the pool closed the connection".into()),
                Err(e) => return Some(format!("read: {e}")),
                Ok(n) => {
                    if let Err(e) = decoder.push(&buf[..n]) {
                        return Some(e.to_string());
                    }
                    while let Some(line) = decoder.next_line() {
                        report(PoolEvent::Line { conn, line });
                    }
                }
            },
        }
    }
}
