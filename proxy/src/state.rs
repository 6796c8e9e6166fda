//! The proxy's view of the services it talks to: for each authority the app has used, what
//! the control plane last said about it, published as immutable snapshots (arc-swap for
//! the request path, a watch channel per authority for the first request that waits),
//! with each service's routes and policies ([`policy`]). The directory is bounded: it
//! tracks at most a fixed number of authorities and forgets the ones unused for a while
//! ([`Directory::sweep`]). No sockets here.

pub mod endpoints;
pub mod policy;
pub mod rate_limit;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::HashMap;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use seam_proto::SpiffeId;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use policy::{Policy, Route, RouteMatch, Target, WeightedBackend};
use rate_limit::LimiterKey;

pub mod authz;

use authz::Authorization;

/// An instance of a service: where to connect and who must answer there. No identity: the
/// instance has no Seam proxy (a Kubernetes pod without a sidecar) and is sent plain HTTP
/// or TCP, never mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    #[serde(serialize_with = "serialize_id")]
    pub identity: Option<SpiffeId>,
}

impl Endpoint {
    /// Whether traffic to this endpoint goes without mTLS.
    pub fn is_plaintext(&self) -> bool {
        self.identity.is_none()
    }
}

/// `/config` shows a plaintext endpoint's identity as `null`.
fn serialize_id<S: serde::Serializer>(
    id: &Option<SpiffeId>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => serializer.serialize_str(id.as_str()),
        None => serializer.serialize_none(),
    }
}

/// A service as the control plane last described it.
#[derive(Debug)]
pub struct Service {
    /// Shared with every request's labels and logs, never copied.
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    /// Checked in order; the last one matches every request and sends it to the
    /// service's own endpoints with the service's policy.
    routes: Vec<Arc<Route>>,
    /// Who may call this service (what its own proxies enforce).
    pub authorization: Authorization,
    /// Instance ports whose connections are opaque TCP, without protocol detection.
    pub opaque_ports: Vec<u16>,
    /// Whether the proxies leave `x-request-id` alone on calls to this service.
    pub request_id_off: bool,
}

impl Service {
    /// A service with the default policy and no routes of its own.
    #[cfg(test)]
    pub fn new(name: String, endpoints: Vec<Endpoint>) -> Self {
        Self::with_routes(name, endpoints, Policy::default(), Vec::new())
    }

    /// A service with its policy and its routes (whose empty backend lists mean the
    /// service's own endpoints).
    pub fn with_routes(
        name: String,
        endpoints: Vec<Endpoint>,
        policy: Policy,
        routes: Vec<Route>,
    ) -> Self {
        let name: Arc<str> = name.into();
        let own = Arc::new(Target::new(name.clone(), endpoints.clone()));
        let own_backends = || {
            vec![WeightedBackend {
                weight: 1,
                target: own.clone(),
            }]
        };
        let mut built: Vec<Arc<Route>> = routes
            .into_iter()
            .map(|mut route| {
                if route.backends.is_empty() {
                    route.backends = own_backends();
                }
                Arc::new(route)
            })
            .collect();
        built.push(Arc::new(Route::new(
            RouteMatch::default(),
            policy,
            own_backends(),
            None,
        )));
        Self {
            name,
            endpoints,
            routes: built,
            authorization: Authorization::default(),
            opaque_ports: Vec::new(),
            request_id_off: false,
        }
    }

    /// The first route that takes `request`.
    pub fn route_for<B>(&self, request: &http::Request<B>) -> &Arc<Route> {
        self.routes
            .iter()
            .find(|route| route.route_match.matches(request))
            .unwrap_or_else(|| {
                self.routes
                    .last()
                    .expect("a service always ends with its match-all route")
            })
    }

    /// The service's own endpoints as a target (what its match-all route sends to).
    pub fn own_target(&self) -> &Arc<Target> {
        let default_route = self
            .routes
            .last()
            .expect("a service always ends with its match-all route");
        &default_route.backends[0].target
    }

    /// Every endpoint a request to this service may reach, splits and mirrors included.
    pub fn reachable_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.routes.iter().flat_map(|route| {
            let mirror = route.policy.mirror.iter().map(|mirror| &mirror.target);
            route
                .backends
                .iter()
                .map(|backend| &backend.target)
                .chain(mirror)
                .flat_map(|target| target.endpoints.iter())
        })
    }

    /// The same service with its authorization policy set.
    pub fn with_authorization(mut self, authorization: Authorization) -> Self {
        self.authorization = authorization;
        self
    }

    /// The route whose rate limit applies to a request that takes `route`: the route
    /// itself when it has its own, else the match-all route when the service has one;
    /// `None` when no limit applies.
    pub fn rate_limited_route<'a>(&'a self, route: &'a Arc<Route>) -> Option<&'a Arc<Route>> {
        if route.policy.rate_limit.is_some() {
            return Some(route);
        }
        let service_wide = self
            .routes
            .last()
            .expect("a service always ends with its match-all route");
        service_wide
            .policy
            .rate_limit
            .is_some()
            .then_some(service_wide)
    }

    /// Which limiter `route` (one of this service's) uses across snapshots.
    pub fn limiter_key(&self, route: &Arc<Route>) -> LimiterKey {
        let match_all = self.routes.len() - 1;
        match self.routes.iter().position(|own| Arc::ptr_eq(own, route)) {
            Some(position) if position != match_all => LimiterKey::Route {
                position,
                label: route.label.clone(),
            },
            _ => LimiterKey::Service,
        }
    }

    /// The same service with its `x-request-id` setting.
    pub fn with_request_id_off(mut self, request_id_off: bool) -> Self {
        self.request_id_off = request_id_off;
        self
    }

    /// The same service with its opaque ports set.
    pub fn with_opaque_ports(mut self, opaque_ports: Vec<u16>) -> Self {
        self.opaque_ports = opaque_ports;
        self
    }

    /// Whether a connection to `port` of an instance carries opaque TCP.
    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
    }
}

