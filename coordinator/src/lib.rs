//! hashgrid-coordinator: owns the sub-accounts and their computing-capability standards and
//! decides which node hashes for whom.
//!
//! `core` is the scheduling and accounting state machine (events and the time in, commands
//! out; no I/O). `service` is the tokio shell around it: QUIC, SQLite, timers, admin API.
//! `config` reads the coordinator's TOML file.

pub mod amount;
pub mod config;
pub mod core;
pub mod service;
