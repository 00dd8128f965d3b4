//! The service shell: translates QUIC connections, the SQLite store and timers into core
//! events and carries out the core's commands. `http` serves Prometheus metrics (`metrics`)
//! and the status page (`status_page`) when `serve --http` asks for them.

pub mod admin;
pub mod backlog;
pub mod history;
pub mod http;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod records;
pub mod server;
pub mod status_page;
pub mod store;
pub mod stratum;
pub mod tls;
pub mod upstream;
mod upstream_store;
