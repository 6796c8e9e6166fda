//! A transparent mesh made of network namespaces, as an injected cluster has it: a control
//! plane in a pod of its own, and meshed pods each with its app (which the test binds
//! inside the pod), `seam-proxy init` run in the pod, and a `seam-proxy` running as the
//! proxy uid with its default listeners; and plain pods with no proxy, outside the mesh.
//! The test writes the mesh file (with the pods' real addresses) and talks to every app
//! and admin port from inside the pods; its own namespace is never touched.
//!
//! The proxy runs as an unprivileged user, so what it reads must be readable by anyone:
//! the test's directory is opened up, and the binary is copied beside it (a checkout in a
//! home directory is often closed to other users).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use seam_control_plane::launch::SeamProcess;
use serde_json::Value;
use tempfile::TempDir;

use crate::logs::ChildLog;
use crate::mesh::{self, READY_TIMEOUT, RELOAD_TIMEOUT};
use crate::netns::{self, NetNs};
use crate::pod_network::{Pod, PodNetwork};
use crate::proxy_init;
use crate::wait;

/// The uid and gid the proxies run as (`seam-proxy init`'s default `--proxy-uid`).
pub const PROXY_UID: u32 = 2102;
/// The control plane's gRPC and admin ports in its pod.
pub const CONTROL_PLANE_PORT: u16 = 8443;
pub const CONTROL_PLANE_ADMIN_PORT: u16 = 9990;
/// The proxies' admin port (on every address of the pod).
pub const ADMIN_PORT: u16 = 4191;

/// The network, the control plane's pod and the mesh file.
pub struct MeshedPods {
    control_plane: SeamProcess,
    control_plane_log: ChildLog,
    /// Every proxy's log, printed with the control plane's when a test fails (they live in
    /// this directory, gone once this is dropped).
    proxy_logs: Vec<ChildLog>,
    control_plane_pod: Pod,
    network: PodNetwork,
    mesh_path: PathBuf,
    proxy_binary: PathBuf,
    dir: TempDir,
}

/// A meshed pod: its namespace and its proxy.
pub struct MeshedPod {
    pub service: String,
    proxy: SeamProcess,
    log: ChildLog,
    pub pod: Pod,
}

