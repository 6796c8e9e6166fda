//! Seam in docker-compose (deploy/compose), against the real Docker engine and the image
//! `deploy/compose/build-image` makes from this tree's binaries. Each test brings up its
//! own project (unique name, own state directory, own admin port) and takes it down,
//! whatever happens. The tests take turns: each project is five to seven containers on a
//! small machine, and the failure counts below are only meaningful on a quiet one.
//!
//! - the mesh comes up with one command, traffic walks loadgen → front → middle → back
//!   over mTLS, and `seamctl status`, `stat` and `verify --require-mtls` work from the
//!   host against the published admin port; `down` leaves nothing behind;
//! - `--scale middle=3`: traffic reaches all three instances;
//! - `docker kill` of one of three instances under steady load fails no request;
//! - a crashed proxy is started again in its container, which keeps running with its app;
//!   an app that dies takes its container down and Docker brings both back;
//! - the transparent profile: apps call `http://front:8080` with no proxy setting, and
//!   each hop still crosses mTLS with the caller's identity.

use std::collections::BTreeSet;
use std::time::Duration;

use seam_tests::client::AppClient;
use seam_tests::compose::{Chain, ComposeProject, Profile, docker, instances_of, leftovers};
use seam_tests::load::{self, Steady, SteadyLoad, timed_failures};
use seam_tests::{client, wait};
use tokio::sync::Mutex;

/// One project at a time (see the module comment).
static TURN: Mutex<()> = Mutex::const_new(());

const SERVICES: [&str; 4] = ["loadgen", "front", "middle", "back"];

fn spiffe_id(service: &str) -> String {
    format!("spiffe://seam.local/ns/default/sa/{service}")
}

/// Every hop's caller is the service before it, as its proxy vouched (mTLS).
fn assert_identities(chain: &Chain) {
    for pair in chain.hops.windows(2) {
        assert_eq!(
            pair[1].caller.as_deref(),
            Some(spiffe_id(&pair[0].service).as_str()),
            "{} was called by {} over mTLS",
            pair[1].service,
            pair[0].service
        );
    }
}

/// `count` requests through loadgen, one after another; every reply.
async fn requests(project: &ComposeProject, count: usize) -> Vec<client::Reply> {
    let loadgen = project.loadgen().await.expect("loadgen");
    let mut replies = Vec::with_capacity(count);
    for _ in 0..count {
        replies.push(
            client::http1_get(loadgen, "loadgen", "/", &[])
                .await
                .expect("a request through loadgen"),
        );
    }
    replies
}

