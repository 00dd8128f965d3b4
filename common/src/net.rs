//! The QUIC/TLS client side of the hashgrid protocol and the framing of messages on QUIC streams.
//!
//! Owns: the client endpoint that trusts only the coordinator's pinned certificate (the `--ca`
//! file is the sole trust root, TLS 1.3, ALPN `hashgrid/3`, the ring provider), connecting
//! with a timeout and readable certificate/ALPN errors, `FramedStream` (the length-prefixed
//! frames of `codec` on one bidirectional stream, usable by both sides), `FrameReader` (the one
//! reader of frames from a QUIC stream, one at a time or every frame of a received chunk), the
//! close a receiver answers a bad frame with, and the operator's admin requests. The node
//! service, the `hashgrid` CLI and the coordinator's server loop all use it.
//!
//! `bind_endpoint`: every QUIC endpoint of both sides is bound here, with `UDP_BUFFER_BYTES` asked
//! for its socket's buffers.
//!
//! `Addresses`: the coordinators of a hot-standby pair, and which one to try next.
//!
//! When the peer closes a connection with a reason (a QUIC application close), the reason text
//! travels in `NetError::Closed`, so a caller can print e.g. "coordinator closed the
//! connection: invalid token".

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ConnectionError, ReadError, RecvStream, SendStream, WriteError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError, FrameDecoder};
use crate::message::{ALPN, AdminRequest, AdminResponse, Hello, close_code};

/// The name every client verifies against the pinned certificate.
pub const SERVER_NAME: &str = "hashgrid-coordinator";

/// How long a connection attempt may take, handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a client pings an otherwise quiet connection.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a connection may stay silent before it is considered lost. The client proposes
/// it and QUIC uses the smaller of the two sides' values, so a node notices a coordinator that
/// died without a close frame (`kill -9`, a lost host) within about this long, whatever the
/// coordinator's own (longer) timeout, and moves on to the next address of a pair. Five
/// keep-alives fit in it, so a few lost or late packets do not end a healthy connection; a
/// connection that does end (a peer starved of CPU for a second) loses nothing acknowledged:
/// the node sends its unanswered shares again on the next one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

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
/// The most a `FrameReader` takes from QUIC at once.
const READ_CHUNK: usize = 64 << 10;
/// The receive and send buffers each QUIC socket asks the kernel for. One coordinator socket
/// takes every node's datagrams; with the kernel's default (about 208 KiB on Linux) a burst
/// from many nodes while the process is busy overflows it, and every dropped datagram waits
/// for QUIC's loss recovery (tens of ms) before it is sent again. Linux caps the request at
/// `net.core.rmem_max` / `wmem_max` (docs/operations.md).
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

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
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the coordinator at {0} (timed out after {CONNECT_TIMEOUT:?})")]
    ConnectTimeout(SocketAddr),
    #[error("coordinator certificate is not the pinned one (--ca): {0}")]
    Certificate(String),
    #[error("the peer does not speak hashgrid/3 (no common ALPN protocol)")]
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
    /// Closes `conn` after this error on one of its streams, with the code and reason
    /// docs/protocol.md §5 names: a frame too large, a malformed frame (a stream that ended
    /// inside one included), or another protocol violation.
    pub fn close_connection(&self, conn: &quinn::Connection) {
        let (code, reason) = match self {
            NetError::Codec(CodecError::TooLarge(_)) => (close_code::FRAME_TOO_LARGE, "frame too large".to_string()),
            NetError::Codec(CodecError::Malformed(_) | CodecError::Trailing(_)) | NetError::Truncated => {
                (close_code::MALFORMED_FRAME, format!("malformed frame: {self}"))
            }
            _ => (close_code::PROTOCOL, self.to_string()),
        };
        conn.close(code.into(), reason.as_bytes());
    }

    /// Whether retrying cannot help: the pinned certificate does not match, the protocol is
    /// not spoken, or the coordinator refused our token or our hello's name or version.
    pub fn is_permanent(&self) -> bool {
        match self {
            NetError::BadCa(_) | NetError::TlsConfig(_) | NetError::Certificate(_) | NetError::Alpn => true,
            NetError::Closed { code, .. } => {
                [close_code::INVALID_TOKEN, close_code::INVALID_HELLO].map(u64::from).contains(code)
            }
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

/// A coordinator's address as the operator gives it: `IP:PORT` (`192.0.2.10:4433`,
/// `[2001:db8::1]:4433`) or `HOST:PORT` (`a.example:4433`). A host name is resolved by the
/// system resolver at each connection attempt (`resolve`), so a coordinator whose name moves
/// to another IP is found there; the certificate is still checked against `SERVER_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    Host { name: String, port: u16 },
}

/// A `--coordinator` entry that is neither `IP:PORT` nor `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address: use HOST:PORT or IP:PORT, e.g. a.example:4433 or 192.0.2.10:4433")]
pub struct AddressError(String);

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Ip(addr));
        }
        let bad = || AddressError(s.to_string());
        let (name, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A host name's letters (RFC 1123, plus '_' as resolvers accept it); an IPv6 address
        // without brackets, or with a bad port, is not one.
        let host_name = name.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if port == 0 || !host_name {
            return Err(bad());
        }
        Ok(Address::Host { name: name.to_string(), port })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(addr) => addr.fmt(f),
            Address::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Ip(addr)
    }
}

