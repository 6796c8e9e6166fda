//! `seam.v1.Discovery`: one stream per proxy. The proxy (known by its mesh certificate)
//! subscribes to authorities; each subscription is answered at once and again whenever
//! what it resolves to changes; the proxy's ACKs and NACKs are recorded for operators.
//!
//! The work per model change is done once, not once per proxy: the [`hub`] resolves each
//! watched authority and builds its update once per version, and marks it only for the
//! proxies watching what changed; each proxy's [`outbox`] keeps the latest update per
//! authority, not a queue, so a slow proxy is sent the latest state, and one that stops
//! reading for [`STALL_BOUND`] with updates waiting is let go. `encode` turns a
//! resolution into the wire's update.

mod encode;
mod hub;
mod outbox;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::Stream;
use seam_proto::SpiffeId;
use seam_proto::v1::discovery_server::Discovery;
use seam_proto::v1::{ServiceUpdate, WatchRequest, watch_request};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::kubernetes::naming;
use crate::metrics::Metrics;
use crate::model::MeshModel;
use crate::registry::{ProxyEntry, ProxyRegistry};
use hub::{Hub, Watch};
use outbox::{Next, Outbox};

/// The most authorities one proxy may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// The longest authority accepted (a DNS name's limit, plus a port).
const MAX_AUTHORITY_LEN: usize = 260;
/// How long updates may wait for a proxy that does not read them before its stream is
/// ended: long enough for a proxy busy or paused by a slow machine, short enough that a
/// hung one does not keep its session (and its HTTP/2 buffers) forever. It reconnects
/// and subscribes again, and is sent the state in force then.
pub const STALL_BOUND: Duration = Duration::from_secs(30);

pub struct DiscoveryService {
    model: watch::Receiver<Arc<MeshModel>>,
    registry: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    hub: Arc<Hub>,
    stall_bound: Duration,
}

impl DiscoveryService {
    /// Serves `model` to proxies, recording them in `registry`, until `shutdown`. Starts
    /// the hub that follows the model (it stops with `shutdown`).
    pub fn new(
        model: watch::Receiver<Arc<MeshModel>>,
        registry: Arc<ProxyRegistry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let hub = Arc::new(Hub::new(model.clone()));
        tokio::spawn(
            hub.clone()
                .follow(model.clone(), metrics.clone(), shutdown.clone()),
        );
        Self {
            model,
            registry,
            metrics,
            shutdown,
            hub,
            stall_bound: STALL_BOUND,
        }
    }

    /// Ends streams whose updates wait unread for `bound` instead of [`STALL_BOUND`].
    #[must_use]
    pub fn with_stall_bound(mut self, bound: Duration) -> Self {
        self.stall_bound = bound;
        self
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ServiceUpdate, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let trust_domain = self.model.borrow().trust_domain.clone();
        let peer = peer_identity(&request, &trust_domain)?;
        let service = peer.service_account().unwrap_or(peer.as_str()).to_owned();
        let entry = Arc::new(
            self.registry
                .register(&service, peer.as_str(), self.metrics.clone()),
        );
        tracing::info!(proxy = entry.id(), spiffe_id = %peer, "proxy connected");
        let outbox = Arc::new(Outbox::new());
        let namespace = naming::namespace_of(peer.path()).map(ToOwned::to_owned);
        let session = Session {
            entry: entry.clone(),
            peer,
            namespace,
            hub: self.hub.clone(),
            outbox: outbox.clone(),
            metrics: self.metrics.clone(),
            subscriptions: BTreeSet::new(),
            stall_bound: self.stall_bound,
        };
        tokio::spawn(session.run(request.into_inner(), self.shutdown.clone()));
        let sender = Sender {
            entry: Arc::downgrade(&entry),
            outbox,
            metrics: self.metrics.clone(),
            batch: Vec::new(),
        };
        Ok(Response::new(Box::pin(sender.into_stream())))
    }
}

/// The SPIFFE id in the client certificate the stream's TLS connection presented.
fn peer_identity<T>(request: &Request<T>, trust_domain: &str) -> Result<SpiffeId, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("the discovery stream requires the proxy's mesh certificate")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated("the discovery stream requires the proxy's mesh certificate")
    })?;
    let id = SpiffeId::from_certificate_der(leaf)
        .map_err(|err| Status::unauthenticated(format!("client certificate: {err}")))?;
    if id.trust_domain() != trust_domain {
        return Err(Status::permission_denied(format!(
            "{id} is not in trust domain {trust_domain}"
        )));
    }
    Ok(id)
}

/// The proxy's side of the conversation: its subscriptions, ACKs and NACKs.
struct Session {
    entry: Arc<ProxyEntry>,
    peer: SpiffeId,
    /// The proxy's namespace, from its workload identity: Kubernetes names without one
    /// are relative to it.
    namespace: Option<String>,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    subscriptions: BTreeSet<String>,
    stall_bound: Duration,
}

