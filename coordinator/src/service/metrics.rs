//! The coordinator's Prometheus metrics (`serve --http ADDR`, `/metrics`): their names, and
//! how one `CoreView` (a snapshot the core thread hands out) plus the ledger's length and the
//! live share-intake histogram become OpenMetrics text.
//!
//! Names (labels in braces; gauges unless `_total`):
//! - `hashgrid_account_standard_hashes{account,chain}`, `hashgrid_account_delivered_hashes{account,chain}`:
//!   contracted and credited work in the current period, in expected hashes;
//!   `hashgrid_account_up_to_standard{account,chain}` (0 or 1);
//!   `hashgrid_account_shares{account,chain}`: accepted shares this period.
//! - `hashgrid_node_state{node,state}`: 1 for the node's state (active, standby, draining,
//!   drained, failed), 0 for the others; `hashgrid_node_hashrate{node}` (delivered, measured
//!   from verified shares) and `hashgrid_node_announced_hashrate{node}`, hashes/s;
//!   `hashgrid_node_shares_accepted_total{node}`, `hashgrid_node_shares_rejected_total{node}`.
//! - `hashgrid_shares_accepted_total`, `hashgrid_shares_rejected_total{reason}`,
//!   `hashgrid_failovers_total{reason}` (connection_lost, missed_heartbeats, under_standard),
//!   `hashgrid_promotions_total`, `hashgrid_ranges_issued_total`,
//!   `hashgrid_ranges_reassigned_total`, `hashgrid_blocks_found_total`: since the coordinator
//!   started (`Core::counters`).
//! - `hashgrid_chain_load{chain}`, `hashgrid_chain_capacity_hashrate{chain}`.
//! - `hashgrid_policy{policy}`: 1 for the allocation policy in force.
//! - `hashgrid_ledger_entries`: the ledger's last sequence number (committed entries); left out
//!   while the database cannot be read (the rest of the page still answers).
//! - `hashgrid_shares_unacknowledged`: shares taken from nodes whose answers wait for their
//!   commit; at most `max_unacknowledged_shares` (`backlog`).
//! - `hashgrid_share_intake_seconds` (histogram): from a share arriving on its connection to
//!   its acknowledgement being handed to the node's connection writer, i.e. queueing, check,
//!   credit and the group commit that makes it durable.
//!
//! A scrape builds a fresh registry from the snapshot, so series of accounts and nodes that
//! are gone disappear with them; only the histogram and the backlog live across scrapes
//! (`IntakeMetrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hashgrid_common::message::{ChainStatus, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::backlog::{Backlog, DEFAULT_MAX_UNACKNOWLEDGED};
use crate::core::Counters;

/// Node states named in `hashgrid_node_state`, each with its own series.
pub const NODE_STATES: [&str; 5] = ["active", "standby", "draining", "drained", "failed"];

/// The core's state at one moment, as the HTTP endpoint shows it. Built on the core thread
/// (`Event::View`), so its parts agree with each other.
#[derive(Debug, Clone)]
pub struct CoreView {
    /// When it was taken, Unix milliseconds.
    pub at_ms: u64,
    pub status: Status,
    pub chains: Vec<ChainStatus>,
    pub counters: Counters,
}

impl CoreView {
    pub fn of(core: &crate::core::Core, now_ms: u64) -> CoreView {
        CoreView {
            at_ms: now_ms,
            status: core.status(now_ms),
            chains: core.chain_list(now_ms),
            counters: core.counters().clone(),
        }
    }
}

/// The metrics that live across scrapes; clones share them.
#[derive(Debug, Clone)]
pub struct IntakeMetrics {
    /// Seconds from a share's arrival on its connection to its acknowledgement's hand-off.
    pub share_intake: Histogram,
    /// Shares taken from nodes and not yet answered, and their bound.
    pub backlog: Arc<Backlog>,
}

impl IntakeMetrics {
    /// With at most `max_unacknowledged` shares taken and not answered.
    pub fn new(max_unacknowledged: usize) -> Self {
        IntakeMetrics {
            // 100 µs to about 6.5 s, doubling.
            share_intake: Histogram::new(exponential_buckets(1e-4, 2.0, 17)),
            backlog: Arc::new(Backlog::new(max_unacknowledged, Gauge::default())),
        }
    }
}