impl Address {
    /// The socket addresses to try, in the resolver's order (at least one).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, NetError> {
        let (name, port) = match self {
            Address::Ip(addr) => return Ok(vec![*addr]),
            Address::Host { name, port } => (name.as_str(), *port),
        };
        let resolve_error = |source| NetError::Resolve { name: self.to_string(), source };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name, port)).await.map_err(resolve_error)?.collect();
        if found.is_empty() {
            return Err(resolve_error(std::io::Error::other("no address found")));
        }
        Ok(found)
    }
}

/// Connects to the coordinator at `address` (`connect`): resolved now, and when it names
/// several socket addresses (`localhost`: `::1` and `127.0.0.1`), all are tried at once and the
/// first handshake that completes wins, so a family nobody listens on costs no time. The
/// address connected to, and the connection; else the most telling of the errors (one the
/// coordinator or TLS gave before one that only says nobody answered).
pub async fn connect_to(
    endpoint: &quinn::Endpoint,
    address: &Address,
) -> Result<(SocketAddr, quinn::Connection), NetError> {
    let targets = address.resolve().await?;
    let mut attempts = tokio::task::JoinSet::new();
    for target in targets {
        let endpoint = endpoint.clone();
        attempts.spawn(async move { connect(&endpoint, target).await.map(|conn| (target, conn)) });
    }
    let mut error: Option<NetError> = None;
    while let Some(attempt) = attempts.join_next().await {
        match attempt {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(e)) => {
                let silent = |e: &NetError| {
                    matches!(e, NetError::ConnectTimeout(_) | NetError::Lost { .. } | NetError::Connect { .. })
                };
                if error.as_ref().is_none_or(|kept| silent(kept) && !silent(&e)) {
                    error = Some(e);
                }
            }
            // A connection task only ends by returning (none is aborted while the set lives).
            Err(e) => error = error.or(Some(NetError::Stream(e.to_string()))),
        }
    }
    Err(error.expect("at least one address was tried"))
}

/// The addresses of a coordinator, or of a hot-standby pair (`--coordinator a,b`), and which
/// to try next: after a failed connection, the one a standby's close names
/// (`close_code::STANDBY`, added if it is not in the list), else the next one in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    list: Vec<Address>,
    current: usize,
}

