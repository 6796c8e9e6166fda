//! The Kubernetes source at work: reflectors (watch + local store) on Services,
//! EndpointSlices, Pods and HTTPRoutes, resuming after watch errors with kube's default
//! backoff; on every change the model is rebuilt from the stores by the pure mapping
//! (off the async runtime: a large cluster makes it heavy), and published as the next
//! version when it serves something different. Nothing is published until every kind
//! has been listed once, so a restarted control plane never pushes a half-read cluster
//! (say, Services without their endpoints) to the proxies.
//!
//! Changes are debounced: the model is rebuilt 100 ms after the first change of a burst,
//! with everything that arrived meanwhile. The initial list of a cluster is thousands of
//! events, and a rollout changes pods and EndpointSlices in quick succession; rebuilding
//! and pushing per event would send every proxy a train of intermediate models for no
//! gain, while 100 ms is far below the time a pod takes to become ready.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::DynamicObject;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::events::PolicyEvents;
use super::mapping::{self, Problem, Settings};
use super::objects::{self, HttpRoute, Snapshot};
use crate::mesh_file::PolicyBlock;
use crate::metrics::Metrics;
use crate::model::MeshModel;

/// How long a burst of changes is gathered before the model is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Services,
    EndpointSlices,
    Pods,
    HttpRoutes,
}

const KINDS: [Kind; 4] = [
    Kind::Services,
    Kind::EndpointSlices,
    Kind::Pods,
    Kind::HttpRoutes,
];

/// What one watcher reported: a list completed (`Ok(true)`), another change, or an error.
type Change = (Kind, Result<bool, watcher::Error>);

/// The mesh model of a cluster, and the problems met building it.
pub struct ClusterSource {
    trust_domain: String,
    cluster_domain: String,
    model: watch::Sender<Arc<MeshModel>>,
    problems: watch::Sender<Arc<Vec<Problem>>>,
    metrics: Arc<Metrics>,
}

impl ClusterSource {
    /// A source with the empty model (version 0) until the cluster has been read.
    pub fn new(trust_domain: &str, cluster_domain: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            trust_domain: trust_domain.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
            model: watch::Sender::new(Arc::new(MeshModel::empty(trust_domain))),
            problems: watch::Sender::new(Arc::new(Vec::new())),
            metrics,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshModel>> {
        self.model.subscribe()
    }

    pub fn current(&self) -> Arc<MeshModel> {
        self.model.borrow().clone()
    }

    /// Every current problem (not only the new ones).
    pub fn problems(&self) -> Arc<Vec<Problem>> {
        self.problems.borrow().clone()
    }

    /// The problems, changing with every rebuild that changes them.
    pub fn watch_problems(&self) -> watch::Receiver<Arc<Vec<Problem>>> {
        self.problems.subscribe()
    }

    /// Watches the cluster through `client` and keeps the model current, until the task
    /// is aborted; `events` (when given) reports bad policies as Kubernetes Events.
    pub fn start(
        self: &Arc<Self>,
        client: kube::Client,
        events: Option<PolicyEvents>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(client, events))
    }

    async fn run(self: Arc<Self>, client: kube::Client, mut events: Option<PolicyEvents>) {
        let (services, services_writer) = reflector::store::<Service>();
        let (slices, slices_writer) = reflector::store::<EndpointSlice>();
        let (pods, pods_writer) = reflector::store::<Pod>();
        let route_kind = objects::http_route_resource();
        let routes_writer = reflector::store::Writer::<DynamicObject>::new(route_kind.clone());
        let routes = routes_writer.as_reader();
        let mut changes = stream::select_all([
            changes(
                Kind::Services,
                services_writer,
                Api::all(client.clone()),
                |_| {},
            ),
            changes(
                Kind::EndpointSlices,
                slices_writer,
                Api::all(client.clone()),
                |_| {},
            ),
            changes(Kind::Pods, pods_writer, Api::all(client.clone()), prune_pod),
            changes(
                Kind::HttpRoutes,
                routes_writer,
                Api::all_with(client, &route_kind),
                |_| {},
            ),
        ]);
        let mut listed = BTreeSet::new();
        let mut last_good: BTreeMap<String, PolicyBlock> = BTreeMap::new();
        while let Some(change) = changes.next().await {
            note(change, &mut listed);
            let gathered = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(gathered);
            loop {
                tokio::select! {
                    () = &mut gathered => break,
                    change = changes.next() => match change {
                        Some(change) => note(change, &mut listed),
                        None => break,
                    },
                }
            }
            if !KINDS.iter().all(|kind| listed.contains(kind)) {
                continue;
            }
            let snapshot = Snapshot {
                services: services.state(),
                slices: slices.state(),
                pods: pods.state(),
                routes: http_routes(&routes),
            };
            let services = snapshot.services.clone();
            let (trust_domain, cluster_domain) =
                (self.trust_domain.clone(), self.cluster_domain.clone());
            let previous = std::mem::take(&mut last_good);
            let mapped = tokio::task::spawn_blocking(move || {
                let settings = Settings {
                    trust_domain: &trust_domain,
                    cluster_domain: &cluster_domain,
                };
                mapping::map(&snapshot, &settings, &previous)
            })
            .await
            .expect("the mapping does not panic");
            last_good = mapped.last_good;
            self.publish(mapped.model);
            let problems = Arc::new(mapped.problems);
            self.problems.send_if_modified(|current| {
                let changed = **current != *problems;
                if changed {
                    *current = problems.clone();
                }
                changed
            });
            if let Some(events) = &mut events {
                events.report(&problems, &services).await;
            }
        }
    }

