//! A test mesh: a temporary directory holding the mesh file and the CA state, and a real
//! `seam-control-plane` serving them on loopback. The test owns the mesh file: it starts
//! services with no endpoints, starts their proxies (whose inbound ports are known only
//! once they run), then rewrites the file with the real addresses. Every write is atomic
//! (a temporary file renamed over the old one) so the control plane's hot reload never
//! reads half a file, and each rewrite waits until `/mesh` shows the new model.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use seam_control_plane::launch::{self, SeamProcess};
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::Instant;

use crate::logs::ChildLog;
use crate::proxy::{JoinTokenVia, ProxyOptions, TestProxy};
use crate::wait;

/// The trust domain every test mesh uses.
pub const TRUST_DOMAIN: &str = "seam.local";

/// How long a binary may take to become ready (debug builds, two cores, tests in parallel).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the control plane may take to apply a rewritten mesh file.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The SPIFFE id every endpoint of `service` carries in file mode.
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{service}")
}

/// The join token the test mesh gives `service`.
pub fn join_token(service: &str) -> String {
    format!("join-token-for-{service}")
}

/// One service as the mesh file lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshService {
    pub join_token: String,
    pub endpoints: Vec<SocketAddr>,
}

/// `names` as services of the test mesh, each with its join token and no endpoints yet.
pub fn services_without_endpoints(names: &[&str]) -> BTreeMap<String, MeshService> {
    names
        .iter()
        .map(|name| {
            let service = MeshService {
                join_token: join_token(name),
                endpoints: Vec::new(),
            };
            (name.to_string(), service)
        })
        .collect()
}

/// Renders the mesh file (v1) for `services`. Strings are written as JSON strings, which
/// are valid double-quoted YAML scalars.
pub fn render_mesh_file(services: &BTreeMap<String, MeshService>) -> String {
    render_mesh_file_with(services, &BTreeMap::new())
}

/// Like [`render_mesh_file`], with extra YAML lines (such as `allow: [a]`) under some
/// services, each line written as is at the service's key indentation.
pub fn render_mesh_file_with(
    services: &BTreeMap<String, MeshService>,
    extra: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut yaml = format!("# written by seam-tests\ntrust_domain: {TRUST_DOMAIN}\nservices:\n");
    if services.is_empty() {
        yaml.push_str("  {}\n");
    }
    for (name, service) in services {
        let endpoints: Vec<String> = service
            .endpoints
            .iter()
            .map(|addr| Value::from(addr.to_string()).to_string())
            .collect();
        yaml.push_str(&format!(
            "  {name}:\n    join_token: {}\n    endpoints: [{}]\n",
            Value::from(service.join_token.as_str()),
            endpoints.join(", ")
        ));
        for line in extra.get(name).into_iter().flatten() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml
}

/// Replaces `path` with `contents` atomically: write a temporary file in the same
/// directory, then rename it over the target.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("mesh file has no parent directory")?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".mesh-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut temporary, contents.as_bytes())?;
    temporary.as_file().sync_all()?;
    temporary
        .persist(path)
        .with_context(|| format!("cannot rename a new mesh file over {}", path.display()))?;
    Ok(())
}

/// The path of one of Seam's binaries, built from the tree as it is (see
/// [`crate::fresh_binaries`]).
pub fn seam_binary(name: &str) -> anyhow::Result<PathBuf> {
    crate::fresh_binaries::ensure()?;
    launch::binary_path(name)
}

/// Builds a command for one of Seam's binaries with a clean environment: no `SEAM_*`
/// variable leaks in from the developer's shell, and logs at `info` unless
/// `SEAM_TEST_LOG` asks for another filter.
pub fn seam_command(binary: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(seam_binary(binary)?);
    remove_seam_variables(command.as_std_mut());
    let filter = std::env::var("SEAM_TEST_LOG").unwrap_or_else(|_| "info".to_string());
    command.env("RUST_LOG", filter).env("NO_COLOR", "1");
    Ok(command)
}

/// Keeps every `SEAM_*` variable of the test's own environment away from `command`.
pub fn remove_seam_variables(command: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SEAM_") {
            command.env_remove(key);
        }
    }
}

/// A running control plane over a mesh file in its own temporary directory.
pub struct TestMesh {
    // Field order matters for drop: the process goes before the directory it uses.
    control_plane: SeamProcess,
    log: ChildLog,
    /// Logs of control planes this mesh ran before a restart.
    earlier_logs: Vec<ChildLog>,
    extra_args: Vec<String>,
    services: Mutex<BTreeMap<String, MeshService>>,
    /// Extra mesh file lines per service (authorization keys), see [`TestMesh::set_service_lines`].
    extra_lines: Mutex<BTreeMap<String, Vec<String>>>,
    mesh_path: PathBuf,
    state_dir: PathBuf,
    dir: TempDir,
}

