//! What the inbound and outbound listeners share: the HTTP/1.1 + HTTP/2 server settings,
//! what a new connection's first bytes say, hop-by-hop header handling, and draining open
//! connections on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderName};
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::detect::{self, Detection, Protocol};
use crate::refusal_log::RefusalLog;
use crate::spawn_boxed::SpawnBoxed;

/// A client must send its request headers within this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (HTTP/1) or header list (HTTP/2) accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Open connections one listener accepts before it closes new ones at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// hyper refuses a smaller HTTP/1 read buffer.
const MIN_HEADER_BUFFER: usize = 8192;
/// The first pause after a failed accept; it doubles while failures go on, up to the max.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Limits every listener applies to its clients (`--header-read-timeout`,
/// `--max-header-bytes`, `--max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// One listener's budget of open connections: a connection holds a permit until it
/// closes; with none left, a new connection is closed at once (and counted by the caller).
#[derive(Debug, Clone)]
pub struct ConnectionLimit(Arc<Semaphore>);

impl ConnectionLimit {
    pub fn new(limits: &ServerLimits) -> Self {
        Self(Arc::new(Semaphore::new(limits.max_connections)))
    }

    /// A permit for one more connection, or `None` at the limit.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The header that tells an app which mesh identity called it.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("x-seam-client-id");

/// The server for other proxies' mTLS connections: as `http_server`, but with no header
/// read timeout, which hyper also applies while a kept-alive connection waits for its
/// next request: it would close the callers' pooled connections after 10 s of quiet,
/// racing their next request, and make them handshake again. The peers are mesh members
/// that proved who they are; the handshake has its own timeout.
pub fn peer_http_server(limits: &ServerLimits) -> auto::Builder<SpawnBoxed> {
    let mut builder = http_server(limits);
    builder.http1().header_read_timeout(None);
    builder
}

/// A server for HTTP/1.1 and HTTP/2 (told apart by the HTTP/2 preface).
pub fn http_server(limits: &ServerLimits) -> auto::Builder<SpawnBoxed> {
    let mut builder = auto::Builder::new(SpawnBoxed);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The next connection on `listener`, or `None` once `stop` is cancelled. An accept error
/// (such as running out of file descriptors) is retried after a pause that doubles while
/// the errors go on, so a listener out of descriptors waits instead of spinning a core;
/// the errors are logged a few per window (see `RefusalLog`).
pub async fn next_connection(
    listener: &TcpListener,
    stop: &CancellationToken,
    name: &'static str,
    log: &RefusalLog,
) -> Option<(TcpStream, SocketAddr)> {
    let mut pause = Backoff::new(ACCEPT_RETRY_FIRST, ACCEPT_RETRY_MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(err) => {
                    let wait = pause.next_delay();
                    if log.admit("accept_failed") {
                        tracing::warn!(listener = name, error = %err, retry_in = ?wait, "accept failed");
                    }
                    tokio::time::sleep(wait).await;
                }
            },
        }
    }
}

/// What the client speaks, from the bytes it has sent so far (one peek: TLS is told by
/// its first byte, and plaintext HTTP is read on by hyper). A client that sends nothing
/// within `limit` (the header read timeout) is refused, with the reason: HTTP version
/// detection would otherwise wait for ever on a client that connects and sends nothing.
pub async fn first_bytes(tcp: &TcpStream, limit: Duration) -> Result<Detection, &'static str> {
    let mut prefix = [0u8; detect::MAX_PREFIX];
    match tokio::time::timeout(limit, tcp.peek(&mut prefix)).await {
        Ok(Ok(0)) => Err("closed_by_peer"),
        Ok(Ok(read)) => Ok(detect::detect(&prefix[..read])),
        Ok(Err(_)) => Err("io"),
        Err(_) => Err("timeout"),
    }
}

/// What a connection's first bytes showed within the wait for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// The bytes tell the protocol (`Unknown`: neither TLS nor HTTP).
    Protocol(Protocol),
    /// Nothing came within the wait: a protocol where the server speaks first, or bytes
    /// that never became more than a prefix of HTTP.
    Silent,
    /// The client closed the connection (or it failed) before sending anything.
    Closed,
}

/// How often the first bytes are looked at again while they are still the start of more
/// than one protocol.
const DETECT_POLL: Duration = Duration::from_millis(5);

