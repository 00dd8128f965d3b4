//! The coordinator's configuration file (TOML): every key, its default, and how a file is
//! read. `hashgrid-coordinator config print-default` prints `DEFAULT_TOML`, which documents
//! every key; `serve --config FILE` reads a file; command-line flags and `HASHGRID_*`
//! environment variables override it. A key that does not exist or a value of the wrong kind is
//! one error naming the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hashgrid_common::message::Policy;
use hashgrid_common::stratum::ServerConfig;
use serde::{Deserialize, Deserializer};

use hashgrid_common::config::{load_toml, parse_toml};

use crate::core::CoreConfig;
use crate::core::probe::ProbeConfig;
use crate::core::upstream::UpstreamConfig;
use crate::service::limits::ConnectionLimits;
use crate::service::store::backend::{OnStoreLoss, StoreLocation};

/// The longest `failover_after`: a silent node's ranges wait at most this long.
pub const MAX_FAILOVER_AFTER: Duration = Duration::from_secs(600);

/// The default file, with every key documented. Parsing it gives `CoordinatorConfig::default()`
/// (a test checks), so the two cannot drift apart.
pub const DEFAULT_TOML: &str = r#"# hashgrid coordinator configuration. Every key is optional; shown here with its default.
# Command-line flags and HASHGRID_* environment variables override the file.

# Holds cert.pem, key.pem, node.token, admin.token and hashgrid.db; created on first start.
# (--data-dir, HASHGRID_DATA_DIR)
data_dir = "/var/lib/hashgrid"

# Where the records are kept: "sqlite" (hashgrid.db in the data dir) or a PostgreSQL URL,
# postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, for a hot-standby pair (docs/operations.md);
# add ?sslmode=verify-full&sslrootcert=CA.pem for TLS to the database.
# (--store, HASHGRID_STORE)
store = "sqlite"

# On PostgreSQL, how long an active coordinator that has gone silent (paused, cut off) keeps the
# lease before a standby takes over; one whose process died loses it at once. (--lease-ttl)
lease_ttl = "10s"

# On PostgreSQL, what the active coordinator does when the database is lost while running:
# "exit" (exit code 2, for a supervisor to restart it) or "retry" (hold the acknowledgements and
# reconnect with backoff, 100ms doubling to 5s; a takeover meanwhile still stops it). Nothing
# is acknowledged before its commit either way. (--on-store-loss)
on_store_loss = "exit"

# UDP address of the QUIC endpoint for nodes and operators. (--listen, HASHGRID_LISTEN)
listen = "127.0.0.1:4433"

# TCP address of the HTTP endpoint: Prometheus metrics on /metrics, the status page on /
# (refreshing itself every 5 s). Port 0 picks a free port; the address is printed as
# "http on ADDR". Empty: no HTTP endpoint. (--http, HASHGRID_HTTP)
http = ""

# Allocation policy, "sequential" or "proportional". Empty: keep the stored one (sequential on
# a new data dir). (--policy)
policy = ""

# A node that sends nothing for this long is failed and its ranges reassigned. At least 500ms,
# at most 10m.
# Nodes send heartbeats three times per window (at most once a second). (--failover-after)
failover_after = "3s"

# A node delivering less than this fraction of its announced rate, with 1 - alpha confidence,
# is under standard and replaced.
min_rate_ratio = 0.5

# The false-alarm probability accepted for one under-standard verdict.
alpha = 0.0001

# A node whose rejected shares exceed this fraction (of at least min_rejects) is under standard.
max_reject_ratio = 0.5
min_rejects = 20

# How long one range should take at the node's rate.
range = "3s"

# Shares per second each node should send (per-node share difficulty).
shares_per_second = 5.0

# The balancer moves a node to another chain only if that cuts the misallocation of capacity
# by more than this fraction of the node's own capacity.
hysteresis = 0.5

# How far past its template's time a share's time may be.
time_window = "10m"

# QUIC connections open at once, nodes and operators together; more are refused before their
# handshake. A connection that has not said hello within 5 s is closed, and until it does it
# holds at most about one frame (1 MiB), so peers that never authenticate hold at most about
# 1 MiB times this.
max_connections = 1024

# QUIC connections open at once from one IP address (for IPv6, one /64). Rigs behind one NAT
# share an address: raise it above their number.
max_connections_per_address = 64

# Shares taken from nodes whose answers wait for their commit, all nodes together. At this
# many (the database lost with on_store_loss = "retry", or slower than the nodes), nodes'
# connections are not read until answers go out again; the nodes keep their unanswered shares
# and send them again after a reconnect. 64 share batches of 1024.
max_unacknowledged_shares = 65536