impl TestMesh {
    /// Writes a mesh file listing `services` with no endpoints, starts the control plane
    /// and waits until it is ready.
    pub async fn start(services: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_args(services, &[]).await
    }

    /// Like [`TestMesh::start`], with extra control plane flags (e.g. `--cert-ttl 6s`).
    pub async fn start_with_args(services: &[&str], extra_args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("seam-test-").tempdir()?;
        let mesh_path = dir.path().join("mesh.yaml");
        let state_dir = dir.path().join("state");
        let services = services_without_endpoints(services);
        write_atomically(&mesh_path, &render_mesh_file(&services))?;

        let (control_plane, log) = spawn_control_plane(
            dir.path(),
            "control-plane.log",
            &ControlPlaneArgs {
                listen: "127.0.0.1:0".into(),
                admin: "127.0.0.1:0".into(),
                state_dir: &state_dir,
                mesh_path: &mesh_path,
                extra_args,
            },
        )
        .await?;
        Ok(Self {
            control_plane,
            log,
            earlier_logs: Vec::new(),
            extra_args: extra_args.iter().map(ToString::to_string).collect(),
            services: Mutex::new(services),
            extra_lines: Mutex::new(BTreeMap::new()),
            mesh_path,
            state_dir,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn mesh_path(&self) -> &Path {
        &self.mesh_path
    }

    /// The mesh CA certificate proxies are given as `--trust-anchors`.
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join("ca.pem")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.control_plane.addr("grpc")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.control_plane.addr("admin")
    }

    pub fn log(&self) -> &ChildLog {
        &self.log
    }

    /// The services as the test last wrote them.
    pub fn services(&self) -> BTreeMap<String, MeshService> {
        self.services.lock().clone()
    }

    /// `GET /mesh` on the control plane's admin listener.
    pub async fn mesh_state(&self) -> anyhow::Result<Value> {
        let (status, body) = launch::http_get(self.admin_addr(), "/mesh").await?;
        if status != 200 {
            bail!("GET /mesh answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET /mesh is not JSON: {body}"))
    }

    /// Writes `text` as the mesh file and waits until `/mesh` reports it refused for
    /// `reason`; checks that the refusal names `line` of the file (`file:line:column:
    /// reason`) and that the last good model stays. Returns the refusal.
    pub async fn expect_refused(
        &self,
        text: &str,
        line: usize,
        reason: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let good = self.mesh_state().await?["version"].clone();
        self.write_raw_mesh_file(text)?;
        let error = wait::until("/mesh reports the refusal", timeout, || async {
            let state = self.mesh_state().await?;
            let error = state["last_error"].as_str().unwrap_or_default().to_owned();
            anyhow::ensure!(error.contains(reason), "/mesh: {state}");
            Ok(error)
        })
        .await?;
        let path = self.mesh_path().display();
        anyhow::ensure!(
            error.starts_with(&format!("{path}:{line}:")),
            "{error:?} should name line {line} of {path}"
        );
        let state = self.mesh_state().await?;
        anyhow::ensure!(
            state["version"] == good,
            "the last good model should stay (version {good}): {state}"
        );
        Ok(error)
    }

    /// `GET /metrics` on the control plane's admin listener.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = launch::http_get(self.admin_addr(), "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// The value of `seam_mesh_reloads_total{result="<result>"}` (0 when absent).
    pub async fn reloads_total(&self, result: &str) -> anyhow::Result<f64> {
        let metrics = self.metrics().await?;
        Ok(metric_value(&metrics, "seam_mesh_reloads_total", &[("result", result)]).unwrap_or(0.0))
    }

    /// Sets the endpoints of the given services, rewrites the mesh file, and waits until
    /// the control plane's `/mesh` shows a new version with those endpoints. Returns the
    /// instant the new file was put in place.
    pub async fn set_endpoints(
        &self,
        changes: &[(&str, &[SocketAddr])],
    ) -> anyhow::Result<Instant> {
        let before = self.mesh_state().await?["version"].clone();
        let mut changed = Vec::new();
        let contents = {
            let mut services = self.services.lock();
            for (name, endpoints) in changes {
                let service = services
                    .get_mut(*name)
                    .with_context(|| format!("service {name} is not in the test mesh"))?;
                let (mut was, mut now) = (service.endpoints.clone(), endpoints.to_vec());
                was.sort();
                now.sort();
                if was != now {
                    changed.push(*name);
                }
                service.endpoints = endpoints.to_vec();
            }
            render_mesh_file_with(&services, &self.extra_lines())
        };
        write_atomically(&self.mesh_path, &contents)?;
        let written_at = Instant::now();
        wait::until(
            "the control plane applies the new mesh file",
            RELOAD_TIMEOUT,
            || async {
                let state = self.mesh_state().await?;
                if state["version"] == before {
                    bail!("/mesh still at version {before}: {state}");
                }
                for (name, endpoints) in changes {
                    let listed = endpoint_set(&state["services"][*name]["endpoints"]);
                    let wanted: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                    if !same_members(&listed, &wanted) {
                        bail!("/mesh lists {name} endpoints {listed:?}, want {wanted:?}: {state}");
                    }
                }
                Ok(())
            },
        )
        .await?;
        self.wait_until_proxies_have(&changed).await?;
        Ok(written_at)
    }

    /// Waits until every proxy subscribed to one of `services` by name (`name`,
    /// `name:port`) has acknowledged (or refused) the model `/mesh` shows now: the control
    /// plane pushes a change a moment after it publishes it, and a test's next request
    /// must not race that push.
    async fn wait_until_proxies_have(&self, services: &[&str]) -> anyhow::Result<()> {
        if services.is_empty() {
            return Ok(());
        }
        let version = self.mesh_state().await?["version"]
            .as_u64()
            .context("/mesh has no version")?;
        let names_one = |authority: &str| {
            services.iter().any(|name| {
                authority == *name
                    || authority
                        .strip_prefix(*name)
                        .is_some_and(|rest| rest.starts_with(':'))
            })
        };
        wait::until(
            "every subscribed proxy acknowledges the new endpoints",
            RELOAD_TIMEOUT,
            || async {
                let (status, body) = launch::http_get(self.admin_addr(), "/proxies").await?;
                if status != 200 {
                    bail!("GET /proxies answered {status}: {body}");
                }
                let proxies: Value = serde_json::from_str(&body)
                    .with_context(|| format!("GET /proxies is not JSON: {body}"))?;
                for proxy in proxies.as_array().into_iter().flatten() {
                    for subscription in proxy["subscriptions"].as_array().into_iter().flatten() {
                        let authority = subscription["authority"].as_str().unwrap_or_default();
                        let at = |key: &str| subscription[key].as_u64().unwrap_or(0);
                        let answered =
                            at("acked_version").max(subscription["nack"]["version"].as_u64().unwrap_or(0));
                        if names_one(authority) && answered < version {
                            bail!("proxy {} has {authority} at version {answered}, want {version}: {subscription}", proxy["id"]);
                        }
                    }
                }
                Ok(())
            },
        )
        .await
    }

    fn extra_lines(&self) -> BTreeMap<String, Vec<String>> {
        self.extra_lines.lock().clone()
    }

    /// Sets extra mesh file lines under `service` (such as `allow: [a]` or
    /// `allow_plaintext: true`), rewrites the file and waits until the control plane has
    /// applied it (a new `/mesh` version).
    pub async fn set_service_lines(&self, service: &str, lines: &[&str]) -> anyhow::Result<()> {
        let before = self.mesh_state().await?["version"].clone();
        let contents = {
            let services = self.services.lock();
            let mut extra = self.extra_lines.lock();
            extra.insert(
                service.to_owned(),
                lines.iter().map(ToString::to_string).collect(),
            );
            render_mesh_file_with(&services, &extra)
        };
        write_atomically(&self.mesh_path, &contents)?;
        self.wait_version_change(&before, RELOAD_TIMEOUT).await?;
        Ok(())
    }

    /// Removes `service` from the mesh file and waits until `/mesh` no longer lists it.
    pub async fn remove_service(&self, service: &str) -> anyhow::Result<()> {
        let contents = {
            let mut services = self.services.lock();
            services
                .remove(service)
                .with_context(|| format!("service {service} is not in the test mesh"))?;
            render_mesh_file_with(&services, &self.extra_lines())
        };
        write_atomically(&self.mesh_path, &contents)?;
        wait::until(
            &format!("/mesh drops {service}"),
            RELOAD_TIMEOUT,
            || async {
                let state = self.mesh_state().await?;
                if !state["services"][service].is_null() {
                    bail!("/mesh still lists {service}: {state}");
                }
                Ok(())
            },
        )
        .await
    }

    /// Waits until `/mesh` shows a version other than `before`, and returns that state.
    pub async fn wait_version_change(
        &self,
        before: &Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        wait::until("/mesh shows a new version", timeout, || async {
            let state = self.mesh_state().await?;
            if state["version"] == *before {
                bail!("/mesh still at version {before}: {state}");
            }
            Ok(state)
        })
        .await
    }

    /// Stops the control plane (SIGTERM) and waits for it to exit; the proxies lose their
    /// discovery stream and must carry on with what they have.
    pub async fn stop_control_plane(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.control_plane.terminate()?;
        tokio::time::timeout(RELOAD_TIMEOUT, self.control_plane.wait())
            .await
            .context("the control plane did not exit after SIGTERM")?
    }

    /// Kills the control plane (SIGKILL: no goodbye to the proxies) and waits for it.
    pub async fn kill_control_plane(&mut self) -> anyhow::Result<()> {
        self.control_plane.kill().await
    }

    /// Stops the control plane and starts a new one on the same state directory (same
    /// CA) and the same gRPC and admin addresses, so the proxies can reconnect to it.
    pub async fn restart_control_plane(&mut self) -> anyhow::Result<()> {
        self.stop_control_plane().await?;
        self.resume_control_plane().await
    }

    /// Starts a new control plane after [`TestMesh::stop_control_plane`], on the same
    /// state directory and addresses as the stopped one, and waits until it is ready.
    pub async fn resume_control_plane(&mut self) -> anyhow::Result<()> {
        let (grpc, admin) = (self.grpc_addr(), self.admin_addr());
        let extra_args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let log_name = format!("control-plane-{}.log", self.earlier_logs.len() + 2);
        let (control_plane, log) = spawn_control_plane(
            self.dir.path(),
            &log_name,
            &ControlPlaneArgs {
                listen: grpc.to_string(),
                admin: admin.to_string(),
                state_dir: &self.state_dir,
                mesh_path: &self.mesh_path,
                extra_args: &extra_args,
            },
        )
        .await?;
        self.control_plane = control_plane;
        self.earlier_logs
            .push(std::mem::replace(&mut self.log, log));
        Ok(())
    }

    /// Writes `contents` as the mesh file, as is (for malformed files). The test's own
    /// model of the services is left alone.
    pub fn write_raw_mesh_file(&self, contents: &str) -> anyhow::Result<()> {
        write_atomically(&self.mesh_path, contents)
    }

    /// Starts a proxy for `service` in front of `app` with the right join token (given in
    /// the environment) and waits until it is ready.
    pub async fn start_proxy(&self, service: &str, app: SocketAddr) -> anyhow::Result<TestProxy> {
        self.start_proxy_with(ProxyOptions::new(service, app)).await
    }

    /// Starts a proxy and waits until it is ready.
    pub async fn start_proxy_with(&self, options: ProxyOptions) -> anyhow::Result<TestProxy> {
        let mut proxy = self.spawn_proxy(options).await?;
        proxy.wait_ready(READY_TIMEOUT).await?;
        Ok(proxy)
    }

    /// Starts a proxy without waiting for it to be ready (it has printed its listeners).
    pub async fn spawn_proxy(&self, options: ProxyOptions) -> anyhow::Result<TestProxy> {
        let token = options
            .join_token
            .clone()
            .unwrap_or_else(|| join_token(&options.service));
        let label = format!("seam-proxy {}#{}", options.service, next_proxy_number());
        let log_name = format!("{}.log", label.replace([' ', '#'], "-"));
        let (log, stderr) = ChildLog::create(label.clone(), self.dir().join(&log_name))?;
        let mut command = seam_command("seam-proxy")?;
        let mut settings = vec![
            ("service", options.service.clone()),
            ("inbound", "127.0.0.1:0".to_string()),
            ("outbound", "127.0.0.1:0".to_string()),
            ("admin", "127.0.0.1:0".to_string()),
            ("app", options.app.to_string()),
            ("trust-anchors", self.ca_path().display().to_string()),
            ("control-plane", self.grpc_addr().to_string()),
        ];
        if let Some(grace) = &options.shutdown_grace {
            settings.push(("shutdown-grace", grace.clone()));
        }
        for (flag, value) in settings {
            if options.settings_via_env {
                // `--trust-anchors` is `SEAM_TRUST_ANCHORS`, and so on.
                let variable = format!("SEAM_{}", flag.replace('-', "_").to_uppercase());
                command.env(variable, value);
            } else {
                command.arg(format!("--{flag}")).arg(value);
            }
        }
        command.args(&options.extra_args);
        match options.join_token_via {
            JoinTokenVia::Env => {
                command.env("SEAM_JOIN_TOKEN", &token);
            }
            JoinTokenVia::File => {
                let path = self.dir().join(format!("{log_name}.token"));
                std::fs::write(&path, &token)?;
                command.arg("--join-token-file").arg(path);
            }
        }
        let process = SeamProcess::spawn(label, command, stderr)
            .await
            .with_context(|| format!("proxy log:\n{}", log.tail()))?;
        Ok(TestProxy::new(options.service, process, log))
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for log in &self.earlier_logs {
            log.print_if_panicking();
        }
        self.log.print_if_panicking();
        if std::thread::panicking() {
            eprintln!(
                "----- mesh file {} -----\n{}",
                self.mesh_path.display(),
                std::fs::read_to_string(&self.mesh_path).unwrap_or_default()
            );
            // Keep the directory (logs, CA, mesh file) for a closer look.
            self.dir.disable_cleanup(true);
            eprintln!("----- kept {} -----", self.dir.path().display());
        }
    }
}

/// Where and how to run a control plane.
struct ControlPlaneArgs<'a> {
    listen: String,
    admin: String,
    state_dir: &'a Path,
    mesh_path: &'a Path,
    extra_args: &'a [&'a str],
}

