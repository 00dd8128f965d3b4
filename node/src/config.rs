//! The node's configuration file (TOML) for `hashgrid-node run --config FILE`: every key, its
//! default, and how a file is read. `hashgrid-node config print-default` prints `DEFAULT_TOML`;
//! command-line flags and `HASHGRID_*` environment variables override the file. A key that does
//! not exist or a value of the wrong kind is one error naming the key and its line.
//!
//! `parse_command_line` is how all three binaries read their command line: a usage error is
//! one line and exit code 2, `--help` and `--version` print in full.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::search::BackendChoice;
use crate::service::Devices;

/// The default file, with every key documented. Parsing it gives `NodeFileConfig::default()`
/// (a test checks).
pub const DEFAULT_TOML: &str = r#"# hashgrid node configuration. Every key is optional; shown here with its default.
# Command-line flags and HASHGRID_* environment variables override the file.

# The coordinator's QUIC address, e.g. "192.0.2.10:4433". Required (here or as a flag).
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

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Reads a TOML file into `T`: the one configuration loader of both binaries.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    parse_toml(&text).map_err(|e| match e {
        ConfigError::Parse { detail, .. } => ConfigError::Parse { path: path.display().to_string(), detail },
        other => other,
    })
}

/// Parses TOML text into `T`; an error names the line and the key.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "config".into(),
        detail: hashgrid_common::config::locate_error(text, e.span(), e.message()),
    })
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    pub coordinator: Option<SocketAddr>,
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
        let coordinator = match self.coordinator.trim() {
            "" => None,
            addr => Some(addr.parse().map_err(|_| invalid("coordinator", format!("{addr:?} is not an address")))?),
        };
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

/// The command line as `P`; `--help` and `--version` print and exit 0. A usage error is one
/// line on stderr ("PROGRAM: error: WHAT (try --help)"), and the exit code 2 to return.
pub fn parse_command_line<P: clap::Parser>() -> Result<P, std::process::ExitCode> {
    use clap::error::ErrorKind;
    match P::try_parse() {
        Ok(parsed) => Ok(parsed),
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => err.exit(),
        Err(err) => {
            eprintln!("{}", usage_line(P::command().get_name(), &err));
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// A clap error as one line: its first paragraph (the lines before the first blank one, such
/// as "the following required arguments were not provided:" and the arguments) joined, without
/// clap's "error: "; a missing subcommand, which clap answers with the whole help, as just that.
fn usage_line(program: &str, err: &clap::Error) -> String {
    let what = match err.kind() {
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a subcommand is required".to_string(),
        _ => {
            let rendered = err.render().to_string();
            let paragraph: Vec<&str> = rendered.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            paragraph.join(" ").trim_start_matches("error: ").to_string()
        }
    };
    format!("{program}: error: {what} (try --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default() {
        assert_eq!(NodeFileConfig::parse(DEFAULT_TOML).unwrap(), NodeFileConfig::default());
        let s = NodeFileConfig::default().settings().unwrap();
        assert_eq!((s.coordinator, s.backend, s.threads, s.devices), (None, BackendChoice::Auto, None, None));
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
        assert_eq!(s.coordinator, Some("10.0.0.1:4433".parse().unwrap()));
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