impl Default for IntakeMetrics {
    fn default() -> Self {
        IntakeMetrics::new(DEFAULT_MAX_UNACKNOWLEDGED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccountLabels {
    account: String,
    chain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeStateLabels {
    node: String,
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChainLabels {
    chain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The metrics as OpenMetrics text: `view`, the ledger's length (`None`: unknown, the database
/// cannot be read now), and the live intake metrics.
pub fn encode(view: &CoreView, ledger_entries: Option<u64>, live: &IntakeMetrics) -> String {
    let mut r = Registry::with_prefix("hashgrid");

    let (standard, delivered) =
        (Family::<AccountLabels, GaugeF>::default(), Family::<AccountLabels, GaugeF>::default());
    let (up, shares) = (Family::<AccountLabels, Gauge>::default(), Family::<AccountLabels, Gauge>::default());
    for a in &view.status.accounts {
        let l = AccountLabels { account: a.name.clone(), chain: a.chain.clone() };
        standard.get_or_create(&l).set(a.standard as f64);
        delivered.get_or_create(&l).set(a.delivered as f64);
        up.get_or_create(&l).set(i64::from(a.up_to_standard));
        shares.get_or_create(&l).set(i64::try_from(a.shares).unwrap_or(i64::MAX));
    }
    r.register("account_standard_hashes", "Contracted work per period, expected hashes", standard);
    r.register("account_delivered_hashes", "Credited work in the current period, expected hashes", delivered);
    r.register("account_up_to_standard", "1 when the account's delivered work has reached its standard", up);
    r.register("account_shares", "Accepted shares credited to the account this period", shares);

    let state = Family::<NodeStateLabels, Gauge>::default();
    let (rate, announced) = (Family::<NodeLabels, GaugeF>::default(), Family::<NodeLabels, GaugeF>::default());
    let (accepted, rejected) = (Family::<NodeLabels, Counter>::default(), Family::<NodeLabels, Counter>::default());
    for n in &view.status.nodes {
        let node = NodeLabels { node: n.name.clone() };
        let mut states: Vec<&str> = NODE_STATES.to_vec();
        if !states.contains(&n.state.as_str()) {
            states.push(&n.state);
        }
        for s in states {
            let labels = NodeStateLabels { node: n.name.clone(), state: s.to_string() };
            state.get_or_create(&labels).set(i64::from(s == n.state));
        }
        rate.get_or_create(&node).set(n.hashrate);
        announced.get_or_create(&node).set(n.announced_hashrate);
        accepted.get_or_create(&node).inc_by(n.accepted);
        rejected.get_or_create(&node).inc_by(n.rejected);
    }
    r.register("node_state", "1 for the node's state, 0 for the others", state);
    r.register("node_hashrate", "Delivered rate measured from verified shares, hashes per second", rate);
    r.register("node_announced_hashrate", "Rate the node announced, hashes per second", announced);
    r.register("node_shares_accepted", "Shares accepted from the node while it is known", accepted);
    r.register("node_shares_rejected", "Shares rejected from the node while it is known", rejected);

    let c = &view.counters;
    r.register(
        "shares_accepted",
        "Shares accepted since the coordinator started",
        ConstCounter::new(c.shares_accepted),
    );
    let by_reason = Family::<ReasonLabels, Counter>::default();
    for (reason, n) in &c.shares_rejected {
        by_reason.get_or_create(&ReasonLabels { reason: reason.as_str().into() }).inc_by(*n);
    }
    r.register("shares_rejected", "Shares rejected since the coordinator started, by reason", by_reason);
    let failovers = Family::<ReasonLabels, Counter>::default();
    // The known reasons always have a series, zeros included.
    let known = ["connection lost", "missed heartbeats", "under standard"];
    for why in known.into_iter().chain(c.failovers.keys().copied().filter(|k| !known.contains(k))) {
        let n = c.failovers.get(why).copied().unwrap_or(0);
        failovers.get_or_create(&ReasonLabels { reason: why.replace(' ', "_") }).inc_by(n);
    }
    r.register("failovers", "Nodes failed with their ranges reassigned, by reason", failovers);
    r.register("promotions", "Nodes promoted to active", ConstCounter::new(c.promotions));
    r.register("ranges_issued", "Nonce ranges assigned to nodes", ConstCounter::new(c.ranges_issued));
    r.register("ranges_reassigned", "Ranges handed over from a failed node", ConstCounter::new(c.ranges_reassigned));
    r.register("blocks_found", "Shares that met their chain's block target", ConstCounter::new(c.blocks_found));

    let (load, capacity) = (Family::<ChainLabels, GaugeF>::default(), Family::<ChainLabels, GaugeF>::default());
    for ch in &view.chains {
        let l = ChainLabels { chain: ch.params.name.clone() };
        load.get_or_create(&l).set(ch.load);
        capacity.get_or_create(&l).set(ch.capacity);
    }
    r.register("chain_load", "The chain's load as the balancer weighs it", load);
    r.register("chain_capacity_hashrate", "Announced rate of the chain's active nodes, hashes per second", capacity);

    let policy = Family::<PolicyLabels, Gauge>::default();
    policy.get_or_create(&PolicyLabels { policy: view.status.policy.as_str().into() }).set(1);
    r.register("policy", "1 for the allocation policy in force", policy);
    if let Some(entries) = ledger_entries {
        r.register(
            "ledger_entries",
            "Committed ledger entries (the last sequence number)",
            ConstGauge::new(i64::try_from(entries).unwrap_or(i64::MAX)),
        );
    }
    r.register(
        "shares_unacknowledged",
        "Shares taken from nodes whose answers wait for their commit (at most max_unacknowledged_shares)",
        ConstGauge::new(live.backlog.pending() as i64),
    );
    r.register(
        "share_intake_seconds",
        "From a share arriving on its connection to its acknowledgement going to the node's writer",
        live.share_intake.clone(),
    );

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig};
    use hashgrid_common::message::{NodeHello, RejectReason};

    pub(crate) const NOW: u64 = 1_700_000_000_000;

    /// A real core's view (one account "alice" of 4 G hashes, one node "rig-01"), with the
    /// figures the tests look for set by hand.
    pub(crate) fn view() -> CoreView {
        let mut core = Core::new(CoreConfig::default());
        core.add_account(NOW, "alice", 4_000_000_000, None, Some(1), None).unwrap();
        let hello = NodeHello {
            token: String::new(),
            name: "rig-01".into(),
            software_version: "0.1.0".into(),
            standby: false,
            devices: vec![],
            hashrate: 3e6,
        };
        core.handle_node_joined(NOW, 1, &hello, hashgrid_common::message::PROTOCOL_VERSION);
        let mut view = CoreView::of(&core, NOW);
        view.status.accounts[0].delivered = 1_000_000_000;
        view.status.nodes[0].hashrate = 2.5e6;
        let c = &mut view.counters;
        (c.shares_accepted, c.promotions, c.ranges_issued, c.ranges_reassigned) = (7, 1, 12, 2);
        c.shares_rejected = RejectReason::ALL.iter().map(|&r| (r, 0)).collect();
        c.shares_rejected.insert(RejectReason::Duplicate, 3);
        c.failovers.insert("missed heartbeats", 1);
        view
    }

    #[test]
    fn a_view_becomes_the_documented_series() {
        let live = IntakeMetrics::default();
        live.share_intake.observe(0.003);
        let text = encode(&view(), Some(42), &live);
        for line in [
            "hashgrid_account_standard_hashes{account=\"alice\",chain=\"local\"} 4000000000.0",
            "hashgrid_account_delivered_hashes{account=\"alice\",chain=\"local\"} 1000000000.0",
            "hashgrid_account_up_to_standard{account=\"alice\",chain=\"local\"} 0",
            "hashgrid_node_state{node=\"rig-01\",state=\"active\"} 1",
            "hashgrid_node_state{node=\"rig-01\",state=\"failed\"} 0",
            "hashgrid_node_hashrate{node=\"rig-01\"} 2500000.0",
            "hashgrid_node_announced_hashrate{node=\"rig-01\"} 3000000.0",
            "hashgrid_shares_accepted_total 7",
            "hashgrid_shares_rejected_total{reason=\"duplicate\"} 3",
            "hashgrid_shares_rejected_total{reason=\"above_target\"} 0",
            "hashgrid_failovers_total{reason=\"missed_heartbeats\"} 1",
            "hashgrid_failovers_total{reason=\"under_standard\"} 0",
            "hashgrid_promotions_total 1",
            "hashgrid_ranges_issued_total 12",
            "hashgrid_ranges_reassigned_total 2",
            "hashgrid_policy{policy=\"sequential\"} 1",
            "hashgrid_ledger_entries 42",
            "hashgrid_shares_unacknowledged 0",
            "hashgrid_share_intake_seconds_count 1",
            "hashgrid_share_intake_seconds_bucket{le=\"0.0032\"} 1",
            "hashgrid_share_intake_seconds_bucket{le=\"0.0016\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // The database cannot be read: the page answers without the ledger's length.
        let text = encode(&view(), None, &live);
        assert!(!text.contains("hashgrid_ledger_entries") && text.contains("hashgrid_shares_unacknowledged 0"));
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_that_exist() {
        let dashboard = include_str!("../../../deploy/grafana-dashboard.json");
        let coordinator = encode(&view(), Some(1), &IntakeMetrics::default());
        // A family with no series yet (device rates before any device) has no TYPE line: the
        // node's names are looked up where they are registered, under the prefix `hashgrid_rig`.
        let rig = include_str!("../../../node/src/service/metrics.rs");
        let mut names = 0;
        for (i, _) in dashboard.match_indices("hashgrid_") {
            let name: String = dashboard[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let family = ["_bucket", "_total"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            let typed = format!("# TYPE {family} ");
            let registered =
                family.strip_prefix("hashgrid_rig_").is_some_and(|n| rig.contains(&format!("register(\"{n}\"")));
            assert!(coordinator.contains(&typed) || registered, "the dashboard names {name}, which nothing exports");
            names += 1;
        }
        assert!(names >= 15, "{names}");
    }
}
