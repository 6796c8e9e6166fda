//! The caBundle patch against a mock API server standing in for a real one (none can
//! run on this machine).

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::kubernetes::api_mock;

const PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/seam-injector";

/// The shape `seamctl install` applies: two webhooks, the caBundle not yet set on one.
fn configuration(first_bundle: Option<&str>) -> Value {
    let webhook = |name: &str, bundle: Option<&str>| {
        let mut client_config = json!({
            "service": { "namespace": "seam-system", "name": "seam-control-plane", "path": "/inject", "port": 8444 }
        });
        if let Some(bundle) = bundle {
            client_config["caBundle"] =
                serde_json::to_value(ByteString(bundle.as_bytes().to_vec())).unwrap();
        }
        json!({
            "name": name,
            "clientConfig": client_config,
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "*" }],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "seam-injector", "resourceVersion": "42", "generation": 1 },
        "webhooks": [webhook("namespace.inject.seam.io", first_bundle), webhook("pod.inject.seam.io", Some("PEM-NEW"))],
    })
}

#[tokio::test]
async fn every_webhook_gets_the_bundle_in_a_merge_patch_guarded_by_the_version_read() {
    let (client, mut api) = api_mock::client();
    for first_bundle in [None, Some("PEM-OLD")] {
        let patching = tokio::spawn({
            let client = client.clone();
            async move { patch_ca_bundle(&client, "seam-injector", "PEM-NEW").await }
        });
        let get = api.next().await;
        assert_eq!((get.method.clone(), get.path.as_str()), (Method::GET, PATH));
        get.reply(200, &configuration(first_bundle));
        let patch = api.next().await;
        assert_eq!(patch.method, Method::PATCH);
        assert_eq!(patch.path.split('?').next().unwrap(), PATH);
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(patch.body["metadata"], json!({ "resourceVersion": "42" }));
        // The whole list as read, each webhook with the new bundle ("PEM-NEW", base64).
        let expected = configuration(Some("PEM-NEW"))["webhooks"].clone();
        assert_eq!(patch.body["webhooks"], expected);
        assert_eq!(
            patch.body["webhooks"][0]["clientConfig"]["caBundle"],
            "UEVNLU5FVw=="
        );
        patch.reply(200, &configuration(Some("PEM-NEW")));
        assert_eq!(patching.await.unwrap().unwrap(), Patched::Webhooks(1));
    }
}

#[tokio::test]
async fn a_patch_refused_for_a_concurrent_edit_is_read_and_made_again() {
    let (client, mut api) = api_mock::client();
    let patching =
        tokio::spawn(async move { patch_ca_bundle(&client, "seam-injector", "PEM-NEW").await });
    api.next().await.reply(200, &configuration(None));
    api.next().await.fail(
        409,
        "Conflict",
        "Operation cannot be fulfilled on mutatingwebhookconfigurations.admissionregistration.k8s.io \"seam-injector\": the object has been modified; please apply your changes to the latest version and try again",
    );
    let mut edited = configuration(None);
    edited["metadata"]["resourceVersion"] = json!("43");
    api.next().await.reply(200, &edited);
    let patch = api.next().await;
    assert_eq!(patch.body["metadata"]["resourceVersion"], "43");
    patch.reply(200, &configuration(Some("PEM-NEW")));
    assert_eq!(patching.await.unwrap().unwrap(), Patched::Webhooks(1));
}

#[tokio::test]
async fn a_current_or_absent_configuration_is_left_alone() {
    let (client, mut api) = api_mock::client();
    let patching = tokio::spawn({
        let client = client.clone();
        async move { patch_ca_bundle(&client, "seam-injector", "PEM-NEW").await }
    });
    api.next().await.reply(200, &configuration(Some("PEM-NEW")));
    assert_eq!(patching.await.unwrap().unwrap(), Patched::Unchanged);

    let patching =
        tokio::spawn(async move { patch_ca_bundle(&client, "seam-injector", "PEM-NEW").await });
    api.next().await.fail(
        404,
        "NotFound",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io \"seam-injector\" not found",
    );
    assert_eq!(patching.await.unwrap().unwrap(), Patched::Absent);
}

#[tokio::test(start_paused = true)]
async fn a_rotation_puts_the_new_bundle_into_the_configuration() {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let (client, mut api) = api_mock::client();
    let task = tokio::spawn(run(client, "seam-injector".into(), ca.clone()));
    // At start: not installed yet.
    api.next().await.fail(404, "NotFound", "not found");

    ca.introduce_root().unwrap();
    let bundle = bundle_pem(&ca.trust_bundle());
    api.next().await.reply(200, &configuration(None));
    let patch = api.next().await;
    let written: ByteString =
        serde_json::from_value(patch.body["webhooks"][0]["clientConfig"]["caBundle"].clone())
            .unwrap();
    assert_eq!(String::from_utf8(written.0).unwrap(), bundle);
    patch.reply(200, &configuration(Some(&bundle)));
    task.abort();
}
