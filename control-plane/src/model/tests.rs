use super::*;

/// A service of the test meshes: endpoints, `ports` as (port, target) pairs, virtual
/// addresses, and one route splitting to `split_to` when given.
pub(super) fn service(
    name: &str,
    endpoints: &[&str],
    ports: &[(u16, u16)],
    addresses: &[&str],
    split_to: Option<&str>,
) -> ServiceModel {
    let identity = SpiffeId::workload("seam.local", FILE_NAMESPACE, name).unwrap();
    ServiceModel {
        name: name.into(),
        join_token: JoinToken::new("t".into()),
        endpoints: endpoints
            .iter()
            .map(|address| Endpoint {
                address: address.parse().unwrap(),
                identity: Some(identity.clone()),
            })
            .collect(),
        named_endpoints: Vec::new(),
        ports: ports
            .iter()
            .map(|&(port, target_port)| PortMapping { port, target_port })
            .collect(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        opaque_ports: vec![5432],
        policy: Policy::default(),
        routes: split_to
            .map(|target| RouteModel {
                route_match: RouteMatch {
                    method: Some("GET".into()),
                    ..RouteMatch::default()
                },
                policy: Policy::default(),
                backends: vec![BackendRef {
                    service: target.into(),
                    weight: 1,
                }],
                allow: None,
                own_rate_limit: false,
            })
            .into_iter()
            .collect(),
        authorization: Authorization::default(),
        request_id_off: false,
    }
}

pub(super) fn mesh(services: Vec<ServiceModel>) -> Result<MeshModel, AddressError> {
    let services = services
        .into_iter()
        .map(|service| (service.name.clone(), service))
        .collect();
    MeshModel::new("seam.local", services)
}

/// Explicit-mode services sharing 127.0.0.1 (`api` splits to `v2`), a transparent-mode
/// database with virtual addresses (two endpoints on one IP), and an IPv6 service.
fn model() -> MeshModel {
    mesh(vec![
        service("api", &["127.0.0.1:1001"], &[], &[], Some("v2")),
        service("v2", &["127.0.0.1:1002"], &[], &[], None),
        service(
            "db",
            &["10.77.0.3:5432", "10.77.0.4:5432", "10.77.0.3:5433"],
            &[(80, 8080), (9090, 9090)],
            &["10.96.0.20:5432", "10.96.0.20:80", "10.96.0.20:9090"],
            Some("v2"),
        ),
        service(
            "v6",
            &["[fd00::3]:9000", "[fd00::4]:9000"],
            &[(443, 9000)],
            &["[fd00:96::20]:443"],
            None,
        ),
    ])
    .unwrap()
}

/// The first route's backends with their endpoints (`None`: the service has no routes).
type Backends = Option<Vec<(String, Vec<String>)>>;

/// What a resolution comes to: the service, its endpoints, and its first route's
/// backends.
type Seen = (String, Vec<String>, Backends);

fn found(service: &str, endpoints: &[&str], backends: Backends) -> Option<Seen> {
    let endpoints = endpoints.iter().map(|e| (*e).to_owned()).collect();
    Some((service.to_owned(), endpoints, backends))
}

fn seen(resolution: Resolution) -> Option<Seen> {
    let Resolution::Service(service) = resolution else {
        return None;
    };
    let identity = SpiffeId::workload("seam.local", FILE_NAMESPACE, &service.name).unwrap();
    let addresses = |endpoints: &[Endpoint]| {
        endpoints
            .iter()
            .map(|endpoint| endpoint.address.to_string())
            .collect::<Vec<_>>()
    };
    for endpoint in &service.endpoints {
        assert_eq!(
            endpoint.identity,
            Some(identity.clone()),
            "{}",
            endpoint.address
        );
    }
    let backends = service.routes.first().map(|route| {
        assert_eq!(
            route.route_match.method.as_deref(),
            Some("GET"),
            "a route keeps its match"
        );
        route
            .backends
            .iter()
            .map(|backend| (backend.service.clone(), addresses(&backend.endpoints)))
            .collect()
    });
    Some((
        service.name.clone(),
        addresses(&service.endpoints),
        backends,
    ))
}

#[test]
fn resolves_names_virtual_addresses_and_pinned_instances() {
    let split = || Some(vec![("v2".to_owned(), vec!["127.0.0.1:1002".to_owned()])]);
    let pinned = || Some(Vec::new());
    let db_listed = ["10.77.0.3:5432", "10.77.0.4:5432", "10.77.0.3:5433"];
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<Seen>)> = vec![
        ("a name", "api", found("api", &["127.0.0.1:1001"], split())),
        ("a name with a port", "api:80", found("api", &["127.0.0.1:1001"], split())),
        ("a name lists every endpoint", "db", found("db", &db_listed, split())),
        ("an explicit-mode endpoint is pinned, splits dropped", "127.0.0.1:1001",
            found("api", &["127.0.0.1:1001"], pinned())),
        ("another service on the same loopback IP", "127.0.0.1:1002",
            found("v2", &["127.0.0.1:1002"], None)),
        ("pinned on its endpoint port", "10.77.0.4:5432",
            found("db", &["10.77.0.4:5432"], pinned())),
        ("pinned on another endpoint's port", "10.77.0.4:5433",
            found("db", &["10.77.0.4:5433"], pinned())),
        ("pinned on a mapping's target port", "10.77.0.3:8080",
            found("db", &["10.77.0.3:8080"], pinned())),
        ("a virtual address without a mapping", "10.96.0.20:5432",
            found("db", &["10.77.0.3:5432", "10.77.0.4:5432"], split())),
        ("a virtual address with a mapping", "10.96.0.20:80",
            found("db", &["10.77.0.3:8080", "10.77.0.4:8080"], split())),
        ("a virtual address mapped to itself", "10.96.0.20:9090",
            found("db", &["10.77.0.3:9090", "10.77.0.4:9090"], split())),
        ("an IPv6 virtual address", "[fd00:96::20]:443",
            found("v6", &["[fd00::3]:9000", "[fd00::4]:9000"], None)),
        ("an IPv6 instance", "[fd00::4]:9000", found("v6", &["[fd00::4]:9000"], None)),
        ("an unknown name", "web", None),
        ("a name with a port that is not a number", "api:http", None),
        ("an unknown IP", "10.0.0.99:5432", None),
        ("an unknown IPv6", "[fd00::5]:9000", None),
        ("a loopback port no service serves", "127.0.0.1:9", None),
        ("an instance IP on a port it does not serve", "10.77.0.4:80", None),
        ("a virtual IP on a port it does not take", "10.96.0.20:8080", None),
        ("an IPv6 instance on a virtual port", "[fd00::4]:443", None),
    ];
    let model = model();
    for (case, authority, want) in cases {
        assert_eq!(seen(model.resolve(authority)), want, "{case}: {authority}");
    }
}

#[test]
fn a_resolution_carries_the_opaque_ports() {
    let model = model();
    for authority in ["db", "10.96.0.20:80", "10.77.0.3:5432"] {
        let Resolution::Service(service) = model.resolve(authority) else {
            panic!("{authority} did not resolve");
        };
        assert_eq!(service.opaque_ports, [5432], "{authority}");
    }
}

#[test]
fn join_tokens_match_exactly_and_never_print() {
    let token = JoinToken::new("s3cret".into());
    assert!(token.matches("s3cret"));
    assert!(!token.matches("s3cre"));
    assert!(!token.matches("s3cret!"));
    assert!(!format!("{token:?}").contains("s3cret"));
}
