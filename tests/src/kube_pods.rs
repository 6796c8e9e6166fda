//! Pods of a Kubernetes mesh made of network namespaces (see `pod_network`): a
//! control-plane pod running the stand-in API server (`kube_api`, since no real one can
//! run here) and `seam-control-plane --source kubernetes` against it, and sidecar pods
//! run the way the kubelet runs an injected pod: `seam-proxy init` first, then the proxy
//! as the proxy uid with the sidecar's environment (downward-API values filled in, the
//! projected token and the trust bundle ConfigMap written where the volumes mount them),
//! and only once its `/ready` answers does the test start the app. Each pod gets an
//! `/etc/hosts` standing in for cluster DNS. The test's own namespace is never touched.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use seam_control_plane::launch::SeamProcess;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::kube_api::KubeApi;
use crate::logs::ChildLog;
use crate::mesh::{self, READY_TIMEOUT};
use crate::meshed_pods::{
    ADMIN_PORT, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_PORT, PROXY_UID, get,
};
use crate::netns_files::NetnsFiles;
use crate::pod_network::{Pod, PodNetwork};
use crate::{proxy_init, wait};

/// The control plane's Service name, as the injector points sidecars at it.
pub const CONTROL_PLANE_HOST: &str = "seam-control-plane.seam-system.svc";

/// The network, the control plane's pod with the API server, and the pods' files.
pub struct KubePods {
    control_plane: SeamProcess,
    control_plane_log: ChildLog,
    proxy_logs: Vec<ChildLog>,
    pub api: KubeApi,
    control_plane_pod: Pod,
    network: PodNetwork,
    proxy_binary: PathBuf,
    dir: TempDir,
}

/// A pod with a sidecar: its namespace, `/etc` files and proxy.
pub struct SidecarPod {
    pub pod: Pod,
    _files: NetnsFiles,
    proxy: SeamProcess,
    log: ChildLog,
}

/// What the injector gives a pod's sidecar, as the kubelet resolves it.
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// `SEAM_SERVICE`: `<workload>.<namespace>`.
    pub service: &'a str,
    /// The projected ServiceAccount token the kubelet writes.
    pub token: &'a str,
    /// `/etc/hosts` lines besides the control plane's (cluster DNS for the app).
    pub hosts: &'a [(IpAddr, &'a str)],
}

