//! Keeps the injector's MutatingWebhookConfiguration (`--webhook-config`, default
//! `seam-injector`) trusting the webhook's serving certificate: the `clientConfig.caBundle`
//! of each of its webhooks is the mesh's trust bundle, since that certificate comes from
//! the mesh CA. Patched at start, on every root rotation, and checked again every minute
//! (so a re-applied manifest with an empty caBundle is repaired). A configuration that
//! does not exist yet is not an error: it is logged and looked for again later.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::ca::CertificateAuthority;
use crate::ca::store::bundle_pem;

/// How often the configuration is checked again, and how soon after a failure.
const RECHECK_EVERY: Duration = Duration::from_secs(60);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patched {
    /// No such MutatingWebhookConfiguration (yet).
    Absent,
    /// Every webhook already had the bundle.
    Unchanged,
    /// This many webhooks got the new bundle.
    Webhooks(usize),
}

/// Sets the caBundle of every webhook of configuration `name` to `pem` with one JSON
/// Patch; each change is guarded by a test of that webhook's name, so a concurrent edit
/// that reorders the webhooks makes the patch fail rather than land on the wrong one.
pub async fn patch_ca_bundle(
    client: &kube::Client,
    name: &str,
    pem: &str,
) -> Result<Patched, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(config) = api.get_opt(name).await? else {
        return Ok(Patched::Absent);
    };
    let mut operations = Vec::new();
    for (index, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|bundle| bundle.0.as_slice())
            == Some(pem.as_bytes())
        {
            continue;
        }
        operations.push(json!({ "op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook.name }));
        operations.push(json!({
            "op": "add",
            "path": format!("/webhooks/{index}/clientConfig/caBundle"),
            "value": ByteString(pem.as_bytes().to_vec()),
        }));
    }
    if operations.is_empty() {
        return Ok(Patched::Unchanged);
    }
    let webhooks = operations.len() / 2;
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))
        .map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(Patched::Webhooks(webhooks))
}

/// Keeps configuration `name`'s caBundle equal to `ca`'s trust bundle, for as long as
/// the task runs.
pub async fn run(client: kube::Client, name: String, ca: Arc<CertificateAuthority>) {
    let mut bundle_changes = ca.subscribe();
    loop {
        let pem = bundle_pem(&ca.trust_bundle());
        let check_again = match patch_ca_bundle(&client, &name, &pem).await {
            Ok(Patched::Absent) => {
                tracing::info!(
                    webhook_config = name,
                    "no MutatingWebhookConfiguration of that name yet (--webhook-config); looking again in {RECHECK_EVERY:?}"
                );
                RECHECK_EVERY
            }
            Ok(Patched::Unchanged) => RECHECK_EVERY,
            Ok(Patched::Webhooks(webhooks)) => {
                tracing::info!(
                    webhook_config = name,
                    webhooks,
                    "set the webhooks' caBundle to the mesh trust bundle"
                );
                RECHECK_EVERY
            }
            Err(err) => {
                tracing::warn!(webhook_config = name, error = %err, "cannot set the webhooks' caBundle; retrying in {RETRY_AFTER_ERROR:?}");
                RETRY_AFTER_ERROR
            }
        };
        tokio::select! {
            changed = bundle_changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(check_again) => {}
        }
    }
}

#[cfg(test)]
mod tests;
