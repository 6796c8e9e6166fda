//! How models become `ServiceUpdate`s: faults, mirrors, opaque ports, rate-limit shares.

use seam_proto::v1::{self, service_update};

use super::to_proto;
use crate::mesh_file;
use crate::model::MeshModel;

fn service_of(model: &MeshModel, authority: &str) -> v1::Service {
    match to_proto(authority, 1, &model.resolve(authority)).state {
        Some(service_update::State::Service(service)) => service,
        other => panic!("{authority}: {other:?}"),
    }
}

#[test]
fn faults_and_mirrors_go_out_with_the_mirror_services_endpoints() {
    let text = "services:
  api:
    join_token: t
    fault:
      delay: { fixed: 20ms, percent: 0.5 }
    mirror: { service: shadow, percent: 10 }
    routes:
      - match: { path_prefix: /v2 }
        fault:
          abort: { grpc_status: 14, percent: 5 }
  shadow:
    join_token: s
    endpoints: [\"10.0.0.9:4143\"]
";
    let path = std::path::Path::new("mesh.yaml");
    let model = mesh_file::parse(path, text, "seam.local").expect("a valid mesh file");
    let api = service_of(&model, "api");
    let policy = api.policy.expect("a policy");
    let delay = policy.fault.and_then(|fault| fault.delay).expect("a delay");
    assert_eq!((delay.fixed_ms, delay.percent), (20, 0.5));
    let mirror = policy.mirror.expect("a mirror");
    assert_eq!((mirror.service.as_str(), mirror.percent), ("shadow", 10.0));
    assert_eq!(mirror.endpoints[0].address, "10.0.0.9:4143");
    assert_eq!(
        mirror.endpoints[0].identity,
        "spiffe://seam.local/ns/default/sa/shadow"
    );
    let route = api.routes[0].policy.clone().expect("a route policy");
    let fault = route.fault.expect("the route's own fault");
    assert!(
        fault.delay.is_none(),
        "the route's fault replaces the service's"
    );
    let abort = fault.abort.expect("an abort");
    assert_eq!(abort.answer, Some(v1::fault_abort::Answer::GrpcStatus(14)));
    assert_eq!(
        route.mirror.map(|mirror| mirror.service),
        Some("shadow".into()),
        "the route inherits the service's mirror"
    );

    // The mirror service gains an endpoint: api's subscription changes with it.
    let moved = text.replace("10.0.0.9:4143", "10.0.0.10:4143");
    let after = mesh_file::parse(path, &moved, "seam.local").expect("a valid mesh file");
    assert_ne!(after.resolve("api"), model.resolve("api"));
    let endpoints = service_of(&after, "api")
        .policy
        .unwrap()
        .mirror
        .unwrap()
        .endpoints;
    assert_eq!(endpoints[0].address, "10.0.0.10:4143");
}

#[test]
fn a_service_update_carries_the_effective_opaque_ports() {
    let text = "services:\n  db:\n    join_token: t\n    endpoints: [\"10.0.0.3:3306\"]\n    \
                opaque_ports: [3306, 5432]\n  web:\n    join_token: w\n";
    let model = mesh_file::parse(std::path::Path::new("mesh.yaml"), text, "seam.local")
        .expect("a valid mesh file");
    let opaque_ports =
        |authority: &str| match to_proto(authority, 1, &model.resolve(authority)).state {
            Some(service_update::State::Service(service)) => service.opaque_ports,
            other => panic!("{authority}: {other:?}"),
        };
    assert_eq!(opaque_ports("db"), [3306, 5432]);
    assert_eq!(opaque_ports("10.0.0.3:3306"), [3306, 5432]);
    let defaults: Vec<u32> = seam_proto::defaults::OPAQUE_PORTS
        .iter()
        .copied()
        .map(u32::from)
        .collect();
    assert_eq!(
        opaque_ports("web"),
        defaults,
        "the default list, spelled out"
    );
}

#[test]
fn each_instance_gets_its_share_of_the_rate_limit() {
    let text = "services:\n  api:\n    join_token: t\n    \
                endpoints: [\"10.0.0.1:4143\", \"10.0.0.2:4143\", \"10.0.0.3:4143\"]\n    \
                rate_limit: { requests_per_second: 100, burst: 20, per_caller: 0.002 }\n    \
                routes:\n      - match: { path: /own }\n        rate_limit: { requests_per_second: 3 }\n      \
                - match: { path: /shared }\n  web:\n    join_token: w\n";
    let model = mesh_file::parse(std::path::Path::new("mesh.yaml"), text, "seam.local")
        .expect("a valid mesh file");
    let Some(service_update::State::Service(api)) = to_proto("api", 1, &model.resolve("api")).state
    else {
        panic!("api is a service");
    };
    let limit = api.policy.unwrap().rate_limit.expect("the service's share");
    let total = limit.total.unwrap();
    assert_eq!(total.millirequests_per_second, 33_333);
    assert_eq!(total.burst, 7, "20 / 3, rounded up");
    let per_caller = limit.per_caller.unwrap();
    assert_eq!(
        per_caller.millirequests_per_second, 1,
        "never below 0.001/s"
    );
    assert_eq!(per_caller.burst, 7);
    assert_eq!(limit.instances, 3);
    let own = api.routes[0].policy.clone().unwrap().rate_limit.unwrap();
    let own_total = own.total.unwrap();
    assert_eq!(
        (own_total.millirequests_per_second, own_total.burst),
        (1000, 1)
    );
    assert_eq!(
        api.routes[1].policy.as_ref().unwrap().rate_limit,
        None,
        "a route that inherits the limit shares the service's buckets"
    );
    let pinned = match to_proto("10.0.0.2:4143", 1, &model.resolve("10.0.0.2:4143")).state {
        Some(service_update::State::Service(pinned)) => pinned,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        pinned.policy.unwrap().rate_limit.unwrap().instances,
        3,
        "shares count every instance, whatever the authority"
    );
}
