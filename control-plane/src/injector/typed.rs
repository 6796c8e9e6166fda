//! Test support: a manifest read into its k8s-openapi type and written back must come out
//! the same, so a misspelt or misplaced field (which the types would silently drop) fails
//! the test as surely as a wrong type does. YAML is read with serde-saphyr into JSON first.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(document: &Value) -> Result<(), String> {
    let typed: T =
        serde_path_to_error::deserialize(document.clone()).map_err(|err| err.to_string())?;
    let again = serde_json::to_value(&typed).map_err(|err| err.to_string())?;
    if &again != document {
        return Err(format!(
            "fields lost or changed by the typed round trip:\nwritten: {document}\nread:    {again}"
        ));
    }
    Ok(())
}

/// Checks one document (a `List`'s items each); kinds Seam does not know are skipped.
pub fn check(document: &Value) -> Result<(), String> {
    let kind = document["kind"].as_str().unwrap_or_default();
    let name = document["metadata"]["name"].as_str().unwrap_or_default();
    let result = match kind {
        "List" => {
            for item in document["items"].as_array().into_iter().flatten() {
                check(item)?;
            }
            Ok(())
        }
        "Pod" => round_trip::<Pod>(document),
        "Deployment" => round_trip::<Deployment>(document),
        "StatefulSet" => round_trip::<StatefulSet>(document),
        "DaemonSet" => round_trip::<DaemonSet>(document),
        "ReplicaSet" => round_trip::<ReplicaSet>(document),
        "Job" => round_trip::<Job>(document),
        "CronJob" => round_trip::<CronJob>(document),
        "Service" => round_trip::<Service>(document),
        "ServiceAccount" => round_trip::<ServiceAccount>(document),
        "ConfigMap" => round_trip::<ConfigMap>(document),
        "Namespace" => round_trip::<Namespace>(document),
        "ClusterRole" => round_trip::<ClusterRole>(document),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(document),
        "Role" => round_trip::<Role>(document),
        "RoleBinding" => round_trip::<RoleBinding>(document),
        "MutatingWebhookConfiguration" => round_trip::<MutatingWebhookConfiguration>(document),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(document),
        _ => Ok(()),
    };
    result.map_err(|err| format!("{kind} {name}: {err}"))
}

/// Checks every document of a multi-document YAML text; returns how many there were.
pub fn check_yaml(text: &str) -> Result<usize, String> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|err| err.to_string())?;
    let documents: Vec<&Value> = documents.iter().filter(|doc| !doc.is_null()).collect();
    for document in &documents {
        check(document)?;
    }
    Ok(documents.len())
}
