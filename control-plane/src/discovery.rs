//! `seam.v1.Discovery`: one stream per proxy. The proxy (known by its mesh certificate)
//! subscribes to authorities; each subscription is answered at once and again whenever
//! what it resolves to changes; the proxy's ACKs and NACKs are recorded for operators.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use seam_proto::SpiffeId;
use seam_proto::v1::discovery_server::Discovery;
use seam_proto::v1::{self, ServiceUpdate, WatchRequest, service_update, watch_request};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::kubernetes::naming;
use crate::metrics::Metrics;
use crate::model::{
    AbortAnswer, Authorization, Endpoint, Fault, LoadBalancer, MeshModel, MilliRate, PathMatch,
    Policy, RateLimit, Resolution, ResolvedMirror, ResolvedRoute, RetryOn,
};
use crate::registry::{ProxyEntry, ProxyRegistry};

/// The most authorities one proxy may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// The longest authority accepted (a DNS name's limit, plus a port).
const MAX_AUTHORITY_LEN: usize = 260;

pub struct DiscoveryService {
    pub model: watch::Receiver<Arc<MeshModel>>,
    pub registry: Arc<ProxyRegistry>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
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
        let entry = self
            .registry
            .register(&service, peer.as_str(), self.metrics.clone());
        tracing::info!(proxy = entry.id(), spiffe_id = %peer, "proxy connected");
        let (updates, receiver) = mpsc::channel(64);
        let session = Session {
            entry,
            peer,
            model: self.model.clone(),
            metrics: self.metrics.clone(),
            updates,
            subscriptions: BTreeMap::new(),
        };
        tokio::spawn(session.run(request.into_inner(), self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
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

struct Session {
    entry: ProxyEntry,
    peer: SpiffeId,
    model: watch::Receiver<Arc<MeshModel>>,
    metrics: Arc<Metrics>,
    updates: mpsc::Sender<Result<ServiceUpdate, Status>>,
    /// What each subscribed authority was last sent as.
    subscriptions: BTreeMap<String, Resolution>,
}

/// Whether the session goes on after handling something.
enum Next {
    Continue,
    End,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<WatchRequest>, shutdown: CancellationToken) {
        self.model.mark_unchanged();
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.updates.send(Err(Status::unavailable("control plane shutting down"))).await;
                    Next::End
                }
                request = requests.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) => Next::End,
                    Err(status) => {
                        tracing::debug!(proxy = self.entry.id(), %status, "discovery stream broke");
                        Next::End
                    }
                },
                changed = self.model.changed() => match changed {
                    Ok(()) => self.push_changes().await,
                    Err(_) => Next::End,
                },
            };
            if let Next::End = next {
                break;
            }
        }
        tracing::info!(proxy = self.entry.id(), spiffe_id = %self.peer, "proxy disconnected");
    }

    async fn handle(&mut self, request: WatchRequest) -> Next {
        match request.kind {
            Some(watch_request::Kind::Hello(hello)) => {
                self.entry.hello(hello.admin_addr, hello.proxy_version);
                Next::Continue
            }
            Some(watch_request::Kind::Subscribe(subscribe)) => {
                self.subscribe(subscribe.authority).await
            }
            Some(watch_request::Kind::Unsubscribe(unsubscribe)) => {
                self.subscriptions.remove(&unsubscribe.authority);
                self.entry.unsubscribed(&unsubscribe.authority);
                Next::Continue
            }
            Some(watch_request::Kind::Ack(ack)) => {
                self.entry.acked(&ack.authority, ack.version);
                Next::Continue
            }
            Some(watch_request::Kind::Nack(nack)) => {
                self.metrics.discovery_nacks.inc();
                tracing::warn!(
                    proxy = self.entry.id(), spiffe_id = %self.peer, authority = nack.authority,
                    version = nack.version, reason = nack.reason, "a proxy refused an update"
                );
                self.entry
                    .nacked(&nack.authority, nack.version, nack.reason);
                Next::Continue
            }
            None => Next::Continue,
        }
    }

    /// The proxy's namespace, from its workload identity: Kubernetes names without one
    /// are relative to it.
    fn namespace(&self) -> Option<&str> {
        naming::namespace_of(self.peer.path())
    }

    async fn subscribe(&mut self, authority: String) -> Next {
        if authority.is_empty() || authority.len() > MAX_AUTHORITY_LEN {
            return self
                .fail(Status::invalid_argument(format!(
                    "authority {authority:?} must be 1 to {MAX_AUTHORITY_LEN} bytes"
                )))
                .await;
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS
            && !self.subscriptions.contains_key(&authority)
        {
            return self
                .fail(Status::resource_exhausted(format!(
                    "a proxy may subscribe to at most {MAX_SUBSCRIPTIONS} authorities"
                )))
                .await;
        }
        let model = self.model.borrow().clone();
        let resolution = model.resolve_for(&authority, self.namespace());
        self.entry.subscribed(&authority);
        let next = self.send(&authority, model.version, &resolution).await;
        self.subscriptions.insert(authority, resolution);
        next
    }

    async fn push_changes(&mut self) -> Next {
        let started = std::time::Instant::now();
        let model = self.model.borrow_and_update().clone();
        let mut changed = Vec::new();
        let namespace = naming::namespace_of(self.peer.path());
        for (authority, sent) in &mut self.subscriptions {
            let resolution = model.resolve_for(authority, namespace);
            if resolution != *sent {
                *sent = resolution.clone();
                changed.push((authority.clone(), resolution));
            }
        }
        let pushed = !changed.is_empty();
        for (authority, resolution) in changed {
            if let Next::End = self.send(&authority, model.version, &resolution).await {
                return Next::End;
            }
        }
        if pushed {
            self.metrics
                .discovery_push_duration
                .observe(started.elapsed().as_secs_f64());
        }
        Next::Continue
    }

    async fn send(&self, authority: &str, version: u64, resolution: &Resolution) -> Next {
        let update = to_proto(authority, version, resolution);
        if self.updates.send(Ok(update)).await.is_err() {
            return Next::End;
        }
        self.metrics.discovery_updates.inc();
        self.entry.sent(authority, version);
        Next::Continue
    }

    async fn fail(&self, status: Status) -> Next {
        let _ = self.updates.send(Err(status)).await;
        Next::End
    }
}

