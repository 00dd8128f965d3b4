//! The node's configuration file (TOML) for `hashgrid-node run --config FILE`: every key, its
//! default, and how a file is read. `hashgrid-node config print-default` prints `DEFAULT_TOML`;
//! command-line flags and `HASHGRID_*` environment variables override the file. A key that does
//! not exist or a value of the wrong kind is one error naming the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use hashgrid_common::config::{ConfigError, load_toml, parse_toml};
use hashgrid_common::net::{Address, AddressError};
use serde::Deserialize;

use crate::search::BackendChoice;
use crate::service::Devices;

/// The default file, with every key documented. Parsing it gives `NodeFileConfig::default()`
/// (a test checks).
pub const DEFAULT_TOML: &str = r#"# hashgrid node configuration. Every key is optional; shown here with its default.
# Command-line flags and HASHGRID_* environment variables override the file.

# The coordinator's QUIC address, HOST:PORT or IP:PORT, e.g. "a.example:4433"; for a
# hot-standby pair both, "a.example:4433,b.example:4433". Required (here or as a flag).
# (--coordinator, HASHGRID_COORDINATOR)
coordinator = ""

# The coordinator's certificate (a copy of its cert.pem), the only one trusted. Required.
# (--ca, HASHGRID_CA)
ca = ""

# A file holding the join token (a copy of the coordinator's node.token). Required.
# (--token-file, HASHGRID_TOKEN_FILE)
token_file = ""

# The node's name in the farm. Empty: the host name. (--name, HASHGRID_NODE_NAME)
name = ""

# Join as a standby: connected and measured, given no ranges until promoted. (--standby)
standby = false

# "auto" (a hardware GPU if present, else the CPU), "cpu" or "gpu". Ignored with `devices`.
# (--backend)
backend = "auto"

# GPU adapter by index or (part of its) name. Empty: the first. (--adapter)
adapter = ""

# CPU threads. 0: all cores. (--threads)
threads = 0

# Devices to run one compute service on each, e.g. "0,1,cpu" or "all". Empty: the one device
# `backend` picks. (--devices, HASHGRID_DEVICES)
devices = ""

# Announce this rate (hashes per second) instead of the measured one. 0: the measured rate.
# (--announce-rate)
announce_rate = 0.0

# TCP address of an HTTP endpoint serving Prometheus metrics on /metrics: per-device rates,
# shares accepted and rejected, connection state. Port 0 picks a free port (the address is
# printed as "http on ADDR"). Empty: none. (--http, HASHGRID_NODE_HTTP)
http = ""

# Announce this software version instead of this build's (for patched builds and rollouts).
# Empty: this build's. (--announce-version)
announce_version = ""
"#;

/// The node's settings as a file gives them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeFileConfig {
    pub coordinator: String,
    pub ca: PathBuf,
    pub token_file: PathBuf,
    pub name: String,
    pub standby: bool,
    pub backend: String,
    pub adapter: String,
    pub threads: usize,
    pub devices: String,
    pub announce_rate: f64,
    pub http: String,
    pub announce_version: String,
}

impl Default for NodeFileConfig {
    fn default() -> Self {
        NodeFileConfig {
            coordinator: String::new(),
            ca: PathBuf::new(),
            token_file: PathBuf::new(),
            name: String::new(),
            standby: false,
            backend: "auto".into(),
            adapter: String::new(),
            threads: 0,
            devices: String::new(),
            announce_rate: 0.0,
            http: String::new(),
            announce_version: String::new(),
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// Empty: not set.
    pub coordinator: Vec<Address>,
    pub ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub name: Option<String>,
    pub standby: bool,
    pub backend: BackendChoice,
    pub adapter: Option<String>,
    pub threads: Option<usize>,
    pub devices: Option<Devices>,
    pub announce_rate: Option<f64>,
    /// The metrics endpoint's address.
    pub http: Option<SocketAddr>,
    pub announce_version: Option<String>,
}

impl NodeFileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: NodeFileConfig = load_toml(path)?;
        config.settings()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: NodeFileConfig = parse_toml(text)?;
        config.settings()?;
        Ok(config)
    }