# Accounts at pools (`hashgrid account add NAME ... --pool URL`).
# PEM file of the certificates trusted for stratum+ssl:// pools instead of the system's roots.
# Empty: the system's roots. (--pool-ca)
pool_ca = ""

# A pool that says nothing for this long is dead: the account fails over to its next pool. A
# dropped connection fails over at once. (cgminer: 90 s)
pool_silence = "90s"

# Once every pool of an account failed in a row, wait this long before the next round; also
# how often the primary is probed while on a backup. (cgminer: 5 s)
pool_retry = "5s"

# Fail back to the primary only once it has been up this long. (cgminer: 120 s)
pool_failback = "120s"

# An account whose pool rejects more than this fraction of (at least 20) answered submits is
# flagged in status and ledgered.
pool_max_reject_ratio = 0.2

# Stratum V1 miners (ASICs, cpuminer, proxies): worker = the rig's name, password = the node
# token. TCP address of the Stratum server; empty: off. (--stratum, HASHGRID_STRATUM)
stratum = ""

# A second Stratum port speaking TLS (stratum+ssl://) with the coordinator's certificate, beside
# `stratum`; empty: off. (--stratum-tls, HASHGRID_STRATUM_TLS)
stratum_tls = ""

# Stratum connections open at once (both ports); more are closed on accept, before anything is read.
stratum_max_connections = 1024

# A miner must subscribe and authorize within this.
stratum_handshake_timeout = "30s"

# Lines one miner may send: a token bucket refilled at this rate, holding at most the burst;
# more closes the connection. A share that passes the checks gives its token back (it is
# work, and a miner fast for its pool's difficulty sends many).
stratum_lines_per_second = 50.0
stratum_line_burst = 200.0

# Per-miner variable difficulty: the difficulty a miner starts at, and its bounds.
stratum_start_difficulty = 1.0
stratum_min_difficulty = 0.000001
stratum_max_difficulty = 1000000000.0

# The share rate aimed at: for a slow miner (10 MH/s and below), per second; for an ASIC
# (10 TH/s and above), per minute; in between, interpolated.
stratum_slow_shares_per_second = 2.0
stratum_fast_shares_per_minute = 6.0

# A miner sending only invalid shares for this long is resent its work, then asked to
# reconnect, then disconnected (ckpool's 60/120/180 s). One valid share ends the streak.
stratum_invalid_resend_after = "60s"
stratum_invalid_reconnect_after = "120s"
stratum_invalid_disconnect_after = "180s"
"#;

