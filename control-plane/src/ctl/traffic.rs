//! The demo's load: a fixed number of requests per second to loadgen's sample app, each
//! timed and read into an `Outcome` for the once-a-second summary. Every request carries
//! a timeout, so at most `rate × timeout` are ever in flight: the load stays bounded even
//! when the mesh is slow or broken.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::summary::{Outcome, Window};

/// Longer than a sample app's own next-hop timeout, so a broken hop is reported by the
/// chain (naming the hop) rather than by this client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `rate` requests per second to `target` until dropped (or aborted), recording
/// each outcome in `window`.
pub async fn generate(target: SocketAddr, rate: u32, window: Arc<Mutex<Window>>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    // A stalled process must not make up for lost ticks in a burst: the rate stays fixed.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Dropping the set (when this future is aborted) cancels the requests in flight.
    let mut in_flight = JoinSet::new();
    loop {
        ticker.tick().await;
        while in_flight.try_join_next().is_some() {}
        let client = client.clone();
        let window = window.clone();
        in_flight.spawn(async move {
            let outcome = send_one(&client, target).await;
            window.lock().record(outcome);
        });
    }
}

async fn send_one(client: &Client<HttpConnector, Empty<Bytes>>, target: SocketAddr) -> Outcome {
    let started = Instant::now();
    let request = match http::Request::get(format!("http://{target}/")).body(Empty::new()) {
        Ok(request) => request,
        Err(error) => return Outcome::failed(started.elapsed(), error.to_string()),
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok((status, body))) => Outcome::from_response(started.elapsed(), status, &body),
        Ok(Err(error)) => Outcome::failed(
            started.elapsed(),
            format!("loadgen app {target} failed: {error:#}"),
        ),
        Err(_) => Outcome::failed(
            started.elapsed(),
            format!("no answer from loadgen within {REQUEST_TIMEOUT:?}"),
        ),
    }
}
