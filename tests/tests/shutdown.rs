//! SIGTERM drains: a proxy stops accepting new connections at once, lets the request in
//! flight finish (the app holds it until the test releases it, so no timing guesses),
//! and exits 0. Checked for the inbound side (b) and for the outbound side (a).

use std::net::SocketAddr;
use std::time::Duration;

use seam_tests::client::{self, Reply};
use seam_tests::{TwoHop, wait};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How soon after SIGTERM the listener must refuse new connections.
const STOP_ACCEPTING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the held request may take to arrive at the app.
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a drained proxy may take to exit after the last request finished.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `GET /hold` through a to b and waits until the app holds it.
async fn start_held_request(mesh: &TwoHop) -> JoinHandle<anyhow::Result<Reply>> {
    let outbound = mesh.a.outbound();
    let request = tokio::spawn(async move { client::http1_get(outbound, "b", "/hold", &[]).await });
    mesh.app_b
        .wait_held(1, HOLD_TIMEOUT)
        .await
        .expect("the held request reaches the app");
    request
}

/// Waits until a new TCP connection to `addr` is refused.
async fn wait_refusing(addr: SocketAddr, what: &str) {
    wait::until(what, STOP_ACCEPTING_TIMEOUT, || async {
        match TcpStream::connect(addr).await {
            Ok(_) => anyhow::bail!("{addr} still accepts connections"),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Err(error) => anyhow::bail!("unexpected connect error: {error}"),
        }
    })
    .await
    .expect("the listener closes after SIGTERM");
}

async fn assert_held_request_completes(mesh: &TwoHop, request: JoinHandle<anyhow::Result<Reply>>) {
    mesh.app_b.release_held();
    let reply = request
        .await
        .expect("request task")
        .expect("the in-flight request completes");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["path"], "/hold", "{echo}");
    assert_eq!(echo["name"], "b", "{echo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_inbound_side_drains_in_flight_request() {
    let mut mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let request = start_held_request(&mesh).await;

    mesh.b.terminate().expect("SIGTERM b");
    wait_refusing(mesh.b.inbound(), "b's inbound refuses new connections").await;

    assert_held_request_completes(&mesh, request).await;
    let status = mesh.b.wait_exit(EXIT_TIMEOUT).await.expect("b exits");
    assert_eq!(status.code(), Some(0), "b exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_outbound_side_drains_in_flight_request() {
    let mut mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let request = start_held_request(&mesh).await;

    mesh.a.terminate().expect("SIGTERM a");
    wait_refusing(mesh.a.outbound(), "a's outbound refuses new connections").await;

    assert_held_request_completes(&mesh, request).await;
    let status = mesh.a.wait_exit(EXIT_TIMEOUT).await.expect("a exits");
    assert_eq!(status.code(), Some(0), "a exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_gives_up_on_a_request_that_outlasts_the_grace_period() {
    let mut mesh = TwoHop::start_with(|options| options.shutdown_grace("500ms"))
        .await
        .expect("two-hop mesh starts");
    let request = start_held_request(&mesh).await;

    mesh.b.terminate().expect("SIGTERM b");
    // The app never answers in time: b must still exit, cleanly, soon after the grace.
    let status = mesh
        .b
        .wait_exit(EXIT_TIMEOUT)
        .await
        .expect("b exits once the grace period is over");
    assert_eq!(status.code(), Some(0), "b exited with {status}");

    let outcome = request.await.expect("request task");
    match &outcome {
        Ok(reply) => assert_ne!(reply.status, 200, "the cut request cannot have succeeded"),
        Err(error) => eprintln!("the cut request failed as expected: {error:#}"),
    }
    mesh.app_b.release_held();
}
