//! Feature `stratum-net`: opening a byte stream to a Stratum V1 pool, plain TCP or TLS over
//! rustls (trusting the system's roots, or the certificates of a `--pool-ca` file). The one
//! connector of `hashgrid-node mine` and the coordinator's upstream sessions; what flows over
//! the stream is `stratum`'s business.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::stratum::PoolUrl;

pub use tokio_rustls::TlsConnector;

/// A byte stream to a pool, plain or TLS.
pub trait PoolStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PoolStream for T {}

/// A TLS connector trusting `ca_pem`'s certificates, or the system's roots; the error says
/// what is wrong with the file (or that the system has no roots).
pub fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, String> {
    let config = client_config(ca_pem).map_err(|e| match ca_pem {
        None => format!("{e}; give the pool's CA with --pool-ca"),
        Some(_) => e,
    })?;
    Ok(tokio_rustls::TlsConnector::from(config))
}

/// A TLS client configuration (rustls, ring) that verifies servers against `ca_pem`'s
/// certificates, or the system's roots; the error says what is wrong with the file (or that
/// the system has no roots). The coordinator's PostgreSQL connections use it too.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
                roots.add(cert).map_err(|e| e.to_string())?;
            }
            if roots.is_empty() {
                return Err("no certificate in the file".into());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err("no system root certificates found".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `url` (on `port` instead of its own, if given) within `timeout`: TCP, then TLS
/// with `tls` when the URL asks for it (a TLS URL without a connector is an error).
pub async fn open(
    url: &PoolUrl,
    port: Option<u16>,
    tls: Option<&tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Result<Box<dyn PoolStream>, String> {
    let addr = url.addr(port);
    let connect = async {
        let tcp = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        if !url.tls {
            return Ok(Box::new(tcp) as Box<dyn PoolStream>);
        }
        let connector = tls.ok_or("no TLS configuration for a stratum+ssl pool")?;
        let name = ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
        let stream = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(stream) as Box<dyn PoolStream>)
    };
    tokio::time::timeout(timeout, connect).await.unwrap_or_else(|_| Err("timed out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ca_must_hold_certificates() {
        assert!(tls_connector(Some(b"not pem")).is_err());
    }
}