/// Starts a control plane with its stderr in `dir/log_name` and waits until it is ready.
async fn spawn_control_plane(
    dir: &Path,
    log_name: &str,
    args: &ControlPlaneArgs<'_>,
) -> anyhow::Result<(SeamProcess, ChildLog)> {
    let (log, stderr) = ChildLog::create("seam-control-plane", dir.join(log_name))?;
    let mut command = seam_command("seam-control-plane")?;
    command
        .arg("--listen")
        .arg(&args.listen)
        .arg("--admin")
        .arg(&args.admin)
        .arg("--state-dir")
        .arg(args.state_dir)
        .arg("--mesh-file")
        .arg(args.mesh_path)
        .args(args.extra_args);
    let mut control_plane = SeamProcess::spawn("seam-control-plane", command, stderr)
        .await
        .with_context(|| format!("control plane log:\n{}", log.tail()))?;
    control_plane
        .wait_ready(READY_TIMEOUT)
        .await
        .with_context(|| format!("control plane log:\n{}", log.tail()))?;
    Ok((control_plane, log))
}

fn next_proxy_number() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The strings of a JSON array (endpoint addresses); empty for anything else.
pub fn endpoint_set(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn same_members(left: &[String], right: &[String]) -> bool {
    let mut left = left.to_vec();
    let mut right = right.to_vec();
    left.sort();
    right.sort();
    left == right
}

/// Reads one sample from Prometheus text: the value of `name` whose labels include all of
/// `labels`. Returns `None` if no such sample is present.
pub fn metric_value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all_present = labels
                .iter()
                .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            if !all_present {
                return None;
            }
            value.trim().parse().ok()
        })
}

