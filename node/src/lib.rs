//! hashgrid-node: the SHA-256d nonce search backends (GPU through wgpu, CPU threads) and the
//! node service that runs them for a coordinator, and its configuration file. `http` is the
//! small HTTP server behind `--http` (metrics here, metrics and the status page on the
//! coordinator).

pub mod config;
pub mod http;
pub mod net;
pub mod search;
pub mod service;
