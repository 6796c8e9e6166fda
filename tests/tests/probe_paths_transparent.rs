//! `--probe-paths` where it matters: a pod whose inbound TCP `seam-proxy init` redirects
//! to its proxy (network namespaces and iptables: root only), as an injected pod has it.
//! The kubelet probes the pod's address from outside the pod; here a pod without a proxy
//! stands in for it. A plaintext GET to a listed path on a listed port reaches the app,
//! matched on the connection's original destination port; another path, the same path on
//! another port, or another method is refused as plaintext always was.

use std::net::{Ipv4Addr, SocketAddr};

use seam_tests::EchoServer;
use seam_tests::mesh::{join_token, metric_value};
use seam_tests::meshed_pods::{MeshedPods, get};
use serde_json::Value;

/// The app's port, whose `/healthz` the kubelet probes.
const PROBED_PORT: u16 = 8080;
/// Another port the app serves, with no probe on it.
const OTHER_PORT: u16 = 8081;

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelets_plaintext_probe_reaches_a_redirected_app_and_nothing_else_does() {
    let mut pods = MeshedPods::start(&["web"])
        .await
        .expect("network and control plane");
    let probe_paths = format!("{PROBED_PORT}:/healthz");
    let web = pods
        .add_meshed_pod("web", &[], &["--probe-paths", &probe_paths])
        .await
        .expect("pod web");
    let kubelet = pods
        .add_plain_pod("kubelet")
        .expect("the kubelet's stand-in");
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut apps = Vec::new();
    for port in [PROBED_PORT, OTHER_PORT] {
        let listener = web.pod.netns().bind_tcp(any(port)).await.expect("bind");
        apps.push(EchoServer::serve(listener, "web").expect("app"));
    }
    pods.write_mesh(&format!(
        "services:\n  web:\n    join_token: {:?}\n    endpoints: [\"{}\"]\n",
        join_token("web"),
        web.pod.v4(PROBED_PORT)
    ))
    .await
    .expect("mesh file");

    for target in [web.pod.v4(PROBED_PORT), web.pod.v6(PROBED_PORT)] {
        let (status, body) = get(kubelet.netns(), target, "/healthz", None)
            .await
            .unwrap_or_else(|err| panic!("probe to {target}: {err:#}"));
        assert_eq!(status, 200, "{target}: {body}");
        let echo: Value = serde_json::from_str(&body).expect("echo JSON");
        assert!(
            echo["client_id"].is_null(),
            "a probe has no identity: {echo}"
        );
    }
    assert_eq!(apps[0].requests_seen(), 2);

    let refused = [
        ("another path", web.pod.v4(PROBED_PORT), "/admin"),
        (
            "the probe path on another port",
            web.pod.v4(OTHER_PORT),
            "/healthz",
        ),
    ];
    for (what, target, path) in refused {
        let outcome = get(kubelet.netns(), target, path, None).await;
        assert!(outcome.is_err(), "{what} must be refused: {outcome:?}");
    }
    assert_eq!(apps[0].requests_seen() + apps[1].requests_seen(), 2);
    let metrics = web.metrics().await.expect("web's metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "seam_connections_refused_total",
            &[("reason", "plaintext")]
        ),
        Some(2.0),
        "{metrics}"
    );
}
