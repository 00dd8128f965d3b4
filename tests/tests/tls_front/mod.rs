//! A TLS front for the test Stratum pool, for the tests of `stratum+ssl://` pools
//! (`mine.rs`, `upstream.rs`): rustls before a plain TCP pool.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;

/// A TLS front for `backend` on 127.0.0.1 (certificate for `localhost`): each TLS connection
/// is piped to a plain one to `backend`. Returns the runtime that runs it, its address and
/// its certificate (PEM).
pub fn tls_front(backend: SocketAddr) -> (tokio::runtime::Runtime, SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (runtime, addr, certified.cert.pem())
}
