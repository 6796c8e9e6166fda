//! Keeps the injector's MutatingWebhookConfiguration (`--webhook-config`, default
//! `seam-injector`) trusting the webhook's serving certificate: the `clientConfig.caBundle`
//! of each of its webhooks is the mesh's trust bundle, since that certificate comes from
//! the mesh CA. Patched (a JSON merge patch) at start, on every root rotation, and
//! checked again every minute (so a re-applied manifest with an empty caBundle is
//! repaired). A configuration that does not exist yet is not an error: it is logged and
//! looked for again later.

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
/// How often a patch refused for a concurrent edit is read and tried again at once.
const CONFLICT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patched {
    /// No such MutatingWebhookConfiguration (yet).
    Absent,
    /// Every webhook already had the bundle.
    Unchanged,
    /// This many webhooks got the new bundle.
    Webhooks(usize),
}

/// Sets the caBundle of every webhook of configuration `name` to `pem` with a JSON merge
/// patch of its `webhooks` (a merge patch replaces a list whole, so the patch carries
/// every webhook as read) guarded by the resourceVersion read: a concurrent edit makes
/// the API server refuse it (409) rather than lose that edit, and it is read again.
pub async fn patch_ca_bundle(
    client: &kube::Client,
    name: &str,
    pem: &str,
) -> Result<Patched, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(config) = api.get_opt(name).await? else {
            return Ok(Patched::Absent);
        };
        let mut webhooks = config.webhooks.unwrap_or_default();
        let mut changed = 0;
        for webhook in &mut webhooks {
            let bundle = &mut webhook.client_config.ca_bundle;
            if bundle.as_ref().map(|bundle| bundle.0.as_slice()) != Some(pem.as_bytes()) {
                *bundle = Some(ByteString(pem.as_bytes().to_vec()));
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(Patched::Unchanged);
        }
        let patch = json!({
            "metadata": { "resourceVersion": config.metadata.resource_version },
            "webhooks": webhooks,
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_ATTEMPTS => {}
            other => return other.map(|_| Patched::Webhooks(changed)),
        }
    }
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
