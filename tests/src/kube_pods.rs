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
use crate::meshed_pods::{ADMIN_PORT, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_PORT, get};
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

/// What the kubelet knows of a pod besides its spec: its place and its projected token.
pub struct PodRun<'a> {
    /// The pod object as the API server holds it after injection (`spec.initContainers`
    /// with `seam-init` and `seam-proxy`, `spec.volumes`, `spec.serviceAccountName`).
    pub object: &'a Value,
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

    /// Runs the injected containers of `run.object` in `pod` as the kubelet would:
    /// `seam-init` (its command and args) to completion, then the `seam-proxy` native
    /// sidecar as its `runAsUser`, with its env resolved (fieldRefs of the downward API,
    /// `$(VAR)` references) and its volumes filled (the projected token, the ConfigMap the
    /// control plane wrote); waits for its startup probe (`/ready`) before returning, so
    /// the test starts the app after it. Volumes cannot be mounted in a network
    /// namespace alone, so each lives in a directory of the test and the paths under its
    /// mountPath in the env are pointed there.
    pub async fn start_injected(
        &mut self,
        pod: Pod,
        run: &PodRun<'_>,
    ) -> anyhow::Result<SidecarPod> {
        let metadata = &run.object["metadata"];
        let name = metadata["name"]
            .as_str()
            .context("the pod has no name")?
            .to_owned();
        let namespace = metadata["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let spec = &run.object["spec"];
        let init = container(spec, "seam-init")?;
        let sidecar = container(spec, "seam-proxy")?;
        anyhow::ensure!(
            sidecar["restartPolicy"] == "Always",
            "seam-proxy is not a native sidecar: {sidecar}"
        );

        let files = NetnsFiles::create(pod.netns())?;
        let mut hosts = format!(
            "127.0.0.1 localhost\n{} {CONTROL_PLANE_HOST}\n",
            self.control_plane_pod.ipv4()
        );
        for (ip, host) in run.hosts {
            hosts.push_str(&format!("{ip} {host}\n"));
        }
        files.write("hosts", &hosts)?;
        let mounts = self
            .fill_volumes(&name, &namespace, spec, sidecar, run.token)
            .await?;

        let binary = |command: &Value| -> anyhow::Result<()> {
            anyhow::ensure!(
                command[0] == "seam-proxy",
                "the container runs {command}, not seam-proxy"
            );
            Ok(())
        };
        binary(&init["command"])?;
        let init_args = strings(&init["args"]);
        anyhow::ensure!(
            init_args.first().map(String::as_str) == Some("init"),
            "seam-init's args: {init_args:?}"
        );
        let init_args: Vec<&str> = init_args[1..].iter().map(String::as_str).collect();
        proxy_init::run_init(pod.netns(), &init_args)
            .await?
            .expect_success()?;

        binary(&sidecar["command"])?;
        let uid = sidecar["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap_or(0) as u32;
        let gid = sidecar["securityContext"]["runAsGroup"]
            .as_u64()
            .map_or(uid, |g| g as u32);
        let (log, stderr) = ChildLog::create(
            format!("seam-proxy {name}"),
            self.dir.path().join(format!("proxy-{name}.log")),
        )?;
        let mut command = pod.netns().command_as(uid, gid, &self.proxy_binary);
        mesh::remove_seam_variables(command.as_std_mut());
        command.args(strings(&sidecar["args"]));
        let field = |path: &str| -> Option<String> {
            match path {
                "metadata.namespace" => Some(namespace.clone()),
                "metadata.name" => Some(name.clone()),
                "spec.serviceAccountName" => spec["serviceAccountName"].as_str().map(str::to_owned),
                "status.podIP" => Some(pod.ipv4().to_string()),
                _ => None,
            }
        };
        let mut env: Vec<(String, String)> = Vec::new();
        for variable in sidecar["env"].as_array().into_iter().flatten() {
            let key = variable["name"]
                .as_str()
                .context("an env entry without a name")?;
            let value = match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some(path) => {
                    field(path).with_context(|| format!("{key}: unknown fieldRef {path}"))?
                }
                None => expand(variable["value"].as_str().unwrap_or_default(), &env),
            };
            env.push((key.to_owned(), on_host(&value, &mounts)));
        }
        command
            .envs(env)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let proxy = SeamProcess::spawn(format!("seam-proxy {name}"), command, stderr)
            .await
            .with_context(|| format!("proxy log:\n{}", log.tail()))?;
        self.proxy_logs.push(log.clone());
        let started = SidecarPod {
            pod,
            _files: files,
            proxy,
            log,
        };
        let probe = &sidecar["startupProbe"]["httpGet"];
        let probe_path = probe["path"].as_str().unwrap_or("/ready").to_owned();
        wait::until(
            &format!("{name}'s startup probe ({probe_path})"),
            READY_TIMEOUT,
            || async {
                let (status, body) = started.admin_get(&probe_path).await?;
                anyhow::ensure!(status == 200, "{status} {body}");
                Ok(())
            },
        )
        .await
        .with_context(|| format!("proxy log:\n{}", started.log.tail()))?;
        Ok(started)
    }

    /// Fills the sidecar's volumes in `dir/<pod>/<volume>/` as the kubelet would: a
    /// projected ServiceAccount token, a ConfigMap's keys (waiting for the control plane
    /// to have written it). Returns each mountPath with its directory.
    async fn fill_volumes(
        &self,
        pod: &str,
        namespace: &str,
        spec: &Value,
        sidecar: &Value,
        token: &str,
    ) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let root = self.dir.path().join(pod);
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        let mut mounts = Vec::new();
        for mount in sidecar["volumeMounts"].as_array().into_iter().flatten() {
            let volume_name = mount["name"]
                .as_str()
                .context("a volumeMount without a name")?;
            let mount_path = mount["mountPath"]
                .as_str()
                .context("a volumeMount without a mountPath")?;
            let volume = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|volume| volume["name"] == volume_name)
                .with_context(|| {
                    format!("no volume {volume_name} for the mount at {mount_path}")
                })?;
            let dir = root.join(volume_name);
            std::fs::create_dir(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            let mut contents: Vec<(String, String)> = Vec::new();
            for source in volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(path) = source["serviceAccountToken"]["path"].as_str() {
                    contents.push((path.to_owned(), token.to_owned()));
                }
            }
            if let Some(config_map) = volume["configMap"]["name"].as_str() {
                let data = self
                    .api
                    .wait_object("ConfigMap", namespace, config_map, READY_TIMEOUT, |map| {
                        map.and_then(|map| map["data"].as_object().cloned())
                            .context("not written yet")
                    })
                    .await?;
                for (key, value) in data {
                    contents.push((key, value.as_str().unwrap_or_default().to_owned()));
                }
            }
            for (file, text) in contents {
                let path = dir.join(file);
                std::fs::write(&path, text)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            }
            mounts.push((mount_path.trim_end_matches('/').to_owned(), dir));
        }
        Ok(mounts)
    }
}

