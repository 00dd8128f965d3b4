//! The coordinator's data directory secrets and its QUIC/TLS server configuration.
//!
//! Owns: creating the data directory (mode 0700) and, on first start, the self-signed
//! certificate and key (`cert.pem`, `key.pem`) and the two join tokens (`node.token`,
//! `admin.token`), every file mode 0600 from the moment it exists; reusing them on later
//! starts; the certificate fingerprint operators compare; the rustls/quinn server config
//! (TLS 1.3 only, ring provider, ALPN hashgrid/3 and the previous hashgrid/2 and hashgrid/1) with the
//! transport limits that bound what one connection can make the coordinator buffer; and
//! constant-time token comparison.
//!
//! Nodes and operators pin `cert.pem` (their `--ca`) and verify it under the name
//! `hashgrid_common::net::SERVER_NAME`, which the certificate carries as a DNS SAN.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hashgrid_common::codec::{MAX_FRAME, PREFIX};
use hashgrid_common::message::ALPN_ACCEPTED;
use hashgrid_common::net::SERVER_NAME;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a connection may stay silent before the server drops it (clients ping every
/// second).
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bidirectional streams a peer may have open at once: a node uses one, the operator
/// CLI one per request in flight.
pub const MAX_STREAMS: u32 = 16;

/// How many bytes one stream, and all of a connection's streams together, may have received
/// and not yet read: the largest legitimate frame (the codec's cap and its length prefix).
/// What a peer sends beyond that waits for the coordinator to read, so a peer that never
/// authenticates holds at most this much in QUIC's buffers (plus the partial hello its task
/// reads, at most `limits::MAX_HELLO`).
pub const RECEIVE_WINDOW: u32 = (PREFIX + MAX_FRAME) as u32;

/// The names and addresses the certificate is valid for.
const SUBJECT_ALT_NAMES: [&str; 4] = [SERVER_NAME, "localhost", "127.0.0.1", "::1"];

/// Why the data directory or the TLS configuration could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate the coordinator certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{} exists but {} does not; restore it, or remove both to make a new certificate (nodes must then pin the new one)", present.display(), missing.display())]
    IncompleteKeyPair { present: PathBuf, missing: PathBuf },
    #[error("{} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io { path: path.to_path_buf(), source }
    }
}

/// The coordinator's data directory and the secrets in it.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub path: PathBuf,
    /// The self-signed certificate nodes and operators pin.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// The token nodes join with.
    pub node_token: PathBuf,
    /// The token operators' admin requests carry.
    pub admin_token: PathBuf,
    fingerprint: String,
}

impl DataDir {
    /// Opens the data directory at `path`, creating it (mode 0700) and whatever secrets it
    /// lacks: the certificate and key on first start, each token if missing. Existing files
    /// are reused, never replaced.
    pub fn open_or_init(path: impl AsRef<Path>) -> Result<DataDir, TlsError> {
        let path = path.as_ref().to_path_buf();
        DirBuilder::new().recursive(true).mode(0o700).create(&path).map_err(TlsError::io(&path))?;
        let dir = DataDir {
            cert_pem: path.join("cert.pem"),
            key_pem: path.join("key.pem"),
            node_token: path.join("node.token"),
            admin_token: path.join("admin.token"),
            path,
            fingerprint: String::new(),
        };
        match (dir.cert_pem.exists(), dir.key_pem.exists()) {
            (true, true) => {}
            (false, false) => {
                let certified = rcgen::generate_simple_self_signed(SUBJECT_ALT_NAMES.map(String::from).to_vec())?;
                // The key first: a certificate without its key would be useless.
                write_private(&dir.key_pem, certified.signing_key.serialize_pem().as_bytes())?;
                write_private(&dir.cert_pem, certified.cert.pem().as_bytes())?;
                tracing::info!(path = %dir.cert_pem.display(), "generated the coordinator certificate");
            }
            (true, false) => {
                return Err(TlsError::IncompleteKeyPair { present: dir.cert_pem, missing: dir.key_pem });
            }
            (false, true) => {
                return Err(TlsError::IncompleteKeyPair { present: dir.key_pem, missing: dir.cert_pem });
            }
        }
        for token in [&dir.node_token, &dir.admin_token] {
            if !token.exists() {
                let secret: [u8; 32] = rand::random();
                write_private(token, format!("{}\n", hex::encode(secret)).as_bytes())?;
            }
        }
        let cert = load_cert(&dir.cert_pem)?;
        let fingerprint = hex::encode(Sha256::digest(cert.as_ref()));
        Ok(DataDir { fingerprint, ..dir })
    }

