//! The Identity service in Kubernetes mode, against a mock API server standing in for a
//! real one (none can run on this machine): the real CA signs a real CSR only for the
//! ServiceAccount the TokenReview names.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use seam_proto::SpiffeId;
use seam_proto::v1::identity_server::Identity;
use seam_proto::v1::{CertifyRequest, certify_request};
use serde_json::{Value, json};
use tokio::sync::watch;
use tonic::{Code, Request};

use super::{IdentityService, Proofs};
use crate::ca::CertificateAuthority;
use crate::kubernetes::api_mock::{self, ApiMock};
use crate::kubernetes::token_review::TokenReviewer;
use crate::metrics::Metrics;
use crate::model::MeshModel;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-token-bytes";

struct Fixture {
    service: Arc<IdentityService>,
    api: ApiMock,
    _state: tempfile::TempDir,
}

fn kubernetes_identity() -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let (client, api) = api_mock::client();
    let (_, model) = watch::channel(Arc::new(MeshModel::empty("seam.local")));
    let service = IdentityService {
        ca,
        model,
        certificate_lifetime: Duration::from_secs(3600),
        metrics: Arc::new(Metrics::new()),
        proofs: Proofs::ServiceAccountTokens(TokenReviewer::new(client)),
    };
    Fixture {
        service: Arc::new(service),
        api,
        _state: state,
    }
}

/// A real CSR that asks for names the CA must ignore.
fn request(namespace: &str, service: &str, proof: certify_request::Proof) -> CertifyRequest {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://seam.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    CertifyRequest {
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        csr_der: params.serialize_request(&key).unwrap().der().to_vec(),
        proof: Some(proof),
    }
}

fn token_proof() -> certify_request::Proof {
    certify_request::Proof::ServiceAccountToken(TOKEN.to_owned())
}

/// What the API server answers to a TokenReview: the request's spec and this status.
fn reviewed(spec: &Value, status: Value) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": status,
    })
}

fn authenticated(audiences: &[&str], username: &str) -> Value {
    json!({
        "authenticated": true,
        "user": {
            "username": username,
            "uid": "0b7d3c55-5d5c-4f1c-9f5e-8a1f5e5a2c11",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/pod-name": ["api-7d9c8b6f5-x2x9q"],
                "authentication.kubernetes.io/pod-uid": ["6a3f8f4e-1c2b-4f7a-9d1e-2b3c4d5e6f70"]
            }
        },
        "audiences": audiences,
    })
}

/// Runs a Certify while answering its one TokenReview with `answer(request body)`.
async fn certify_answering(
    fixture: &mut Fixture,
    request: CertifyRequest,
    answer: impl FnOnce(api_mock::Call),
) -> Result<tonic::Response<seam_proto::v1::CertifyResponse>, tonic::Status> {
    let service = fixture.service.clone();
    let certify = tokio::spawn(async move { service.certify(Request::new(request)).await });
    let call = fixture.api.next().await;
    assert_eq!(call.method, http::Method::POST);
    assert_eq!(
        call.path.split('?').next().unwrap(),
        "/apis/authentication.k8s.io/v1/tokenreviews"
    );
    assert_eq!(call.body["spec"]["token"], TOKEN);
    assert_eq!(call.body["spec"]["audiences"], json!(["seam"]));
    answer(call);
    certify.await.unwrap()
}

fn answer_with(status: Value) -> impl FnOnce(api_mock::Call) {
    move |call| {
        let body = reviewed(&call.body["spec"], status);
        call.reply(201, &body);
    }
}

#[tokio::test]
async fn an_accepted_token_gets_a_certificate_for_its_service_account_only() {
    let mut fixture = kubernetes_identity();
    // The request may leave namespace and ServiceAccount empty, or name the token's.
    for (namespace, service) in [("", ""), ("shop", "api")] {
        let response = certify_answering(
            &mut fixture,
            request(namespace, service, token_proof()),
            answer_with(authenticated(&["seam"], "system:serviceaccount:shop:api")),
        )
        .await
        .unwrap()
        .into_inner();
        let wanted = SpiffeId::workload("seam.local", "shop", "api").unwrap();
        assert_eq!(response.spiffe_id, wanted.as_str());
        let leaf = &response.certificate_chain_der[0];
        assert_eq!(SpiffeId::from_certificate_der(leaf).unwrap(), wanted);
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1, "only the SPIFFE id");
        assert_eq!(response.trust_bundle_der.len(), 1);
    }
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let mut fixture = kubernetes_identity();
    let refused = certify_answering(
        &mut fixture,
        request("shop", "api", token_proof()),
        answer_with(authenticated(
            &["https://kubernetes.default.svc.cluster.local"],
            "system:serviceaccount:shop:api",
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("not for audience \"seam\""),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_with_the_api_servers_reason() {
    let mut fixture = kubernetes_identity();
    let refused = certify_answering(
        &mut fixture,
        request("shop", "api", token_proof()),
        answer_with(json!({
            "user": {},
            "error": "[invalid bearer token, service account token has expired]"
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "the ServiceAccount token is not authenticated: [invalid bearer token, service account token has expired]"
    );
    assert!(!refused.message().contains(TOKEN));
}

#[tokio::test]
async fn a_request_naming_another_service_account_or_namespace_is_refused_naming_both() {
    let mut fixture = kubernetes_identity();
    for (namespace, service) in [("shop", "admin"), ("kube-system", "api")] {
        let refused = certify_answering(
            &mut fixture,
            request(namespace, service, token_proof()),
            answer_with(authenticated(&["seam"], "system:serviceaccount:shop:api")),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            format!(
                "the request names ServiceAccount {service:?} in namespace {namespace:?}, but the token belongs to ServiceAccount \"api\" in namespace \"shop\""
            )
        );
    }
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let mut fixture = kubernetes_identity();
    let refused = certify_answering(
        &mut fixture,
        request("", "", token_proof()),
        answer_with(authenticated(&["seam"], "kubernetes-admin")),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("\"kubernetes-admin\" is not a ServiceAccount"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn an_api_server_error_refuses_with_the_error_and_never_the_token() {
    let mut fixture = kubernetes_identity();
    let refused = certify_answering(
        &mut fixture,
        request("shop", "api", token_proof()),
        |call| {
            call.fail(500, "InternalError", "etcdserver: request timed out");
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        refused.message().contains("the TokenReview failed")
            && refused.message().contains("etcdserver: request timed out"),
        "{}",
        refused.message()
    );
    assert!(!refused.message().contains(TOKEN));
}

#[tokio::test]
async fn a_join_token_is_refused_in_kubernetes_mode_without_asking_the_api() {
    let fixture = kubernetes_identity();
    let refused = fixture
        .service
        .certify(Request::new(request(
            "default",
            "api",
            certify_request::Proof::JoinToken("s3cret".into()),
        )))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("--source kubernetes")
            && refused.message().contains("--service-account-token-file"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_service_account_token_is_refused_in_file_mode() {
    let state = tempfile::tempdir().unwrap();
    let (_, model) = watch::channel(Arc::new(MeshModel::empty("seam.local")));
    let service = IdentityService {
        ca: Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap()),
        model,
        certificate_lifetime: Duration::from_secs(3600),
        metrics: Arc::new(Metrics::new()),
        proofs: Proofs::JoinTokens,
    };
    let refused = service
        .certify(Request::new(request("default", "api", token_proof())))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("only when the control plane runs with --source kubernetes"),
        "{}",
        refused.message()
    );
}
