//! The Kubernetes objects the source reads: Services, EndpointSlices and Pods as
//! k8s-openapi types, and Gateway API HTTPRoutes (`gateway.networking.k8s.io/v1`) as the
//! small serde structs below, holding only what Seam reads (unknown fields are ignored;
//! the fields Seam does not support are kept so the mapping can refuse them by name).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde_json::Value;

/// Everything the mapping reads, as the watchers last saw it (shared with their stores).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
    pub routes: Vec<HttpRoute>,
}

/// The HTTPRoute kind, for an `Api<DynamicObject>` (Seam does not depend on the
/// gateway-api crate).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Absent: `gateway.networking.k8s.io`.
    pub group: Option<String>,
    /// Absent: `Gateway`.
    pub kind: Option<String>,
    /// Absent: the route's namespace.
    pub namespace: Option<String>,
    pub name: String,
    pub port: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Empty: every request (a `PathPrefix` of `/`).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Not supported: a rule with any is refused.
    #[serde(default)]
    pub filters: Vec<Value>,
    /// The rule's other fields (`retry`, `sessionPersistence`, ...): not supported
    /// (`name` is allowed).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: Option<HttpPathMatch>,
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    pub method: Option<String>,
    /// Not supported: a match with any is refused.
    #[serde(default)]
    pub query_params: Vec<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpPathMatch {
    /// Absent: `PathPrefix`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Absent: `/`.
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpHeaderMatch {
    /// Absent: `Exact`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// Absent or `""`: the core group.
    pub group: Option<String>,
    /// Absent: `Service`.
    pub kind: Option<String>,
    pub name: String,
    /// Absent: the route's namespace.
    pub namespace: Option<String>,
    pub port: Option<i32>,
    /// Absent: 1.
    pub weight: Option<i32>,
    /// Not supported: a backend with any is refused.
    #[serde(default)]
    pub filters: Vec<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// The `NAME.NAMESPACE` of an object (its namespace `default` when unset).
pub fn key(metadata: &ObjectMeta) -> String {
    format!("{}.{}", name(metadata), namespace(metadata))
}

pub fn name(metadata: &ObjectMeta) -> &str {
    metadata.name.as_deref().unwrap_or_default()
}

pub fn namespace(metadata: &ObjectMeta) -> &str {
    metadata.namespace.as_deref().unwrap_or("default")
}
