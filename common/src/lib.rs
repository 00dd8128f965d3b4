//! hashgrid-common: the Bitcoin domain types (header, target, difficulty, midstate) and the
//! coordinator ↔ node protocol (messages and their framed codec). Pure data and arithmetic: no I/O.

pub mod codec;
pub mod config;
pub mod header;
pub mod message;
pub mod sha256;
pub mod stratum;
pub mod target;

pub use header::{BlockHash, Hash256, Header, HeaderError};
pub use sha256::{Midstate, sha256d};
pub use target::{CompactTarget, Target, TargetError};