/// The init container or container named `name`.
fn container<'a>(spec: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .find(|container| container["name"] == name)
        .with_context(|| format!("the pod has no container {name}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// `$(VAR)` replaced by the value of an env entry defined before, as the kubelet does.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for (key, defined) in env {
        out = out.replace(&format!("$({key})"), defined);
    }
    out
}

/// A path under a volume's mountPath, pointed at the volume's directory in the test.
fn on_host(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount_path, dir) in mounts {
        if let Some(rest) = value.strip_prefix(mount_path.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand_and_mounted_paths_point_at_the_volume_directories() {
        let env = [("SEAM_NAMESPACE".to_owned(), "shop".to_owned())];
        assert_eq!(expand("web.$(SEAM_NAMESPACE)", &env), "web.shop");
        assert_eq!(expand("$(UNSET)", &env), "$(UNSET)");
        let mounts = [(
            "/var/run/seam/trust".to_owned(),
            PathBuf::from("/tmp/x/seam-trust-bundle"),
        )];
        assert_eq!(
            on_host("/var/run/seam/trust/ca.pem", &mounts),
            "/tmp/x/seam-trust-bundle/ca.pem"
        );
        assert_eq!(
            on_host("/var/run/seam/trustee", &mounts),
            "/var/run/seam/trustee"
        );
        assert_eq!(on_host("0.0.0.0:4191", &mounts), "0.0.0.0:4191");
    }
}
