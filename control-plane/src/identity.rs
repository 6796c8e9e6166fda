//! `seam.v1.Identity`: checks a proxy's proof of identity (a join token in file mode, a
//! projected ServiceAccount token checked with a TokenReview in Kubernetes mode) and
//! signs its CSR for exactly the SPIFFE id that proof stands for.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use seam_proto::SpiffeId;
use seam_proto::v1::identity_server::Identity;
use seam_proto::v1::{CertifyRequest, CertifyResponse, certify_request};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::ca::CertificateAuthority;
use crate::kubernetes::token_review::{ReviewError, ServiceAccount, TokenReviewer};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{FILE_NAMESPACE, MeshModel};

pub struct IdentityService {
    pub ca: Arc<CertificateAuthority>,
    pub model: watch::Receiver<Arc<MeshModel>>,
    pub certificate_lifetime: Duration,
    pub metrics: Arc<Metrics>,
    pub proofs: Proofs,
}

/// Which proof of identity the control plane accepts: one kind per source, so a join
/// token cannot stand in for a ServiceAccount in Kubernetes, nor the other way round.
pub enum Proofs {
    /// `--source file`: each service's join token from the mesh file.
    JoinTokens,
    /// `--source kubernetes`: projected ServiceAccount tokens, checked with a TokenReview.
    ServiceAccountTokens(TokenReviewer),
}

impl IdentityService {
    async fn certify_checked(&self, request: CertifyRequest) -> Result<CertifyResponse, Status> {
        let model = self.model.borrow().clone();
        let identity = match &self.proofs {
            Proofs::JoinTokens => {
                join_token_identity(&model, request.service, request.namespace, request.proof)?
            }
            Proofs::ServiceAccountTokens(reviewer) => {
                let account = service_account_of(reviewer, &request).await?;
                SpiffeId::workload(&model.trust_domain, &account.namespace, &account.name).map_err(
                    |err| {
                        Status::permission_denied(format!(
                            "the token's ServiceAccount has no valid SPIFFE id: {err}"
                        ))
                    },
                )?
            }
        };
        let issued = self
            .ca
            .sign_request(&request.csr_der, &identity, self.certificate_lifetime)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let not_after = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        tracing::info!(spiffe_id = %identity, serial = %issued.serial_hex, not_after, "issued a workload certificate");
        Ok(CertifyResponse {
            spiffe_id: identity.to_string(),
            certificate_chain_der: vec![issued.der.to_vec()],
            trust_bundle_der: self
                .ca
                .trust_bundle()
                .iter()
                .map(|root| root.to_vec())
                .collect(),
            not_after_unix_seconds: not_after,
        })
    }
}

/// File mode: the identity of the mesh file's service whose join token the request holds.
fn join_token_identity(
    model: &MeshModel,
    service_name: String,
    namespace: String,
    proof: Option<certify_request::Proof>,
) -> Result<SpiffeId, Status> {
    if namespace != FILE_NAMESPACE && !namespace.is_empty() {
        return Err(Status::invalid_argument(format!(
            "namespace {namespace:?} is unknown: with a mesh file every service is in {FILE_NAMESPACE:?}"
        )));
    }
    let token = match proof {
        Some(certify_request::Proof::JoinToken(token)) => token,
        Some(certify_request::Proof::ServiceAccountToken(_)) => {
            return Err(Status::unauthenticated(
                "a ServiceAccount token is accepted only when the control plane runs with --source kubernetes; this mesh uses join tokens",
            ));
        }
        None => {
            return Err(Status::unauthenticated(
                "no proof of identity: a join token is required",
            ));
        }
    };
    let Some(service) = model.services().get(&service_name) else {
        return Err(Status::permission_denied(format!(
            "join token rejected for service {service_name:?}: the mesh has no such service"
        )));
    };
    if !service.join_token.matches(&token) {
        return Err(Status::permission_denied(format!(
            "join token rejected for service {service_name:?}"
        )));
    }
    SpiffeId::workload(&model.trust_domain, FILE_NAMESPACE, &service_name)
        .map_err(|err| Status::internal(err.to_string()))
}

/// Kubernetes mode: the ServiceAccount the request's token belongs to. The request's
/// `namespace` and `service` (the ServiceAccount the proxy expects to be) may be empty,
/// but when given they must be the token's: a proxy configured for another account is
/// told so rather than handed a certificate it does not expect.
async fn service_account_of(
    reviewer: &TokenReviewer,
    request: &CertifyRequest,
) -> Result<ServiceAccount, Status> {
    let token = match &request.proof {
        Some(certify_request::Proof::ServiceAccountToken(token)) => token,
        Some(certify_request::Proof::JoinToken(_)) => {
            return Err(Status::unauthenticated(
                "a join token is not accepted with --source kubernetes: proxies prove their identity with a projected ServiceAccount token (audience \"seam\"); give the proxy --service-account-token-file",
            ));
        }
        None => {
            return Err(Status::unauthenticated(
                "no proof of identity: a projected ServiceAccount token (audience \"seam\") is required",
            ));
        }
    };
    let account = reviewer.review(token).await.map_err(|err| match err {
        ReviewError::Api(_) => Status::unavailable(err.to_string()),
        ReviewError::NotServiceAccount(_) => Status::permission_denied(err.to_string()),
        ReviewError::NotAuthenticated(_) | ReviewError::WrongAudience(_) => {
            Status::unauthenticated(err.to_string())
        }
    })?;
    let named = |asked: &str, proven: &str| asked.is_empty() || asked == proven;
    if !named(&request.namespace, &account.namespace) || !named(&request.service, &account.name) {
        return Err(Status::permission_denied(format!(
            "the request names ServiceAccount {:?} in namespace {:?}, but the token belongs to ServiceAccount {:?} in namespace {:?}",
            request.service, request.namespace, account.name, account.namespace
        )));
    }
    Ok(account)
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let remote = request.remote_addr();
        let service = request.get_ref().service.clone();
        let result = self.certify_checked(request.into_inner()).await;
        let label = ResultLabel {
            result: if result.is_ok() { "issued" } else { "rejected" },
        };
        self.metrics
            .certificate_requests
            .get_or_create(&label)
            .inc();
        if let Err(status) = &result {
            tracing::warn!(
                ?remote,
                service,
                reason = status.message(),
                "refused a certificate request"
            );
        }
        result.map(Response::new)
    }
}

#[cfg(test)]
mod tests;
