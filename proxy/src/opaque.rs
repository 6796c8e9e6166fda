//! Opaque TCP: connections the proxy carries as bytes rather than as HTTP — a protocol
//! that is not HTTP, a port the mesh declares opaque, an app's `CONNECT` tunnel, a
//! connection upgraded to WebSocket. Each is a plain async function per connection, read
//! top to bottom: decide, connect, copy. Between two meshed proxies the bytes still cross
//! mTLS, with SPIFFE ids checked both ways (ALPN `seam-tcp` tells the callee's inbound to
//! copy them to the app rather than read HTTP); a destination the mesh does not know is
//! passed through as plain TCP to where it was going. A half-close travels (one side may
//! finish sending and still read), and both directions' bytes are counted by peer
//! identity.

mod forward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::metrics::{Direction, Metrics};
use crate::telemetry::CountedIo;

pub use forward::Forwarder;

/// How long a connection to the app or a passthrough destination may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other side of an opaque stream, for its metrics.
#[derive(Clone, Debug)]
pub struct Flow {
    pub direction: Direction,
    /// The service the stream belongs to (the callee's, on both sides).
    pub service: Arc<str>,
    /// The peer's SPIFFE id, or `plaintext` for a peer without one.
    pub peer: Arc<str>,
}

/// Copies bytes both ways between `local` (the app's side) and `remote` (the peer's side)
/// until both directions are done, passing on a half-close; bytes are counted as sent to
/// and received from the peer under `flow`.
pub async fn copy<L, R>(mut local: L, remote: R, flow: &Flow, metrics: &Metrics)
where
    L: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let (received, sent) = metrics.opaque_flow(flow);
    let mut remote = CountedIo::counting(remote, received, sent);
    if let Err(err) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
        tracing::debug!(service = %flow.service, peer = %flow.peer, error = %err, "an opaque stream ended with an error");
    }
}

/// Passes a connection for a destination the mesh does not know through as plain TCP,
/// counted in `seam_tcp_passthrough_total`.
pub async fn passthrough<L>(local: L, destination: SocketAddr, metrics: &Metrics)
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    metrics.tcp_passthrough.inc();
    let remote = match connect(destination).await {
        Ok(remote) => remote,
        Err(err) => {
            tracing::debug!(%destination, error = %err, "cannot pass a connection through");
            return;
        }
    };
    let flow = Flow {
        direction: Direction::Outbound,
        service: PASSTHROUGH.clone(),
        peer: PASSTHROUGH.clone(),
    };
    copy(local, remote, &flow, metrics).await;
}

/// Copies an accepted opaque stream to the local app at `app`.
pub async fn to_app<S>(stream: S, app: SocketAddr, flow: &Flow, metrics: &Metrics)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match connect(app).await {
        Ok(app_side) => copy(app_side, stream, flow, metrics).await,
        Err(err) => {
            tracing::debug!(%app, error = %err, "cannot reach the application for an opaque stream");
        }
    }
}

/// How metrics label a stream that is not the mesh's (passed through).
static PASSTHROUGH: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| "passthrough".into());

async fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {CONNECT_TIMEOUT:?}"),
            )
        })??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that reads until the client finished sending, then answers with what it
    /// read, reversed: it only works if the client's half-close reached it.
    async fn reverse_after_half_close() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut read = Vec::new();
            tcp.read_to_end(&mut read).await.unwrap();
            read.reverse();
            tcp.write_all(&read).await.unwrap();
        });
        address
    }

    #[tokio::test]
    async fn a_half_close_crosses_and_the_answer_still_comes_back() {
        let server = reverse_after_half_close().await;
        let metrics = Metrics::new();
        let (mut client, proxy_side) = tokio::io::duplex(1024);
        let copying = tokio::spawn(async move {
            passthrough(proxy_side, server, &metrics).await;
            metrics.encode()
        });
        client.write_all(b"seam").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"maes");
        let text = copying.await.unwrap();
        assert!(text.contains("seam_tcp_passthrough_total 1"), "{text}");
        for (flow, bytes) in [("sent", 4), ("received", 4)] {
            let line = format!(
                "seam_opaque_bytes_total{{direction=\"outbound\",service=\"passthrough\",peer=\"passthrough\",flow=\"{flow}\"}} {bytes}"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_destination_ends_the_connection() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let metrics = Metrics::new();
        let (mut client, proxy_side) = tokio::io::duplex(1024);
        passthrough(proxy_side, closed, &metrics).await;
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());
    }
}
