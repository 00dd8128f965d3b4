//! A minimal HTTP/1.1 server for read-only pages: Prometheus metrics (`/metrics`) on the node
//! and the coordinator, and the coordinator's status page (`/`). Shared by both binaries.
//!
//! Owns: binding the TCP listener (port 0 picks a free port; `HttpServer::local_addr` says
//! which), one task per connection (hyper, HTTP/1.1 only), and the request shape the pages
//! see: the path of a `GET` or `HEAD`, nothing else. Any other method is answered 405, and a
//! handler answers every path (404 for ones it does not know). The server stops accepting when
//! its `shutdown` future resolves; connections already open finish their requests.
//!
//! Bounded against clients that hold connections: at most `MAX_CONNECTIONS` are served at once
//! (more wait in the listen backlog, unaccepted); a connection must send a request's headers
//! within `HEADER_TIMEOUT` of waiting for one (which also ends a kept-alive connection idle
//! that long); and no connection lasts longer than `MAX_CONNECTION_TIME`.
//!
//! Nothing here parses bodies or headers: the pages take no input but the path.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

/// The content type of Prometheus metrics as `prometheus-client` encodes them (OpenMetrics
/// text, which Prometheus scrapes natively).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of an HTML page.
pub const HTML: &str = "text/html; charset=utf-8";
/// The content type of plain text (errors).
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers, counted from when the server
/// waits for them: a silent or kept-alive idle connection is closed after this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any one connection is served (one that never reads its answer, say).
pub const MAX_CONNECTION_TIME: Duration = Duration::from_secs(60);

/// Why the HTTP endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// One answer: a status, a content type and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    pub fn ok(content_type: &'static str, body: String) -> Page {
        Page { status: 200, content_type, body }
    }

    pub fn not_found() -> Page {
        Page { status: 404, content_type: TEXT, body: "not found\n".into() }
    }

    /// 503: the page's source is gone (the service is stopping).
    pub fn unavailable(why: &str) -> Page {
        Page { status: 503, content_type: TEXT, body: format!("{why}\n") }
    }
}

/// A bound listener, not yet serving.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Binds `addr` (port 0: a free port).
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| HttpError { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpError { addr, source })?;
        Ok(HttpServer { listener, local_addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `handler(path)` for every `GET` and `HEAD` until `shutdown` resolves. Spawn it.
    pub async fn serve<H, F>(self, handler: H, shutdown: impl Future<Output = ()>)
    where
        H: Fn(String) -> F + Send + Sync + 'static,
        F: Future<Output = Page> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // A free slot first: while all are taken, new connections wait unaccepted.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                () = &mut shutdown => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        debug!("HTTP accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(respond(&*handler, req).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(MAX_CONNECTION_TIME, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, "HTTP connection ended: {e}"),
                    Err(_) => debug!(%peer, "HTTP connection closed after {MAX_CONNECTION_TIME:?}"),
                }
            });
        }
    }
}

/// Routes one request to the handler by its path (the query ignored).
async fn respond<H, F>(handler: &H, req: Request<Incoming>) -> Response<Full<Bytes>>
where
    H: Fn(String) -> F,
    F: Future<Output = Page>,
{
    let head = req.method() == Method::HEAD;
    let page = if req.method() == Method::GET || head {
        handler(req.uri().path().to_string()).await
    } else {
        Page { status: 405, content_type: TEXT, body: "only GET and HEAD\n".into() }
    };
    let body = if head { Bytes::new() } else { Bytes::from(page.body) };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_paths_and_refuses_other_methods() {
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(
            |path: String| async move {
                match path.as_str() {
                    "/hello" => Page::ok(TEXT, "hi <there>".into()),
                    _ => Page::not_found(),
                }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let ok = get(addr, "GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("content-type: text/plain; charset=utf-8") && ok.ends_with("hi <there>"), "{ok}");
        let missing = get(addr, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let head = get(addr, "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200") && !head.contains("there"), "{head}");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn silent_connections_are_closed_after_the_header_timeout() {
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.serve(|_path: String| async { Page::not_found() }, std::future::pending()));
        // More silent connections than the cap, and one that sent half its headers.
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 8 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        silent.push(partial);
        // Each is closed by the header timeout: those past the cap wait for a slot, then for
        // their own timeout. The guard only tells that apart from never, from hyper's default
        // (30 s) and from `MAX_CONNECTION_TIME`.
        let guard = HEADER_TIMEOUT * 3;
        for mut stream in silent {
            let mut out = Vec::new();
            let closed = tokio::time::timeout(guard, stream.read_to_end(&mut out)).await;
            assert!(closed.is_ok(), "a silent connection was held open");
        }
        // And the server still answers.
        let ok = get(addr, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 404"), "{ok}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape_html("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
