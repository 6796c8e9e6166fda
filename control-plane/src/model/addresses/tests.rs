use super::super::tests::{mesh, service};
use super::*;

#[test]
fn services_whose_addresses_name_one_thing_each_are_indexed() {
    let cases = [
        (
            "explicit-mode services share 127.0.0.1 on different ports",
            vec![
                service("a", &["127.0.0.1:1", "127.0.0.1:2"], &[], &[], None),
                service("b", &["127.0.0.1:3"], &[], &[], None),
            ],
        ),
        (
            "a virtual address of a service without endpoints, through a mapping",
            vec![service("a", &[], &[(80, 8080)], &["10.96.0.1:80"], None)],
        ),
        (
            "two services on one IP with disjoint instance ports",
            vec![
                service("a", &["10.0.0.1:80"], &[(443, 8443)], &[], None),
                service("b", &["10.0.0.1:5432"], &[], &["10.96.0.2:5432"], None),
            ],
        ),
    ];
    for (case, services) in cases {
        assert!(mesh(services).is_ok(), "{case}");
    }
}

#[test]
fn an_address_that_would_name_two_things_is_refused_naming_both() {
    let cases = [
        (
            vec![
                service("a", &["10.0.0.1:80"], &[], &[], None),
                service("b", &["10.0.0.1:80"], &[], &[], None),
            ],
            "address 10.0.0.1:80 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (an instance address); an address may name one service only",
        ),
        (
            vec![
                service("a", &["10.0.0.1:80"], &[(8080, 8080)], &[], None),
                service("b", &["10.0.0.1:8080"], &[], &[], None),
            ],
            "address 10.0.0.1:8080 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (an instance address); an address may name one service only",
        ),
        (
            vec![
                service("a", &["10.0.0.1:80"], &[], &[], None),
                service("b", &["10.0.0.2:80"], &[], &["10.0.0.1:80"], None),
            ],
            "address 10.0.0.1:80 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (a virtual address); an address may name one service only",
        ),
        (
            vec![
                service("a", &["10.0.0.1:80"], &[], &["10.96.0.1:80"], None),
                service("b", &["10.0.0.2:80"], &[], &["10.96.0.1:80"], None),
            ],
            "address 10.96.0.1:80 is claimed by two services: \"a\" (a virtual address) and \
             \"b\" (a virtual address); an address may name one service only",
        ),
        (
            vec![service(
                "a",
                &["10.0.0.1:80"],
                &[],
                &["10.96.0.1:80", "10.96.0.1:80"],
                None,
            )],
            "virtual address 10.96.0.1:80 of service \"a\" is listed twice",
        ),
        (
            vec![service("a", &["10.0.0.1:80"], &[], &["10.0.0.1:80"], None)],
            "virtual address 10.0.0.1:80 of service \"a\" is also one of its instance addresses \
             (an endpoint IP with an instance port)",
        ),
        (
            vec![service(
                "a",
                &["10.0.0.1:5432"],
                &[(80, 8080)],
                &["10.96.0.1:443"],
                None,
            )],
            "virtual address 10.96.0.1:443 of service \"a\" goes to no instance port: ports does \
             not map 443, and its instance ports are 5432, 8080",
        ),
        (
            vec![service("a", &[], &[], &["[fd00::1]:80"], None)],
            "virtual address [fd00::1]:80 of service \"a\" goes to no instance port: ports does \
             not map 80, and the service has no instance ports (no endpoints, no ports)",
        ),
    ];
    for (services, want) in cases {
        assert_eq!(mesh(services).unwrap_err().to_string(), want);
    }
}

#[test]
fn a_mesh_whose_endpoints_multiply_past_the_limit_is_refused() {
    // 1100 endpoints, each with its own IP and port: 1100 × 1100 instance addresses.
    let endpoints: Vec<String> = (0..1100_u32)
        .map(|i| format!("10.1.{}.{}:{}", i / 250, i % 250 + 1, 20000 + i))
        .collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let err = mesh(vec![service("wide", &endpoints, &[], &[], None)]).unwrap_err();
    assert!(
        matches!(
            err,
            AddressError::TooMany {
                count: 1_210_000,
                ips: 1100,
                ports: 1100,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with(
        "service \"wide\" brings the mesh to 1210000 addresses, more than the 1048576"
    ));
}
