use super::*;

const DEPLOYED: &str = "deploy/kubernetes/seam.yaml";

fn deployed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEPLOYED)
}

#[test]
fn deploy_kubernetes_holds_what_install_prints() {
    let printed = render(crate::injector::DEFAULT_IMAGE);
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
    let count = crate::injector::typed::check_yaml(&render("registry.example/seam:1.2.3"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        count, 9,
        "namespace, account, 4 RBAC, service, deployment, webhooks"
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
    let printed = render("registry.example/seam:1.2.3");
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
