use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

use super::probe_paths;

fn spec(containers: Value) -> PodSpec {
    serde_json::from_value(json!({ "containers": containers })).unwrap()
}

/// One app container with `probes` (JSON of the probe fields) and a port named `http`.
fn app(probes: Value) -> Value {
    let mut container = json!({
        "name": "app",
        "image": "app:1",
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9901}],
    });
    for (key, value) in probes.as_object().unwrap() {
        container[key] = value.clone();
    }
    container
}

#[test]
fn probes_become_port_and_path_entries() {
    // (what, the container's probe fields, the expected SEAM_PROBE_PATHS)
    let rows: [(&str, Value, Option<&str>); 12] = [
        ("no probes", json!({}), None),
        (
            "numeric port",
            json!({"livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}}}),
            Some("8080:/healthz"),
        ),
        (
            "named port",
            json!({"readinessProbe": {"httpGet": {"port": "admin", "path": "/ready"}}}),
            Some("9901:/ready"),
        ),
        (
            "a number written as a string",
            json!({"readinessProbe": {"httpGet": {"port": "8081", "path": "/ready"}}}),
            Some("8081:/ready"),
        ),
        (
            "gRPC",
            json!({"startupProbe": {"grpc": {"port": 9090, "service": "app"}}}),
            Some("9090:/grpc.health.v1.Health/Check"),
        ),
        (
            "no path, a path without /, and a query",
            json!({
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"httpGet": {"port": "http", "path": "ready"}},
                "startupProbe": {"httpGet": {"port": 8080, "path": "/started?full=1"}},
            }),
            Some("8080:/,8080:/ready,8080:/started"),
        ),
        (
            "the same path twice is listed once",
            json!({
                "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
                "readinessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}},
            }),
            Some("8080:/healthz"),
        ),
        (
            "tcpSocket needs nothing",
            json!({"livenessProbe": {"tcpSocket": {"port": 8080}}}),
            None,
        ),
        (
            "exec needs nothing",
            json!({"livenessProbe": {"exec": {"command": ["true"]}}}),
            None,
        ),
        (
            "host set elsewhere",
            json!({"livenessProbe": {"httpGet": {"port": 8080, "path": "/h", "host": "10.0.0.9"}}}),
            None,
        ),
        (
            "HTTPS",
            json!({"livenessProbe": {"httpGet": {"port": 8443, "path": "/h", "scheme": "HTTPS"}}}),
            None,
        ),
        (
            "a name no port has",
            json!({"livenessProbe": {"httpGet": {"port": "metrics", "path": "/h"}}}),
            None,
        ),
    ];
    for (what, probes, expected) in rows {
        let spec = spec(json!([app(probes)]));
        assert_eq!(probe_paths(&spec).as_deref(), expected, "{what}");
    }
}

#[test]
fn every_app_container_and_native_sidecar_counts_but_not_plain_init_containers() {
    let mut spec = spec(json!([
        app(json!({"livenessProbe": {"httpGet": {"port": 8080, "path": "/a"}}})),
        {"name": "worker", "image": "w:1",
         "ports": [{"name": "http", "containerPort": 7070}],
         "readinessProbe": {"httpGet": {"port": "http", "path": "/b"}}},
    ]));
    spec.init_containers = serde_json::from_value(json!([
        {"name": "logs", "image": "l:1", "restartPolicy": "Always",
         "startupProbe": {"httpGet": {"port": 6060, "path": "/c"}}},
        {"name": "migrate", "image": "m:1",
         "readinessProbe": {"httpGet": {"port": 5050, "path": "/d"}}},
    ]))
    .unwrap();
    assert_eq!(
        probe_paths(&spec).as_deref(),
        Some("6060:/c,7070:/b,8080:/a"),
        "a named port resolves through its own container's ports"
    );
}