/// The coordinator's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    pub data_dir: PathBuf,
    #[serde(deserialize_with = "store")]
    pub store: StoreLocation,
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    #[serde(deserialize_with = "on_store_loss")]
    pub on_store_loss: OnStoreLoss,
    pub listen: SocketAddr,
    #[serde(deserialize_with = "optional_addr")]
    pub http: Option<SocketAddr>,
    #[serde(deserialize_with = "optional_policy")]
    pub policy: Option<Policy>,
    #[serde(deserialize_with = "duration")]
    pub failover_after: Duration,
    pub min_rate_ratio: f64,
    pub alpha: f64,
    pub max_reject_ratio: f64,
    pub min_rejects: u64,
    #[serde(deserialize_with = "duration")]
    pub range: Duration,
    pub shares_per_second: f64,
    pub hysteresis: f64,
    #[serde(deserialize_with = "duration")]
    pub time_window: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_unacknowledged_shares: usize,
    #[serde(deserialize_with = "optional_path")]
    pub pool_ca: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub pool_silence: Duration,
    #[serde(deserialize_with = "duration")]
    pub pool_retry: Duration,
    #[serde(deserialize_with = "duration")]
    pub pool_failback: Duration,
    pub pool_max_reject_ratio: f64,
    #[serde(deserialize_with = "optional_addr")]
    pub stratum: Option<SocketAddr>,
    #[serde(deserialize_with = "optional_addr")]
    pub stratum_tls: Option<SocketAddr>,
    pub stratum_max_connections: usize,
    #[serde(deserialize_with = "duration")]
    pub stratum_handshake_timeout: Duration,
    pub stratum_lines_per_second: f64,
    pub stratum_line_burst: f64,
    pub stratum_start_difficulty: f64,
    pub stratum_min_difficulty: f64,
    pub stratum_max_difficulty: f64,
    pub stratum_slow_shares_per_second: f64,
    pub stratum_fast_shares_per_minute: f64,
    #[serde(deserialize_with = "duration")]
    pub stratum_invalid_resend_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub stratum_invalid_reconnect_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub stratum_invalid_disconnect_after: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        let core = CoreConfig::default();
        let session = ServerConfig::new("");
        CoordinatorConfig {
            data_dir: PathBuf::from("/var/lib/hashgrid"),
            store: StoreLocation::Sqlite,
            lease_ttl: crate::service::lease::DEFAULT_TTL,
            on_store_loss: OnStoreLoss::Exit,
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            http: None,
            policy: None,
            failover_after: Duration::from_millis(core.failover_after_ms),
            min_rate_ratio: core.probe.min_rate_ratio,
            alpha: core.probe.alpha,
            max_reject_ratio: core.probe.max_reject_ratio,
            min_rejects: core.probe.min_rejects,
            range: Duration::from_millis(core.range_ms),
            shares_per_second: core.shares_per_second,
            hysteresis: core.hysteresis,
            time_window: Duration::from_secs(core.time_window_secs as u64),
            max_connections: ConnectionLimits::default().total,
            max_connections_per_address: ConnectionLimits::default().per_address,
            max_unacknowledged_shares: ConnectionLimits::default().unacknowledged_shares,
            pool_ca: None,
            pool_silence: Duration::from_millis(core.upstream.silence_ms),
            pool_retry: Duration::from_millis(core.upstream.retry_ms),
            pool_failback: Duration::from_millis(core.upstream.failback_after_ms),
            pool_max_reject_ratio: core.upstream.max_reject_ratio,
            stratum: None,
            stratum_tls: None,
            stratum_max_connections: 1024,
            stratum_handshake_timeout: Duration::from_millis(session.handshake_timeout_ms),
            stratum_lines_per_second: session.lines_per_sec,
            stratum_line_burst: session.line_burst,
            stratum_start_difficulty: session.vardiff.start,
            stratum_min_difficulty: session.vardiff.min,
            stratum_max_difficulty: session.vardiff.max,
            stratum_slow_shares_per_second: session.vardiff.slow.shares_per_sec,
            stratum_fast_shares_per_minute: session.vardiff.fast.shares_per_sec * 60.0,
            stratum_invalid_resend_after: Duration::from_millis(session.resend_work_after_ms),
            stratum_invalid_reconnect_after: Duration::from_millis(session.reconnect_after_ms),
            stratum_invalid_disconnect_after: Duration::from_millis(session.disconnect_after_ms),
        }
    }
}

pub use hashgrid_common::config::ConfigError;

