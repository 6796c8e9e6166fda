//! Golden files: `control-plane/src/injector/testdata/NAME.yaml` injected must equal
//! `NAME.injected.yaml`. Regenerate them with
//! `SEAM_BLESS=1 cargo test -p seam-control-plane ctl::kube_inject`.

use std::path::PathBuf;

use super::*;
use crate::ctl::uninject;
use crate::injector::typed;

const INPUTS: [&str; 4] = ["workloads", "list", "annotations", "probes"];

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/injector/testdata")
        .join(name)
}

fn settings() -> Settings {
    Settings {
        version: "test".to_owned(),
        ..Settings::default()
    }
}

fn inject_text(source: &str, text: &str) -> (String, Vec<String>) {
    let mut documents = parse(source, text).unwrap();
    let notes = inject(source, &mut documents, &settings()).unwrap();
    (render(&documents).unwrap(), notes)
}

fn uninject_text(text: &str) -> String {
    let mut documents = parse("injected", text).unwrap();
    uninject::uninject("injected", &mut documents).unwrap();
    render(&documents).unwrap()
}

#[test]
fn injected_output_matches_the_golden_files() {
    let bless = std::env::var_os("SEAM_BLESS").is_some();
    for name in INPUTS {
        let input = std::fs::read_to_string(testdata(&format!("{name}.yaml"))).unwrap();
        let (injected, _) = inject_text(name, &input);
        let golden = testdata(&format!("{name}.injected.yaml"));
        if bless {
            std::fs::write(&golden, &injected).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            injected == expected,
            "{name}: `seamctl inject` output differs from {}:\n{injected}\n\
             if the change is intended, regenerate the golden files with \
             SEAM_BLESS=1 cargo test -p seam-control-plane ctl::kube_inject",
            golden.display()
        );
        typed::check_yaml(&injected).unwrap_or_else(|err| panic!("{name}: {err}"));
    }
}

#[test]
fn injecting_twice_equals_injecting_once() {
    for name in INPUTS {
        let input = std::fs::read_to_string(testdata(&format!("{name}.yaml"))).unwrap();
        let (once, _) = inject_text(name, &input);
        let (twice, notes) = inject_text(name, &once);
        assert_eq!(once, twice, "{name}");
        assert!(
            notes
                .iter()
                .any(|note| note.contains("already has a seam-proxy container")),
            "{notes:?}"
        );
    }
}

#[test]
fn uninject_takes_out_exactly_what_inject_put_in() {
    for name in INPUTS {
        let input = std::fs::read_to_string(testdata(&format!("{name}.yaml"))).unwrap();
        let (injected, _) = inject_text(name, &input);
        let as_read = render(&parse(name, &input).unwrap()).unwrap();
        assert_eq!(uninject_text(&injected), as_read, "{name}");
    }
}

#[test]
fn every_workload_kind_is_injected_and_other_kinds_pass_through() {
    let input = std::fs::read_to_string(testdata("workloads.yaml")).unwrap();
    let (injected, notes) = inject_text("workloads", &input);
    assert!(notes.is_empty(), "{notes:?}");
    let documents: Vec<Value> = serde_saphyr::from_multiple(&injected).unwrap();
    let original: Vec<Value> = serde_saphyr::from_multiple(&input).unwrap();
    for (document, before) in documents.iter().zip(&original) {
        let kind = document["kind"].as_str().unwrap();
        let Some(path) = workloads::template_path(kind).filter(|_| kind != "Widget") else {
            assert_eq!(document, before, "{kind} changed");
            continue;
        };
        let mut template = document;
        for token in path {
            template = &template[token];
        }
        let inits: Vec<&str> = template["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits[..2], ["seam-init", "seam-proxy"], "{kind}");
        assert_eq!(
            template["metadata"]["annotations"]["seam.io/injected"],
            "test"
        );
    }
    // The Deployment's own init container runs after the proxy, its keys keep their order.
    let web = &documents[1]["spec"]["template"];
    assert_eq!(web["spec"]["initContainers"][2]["name"], "migrate");
    assert!(injected.contains("      annotations:\n        prometheus.io/scrape: \"true\"\n        seam.io/injected: test\n"), "{injected}");
}

#[test]
fn objects_left_alone_are_unchanged_and_say_why() {
    let input = std::fs::read_to_string(testdata("annotations.yaml")).unwrap();
    let (injected, notes) = inject_text("annotations", &input);
    assert_eq!(
        notes,
        [
            "Pod opted-out: left alone: opted out with seam.io/inject: disabled",
            "Pod node-agent: left alone: hostNetwork pods share the node's network",
            "Pod istio-meshed: left alone: already has another mesh's sidecar istio-proxy",
        ]
    );
    let documents: Vec<Value> = serde_saphyr::from_multiple(&injected).unwrap();
    let original: Vec<Value> = serde_saphyr::from_multiple(&input).unwrap();
    assert_eq!(documents[2..], original[2..]);
    // The classic sidecar: first container, holding the app until /ready.
    let job = &documents[1]["spec"]["template"]["spec"];
    assert_eq!(job["containers"][0]["name"], "seam-proxy");
    assert_eq!(
        job["containers"][0]["lifecycle"]["postStart"]["exec"]["command"]
            .as_array()
            .unwrap()[0..3],
        ["seamctl", "ready", "--wait"]
    );
}

#[test]
fn bad_input_is_an_error_naming_the_file_document_and_annotation() {
    let text = "kind: Pod\nmetadata:\n  name: ok\nspec:\n  containers: []\n---\nkind: Deployment\n\
                metadata:\n  name: web\nspec:\n  template:\n    metadata:\n      annotations:\n        \
                seam.io/proxy-cpu-limit: lots\n    spec:\n      containers: []\n";
    let mut documents = parse("app.yaml", text).unwrap();
    let err = format!(
        "{:#}",
        inject("app.yaml", &mut documents, &settings()).unwrap_err()
    );
    assert_eq!(
        err,
        "app.yaml: document 2 (Deployment web): annotation seam.io/proxy-cpu-limit: \"lots\" \
         is not a Kubernetes quantity (such as 100m, 1, 64Mi or 1Gi)"
    );
    let mut documents = parse("app.yaml", "kind: Job\nmetadata:\n  name: j\nspec: {}\n").unwrap();
    let err = format!(
        "{:#}",
        inject("app.yaml", &mut documents, &settings()).unwrap_err()
    );
    assert_eq!(err, "app.yaml: document 1 (Job j): has no spec.template");
    let mut documents = parse(
        "app.yaml",
        "kind: Pod\nmetadata:\n  name: p\nspec:\n  containers: 3\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        inject("app.yaml", &mut documents, &settings()).unwrap_err()
    );
    assert!(
        err.starts_with("app.yaml: document 1 (Pod p): not a valid pod template: spec.containers"),
        "{err}"
    );
}

#[test]
fn a_directory_is_read_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), "kind: ConfigMap\n").unwrap();
    std::fs::write(dir.path().join("a.yml"), "kind: Secret\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let inputs = read_inputs(dir.path().to_str().unwrap()).unwrap();
    let texts: Vec<&str> = inputs.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts, ["kind: Secret\n", "kind: ConfigMap\n"]);
}
