//! `seam.v1.Identity`: checks a proxy's proof of identity (a join token in file mode) and
//! signs its CSR for exactly the SPIFFE id that proof stands for.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use seam_proto::SpiffeId;
use seam_proto::v1::identity_server::Identity;
use seam_proto::v1::{CertifyRequest, CertifyResponse, certify_request};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::ca::CertificateAuthority;
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{FILE_NAMESPACE, MeshModel};

pub struct IdentityService {
    pub ca: Arc<CertificateAuthority>,
    pub model: watch::Receiver<Arc<MeshModel>>,
    pub certificate_lifetime: Duration,
    pub metrics: Arc<Metrics>,
}

impl IdentityService {
    fn certify_checked(&self, request: CertifyRequest) -> Result<CertifyResponse, Status> {
        let service_name = request.service;
        if request.namespace != FILE_NAMESPACE && !request.namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "namespace {:?} is unknown: with a mesh file every service is in {FILE_NAMESPACE:?}",
                request.namespace
            )));
        }
        let model = self.model.borrow().clone();
        let token = match request.proof {
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
        let identity = SpiffeId::workload(&model.trust_domain, FILE_NAMESPACE, &service_name)
            .map_err(|err| Status::internal(err.to_string()))?;
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

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let remote = request.remote_addr();
        let service = request.get_ref().service.clone();
        let result = self.certify_checked(request.into_inner());
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
