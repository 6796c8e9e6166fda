//! The stand-in API server's TLS and the kubeconfig that reaches it: a CA made for the
//! test and a serving certificate for the server's IP it signs (rcgen), and a kubeconfig with
//! the server URL, the CA as `certificate-authority-data` and a bearer token, as a cluster
//! admin hands out.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

/// The server's TLS config and the CA's PEM clients trust.
pub struct ServingTls {
    pub config: Arc<rustls::ServerConfig>,
    pub ca_pem: String,
}

/// A CA and a serving certificate for `ip` (and `localhost`) it signs.
pub fn serving_tls(ip: std::net::IpAddr) -> anyhow::Result<ServingTls> {
    crate::tls::install_crypto_provider();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "stand-in kubernetes CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names.push(SanType::IpAddress(ip));
    let cert = params.signed_by(&key, &issuer)?;
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServingTls {
        config: Arc::new(config),
        ca_pem: ca_cert.pem(),
    })
}

/// Writes a kubeconfig (JSON, which is YAML too) for `https://<addr>` to `path`.
pub fn write_kubeconfig(
    path: &Path,
    addr: SocketAddr,
    ca_pem: &str,
    token: &str,
) -> anyhow::Result<()> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "stand-in",
            "cluster": {
                "server": format!("https://{addr}"),
                "certificate-authority-data": ca_data,
            },
        }],
        "users": [{"name": "seam-test", "user": {"token": token}}],
        "contexts": [{
            "name": "stand-in",
            "context": {"cluster": "stand-in", "user": "seam-test", "namespace": "seam-system"},
        }],
        "current-context": "stand-in",
    });
    std::fs::write(path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}
