//! The local app's side: HTTP clients that talk to a proxy's outbound listener the ways
//! the contract allows — HTTP/1.1 with the service in `Host`, HTTP/1.1 absolute-form (the
//! outbound as an `HTTP_PROXY`), HTTP/2 with prior knowledge (h2c), and a pooled
//! keep-alive client for load. Every call has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

/// How long one request through the mesh may take before the test calls it failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the echo server's answer).
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response {} is not JSON: {}", self.status, self.text()))
    }
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        version,
        headers,
        body,
    })
}

/// One HTTP/1.1 request on a new connection to `outbound`, sent exactly as built (so an
/// absolute-form URI goes out in absolute form).
pub async fn http1_send<B>(outbound: SocketAddr, request: Request<B>) -> anyhow::Result<Reply>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(outbound)
            .await
            .with_context(|| format!("cannot connect to {outbound}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        read_reply(response).await
    })
    .await
    .with_context(|| format!("no answer from {outbound} within {REQUEST_TIMEOUT:?}"))?
}

/// `GET <path>` over HTTP/1.1 to `outbound` with `Host: <host>` and extra headers.
/// An h2c gRPC channel to a proxy's outbound listener whose `:authority` names `service`,
/// so the proxy routes the calls there.
pub async fn grpc_channel(
    outbound: SocketAddr,
    service: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))?
        .origin(format!("http://{service}").parse()?)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .context("h2c connection to the outbound listener")
}

pub async fn http1_get(
    outbound: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut request = Request::get(path).header(http::header::HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    http1_send(outbound, request.body(Empty::new())?).await
}

/// `POST <path>` over HTTP/1.1 to `outbound` with `Host: <host>` and `body`.
pub async fn http1_post(
    outbound: SocketAddr,
    host: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Reply> {
    let request = Request::post(path)
        .header(http::header::HOST, host)
        .body(http_body_util::Full::new(body))?;
    http1_send(outbound, request).await
}

/// `GET <url>` in absolute form (`GET http://b/path HTTP/1.1`), as an app using the
/// outbound listener as its HTTP proxy sends it.
pub async fn http1_get_absolute(outbound: SocketAddr, url: &str) -> anyhow::Result<Reply> {
    let uri: http::Uri = url.parse()?;
    let host = uri
        .authority()
        .context("absolute URL without authority")?
        .to_string();
    let request = Request::get(uri)
        .header(http::header::HOST, host)
        .body(Empty::new())?;
    http1_send(outbound, request).await
}

/// `GET http://<authority><path>` over HTTP/2 with prior knowledge (h2c) on a new
/// connection to `outbound`; `:authority` names the service.
pub async fn h2c_get(
    outbound: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    H2cConnection::connect(outbound)
        .await?
        .get(authority, path, headers)
        .await
}

/// One HTTP/2 prior-knowledge connection to an outbound listener; clones share it, so
/// concurrent requests become concurrent streams.
#[derive(Clone)]
pub struct H2cConnection {
    outbound: SocketAddr,
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl H2cConnection {
    pub async fn connect(outbound: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(outbound))
            .await
            .with_context(|| format!("connecting to {outbound} timed out"))?
            .with_context(|| format!("cannot connect to {outbound}"))?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        Ok(Self { outbound, sender })
    }

    /// `GET http://<authority><path>` as one stream of this connection.
    pub async fn get(
        &self,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut request =
            Request::get(format!("http://{authority}{path}")).version(Version::HTTP_2);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let mut sender = self.sender.clone();
        tokio::time::timeout(REQUEST_TIMEOUT, async move {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            read_reply(response).await
        })
        .await
        .with_context(|| {
            format!(
                "no h2c answer from {} within {REQUEST_TIMEOUT:?}",
                self.outbound
            )
        })?
    }
}

/// A connector that dials one fixed address whatever URI it is asked for.
#[derive(Clone, Debug)]
pub struct FixedConnector {
    addr: SocketAddr,
}

impl tower::Service<http::Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let addr = self.addr;
        Box::pin(async move { TcpStream::connect(addr).await.map(TokioIo::new) })
    }
}

/// A pooled HTTP/1.1 keep-alive client whose every connection goes to one outbound
/// listener, whatever host the request names (the way an app with the proxy as its
/// local hop behaves).
#[derive(Clone)]
pub struct AppClient {
    client: Client<FixedConnector, Empty<Bytes>>,
}

impl AppClient {
    pub fn new(outbound: SocketAddr) -> Self {
        let connector = FixedConnector { addr: outbound };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client }
    }

    /// `GET http://<host><path>`: origin-form with `Host: <host>`.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<Reply> {
        let request = Request::get(format!("http://{host}{path}")).body(Empty::new())?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .context("no answer within the request timeout")??;
        read_reply(response).await
    }
}