fn authorization_to_proto(authorization: &Authorization) -> v1::Authorization {
    v1::Authorization {
        restricted: authorization.allow.is_some(),
        allowed_identities: authorization
            .allow
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect(),
        allow_plaintext: authorization.allow_plaintext,
    }
}

fn to_proto(authority: &str, version: u64, resolution: &Resolution) -> ServiceUpdate {
    let state = match resolution {
        Resolution::Service(service) => service_update::State::Service(v1::Service {
            name: service.name.clone(),
            endpoints: endpoints_to_proto(&service.endpoints),
            policy: Some(policy_to_proto(
                &service.policy,
                service.mirror.as_ref(),
                Some(service.instances),
            )),
            routes: service
                .routes
                .iter()
                .map(|route| route_to_proto(route, service.instances))
                .collect(),
            authorization: Some(authorization_to_proto(&service.authorization)),
            opaque_ports: service
                .opaque_ports
                .iter()
                .copied()
                .map(u32::from)
                .collect(),
            request_id_off: service.request_id_off,
        }),
        Resolution::NotFound => service_update::State::NotFound(v1::NotFound {}),
    };
    ServiceUpdate {
        authority: authority.to_owned(),
        version,
        state: Some(state),
    }
}

fn endpoints_to_proto(endpoints: &[Endpoint]) -> Vec<v1::Endpoint> {
    endpoints
        .iter()
        .map(|endpoint| v1::Endpoint {
            address: endpoint.address.to_string(),
            identity: endpoint
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            plaintext: endpoint.identity.is_none(),
        })
        .collect()
}

