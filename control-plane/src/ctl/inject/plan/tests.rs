use super::*;

fn document(text: &str) -> Mapping {
    match serde_saphyr::from_str::<Yaml>(text).expect("valid YAML") {
        Yaml::Map(map) => map,
        other => panic!("not a map: {other:?}"),
    }
}

fn planned(text: &str, skip: &[&str], profile: Profile) -> Result<Plan, Refusal> {
    let skip: Vec<String> = skip.iter().map(|name| (*name).to_owned()).collect();
    plan(
        &document(text),
        &Options {
            skip: &skip,
            profile,
        },
    )
}

fn meshed(text: &str) -> Plan {
    planned(text, &[], Profile::Transparent).expect("meshable")
}

fn service<'a>(plan: &'a Plan, name: &str) -> &'a Mapping {
    plan.compose
        .get("services")
        .and_then(Yaml::as_map)
        .and_then(|services| services.get(name))
        .and_then(Yaml::as_map)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn yaml(text: &str) -> Yaml {
    serde_saphyr::from_str(text).expect("valid YAML")
}

fn reason(text: &str, skip: &[&str]) -> String {
    planned(text, skip, Profile::Transparent)
        .expect_err("refused")
        .to_string()
}

const WEB_AND_DB: &str = "\
version: '3.8'
services:
  web:
    build: ./web
    ports: ['8080:80']
    networks: [front, back]
    depends_on: [db]
    healthcheck:
      test: [CMD, wget, -q, -O-, http://localhost/]
    x-team: payments
  db:
    image: redis:7
    expose: ['6379']
    networks:
      back:
        aliases: [cache]
networks:
  front: {}
  back: {}
";

#[test]
fn the_sidecar_owns_the_namespace_and_the_app_joins_it() {
    let plan = meshed(WEB_AND_DB);
    let web = service(&plan, "web");
    assert_eq!(
        web.keys().collect::<Vec<_>>(),
        [
            "build",
            "depends_on",
            "healthcheck",
            "x-team",
            "network_mode"
        ]
    );
    assert_eq!(web.get("network_mode"), Some(&yaml("service:web-seam")));
    assert_eq!(
        web.get("depends_on"),
        Some(&yaml(
            "{db: {condition: service_started}, web-seam: {condition: service_healthy}}"
        ))
    );
    let sidecar = service(&plan, "web-seam");
    assert_eq!(sidecar.get("ports"), Some(&yaml("['8080:80']")));
    assert_eq!(
        sidecar.get("networks"),
        Some(&yaml("{front: {aliases: [web]}, back: {aliases: [web]}}"))
    );
    assert_eq!(sidecar.get("cap_add"), Some(&yaml("[NET_ADMIN]")));
    assert_eq!(sidecar.get("secrets"), Some(&yaml("[seam-token-web]")));
    assert_eq!(sidecar::role(sidecar), Some("sidecar"));
    let command: Vec<&str> = match sidecar.get("command") {
        Some(Yaml::Seq(words)) => words.iter().filter_map(Yaml::as_str).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(&command[..3], ["seamctl", "pod", "--transparent"]);
    assert!(command.windows(2).any(|pair| pair == ["--service", "web"]));
    assert!(
        command
            .windows(2)
            .any(|pair| pair == ["--app", "127.0.0.1:80"])
    );
    assert_eq!(
        service(&plan, "db-seam").get("networks"),
        Some(&yaml("{back: {aliases: [cache, db]}}"))
    );
}

#[test]
fn the_file_gains_a_control_plane_and_secrets_and_loses_its_version() {
    let plan = meshed(WEB_AND_DB);
    assert_eq!(
        plan.compose
            .get("services")
            .and_then(Yaml::as_map)
            .map(|services| services.keys().collect::<Vec<_>>()),
        Some(vec![
            "web",
            "web-seam",
            "db",
            "db-seam",
            "seam-control-plane"
        ])
    );
    assert!(!plan.compose.contains_key("version"));
    assert_eq!(
        plan.compose.get("secrets"),
        Some(&yaml(
            "{seam-token-web: {file: ./seam/secrets/seam-token-web}, \
              seam-token-db: {file: ./seam/secrets/seam-token-db}}"
        ))
    );
    let control_plane = service(&plan, CONTROL_PLANE);
    assert_eq!(control_plane.get("networks"), Some(&yaml("[front, back]")));
    assert_eq!(
        plan.meshed,
        [
            MeshedService {
                name: "web".into(),
                ports: vec![80],
                published: true
            },
            MeshedService {
                name: "db".into(),
                ports: vec![6379],
                published: false
            },
        ]
    );
}

#[test]
fn on_the_default_network_the_sidecar_takes_the_alias_there() {
    let plan = meshed("services:\n  api:\n    image: api\n");
    assert_eq!(
        service(&plan, "api-seam").get("networks"),
        Some(&yaml("{default: {aliases: [api]}}"))
    );
    assert_eq!(service(&plan, CONTROL_PLANE).get("networks"), None);
}

#[test]
fn meshing_the_meshed_file_changes_nothing() {
    for profile in [Profile::Transparent, Profile::Explicit] {
        let once = planned(WEB_AND_DB, &["db"], profile).unwrap();
        let skip = ["db".to_owned()];
        let twice = plan(
            &once.compose,
            &Options {
                skip: &skip,
                profile,
            },
        )
        .unwrap();
        assert_eq!(twice.compose, once.compose, "{profile:?}");
        assert_eq!(twice.meshed, once.meshed, "{profile:?}");
        let all = meshed(WEB_AND_DB);
        assert_eq!(
            plan(
                &all.compose,
                &Options {
                    skip: &[],
                    profile: Profile::Transparent
                }
            )
            .unwrap()
            .compose,
            all.compose
        );
    }
}

#[test]
fn skipped_services_are_copied_as_they_are() {
    let plan = planned(WEB_AND_DB, &["db"], Profile::Transparent).unwrap();
    assert_eq!(
        Some(service(&plan, "db")),
        document(WEB_AND_DB)
            .get("services")
            .and_then(Yaml::as_map)
            .and_then(|services| services.get("db"))
            .and_then(Yaml::as_map)
    );
    assert!(
        plan.compose
            .get("services")
            .and_then(Yaml::as_map)
            .is_some_and(|services| !services.contains_key("db-seam"))
    );
    assert_eq!(plan.meshed.len(), 1);
}

#[test]
fn the_explicit_profile_points_http_at_the_proxy() {
    let plan = planned(
        "services:\n  api:\n    image: api\n    environment: [MODE=prod, NO_PROXY=internal]\n",
        &[],
        Profile::Explicit,
    )
    .unwrap();
    assert_eq!(
        service(&plan, "api").get("environment"),
        Some(&yaml(
            "[MODE=prod, NO_PROXY=internal, 'HTTP_PROXY=http://127.0.0.1:4140', \
              'http_proxy=http://127.0.0.1:4140', 'no_proxy=localhost,127.0.0.1']"
        ))
    );
    let sidecar = service(&plan, "api-seam");
    assert_eq!(sidecar.get("cap_add"), None);
    assert!(matches!(sidecar.get("command"), Some(Yaml::Seq(words))
        if !words.contains(&Yaml::str("--transparent"))));
}

#[test]
fn replicas_are_refused_with_the_reason_and_the_way_out() {
    assert_eq!(
        reason("services:\n  api:\n    deploy:\n      replicas: 3\n", &[]),
        "service \"api\": deploy.replicas is 3: compose cannot pair a sidecar with each \
         replica, so a meshed service runs one container; set it to 1, or leave it out of \
         the mesh with --skip api"
    );
    assert!(
        reason("services:\n  api:\n    scale: 2\n", &[]).starts_with(
            "service \"api\": scale is 2: compose cannot pair a sidecar with each replica"
        )
    );
    assert!(
        planned(
            "services:\n  api:\n    scale: 1\n",
            &[],
            Profile::Transparent
        )
        .is_ok()
    );
    assert!(
        planned(
            "services:\n  api:\n    scale: 3\n  web: {}\n",
            &["api"],
            Profile::Transparent
        )
        .is_ok()
    );
}

#[test]
fn namespaces_the_service_does_not_own_are_refused() {
    assert_eq!(
        reason("services:\n  api:\n    network_mode: host\n", &[]),
        "service \"api\": network_mode is host: it uses the host's network, which no sidecar \
         can own; leave it out of the mesh with --skip api"
    );
    assert_eq!(
        reason(
            "services:\n  vpn: {}\n  api:\n    network_mode: 'service:vpn'\n",
            &["vpn"]
        ),
        "service \"api\": network_mode is service:vpn: it shares another's network namespace, \
         and a meshed service's namespace belongs to its sidecar; leave it out of the mesh \
         with --skip api"
    );
    assert!(
        reason("services:\n  api:\n    network_mode: none\n", &[]).starts_with(
            "service \"api\": network_mode is none: a meshed service's namespace belongs"
        )
    );
}

#[test]
fn name_clashes_are_refused() {
    assert_eq!(
        reason("services:\n  seam-control-plane: {}\n  api: {}\n", &[]),
        "service \"seam-control-plane\": has the name of the control plane service inject \
         adds; rename it"
    );
    assert_eq!(
        reason("services:\n  api: {}\n  api-seam: {}\n", &["api-seam"]),
        "service \"api\": its sidecar would be called \"api-seam\", the name of another \
         service in this file; rename that service, or leave api out with --skip api"
    );
    assert_eq!(
        reason("services:\n  Api_1: {}\n", &[]),
        "service \"Api_1\": its name is the service's name in the mesh, which may hold only \
         lowercase letters, digits and '-'; rename it, or leave it out of the mesh with \
         --skip Api_1"
    );
}

#[test]
fn skip_names_a_service_of_the_file() {
    assert_eq!(
        reason("services:\n  api: {}\n", &["apj"]),
        "--skip apj: there is no service \"apj\" in this file"
    );
    assert_eq!(
        reason("services:\n  api: {}\n", &["api"]),
        "every service is skipped: there is nothing to mesh"
    );
    let once = meshed("services:\n  api: {}\n  web: {}\n");
    let skip = ["api".to_owned()];
    let again = |skip: &[String]| {
        plan(
            &once.compose,
            &Options {
                skip,
                profile: Profile::Transparent,
            },
        )
        .unwrap_err()
        .to_string()
    };
    assert!(again(&skip).starts_with("service \"api\": is meshed already in this file"));
    assert_eq!(
        again(&["api-seam".to_owned()]),
        "--skip api-seam: \"api-seam\" was written by seamctl inject; skip the service it \
         belongs to"
    );
}

#[test]
fn bad_ports_name_the_service() {
    assert_eq!(
        reason("services:\n  api:\n    expose: [http]\n", &[]),
        "service \"api\": port \"http\" is not a port from 1 to 65535 or a range of them"
    );
}

#[test]
fn a_sidecar_shares_its_apps_compose_profiles() {
    let plan = meshed("services:\n  debug:\n    image: tools\n    profiles: [debug]\n");
    assert_eq!(
        service(&plan, "debug-seam").get("profiles"),
        Some(&yaml("[debug]"))
    );
    assert_eq!(
        service(&plan, "debug").get("profiles"),
        Some(&yaml("[debug]"))
    );
}
