use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A real HTTP/2 server (prior knowledge) on loopback that answers each request with its
/// path, counts the connections it accepted and the ones that ended, and can close the
/// open ones gracefully (GOAWAY).
struct Server {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    ended: tokio::sync::watch::Receiver<usize>,
    close_open: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let (count_ended, ended) = tokio::sync::watch::channel(0);
        let count_ended = Arc::new(count_ended);
        let (close_open, mut close_requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut graceful = GracefulShutdown::new();
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap().0,
                    Some(()) = close_requests.recv() => {
                        std::mem::replace(&mut graceful, GracefulShutdown::new()).shutdown().await;
                        continue;
                    }
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(path))))
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service);
                let connection = graceful.watch(connection);
                let count_ended = count_ended.clone();
                tokio::spawn(async move {
                    let _ = connection.await;
                    count_ended.send_modify(|ended| *ended += 1);
                });
            }
        });
        Self {
            address,
            connections,
            ended,
            close_open,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (at most 10 s) until `count` connections have ended.
    async fn wait_ended(&self, count: usize, what: &str) {
        let mut ended = self.ended.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            ended.wait_for(|ended| *ended == count),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .unwrap();
    }
}

/// Dials plain TCP and counts its dials.
struct Tcp {
    address: SocketAddr,
    dials: Arc<AtomicUsize>,
}

impl Dial for Tcp {
    type Io = TokioIo<TcpStream>;

    async fn dial(&self) -> io::Result<Self::Io> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        Ok(TokioIo::new(TcpStream::connect(self.address).await?))
    }
}

fn conn(
    address: SocketAddr,
    idle_timeout: Duration,
) -> (Http2Conn<Tcp, Empty<Bytes>>, Arc<AtomicUsize>) {
    let dials = Arc::new(AtomicUsize::new(0));
    let dial = Tcp {
        address,
        dials: dials.clone(),
    };
    (Http2Conn::new(dial, idle_timeout, None), dials)
}

fn get(address: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(format!("http://{address}{path}"))
        .body(Empty::new())
        .unwrap()
}

async fn body(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sends `/0`, `/1`, ... at once and checks that each is answered with its own path.
async fn send_at_once(conn: &Http2Conn<Tcp, Empty<Bytes>>, address: SocketAddr, count: usize) {
    let answers = join_all((0..count).map(|i| async move {
        let path = format!("/{i}");
        let response = conn.send(get(address, &path)).await.unwrap();
        (path, body(response).await)
    }))
    .await;
    for (path, answer) in answers {
        assert_eq!(answer, path);
    }
}

#[tokio::test]
async fn concurrent_and_later_requests_share_one_connection() {
    let server = Server::start().await;
    let (conn, dials) = conn(server.address, Duration::from_secs(30));
    send_at_once(&conn, server.address, 20).await;
    send_at_once(&conn, server.address, 20).await;
    assert_eq!(server.connections(), 1);
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "the first requests waited for one dial"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced() {
    let server = Server::start().await;
    let (conn, _) = conn(server.address, Duration::from_secs(30));
    send_at_once(&conn, server.address, 3).await;
    server.close_open.send(()).unwrap();
    server
        .wait_ended(1, "the server closes its connection")
        .await;
    send_at_once(&conn, server.address, 3).await;
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn requests_waiting_on_a_failed_connect_share_its_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (conn, dials) = conn(address, Duration::from_secs(30));
    let outcomes = join_all((0..10).map(|_| conn.send(get(address, "/")))).await;
    for outcome in outcomes {
        let error = outcome.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1, "one attempt for all ten");
    let error = conn.send(get(address, "/")).await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(
        dials.load(Ordering::SeqCst),
        2,
        "a later request tries again"
    );
}

#[tokio::test]
async fn a_connection_left_idle_is_closed_and_the_next_request_opens_another() {
    let server = Server::start().await;
    let (conn, _) = conn(server.address, Duration::from_millis(200));
    send_at_once(&conn, server.address, 2).await;
    server
        .wait_ended(1, "the idle connection is closed within two sweeps")
        .await;
    send_at_once(&conn, server.address, 2).await;
    assert_eq!(server.connections(), 2);
}
