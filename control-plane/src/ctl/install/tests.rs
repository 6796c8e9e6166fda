use super::*;

const DEPLOYED: &str = "deploy/kubernetes/seam.yaml";

fn deployed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEPLOYED)
}

#[test]
fn deploy_kubernetes_holds_what_install_prints() {
    let printed = render(crate::injector::DEFAULT_IMAGE, DEFAULT_REPLICAS);
    if std::env::var_os("SEAM_BLESS").is_some() {
        std::fs::write(deployed_path(), &printed).unwrap();
    }
    let deployed = std::fs::read_to_string(deployed_path()).unwrap_or_default();
    assert!(
        deployed == printed,
        "{DEPLOYED} differs from `seamctl install`'s output; regenerate it with \
         `cargo run -p seam-control-plane --bin seamctl -- install > {DEPLOYED}` \
         (or SEAM_BLESS=1 cargo test -p seam-control-plane ctl::install)"
    );
}

#[test]
fn every_installed_manifest_is_a_valid_kubernetes_object() {
    let count = crate::injector::typed::check_yaml(&render(
        "registry.example/seam:1.2.3",
        DEFAULT_REPLICAS,
    ))
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        count, 10,
        "namespace, account, 4 RBAC, service, deployment, disruption budget, webhooks"
    );
    for entry in std::fs::read_dir(deployed_path().parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            crate::injector::typed::check_yaml(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        }
    }
}

#[test]
fn the_image_goes_into_the_deployment_and_the_injection_flag() {
    let printed = render("registry.example/seam:1.2.3", DEFAULT_REPLICAS);
    assert!(!printed.contains("{{"), "a placeholder was left: {printed}");
    assert_eq!(printed.matches("registry.example/seam:1.2.3").count(), 2);
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&printed).unwrap();
    let webhooks = documents
        .iter()
        .find(|doc| doc["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let policies: Vec<_> = webhooks["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| {
            (
                hook["clientConfig"]["service"]["path"].as_str().unwrap(),
                hook["failurePolicy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [("/inject", "Fail"), ("/inject-annotated", "Ignore")]
    );
}

#[test]
fn replicas_set_the_deployment_and_more_than_one_get_a_disruption_budget() {
    let kinds_and_replicas = |replicas| {
        let printed = render("registry.example/seam:1.2.3", replicas);
        crate::injector::typed::check_yaml(&printed).unwrap_or_else(|err| panic!("{err}"));
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&printed).unwrap();
        let deployment = documents
            .iter()
            .find(|doc| doc["kind"] == "Deployment")
            .unwrap();
        let budget = documents
            .iter()
            .find(|doc| doc["kind"] == "PodDisruptionBudget")
            .map(|budget| {
                assert_eq!(
                    budget["spec"]["selector"], deployment["spec"]["selector"],
                    "the budget covers the control plane's pods"
                );
                budget["spec"]["minAvailable"].clone()
            });
        (deployment["spec"]["replicas"].clone(), budget)
    };
    assert_eq!(
        kinds_and_replicas(DEFAULT_REPLICAS),
        (serde_json::json!(2), Some(serde_json::json!(1)))
    );
    assert_eq!(
        kinds_and_replicas(3),
        (serde_json::json!(3), Some(serde_json::json!(1)))
    );
    // One replica: a budget of one would block every node drain.
    assert_eq!(kinds_and_replicas(1), (serde_json::json!(1), None));
}