impl KubePods {
    /// Makes the network and the control-plane pod, with the API server listening on the
    /// pod's IP and the control plane started against it and ready.
    pub async fn start() -> anyhow::Result<Self> {
        crate::netns::require_root()?;
        let dir = tempfile::Builder::new()
            .prefix("seam-kube-pods-")
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let proxy_binary = dir.path().join("seam-proxy");
        std::fs::copy(mesh::seam_binary("seam-proxy")?, &proxy_binary)?;
        std::fs::set_permissions(&proxy_binary, std::fs::Permissions::from_mode(0o755))?;
        let mut network = PodNetwork::create()?;
        let control_plane_pod = network.add_pod("cp")?;
        let ip: IpAddr = control_plane_pod.ipv4().into();
        let listener = control_plane_pod
            .netns()
            .bind_tcp(SocketAddr::new(ip, 0))
            .await?;
        let api = KubeApi::serve(listener, dir.path())?;
        for namespace in ["seam-system", "shop"] {
            api.apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )?;
        }
        let (control_plane_log, stderr) =
            ChildLog::create("seam-control-plane", dir.path().join("control-plane.log"))?;
        let mut command = control_plane_pod
            .netns()
            .command(mesh::seam_binary("seam-control-plane")?);
        mesh::remove_seam_variables(command.as_std_mut());
        command
            .args(["--source", "kubernetes"])
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .arg("--listen")
            .arg(SocketAddr::new(ip, CONTROL_PLANE_PORT).to_string())
            .arg("--admin")
            .arg(SocketAddr::new(ip, CONTROL_PLANE_ADMIN_PORT).to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let control_plane = SeamProcess::spawn("seam-control-plane", command, stderr)
            .await
            .with_context(|| format!("control plane log:\n{}", control_plane_log.tail()))?;
        let pods = Self {
            control_plane,
            control_plane_log,
            proxy_logs: Vec::new(),
            api,
            control_plane_pod,
            network,
            proxy_binary,
            dir,
        };
        wait::until("the control plane is ready", READY_TIMEOUT, || async {
            let (status, body) = get(
                pods.control_plane_pod.netns(),
                pods.control_plane.addr("admin"),
                "/ready",
                None,
            )
            .await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            Ok(())
        })
        .await
        .with_context(|| format!("control plane log:\n{}", pods.control_plane_log.tail()))?;
        Ok(pods)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A pod for `spec`, not started: the test describes it to the API server with its IP.
    pub fn add_pod(&mut self, label: &str) -> anyhow::Result<Pod> {
        self.network.add_pod(label)
    }

    /// Runs `pod` as the kubelet runs an injected pod: `seam-proxy init` (the init
    /// container), then the sidecar with its environment, and waits for its `/ready`
    /// (the startup probe) before returning, so the test starts the app after it.
    pub async fn start_sidecar(
        &mut self,
        pod: Pod,
        spec: &PodSpec<'_>,
    ) -> anyhow::Result<SidecarPod> {
        let files = NetnsFiles::create(pod.netns())?;
        let mut hosts = format!(
            "127.0.0.1 localhost\n{} {CONTROL_PLANE_HOST}\n",
            self.control_plane_pod.ipv4()
        );
        for (ip, name) in spec.hosts {
            hosts.push_str(&format!("{ip} {name}\n"));
        }
        files.write("hosts", &hosts)?;
        // The volumes: the trust bundle ConfigMap the control plane wrote into the pod's
        // namespace, and the projected token.
        let ca_pem = self
            .api
            .wait_object(
                "ConfigMap",
                spec.namespace,
                "seam-trust-bundle",
                READY_TIMEOUT,
                |map| {
                    map.and_then(|map| map["data"]["ca.pem"].as_str())
                        .map(str::to_owned)
                        .context("no trust bundle yet")
                },
            )
            .await?;
        let volumes = self.dir.path().join(spec.name);
        std::fs::create_dir(&volumes)?;
        std::fs::set_permissions(&volumes, std::fs::Permissions::from_mode(0o755))?;
        let trust = volumes.join("ca.pem");
        let token = volumes.join("token");
        for (path, contents) in [(&trust, ca_pem.as_str()), (&token, spec.token)] {
            std::fs::write(path, contents)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
        }

        proxy_init::run_init(pod.netns(), &[])
            .await?
            .expect_success()?;

        let (log, stderr) = ChildLog::create(
            format!("seam-proxy {}", spec.name),
            self.dir.path().join(format!("proxy-{}.log", spec.name)),
        )?;
        let pod_ip = pod.ipv4().to_string();
        let mut command = pod
            .netns()
            .command_as(PROXY_UID, PROXY_UID, &self.proxy_binary);
        mesh::remove_seam_variables(command.as_std_mut());
        // The sidecar's environment as the injector writes it, with the downward API's
        // fieldRefs (namespace, ServiceAccount, pod IP) resolved as the kubelet does.
        command
            .env("SEAM_NAMESPACE", spec.namespace)
            .env("SEAM_SERVICE_ACCOUNT", spec.service_account)
            .env("SEAM_POD_IP", &pod_ip)
            .env("SEAM_SERVICE", spec.service)
            .env("SEAM_INBOUND_POLICY", &pod_ip)
            .env("SEAM_SERVICE_ACCOUNT_TOKEN_FILE", &token)
            .env("SEAM_TRUST_ANCHORS", &trust)
            .env(
                "SEAM_CONTROL_PLANE",
                format!("{CONTROL_PLANE_HOST}:{CONTROL_PLANE_PORT}"),
            )
            .env("SEAM_ADMIN", format!("0.0.0.0:{ADMIN_PORT}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let proxy = SeamProcess::spawn(format!("seam-proxy {}", spec.name), command, stderr)
            .await
            .with_context(|| format!("proxy log:\n{}", log.tail()))?;
        self.proxy_logs.push(log.clone());
        let sidecar = SidecarPod {
            pod,
            _files: files,
            proxy,
            log,
        };
        wait::until(
            &format!("{}'s startup probe (/ready)", spec.name),
            READY_TIMEOUT,
            || async {
                let (status, body) = sidecar.admin_get("/ready").await?;
                anyhow::ensure!(status == 200, "{status} {body}");
                Ok(())
            },
        )
        .await
        .with_context(|| format!("proxy log:\n{}", sidecar.log.tail()))?;
        Ok(sidecar)
    }
}

impl Drop for KubePods {
    fn drop(&mut self) {
        self.control_plane_log.print_if_panicking();
        for log in &self.proxy_logs {
            log.print_if_panicking();
        }
    }
}

impl SidecarPod {
    /// `GET path` on the proxy's admin port, from inside the pod.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let admin = SocketAddr::new(self.pod.ipv4().into(), ADMIN_PORT);
        get(self.pod.netns(), admin, path, None).await
    }

    pub fn log(&self) -> &ChildLog {
        &self.log
    }

    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.pid()
    }
}

/// A Service `name` in `namespace` (ClusterIP `cluster_ip`, port 80 to `target_port`)
/// and its one ready pod `pod` at `pod_ip` with the Seam sidecar (a native sidecar, as
/// the injector adds it) or without: the Service, EndpointSlice and Pod the API lists.
pub fn workload_objects(
    (namespace, name, pod): (&str, &str, &str),
    pod_ip: IpAddr,
    target_port: u16,
    cluster_ip: &str,
    meshed: bool,
) -> Vec<Value> {
    let sidecar = json!([{"name": "seam-proxy", "image": "seam:dev", "restartPolicy": "Always"}]);
    vec![
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "clusterIP": cluster_ip,
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": target_port, "protocol": "TCP"}],
            },
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-abcde"), "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [pod_ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
            }],
            "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "serviceAccountName": name,
                "initContainers": if meshed { sidecar } else { json!([]) },
                "containers": [{"name": "app", "image": format!("{name}:1")}],
            },
            "status": {"phase": "Running", "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}]},
        }),
    ]
}