/// The sum of every series of `name` that has all of `labels` (`None` if there is none),
/// for a count split by labels the test does not care about.
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| metric_value(line, name, labels))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_mesh_file_with_and_without_endpoints() {
        let mut services = BTreeMap::new();
        services.insert(
            "a".to_string(),
            MeshService {
                join_token: "t-a".into(),
                endpoints: vec![],
            },
        );
        services.insert(
            "b".to_string(),
            MeshService {
                join_token: "t-b".into(),
                endpoints: vec![
                    "127.0.0.1:1".parse().expect("addr"),
                    "127.0.0.1:2".parse().expect("addr"),
                ],
            },
        );
        let yaml = render_mesh_file(&services);
        assert!(
            yaml.contains("  a:\n    join_token: \"t-a\"\n    endpoints: []\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("    endpoints: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"),
            "{yaml}"
        );
    }

    #[test]
    fn reads_a_labelled_metric() {
        let text = "# HELP seam_mesh_reloads_total x\n\
                    seam_mesh_reloads_total{result=\"accepted\"} 3\n\
                    seam_mesh_reloads_total{result=\"rejected\"} 1\n\
                    seam_up 1\n";
        assert_eq!(
            metric_value(text, "seam_mesh_reloads_total", &[("result", "rejected")]),
            Some(1.0)
        );
        assert_eq!(metric_value(text, "seam_up", &[]), Some(1.0));
        assert_eq!(metric_value(text, "seam_down", &[]), None);
    }
}