    /// The SHA-256 of the certificate's DER, lowercase hex without colons, for operators to
    /// compare with the `--ca` file they hand out.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Reads a token file: its contents without surrounding whitespace.
    pub fn read_token(path: &Path) -> Result<String, TlsError> {
        let text = std::fs::read_to_string(path).map_err(TlsError::io(path))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TlsError::EmptyToken { path: path.to_path_buf() });
        }
        Ok(token.to_string())
    }
}

/// Writes a new file that only its owner may read, atomically: the contents go to a
/// temporary file created with mode 0600, which is then renamed into place.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(TlsError::io(&tmp))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(TlsError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TlsError::io(path))
}

fn load_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(TlsError::io(path))?;
    CertificateDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), detail: format!("no PEM certificate: {e}") })
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(TlsError::io(path))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), detail: format!("no PEM private key: {e}") })
}

/// The QUIC server configuration: the data directory's certificate and key, TLS 1.3 only with
/// the ring provider, ALPN hashgrid/3, 2 or 1 (a client offering anything else is refused in the
/// handshake), no client certificates (tokens authenticate), a 10 s idle timeout, at most
/// `MAX_STREAMS` bidirectional streams and no unidirectional ones, and receive windows of
/// `RECEIVE_WINDOW` per stream and per connection.
pub fn server_config(dir: &DataDir) -> Result<quinn::ServerConfig, TlsError> {
    let cert = load_cert(&dir.cert_pem)?;
    let key = load_key(&dir.key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", dir.key_pem.display())))?;
    tls.alpn_protocols = ALPN_ACCEPTED.iter().map(|alpn| alpn.to_vec()).collect();
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        SERVER_IDLE_TIMEOUT.as_millis() as u32,
    ))));
    // The protocol uses bidirectional streams only.
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    transport.stream_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    transport.receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The TLS configuration of the Stratum server's `stratum+ssl://` port: the same certificate
/// and key as QUIC, TLS 1.2 and 1.3 (miners' TLS stacks are often old), no ALPN, no client
/// certificates (the node token authenticates).
pub fn stratum_tls_config(dir: &DataDir) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, key) = (load_cert(&dir.cert_pem)?, load_key(&dir.key_pem)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", dir.key_pem.display())))?;
    Ok(Arc::new(tls))
}

