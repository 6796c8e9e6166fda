//! Endpoints by DNS name (`dns:NAME:PORT` in the mesh file), with the real binaries:
//! a name's address carries requests through a caller's proxy (by name and pinned to the
//! instance), and the control plane follows what the name resolves to as it changes,
//! publishing a new version for each change and none for the same answer, and keeping the
//! last good addresses when a lookup fails.
//!
//! The second test changes what a name resolves to without touching the host's files: it
//! runs the control plane in a network namespace of its own through `ip netns exec`, which
//! bind-mounts the test's `/etc/netns/NAME/hosts` over `/etc/hosts` for it, and rewrites
//! that file. Its `resolv.conf` names a server on the namespace's own loopback, where
//! nothing listens, so a name missing from the hosts file fails to resolve at once and no
//! query leaves the namespace.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use seam_control_plane::launch::SeamProcess;
use seam_tests::client::AppClient;
use seam_tests::logs::ChildLog;
use seam_tests::mesh::{self, RELOAD_TIMEOUT, TestMesh};
use seam_tests::netns::NetNs;
use seam_tests::netns_files::NetnsFiles;
use seam_tests::{EchoServer, wait};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name the namespace's hosts file defines.
const NAME: &str = "backend.seam-test";
/// The port of the `dns:` entry (nothing is dialed there: the test reads `/mesh`).
const PORT: u16 = 4143;
/// How long a change of the hosts file may take to show in `/mesh`: the refresh interval
/// (500ms here) plus room for a loaded machine.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long two failed lookups may take: a query to a server that does not answer
/// waits for the resolver's timeout (5s at most for a lookup), then 500ms to the next.
const FAILURES_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_name_endpoint_carries_requests_by_name_and_pinned() {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b = EchoServer::start("b").await.expect("app b");
    let (a, b) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b.addr()),
    )
    .expect("proxies start");
    // `localhost` resolves from /etc/hosts (to 127.0.0.1, maybe also ::1); b's inbound
    // is on 127.0.0.1.
    let port = b.inbound().port();
    let entry = format!("dns:localhost:{port}");
    let instance = format!("127.0.0.1:{port}");
    mesh.write_raw_mesh_file(&format!(
        "services:\n  a:\n    join_token: {}\n  b:\n    join_token: {}\n    endpoints: [\"{entry}\"]\n",
        Value::from(mesh::join_token("a")),
        Value::from(mesh::join_token("b")),
    ))
    .expect("write the mesh file");
    let state = wait::until(
        "/mesh lists b's resolved endpoint",
        RELOAD_TIMEOUT,
        || async {
            let state = mesh.mesh_state().await?;
            let b = &state["services"]["b"];
            let endpoints = mesh::endpoint_set(&b["endpoints"]);
            if !endpoints.contains(&instance) || b["dns_endpoints"] != serde_json::json!([entry]) {
                bail!("b is {b}");
            }
            Ok(state)
        },
    )
    .await
    .expect("the name resolves");
    assert_eq!(state["last_error"], Value::Null, "{state}");

    let client = AppClient::new(a.outbound());
    for host in ["b", instance.as_str()] {
        let reply = wait::until(
            &format!("a request for {host} reaches b"),
            RELOAD_TIMEOUT,
            || async {
                let reply = client.get(host, "/through-dns").await?;
                if reply.status != 200 {
                    bail!("status {}: {}", reply.status, reply.text());
                }
                Ok(reply)
            },
        )
        .await
        .expect("request through the mesh");
        let echo = reply.json().expect("echo JSON");
        assert_eq!(echo["name"], "b", "{host}: {echo}");
    }
    assert!(app_b.requests_seen() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_follows_what_a_name_resolves_to() {
    let namespace = NetNs::create("dns").expect("network namespace");
    let files = NetnsFiles::create(&namespace).expect("/etc/netns files");
    files
        .write("hosts", &hosts(&["127.0.0.2"]))
        .expect("hosts file");
    files
        .write("resolv.conf", "nameserver 127.0.0.1\n")
        .expect("resolv.conf");
    let dir = tempfile::Builder::new()
        .prefix("seam-test-dns-")
        .tempdir()
        .expect("temporary directory");
    let mesh_path = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_path,
        format!("services:\n  api:\n    join_token: t\n    endpoints: [\"dns:{NAME}:{PORT}\"]\n"),
    )
    .expect("mesh file");
    let (log, stderr) =
        ChildLog::create("seam-control-plane", dir.path().join("control-plane.log"))
            .expect("log file");
    let mut command = namespace.command(mesh::seam_binary("seam-control-plane").expect("binary"));
    mesh::remove_seam_variables(command.as_std_mut());
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--mesh-file")
        .arg(&mesh_path)
        .args(["--dns-refresh", "500ms"]);
    let control_plane = SeamProcess::spawn("seam-control-plane", command, stderr)
        .await
        .unwrap_or_else(|err| panic!("control plane starts: {err:#}\n{}", log.tail()));
    let admin = control_plane.addr("admin");
    let follows = Follows {
        namespace: &namespace,
        admin,
        log: &log,
    };

    let one = follows.wait_for(&["127.0.0.2"]).await;
    files
        .write("hosts", &hosts(&["127.0.0.2", "127.0.0.3", "::1"]))
        .expect("hosts file");
    let three = follows.wait_for(&["127.0.0.2", "127.0.0.3", "::1"]).await;
    files
        .write("hosts", &hosts(&["127.0.0.3"]))
        .expect("hosts file");
    let back = follows.wait_for(&["127.0.0.3"]).await;
    assert!(
        version(&one) < version(&three) && version(&three) < version(&back),
        "each change is a new version: {one} {three} {back}"
    );

    // The same answer again publishes nothing.
    let resolved = follows.resolutions("resolved").await;
    follows
        .wait_metric("resolved", resolved + 2.0, FOLLOW_TIMEOUT)
        .await
        .expect("two more lookups");
    let state = follows.mesh().await.expect("/mesh");
    assert_eq!(version(&state), version(&back), "{state}");

    // The name leaves the hosts file and no DNS server answers: the last good address
    // stays, and the failure is logged once, however many lookups fail.
    files.write("hosts", "").expect("hosts file");
    let failed = follows.resolutions("failed").await;
    follows
        .wait_metric("failed", failed + 2.0, FAILURES_TIMEOUT)
        .await
        .expect("two failed lookups");
    let state = follows.mesh().await.expect("/mesh");
    assert_eq!(endpoints(&state), set(&["127.0.0.3"]), "{state}");
    assert_eq!(version(&state), version(&back), "{state}");
    let warnings = log
        .text()
        .matches("cannot resolve a dns: endpoint name")
        .count();
    assert_eq!(warnings, 1, "{}", log.text());
    drop(control_plane);
    drop(files);
    assert!(
        !std::path::Path::new("/etc/netns")
            .join(namespace.name())
            .exists(),
        "the namespace's files are removed"
    );
}