/// What an authority resolves to right now.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Subscribed; the control plane has not answered yet.
    Pending,
    NotFound,
    Found(Arc<Service>),
}

/// A resolution and the control plane version it came with.
#[derive(Debug, Clone)]
struct Versioned {
    version: Option<u64>,
    resolution: Resolution,
}

/// Why a new authority could not be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error(
        "this proxy already tracks {0} authorities, its limit: a new one is refused until unused ones are forgotten (--idle-unsubscribe-after)"
    )]
    TooManyServices(usize),
}

/// What the discovery stream is asked to tell the control plane, in the order the
/// directory decided it (one channel, so a forget and a new first use of one authority
/// cannot swap places).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    Subscribe(String),
    Unsubscribe(String),
}

/// One authority the directory tracks.
#[derive(Debug)]
struct Entry {
    answers: watch::Sender<Versioned>,
    /// The directory's idle clock when a request or connection last resolved through it.
    last_used: AtomicU64,
    /// Never forgotten for idleness (the inbound policy, `--tcp-upstream` services).
    pinned: AtomicBool,
    /// Earlier snapshots of the service that requests may still hold; an entry is in use
    /// while any of them (or the current one) is held outside the directory.
    replaced: Mutex<Vec<Weak<Service>>>,
}

impl Entry {
    fn new(last_used: u64) -> Self {
        let (answers, _) = watch::channel(Versioned {
            version: None,
            resolution: Resolution::Pending,
        });
        Self {
            answers,
            last_used: AtomicU64::new(last_used),
            pinned: AtomicBool::new(false),
            replaced: Mutex::new(Vec::new()),
        }
    }

    /// Whether a request waits for its first answer or holds one of its snapshots.
    fn in_use(&self) -> bool {
        if self.answers.receiver_count() > 0 {
            return true;
        }
        // The watch channel holds the current snapshot once; anyone else is a user.
        let current_held = match &self.answers.borrow().resolution {
            Resolution::Found(service) => Arc::strong_count(service) > 1,
            Resolution::Pending | Resolution::NotFound => false,
        };
        current_held
            || self
                .replaced
                .lock()
                .iter()
                .any(|old| old.strong_count() > 0)
    }

    /// Keeps a weak handle on the snapshot being replaced while a request still holds it.
    fn retire_current(&self) {
        let mut replaced = self.replaced.lock();
        replaced.retain(|old| old.strong_count() > 0);
        if let Resolution::Found(service) = &self.answers.borrow().resolution
            && Arc::strong_count(service) > 1
        {
            replaced.push(Arc::downgrade(service));
        }
    }
}

pub struct Directory {
    entries: ArcSwap<HashMap<Arc<str>, Arc<Entry>>>,
    /// Serialises adding and forgetting entries, so two first requests for one authority
    /// subscribe once and the change messages leave in the order of the changes.
    changing: Mutex<()>,
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    max_entries: usize,
    /// A coarse clock in sweep ticks, advanced by [`Directory::sweep`]: touching an entry
    /// on the request path is a few relaxed atomic operations, no clock read.
    idle_clock: AtomicU64,
    /// New authorities refused because the directory was full.
    refused: Counter,
}

impl Directory {
    /// A directory of at most `max_entries` authorities that asks for new ones (and
    /// gives forgotten ones up) on `changes`.
    pub fn new(changes: mpsc::UnboundedSender<SubscriptionChange>, max_entries: usize) -> Self {
        Self {
            entries: ArcSwap::from_pointee(HashMap::default()),
            changing: Mutex::new(()),
            changes,
            max_entries,
            idle_clock: AtomicU64::new(0),
            refused: Counter::default(),
        }
    }

    /// The same directory counting refused new authorities in `refused`.
    pub fn with_refusal_counter(mut self, refused: Counter) -> Self {
        self.refused = refused;
        self
    }

