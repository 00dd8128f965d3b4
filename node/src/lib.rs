//! hashgrid-node: the SHA-256d nonce search backends (GPU through wgpu, CPU threads) and the
//! node service that runs them for a coordinator, and its configuration file.

pub mod config;
pub mod net;
pub mod search;
pub mod service;