/// Sends requests through loadgen, four at a time, until every instance in `expected`
/// has served some; the instances that did. Four at a time, so that requests in flight
/// spread the balancer's picks over all three at once, rather than waiting for a clearly
/// slower instance's estimate to drift back (0.5 s per e-fold).
async fn serve_all(
    project: &ComposeProject,
    service: &str,
    expected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let app = AppClient::new(project.loadgen().await.expect("loadgen"));
    let served = std::sync::Mutex::new(BTreeSet::new());
    wait::until(
        &format!("traffic on every {service}"),
        Duration::from_secs(30),
        || async {
            let replies = load::load(&app, "loadgen", "/", 20, 4, Default::default()).await;
            let replies: Vec<client::Reply> = replies.into_iter().flatten().collect();
            let mut served = served.lock().expect("not poisoned");
            served.extend(instances_of(service, &replies));
            anyhow::ensure!(
                served.is_superset(expected),
                "served by {served:?} of {expected:?}"
            );
            Ok(served.clone())
        },
    )
    .await
    .expect("every instance serves")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_comes_up_and_seamctl_on_the_host_sees_every_edge_over_mtls() {
    let _turn = TURN.lock().await;
    let mut project = ComposeProject::up(Profile::Explicit, &[])
        .await
        .expect("compose up");

    let replies = requests(&project, 20).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_identities(&Chain::read(reply).expect("the whole chain"));
    }

    let status = project.seamctl(&["status"]).await.expect("seamctl status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "seamctl status: {status:?}");
    for service in SERVICES {
        assert!(text.contains(&spiffe_id(service)), "{service} in:\n{text}");
    }

    let verify = project
        .seamctl(&["verify", "--require-mtls"])
        .await
        .expect("seamctl verify");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "verify --require-mtls: {text}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for pair in SERVICES.windows(2) {
        assert!(
            text.lines().any(|line| line.starts_with(pair[0])
                && line.contains(pair[1])
                && line.contains("mTLS")),
            "{} → {} over mTLS in:\n{text}",
            pair[0],
            pair[1]
        );
    }

    // The instances mount the published trust bundle, never the directory with ca.key.
    for service in SERVICES {
        for container in project.containers(service).await.expect("containers") {
            let sources = docker(&[
                "inspect",
                "-f",
                "{{range .Mounts}}{{.Source}} {{end}}",
                &container.id,
            ])
            .await
            .expect("docker inspect");
            for source in sources.split_whitespace() {
                let key = std::path::Path::new(source).join("ca.key");
                assert!(
                    !key.exists(),
                    "{service} mounts {source}, which holds ca.key"
                );
            }
            assert!(
                sources
                    .split_whitespace()
                    .any(|source| source.ends_with("/trust")),
                "{service} mounts the trust bundle: {sources}"
            );
        }
    }

    let stat = project
        .seamctl(&["stat", "--once", "--interval", "1s"])
        .await
        .expect("seamctl stat");
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.status.success(), "seamctl stat: {stat:?}");
    assert!(text.contains("loadgen → front"), "{text}");

    let name = project.name().to_owned();
    project.down().await.expect("compose down");
    assert_eq!(
        leftovers(&name).await.expect("docker"),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_scaled_to_three_gets_traffic_on_all_three() {
    let _turn = TURN.lock().await;
    let project = ComposeProject::up(Profile::Explicit, &["--scale", "middle=3"])
        .await
        .expect("compose up");
    let running: BTreeSet<String> = project
        .containers("middle")
        .await
        .expect("middle's containers")
        .into_iter()
        .map(|container| container.id)
        .collect();
    assert_eq!(running.len(), 3, "{running:?}");

    // The control plane finds new instances by re-resolving the name; wait for all three.
    let served = serve_all(&project, "middle", &running).await;
    assert_eq!(served.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_of_three_instances_under_load_fails_no_request() {
    let _turn = TURN.lock().await;
    let project = ComposeProject::up(Profile::Explicit, &["--scale", "middle=3"])
        .await
        .expect("compose up");
    let running = project.containers("middle").await.expect("middles");
    let ids = running
        .iter()
        .map(|container| container.id.clone())
        .collect();
    serve_all(&project, "middle", &ids).await;

    let loadgen = project.loadgen().await.expect("loadgen");
    let load = SteadyLoad::start(Steady::new(loadgen, "loadgen", Duration::from_secs(30)));
    load.wait_more(40, Duration::from_secs(10))
        .await
        .expect("load flows");
    let victim = &running[0];
    seam_tests::compose::docker(&["kill", &victim.id])
        .await
        .expect("docker kill");
    // Three more seconds of traffic after the kill: the breaker, the retries and the
    // control plane's next look at DNS all have had their turn.
    load.wait_more(120, Duration::from_secs(20))
        .await
        .expect("traffic goes on after the kill");
    let replies = load.stop().await;
    let failures = timed_failures(&replies);
    eprintln!(
        "{} of {} requests failed around the kill of one of three middles",
        failures.len(),
        replies.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed after killing {}: {failures:?}",
        failures.len(),
        replies.len(),
        victim.id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_proxy_is_started_again_in_its_running_container() {
    let _turn = TURN.lock().await;
    let project = ComposeProject::up(Profile::Explicit, &[])
        .await
        .expect("compose up");
    let front = project.containers("front").await.expect("front")[0]
        .id
        .clone();
    let proxies = project
        .host_pids(&front, "seam-proxy")
        .await
        .expect("docker top");
    let apps = project
        .host_pids(&front, "sample-app")
        .await
        .expect("docker top");
    assert_eq!((proxies.len(), apps.len()), (1, 1), "{proxies:?} {apps:?}");

    let loadgen = project.loadgen().await.expect("loadgen");
    let load = SteadyLoad::start(Steady::new(loadgen, "loadgen", Duration::from_secs(30)));
    load.wait_more(20, Duration::from_secs(10))
        .await
        .expect("load flows");
    // Containers' processes are the host's: SIGKILL the proxy alone, by its host PID.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxies[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the proxy");

    let restarted = wait::until(
        "a new seam-proxy in front's container",
        Duration::from_secs(10),
        || async {
            let now = project.host_pids(&front, "seam-proxy").await?;
            anyhow::ensure!(now.len() == 1 && now != proxies, "proxies now {now:?}");
            Ok(now)
        },
    )
    .await
    .expect("the proxy comes back");
    load.wait_more(40, Duration::from_secs(15))
        .await
        .expect("traffic flows through the new proxy");
    let replies = load.stop().await;

    assert_eq!(
        project
            .host_pids(&front, "sample-app")
            .await
            .expect("docker top"),
        apps,
        "the app kept running"
    );
    assert_eq!(project.restart_count(&front).await.expect("inspect"), 0);
    assert_ne!(restarted, proxies);
    // front has one instance: requests in the gap between the kill and the new proxy's
    // listener fail (loadgen's proxy finds no listener there). A handful at 40/s.
    let failures = timed_failures(&replies);
    eprintln!(
        "{} of {} requests failed while front's only proxy was restarted: {failures:?}",
        failures.len(),
        replies.len()
    );
    assert!(
        failures.len() <= 20,
        "{} of {} failed: {failures:?}",
        failures.len(),
        replies.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_dies_takes_its_container_down_and_comes_back_with_its_proxy() {
    let _turn = TURN.lock().await;
    let project = ComposeProject::up(Profile::Explicit, &[])
        .await
        .expect("compose up");
    let middle = project.containers("middle").await.expect("middle")[0]
        .id
        .clone();
    let apps = project
        .host_pids(&middle, "sample-app")
        .await
        .expect("docker top");
    assert_eq!(apps.len(), 1, "{apps:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(apps[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the app");

    wait::until(
        "middle's container restarted",
        Duration::from_secs(20),
        || async {
            let count = project.restart_count(&middle).await?;
            anyhow::ensure!(count == 1, "restarted {count} times");
            Ok(())
        },
    )
    .await
    .expect("Docker restarts the container");
    let chain = project
        .wait_for_chain(Duration::from_secs(30))
        .await
        .expect("the chain works again");
    assert_eq!(chain.instance("middle"), Some(middle.as_str()));
    assert_identities(&chain);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_transparent_profile_meshes_apps_that_have_no_proxy_setting() {
    let _turn = TURN.lock().await;
    let project = ComposeProject::up(Profile::Transparent, &[])
        .await
        .expect("compose up");
    for reply in requests(&project, 20).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_identities(&Chain::read(&reply).expect("the whole chain"));
    }
    let verify = project
        .seamctl(&["verify", "--require-mtls"])
        .await
        .expect("seamctl verify");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("3 edge(s), all mTLS"), "{text}");
}
