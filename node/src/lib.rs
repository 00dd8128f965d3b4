//! hashgrid-node: the SHA-256d nonce search backends (GPU through wgpu, CPU threads) and the
//! node service that runs them for a coordinator, and its configuration file. The QUIC client,
//! the framing and the HTTP server behind `--http` live in `hashgrid_common` (features `net`
//! and `http`), shared with the coordinator.

pub mod config;
pub mod search;
pub mod service;
