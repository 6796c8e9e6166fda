//! The mapping over real Kubernetes JSON (`kubectl get -o json` shapes, in `testdata/`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

use super::*;
use crate::kubernetes::objects::HttpRoute;
use crate::model::{BackendRef, PathMatch, Resolution};

fn items<T: DeserializeOwned>(json: &str) -> Vec<T> {
    let list: serde_json::Value = serde_json::from_str(json).unwrap();
    serde_json::from_value(list["items"].clone()).unwrap()
}

fn shared<T: DeserializeOwned>(json: &str) -> Vec<std::sync::Arc<T>> {
    items(json).into_iter().map(std::sync::Arc::new).collect()
}

pub(crate) fn fixture() -> Snapshot {
    Snapshot {
        services: shared::<Service>(include_str!("../testdata/services.json")),
        slices: shared::<EndpointSlice>(include_str!("../testdata/endpointslices.json")),
        pods: shared::<Pod>(include_str!("../testdata/pods.json")),
        routes: items::<HttpRoute>(include_str!("../testdata/httproutes.json")),
    }
}

const SETTINGS: Settings<'static> = Settings {
    trust_domain: "seam.local",
    cluster_domain: "cluster.local",
};

fn mapped(snapshot: &Snapshot) -> Mapped {
    map(snapshot, &SETTINGS, &BTreeMap::new())
}

fn sa(account: &str) -> Option<String> {
    Some(format!("spiffe://seam.local/ns/shop/sa/{account}"))
}

fn service<'a>(mapped: &'a Mapped, key: &str) -> &'a ServiceModel {
    mapped
        .model
        .services()
        .get(key)
        .unwrap_or_else(|| panic!("{key} is not in the model"))
}