impl MeshedPods {
    /// Makes the network and the control plane's pod, writes a mesh file listing
    /// `services` (no endpoints yet) and starts the control plane there.
    pub async fn start(services: &[&str]) -> anyhow::Result<Self> {
        netns::require_root()?;
        let dir = tempfile::Builder::new().prefix("seam-pods-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let proxy_binary = dir.path().join("seam-proxy");
        std::fs::copy(mesh::seam_binary("seam-proxy")?, &proxy_binary)?;
        std::fs::set_permissions(&proxy_binary, std::fs::Permissions::from_mode(0o755))?;
        let mesh_path = dir.path().join("mesh.yaml");
        let services: String = services
            .iter()
            .map(|name| format!("  {name}:\n    join_token: {:?}\n", mesh::join_token(name)))
            .collect();
        mesh::write_atomically(&mesh_path, &format!("services:\n{services}"))?;

        let mut network = PodNetwork::create()?;
        let control_plane_pod = network.add_pod("cp")?;
        let (control_plane_log, stderr) =
            ChildLog::create("seam-control-plane", dir.path().join("control-plane.log"))?;
        let ip = control_plane_pod.ipv4();
        let mut command = control_plane_pod
            .netns()
            .command(mesh::seam_binary("seam-control-plane")?);
        mesh::remove_seam_variables(command.as_std_mut());
        command
            .arg("--listen")
            .arg(SocketAddr::new(ip.into(), CONTROL_PLANE_PORT).to_string())
            .arg("--admin")
            .arg(SocketAddr::new(ip.into(), CONTROL_PLANE_ADMIN_PORT).to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--mesh-file")
            .arg(&mesh_path)
            .env("RUST_LOG", log_filter())
            .env("NO_COLOR", "1");
        let control_plane = SeamProcess::spawn("seam-control-plane", command, stderr)
            .await
            .with_context(|| format!("control plane log:\n{}", control_plane_log.tail()))?;
        let pods = Self {
            control_plane,
            control_plane_log,
            proxy_logs: Vec::new(),
            control_plane_pod,
            network,
            mesh_path,
            proxy_binary,
            dir,
        };
        wait::until("the control plane is ready", READY_TIMEOUT, || async {
            let (status, body) = pods.admin_get("/ready").await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            Ok(())
        })
        .await?;
        // The proxies read the trust bundle as the proxy user; the state directory is the
        // control plane's own (mode 0700), so they get a copy, as a pod gets it mounted.
        let bundle = pods.dir.path().join("ca.pem");
        std::fs::copy(pods.dir.path().join("state").join("ca.pem"), &bundle)?;
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644))?;
        Ok(pods)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control plane's admin address, in its pod.
    pub fn admin_addr(&self) -> SocketAddr {
        self.control_plane.addr("admin")
    }

    /// The control plane's pod (to run `seamctl` where the admin port is).
    pub fn control_plane_pod(&self) -> &Pod {
        &self.control_plane_pod
    }

    /// `GET path` on the control plane's admin port.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        get(
            self.control_plane_pod.netns(),
            self.admin_addr(),
            path,
            None,
        )
        .await
    }

    /// A pod with no proxy: outside the mesh.
    pub fn add_plain_pod(&mut self, label: &str) -> anyhow::Result<Pod> {
        self.network.add_pod(label)
    }

    /// A pod of `service`: runs `seam-proxy init` (with `init_args`) in it, then the proxy
    /// as the proxy uid (with `proxy_args` besides its defaults), and waits until the
    /// proxy is ready. The test binds the app's ports in the pod.
    pub async fn add_meshed_pod(
        &mut self,
        service: &str,
        init_args: &[&str],
        proxy_args: &[&str],
    ) -> anyhow::Result<MeshedPod> {
        let pod = self.network.add_pod(service)?;
        proxy_init::run_init(pod.netns(), init_args)
            .await?
            .expect_success()?;
        let (log, stderr) = ChildLog::create(
            format!("seam-proxy {service}"),
            self.dir.path().join(format!("proxy-{service}.log")),
        )?;
        let control_plane =
            SocketAddr::new(self.control_plane_pod.ipv4().into(), CONTROL_PLANE_PORT);
        let mut command = pod
            .netns()
            .command_as(PROXY_UID, PROXY_UID, &self.proxy_binary);
        mesh::remove_seam_variables(command.as_std_mut());
        command
            .args(["--service", service])
            .args(["--control-plane", &control_plane.to_string()])
            .arg("--trust-anchors")
            .arg(self.dir.path().join("ca.pem"))
            .args(["--admin", &format!("0.0.0.0:{ADMIN_PORT}")])
            .args(proxy_args)
            .env("SEAM_JOIN_TOKEN", mesh::join_token(service))
            .env("RUST_LOG", log_filter())
            .env("NO_COLOR", "1");
        let proxy = SeamProcess::spawn(format!("seam-proxy {service}"), command, stderr)
            .await
            .with_context(|| format!("proxy log:\n{}", log.tail()))?;
        self.proxy_logs.push(log.clone());
        let meshed = MeshedPod {
            service: service.to_owned(),
            proxy,
            log,
            pod,
        };
        wait::until(
            &format!("{service}'s proxy is ready"),
            READY_TIMEOUT,
            || async {
                let (status, body) = meshed.admin_get("/ready").await?;
                anyhow::ensure!(status == 200, "{status} {body}");
                Ok(())
            },
        )
        .await
        .with_context(|| format!("proxy log:\n{}", meshed.log.tail()))?;
        Ok(meshed)
    }

    /// Writes the mesh file and waits until the control plane serves it.
    pub async fn write_mesh(&self, yaml: &str) -> anyhow::Result<()> {
        let before = self.mesh_version().await?;
        mesh::write_atomically(&self.mesh_path, yaml)?;
        wait::until(
            "the control plane applies the mesh file",
            RELOAD_TIMEOUT,
            || async {
                let (_, body) = self.admin_get("/mesh").await?;
                let state: Value = serde_json::from_str(&body)?;
                if let Some(error) = state["last_error"].as_str() {
                    bail!("refused: {error}");
                }
                anyhow::ensure!(state["version"].as_u64() > Some(before), "{state}");
                Ok(())
            },
        )
        .await
    }

    async fn mesh_version(&self) -> anyhow::Result<u64> {
        let (_, body) = self.admin_get("/mesh").await?;
        let state: Value = serde_json::from_str(&body)?;
        state["version"].as_u64().context("/mesh has no version")
    }
}

impl Drop for MeshedPods {
    fn drop(&mut self) {
        self.control_plane_log.print_if_panicking();
        for log in &self.proxy_logs {
            log.print_if_panicking();
        }
    }
}

impl MeshedPod {
    /// `GET path` on the proxy's admin port, from inside the pod.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let admin = SocketAddr::new(self.pod.ipv4().into(), ADMIN_PORT);
        get(self.pod.netns(), admin, path, None).await
    }

    /// The proxy's metrics, from inside the pod.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = self.admin_get("/metrics").await?;
        anyhow::ensure!(status == 200, "{status} {body}");
        Ok(body)
    }

    pub fn log(&self) -> &ChildLog {
        &self.log
    }

    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.pid()
    }

    pub fn spiffe_id(&self) -> String {
        mesh::spiffe_id(&self.service)
    }

    /// The pod's address for `port`, in the family of `family`.
    pub fn addr(&self, family: IpAddr, port: u16) -> SocketAddr {
        match family {
            IpAddr::V4(_) => self.pod.v4(port),
            IpAddr::V6(_) => self.pod.v6(port),
        }
    }
}

/// The children's log filter: `SEAM_TEST_LOG`, else `info`.
fn log_filter() -> String {
    std::env::var("SEAM_TEST_LOG").unwrap_or_else(|_| "info".to_owned())
}

/// One HTTP/1.1 `GET path` to `addr`, from inside `netns` (as the pod's app would send it),
/// with `Host: host` (else the address): the status and the body.
pub async fn get(
    netns: &NetNs,
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let tcp = netns.connect_tcp(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let host = host.map_or_else(|| addr.to_string(), str::to_owned);
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .with_context(|| format!("no answer from {addr} within 10 s"))?
}

/// Runs `seamctl args` in the control plane's pod; its exit status and output.
pub async fn seamctl(pods: &MeshedPods, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut command = pods
        .control_plane_pod()
        .netns()
        .command(mesh::seam_binary("seamctl")?);
    mesh::remove_seam_variables(command.as_std_mut());
    let output = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}
