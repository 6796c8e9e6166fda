//! Talking to the control plane's `seam.v1.Identity` service the way a proxy does: a
//! tonic client over TLS (trusting the mesh's `ca.pem`, server name `localhost`), a fresh
//! key pair and a CSR from rcgen, and a join token as proof. Used to check the token
//! check directly, and to obtain a real mesh client certificate for inbound tests.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use seam_proto::v1::identity_client::IdentityClient;
use seam_proto::v1::{CertifyRequest, CertifyResponse, certify_request};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::tls::{ClientIdentity, install_crypto_provider};

/// Connects an Identity client to the control plane at `grpc`, trusting `ca_pem_path`.
pub async fn identity_client(
    grpc: SocketAddr,
    ca_pem_path: &Path,
) -> anyhow::Result<IdentityClient<Channel>> {
    install_crypto_provider();
    let ca = std::fs::read(ca_pem_path)
        .with_context(|| format!("cannot read {}", ca_pem_path.display()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{grpc}"))?
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the control plane's gRPC at {grpc}"))?;
    Ok(IdentityClient::new(channel))
}

/// A new key pair and a DER CSR for it (names in it are ignored by the control plane).
pub fn key_and_csr(service: &str) -> anyhow::Result<(KeyPair, Vec<u8>)> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec![service.to_string()])?;
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// Builds a Certify request for `service` in namespace `default`.
pub fn certify_request(service: &str, join_token: &str, csr_der: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        service: service.to_string(),
        namespace: "default".to_string(),
        csr_der,
        proof: Some(certify_request::Proof::JoinToken(join_token.to_string())),
    }
}

/// Asks for a certificate for `service` with `join_token`.
pub async fn certify(
    client: &mut IdentityClient<Channel>,
    service: &str,
    join_token: &str,
) -> Result<(KeyPair, CertifyResponse), tonic::Status> {
    let (key, csr) =
        key_and_csr(service).map_err(|error| tonic::Status::internal(error.to_string()))?;
    let response = client
        .certify(certify_request(service, join_token, csr))
        .await?
        .into_inner();
    Ok((key, response))
}

/// Obtains a real mesh certificate for `service`, as a client identity for TLS.
pub async fn mesh_identity(
    grpc: SocketAddr,
    ca_pem_path: &Path,
    service: &str,
    join_token: &str,
) -> anyhow::Result<ClientIdentity> {
    let mut client = identity_client(grpc, ca_pem_path).await?;
    let (key, response) = certify(&mut client, service, join_token)
        .await
        .with_context(|| format!("Certify for {service} failed"))?;
    anyhow::ensure!(
        !response.certificate_chain_der.is_empty(),
        "Certify returned an empty chain"
    );
    Ok(ClientIdentity {
        chain: response
            .certificate_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}
