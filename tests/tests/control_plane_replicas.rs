//! Two control-plane replicas serve one mesh (same mesh file, same state directory, their
//! own ports), and every proxy is given both addresses. Killing one replica (SIGKILL) under
//! steady load fails no request; the proxies it served move to the survivor, renew their
//! certificates there, and an endpoint change made afterwards reaches every proxy. A root
//! rotation started on one replica is in force on the other within seconds.

use std::time::Duration;

use seam_tests::load::{Steady, SteadyLoad, timed_failures};
use seam_tests::replicas::ReplicatedMesh;
use seam_tests::{EchoServer, TestProxy, client, wait};

/// With `--cert-ttl 10s` proxies renew about every 7 s, so certification is exercised
/// against the survivor within the test too.
const CERT_TTL: &str = "10s";
/// How long a proxy may take to move to the survivor (it backs off by at most a few
/// hundred milliseconds before trying the other replica).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// A renewal is due within ~7.5 s of the last one; allow for a retry.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(20);

async fn discovery_replica(proxy: &TestProxy) -> anyhow::Result<String> {
    let config = proxy.config().await?;
    anyhow::ensure!(
        config["discovery"]["connected"] == true,
        "/config: {config}"
    );
    config["discovery"]["connected_to"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("/config names no replica: {config}"))
}

async fn certificate_serial(proxy: &TestProxy) -> anyhow::Result<String> {
    let identity = proxy.admin_json("/identity").await?;
    identity["serial"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("/identity: {identity}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_fail_over_to_the_surviving_replica_without_failing_a_request() {
    let mut mesh = ReplicatedMesh::start(&["a", "b"], 2, &["--cert-ttl", CERT_TTL])
        .await
        .expect("two replicas start at once on an empty state directory");
    let roots: Vec<_> =
        futures_util::future::try_join_all(
            mesh.running().into_iter().map(|index| {
                let mesh = &mesh;
                async move {
                    Ok::<_, anyhow::Error>(mesh.admin_json(index, "/ca").await?["roots"].clone())
                }
            }),
        )
        .await
        .expect("/ca of each replica");
    assert_eq!(roots[0].as_array().map(Vec::len), Some(1), "{roots:?}");
    assert_eq!(roots[0], roots[1], "the replicas made different roots");

    let (app_a, app_b1, app_b2) = (
        EchoServer::start("a").await.expect("app a"),
        EchoServer::start("b1").await.expect("app b1"),
        EchoServer::start("b2").await.expect("app b2"),
    );
    let (a, b1, b2) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b1.addr()),
        mesh.start_proxy("b", app_b2.addr()),
    )
    .expect("proxies start");
    let proxies = [&a, &b1, &b2];
    mesh.set_endpoints(&[("b", &[b1.inbound()])])
        .await
        .expect("the mesh lists b1");
    // a subscribes to b with its first request.
    let reply = client::http1_get(a.outbound(), "b", "/first", &[])
        .await
        .expect("a reaches b");
    assert_eq!(reply.status, 200, "{}", reply.text());
    for proxy in proxies {
        proxy
            .wait_endpoints("b", 1, FAILOVER_TIMEOUT)
            .await
            .expect("every proxy learns b's endpoint");
    }

    // The replica serving the most proxies is the one to kill.
    let mut served = vec![0usize; 2];
    for proxy in proxies {
        let replica = discovery_replica(proxy).await.expect("connected");
        served[mesh.index_of(&replica).expect("a configured replica")] += 1;
    }
    let victim = usize::from(served[1] > served[0]);
    let survivor = 1 - victim;
    assert!(
        served[victim] >= 2,
        "three proxies, two replicas: {served:?}"
    );
    let serials: Vec<String> = futures_util::future::try_join_all(proxies.map(certificate_serial))
        .await
        .expect("certificates");

    let load = SteadyLoad::start(Steady::new(a.outbound(), "b", Duration::from_secs(60)));
    load.wait_more(20, Duration::from_secs(10))
        .await
        .expect("traffic flows before the kill");
    mesh.kill(victim).await.expect("SIGKILL one replica");

    let survivor_addr = mesh.grpc_addrs()[survivor].to_string();
    for proxy in proxies {
        wait::until(
            "the proxy's discovery stream is on the survivor",
            FAILOVER_TIMEOUT,
            || async {
                let replica = discovery_replica(proxy).await?;
                anyhow::ensure!(replica == survivor_addr, "on {replica}");
                Ok(())
            },
        )
        .await
        .expect("fails over");
    }
    let mut expected: Vec<String> = proxies.iter().map(|p| p.admin().to_string()).collect();
    expected.sort();
    wait::until(
        "the survivor lists every proxy",
        FAILOVER_TIMEOUT,
        || async {
            let listed = mesh.connected_proxies(survivor).await?;
            anyhow::ensure!(
                listed == expected,
                "/proxies lists {listed:?}, want {expected:?}"
            );
            Ok(())
        },
    )
    .await
    .expect("every proxy on the survivor");
    for (proxy, before) in proxies.iter().zip(&serials) {
        wait::until(
            "the proxy renews its certificate",
            RENEWAL_TIMEOUT,
            || async {
                let serial = certificate_serial(proxy).await?;
                anyhow::ensure!(serial != *before, "still {serial}");
                Ok(())
            },
        )
        .await
        .expect("renewed with only the survivor running");
    }

    // An endpoint change made now reaches every proxy through the survivor.
    mesh.set_endpoints(&[("b", &[b1.inbound(), b2.inbound()])])
        .await
        .expect("the survivor applies the change");
    for proxy in proxies {
        proxy
            .wait_endpoints("b", 2, FAILOVER_TIMEOUT)
            .await
            .expect("every proxy learns the new endpoint");
    }
    load.wait_more(20, Duration::from_secs(10))
        .await
        .expect("traffic flows after the change");
    let replies = load.stop().await;
    let failures = timed_failures(&replies);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        replies.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_started_on_one_replica_is_in_force_on_the_other() {
    let mesh = ReplicatedMesh::start(&["a"], 2, &[])
        .await
        .expect("two replicas start");
    let (status, body) = mesh
        .admin_post(0, "/ca/rotate")
        .await
        .expect("POST /ca/rotate");
    assert_eq!(status, 200, "{body}");
    // The second replica reads the directory under the lock before it rotates: it sees
    // the rotation in progress rather than starting another.
    let (status, body) = mesh
        .admin_post(1, "/ca/rotate")
        .await
        .expect("POST /ca/rotate");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already in progress"), "{body}");
    let started = mesh.admin_json(0, "/ca").await.expect("/ca");
    assert_eq!(
        started["roots"].as_array().map(Vec::len),
        Some(2),
        "{started}"
    );
    wait::until(
        "the other replica trusts the new root",
        Duration::from_secs(10),
        || async {
            let other = mesh.admin_json(1, "/ca").await?;
            anyhow::ensure!(
                other["roots"] == started["roots"] && other["rotation"]["phase"] == "introduced",
                "{other}"
            );
            Ok(())
        },
    )
    .await
    .expect("picked up");
}
