//! TLS fixtures for attacking a proxy's inbound listener from outside the mesh: a
//! *foreign* CA (rcgen) and leaves it signs, rustls client configs with no client
//! certificate, a foreign one, or a real mesh one, and [`probe_inbound`], which tries an
//! mTLS handshake plus one HTTP/1.1 request and reports whether the proxy answered.
//!
//! The client configs accept any server certificate on purpose: these tests are about
//! whether the *server* refuses the *client*, so the client must not give up first.

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a probe waits for each step before it calls the peer hung.
const PROBE_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs ring as rustls' process-wide crypto provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Someone else may have installed it first; that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A certificate chain and its private key, ready for a rustls client config.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A CA that has nothing to do with the mesh.
pub struct ForeignCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
}

impl ForeignCa {
    pub fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "foreign test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A client leaf with `spiffe_id` as URI SAN (the same shape a mesh leaf has, so
    /// only the issuer differs), chained to this CA.
    pub fn leaf(&self, spiffe_id: &str) -> anyhow::Result<ClientIdentity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, spiffe_id);
        params
            .subject_alt_names
            .push(SanType::URI(spiffe_id.try_into()?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// Accepts any server certificate (see the module doc), still checking signatures with
/// the provider so the handshake itself is real.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
}

/// A TLS client that presents no certificate.
pub fn client_config_without_cert() -> Arc<ClientConfig> {
    Arc::new(builder().with_no_client_auth())
}

/// A TLS client that presents `identity`.
pub fn client_config_with_cert(identity: ClientIdentity) -> anyhow::Result<Arc<ClientConfig>> {
    Ok(Arc::new(
        builder().with_client_auth_cert(identity.chain, identity.key)?,
    ))
}

/// A TLS client that presents `identity` and speaks only TLS 1.2.
pub fn client_config_tls12_only(identity: ClientIdentity) -> anyhow::Result<Arc<ClientConfig>> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_client_auth_cert(identity.chain, identity.key)?;
    Ok(Arc::new(config))
}

/// What happened when a client tried to talk to an inbound listener.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// The proxy answered an HTTP request.
    Answered { status: u16, body: String },
    /// No HTTP answer: the connection failed at `stage` with `error`.
    Refused { stage: &'static str, error: String },
    /// The proxy neither answered nor closed the connection in time.
    Hung { stage: &'static str },
}

impl ProbeOutcome {
    pub fn is_refused(&self) -> bool {
        matches!(self, ProbeOutcome::Refused { .. })
    }
}

/// Tries a TLS handshake with `config` against `inbound` (SNI `server_name`), then one
/// HTTP/1.1 `GET /probe` with `Host: <server_name>` and `Connection: close`, and reads
/// until the peer closes. In TLS 1.3 the server checks the client certificate after the
/// client has finished its side of the handshake, so a refusal may only show when the
/// request is sent or the answer read; both count. The exchange is done on raw bytes
/// (no HTTP client library) so the probe sees exactly what the peer did: an alert, a
/// close, or an HTTP response.
pub async fn probe_inbound(
    inbound: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> anyhow::Result<ProbeOutcome> {
    let stream = match TcpStream::connect(inbound).await {
        Ok(stream) => stream,
        Err(error) => {
            return Ok(ProbeOutcome::Refused {
                stage: "tcp connect",
                error: error.to_string(),
            });
        }
    };
    let name = ServerName::try_from(server_name.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls =
        match tokio::time::timeout(PROBE_STEP_TIMEOUT, connector.connect(name, stream)).await {
            Err(_) => {
                return Ok(ProbeOutcome::Hung {
                    stage: "tls handshake",
                });
            }
            Ok(Err(error)) => {
                return Ok(ProbeOutcome::Refused {
                    stage: "tls handshake",
                    error: error.to_string(),
                });
            }
            Ok(Ok(tls)) => tls,
        };
    let request =
        format!("GET /probe HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    let written = async {
        tls.write_all(request.as_bytes()).await?;
        tls.flush().await
    };
    if let Err(error) = written.await {
        return Ok(ProbeOutcome::Refused {
            stage: "send request after handshake",
            error: error.to_string(),
        });
    }
    Ok(read_answer(&mut tls, "read answer after handshake").await)
}

/// Reads until the peer closes and classifies what came back.
async fn read_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    stage: &'static str,
) -> ProbeOutcome {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PROBE_STEP_TIMEOUT, stream.read_to_end(&mut received)).await;
    if received.starts_with(b"HTTP/") {
        let (status, body) = parse_http1_response(&received);
        return ProbeOutcome::Answered { status, body };
    }
    match read {
        Err(_) => ProbeOutcome::Hung { stage },
        Ok(result) => ProbeOutcome::Refused {
            stage,
            error: format!(
                "{} non-HTTP bytes {:02x?} then {}",
                received.len(),
                &received[..received.len().min(16)],
                result
                    .err()
                    .map(|error| error.to_string())
                    .unwrap_or_else(|| "EOF".into())
            ),
        },
    }
}

/// The status and body of a whole HTTP/1.1 response (content-length, chunked, or
/// delimited by the close), enough for the probe's checks.
fn parse_http1_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (status, String::new());
    };
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return (status, body.to_string());
    }
    let mut decoded = String::new();
    let mut rest = body;
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    (status, decoded)
}

/// Sends a plaintext HTTP/1.1 request to `inbound` and reads until the peer closes.
/// `Answered` only if what came back is an HTTP response.
pub async fn probe_plaintext(inbound: SocketAddr, host: &str) -> anyhow::Result<ProbeOutcome> {
    let mut stream = match TcpStream::connect(inbound).await {
        Ok(stream) => stream,
        Err(error) => {
            return Ok(ProbeOutcome::Refused {
                stage: "tcp connect",
                error: error.to_string(),
            });
        }
    };
    let request = format!("GET /probe HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        return Ok(ProbeOutcome::Refused {
            stage: "write request",
            error: error.to_string(),
        });
    }
    Ok(read_answer(&mut stream, "read plaintext answer").await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_http1_response(plain), (200, "hello".to_string()));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http1_response(chunked), (503, "abcde".to_string()));
    }
}
