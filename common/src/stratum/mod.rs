//! Stratum V1, sans I/O: the pieces that hashgrid's upstream pool client, the standalone
//! `hashgrid-node mine` miner and the coordinator's Stratum server share. Nothing here opens a
//! socket or reads a clock; callers feed bytes and times in and take lines and events out.
//!
//! # Layout
//! - [`codec`]: JSON-RPC lines (line cap, [`LineDecoder`], ids, errors, the [`Message`] envelope);
//! - [`method`]: the typed methods (`mining.notify`, `mining.submit`, …) and their caps;
//! - [`difficulty`]: pool difficulty → share target, exactly as the pool wrote it in decimal;
//! - [`job`]: a notify plus extranonces → coinbase, merkle root and [`Header`](crate::Header);
//! - [`share`]: the share verifier (job, time window, version mask, target, duplicate) and the
//!   Stratum error codes 20–25;
//! - [`extranonce`]: the coordinator's carving of extranonce2 into `[slot][counter]`;
//! - [`url`]: pool addresses (`stratum+tcp://`, `stratum+ssl://`);
//! - [`client`]: the client session state machine (configure, subscribe, authorize, jobs,
//!   submits, reconnects, silence);
//! - [`server`]: the server session state machine, one per miner connection (configure,
//!   subscribe, authorize, jobs, share checks, limits, invalid-share escalation);
//! - [`vardiff`]: per-miner variable difficulty.
//!
//! The byte orders, the carving and the error codes are written up in docs/protocol.md,
//! "Stratum V1 mapping".

pub mod client;
pub mod codec;
pub mod difficulty;
pub mod extranonce;
pub mod job;
pub mod method;
pub mod server;
pub mod share;
pub mod url;
pub mod vardiff;

pub use client::{ClientConfig, ClientEvent, ClientSession, ClientState, SubmitOutcome};
pub use codec::{Id, Line, LineDecoder, MAX_LINE, Message, Response, RpcError};
pub use difficulty::share_target;
pub use extranonce::{Carving, ExtranonceSpace};
pub use job::Job;
pub use method::{Configure, ConfigureResult, Method, Notify, Submit, SubscribeResult};
pub use server::{MinerShare, Password, ServerConfig, ServerEvent, ServerJob, ServerSession};
pub use share::{Accepted, Reject, ShareVerifier};
pub use url::{PoolUrl, PoolUrlError};
pub use vardiff::{RatePoint, Vardiff, VardiffConfig};

/// Why a Stratum line, job or request could not be used. A session that meets one of these
/// from its peer closes the connection with the message as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StratumError {
    #[error("line of {len} bytes exceeds the {max}-byte cap")]
    LineTooLong { len: usize, max: usize },
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("not a Stratum message: {0}")]
    Shape(&'static str),
    #[error("{method}: bad {field}: {reason}")]
    Param { method: String, field: &'static str, reason: String },
    #[error("merkle branch of {count} entries exceeds the cap of {max}")]
    BranchTooLong { count: usize, max: usize },
    #[error("coinbase of {len} bytes exceeds the cap of {max}")]
    CoinbaseTooLarge { len: usize, max: usize },
    #[error("extranonce of {len} bytes exceeds the cap of {max}")]
    ExtranonceTooLong { len: usize, max: usize },
    #[error("extranonce2 has {got} bytes, the job wants {expected}")]
    Extranonce2Size { expected: usize, got: usize },
    #[error("difficulty {0} gives no target in 1..2^256")]
    Difficulty(String),
    #[error("extranonce space exhausted: {0}")]
    Exhausted(&'static str),
    #[error("bad configuration: {0}")]
    Config(&'static str),
}