    /// Resolves `authority` and marks it used (see [`Directory::sweep`]), subscribing on
    /// first use and then waiting up to `wait` for the control plane's first answer.
    pub async fn resolve(
        &self,
        authority: &str,
        wait: Duration,
    ) -> Result<Resolution, LookupError> {
        let mut answers = match self.entries.load().get(authority) {
            Some(entry) => {
                // Written only once a tick, so a busy authority's line stays shared.
                let now = self.idle_clock.load(Ordering::Relaxed);
                if entry.last_used.load(Ordering::Relaxed) != now {
                    entry.last_used.store(now, Ordering::Relaxed);
                }
                let resolution = entry.answers.borrow().resolution.clone();
                if !matches!(resolution, Resolution::Pending) {
                    return Ok(resolution);
                }
                entry.answers.subscribe()
            }
            None => self.add(authority)?.answers.subscribe(),
        };
        let answered = tokio::time::timeout(
            wait,
            answers.wait_for(|v| !matches!(v.resolution, Resolution::Pending)),
        )
        .await;
        Ok(match answered {
            Ok(Ok(versioned)) => versioned.resolution.clone(),
            _ => Resolution::Pending,
        })
    }

    /// Subscribes to `authority` now and keeps it however long it goes unused (what the
    /// proxy needs whatever the app does: its inbound policy, its `--tcp-upstream`s).
    pub fn pin(&self, authority: &str) -> Result<(), LookupError> {
        let entry = match self.entries.load().get(authority) {
            Some(entry) => entry.clone(),
            None => self.add(authority)?,
        };
        entry.pinned.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The entry of `authority`, added (and subscribed to) if new.
    fn add(&self, authority: &str) -> Result<Arc<Entry>, LookupError> {
        let _changing = self.changing.lock();
        let current = self.entries.load();
        if let Some(entry) = current.get(authority) {
            return Ok(entry.clone());
        }
        if current.len() >= self.max_entries {
            self.refused.inc();
            return Err(LookupError::TooManyServices(self.max_entries));
        }
        let entry = Arc::new(Entry::new(self.idle_clock.load(Ordering::Relaxed)));
        let mut next = HashMap::clone(&current);
        next.insert(authority.into(), entry.clone());
        self.entries.store(Arc::new(next));
        // The discovery task is gone only when the proxy is stopping.
        let _ = self
            .changes
            .send(SubscriptionChange::Subscribe(authority.to_owned()));
        Ok(entry)
    }

    /// Advances the idle clock one tick, then forgets and unsubscribes every authority
    /// not used for more than `idle_ticks` ticks, unless it is pinned or in use (a request
    /// waits for its answer or holds its service). A later use subscribes again and waits
    /// for the answer as a first use does. Returns the authorities forgotten.
    pub fn sweep(&self, idle_ticks: u64) -> Vec<String> {
        let now = self.idle_clock.fetch_add(1, Ordering::Relaxed) + 1;
        let is_idle = |entry: &Entry| {
            now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) > idle_ticks
                && !entry.pinned.load(Ordering::Relaxed)
                && !entry.in_use()
        };
        // Most sweeps find nothing: look before copying the map under the lock.
        if !self.entries.load().values().any(|entry| is_idle(entry)) {
            return Vec::new();
        }
        let _changing = self.changing.lock();
        let current = self.entries.load();
        let (idle, kept): (Vec<_>, Vec<_>) = current
            .iter()
            .map(|(authority, entry)| (authority.clone(), entry.clone()))
            .partition(|(_, entry)| is_idle(entry));
        self.entries.store(Arc::new(kept.into_iter().collect()));
        idle.into_iter()
            .map(|(authority, _)| {
                let authority = authority.to_string();
                let _ = self
                    .changes
                    .send(SubscriptionChange::Unsubscribe(authority.clone()));
                authority
            })
            .collect()
    }

    /// Records the control plane's answer for `authority` (ignored if never subscribed).
    pub fn apply(&self, authority: &str, version: u64, resolution: Resolution) {
        if let Some(entry) = self.entries.load().get(authority) {
            entry.retire_current();
            entry.answers.send_replace(Versioned {
                version: Some(version),
                resolution,
            });
        }
    }

    /// Whether the control plane has answered for `authority` (false if never asked).
    pub fn is_answered(&self, authority: &str) -> bool {
        self.entries
            .load()
            .get(authority)
            .is_some_and(|entry| !matches!(entry.answers.borrow().resolution, Resolution::Pending))
    }

    /// Every authority subscribed so far, to subscribe again after a reconnect.
    pub fn authorities(&self) -> Vec<String> {
        self.entries
            .load()
            .keys()
            .map(|authority| authority.to_string())
            .collect()
    }

    /// Every endpoint of every known service.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
        for entry in self.entries.load().values() {
            if let Resolution::Found(service) = &entry.answers.borrow().resolution {
                endpoints.extend(service.reachable_endpoints().cloned());
            }
        }
        endpoints
    }

    /// The subscriptions as `/config` shows them.
    pub fn describe(&self) -> BTreeMap<String, serde_json::Value> {
        self.entries
            .load()
            .iter()
            .map(|(authority, entry)| {
                let versioned = entry.answers.borrow();
                let (state, endpoints) = match &versioned.resolution {
                    Resolution::Pending => ("pending", Vec::new()),
                    Resolution::NotFound => ("not_found", Vec::new()),
                    Resolution::Found(service) => ("found", service.endpoints.clone()),
                };
                let value = serde_json::json!({
                    "version": versioned.version,
                    "state": state,
                    "endpoints": endpoints,
                });
                (authority.to_string(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
