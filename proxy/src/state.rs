//! The proxy's view of the services it talks to: for each authority the app has used, what
//! the control plane last said about it, published as immutable snapshots (arc-swap for
//! the request path, a watch channel per authority for the first request that waits),
//! with each service's routes and policies ([`policy`]). No sockets here.

pub mod endpoints;
pub mod policy;
pub mod rate_limit;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::HashMap;
use parking_lot::Mutex;
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
    #[error("this proxy already tracks {0} services, its limit")]
    TooManyServices(usize),
}

pub struct Directory {
    entries: ArcSwap<HashMap<String, watch::Sender<Versioned>>>,
    /// Serialises adding entries, so two first requests for one authority subscribe once.
    adding: Mutex<()>,
    subscribe: mpsc::UnboundedSender<String>,
    max_entries: usize,
}

impl Directory {
    /// A directory that asks for new authorities on `subscribe`.
    pub fn new(subscribe: mpsc::UnboundedSender<String>, max_entries: usize) -> Self {
        Self {
            entries: ArcSwap::from_pointee(HashMap::default()),
            adding: Mutex::new(()),
            subscribe,
            max_entries,
        }
    }

    /// Resolves `authority`, subscribing on first use and then waiting up to `wait` for
    /// the control plane's first answer.
    pub async fn resolve(
        &self,
        authority: &str,
        wait: Duration,
    ) -> Result<Resolution, LookupError> {
        let mut answers = match self.entries.load().get(authority) {
            Some(entry) => {
                let resolution = entry.borrow().resolution.clone();
                if !matches!(resolution, Resolution::Pending) {
                    return Ok(resolution);
                }
                entry.subscribe()
            }
            None => self.add(authority)?,
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

    fn add(&self, authority: &str) -> Result<watch::Receiver<Versioned>, LookupError> {
        let _adding = self.adding.lock();
        let current = self.entries.load();
        if let Some(entry) = current.get(authority) {
            return Ok(entry.subscribe());
        }
        if current.len() >= self.max_entries {
            return Err(LookupError::TooManyServices(self.max_entries));
        }
        let (sender, receiver) = watch::channel(Versioned {
            version: None,
            resolution: Resolution::Pending,
        });
        let mut next = HashMap::clone(&current);
        next.insert(authority.to_owned(), sender);
        self.entries.store(Arc::new(next));
        // The discovery task is gone only when the proxy is stopping.
        let _ = self.subscribe.send(authority.to_owned());
        Ok(receiver)
    }

    /// Records the control plane's answer for `authority` (ignored if never subscribed).
    pub fn apply(&self, authority: &str, version: u64, resolution: Resolution) {
        if let Some(entry) = self.entries.load().get(authority) {
            entry.send_replace(Versioned {
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
            .is_some_and(|entry| !matches!(entry.borrow().resolution, Resolution::Pending))
    }

    /// Every authority subscribed so far, to subscribe again after a reconnect.
    pub fn authorities(&self) -> Vec<String> {
        self.entries.load().keys().cloned().collect()
    }

    /// Every endpoint of every known service.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
        for entry in self.entries.load().values() {
            if let Resolution::Found(service) = &entry.borrow().resolution {
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
                let versioned = entry.borrow();
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
                (authority.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