/// Compares two tokens in constant time (for equal lengths; a length mismatch is `false`).
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::unix::fs::PermissionsExt;

    use hashgrid_common::codec::CodecError;
    use hashgrid_common::message::{AdminRequest, AdminResponse, Hello, NodeMessage, PageRequest, Share, close_code};
    use hashgrid_common::net::{self, FramedStream, NetError};

    use super::*;

    fn server(dir: &DataDir) -> quinn::Endpoint {
        quinn::Endpoint::server(server_config(dir).unwrap(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap()
    }

    fn ca(dir: &DataDir) -> Vec<u8> {
        std::fs::read(&dir.cert_pem).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let dir = DataDir::open_or_init(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        for file in [&dir.cert_pem, &dir.key_pem, &dir.node_token, &dir.admin_token] {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        let node_token = DataDir::read_token(&dir.node_token).unwrap();
        let admin_token = DataDir::read_token(&dir.admin_token).unwrap();
        assert_eq!(node_token.len(), 64);
        assert!(node_token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(node_token, admin_token);
        assert_eq!(dir.fingerprint().len(), 64);

        let again = DataDir::open_or_init(&path).unwrap();
        assert_eq!(again.fingerprint(), dir.fingerprint());
        assert_eq!(std::fs::read(&again.key_pem).unwrap(), std::fs::read(&dir.key_pem).unwrap());
        assert_eq!(DataDir::read_token(&again.node_token).unwrap(), node_token);
        assert_eq!(DataDir::read_token(&again.admin_token).unwrap(), admin_token);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 4);
    }

    #[test]
    fn a_missing_key_is_not_silently_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path()).unwrap();
        std::fs::remove_file(&dir.key_pem).unwrap();
        let err = DataDir::open_or_init(tmp.path()).unwrap_err();
        assert!(matches!(err, TlsError::IncompleteKeyPair { .. }), "{err}");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_equal("abc123", "abc123"));
        assert!(!tokens_equal("abc123", "abc124"));
        assert!(!tokens_equal("abc123", "abc1234"));
        assert!(!tokens_equal("", "a"));
        assert!(tokens_equal("", ""));
    }

    #[tokio::test]
    async fn frames_round_trip_over_loopback_quic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path()).unwrap();
        let server = server(&dir);
        let addr = server.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (send, recv) = conn.accept_bi().await.unwrap();
            let mut stream = FramedStream::new(send, recv);
            let hello: Hello = stream.recv().await.unwrap().unwrap();
            let msg: NodeMessage = stream.recv().await.unwrap().unwrap();
            stream.send(&AdminResponse::Error(format!("{hello:?} {msg:?}"))).await.unwrap();
            stream.finish();
            // A clean end of stream reads as `None`.
            assert!(stream.recv::<NodeMessage>().await.unwrap().is_none());
            conn.closed().await;
        });
        let endpoint = net::client_endpoint(&ca(&dir)).unwrap();
        let conn = net::connect(&endpoint, addr).await.unwrap();
        let mut stream = FramedStream::open(&conn).await.unwrap();
        let share = NodeMessage::Share(Share { id: 1, assignment: 2, job: 3, version: 4, time: 5, nonce: 6 });
        stream.send(&Hello::Admin { token: "t".into() }).await.unwrap();
        stream.send(&share).await.unwrap();
        stream.finish();
        let reply: AdminResponse = stream.recv().await.unwrap().unwrap();
        assert_eq!(reply, AdminResponse::Error(format!("{:?} {share:?}", Hello::Admin { token: "t".into() })));
        assert!(stream.recv::<AdminResponse>().await.unwrap().is_none());
        conn.close(0u32.into(), b"bye");
        served.await.unwrap();
    }

    #[tokio::test]
    async fn admin_requests_share_one_connection_and_bad_tokens_show_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path()).unwrap();
        let admin_token = DataDir::read_token(&dir.admin_token).unwrap();
        let server = server(&dir);
        let addr = server.local_addr().unwrap();
        let expected = admin_token.clone();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let expected = expected.clone();
                tokio::spawn(async move {
                    let conn = incoming.await.unwrap();
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        let mut stream = FramedStream::new(send, recv);
                        match stream.recv::<Hello>().await.unwrap() {
                            Some(Hello::Admin { token }) if tokens_equal(&token, &expected) => {}
                            _ => {
                                conn.close(close_code::INVALID_TOKEN.into(), b"invalid token");
                                return;
                            }
                        }
                        let req: AdminRequest = stream.recv().await.unwrap().unwrap();
                        stream.send(&AdminResponse::Error(format!("{req:?}"))).await.unwrap();
                        stream.finish();
                    }
                });
            }
        });
        let endpoint = net::client_endpoint(&ca(&dir)).unwrap();
        let reply = net::admin_request(&endpoint, addr, &admin_token, &AdminRequest::Status).await.unwrap();
        assert_eq!(reply, AdminResponse::Error("Status".into()));

        let client = net::AdminClient::connect(&endpoint, addr, &admin_token).await.unwrap();
        for req in [
            AdminRequest::AccountList,
            AdminRequest::Status,
            AdminRequest::JobShow { job: 7, page: PageRequest::FIRST },
        ] {
            assert_eq!(client.request(&req).await.unwrap(), AdminResponse::Error(format!("{req:?}")));
        }
        client.close();

        let err = net::admin_request(&endpoint, addr, "wrong", &AdminRequest::Status).await.unwrap_err();
        assert_eq!(err.to_string(), "coordinator closed the connection: invalid token");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn a_different_certificate_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path().join("real")).unwrap();
        let other = DataDir::open_or_init(tmp.path().join("other")).unwrap();
        let server = server(&dir);
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
        });
        let endpoint = net::client_endpoint(&ca(&other)).unwrap();
        let err = net::connect(&endpoint, addr).await.unwrap_err();
        assert!(matches!(err, NetError::Certificate(_)), "{err:?}");
        assert!(err.to_string().starts_with("coordinator certificate is not the pinned one (--ca)"), "{err}");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn an_alpn_mismatch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path()).unwrap();
        let server = server(&dir);
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
        });
        // A client trusting the right certificate but offering another protocol version.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&ca(&dir)).unwrap()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"hashgrid/0".to_vec()];
        let config =
            quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
        endpoint.set_default_client_config(config);
        let err = net::connect(&endpoint, addr).await.unwrap_err();
        assert!(matches!(err, NetError::Alpn), "{err:?}");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_allocation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_init(tmp.path()).unwrap();
        let server = server(&dir);
        let addr = server.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (send, recv) = conn.accept_bi().await.unwrap();
            let mut stream = FramedStream::new(send, recv);
            let err = stream.recv::<Hello>().await.unwrap_err();
            assert!(matches!(err, NetError::Codec(CodecError::TooLarge(_))), "{err}");
            conn.close(0u32.into(), b"");
        });
        let endpoint = net::client_endpoint(&ca(&dir)).unwrap();
        let conn = net::connect(&endpoint, addr).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        served.await.unwrap();
    }
}
