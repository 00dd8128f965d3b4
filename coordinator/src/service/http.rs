//! The coordinator's HTTP endpoint (`serve --http ADDR`): Prometheus metrics on `/metrics`
//! and the status page on `/`, served by `hashgrid_common::http`.
//!
//! Each request asks the core thread for a `CoreView` (through the event queue, like an admin
//! request, so the core stays single-threaded and free of I/O) and reads the ledger's length
//! and last entries through its own read-only `Reader` on a blocking thread, so a scrape never
//! holds up the core or the store. The view may be one batch ahead of what is committed.
//! Answers 503 once the core thread is gone.

use std::sync::{Arc, Mutex};

use hashgrid_common::http::{HTML, OPENMETRICS, Page, TEXT};
use hashgrid_common::message::LedgerEntry;
use tokio::sync::oneshot;

use super::metrics::{self, CoreView, IntakeMetrics};
use super::status_page::{self, LEDGER_ROWS};
use super::store::StoreError;
use super::store::backend::Records;

/// What the pages are made from: a way to ask the core for a view, the ledger, the live metrics.
pub(crate) struct Sources<A> {
    /// Queues a view request on the core thread; `false` when it is gone.
    pub ask_core: A,
    pub reader: Arc<Mutex<Box<dyn Records>>>,
    pub live: IntakeMetrics,
}

impl<A: Fn(oneshot::Sender<CoreView>) -> bool> Sources<A> {
    /// The answer for `path`.
    pub async fn page(&self, path: &str) -> Page {
        if !matches!(path, "/" | "/metrics") {
            return Page::not_found();
        }
        let (reply, view) = oneshot::channel();
        if !(self.ask_core)(reply) {
            return Page::unavailable("the coordinator is stopping");
        }
        let Ok(view) = view.await else { return Page::unavailable("the coordinator is stopping") };
        let rows = if path == "/" { LEDGER_ROWS } else { 0 };
        let reader = self.reader.clone();
        let ledger = tokio::task::spawn_blocking(move || ledger_tail(&reader, rows)).await;
        let (len, entries) = match ledger {
            Ok(Ok(tail)) => tail,
            // The metrics still answer while the database cannot be read (an outage is when
            // the share backlog matters), without the ledger's length.
            Ok(Err(_)) if path == "/metrics" => {
                return Page::ok(OPENMETRICS, metrics::encode(&view, None, &self.live));
            }
            Ok(Err(e)) => return Page { status: 500, content_type: TEXT, body: format!("ledger: {e}\n") },
            Err(_) => return Page::unavailable("the ledger reader stopped"),
        };
        match path {
            "/metrics" => Page::ok(OPENMETRICS, metrics::encode(&view, Some(len), &self.live)),
            _ => Page::ok(HTML, status_page::render(&view, &entries, len)),
        }
    }
}

/// The ledger's length and its last `rows` entries, oldest first.
fn ledger_tail(reader: &Mutex<Box<dyn Records>>, rows: u32) -> Result<(u64, Vec<LedgerEntry>), StoreError> {
    let mut reader = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let len = reader.last_seq()?;
    if rows == 0 || len == 0 {
        return Ok((len, Vec::new()));
    }
    let since = len.saturating_sub(u64::from(rows) - 1).max(1);
    Ok((len, reader.ledger(since, None, rows)?))
}
