//! The Kubernetes injection webhook: a mutating admission webhook (`admission.k8s.io/v1`)
//! the control plane serves over HTTPS whatever its `--source`. Two paths, one per webhook
//! of the `seam-injector` configuration (the API server's namespaceSelector, not the
//! review, knows the namespace's labels): `/inject` for namespaces labelled
//! `seam.io/inject=enabled`, `/inject-annotated` for the others, where only pods annotated
//! `seam.io/inject: enabled` are injected. The answer is a JSON patch from the
//! [`crate::injector`]; a pod left alone for a reason its owner should know gets the
//! annotation `seam.io/inject-skipped` and a warning. [`server`] serves it, [`tls`] holds
//! its certificate.

pub mod server;
pub mod tls;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::injector::{self, Decision, PodInput, Settings, annotations, workloads};

/// Which webhook called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/inject`: the pod's namespace is labelled `seam.io/inject=enabled`.
    EnabledNamespace,
    /// `/inject-annotated`: any other namespace; only annotated pods are injected.
    AnnotatedPods,
}

impl Scope {
    pub fn of_path(path: &str) -> Option<Self> {
        match path {
            "/inject" => Some(Self::EnabledNamespace),
            "/inject-annotated" => Some(Self::AnnotatedPods),
            _ => None,
        }
    }
}

/// A body that is not an AdmissionReview the webhook can answer: a 400 with the reason.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("not an admission.k8s.io/v1 AdmissionReview of a Pod: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview's request has no object")]
    NoObject,
    #[error("cannot write the patch: {0}")]
    Patch(String),
}

/// Answers one AdmissionReview (the request body) with the AdmissionReview to send back.
pub fn review(
    body: &[u8],
    scope: Scope,
    settings: &Settings,
) -> Result<AdmissionReview<DynamicObject>, BadReview> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|_| BadReview::NoRequest)?;
    let response = AdmissionResponse::from(&request);
    if request.kind.kind != "Pod" {
        // Not ours to touch: the configuration asks for pods only.
        return Ok(response.into_review());
    }
    let pod = request.object.as_ref().ok_or(BadReview::NoObject)?;
    let empty = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let workload = workload_of(pod);
    let input = PodInput {
        meta: &pod.metadata,
        spec,
        workload: &workload,
        namespace_enabled: scope == Scope::EnabledNamespace,
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let response = match injector::decide(&input, settings) {
        Ok(Decision::Inject(additions)) => {
            tracing::info!(%namespace, %workload, "injecting");
            response
                .with_patch(injector::to_patch(&[], &additions))
                .map_err(|err| BadReview::Patch(err.to_string()))?
        }
        Ok(Decision::Skip(reason)) if reason.is_notable() => {
            tracing::info!(%namespace, %workload, %reason, "left alone");
            let note = injector::annotation(
                &pod.metadata,
                annotations::INJECT_SKIPPED,
                &reason.to_string(),
            );
            let mut response = response
                .with_patch(injector::to_patch(&[], &[note]))
                .map_err(|err| BadReview::Patch(err.to_string()))?;
            response.warnings = Some(vec![format!("seam: pod not injected: {reason}")]);
            response
        }
        Ok(Decision::Skip(_)) => response,
        Err(bad) => {
            tracing::info!(%namespace, %workload, error = %bad, "refused");
            response.deny(format!("seam: cannot inject this pod: {bad}"))
        }
    };
    Ok(response.into_review())
}

/// The answer's JSON. kube writes the patch's bytes as an array of numbers, which Go's
/// decoder happens to accept; the API's documented form is base64, so that is what is sent.
pub fn to_json(answer: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    let mut json = serde_json::to_value(answer)?;
    if let Some(patch) = json.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(patch.take())?;
        *patch = serde_json::to_value(k8s_openapi::ByteString(bytes))?;
    }
    serde_json::to_vec(&json)
}

/// The name of the pod's workload: its controller's (a Deployment's for a ReplicaSet's
/// pod), else its own.
fn workload_of(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|owner| owner.controller == Some(true))
        .or_else(|| owners.first())
        .map(|owner| (owner.kind.as_str(), owner.name.as_str()));
    let hash = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get("pod-template-hash"))
        .map(String::as_str);
    workloads::workload_name(
        meta.name.as_deref(),
        meta.generate_name.as_deref(),
        owner,
        hash,
    )
}

#[cfg(test)]
mod tests;
