//! A raw QUIC peer of a real coordinator, for the tests that speak to it below the node and the
//! CLI (`auth.rs`, `unauthenticated.rs`): a connection that trusts its certificate, and the
//! close the coordinator ends it with.

use std::time::Duration;

use hashgrid_common::net;
use hashgrid_tests::Coordinator;

/// The longest a test waits for the coordinator to close a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the coordinator that trusts its certificate.
pub async fn raw_connection(coordinator: &Coordinator) -> (quinn::Endpoint, quinn::Connection) {
    let ca = std::fs::read(coordinator.data_dir.join("cert.pem")).unwrap();
    let endpoint = net::client_endpoint_for(&ca, coordinator.addr).expect("a client endpoint");
    let conn = net::connect(&endpoint, coordinator.addr).await.expect("a connection");
    (endpoint, conn)
}

/// Waits for the coordinator to close `conn`; its close code and reason.
pub async fn close_reason(conn: &quinn::Connection) -> (u64, String) {
    let err = tokio::time::timeout(CLOSE_TIMEOUT, conn.closed()).await.expect("the coordinator closes the connection");
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned())
        }
        other => panic!("expected the coordinator to close the connection with a reason, got: {other}"),
    }
}
