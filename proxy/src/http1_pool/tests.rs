use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::*;

const BIG: usize = 8 << 20;

/// A real HTTP/1.1 server on loopback that counts the connections it accepted and the
/// ones that ended.
struct Server {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    ended: tokio::sync::watch::Receiver<usize>,
}

impl Server {
    async fn start(keep_alive: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let (count_ended, ended) = tokio::sync::watch::channel(0);
        let count_ended = Arc::new(count_ended);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    // A body too big to sit in buffers, or the path back.
                    let path = request.uri().path().to_owned();
                    let body = if path == "/big" {
                        Bytes::from(vec![b'x'; BIG])
                    } else {
                        Bytes::from(path)
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(tcp), service);
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
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

struct Tcp(SocketAddr);

impl Dial for Tcp {
    type Io = TokioIo<TcpStream>;

    async fn dial(&self) -> io::Result<Self::Io> {
        Ok(TokioIo::new(TcpStream::connect(self.0).await?))
    }
}

fn pool(server: &Server) -> Http1Pool<Tcp, Empty<Bytes>> {
    Http1Pool::new(Tcp(server.address), Duration::from_secs(30))
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(path)
        .header(http::header::HOST, "app")
        .body(Empty::new())
        .unwrap()
}

async fn body(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sends `/0`, `/1`, ... one after another, each answered with its own path.
async fn send_in_turn(pool: &Http1Pool<Tcp, Empty<Bytes>>, count: usize) {
    for i in 0..count {
        let path = format!("/{i}");
        let response = pool.send(get(&path)).await.unwrap();
        assert_eq!(body(response).await, path);
    }
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = Server::start(true).await;
    let pool = pool(&server);
    send_in_turn(&pool, 20).await;
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_connection_whose_body_is_unread_is_not_taken() {
    let server = Server::start(true).await;
    let pool = pool(&server);
    let first = pool.send(get("/big")).await.unwrap();
    let second = pool.send(get("/second")).await.unwrap();
    assert_eq!(server.connections(), 2, "the first body was still unread");
    assert_eq!(body(second).await, "/second");
    assert_eq!(body(first).await.len(), BIG);
    for _ in 0..5 {
        body(pool.send(get("/again")).await.unwrap()).await;
    }
    assert_eq!(server.connections(), 2, "both are reused once read");
    assert_eq!(pool.len(), 2);
}

#[tokio::test]
async fn connections_the_server_closes_are_replaced() {
    let server = Server::start(false).await;
    let pool = pool(&server);
    send_in_turn(&pool, 5).await;
    assert_eq!(server.connections(), 5);
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_closed_not_reused() {
    let server = Server::start(true).await;
    let pool = pool(&server);
    body(pool.send(get("/")).await.unwrap()).await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await;
    tokio::time::resume();
    body(pool.send(get("/")).await.unwrap()).await;
    assert_eq!(server.connections(), 2);
    assert_eq!(pool.len(), 1, "the stale connection was dropped");
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let pool: Http1Pool<Tcp, Empty<Bytes>> = Http1Pool::new(Tcp(address), Duration::from_secs(30));
    let error = pool.send(get("/")).await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn a_connection_left_idle_is_closed_without_another_request() {
    let server = Server::start(true).await;
    let pool = Http1Pool::new(Tcp(server.address), Duration::from_millis(200));
    send_in_turn(&pool, 1).await;
    let mut ended = server.ended.clone();
    tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|ended| *ended == 1))
        .await
        .expect("the idle connection is closed within the sweep's period")
        .unwrap();
    assert_eq!(pool.len(), 0);
}

#[tokio::test]
async fn the_pool_keeps_at_most_max_pooled_and_closes_the_rest_once_done() {
    let server = Server::start(true).await;
    let pool = pool(&server);
    let extra = 3;
    // Responses held unread, too big for the socket buffers, keep their connections
    // busy: each request opens its own.
    let mut held = Vec::new();
    for _ in 0..MAX_POOLED + extra {
        held.push(pool.send(get("/big")).await.unwrap());
    }
    assert_eq!(server.connections(), MAX_POOLED + extra);
    assert_eq!(pool.len(), MAX_POOLED, "the pool is bounded");
    for response in held {
        assert_eq!(body(response).await.len(), BIG);
    }
    let mut ended = server.ended.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        ended.wait_for(|ended| *ended == extra),
    )
    .await
    .expect("the connections beyond the bound close once their responses are done")
    .unwrap();
    send_in_turn(&pool, 2 * MAX_POOLED).await;
    assert_eq!(
        server.connections(),
        MAX_POOLED + extra,
        "the kept ones are reused"
    );
}

#[tokio::test]
async fn only_a_response_on_a_new_connection_is_marked_fresh() {
    let server = Server::start(true).await;
    let pool = pool(&server);
    let first = pool.send(get("/")).await.unwrap();
    assert!(first.extensions().get::<FreshConnection>().is_some());
    body(first).await;
    let second = pool.send(get("/")).await.unwrap();
    assert!(second.extensions().get::<FreshConnection>().is_none());
}