/// Waits up to `limit` for a connection's first bytes to tell its protocol, without
/// consuming them. Unlike [`first_bytes`], it never hands undecided bytes on: a connection
/// that stays silent or ambiguous is, after `limit`, opaque.
pub async fn detect_protocol(tcp: &TcpStream, limit: Duration) -> FirstBytes {
    let deadline = tokio::time::Instant::now() + limit;
    let mut prefix = [0u8; detect::MAX_PREFIX];
    loop {
        let read = match tokio::time::timeout_at(deadline, tcp.peek(&mut prefix)).await {
            Ok(Ok(0) | Err(_)) => return FirstBytes::Closed,
            Ok(Ok(read)) => read,
            Err(_) => return FirstBytes::Silent,
        };
        match detect::detect(&prefix[..read]) {
            Detection::Known(protocol) => return FirstBytes::Protocol(protocol),
            Detection::NeedMore if tokio::time::Instant::now() + DETECT_POLL < deadline => {
                // A peek returns at once while the same bytes are there: look again soon.
                tokio::time::sleep(DETECT_POLL).await;
            }
            Detection::NeedMore => return FirstBytes::Silent,
        }
    }
}

/// `server` held to the HTTP version the connection already showed (its first bytes, or
/// the ALPN of its TLS handshake), so hyper-util does not read the start of the
/// connection again to find out: that probe cost every new connection a partial read
/// and parse of its first request. With `None` hyper-util tells them apart itself.
pub fn speaking(
    server: auto::Builder<SpawnBoxed>,
    protocol: Option<Protocol>,
) -> auto::Builder<SpawnBoxed> {
    match protocol {
        Some(Protocol::Http1) => server.http1_only(),
        Some(Protocol::Http2) => server.http2_only(),
        _ => server,
    }
}

/// The headers that describe one connection (RFC 9110 §7.6.1), besides any the
/// `Connection` header names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes the headers that describe one connection and must not be forwarded,
/// including any the `Connection` header names. `te: trailers` stays: gRPC needs it.
/// Most messages carry none of them, so one pass over the names comes first; when it
/// finds one, only the names present are removed (each removal hashes its name).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let any = headers
        .keys()
        .any(|name| name == header::TE || HOP_BY_HOP.contains(name));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || named.contains(name))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Serves one connection, held to what `opening` (the bytes a peek saw first) tells.
    fn serve_after_peeking(opening: &[u8]) -> DuplexStream {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let server = speaking(
            http_server(&ServerLimits::default()),
            detect::detect(opening).known(),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<_>| async move {
                let answer = format!("{} {:?}", request.method(), request.version());
                Ok::<_, std::convert::Infallible>(Response::new(answer))
            });
            let _ = server
                .serve_connection(TokioIo::new(server_side), service)
                .await;
        });
        client
    }

    #[tokio::test]
    async fn a_connection_held_to_its_first_bytes_serves_the_whole_request() {
        // The peek may see only the start of a request; "P" could still be POST, PUT,
        // PATCH or the HTTP/2 preface, so that one is left to hyper-util to tell.
        for (method, seen) in [("POST", 1), ("PUT", 2), ("GET", 1), ("GET", 8)] {
            let request = format!("{method} /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            let mut client = serve_after_peeking(&request.as_bytes()[..seen]);
            client.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200")
                    && answer.ends_with(&format!("{method} HTTP/1.1")),
                "{method} after a peek of {seen} bytes: {answer:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_that_opened_with_the_http2_preface_speaks_http2() {
        let client = serve_after_peeking(detect::HTTP2_PREFACE);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get("http://a/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "GET HTTP/2.0");
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_request_head_is_cut_off_when_the_header_read_timeout_ends() {
        let mut client = serve_after_peeking(b"GET / HTTP/1.1\r\nHo");
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(started.elapsed(), HEADER_READ_TIMEOUT);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer:?}"
        );
    }

    #[test]
    fn strips_hop_by_hop_headers_and_keeps_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::TE, "trailers".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "te"]);
        headers.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert!(headers.get(header::TE).is_none());
    }

    #[test]
    fn names_the_connection_header_lists_are_matched_without_case_or_spaces() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, "Close , X-Private".parse().unwrap());
        headers.append(header::CONNECTION, "X-Other".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("x-other", "2".parse().unwrap());
        headers.insert(
            "x-privat",
            "kept: only a whole name matches".parse().unwrap(),
        );
        headers.insert(header::HOST, "api".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-privat"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped() {
        for name in HOP_BY_HOP {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), "x".parse().unwrap());
            headers.insert(header::HOST, "api".parse().unwrap());
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers.len(), 1, "{name} left in {headers:?}");
        }
    }
}