/// A hosts file giving [`NAME`] each of `ips`.
fn hosts(ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect()
}

fn version(state: &Value) -> u64 {
    state["version"].as_u64().unwrap_or_default()
}

fn endpoints(state: &Value) -> BTreeSet<String> {
    mesh::endpoint_set(&state["services"]["api"]["endpoints"])
        .into_iter()
        .collect()
}

/// The endpoints `ips` make at [`PORT`].
fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), PORT).to_string())
        .collect()
}

/// The control plane in its namespace, read through its admin listener there.
struct Follows<'a> {
    namespace: &'a NetNs,
    admin: SocketAddr,
    log: &'a ChildLog,
}

impl Follows<'_> {
    /// Waits until `/mesh` lists `api` at exactly `ips`, and returns that state.
    async fn wait_for(&self, ips: &[&str]) -> Value {
        let wanted = set(ips);
        wait::until(
            &format!("/mesh lists {wanted:?}"),
            FOLLOW_TIMEOUT,
            || async {
                let state = self.mesh().await?;
                if endpoints(&state) != wanted {
                    bail!("{state}");
                }
                Ok(state)
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err:#}\ncontrol plane log:\n{}", self.log.tail()))
    }

    async fn mesh(&self) -> anyhow::Result<Value> {
        let body = self.get("/mesh").await?;
        serde_json::from_str(&body).with_context(|| format!("/mesh is not JSON: {body}"))
    }

    /// `seam_dns_resolutions_total{result}` (0 when absent).
    async fn resolutions(&self, result: &str) -> f64 {
        let metrics = self.get("/metrics").await.expect("/metrics");
        mesh::metric_value(
            &metrics,
            "seam_dns_resolutions_total",
            &[("result", result)],
        )
        .unwrap_or(0.0)
    }

    async fn wait_metric(
        &self,
        result: &str,
        at_least: f64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait::until(&format!("{at_least} lookups {result}"), timeout, || async {
            let seen = self.resolutions(result).await;
            if seen < at_least {
                bail!("{seen}");
            }
            Ok(())
        })
        .await
    }

    /// A plain HTTP/1.0 GET from inside the namespace; the body of a 200.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut stream = self.namespace.connect_tcp(self.admin).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .context("no response within 5s")??;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("not an HTTP response: {response}"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body.to_owned())
    }
}
