//! Puts the mesh's trust bundle into every namespace: ConfigMap `seam-trust-bundle`, key
//! `ca.pem` (certificates only, never a key), which injected pods mount as their proxy's
//! trust anchors. It is written when a namespace appears (a watch on Namespaces) and in
//! every namespace again when the bundle changes (root rotation); a ConfigMap is created,
//! or replaced only when its content differs. The cluster's own namespaces are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::ca::CertificateAuthority;
use crate::ca::store::bundle_pem;

/// The ConfigMap's name in every namespace.
pub const CONFIG_MAP: &str = "seam-trust-bundle";
/// The key holding the PEM bundle.
pub const BUNDLE_KEY: &str = "ca.pem";
/// Namespaces no workload of the mesh runs in.
const SKIPPED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// How soon a namespace whose write failed is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What writing one namespace's ConfigMap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    Unchanged,
}

/// Whether the mesh's bundle belongs in `namespace`.
pub fn wanted_in(namespace: &str) -> bool {
    !SKIPPED_NAMESPACES.contains(&namespace)
}

/// Makes `namespace`'s ConfigMap hold `pem`: creates it, or replaces it (under the
/// resourceVersion read) when its `ca.pem` differs.
pub async fn write(
    client: &kube::Client,
    namespace: &str,
    pem: &str,
) -> Result<Written, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([(BUNDLE_KEY.to_owned(), pem.to_owned())]);
    match api.get_opt(CONFIG_MAP).await? {
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/part-of".to_owned(),
                        "seam".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &config_map).await?;
            Ok(Written::Created)
        }
        Some(existing) if existing.data.as_ref() == Some(&data) => Ok(Written::Unchanged),
        Some(mut existing) => {
            existing.data = Some(data);
            existing.binary_data = None;
            api.replace(CONFIG_MAP, &PostParams::default(), &existing)
                .await?;
            Ok(Written::Replaced)
        }
    }
}

/// Keeps every namespace's ConfigMap current, for as long as the task runs.
pub async fn run(client: kube::Client, ca: Arc<CertificateAuthority>) {
    let mut bundle_changes = ca.subscribe();
    let mut events = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    // The namespaces that exist, and those seen since a (re)list began.
    let mut namespaces = BTreeSet::new();
    let mut listing = BTreeSet::new();
    let mut failed = BTreeSet::new();
    let mut pem = bundle_pem(&ca.trust_bundle());
    loop {
        let retry = async {
            if failed.is_empty() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        };
        let to_write: Vec<String> = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "the watch on Namespaces failed; resuming with backoff");
                    Vec::new()
                }
                Some(Ok(watcher::Event::Init)) => {
                    listing.clear();
                    Vec::new()
                }
                Some(Ok(watcher::Event::InitApply(namespace))) => {
                    let name = live_name(&namespace);
                    listing.extend(name.clone());
                    name.into_iter().collect()
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    namespaces = std::mem::take(&mut listing);
                    failed.retain(|name| namespaces.contains(name));
                    Vec::new()
                }
                Some(Ok(watcher::Event::Apply(namespace))) => {
                    let name = live_name(&namespace);
                    namespaces.extend(name.clone());
                    name.into_iter().collect()
                }
                Some(Ok(watcher::Event::Delete(namespace))) => {
                    if let Some(name) = namespace.metadata.name.as_deref() {
                        namespaces.remove(name);
                        failed.remove(name);
                    }
                    Vec::new()
                }
            },
            changed = bundle_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                pem = bundle_pem(&ca.trust_bundle());
                namespaces.iter().cloned().collect()
            }
            () = retry => std::mem::take(&mut failed).into_iter().collect(),
        };
        for namespace in to_write {
            match write(&client, &namespace, &pem).await {
                Ok(Written::Unchanged) => {}
                Ok(written) => {
                    tracing::info!(
                        namespace,
                        config_map = CONFIG_MAP,
                        ?written,
                        "wrote the mesh trust bundle"
                    );
                }
                Err(err) => {
                    tracing::warn!(namespace, config_map = CONFIG_MAP, error = %err, "cannot write the mesh trust bundle; retrying in {RETRY_AFTER:?}");
                    failed.insert(namespace);
                }
            }
        }
    }
}

/// The name of a namespace the bundle belongs in, unless it is being deleted (nothing
/// can be created in it then).
fn live_name(namespace: &Namespace) -> Option<String> {
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
            == Some("Terminating");
    namespace
        .metadata
        .name
        .clone()
        .filter(|name| !terminating && wanted_in(name))
}

#[cfg(test)]
mod tests;