#[test]
fn services_endpoints_ports_and_addresses_come_from_the_cluster() {
    let mapped = mapped(&fixture());
    // (service, endpoints with identities, port mappings, virtual addresses)
    type Row = (
        &'static str,
        Vec<(&'static str, Option<String>)>,
        Vec<(u16, u16)>,
        Vec<&'static str>,
    );
    let table: Vec<Row> = vec![
        // Named targetPort `http` resolves through the slice's port `http`; UDP is left
        // out; the not-ready and the terminating pod are not endpoints while ready ones
        // exist; the native sidecar (an init container) counts.
        (
            "web.shop",
            vec![("10.0.0.1:8080", sa("web")), ("10.0.0.4:8080", sa("web"))],
            vec![(80, 8080), (9090, 9091)],
            vec!["10.96.0.10:80", "10.96.0.10:9090"],
        ),
        // No endpoint is ready: the serving, terminating one is kept (the not-serving one
        // is not).
        (
            "web-v2.shop",
            vec![("10.0.4.1:8080", sa("web"))],
            vec![(80, 8080)],
            vec!["10.96.0.11:80"],
        ),
        // Headless: no virtual address; `ready` absent counts as ready; db-1 has no
        // sidecar, so it is reached in plaintext.
        (
            "db.shop",
            vec![("10.0.1.1:5432", sa("db")), ("10.0.1.2:5432", None)],
            vec![(5432, 5432)],
            vec![],
        ),
        // No targetPort: the port itself; a pod without a sidecar and an address without
        // a targetRef are plaintext.
        (
            "legacy.shop",
            vec![("10.0.2.1:8080", None), ("10.0.2.9:8080", None)],
            vec![(8080, 8080)],
            vec!["10.96.0.20:8080"],
        ),
        (
            "broken.shop",
            vec![("10.0.3.1:8080", sa("broken"))],
            vec![(80, 8080)],
            vec!["10.96.0.30:80"],
        ),
        (
            "frontend.shop",
            vec![],
            vec![(80, 8080)],
            vec!["10.96.0.40:80"],
        ),
    ];
    for (key, endpoints, ports, addresses) in table {
        let service = service(&mapped, key);
        let got: Vec<(String, Option<String>)> = service
            .endpoints
            .iter()
            .map(|endpoint| {
                (
                    endpoint.address.to_string(),
                    endpoint.identity.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let want: Vec<(String, Option<String>)> = endpoints
            .into_iter()
            .map(|(address, identity)| (address.to_owned(), identity))
            .collect();
        assert_eq!(got, want, "endpoints of {key}");
        let got: Vec<(u16, u16)> = service
            .ports
            .iter()
            .map(|mapping| (mapping.port, mapping.target_port))
            .collect();
        assert_eq!(got, ports, "ports of {key}");
        let got: Vec<String> = service.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(got, addresses, "addresses of {key}");
        assert!(!service.join_token.matches(""), "{key} takes no join token");
    }
    assert!(
        !mapped.model.services().contains_key("payments.shop"),
        "an ExternalName Service is not in the mesh"
    );
}

#[test]
fn the_policy_annotation_is_the_mesh_files_block() {
    let mapped = mapped(&fixture());
    let web = service(&mapped, "web.shop");
    assert_eq!(web.policy.timeout, Some(Duration::from_secs(3)));
    assert_eq!(web.policy.retries.attempts, 2);
    assert_eq!(web.opaque_ports, vec![3306]);
    let allow: Vec<String> = web
        .authorization
        .allow
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        allow,
        [
            "spiffe://seam.local/ns/shop/sa/frontend",
            "spiffe://seam.local/ns/ops/sa/batch"
        ]
    );
    let legacy = service(&mapped, "legacy.shop");
    assert_eq!(legacy.policy, crate::model::Policy::default());
    assert_eq!(legacy.authorization.allow, None);
    assert_eq!(mapped.last_good["web.shop"].policy, web.policy);
}

#[test]
fn a_bad_policy_is_a_problem_and_the_last_good_one_stays() {
    let mut snapshot = fixture();
    let broken = |snapshot: &mut Snapshot, text: &str| {
        let service = snapshot
            .services
            .iter_mut()
            .find(|service| service.metadata.name.as_deref() == Some("broken"))
            .unwrap();
        std::sync::Arc::make_mut(service)
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(POLICY_ANNOTATION.into(), text.into());
    };
    // Never good: the default policy, and a problem naming the line and the key.
    let first = mapped(&snapshot);
    assert_eq!(
        service(&first, "broken.shop").policy,
        crate::model::Policy::default()
    );
    let problem = first
        .problems
        .iter()
        .find(|problem| problem.name == "broken")
        .expect("a problem on broken");
    assert_eq!(
        (problem.kind, problem.namespace.as_str()),
        ("Service", "shop")
    );
    assert!(problem.bad_policy);
    assert!(problem.message.contains("line 3"), "{}", problem.message);
    assert!(
        problem.message.contains("retries.attempts"),
        "{}",
        problem.message
    );
    assert!(problem.message.contains("lots"), "{}", problem.message);

    // Fixed: in force, and remembered.
    broken(&mut snapshot, "timeout: 2s\n");
    let fixed = map(&snapshot, &SETTINGS, &first.last_good);
    assert_eq!(
        service(&fixed, "broken.shop").policy.timeout,
        Some(Duration::from_secs(2))
    );
    assert!(
        !fixed
            .problems
            .iter()
            .any(|problem| problem.name == "broken")
    );

    // Broken again: the last good policy stays in force.
    broken(&mut snapshot, "timeout: soon\n");
    let again = map(&snapshot, &SETTINGS, &fixed.last_good);
    assert_eq!(
        service(&again, "broken.shop").policy.timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        again.last_good["broken.shop"].policy.timeout,
        Some(Duration::from_secs(2))
    );
    assert!(
        again
            .problems
            .iter()
            .any(|p| p.name == "broken" && p.bad_policy)
    );
}

#[test]
fn keys_with_another_home_in_a_cluster_are_refused_by_name() {
    let mapped = mapped(&fixture());
    let problem = mapped
        .problems
        .iter()
        .find(|problem| problem.name == "frontend")
        .expect("a problem on frontend");
    assert!(
        problem
            .message
            .contains("join_token has no place in seam.io/policy"),
        "{}",
        problem.message
    );
    let cases = [
        ("endpoints: [10.0.0.1:80]\n", "endpoints has no place"),
        ("routes: []\n", "routes come from HTTPRoutes"),
        ("allow: [Not_A_Name]\n", "expected a ServiceAccount"),
        (
            "allow: [spiffe://other.org/ns/a/sa/b]\n",
            "outside trust domain",
        ),
        ("mirror: { service: nowhere, percent: 5 }\n", "nowhere"),
        ("colour: blue\n", "colour"),
    ];
    for (text, expected) in cases {
        let mut snapshot = fixture();
        std::sync::Arc::make_mut(&mut snapshot.services[0])
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(POLICY_ANNOTATION.into(), text.into());
        let mapped = map(&snapshot, &SETTINGS, &BTreeMap::new());
        let problem = mapped
            .problems
            .iter()
            .find(|problem| problem.name == "web" && problem.bad_policy)
            .unwrap_or_else(|| panic!("{text:?} is refused"));
        assert!(
            problem.message.contains(expected),
            "{text:?}: {}",
            problem.message
        );
    }
}

#[test]
fn a_mirror_names_a_service_of_the_same_or_another_namespace() {
    let mut snapshot = fixture();
    std::sync::Arc::make_mut(&mut snapshot.services[0])
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            POLICY_ANNOTATION.into(),
            "mirror: { service: web-v2, percent: 5 }\n".into(),
        );
    let mapped = mapped(&snapshot);
    let mirror = service(&mapped, "web.shop").policy.mirror.clone().unwrap();
    assert_eq!(mirror.service, "web-v2.shop");
}

#[test]
fn httproutes_attached_to_a_service_are_its_routes() {
    let mapped = mapped(&fixture());
    let web = service(&mapped, "web.shop");
    let split = vec![
        BackendRef {
            service: "web.shop".into(),
            weight: 90,
        },
        BackendRef {
            service: "web-v2.shop".into(),
            weight: 10,
        },
    ];
    // (path, method, headers, backends, timeout, per-try timeout), in precedence order.
    type Row = (
        PathMatch,
        Option<&'static str>,
        Vec<(&'static str, &'static str)>,
        Vec<BackendRef>,
        Option<Duration>,
        Option<Duration>,
    );
    let table: Vec<Row> = vec![
        (
            PathMatch::Exact("/healthz".into()),
            None,
            vec![],
            vec![BackendRef {
                service: "web.shop".into(),
                weight: 1,
            }],
            Some(Duration::from_secs(3)),
            None,
        ),
        (
            PathMatch::Prefix("/api/v2".into()),
            None,
            vec![],
            split.clone(),
            Some(Duration::from_secs(5)),
            Some(Duration::from_millis(1500)),
        ),
        (
            PathMatch::Prefix("/api".into()),
            Some("GET"),
            vec![("x-canary", "yes")],
            split,
            Some(Duration::from_secs(5)),
            Some(Duration::from_millis(1500)),
        ),
    ];
    assert_eq!(web.routes.len(), table.len(), "{:#?}", web.routes);
    for (route, (path, method, headers, backends, timeout, per_try)) in web.routes.iter().zip(table)
    {
        assert_eq!(route.route_match.path, Some(path));
        assert_eq!(route.route_match.method.as_deref(), method);
        let got: Vec<(&str, &str)> = route
            .route_match
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(got, headers);
        assert_eq!(route.backends, backends);
        assert_eq!(route.policy.timeout, timeout);
        assert_eq!(route.policy.retries.per_try_timeout, per_try);
        assert_eq!(
            route.policy.retries.attempts, 2,
            "the Service's policy is the base"
        );
    }
    assert!(service(&mapped, "legacy.shop").routes.is_empty());
}

#[test]
fn unsupported_routes_are_problems_and_skipped() {
    let mapped = mapped(&fixture());
    let routes: Vec<(&str, &str)> = mapped
        .problems
        .iter()
        .filter(|problem| problem.kind == "HTTPRoute")
        .map(|problem| (problem.name.as_str(), problem.message.as_str()))
        .collect();
    let expected = [
        ("db-reads", "Service other/gone is not in the mesh"),
        (
            "web-regex",
            "RegularExpression path matches are not supported",
        ),
        ("web-rewrite", "filters are not supported"),
    ];
    assert_eq!(routes.len(), expected.len(), "{routes:#?}");
    for ((name, message), (want_name, want)) in routes.iter().zip(expected) {
        assert_eq!(*name, want_name);
        assert!(message.contains(want), "{message}");
        assert!(message.contains("the route is skipped"), "{message}");
    }
    let services: Vec<&str> = mapped
        .problems
        .iter()
        .filter(|problem| problem.kind == "Service")
        .map(|problem| problem.name.as_str())
        .collect();
    assert_eq!(services, ["broken", "frontend"]);
}

#[test]
fn names_resolve_relative_to_the_callers_namespace() {
    let model = mapped(&fixture()).model;
    // (caller's namespace, authority, service, endpoints)
    let table: &[(Option<&str>, &str, &str, &[&str])] = &[
        (
            Some("shop"),
            "web",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            Some("shop"),
            "web:80",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            Some("shop"),
            "web:9090",
            "web.shop",
            &["10.0.0.1:9091", "10.0.0.4:9091"],
        ),
        (
            Some("ops"),
            "web.shop",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            Some("ops"),
            "web.shop.svc:80",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            None,
            "web.shop.svc.cluster.local:9090",
            "web.shop",
            &["10.0.0.1:9091", "10.0.0.4:9091"],
        ),
        (
            Some("ops"),
            "10.96.0.10:80",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            Some("ops"),
            "10.96.0.10:9090",
            "web.shop",
            &["10.0.0.1:9091", "10.0.0.4:9091"],
        ),
        // A headless Service's pod, pinned.
        (Some("ops"), "10.0.1.2:5432", "db.shop", &["10.0.1.2:5432"]),
        // A bare pod IP: the inbound policy of that pod, ready or not.
        (
            None,
            "10.0.0.3",
            "web.shop",
            &["10.0.0.1:8080", "10.0.0.4:8080"],
        ),
        (
            None,
            "10.0.1.1",
            "db.shop",
            &["10.0.1.1:5432", "10.0.1.2:5432"],
        ),
    ];
    for (namespace, authority, name, endpoints) in table {
        match model.resolve_for(authority, *namespace) {
            Resolution::Service(resolved) => {
                assert_eq!(resolved.name, *name, "{authority}");
                let got: Vec<String> = resolved
                    .endpoints
                    .iter()
                    .map(|endpoint| endpoint.address.to_string())
                    .collect();
                assert_eq!(got, *endpoints, "{authority} from {namespace:?}");
            }
            Resolution::NotFound => panic!("{authority} from {namespace:?} names nothing"),
        }
    }
    for (namespace, authority) in [
        (Some("ops"), "web"),
        (None, "web"),
        (Some("shop"), "payments"),
        (Some("shop"), "web.shop.svc.other.local"),
        (Some("shop"), "10.0.9.9"),
    ] {
        assert_eq!(
            model.resolve_for(authority, namespace),
            Resolution::NotFound,
            "{authority} from {namespace:?}"
        );
    }
}

#[test]
fn services_sharing_pods_share_them_and_the_first_by_name_owns_their_addresses() {
    let mut snapshot = fixture();
    let mut headless: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web-pods", "namespace": "shop" },
        "spec": { "clusterIP": "None", "ports": [ { "name": "http", "port": 8080 } ] }
    }))
    .unwrap();
    headless.metadata.labels = None;
    snapshot.services.push(std::sync::Arc::new(headless));
    let mut slice = (*snapshot.slices[0]).clone();
    slice.metadata.name = Some("web-pods-abcde".into());
    slice
        .metadata
        .labels
        .get_or_insert_default()
        .insert(endpoints::SERVICE_NAME_LABEL.into(), "web-pods".into());
    snapshot.slices.push(std::sync::Arc::new(slice));
    let mapped = mapped(&snapshot);
    assert_eq!(service(&mapped, "web-pods.shop").endpoints.len(), 2);
    assert_eq!(service(&mapped, "web.shop").endpoints.len(), 2);
    // "web-pods.shop" sorts before "web.shop" ('-' < '.').
    let problem = mapped
        .problems
        .iter()
        .find(|problem| problem.message.contains("web-pods.shop (first by name)"))
        .expect("a problem on web");
    assert_eq!(problem.name, "web");
    match mapped.model.resolve_for("10.0.0.1:8080", None) {
        Resolution::Service(resolved) => assert_eq!(resolved.name, "web-pods.shop"),
        Resolution::NotFound => panic!("the pod address names nothing"),
    }
}