impl Addresses {
    /// The list, in the order to try it (each address once); at least one address.
    pub fn new(addrs: impl IntoIterator<Item = Address>) -> Addresses {
        let mut list: Vec<Address> = Vec::new();
        for addr in addrs {
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        assert!(!list.is_empty(), "a coordinator address");
        Addresses { list, current: 0 }
    }

    /// The address to connect to now.
    pub fn current(&self) -> &Address {
        &self.list[self.current]
    }

    /// How many addresses are known.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The connection to `current()` failed with `e`: moves on (see the type's docs). True when
    /// `e` was a standby's refusal naming the active coordinator, which is now `current()`.
    pub fn failed(&mut self, e: &NetError) -> bool {
        let hint: Option<Address> =
            e.close_reason().and_then(|(code, reason)| close_code::standby_hint(code, reason)?.parse().ok());
        let hinted = hint.is_some();
        self.current = match hint {
            Some(active) => self.list.iter().position(|a| *a == active).unwrap_or_else(|| {
                self.list.push(active);
                self.list.len() - 1
            }),
            None => (self.current + 1) % self.list.len(),
        };
        hinted
    }
}

impl Addresses {
    /// At most this many standby hints are followed by one `try_each` (two standbys that name
    /// each other must not loop).
    pub const MAX_HINTS: usize = 3;

    /// A one-shot client's connection policy: `attempt` on each address in turn, one more try
    /// than there are addresses (a coordinator still starting may not answer the first), and
    /// then on the one a standby's refusal names even when that refusal was the last try,
    /// following at most `MAX_HINTS` hints. The
    /// first success; else the last error. An error that `as_net` does not map to a `NetError`
    /// (an answer, not a failed connection) is final.
    pub async fn try_each<T, E, F, Fut>(
        &mut self,
        mut attempt: F,
        as_net: impl Fn(&E) -> Option<&NetError>,
    ) -> Result<(Address, T), E>
    where
        F: FnMut(Address) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let (mut tries, mut hints) = (self.len() + 1, 0);
        loop {
            tries -= 1;
            let addr = self.current().clone();
            let err = match attempt(addr.clone()).await {
                Ok(value) => return Ok((addr, value)),
                Err(err) => err,
            };
            let Some(net) = as_net(&err) else { return Err(err) };
            if self.failed(net) && hints < Self::MAX_HINTS {
                hints += 1;
                tries = tries.max(1);
            }
            if tries == 0 {
                return Err(err);
            }
        }
    }
}

/// A QUIC endpoint on a UDP socket bound to `addr` whose buffers are `UDP_BUFFER_BYTES` (as far
/// as the kernel allows): a server when `server` is given, else a client only. Needs a tokio
/// runtime.
pub fn bind_endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let socket = bind_udp(addr)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime found"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// The UDP socket under `bind_endpoint`: bound to `addr`, buffers of `UDP_BUFFER_BYTES` asked.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), UDP_BUFFER_BYTES)?;
    state.set_send_buffer_size((&socket).into(), UDP_BUFFER_BYTES)?;
    Ok(socket)
}

/// A client endpoint whose only trust root is the certificate(s) in `ca_pem` (the `--ca`
/// file). Binds an unspecified local address: dual-stack `[::]:0` where IPv6 is available (so
/// IPv4 and IPv6 coordinators both work), else `0.0.0.0:0`. Needs a tokio runtime.
pub fn client_endpoint(ca_pem: &[u8]) -> Result<quinn::Endpoint, NetError> {
    let config = client_config(ca_pem)?;
    let mut endpoint = match bind_endpoint(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), None) {
        Ok(endpoint) => endpoint,
        Err(_) => bind_endpoint(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), None).map_err(NetError::Socket)?,
    };
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A client endpoint bound to the unspecified address of `target`'s family.
pub fn client_endpoint_for(ca_pem: &[u8], target: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    let config = client_config(ca_pem)?;
    let local: SocketAddr =
        if target.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let mut endpoint = bind_endpoint(local, None).map_err(NetError::Socket)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The QUIC client configuration: TLS 1.3 with the ring provider, the pinned certificate as
/// the only root, ALPN hashgrid/3 (the current version), keep-alives and the idle timeout.
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

/// The receiving half of a `FramedStream`, and the one reader of frames from a QUIC stream:
/// the chunks QUIC delivers go into a `codec::FrameDecoder`, which yields whole frames (the
/// length prefix checked against the cap before the payload is waited for). `recv` takes one
/// message, `recv_batch` every message of the chunks received so far. Both are cancel-safe:
/// bytes read stay in the decoder.
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    peer: &'static str,
    decoder: FrameDecoder,
}

