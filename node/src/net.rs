//! The QUIC/TLS client side of the hashgrid protocol and the framing of messages on QUIC streams.
//!
//! Owns: the client endpoint that trusts only the coordinator's pinned certificate (the `--ca`
//! file is the sole trust root, TLS 1.3, ALPN `hashgrid/2`, the ring provider), connecting
//! with a timeout and readable certificate/ALPN errors, `FramedStream` (the length-prefixed
//! frames of `hashgrid_common::codec` on one bidirectional stream, usable by both sides) and
//! the operator's admin requests. The node service, the `hashgrid` CLI and the coordinator's
//! server loop all use it.
//!
//! When the peer closes a connection with a reason (a QUIC application close), the reason text
//! travels in `NetError::Closed`, so a caller can print e.g. "coordinator closed the
//! connection: invalid token".

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hashgrid_common::codec::{self, CodecError, PREFIX};
use hashgrid_common::message::{ALPN, AdminRequest, AdminResponse, Hello};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ConnectionError, ReadError, ReadExactError, RecvStream, SendStream, WriteError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The name every client verifies against the pinned certificate.
pub const SERVER_NAME: &str = "hashgrid-coordinator";

/// The application close code of a normal close (shutdown, done).
pub const CLOSE_NORMAL: u32 = 0x00;
/// The application close code the coordinator closes unauthenticated peers with.
pub const CLOSE_INVALID_TOKEN: u32 = 0x10;
/// The application close code the coordinator refuses a hello's name or version with.
pub const CLOSE_INVALID_HELLO: u32 = 0x15;

/// How long a connection attempt may take, handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a client pings an otherwise quiet connection.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a connection may stay silent before it is considered lost. The client proposes
/// it and QUIC uses the smaller of the two sides' values, so a node notices a coordinator that
/// died without a close frame (`kill -9`, a lost host) within about this long, whatever the
/// coordinator's own (longer) timeout. Six keep-alives fit in it, so a few lost packets do not
/// end a healthy connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS alerts (RFC 8446 §6) that say the server's certificate was refused.
const CERTIFICATE_ALERTS: [u8; 8] = [
    42, // bad_certificate
    43, // unsupported_certificate
    44, // certificate_revoked
    45, // certificate_expired
    46, // certificate_unknown
    48, // unknown_ca
    49, // access_denied
    51, // decrypt_error (a signature that does not verify)
];
/// The TLS alert for "no application protocol in common" (ALPN).
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// What went wrong with a frame, for the close code a server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProblem {
    /// The length prefix exceeds `codec::MAX_FRAME`.
    TooLarge,
    /// The payload is not one well-formed message, or the stream ended inside a frame.
    Malformed,
}

