//! A proxy forgets the authorities its app stopped using: proxy `a`, with a short
//! `--idle-unsubscribe-after`, is made to subscribe to `b` and to a dozen names the mesh
//! does not know; once they go unused for the idle time they leave the control plane's
//! `/proxies` (all but `a` itself, the inbound policy it always needs), except `b` while a
//! request to it is still in flight. Using `b` again subscribes again and works.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use seam_tests::{TwoHop, client, wait};

/// The idle time the test sets (the default is ten minutes).
const IDLE: Duration = Duration::from_secs(2);
/// Names the mesh does not know that the app asks for.
const UNKNOWN_NAMES: usize = 12;

/// The authorities the control plane lists as subscribed by the proxies of `service`.
async fn subscriptions(
    control_plane_admin: SocketAddr,
    service: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let reply = client::http1_get(control_plane_admin, "localhost", "/proxies", &[]).await?;
    anyhow::ensure!(reply.status == 200, "/proxies answered {}", reply.status);
    let proxies = reply.json()?;
    let mut authorities = BTreeSet::new();
    for proxy in proxies["proxies"].as_array().context("a list of proxies")? {
        if proxy["service"] != service {
            continue;
        }
        for subscription in proxy["subscriptions"].as_array().context("subscriptions")? {
            let authority = subscription["authority"].as_str().context("an authority")?;
            authorities.insert(authority.to_owned());
        }
    }
    Ok(authorities)
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_authorities_are_unsubscribed_and_come_back_on_use() {
    let idle = format!("{}s", IDLE.as_secs());
    let mesh = TwoHop::start_with(|options| options.args(&["--idle-unsubscribe-after", &idle]))
        .await
        .expect("two-hop mesh starts");
    let control_plane = mesh.mesh.admin_addr();
    let outbound = mesh.a.outbound();

    // The first answer for b may predate its endpoint by a moment: poll until it has it.
    wait::until("a reaches b", Duration::from_secs(10), || async {
        let reply = client::http1_get(outbound, "b", "/", &[]).await?;
        anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.text());
        Ok(())
    })
    .await
    .expect("a calls b");
    let unknown: Vec<String> = (0..UNKNOWN_NAMES)
        .map(|n| format!("unknown-{n}.example"))
        .collect();
    for name in &unknown {
        let reply = client::http1_get(outbound, name, "/", &[])
            .await
            .expect("a answers");
        assert_eq!(reply.status, 503, "{name}: {}", reply.text());
    }
    let mut everything: BTreeSet<String> = unknown.iter().cloned().collect();
    everything.extend(["a".to_owned(), "b".to_owned()]);
    let subscribed = subscriptions(control_plane, "a").await.expect("/proxies");
    assert_eq!(
        subscribed, everything,
        "every authority the app used is subscribed"
    );

    // A request to b stays in flight while the others go idle.
    let held = tokio::spawn(client::http1_get(outbound, "b", "/hold", &[]));
    mesh.app_b
        .wait_held(1, Duration::from_secs(10))
        .await
        .expect("the held request reaches b");
    let last_unknown_use = Instant::now();
    let only_held = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    wait::until(
        "the unused authorities leave /proxies",
        Duration::from_secs(20),
        || async {
            let subscribed = subscriptions(control_plane, "a").await?;
            anyhow::ensure!(subscribed == only_held, "subscribed: {subscribed:?}");
            Ok(())
        },
    )
    .await
    .expect("unknown names unsubscribed, b kept while in use");
    assert!(
        last_unknown_use.elapsed() >= IDLE,
        "forgotten after {:?}, before the idle time",
        last_unknown_use.elapsed()
    );

    mesh.app_b.release_held();
    let reply = held
        .await
        .expect("held task")
        .expect("the held request completes");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let only_policy = BTreeSet::from(["a".to_owned()]);
    wait::until(
        "b leaves /proxies once unused",
        Duration::from_secs(20),
        || async {
            let subscribed = subscriptions(control_plane, "a").await?;
            anyhow::ensure!(subscribed == only_policy, "subscribed: {subscribed:?}");
            Ok(())
        },
    )
    .await
    .expect("b unsubscribed after its last request; a's own policy kept");
    let config = mesh.a.config().await.expect("a's /config");
    let known: BTreeSet<String> = config["subscriptions"]
        .as_object()
        .expect("subscriptions by authority")
        .keys()
        .cloned()
        .collect();
    assert_eq!(known, only_policy, "the proxy forgot them too: {config}");

    // The first use after forgetting subscribes again and waits for the answer.
    let reply = client::http1_get(outbound, "b", "/", &[])
        .await
        .expect("a calls b again");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let subscribed = subscriptions(control_plane, "a").await.expect("/proxies");
    assert_eq!(subscribed, only_held, "b subscribed again");
}