/// Whether the session goes on after handling something.
enum Step {
    Continue,
    End,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<WatchRequest>, shutdown: CancellationToken) {
        let outbox = self.outbox.clone();
        loop {
            let step = tokio::select! {
                () = shutdown.cancelled() => {
                    self.outbox.close(Status::unavailable("control plane shutting down"));
                    Step::End
                }
                () = outbox.stalled(self.stall_bound) => {
                    let bound = self.stall_bound;
                    self.metrics.discovery_stalled.inc();
                    tracing::warn!(
                        proxy = self.entry.id(), spiffe_id = %self.peer,
                        "a proxy read no update for {bound:?}; ending its stream"
                    );
                    self.outbox.close(Status::unavailable(format!(
                        "updates waited {bound:?} unread; subscribe again"
                    )));
                    Step::End
                }
                request = requests.message() => match request {
                    Ok(Some(request)) => self.handle(request),
                    Ok(None) => Step::End,
                    Err(status) => {
                        tracing::debug!(proxy = self.entry.id(), %status, "discovery stream broke");
                        Step::End
                    }
                },
            };
            if let Step::End = step {
                break;
            }
        }
        for authority in std::mem::take(&mut self.subscriptions) {
            self.hub
                .unsubscribe(&self.watch(authority), self.entry.id());
        }
        self.outbox
            .close(Status::unavailable("the discovery stream ended"));
        tracing::info!(proxy = self.entry.id(), spiffe_id = %self.peer, "proxy disconnected");
    }

    fn watch(&self, authority: String) -> Watch {
        Watch {
            authority,
            namespace: self.namespace.clone(),
        }
    }

    fn handle(&mut self, request: WatchRequest) -> Step {
        match request.kind {
            Some(watch_request::Kind::Hello(hello)) => {
                self.entry.hello(hello.admin_addr, hello.proxy_version);
                Step::Continue
            }
            Some(watch_request::Kind::Subscribe(subscribe)) => self.subscribe(subscribe.authority),
            Some(watch_request::Kind::Unsubscribe(unsubscribe)) => {
                let authority = unsubscribe.authority;
                if self.subscriptions.remove(&authority) {
                    self.outbox.unmark(&authority);
                    self.hub
                        .unsubscribe(&self.watch(authority.clone()), self.entry.id());
                }
                self.entry.unsubscribed(&authority);
                Step::Continue
            }
            Some(watch_request::Kind::Ack(ack)) => {
                self.metrics.discovery_acks.inc();
                self.entry.acked(&ack.authority, ack.version);
                Step::Continue
            }
            Some(watch_request::Kind::Nack(nack)) => {
                self.metrics.discovery_nacks.inc();
                tracing::warn!(
                    proxy = self.entry.id(), spiffe_id = %self.peer, authority = nack.authority,
                    version = nack.version, reason = nack.reason, "a proxy refused an update"
                );
                self.entry
                    .nacked(&nack.authority, nack.version, nack.reason);
                Step::Continue
            }
            None => Step::Continue,
        }
    }

    fn subscribe(&mut self, authority: String) -> Step {
        if authority.is_empty() || authority.len() > MAX_AUTHORITY_LEN {
            return self.fail(Status::invalid_argument(format!(
                "authority {authority:?} must be 1 to {MAX_AUTHORITY_LEN} bytes"
            )));
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS && !self.subscriptions.contains(&authority)
        {
            return self.fail(Status::resource_exhausted(format!(
                "a proxy may subscribe to at most {MAX_SUBSCRIPTIONS} authorities"
            )));
        }
        self.entry.subscribed(&authority);
        self.hub.subscribe(
            &self.watch(authority.clone()),
            (self.entry.id(), self.outbox.clone()),
        );
        self.subscriptions.insert(authority);
        Step::Continue
    }

    fn fail(&self, status: Status) -> Step {
        self.outbox.close(status);
        Step::End
    }
}

/// The stream's side: sends the marked updates when the proxy reads.
struct Sender {
    /// The session owns the entry: a proxy whose session ended leaves the registry even
    /// while its stream waits to be dropped.
    entry: Weak<ProxyEntry>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    /// Updates taken from the outbox and not sent yet.
    batch: Vec<Arc<ServiceUpdate>>,
}

impl Sender {
    fn into_stream(self) -> impl Stream<Item = Result<ServiceUpdate, Status>> + Send + 'static {
        futures_util::stream::unfold(self, |mut sender| async move {
            let item = sender.next().await?;
            Some((item, sender))
        })
    }

    async fn next(&mut self) -> Option<Result<ServiceUpdate, Status>> {
        loop {
            if let Some(update) = self.batch.pop() {
                self.metrics.discovery_updates.inc();
                if let Some(entry) = self.entry.upgrade() {
                    entry.sent(&update.authority, update.version);
                }
                return Some(Ok(ServiceUpdate::clone(&update)));
            }
            match self.outbox.take() {
                Next::Send(updates) => self.batch = updates,
                Next::Fail(status) => return Some(Err(status)),
                Next::End => return None,
                Next::Wait => self.outbox.ready().await,
            }
        }
    }
}