fn millis(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `policy` as pushed: its mirror is `mirror`, the policy's own resolved; its rate limit is
/// divided among `instances` when given (`None`: leave the rate limit out, as a route that
/// shares its service's does).
fn policy_to_proto(
    policy: &Policy,
    mirror: Option<&ResolvedMirror>,
    instances: Option<usize>,
) -> v1::Policy {
    let retries = &policy.retries;
    let breaker = &policy.circuit_breaker;
    v1::Policy {
        timeout_ms: millis(policy.timeout),
        retries: Some(v1::RetryPolicy {
            attempts: retries.attempts,
            per_try_timeout_ms: millis(retries.per_try_timeout),
            on: retries
                .on
                .iter()
                .map(|on| {
                    let on = match on {
                        RetryOn::ServerError => v1::RetryOn::RetryOn5xx,
                        RetryOn::ConnectFailure => v1::RetryOn::ConnectFailure,
                        RetryOn::Reset => v1::RetryOn::Reset,
                        RetryOn::Unavailable => v1::RetryOn::Unavailable,
                        RetryOn::RateLimited => v1::RetryOn::RateLimited,
                    };
                    on as i32
                })
                .collect(),
            budget_percent: retries.budget_percent,
            non_idempotent: retries.non_idempotent,
        }),
        circuit_breaker: Some(v1::CircuitBreaker {
            consecutive_failures: breaker.consecutive_failures,
            base_ejection_time_ms: millis(Some(breaker.base_ejection_time)),
            max_ejection_percent: breaker.max_ejection_percent,
        }),
        max_concurrent_requests: policy.max_concurrent_requests,
        load_balancer: match policy.load_balancer {
            LoadBalancer::Ewma => v1::LoadBalancer::Ewma,
            LoadBalancer::RoundRobin => v1::LoadBalancer::RoundRobin,
        } as i32,
        fault: policy.fault.as_ref().map(fault_to_proto),
        mirror: mirror.map(|mirror| v1::Mirror {
            service: mirror.service.clone(),
            percent: mirror.percent.value(),
            endpoints: endpoints_to_proto(&mirror.endpoints),
        }),
        rate_limit: instances.and_then(|instances| {
            policy
                .rate_limit
                .as_ref()
                .map(|limit| rate_limit_share(limit, instances))
        }),
    }
}

fn fault_to_proto(fault: &Fault) -> v1::Fault {
    v1::Fault {
        delay: fault.delay.as_ref().map(|delay| v1::FaultDelay {
            fixed_ms: millis(Some(delay.fixed)),
            percent: delay.percent.value(),
        }),
        abort: fault.abort.as_ref().map(|abort| v1::FaultAbort {
            answer: Some(match abort.answer {
                AbortAnswer::Http(status) => v1::fault_abort::Answer::HttpStatus(status.into()),
                AbortAnswer::Grpc(status) => v1::fault_abort::Answer::GrpcStatus(status),
            }),
            percent: abort.percent.value(),
        }),
    }
}

/// One instance's share of a service's rate limits when `instances` share them: each
/// rate divided (at least 0.001 requests per second), the burst divided and rounded up
/// (at least 1); with no burst given, one second of the instance's rate.
fn rate_limit_share(limit: &RateLimit, instances: usize) -> v1::RateLimit {
    let instances = instances.max(1);
    let rule = |rate: MilliRate, burst: Option<u32>| {
        let share = rate.share(instances);
        let burst = match burst {
            Some(burst) => u64::from(burst).div_ceil(instances as u64),
            None => share.div_ceil(1000),
        };
        v1::RateLimitRule {
            millirequests_per_second: share,
            burst: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
        }
    };
    v1::RateLimit {
        total: limit.total.map(|rate| rule(rate, limit.burst)),
        per_caller: limit.per_caller.map(|rate| rule(rate, limit.burst)),
        overrides: limit
            .overrides
            .iter()
            .map(|entry| v1::RateLimitOverride {
                callers: entry.callers.iter().map(ToString::to_string).collect(),
                limit: Some(rule(entry.rate, entry.burst.or(limit.burst))),
            })
            .collect(),
        instances: u32::try_from(instances).unwrap_or(u32::MAX),
    }
}

fn route_to_proto(route: &ResolvedRoute, instances: usize) -> v1::Route {
    let (path_prefix, path) = match &route.route_match.path {
        Some(PathMatch::Prefix(prefix)) => (prefix.clone(), String::new()),
        Some(PathMatch::Exact(path)) => (String::new(), path.clone()),
        None => (String::new(), String::new()),
    };
    v1::Route {
        r#match: Some(v1::RouteMatch {
            path_prefix,
            path,
            method: route.route_match.method.clone().unwrap_or_default(),
            headers: route.route_match.headers.clone().into_iter().collect(),
        }),
        policy: Some(policy_to_proto(
            &route.policy,
            route.mirror.as_ref(),
            route.own_rate_limit.then_some(instances),
        )),
        backends: route
            .backends
            .iter()
            .map(|backend| v1::WeightedBackend {
                service: backend.service.clone(),
                weight: backend.weight,
                endpoints: endpoints_to_proto(&backend.endpoints),
            })
            .collect(),
        authorization: route.allow.as_ref().map(|allow| {
            authorization_to_proto(&Authorization {
                allow: Some(allow.clone()),
                allow_plaintext: false,
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_file;

    fn service_of(model: &MeshModel, authority: &str) -> v1::Service {
        match to_proto(authority, 1, &model.resolve(authority)).state {
            Some(service_update::State::Service(service)) => service,
            other => panic!("{authority}: {other:?}"),
        }
    }

    #[test]
    fn faults_and_mirrors_go_out_with_the_mirror_services_endpoints() {
        let text = "services:
  api:
    join_token: t
    fault:
      delay: { fixed: 20ms, percent: 0.5 }
    mirror: { service: shadow, percent: 10 }
    routes:
      - match: { path_prefix: /v2 }
        fault:
          abort: { grpc_status: 14, percent: 5 }
  shadow:
    join_token: s
    endpoints: [\"10.0.0.9:4143\"]
";
        let path = std::path::Path::new("mesh.yaml");
        let model = mesh_file::parse(path, text, "seam.local").expect("a valid mesh file");
        let api = service_of(&model, "api");
        let policy = api.policy.expect("a policy");
        let delay = policy.fault.and_then(|fault| fault.delay).expect("a delay");
        assert_eq!((delay.fixed_ms, delay.percent), (20, 0.5));
        let mirror = policy.mirror.expect("a mirror");
        assert_eq!((mirror.service.as_str(), mirror.percent), ("shadow", 10.0));
        assert_eq!(mirror.endpoints[0].address, "10.0.0.9:4143");
        assert_eq!(
            mirror.endpoints[0].identity,
            "spiffe://seam.local/ns/default/sa/shadow"
        );
        let route = api.routes[0].policy.clone().expect("a route policy");
        let fault = route.fault.expect("the route's own fault");
        assert!(
            fault.delay.is_none(),
            "the route's fault replaces the service's"
        );
        let abort = fault.abort.expect("an abort");
        assert_eq!(abort.answer, Some(v1::fault_abort::Answer::GrpcStatus(14)));
        assert_eq!(
            route.mirror.map(|mirror| mirror.service),
            Some("shadow".into()),
            "the route inherits the service's mirror"
        );

        // The mirror service gains an endpoint: api's subscription changes with it.
        let moved = text.replace("10.0.0.9:4143", "10.0.0.10:4143");
        let after = mesh_file::parse(path, &moved, "seam.local").expect("a valid mesh file");
        assert_ne!(after.resolve("api"), model.resolve("api"));
        let endpoints = service_of(&after, "api")
            .policy
            .unwrap()
            .mirror
            .unwrap()
            .endpoints;
        assert_eq!(endpoints[0].address, "10.0.0.10:4143");
    }

    #[test]
    fn a_service_update_carries_the_effective_opaque_ports() {
        let text = "services:\n  db:\n    join_token: t\n    endpoints: [\"10.0.0.3:3306\"]\n    \
                    opaque_ports: [3306, 5432]\n  web:\n    join_token: w\n";
        let model = mesh_file::parse(std::path::Path::new("mesh.yaml"), text, "seam.local")
            .expect("a valid mesh file");
        let opaque_ports =
            |authority: &str| match to_proto(authority, 1, &model.resolve(authority)).state {
                Some(service_update::State::Service(service)) => service.opaque_ports,
                other => panic!("{authority}: {other:?}"),
            };
        assert_eq!(opaque_ports("db"), [3306, 5432]);
        assert_eq!(opaque_ports("10.0.0.3:3306"), [3306, 5432]);
        let defaults: Vec<u32> = seam_proto::defaults::OPAQUE_PORTS
            .iter()
            .copied()
            .map(u32::from)
            .collect();
        assert_eq!(
            opaque_ports("web"),
            defaults,
            "the default list, spelled out"
        );
    }

    #[test]
    fn each_instance_gets_its_share_of_the_rate_limit() {
        let text = "services:\n  api:\n    join_token: t\n    \
                    endpoints: [\"10.0.0.1:4143\", \"10.0.0.2:4143\", \"10.0.0.3:4143\"]\n    \
                    rate_limit: { requests_per_second: 100, burst: 20, per_caller: 0.002 }\n    \
                    routes:\n      - match: { path: /own }\n        rate_limit: { requests_per_second: 3 }\n      \
                    - match: { path: /shared }\n  web:\n    join_token: w\n";
        let model = mesh_file::parse(std::path::Path::new("mesh.yaml"), text, "seam.local")
            .expect("a valid mesh file");
        let Some(service_update::State::Service(api)) =
            to_proto("api", 1, &model.resolve("api")).state
        else {
            panic!("api is a service");
        };
        let limit = api.policy.unwrap().rate_limit.expect("the service's share");
        let total = limit.total.unwrap();
        assert_eq!(total.millirequests_per_second, 33_333);
        assert_eq!(total.burst, 7, "20 / 3, rounded up");
        let per_caller = limit.per_caller.unwrap();
        assert_eq!(
            per_caller.millirequests_per_second, 1,
            "never below 0.001/s"
        );
        assert_eq!(per_caller.burst, 7);
        assert_eq!(limit.instances, 3);
        let own = api.routes[0].policy.clone().unwrap().rate_limit.unwrap();
        let own_total = own.total.unwrap();
        assert_eq!(
            (own_total.millirequests_per_second, own_total.burst),
            (1000, 1)
        );
        assert_eq!(
            api.routes[1].policy.as_ref().unwrap().rate_limit,
            None,
            "a route that inherits the limit shares the service's buckets"
        );
        let pinned = match to_proto("10.0.0.2:4143", 1, &model.resolve("10.0.0.2:4143")).state {
            Some(service_update::State::Service(pinned)) => pinned,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pinned.policy.unwrap().rate_limit.unwrap().instances,
            3,
            "shares count every instance, whatever the authority"
        );
    }
}