/// Why talking to the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the pinned certificate (--ca) is unusable: {0}")]
    BadCa(String),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("no answer from the coordinator at {0} (timed out after {CONNECT_TIMEOUT:?})")]
    ConnectTimeout(SocketAddr),
    #[error("coordinator certificate is not the pinned one (--ca): {0}")]
    Certificate(String),
    #[error("the peer does not speak hashgrid/2 (no common ALPN protocol)")]
    Alpn,
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("{peer} closed the connection: {}", describe_close(*.code, .reason))]
    Closed { peer: &'static str, code: u64, reason: String },
    #[error("connection to the {peer} lost: {source}")]
    Lost {
        peer: &'static str,
        #[source]
        source: ConnectionError,
    },
    #[error("the {peer} reset the stream (code {code})")]
    StreamReset { peer: &'static str, code: u64 },
    #[error("stream error: {0}")]
    Stream(String),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the coordinator ended the stream without a reply")]
    NoReply,
}

impl NetError {
    /// Whether the error is a bad frame, and which kind (for the close code to answer with).
    pub fn frame_problem(&self) -> Option<FrameProblem> {
        match self {
            NetError::Codec(CodecError::TooLarge(_)) => Some(FrameProblem::TooLarge),
            NetError::Codec(CodecError::Malformed(_) | CodecError::Trailing(_)) | NetError::Truncated => {
                Some(FrameProblem::Malformed)
            }
            _ => None,
        }
    }

    /// Whether retrying cannot help: the pinned certificate does not match, the protocol is
    /// not spoken, or the coordinator refused our token or our hello's name or version.
    pub fn is_permanent(&self) -> bool {
        match self {
            NetError::BadCa(_) | NetError::TlsConfig(_) | NetError::Certificate(_) | NetError::Alpn => true,
            NetError::Closed { code, .. } => [CLOSE_INVALID_TOKEN, CLOSE_INVALID_HELLO].map(u64::from).contains(code),
            _ => false,
        }
    }

    /// The close code and reason, when the peer closed the connection on purpose.
    pub fn close_reason(&self) -> Option<(u64, &str)> {
        match self {
            NetError::Closed { code, reason, .. } => Some((*code, reason)),
            _ => None,
        }
    }

    /// Classifies a connection error: TLS failures get their own variants, an application
    /// close keeps its reason text.
    pub fn from_connection(err: ConnectionError, peer: &'static str) -> NetError {
        match err {
            ConnectionError::ApplicationClosed(close) => NetError::Closed {
                peer,
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            // Our own TLS stack refused the handshake: usually the server's certificate.
            ConnectionError::TransportError(ref e) => match tls_alert(e.code) {
                Some(alert) if CERTIFICATE_ALERTS.contains(&alert) => NetError::Certificate(e.reason.clone()),
                Some(NO_APPLICATION_PROTOCOL) => NetError::Alpn,
                Some(_) => NetError::Handshake(e.reason.clone()),
                None => NetError::Lost { peer, source: err },
            },
            // The peer's TLS stack refused the handshake.
            ConnectionError::ConnectionClosed(ref close) => match tls_alert(close.error_code) {
                Some(NO_APPLICATION_PROTOCOL) => NetError::Alpn,
                Some(_) => NetError::Handshake(format!("refused by the {peer}: {close}")),
                None => NetError::Lost { peer, source: err },
            },
            other => NetError::Lost { peer, source: other },
        }
    }

    fn from_read(err: ReadError, peer: &'static str) -> NetError {
        match err {
            ReadError::ConnectionLost(e) => NetError::from_connection(e, peer),
            ReadError::Reset(code) => NetError::StreamReset { peer, code: code.into_inner() },
            other => NetError::Stream(other.to_string()),
        }
    }

    fn from_write(err: WriteError, peer: &'static str) -> NetError {
        match err {
            WriteError::ConnectionLost(e) => NetError::from_connection(e, peer),
            WriteError::Stopped(code) => NetError::StreamReset { peer, code: code.into_inner() },
            other => NetError::Stream(other.to_string()),
        }
    }
}

fn describe_close(code: u64, reason: &str) -> String {
    if reason.is_empty() { format!("code {code:#x}") } else { reason.to_string() }
}

/// The TLS alert carried by a QUIC CRYPTO_ERROR code (0x100..=0x1ff), if it is one.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    (0x100..=0x1ff).contains(&code).then_some((code & 0xff) as u8)
}

/// A client endpoint whose only trust root is the certificate(s) in `ca_pem` (the `--ca`
/// file). Binds an unspecified local address: dual-stack `[::]:0` where IPv6 is available (so
/// IPv4 and IPv6 coordinators both work), else `0.0.0.0:0`. Needs a tokio runtime.
pub fn client_endpoint(ca_pem: &[u8]) -> Result<quinn::Endpoint, NetError> {
    let config = client_config(ca_pem)?;
    let mut endpoint = match quinn::Endpoint::client(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))) {
        Ok(endpoint) => endpoint,
        Err(_) => quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).map_err(NetError::Socket)?,
    };
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A client endpoint bound to the unspecified address of `target`'s family.
pub fn client_endpoint_for(ca_pem: &[u8], target: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    let config = client_config(ca_pem)?;
    let local: SocketAddr =
        if target.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let mut endpoint = quinn::Endpoint::client(local).map_err(NetError::Socket)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The QUIC client configuration: TLS 1.3 with the ring provider, the pinned certificate as
/// the only root, ALPN hashgrid/2 (the current version), keep-alives and the idle timeout.
pub fn client_config(ca_pem: &[u8]) -> Result<quinn::ClientConfig, NetError> {
    client_config_speaking(ca_pem, ALPN)
}

/// `client_config` offering `alpn` instead: a client of another protocol version (tests of the
/// coordinator's compatibility use `ALPN_PREVIOUS`).
pub fn client_config_speaking(ca_pem: &[u8], alpn: &[u8]) -> Result<quinn::ClientConfig, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| NetError::BadCa(format!("not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| NetError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(NetError::BadCa("no PEM certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::TlsConfig(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(idle_timeout()));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// `IDLE_TIMEOUT` as QUIC wants it.
pub fn idle_timeout() -> quinn::IdleTimeout {
    quinn::IdleTimeout::from(quinn::VarInt::from_u32(IDLE_TIMEOUT.as_millis() as u32))
}

/// Connects to the coordinator at `addr`, verifying its certificate against the pinned one
/// under `SERVER_NAME`. Gives up after `CONNECT_TIMEOUT`.
pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
    let connecting = endpoint.connect(addr, SERVER_NAME).map_err(|source| NetError::Connect { addr, source })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(NetError::from_connection(e, "coordinator")),
        Err(_) => Err(NetError::ConnectTimeout(addr)),
    }
}

/// The receiving half of a `FramedStream`.
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    peer: &'static str,
}

