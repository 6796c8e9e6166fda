//! The discovery stream to the control plane: says hello, subscribes to every authority
//! the app has used (again after each reconnect), applies each update to the
//! [`Directory`] and answers ACK, or NACK with the reason when the update is invalid.
//! When the control plane is away the proxy keeps serving its last good state and
//! reconnects with decorrelated-jitter backoff, to another replica first when there are
//! several (the one that failed is tried last).

mod convert;
pub mod idle;
mod policy;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use seam_proto::report::error_chain;
use seam_proto::v1::discovery_client::DiscoveryClient;
use seam_proto::v1::{Ack, Hello, Nack, Subscribe, Unsubscribe, WatchRequest, watch_request};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::DecorrelatedBackoff;
use crate::control_plane::ControlPlane;
use crate::metrics::Metrics;
use crate::state::{Directory, SubscriptionChange};

pub use convert::update_from_proto;

/// A stream that stayed up this long counts as healthy: the next failure starts the
/// backoff from the beginning.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

pub struct DiscoveryClientTask {
    pub control_plane: ControlPlane,
    pub directory: Arc<Directory>,
    /// Authorities the directory added or forgot, in order.
    pub subscription_changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    /// The admin listener's address; an unspecified IP (`0.0.0.0`) is told as the
    /// proxy's own address towards the control plane, which operators' tools can reach.
    pub admin_addr: SocketAddr,
    /// Whether the stream is up right now.
    pub connected: Arc<AtomicBool>,
    /// Set to true the first time the stream comes up.
    pub ever_connected: watch::Sender<bool>,
    /// Streams open only once the proxy holds a certificate.
    pub certified: watch::Receiver<bool>,
    /// Counts the ACKs and NACKs this proxy sends.
    pub metrics: Arc<Metrics>,
}

impl DiscoveryClientTask {
    pub async fn run(mut self) {
        let mut backoff =
            DecorrelatedBackoff::new(Duration::from_millis(100), Duration::from_secs(10));
        if self
            .certified
            .wait_for(|certified| *certified)
            .await
            .is_err()
        {
            return;
        }
        loop {
            let started = tokio::time::Instant::now();
            let ended = self.stream().await;
            self.connected.store(false, Ordering::Relaxed);
            self.control_plane.discovery_ended();
            if started.elapsed() >= HEALTHY_STREAM {
                backoff.reset();
            }
            let wait = backoff.next_delay();
            match ended {
                Ok(()) => {
                    tracing::warn!(retry_in = ?wait, "the control plane closed the discovery stream; serving the last good state")
                }
                Err(err) => {
                    tracing::warn!(error = %error_chain(err.as_ref()), retry_in = ?wait, "discovery stream down; serving the last good state")
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The admin address as the control plane's side of the network reaches it.
    fn reachable_admin_addr(&self) -> SocketAddr {
        match self.control_plane.local_ip() {
            Some(ip) if self.admin_addr.ip().is_unspecified() => {
                SocketAddr::new(ip, self.admin_addr.port())
            }
            _ => self.admin_addr,
        }
    }

    async fn stream(&mut self) -> anyhow::Result<()> {
        let (channel, replica) = self.control_plane.connect().await?;
        self.control_plane.discovery_opened(replica);
        let (requests, outgoing) = mpsc::channel(256);
        let send = |kind| WatchRequest { kind: Some(kind) };
        requests
            .send(send(watch_request::Kind::Hello(Hello {
                admin_addr: self.reachable_admin_addr().to_string(),
                proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
            })))
            .await?;
        // Authorities added from here on arrive on `subscription_changes`; a few may be sent
        // twice, which the control plane answers harmlessly.
        for authority in self.directory.authorities() {
            requests
                .send(send(watch_request::Kind::Subscribe(Subscribe {
                    authority,
                })))
                .await?;
        }
        let mut updates = DiscoveryClient::new(channel)
            .watch(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        self.connected.store(true, Ordering::Relaxed);
        self.ever_connected.send_replace(true);
        tracing::info!(control_plane = %replica, "discovery stream up");
        loop {
            tokio::select! {
                change = self.subscription_changes.recv() => {
                    let kind = match change {
                        Some(SubscriptionChange::Subscribe(authority)) => watch_request::Kind::Subscribe(Subscribe { authority }),
                        Some(SubscriptionChange::Unsubscribe(authority)) => watch_request::Kind::Unsubscribe(Unsubscribe { authority }),
                        None => return Ok(()),
                    };
                    requests.send(send(kind)).await?;
                }
                update = updates.message() => {
                    let Some(update) = update? else { return Ok(()) };
                    let authority = update.authority.clone();
                    let version = update.version;
                    let answer = match update_from_proto(update) {
                        Ok(resolution) => {
                            self.directory.apply(&authority, version, resolution);
                            tracing::debug!(authority, version, "applied a service update");
                            self.metrics.discovery_acks.inc();
                            watch_request::Kind::Ack(Ack { authority, version })
                        }
                        Err(reason) => {
                            tracing::warn!(authority, version, %reason, "refused a service update; keeping the last good state");
                            self.metrics.discovery_nacks.inc();
                            watch_request::Kind::Nack(Nack { authority, version, reason: reason.to_string() })
                        }
                    };
                    requests.send(send(answer)).await?;
                }
            }
        }
    }
}