#[test]
fn mesh_lists_the_endpoints_reached_in_plaintext() {
    let mapped = mapped(&fixture());
    let db = crate::dashboard::model_json::mesh_entry(service(&mapped, "db.shop"));
    assert_eq!(
        db["endpoints"],
        serde_json::json!(["10.0.1.1:5432", "10.0.1.2:5432"])
    );
    assert_eq!(
        db["plaintext_endpoints"],
        serde_json::json!(["10.0.1.2:5432"])
    );
}

#[test]
fn a_pods_opaque_ports_annotation_makes_those_ports_opaque_for_its_services() {
    let annotate = |snapshot: &mut Snapshot, pod_name: &str, value: &str| {
        let pod = snapshot
            .pods
            .iter_mut()
            .find(|pod| pod.metadata.name.as_deref() == Some(pod_name))
            .unwrap();
        std::sync::Arc::make_mut(pod)
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(OPAQUE_PORTS_ANNOTATION.to_owned(), value.to_owned());
    };
    let mut snapshot = fixture();
    annotate(&mut snapshot, "web-5d8f7c9b4-abcde", "6379, 7000");
    let good = mapped(&snapshot);
    // The Service's own `opaque_ports` (3306) and the pod's, each once.
    assert_eq!(
        service(&good, "web.shop").opaque_ports,
        vec![3306, 6379, 7000]
    );
    assert!(
        good.problems
            .iter()
            .all(|p| !p.message.contains("opaque-ports"))
    );

    annotate(&mut snapshot, "web-5d8f7c9b4-pqrst", "6379,redis");
    let bad = mapped(&snapshot);
    let problem = bad
        .problems
        .iter()
        .find(|p| p.message.contains("seam.io/opaque-ports"))
        .expect("a refused annotation is a problem");
    assert_eq!((problem.kind, problem.name.as_str()), ("Service", "web"));
    assert!(
        problem.message.contains("pod shop/web-5d8f7c9b4-pqrst")
            && problem.message.contains("\"redis\""),
        "{}",
        problem.message
    );
    // The other pod's ports still count, and the Service keeps serving.
    assert_eq!(
        service(&bad, "web.shop").opaque_ports,
        vec![3306, 6379, 7000]
    );
}