    /// Publishes `model` as the next version, unless it serves what the current one does.
    fn publish(&self, model: MeshModel) {
        let current = self.current();
        if current.version == 0 || !model.serves_as(&current) {
            crate::source::publish_next(&self.model, &self.metrics, model, "the cluster changed");
        }
    }
}

/// One kind's watcher, feeding `writer`'s store, with kube's default backoff after errors.
/// `prune` drops what the mapping never reads before the store keeps it.
fn changes<K>(
    kind: Kind,
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    prune: fn(&mut K),
) -> BoxStream<'static, Change>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let watched = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(prune);
    reflector::reflector(writer, watched)
        .map(move |event| {
            (
                kind,
                event.map(|event| matches!(event, watcher::Event::InitDone)),
            )
        })
        .boxed()
}

/// Records a change: which kinds have been listed, and why a watch failed. HTTPRoutes
/// are optional: when their CRD is not installed (404) or the control plane may not list
/// them (403), that is logged once and means no routes (the watcher keeps trying, so
/// routes appear once it can read them).
fn note((kind, change): Change, listed: &mut BTreeSet<Kind>) {
    match change {
        Ok(true) => {
            listed.insert(kind);
        }
        Ok(false) => {}
        Err(err) if kind == Kind::HttpRoutes && matches!(status_code(&err), Some(403 | 404)) => {
            if listed.insert(kind) {
                tracing::info!(
                    error = %err,
                    "HTTPRoutes (gateway.networking.k8s.io/v1) cannot be listed (CRD not \
                     installed, or not allowed): no routes come from HTTPRoutes until they can"
                );
            }
        }
        Err(err) => {
            tracing::warn!(kind = ?kind, error = %err, "watch failed; retrying with backoff");
        }
    }
}

/// The HTTP status of an API server's refusal.
fn status_code(err: &watcher::Error) -> Option<u16> {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// The HTTPRoutes of the store; one that does not read as an HTTPRoute is left out (the
/// API server validates them against the CRD's schema, so this is not expected).
fn http_routes(store: &Store<DynamicObject>) -> Vec<HttpRoute> {
    store
        .state()
        .iter()
        .filter_map(|object| {
            let value = serde_json::to_value(&**object).ok()?;
            match serde_json::from_value::<HttpRoute>(value) {
                Ok(route) => Some(route),
                Err(err) => {
                    tracing::warn!(
                        route = ?object.metadata.name,
                        error = %err,
                        "an HTTPRoute cannot be read; it is left out"
                    );
                    None
                }
            }
        })
        .collect()
}

/// Keeps only what the mapping reads of a pod (its name, namespace, containers' names,
/// ServiceAccount and `seam.io/opaque-ports`): a cluster's pods are most of what the
/// control plane holds.
fn prune_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = &mut pod.metadata.annotations {
        annotations.retain(|key, _| key == super::mapping::OPAQUE_PORTS_ANNOTATION);
    }
    pod.status = None;
    if let Some(spec) = &mut pod.spec {
        for container in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            *container = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut container.name),
                ..Default::default()
            };
        }
        spec.volumes = None;
    }
}

#[cfg(test)]
mod tests;
