//! The status page (`serve --http ADDR`, `/`): one server-rendered HTML page of the farm,
//! refreshing itself every `REFRESH_SECS` (a meta refresh; no script).
//!
//! Shows the accounts with their progress toward their standards (a `<progress>` bar,
//! delivered / standard and the percentage), the nodes with their state, delivered and
//! announced rates, chain, account and version, and the last `LEDGER_ROWS` ledger entries.
//! Every text from the farm (names, versions, payloads) is HTML-escaped.
//!
//! Elements carry stable ids and classes (`#accounts`, `tr.account[data-name]`, `#nodes`,
//! `tr.node[data-name]`, `td.state`, `#ledger`, `tr.entry`) so tests and scrapers can find them.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use hashgrid_common::http::escape_html as esc;
use hashgrid_common::message::{AccountStatus, LedgerEntry};

use super::metrics::CoreView;
use crate::amount::format_amount;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 5;
/// Ledger entries shown, newest first.
pub const LEDGER_ROWS: u32 = 20;
/// A payload longer than this is cut (with "…") in the table.
const PAYLOAD_CHARS: usize = 240;

/// The page for `view`, the ledger's last entries (any order) and its length.
pub fn render(view: &CoreView, ledger: &[LedgerEntry], ledger_len: u64) -> String {
    let mut h = String::with_capacity(16 << 10);
    let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(view.at_ms));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>hashgrid coordinator</title><style>{STYLE}</style></head><body>\n\
         <h1>hashgrid coordinator</h1>\n<p class=\"meta\">policy <b id=\"policy\">{}</b> · {} account(s) · {} node(s) · \
         ledger <b id=\"ledger-length\">{ledger_len}</b> entries · as of <time>{at}</time> · refreshes every {REFRESH_SECS} s · \
         <a href=\"/metrics\">metrics</a></p>\n",
        esc(view.status.policy.as_str()),
        view.status.accounts.len(),
        view.status.nodes.len(),
    );

    h.push_str("<h2>Accounts</h2>\n<table id=\"accounts\"><thead><tr><th>account</th><th>chain</th><th>progress</th><th>delivered / standard</th><th>shares</th><th>status</th></tr></thead><tbody>\n");
    if view.status.accounts.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"none\">no accounts</td></tr>\n");
    }
    for a in &view.status.accounts {
        let pct = percent(a);
        let _ = writeln!(
            h,
            "<tr class=\"account\" data-name=\"{name}\"><td class=\"name\">{name}</td><td>{chain}</td>\
             <td><progress value=\"{bar:.1}\" max=\"100\">{pct:.1}%</progress> <span class=\"pct\">{pct:.1}%</span></td>\
             <td class=\"amounts\">{}H / {}H</td><td>{}</td><td class=\"{cls}\">{status}</td></tr>",
            format_amount(a.delivered),
            format_amount(a.standard),
            a.shares,
            name = esc(&a.name),
            chain = esc(&a.chain),
            bar = pct.min(100.0),
            cls = if a.up_to_standard { "ok" } else { "below" },
            status = if a.up_to_standard { "up to standard" } else { "below standard" },
        );
    }
    h.push_str("</tbody></table>\n");

    h.push_str("<h2>Nodes</h2>\n<table id=\"nodes\"><thead><tr><th>node</th><th>state</th><th>delivered rate</th><th>announced rate</th><th>chain</th><th>account</th><th>devices</th><th>shares ok / rejected</th><th>version</th></tr></thead><tbody>\n");
    if view.status.nodes.is_empty() {
        h.push_str("<tr><td colspan=\"9\" class=\"none\">no nodes</td></tr>\n");
    }
    for n in &view.status.nodes {
        let devices: Vec<String> = n.devices.iter().map(|d| format!("{} {}", d.kind, d.name)).collect();
        let _ = writeln!(
            h,
            "<tr class=\"node\" data-name=\"{name}\"><td class=\"name\">{name}</td><td class=\"state {state}\">{state}</td>\
             <td class=\"rate\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            rate(n.hashrate),
            rate(n.announced_hashrate),
            esc(n.chain.as_deref().unwrap_or("-")),
            esc(n.account.as_deref().unwrap_or("-")),
            esc(&devices.join(", ")),
            n.accepted,
            n.rejected,
            esc(&n.software_version),
            name = esc(&n.name),
            state = esc(&n.state),
        );
    }
    h.push_str("</tbody></table>\n");

    let _ = writeln!(
        h,
        "<h2>Ledger</h2>\n<p class=\"meta\">the last {} of {ledger_len} entries, newest first</p>\n\
         <table id=\"ledger\"><thead><tr><th>seq</th><th>time</th><th>kind</th><th>payload</th><th>hash</th></tr></thead><tbody>",
        ledger.len()
    );
    if ledger.is_empty() {
        h.push_str("<tr><td colspan=\"5\" class=\"none\">no entries</td></tr>\n");
    }
    let mut newest_first: Vec<&LedgerEntry> = ledger.iter().collect();
    newest_first.sort_by_key(|e| std::cmp::Reverse(e.seq));
    for e in newest_first {
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(e.at_ms));
        let mut payload: String = e.payload.chars().take(PAYLOAD_CHARS).collect();
        if payload.len() < e.payload.len() {
            payload.push('…');
        }
        let _ = writeln!(
            h,
            "<tr class=\"entry\" data-seq=\"{}\"><td>{}</td><td class=\"at\">{at}</td><td class=\"kind\">{}</td><td class=\"payload\"><code>{}</code></td><td><code>{}</code></td></tr>",
            e.seq,
            e.seq,
            esc(&e.kind),
            esc(&payload),
            &hex::encode(e.hash)[..16],
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

/// Delivered work as a percentage of the standard (100 for a zero standard).
fn percent(a: &AccountStatus) -> f64 {
    if a.standard == 0 { 100.0 } else { a.delivered as f64 * 100.0 / a.standard as f64 }
}

/// A rate in hashes per second, with an SI prefix.
fn rate(h: f64) -> String {
    if !(h.is_finite() && h > 0.0) {
        return "0 H/s".into();
    }
    format!("{}H/s", format_amount(h as u128))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}.meta{color:#666}progress{width:12em}.ok{color:#070}.below{color:#a60}\
.state.active{color:#070}.state.failed{color:#b00}.state.standby{color:#555}.none{color:#888;font-style:italic}\
td.payload code{font-size:.85em;word-break:break-all}td.at{white-space:nowrap}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::metrics::tests::{NOW, view};
    use hashgrid_common::message::Policy;

    #[test]
    fn shows_progress_nodes_and_ledger_with_markup_escaped() {
        let mut view = view();
        view.status.policy = Policy::Proportional;
        view.status.accounts[0].name = "<b>evil</b>".into();
        view.status.nodes[0].state = "standby".into();
        view.status.nodes[0].software_version = "0.1.0\"><script>".into();
        let entry = LedgerEntry {
            seq: 3,
            at_ms: NOW,
            kind: "account_added".into(),
            payload: "{\"account\":\"<i>x</i>\"}".into(),
            prev_hash: [0; 32],
            hash: [0xab; 32],
        };
        let page = render(&view, &[entry], 3);
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page.contains("&lt;b&gt;evil&lt;/b&gt;") && !page.contains("<b>evil"), "{page}");
        assert!(page.contains("<progress value=\"25.0\" max=\"100\">") && page.contains("25.0%"), "{page}");
        assert!(page.contains("1.00 GH / 4.00 GH"), "{page}");
        assert!(page.contains("<td class=\"state standby\">standby</td>"), "{page}");
        assert!(page.contains("3.00 MH/s"), "{page}");
        assert!(!page.contains("<script>") && !page.contains("<i>x"), "{page}");
        assert!(page.contains("data-seq=\"3\"") && page.contains("account_added") && page.contains("abababab"));
        assert!(page.contains("<b id=\"policy\">proportional</b>"));
    }
}