/// The sending half of a `FramedStream`.
#[derive(Debug)]
pub struct FrameWriter {
    send: SendStream,
    peer: &'static str,
}

/// One bidirectional QUIC stream carrying codec frames both ways.
///
/// `recv` is not cancel-safe (a frame may be half read): in a `select!`, run it in its own
/// task, or `split` the stream and give the reader to a task.
#[derive(Debug)]
pub struct FramedStream {
    reader: FrameReader,
    writer: FrameWriter,
}

impl FramedStream {
    /// Wraps an accepted or opened stream; errors name the other side "peer".
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        Self::with_peer(send, recv, "peer")
    }

    /// Wraps a stream; `peer` names the other side in errors ("coordinator", "node").
    pub fn with_peer(send: SendStream, recv: RecvStream, peer: &'static str) -> Self {
        FramedStream { reader: FrameReader { recv, peer }, writer: FrameWriter { send, peer } }
    }

    /// Opens a new bidirectional stream to the coordinator on `conn`.
    pub async fn open(conn: &quinn::Connection) -> Result<Self, NetError> {
        let (send, recv) = conn.open_bi().await.map_err(|e| NetError::from_connection(e, "coordinator"))?;
        Ok(Self::with_peer(send, recv, "coordinator"))
    }

    /// Sends one message as one frame.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), NetError> {
        self.writer.send(msg).await
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, NetError> {
        self.reader.recv().await
    }

    /// Finishes the sending direction (no more frames); already-written frames still arrive.
    pub fn finish(&mut self) {
        self.writer.finish();
    }

    /// Splits into a reader and a writer, so one task can read while another writes.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

impl FrameReader {
    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    /// The length prefix is checked against the frame cap before the payload is allocated.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, NetError> {
        let mut prefix = [0u8; PREFIX];
        match self.recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(ReadExactError::FinishedEarly(_)) => return Err(NetError::Truncated),
            Err(ReadExactError::ReadError(e)) => return Err(NetError::from_read(e, self.peer)),
        }
        let len = codec::frame_len(prefix)?;
        let mut payload = vec![0u8; len];
        match self.recv.read_exact(&mut payload).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(_)) => return Err(NetError::Truncated),
            Err(ReadExactError::ReadError(e)) => return Err(NetError::from_read(e, self.peer)),
        }
        Ok(Some(codec::decode(&payload)?))
    }
}

impl FrameWriter {
    /// Sends one message as one frame.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), NetError> {
        let frame = codec::encode(msg)?;
        self.send.write_all(&frame).await.map_err(|e| NetError::from_write(e, self.peer))
    }

    /// Finishes the stream (no more frames); already-written frames still arrive.
    pub fn finish(&mut self) {
        // Only fails if the stream is already finished or reset: nothing left to do then.
        let _ = self.send.finish();
    }
}

/// One admin request on a fresh connection: connect, open a stream, send `Hello::Admin` and
/// the request, read the one response. The connection is closed afterwards.
pub async fn admin_request(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    token: &str,
    req: &AdminRequest,
) -> Result<AdminResponse, NetError> {
    let client = AdminClient::connect(endpoint, addr, token).await?;
    let response = client.request(req).await;
    client.close();
    response
}

/// An operator's connection to the coordinator, carrying one request per stream.
#[derive(Debug)]
pub struct AdminClient {
    conn: quinn::Connection,
    token: String,
}

impl AdminClient {
    /// Connects (the token is checked with the first request).
    pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr, token: &str) -> Result<Self, NetError> {
        Ok(AdminClient { conn: connect(endpoint, addr).await?, token: token.to_string() })
    }

    /// Wraps an established connection.
    pub fn new(conn: quinn::Connection, token: &str) -> Self {
        AdminClient { conn, token: token.to_string() }
    }

    /// Sends one request on its own stream and reads its response.
    pub async fn request(&self, req: &AdminRequest) -> Result<AdminResponse, NetError> {
        let mut stream = FramedStream::open(&self.conn).await?;
        stream.send(&Hello::Admin { token: self.token.clone() }).await?;
        stream.send(req).await?;
        stream.finish();
        match stream.recv::<AdminResponse>().await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(self.closed_reason().unwrap_or(NetError::NoReply)),
            // A reset stream often means the connection is being closed: prefer its reason.
            Err(e @ NetError::StreamReset { .. }) => Err(self.closed_reason().unwrap_or(e)),
            Err(e) => Err(e),
        }
    }

    /// The connection's close reason, once it is closed.
    fn closed_reason(&self) -> Option<NetError> {
        self.conn.close_reason().map(|e| NetError::from_connection(e, "coordinator"))
    }

    /// The underlying connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection normally.
    pub fn close(&self) {
        self.conn.close(CLOSE_NORMAL.into(), b"done");
    }
}
