//! The Kubernetes source: the control plane's view of a cluster. It builds the one
//! `kube::Client` every Kubernetes part of the control plane shares, watches Services,
//! EndpointSlices, Pods and HTTPRoutes, and turns them into the mesh model.

use std::path::Path;

use anyhow::Context;

/// The client for the cluster the control plane runs in (in-cluster configuration, or
/// `$KUBECONFIG`/`~/.kube/config`), or the one `kubeconfig` names (`--kubeconfig`).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "cannot find a Kubernetes configuration (not in a cluster, no $KUBECONFIG \
             or ~/.kube/config); give --kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

#[cfg(test)]
pub(crate) mod api_mock;
pub mod ca_secret;
pub mod events;
pub mod mapping;
pub mod naming;
pub mod objects;
pub mod token_review;
pub mod trust_configmaps;
pub mod watch;
pub mod webhook_ca;