/// The sending half of a `FramedStream`.
#[derive(Debug)]
pub struct FrameWriter {
    send: SendStream,
    peer: &'static str,
}

/// One bidirectional QUIC stream carrying codec frames both ways.
///
/// `split` it to read in one task and write in another.
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
        FramedStream { reader: FrameReader::new(recv, peer), writer: FrameWriter { send, peer } }
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
    /// Reads frames from `recv`; `peer` names the other side in errors.
    pub fn new(recv: RecvStream, peer: &'static str) -> Self {
        FrameReader { recv, peer, decoder: FrameDecoder::new() }
    }

    /// Accepts frames of at most `max_frame` bytes from now on (`codec::MAX_FRAME` at most).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.decoder.set_max_frame(max_frame);
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, NetError> {
        loop {
            if let Some(msg) = self.decoder.next()? {
                return Ok(Some(msg));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Every message of the chunks received so far, at least one (a busy receiver handles a
    /// chunk's frames together); `Ok(None)` when the peer finished the stream cleanly between
    /// frames. On an error, the messages decoded before it come with it: they are the peer's.
    pub async fn recv_batch<T: DeserializeOwned>(&mut self) -> Result<Option<Vec<T>>, (Vec<T>, NetError)> {
        let mut msgs = Vec::new();
        loop {
            loop {
                match self.decoder.next() {
                    Ok(Some(msg)) => msgs.push(msg),
                    Ok(None) => break,
                    Err(e) => return Err((msgs, e.into())),
                }
            }
            if !msgs.is_empty() {
                return Ok(Some(msgs));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err((msgs, e)),
            }
        }
    }

    /// Feeds the next chunk to the decoder; `false` at the end of the stream between frames.
    async fn fill(&mut self) -> Result<bool, NetError> {
        match self.recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                self.decoder.extend(&chunk.bytes);
                Ok(true)
            }
            Ok(None) if self.decoder.is_empty() => Ok(false),
            Ok(None) => Err(NetError::Truncated),
            Err(e) => Err(NetError::from_read(e, self.peer)),
        }
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
    addr: impl Into<Address>,
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
    /// Connects (`connect_to`; the token is checked with the first request).
    pub async fn connect(endpoint: &quinn::Endpoint, addr: impl Into<Address>, token: &str) -> Result<Self, NetError> {
        let (_, conn) = connect_to(endpoint, &addr.into()).await?;
        Ok(AdminClient { conn, token: token.to_string() })
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
        self.conn.close(close_code::NORMAL.into(), b"done");
    }
}

#[cfg(test)]
mod tests {
    //! The frame reader on real QUIC streams over loopback (TLS and all).

    use quinn::crypto::rustls::QuicServerConfig;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::codec::MAX_FRAME;
    use crate::message::{NodeMessage, Share};

    /// Linux grants at most `net.core.rmem_max` (`wmem_max`) and reports twice what it grants.
    #[cfg(target_os = "linux")]
    #[test]
    fn quic_sockets_ask_for_large_buffers() {
        let limit = |name: &str| -> usize {
            let path = format!("/proc/sys/net/core/{name}");
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().unwrap()
        };
        let socket = bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
        let recv = state.recv_buffer_size((&socket).into()).unwrap();
        let send = state.send_buffer_size((&socket).into()).unwrap();
        assert!(recv >= UDP_BUFFER_BYTES.min(limit("rmem_max")), "receive buffer {recv}");
        assert!(send >= UDP_BUFFER_BYTES.min(limit("wmem_max")), "send buffer {send}");
    }

    #[test]
    fn addresses_go_where_a_standby_points_else_round_the_list() {
        use crate::message::close_code;
        let (a, b, c): (Address, Address, Address) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), "127.0.0.1:3".parse().unwrap());
        let mut addrs = Addresses::new([a.clone(), b.clone()]);
        assert_eq!(addrs.current(), &a);
        addrs.failed(&NetError::NoReply);
        assert_eq!(addrs.current(), &b);
        addrs.failed(&NetError::NoReply);
        assert_eq!(addrs.current(), &a);
        let standby = |active: &str| NetError::Closed {
            peer: "coordinator",
            code: close_code::STANDBY.into(),
            reason: format!("{}{active}", close_code::STANDBY_REASON),
        };
        addrs.failed(&standby("127.0.0.1:2"));
        assert_eq!(addrs.current(), &b, "the standby's hint, not the next in turn");
        addrs.failed(&standby("127.0.0.1:3"));
        assert_eq!((addrs.current(), addrs.len()), (&c, 3), "a new address is added");
        addrs.failed(&standby("unknown"));
        assert_eq!(addrs.current(), &a, "no usable hint: the next in turn");
        let closed =
            NetError::Closed { peer: "coordinator", code: close_code::FAILED.into(), reason: "127.0.0.1:2".into() };
        addrs.failed(&closed);
        assert_eq!(addrs.current(), &b);
    }

    #[tokio::test]
    async fn one_shot_clients_follow_a_standby_hint_even_on_their_last_try() {
        use crate::message::close_code;
        let (standby, active): (Address, Address) = ("127.0.0.1:2".parse().unwrap(), "127.0.0.1:1".parse().unwrap());
        let refusal = |to: &Address| NetError::Closed {
            peer: "coordinator",
            code: close_code::STANDBY.into(),
            reason: format!("{}{to}", close_code::STANDBY_REASON),
        };
        // Given only the standby, which does not answer the first try (still starting), then
        // refuses with its hint on the last try: the active one is still tried.
        let mut tried = Vec::new();
        let mut addrs = Addresses::new([standby.clone()]);
        let got = addrs
            .try_each(
                |addr| {
                    tried.push(addr.clone());
                    let got = match tried.len() {
                        1 => Err(NetError::NoReply),
                        2 => Err(refusal(&active)),
                        _ => Ok(addr),
                    };
                    async move { got }
                },
                |e| Some(e),
            )
            .await;
        assert_eq!(got.unwrap(), (active.clone(), active.clone()));
        assert_eq!(tried, [standby.clone(), standby.clone(), active.clone()]);
        // Two standbys naming each other: bounded, and the last refusal is the error.
        let mut tries = 0;
        let mut addrs = Addresses::new([standby.clone()]);
        let got: Result<(Address, ()), NetError> = addrs
            .try_each(
                |addr| {
                    tries += 1;
                    let err = refusal(if addr == standby { &active } else { &standby });
                    async move { Err(err) }
                },
                |e| Some(e),
            )
            .await;
        assert!(got.unwrap_err().close_reason().is_some());
        assert_eq!(tries, 1 + Addresses::MAX_HINTS);
        // An answer that is not a failed connection is final.
        let mut tries = 0;
        let got: Result<(Address, ()), &str> = Addresses::new([standby, active])
            .try_each(
                |_| {
                    tries += 1;
                    async { Err("refused") }
                },
                |_| None,
            )
            .await;
        assert_eq!((got, tries), (Err("refused"), 1));
    }

    #[test]
    fn addresses_are_ip_or_host_and_port() {
        let ip: Address = "192.0.2.10:4433".parse().unwrap();
        assert_eq!(ip, Address::Ip("192.0.2.10:4433".parse().unwrap()));
        assert_eq!("[2001:db8::1]:4433".parse::<Address>().unwrap().to_string(), "[2001:db8::1]:4433");
        let host: Address = " a.example:4433".parse().unwrap();
        assert_eq!(host, Address::Host { name: "a.example".into(), port: 4433 });
        assert_eq!(host.to_string(), "a.example:4433");
        for bad in
            ["", "a.example", "a.example:", ":4433", "a.example:0", "a.example:70000", "2001:db8::1", "a..b:1", "a b:1"]
        {
            let err = bad.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains("HOST:PORT"), "{bad:?}: {err}");
        }
    }

    /// A server of the hashgrid ALPN on `ip` (port chosen by the system) and its certificate.
    fn server(ip: std::net::IpAddr) -> (quinn::Endpoint, String) {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
        (quinn::Endpoint::server(config, SocketAddr::from((ip, 0))).unwrap(), certified.cert.pem())
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_and_the_family_that_answers_wins() {
        // `localhost` names ::1 and 127.0.0.1 (in either order); only the IPv4 one listens.
        let (server, ca) = server(Ipv4Addr::LOCALHOST.into());
        let port = server.local_addr().unwrap().port();
        let accepting = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            conn.closed().await;
        });
        let endpoint = client_endpoint(ca.as_bytes()).unwrap();
        let address: Address = format!("localhost:{port}").parse().unwrap();
        let (addr, conn) = tokio::time::timeout(STEP, connect_to(&endpoint, &address)).await.unwrap().unwrap();
        assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        conn.close(0u32.into(), b"");
        accepting.await.unwrap();
        // A name nobody resolves (RFC 6761 reserves .invalid) is one clear error.
        let err = connect_to(&endpoint, &"nowhere.invalid:4433".parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, NetError::Resolve { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot resolve nowhere.invalid:4433: "), "{err}");
    }

    /// Long enough for any step here; a reader that waits when it should not fails after it.
    const STEP: Duration = Duration::from_secs(20);

    /// One stream of a real connection: the client's sending end, and the server's side, which
    /// QUIC reveals once the first bytes arrive (`accepted`).
    struct Pipe {
        send: SendStream,
        server: JoinHandle<(quinn::Connection, FrameReader)>,
        client: quinn::Connection,
        _endpoints: [quinn::Endpoint; 2],
    }

    impl Pipe {
        async fn open() -> Pipe {
            let (server, ca) = server(Ipv4Addr::LOCALHOST.into());
            let addr = server.local_addr().unwrap();
            let accepting = server.clone();
            let server_side = tokio::spawn(async move {
                let conn = accepting.accept().await.unwrap().await.unwrap();
                let (_send, recv) = conn.accept_bi().await.unwrap();
                (conn, FrameReader::new(recv, "node"))
            });
            let client_endpoint = client_endpoint_for(ca.as_bytes(), addr).unwrap();
            let client = connect(&client_endpoint, addr).await.unwrap();
            let (send, _recv) = client.open_bi().await.unwrap();
            Pipe { send, server: server_side, client, _endpoints: [server, client_endpoint] }
        }

        async fn write(&mut self, bytes: &[u8]) {
            self.send.write_all(bytes).await.unwrap();
        }

        async fn accepted(&mut self) -> (quinn::Connection, FrameReader) {
            tokio::time::timeout(STEP, &mut self.server).await.expect("the server sees the stream").unwrap()
        }
    }

    fn share(id: u64) -> NodeMessage {
        NodeMessage::Share(Share { id, assignment: 3, job: 9, version: 0x2000_0000, time: 1_700_000_000, nonce: 42 })
    }

    fn frames(ids: std::ops::Range<u64>) -> Vec<u8> {
        ids.flat_map(|id| codec::encode(&share(id)).unwrap()).collect()
    }

    async fn recv(reader: &mut FrameReader) -> Result<Option<NodeMessage>, NetError> {
        tokio::time::timeout(STEP, reader.recv()).await.expect("the reader answers without more bytes")
    }

    #[tokio::test]
    async fn frames_cut_anywhere_arrive_whole_then_the_clean_end() {
        let mut pipe = Pipe::open().await;
        let bytes = frames(0..3);
        // Cuts inside the first prefix, inside a payload, and across the second frame's end.
        for piece in [&bytes[..2], &bytes[2..11], &bytes[11..40], &bytes[40..]] {
            pipe.write(piece).await;
            tokio::task::yield_now().await;
        }
        let (_conn, mut reader) = pipe.accepted().await;
        for id in 0..3 {
            assert_eq!(recv(&mut reader).await.unwrap(), Some(share(id)));
        }
        pipe.send.finish().unwrap();
        assert!(recv(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_batch_holds_every_frame_received() {
        let mut pipe = Pipe::open().await;
        pipe.write(&frames(0..500)).await;
        pipe.send.finish().unwrap();
        let (_conn, mut reader) = pipe.accepted().await;
        let mut batches = Vec::new();
        while let Some(batch) =
            tokio::time::timeout(STEP, reader.recv_batch::<NodeMessage>()).await.unwrap().map_err(|(_, e)| e).unwrap()
        {
            assert!(!batch.is_empty());
            batches.push(batch);
        }
        // A QUIC packet holds dozens of these frames: a batch per frame would mean no batching.
        assert!(batches.len() < 500 && batches.iter().any(|b| b.len() > 1), "{} batches", batches.len());
        let all: Vec<NodeMessage> = batches.into_iter().flatten().collect();
        assert_eq!(all, (0..500).map(share).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_oversized_prefix_is_refused_before_its_payload_is_awaited() {
        let mut pipe = Pipe::open().await;
        let mut bytes = frames(0..2);
        bytes.extend(((MAX_FRAME + 1) as u32).to_be_bytes());
        // The stream stays open and no payload follows: the reader must not wait for one.
        pipe.write(&bytes).await;
        let (conn, mut reader) = pipe.accepted().await;
        let mut got = Vec::new();
        let err = loop {
            match tokio::time::timeout(STEP, reader.recv_batch::<NodeMessage>()).await.expect("no wait for a payload") {
                Ok(Some(batch)) => got.extend(batch),
                Ok(None) => panic!("the stream is still open"),
                Err((batch, e)) => {
                    got.extend(batch);
                    break e;
                }
            }
        };
        // The frames before the bad one are the peer's.
        assert_eq!(got, vec![share(0), share(1)]);
        assert!(matches!(err, NetError::Codec(CodecError::TooLarge(n)) if n == MAX_FRAME + 1), "{err}");
        err.close_connection(&conn);
        match tokio::time::timeout(STEP, pipe.client.closed()).await.unwrap() {
            ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code.into_inner(), u64::from(close_code::FRAME_TOO_LARGE));
                assert_eq!(&close.reason[..], b"frame too large");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_a_malformed_frame() {
        let mut pipe = Pipe::open().await;
        let bytes = frames(0..2);
        pipe.write(&bytes[..bytes.len() - 3]).await;
        pipe.send.finish().unwrap();
        let (conn, mut reader) = pipe.accepted().await;
        assert_eq!(recv(&mut reader).await.unwrap(), Some(share(0)));
        let err = recv(&mut reader).await.unwrap_err();
        assert!(matches!(err, NetError::Truncated), "{err}");
        err.close_connection(&conn);
        match tokio::time::timeout(STEP, pipe.client.closed()).await.unwrap() {
            ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code.into_inner(), u64::from(close_code::MALFORMED_FRAME));
                assert!(close.reason.starts_with(b"malformed frame: "), "{close:?}");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
    }
}