impl CoordinatorConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: CoordinatorConfig = load_toml(path)?;
        config.check()?;
        Ok(config)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: CoordinatorConfig = parse_toml(text)?;
        config.check()?;
        Ok(config)
    }

    /// The checks that types alone do not make.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        if self.failover_after < Duration::from_millis(500) {
            return invalid("failover_after", "must be at least 500ms");
        }
        if self.failover_after > MAX_FAILOVER_AFTER {
            return invalid("failover_after", "must be at most 10m");
        }
        if self.lease_ttl < Duration::from_millis(300) || self.lease_ttl > Duration::from_secs(600) {
            return invalid("lease_ttl", "must be at least 300ms and at most 10m");
        }
        if !(self.min_rate_ratio > 0.0 && self.min_rate_ratio <= 1.0) {
            return invalid("min_rate_ratio", "must be more than 0 and at most 1");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return invalid("alpha", "must be between 0 and 1");
        }
        if !(self.max_reject_ratio > 0.0 && self.max_reject_ratio <= 1.0) {
            return invalid("max_reject_ratio", "must be more than 0 and at most 1");
        }
        if self.range < Duration::from_millis(100) {
            return invalid("range", "must be at least 100ms");
        }
        if !(self.shares_per_second.is_finite() && self.shares_per_second > 0.0) {
            return invalid("shares_per_second", "must be a positive number");
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return invalid("hysteresis", "must be 0 or more");
        }
        if self.time_window.as_secs() > u32::MAX as u64 {
            return invalid("time_window", "is too long");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_connections_per_address == 0 {
            return invalid("max_connections_per_address", "must be at least 1");
        }
        if self.max_unacknowledged_shares == 0 {
            return invalid("max_unacknowledged_shares", "must be at least 1");
        }
        if self.pool_silence < Duration::from_secs(1) {
            return invalid("pool_silence", "must be at least 1s");
        }
        if self.pool_retry < Duration::from_millis(100) {
            return invalid("pool_retry", "must be at least 100ms");
        }
        if !(self.pool_max_reject_ratio > 0.0 && self.pool_max_reject_ratio <= 1.0) {
            return invalid("pool_max_reject_ratio", "must be more than 0 and at most 1");
        }
        if self.stratum_tls.is_some() && self.stratum.is_none() {
            return invalid("stratum_tls", "needs stratum (the plain port) too");
        }
        if self.stratum_max_connections == 0 {
            return invalid("stratum_max_connections", "must be at least 1");
        }
        if let Err(e) = self.stratum_session().check() {
            return invalid("stratum_*", &e.to_string());
        }
        Ok(())
    }

    /// The connection caps these settings give.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            total: self.max_connections,
            per_address: self.max_connections_per_address,
            unacknowledged_shares: self.max_unacknowledged_shares,
        }
    }

    /// The Stratum server's per-connection settings (its session id is set per connection).
    pub fn stratum_session(&self) -> ServerConfig {
        let mut session = ServerConfig::new("");
        session.handshake_timeout_ms = self.stratum_handshake_timeout.as_millis() as u64;
        (session.lines_per_sec, session.line_burst) = (self.stratum_lines_per_second, self.stratum_line_burst);
        session.time_window_secs = self.time_window.as_secs() as u32;
        session.resend_work_after_ms = self.stratum_invalid_resend_after.as_millis() as u64;
        session.reconnect_after_ms = self.stratum_invalid_reconnect_after.as_millis() as u64;
        session.disconnect_after_ms = self.stratum_invalid_disconnect_after.as_millis() as u64;
        let v = &mut session.vardiff;
        (v.start, v.min, v.max) =
            (self.stratum_start_difficulty, self.stratum_min_difficulty, self.stratum_max_difficulty);
        v.slow.shares_per_sec = self.stratum_slow_shares_per_second;
        v.fast.shares_per_sec = self.stratum_fast_shares_per_minute / 60.0;
        session
    }

    /// The core's tunables these settings give.
    pub fn core(&self) -> CoreConfig {
        let failover_after_ms = self.failover_after.as_millis() as u64;
        CoreConfig {
            failover_after_ms,
            // Several heartbeats fit in the failover window, so one late packet never fails a node.
            heartbeat_ms: (failover_after_ms / 3).clamp(100, 1000) as u32,
            range_ms: self.range.as_millis() as u64,
            shares_per_second: self.shares_per_second,
            time_window_secs: self.time_window.as_secs() as u32,
            hysteresis: self.hysteresis,
            probe: ProbeConfig {
                min_rate_ratio: self.min_rate_ratio,
                alpha: self.alpha,
                max_reject_ratio: self.max_reject_ratio,
                min_rejects: self.min_rejects,
                ..ProbeConfig::default()
            },
            upstream: UpstreamConfig {
                silence_ms: self.pool_silence.as_millis() as u64,
                retry_ms: self.pool_retry.as_millis() as u64,
                failback_after_ms: self.pool_failback.as_millis() as u64,
                max_reject_ratio: self.pool_max_reject_ratio,
                ..UpstreamConfig::default()
            },
            ..CoreConfig::default()
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like 3s or 500ms ({e})")))
}

fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an address like 127.0.0.1:9464")))
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

fn optional_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Policy>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn store<'de, D: Deserializer<'de>>(d: D) -> Result<StoreLocation, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

fn on_store_loss<'de, D: Deserializer<'de>>(d: D) -> Result<OnStoreLoss, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default() {
        assert_eq!(CoordinatorConfig::parse(DEFAULT_TOML).unwrap(), CoordinatorConfig::default());
        assert_eq!(CoordinatorConfig::parse("").unwrap(), CoordinatorConfig::default());
        assert_eq!(CoordinatorConfig::default().core(), CoreConfig::default());
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let c = CoordinatorConfig::parse(include_str!("../../deploy/coordinator.toml")).unwrap();
        assert_eq!(c.listen, "0.0.0.0:4433".parse().unwrap());
        assert_eq!(c.failover_after, Duration::from_secs(2));
        assert_eq!(c.limits(), ConnectionLimits { total: 1024, per_address: 256, ..ConnectionLimits::default() });
    }

    #[test]
    fn keys_are_read() {
        let c = CoordinatorConfig::parse(
            "listen = \"0.0.0.0:7000\"\nhttp = \"127.0.0.1:9464\"\npolicy = \"proportional\"\nfailover_after = \"750ms\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.http, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.policy, Some(Policy::Proportional));
        assert_eq!(c.core().failover_after_ms, 750);
        assert_eq!(c.core().heartbeat_ms, 250);
        let c = CoordinatorConfig::parse(
            "max_connections = 10\nmax_connections_per_address = 3\nmax_unacknowledged_shares = 50\n",
        )
        .unwrap();
        assert_eq!(c.limits(), ConnectionLimits { total: 10, per_address: 3, unacknowledged_shares: 50 });
    }

    #[test]
    fn a_wrong_key_or_value_is_one_line_naming_the_key() {
        let err = CoordinatorConfig::parse("listen = \"127.0.0.1:1\"\nlisten_on = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("listen_on"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = CoordinatorConfig::parse("\nfailover_after = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("line 2, key `failover_after`") && err.contains("\"soon\""), "{err}");
        let err = CoordinatorConfig::parse("listen = 5\n").unwrap_err().to_string();
        assert!(err.contains("key `listen`"), "{err}");
        let err = CoordinatorConfig::parse("policy = \"fastest\"\n").unwrap_err().to_string();
        assert!(err.contains("key `policy`") && err.contains("fastest"), "{err}");
        let err = CoordinatorConfig::parse("failover_after = \"100ms\"\n").unwrap_err().to_string();
        assert_eq!(err, "failover_after: must be at least 500ms");
        let err = CoordinatorConfig::parse("failover_after = \"11m\"\n").unwrap_err().to_string();
        assert_eq!(err, "failover_after: must be at most 10m");
        assert!(CoordinatorConfig::parse("failover_after = \"10m\"\n").is_ok());
        let err = CoordinatorConfig::parse("max_connections_per_address = 0\n").unwrap_err().to_string();
        assert_eq!(err, "max_connections_per_address: must be at least 1");
    }

    #[test]
    fn the_invalid_share_escalation_is_configurable_and_must_not_decrease() {
        let c = CoordinatorConfig::parse(
            "stratum_invalid_resend_after = \"1s\"\nstratum_invalid_reconnect_after = \"2s\"\n\
             stratum_invalid_disconnect_after = \"3s\"\n",
        )
        .unwrap();
        let s = c.stratum_session();
        assert_eq!((s.resend_work_after_ms, s.reconnect_after_ms, s.disconnect_after_ms), (1000, 2000, 3000));
        let err = CoordinatorConfig::parse("stratum_invalid_disconnect_after = \"1s\"\n").unwrap_err().to_string();
        assert!(err.contains("escalation thresholds must not decrease"), "{err}");
    }

    #[test]
    fn the_line_rate_limit_is_configurable_and_checked() {
        let c = CoordinatorConfig::parse("stratum_lines_per_second = 2.0\nstratum_line_burst = 10.0\n").unwrap();
        let s = c.stratum_session();
        assert_eq!((s.lines_per_sec, s.line_burst), (2.0, 10.0));
        let err = CoordinatorConfig::parse("stratum_lines_per_second = 0.0\n").unwrap_err().to_string();
        assert!(err.contains("lines_per_sec must be positive"), "{err}");
    }

    #[test]
    fn the_store_key_takes_sqlite_or_a_postgres_url_and_names_a_wrong_value() {
        let url = "postgres://hashgrid:secret@db.example/hashgrid?sslmode=verify-full";
        let c = CoordinatorConfig::parse(&format!("store = \"{url}\"\non_store_loss = \"retry\"\n")).unwrap();
        assert_eq!((c.store, c.on_store_loss), (StoreLocation::Postgres(url.into()), OnStoreLoss::Retry));
        assert_eq!(CoordinatorConfig::parse("store = \"sqlite\"\n").unwrap().store, StoreLocation::Sqlite);
        let err = CoordinatorConfig::parse("store = \"mysql://db\"\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("store") && err.contains("postgres://"), "{err}");
    }

    #[test]
    fn the_stratum_tls_port_comes_beside_the_plain_one() {
        let c = CoordinatorConfig::parse("stratum = \"0.0.0.0:3333\"\nstratum_tls = \"0.0.0.0:3334\"\n").unwrap();
        assert_eq!(c.stratum_tls, Some("0.0.0.0:3334".parse().unwrap()));
        let err = CoordinatorConfig::parse("stratum_tls = \"0.0.0.0:3334\"\n").unwrap_err().to_string();
        assert_eq!(err, "stratum_tls: needs stratum (the plain port) too");
    }
}
