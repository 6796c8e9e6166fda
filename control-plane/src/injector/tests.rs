use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::json;

use super::*;

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn decide_pod(pod: &Pod, namespace_enabled: bool) -> Result<Decision, BadAnnotation> {
    let input = PodInput {
        meta: &pod.metadata,
        spec: pod.spec.as_ref().unwrap(),
        workload: "web",
        namespace_enabled,
    };
    decide(&input, &Settings::default())
}

/// The pod with the additions applied, as the API server applies the webhook's patch.
fn injected(pod: &Pod) -> Pod {
    let Decision::Inject(additions) = decide_pod(pod, true).unwrap() else {
        panic!("not injected")
    };
    let mut document = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut document, &to_patch(&[], &additions)).unwrap();
    serde_json::from_value(document).unwrap()
}

fn app() -> Value {
    json!({"metadata": {"name": "web-1"}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

fn names(containers: Option<&Vec<Container>>) -> Vec<&str> {
    containers
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn a_pod_gets_the_init_container_then_the_native_sidecar() {
    let pod = injected(&pod(app()));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        names(spec.init_containers.as_ref()),
        ["seam-init", "seam-proxy"]
    );
    assert_eq!(names(Some(&spec.containers)), ["app"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let startup = proxy
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(startup.path.as_deref(), Some("/ready"));
    let context = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (context.run_as_user, context.run_as_non_root),
        (Some(2102), Some(true))
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        ["seam-token", "seam-trust-bundle", "seam-xtables-lock"]
    );
    let env = |name: &str| {
        proxy
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        env("SEAM_SERVICE").value.as_deref(),
        Some("web.$(SEAM_NAMESPACE)")
    );
    assert_eq!(
        env("SEAM_INBOUND_POLICY").value.as_deref(),
        Some("$(SEAM_POD_IP)")
    );
    let annotations = pod.metadata.annotations.unwrap();
    assert_eq!(
        annotations[annotations::INJECTED],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn existing_init_containers_volumes_and_annotations_are_kept_after_ours() {
    let mut value = app();
    value["metadata"]["annotations"] = json!({"team": "shop"});
    value["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app:1"}]);
    value["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
    let pod = injected(&pod(value));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        names(spec.init_containers.as_ref()),
        ["seam-init", "seam-proxy", "migrate"]
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "cache",
            "seam-token",
            "seam-trust-bundle",
            "seam-xtables-lock"
        ]
    );
    assert_eq!(pod.metadata.annotations.unwrap().len(), 2);
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    let once = injected(&pod(app()));
    assert_eq!(
        decide_pod(&once, true).unwrap(),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
}

#[test]
fn pods_are_left_alone_with_the_reason() {
    let cases = [
        (
            json!({"metadata": {"annotations": {"seam.io/inject": "disabled"}}}),
            true,
            SkipReason::OptedOut,
        ),
        (json!({}), false, SkipReason::NotEnabled),
        (
            json!({"spec": {"hostNetwork": true}}),
            true,
            SkipReason::HostNetwork,
        ),
        (
            json!({"spec": {"containers": [{"name": "app"}, {"name": "linkerd-proxy"}]}}),
            true,
            SkipReason::OtherMesh("linkerd-proxy".into()),
        ),
    ];
    for (patch, namespace_enabled, reason) in cases {
        let mut value = app();
        json_patch::merge(&mut value, &patch);
        assert_eq!(
            decide_pod(&pod(value), namespace_enabled).unwrap(),
            Decision::Skip(reason.clone()),
            "{reason}"
        );
    }
    // The pod's own annotation enables it where the namespace does not.
    let mut value = app();
    value["metadata"]["annotations"] = json!({"seam.io/inject": "enabled"});
    assert!(matches!(
        decide_pod(&pod(value), false).unwrap(),
        Decision::Inject(_)
    ));
}

#[test]
fn the_classic_sidecar_is_the_first_container_and_holds_the_app_until_ready() {
    let mut value = app();
    value["metadata"]["annotations"] = json!({"seam.io/native-sidecar": "false"});
    let pod = injected(&pod(value));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(names(spec.init_containers.as_ref()), ["seam-init"]);
    assert_eq!(names(Some(&spec.containers)), ["seam-proxy", "app"]);
    let proxy = &spec.containers[0];
    assert_eq!(proxy.restart_policy, None);
    let hook = proxy
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_deref().unwrap(),
        [
            "seamctl",
            "ready",
            "--wait",
            "--timeout",
            "120s",
            "127.0.0.1:4191"
        ]
    );
}

#[test]
fn a_classic_pods_own_init_containers_run_before_the_redirection() {
    let mut value = app();
    value["metadata"]["annotations"] = json!({"seam.io/native-sidecar": "false"});
    value["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app:1"}]);
    let pod = injected(&pod(value));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        names(spec.init_containers.as_ref()),
        ["migrate", "seam-init"]
    );
    assert_eq!(names(Some(&spec.containers)), ["seam-proxy", "app"]);
}

#[test]
fn annotations_set_resources_skip_ports_and_the_service_name() {
    let mut value = app();
    value["metadata"]["annotations"] = json!({
        "seam.io/proxy-cpu-request": "100m",
        "seam.io/proxy-memory-limit": "1Gi",
        "seam.io/skip-inbound-ports": "22",
        "seam.io/skip-outbound-ports": "5432,6379",
        "seam.io/service": "storefront",
    });
    let pod = injected(&pod(value));
    let inits = pod.spec.unwrap().init_containers.unwrap();
    let args = inits[0].args.as_deref().unwrap().join(" ");
    assert!(
        args.ends_with("--skip-inbound-ports 22 --skip-outbound-ports 5432,6379"),
        "{args}"
    );
    let resources = inits[1].resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "100m");
    assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "32Mi");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(resources.limits.as_ref().unwrap()["cpu"].0, "1");
    let service = inits[1]
        .env
        .iter()
        .flatten()
        .find(|v| v.name == "SEAM_SERVICE")
        .unwrap();
    assert_eq!(
        service.value.as_deref(),
        Some("storefront.$(SEAM_NAMESPACE)")
    );
}

#[test]
fn a_bad_annotation_is_an_error_naming_it() {
    let mut value = app();
    value["metadata"]["annotations"] = json!({"seam.io/skip-inbound-ports": "http"});
    let err = decide_pod(&pod(value), true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "annotation seam.io/skip-inbound-ports: \"http\" has \"http\", which is not a port \
         (1-65535) or a range LOW-HIGH"
    );
}

#[test]
fn the_typed_check_catches_a_misspelt_field() {
    let good = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
    assert_eq!(typed::check(&good), Ok(()));
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [], "hostNetwrok": true}});
    assert!(typed::check(&bad).unwrap_err().contains("fields lost"));
}

#[test]
fn the_apps_probes_reach_the_proxy_as_seam_probe_paths() {
    let probe_paths = |pod: &Pod| {
        let spec = pod.spec.as_ref().unwrap();
        let proxy = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == pod::PROXY_CONTAINER)
            .unwrap();
        proxy
            .env
            .iter()
            .flatten()
            .find(|var| var.name == "SEAM_PROBE_PATHS")
            .and_then(|var| var.value.clone())
    };
    assert_eq!(probe_paths(&injected(&pod(app()))), None, "no probes");
    let mut value = app();
    value["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    value["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"port": "http", "path": "/ready"}});
    value["spec"]["containers"][0]["livenessProbe"] = json!({"grpc": {"port": 9090}});
    assert_eq!(
        probe_paths(&injected(&pod(value))).as_deref(),
        Some("8080:/ready,9090:/grpc.health.v1.Health/Check")
    );
}
