//! The webhook's serving certificate: issued by the mesh CA for the names the API server
//! calls (`seam-control-plane.<namespace>.svc` and its `.svc.<cluster-domain>` form),
//! renewed at half its lifetime and at once when the roots rotate. No client certificate
//! is asked for: the API server calls without one.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use seam_proto::SpiffeId;

use crate::ca::{CaError, CertificateAuthority};

/// The DNS names the API server uses to reach the webhook through its Service.
pub fn dns_names(namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("seam-control-plane.{namespace}.svc"),
        format!("seam-control-plane.{namespace}.svc.{cluster_domain}"),
    ]
}

#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn issue(
    ca: &CertificateAuthority,
    names: &[String],
    lifetime: Duration,
) -> Result<CertifiedKey, CaError> {
    let invalid = |path: &str, reason: String| CaError::Invalid {
        path: path.into(),
        reason,
    };
    let identity = SpiffeId::control_plane(ca.trust_domain())
        .map_err(|err| invalid("--trust-domain", err.to_string()))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (issued, key) = ca.issue_with_key(&identity, &names, lifetime)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|err| invalid("<webhook key>", err.to_string()))?;
    Ok(CertifiedKey::new(vec![issued.der], signing_key))
}

/// The webhook listener's TLS config, whose certificate stays fresh for as long as the
/// returned task runs.
pub fn serving_config(
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    lifetime: Duration,
) -> Result<(Arc<ServerConfig>, tokio::task::JoinHandle<()>), CaError> {
    let current = Arc::new(Current(ArcSwap::from_pointee(issue(
        &ca, &names, lifetime,
    )?)));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| CaError::Invalid {
                path: "<webhook TLS>".into(),
                reason: err.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut changes = ca.subscribe();
    let renewal = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(lifetime / 2) => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
            match issue(&ca, &names, lifetime) {
                Ok(fresh) => current.0.store(Arc::new(fresh)),
                Err(err) => {
                    tracing::error!(error = %err, "cannot renew the webhook's serving certificate")
                }
            }
        }
    });
    Ok((Arc::new(config), renewal))
}
