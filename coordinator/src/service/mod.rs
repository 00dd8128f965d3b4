//! The service shell: translates QUIC connections, the SQLite store and timers into core
//! events and carries out the core's commands.

pub mod admin;
pub mod records;
pub mod server;
pub mod store;
pub mod tls;
