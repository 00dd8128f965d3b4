//! The node's Prometheus metrics (`hashgrid-node run --http ADDR`, `/metrics`): what the node
//! service updates as it runs, encoded on demand.
//!
//! Owns the metric names and their labels:
//! - `hashgrid_rig_device_hashrate{device,kind,name}` (gauge, hashes/s): each device's measured
//!   rate; 0 once the device has failed.
//! - `hashgrid_rig_hashrate` (gauge, hashes/s): the rate the node announces.
//! - `hashgrid_rig_shares_accepted_total` (counter) and
//!   `hashgrid_rig_shares_rejected_total{reason}` (counter): the coordinator's answers.
//! - `hashgrid_rig_connected` (gauge, 0 or 1): whether a session with the coordinator is up.
//! - `hashgrid_rig_connections_total` (counter): sessions established (1 + reconnects).
//!
//! `NodeMetrics` is a cheap handle (its metrics are shared atomics): clone it into the HTTP
//! server and give the same one to the node service.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hashgrid_common::message::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabels {
    /// The device's index on the node (the order of `--devices`).
    device: String,
    /// "gpu" or "cpu".
    kind: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The node's metrics; clones share them.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    device_hashrate: Family<DeviceLabels, Gauge<f64, AtomicU64>>,
    hashrate: Gauge<f64, AtomicU64>,
    accepted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    connected: Gauge,
    connections: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let device_hashrate = Family::<DeviceLabels, Gauge<f64, AtomicU64>>::default();
        let hashrate = Gauge::<f64, AtomicU64>::default();
        let accepted = Counter::default();
        let rejected = Family::<ReasonLabels, Counter>::default();
        let connected = Gauge::default();
        let connections = Counter::default();
        for reason in RejectReason::ALL {
            drop(rejected.get_or_create(&ReasonLabels { reason: reason.as_str() }));
        }
        let mut r = Registry::with_prefix("hashgrid_rig");
        r.register("device_hashrate", "Measured rate of each device, hashes per second", device_hashrate.clone());
        r.register("hashrate", "Rate the node announces to the coordinator, hashes per second", hashrate.clone());
        r.register("shares_accepted", "Shares the coordinator accepted", accepted.clone());
        r.register("shares_rejected", "Shares the coordinator rejected, by reason", rejected.clone());
        r.register("connected", "1 while a session with the coordinator is up, else 0", connected.clone());
        r.register("connections", "Sessions established with the coordinator", connections.clone());
        NodeMetrics { registry: Arc::new(r), device_hashrate, hashrate, accepted, rejected, connected, connections }
    }

    /// The metrics as OpenMetrics text (`hashgrid_common::http::OPENMETRICS`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn set_device_rate(&self, device: usize, kind: &str, name: &str, rate: f64) {
        let labels = DeviceLabels { device: device.to_string(), kind: kind.to_string(), name: name.to_string() };
        self.device_hashrate.get_or_create(&labels).set(rate);
    }

    pub(crate) fn set_hashrate(&self, rate: f64) {
        self.hashrate.set(rate);
    }

    pub(crate) fn share_accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn share_rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
    }

    pub(crate) fn set_connected(&self, up: bool) {
        if up {
            self.connections.inc();
        }
        self.connected.set(i64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_the_node_reported() {
        let m = NodeMetrics::new();
        m.set_device_rate(0, "cpu", "cpu (2 threads)", 1.5e6);
        m.set_hashrate(1.5e6);
        m.share_accepted();
        m.share_rejected(RejectReason::Duplicate);
        m.set_connected(true);
        let text = m.encode();
        assert!(
            text.contains("hashgrid_rig_device_hashrate{device=\"0\",kind=\"cpu\",name=\"cpu (2 threads)\"} 1500000.0"),
            "{text}"
        );
        assert!(text.contains("hashgrid_rig_shares_accepted_total 1\n"), "{text}");
        assert!(text.contains("hashgrid_rig_shares_rejected_total{reason=\"duplicate\"} 1\n"), "{text}");
        assert!(text.contains("hashgrid_rig_shares_rejected_total{reason=\"above_target\"} 0\n"), "{text}");
        assert!(text.contains("hashgrid_rig_connected 1\n") && text.contains("hashgrid_rig_connections_total 1\n"));
        m.set_connected(false);
        assert!(m.encode().contains("hashgrid_rig_connected 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
