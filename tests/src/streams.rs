//! Apps that speak something other than plain HTTP requests, for the opaque-TCP and
//! upgrade tests: a real WebSocket server (tungstenite) that echoes every message and
//! pushes one of its own every few messages; a line echo server (the client speaks
//! first); a greeter that speaks first (as an SMTP or MySQL server does) and then echoes.
//! Each listens on an address the test gives (inside a network namespace, where the test
//! binds it there) and serves until dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The greeting the greeter sends before it reads anything.
pub const GREETING: &str = "220 seam-test greeter ready";
/// The WebSocket server pushes a message of its own after every this many.
pub const PUSH_EVERY: usize = 10;

/// A running app; dropping it stops it.
pub struct StreamApp {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl StreamApp {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// A WebSocket server on `listener`.
    pub fn websocket(listener: TcpListener) -> anyhow::Result<Self> {
        Self::serve(listener, |tcp| async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let mut seen = 0;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    if message.is_close() {
                        return;
                    }
                    continue;
                };
                seen += 1;
                if socket
                    .send(Message::text(format!("echo {text}")))
                    .await
                    .is_err()
                {
                    return;
                }
                if seen % PUSH_EVERY == 0
                    && socket
                        .send(Message::text(format!("push after {seen}")))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        })
    }

    /// A line echo server on `listener`: the client speaks first.
    pub fn echo(listener: TcpListener) -> anyhow::Result<Self> {
        Self::serve(listener, |tcp| async move {
            let _ = echo_lines(tcp, None).await;
        })
    }

    /// A greeter on `listener`: sends [`GREETING`] on connect, then echoes lines.
    pub fn greeter(listener: TcpListener) -> anyhow::Result<Self> {
        Self::serve(listener, |tcp| async move {
            let _ = echo_lines(tcp, Some(GREETING)).await;
        })
    }

    fn serve<F, Fut>(listener: TcpListener, each: F) -> anyhow::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(each(tcp));
            }
        });
        Ok(Self {
            addr,
            connections,
            task,
        })
    }
}

impl Drop for StreamApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes every line back (after `greeting`, if any), until the client closes; then
/// says how many lines it saw, and closes.
async fn echo_lines(tcp: TcpStream, greeting: Option<&str>) -> std::io::Result<()> {
    let (read, mut write) = tcp.into_split();
    if let Some(greeting) = greeting {
        write.write_all(format!("{greeting}\n").as_bytes()).await?;
    }
    let mut lines = BufReader::new(read).lines();
    let mut seen = 0;
    while let Some(line) = lines.next_line().await? {
        seen += 1;
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
    // The client half-closed: the answer still goes back.
    write
        .write_all(format!("bye after {seen}\n").as_bytes())
        .await?;
    write.shutdown().await
}

/// A line client over `tcp`: reads the greeting first when `greeted`, sends each line of
/// `lines` and reads its echo, then half-closes and reads the server's last word.
pub async fn talk_lines(
    tcp: TcpStream,
    greeted: bool,
    lines: &[&str],
) -> anyhow::Result<(Vec<String>, String)> {
    let (read, mut write) = tcp.into_split();
    let mut reader = BufReader::new(read).lines();
    let mut heard = Vec::new();
    if greeted {
        heard.push(reader.next_line().await?.unwrap_or_default());
    }
    for line in lines {
        write.write_all(format!("{line}\n").as_bytes()).await?;
        heard.push(reader.next_line().await?.unwrap_or_default());
    }
    write.shutdown().await?;
    let last = reader.next_line().await?.unwrap_or_default();
    Ok((heard, last))
}