    /// The typed, checked settings (empty strings and zeros are "not set").
    pub fn settings(&self) -> Result<NodeSettings, ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        // One address, or a hot-standby pair's, comma separated.
        let coordinator = self
            .coordinator
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|addr| addr.parse().map_err(|e: AddressError| invalid("coordinator", e.to_string())))
            .collect::<Result<Vec<Address>, _>>()?;
        let backend = BackendChoice::from_str(&self.backend, true)
            .map_err(|_| invalid("backend", format!("{:?}: use auto, cpu or gpu", self.backend)))?;
        let devices = match self.devices.trim() {
            "" => None,
            list => Some(list.parse::<Devices>().map_err(|e| invalid("devices", e.to_string()))?),
        };
        let http = match self.http.trim() {
            "" => None,
            addr => Some(addr.parse().map_err(|_| invalid("http", format!("{addr:?} is not an address")))?),
        };
        if !(self.announce_rate.is_finite() && self.announce_rate >= 0.0) {
            return Err(invalid("announce_rate", "must be 0 (measured) or a positive rate".into()));
        }
        let nonempty = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        Ok(NodeSettings {
            coordinator,
            ca: nonempty(&self.ca),
            token_file: nonempty(&self.token_file),
            name: text(&self.name),
            standby: self.standby,
            backend,
            adapter: text(&self.adapter),
            threads: (self.threads > 0).then_some(self.threads),
            devices,
            announce_rate: (self.announce_rate > 0.0).then_some(self.announce_rate),
            http,
            announce_version: text(&self.announce_version),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default() {
        assert_eq!(NodeFileConfig::parse(DEFAULT_TOML).unwrap(), NodeFileConfig::default());
        let s = NodeFileConfig::default().settings().unwrap();
        assert_eq!((s.coordinator, s.backend, s.threads, s.devices), (vec![], BackendChoice::Auto, None, None));
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let s = NodeFileConfig::parse(include_str!("../../deploy/node.toml")).unwrap().settings().unwrap();
        assert_eq!(s.devices, Some(Devices::All));
        assert_eq!(s.ca.as_deref(), Some(Path::new("/etc/hashgrid/cert.pem")));
    }

    #[test]
    fn keys_are_read_and_checked() {
        let c = NodeFileConfig::parse(
            "coordinator = \"10.0.0.1:4433\"\nstandby = true\nbackend = \"cpu\"\nthreads = 2\ndevices = \"0,cpu\"\n",
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.coordinator, ["10.0.0.1:4433".parse().unwrap()]);
        let pair = NodeFileConfig::parse("coordinator = \"10.0.0.1:4433, 10.0.0.2:4433\"\n").unwrap();
        assert_eq!(pair.settings().unwrap().coordinator.len(), 2);
        assert!(s.standby);
        assert_eq!((s.backend, s.threads), (BackendChoice::Cpu, Some(2)));
        assert!(s.devices.is_some());
        let s = NodeFileConfig::parse("http = \"127.0.0.1:9465\"\n").unwrap().settings().unwrap();
        assert_eq!(s.http, Some("127.0.0.1:9465".parse().unwrap()));
        let err = NodeFileConfig::parse("http = \"9465\"\n").unwrap_err().to_string();
        assert!(err.starts_with("http:"), "{err}");
        let err = NodeFileConfig::parse("\nthread = 2\n").unwrap_err().to_string();
        assert!(err.contains("line 2, key `thread`") && !err.contains('\n'), "{err}");
        let err = NodeFileConfig::parse("threads = \"two\"\n").unwrap_err().to_string();
        assert!(err.contains("key `threads`"), "{err}");
        let err = NodeFileConfig::parse("backend = \"tpu\"\n").unwrap_err().to_string();
        assert!(err.starts_with("backend:"), "{err}");
        let err = NodeFileConfig::parse("coordinator = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.starts_with("coordinator:"), "{err}");
    }
}
