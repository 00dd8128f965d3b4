//! hashgrid-common: the Bitcoin domain types (header, target, difficulty, midstate) and the
//! coordinator ↔ node protocol (messages and their framed codec). Pure data and arithmetic: no
//! I/O by default.
//!
//! Four opt-in features add the I/O plumbing both binaries share: `net` (the QUIC client
//! endpoint, framed streams, the admin client), `http` (the HTTP server behind `/metrics` and
//! the status page), `config` (the TOML configuration loader) and `cli` (command lines, usage
//! errors in one line).

pub mod codec;
pub mod config;
pub mod header;
pub mod message;
pub mod sha256;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod stratum;
#[cfg(feature = "stratum-net")]
pub mod stratum_net;
pub mod target;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "net")]
pub mod net;

pub use header::{BlockHash, Hash256, Header, HeaderError};
pub use sha256::{Midstate, sha256d};
pub use target::{CompactTarget, Target, TargetError};
