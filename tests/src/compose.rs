//! The demo compose project of `deploy/compose` under test, against the real Docker
//! engine: the Seam image built once per test process from the freshly built debug
//! binaries (`deploy/compose/build-image --bin-dir`), then one [`ComposeProject`] per test
//! with a unique project name, its own state directory and its own admin port on
//! loopback (asked of the OS), brought up with `docker-compose up -d` and always taken
//! down when dropped, failed test or not, with a check that nothing labelled with the
//! project is left. It finds containers by compose's labels, reaches them on the bridge
//! network by their IPs (as the host can on Linux), and drives traffic into loadgen's app,
//! which calls front → middle → back through the mesh.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::client::{self, Reply};
use crate::{fresh_binaries, wait};

/// The app port of every sample app in the project, and loadgen's entry for traffic.
pub const APP_PORT: u16 = 8080;
/// How long `up` may take until the mesh answers end to end.
pub const UP_TIMEOUT: Duration = Duration::from_secs(90);

/// Which of the project's compose files are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `docker-compose.yml` alone: apps call their proxy's outbound listener.
    Explicit,
    /// With `docker-compose.transparent.yml`: `seam-proxy init` and apps that call
    /// `http://front:8080` with no proxy setting.
    Transparent,
}

/// The compose command this machine has: the `docker compose` plugin, else docker-compose.
pub fn compose_command() -> anyhow::Result<Vec<&'static str>> {
    static FOUND: OnceLock<Result<Vec<&'static str>, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let works = |program: &str, args: &[&str]| {
                std::process::Command::new(program)
                    .args(args)
                    .output()
                    .is_ok_and(|output| output.status.success())
            };
            if works("docker", &["compose", "version"]) {
                Ok(vec!["docker", "compose"])
            } else if works("docker-compose", &["version"]) {
                Ok(vec!["docker-compose"])
            } else {
                Err(
                    "neither `docker compose` nor `docker-compose` runs here: the compose \
                     tests need Docker and a compose tool (Debian: apt-get install -y \
                     docker.io docker-compose)"
                        .to_owned(),
                )
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `deploy/compose`, where the compose files, mesh files and tokens are.
pub fn compose_dir() -> PathBuf {
    fresh_binaries::workspace().join("deploy").join("compose")
}

/// The image tag the tests build: one per checkout, so two checkouts on one machine do
/// not run each other's binaries, and rebuilt (not added to) on every run.
fn image_tag() -> String {
    let path = fresh_binaries::workspace();
    let hash = path
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("seam:test-{:012x}", hash & 0xffff_ffff_ffff)
}

/// Builds the image from this tree's debug binaries, once per test process.
pub fn image() -> anyhow::Result<String> {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_image().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_image() -> anyhow::Result<String> {
    compose_command()?;
    fresh_binaries::ensure()?;
    let seamctl = seam_control_plane::launch::binary_path("seamctl")?;
    let bin_dir = seamctl.parent().context("seamctl has no directory")?;
    let tag = image_tag();
    let output = std::process::Command::new(compose_dir().join("build-image"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--tag")
        .arg(&tag)
        .output()
        .context("cannot run deploy/compose/build-image")?;
    if !output.status.success() {
        bail!(
            "deploy/compose/build-image failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(tag)
}

/// A free TCP port on loopback, for the control plane's published admin port: bound to
/// port 0, read, released.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A running compose project, taken down when dropped.
pub struct ComposeProject {
    name: String,
    files: Vec<PathBuf>,
    image: String,
    state_dir: tempfile::TempDir,
    admin_port: u16,
    down: bool,
}

/// One container of a service.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub ip: Ipv4Addr,
}

impl ComposeProject {
    /// `up -d` with `extra` arguments (such as `--scale middle=3`), then waits until a
    /// request through loadgen walks the whole chain.
    pub async fn up(profile: Profile, extra: &[&str]) -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let image = image()?;
        let dir = compose_dir();
        let mut files = vec![dir.join("docker-compose.yml")];
        if profile == Profile::Transparent {
            files.push(dir.join("docker-compose.transparent.yml"));
        }
        let project = Self {
            name: format!(
                "seam-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ),
            files,
            image,
            state_dir: tempfile::Builder::new().prefix("seam-compose-").tempdir()?,
            admin_port: free_port()?,
            down: false,
        };
        let mut args = vec!["up", "-d"];
        args.extend_from_slice(extra);
        if let Err(error) = project.compose(&args).await {
            return Err(error.context(project.logs_for_failure()));
        }
        project.wait_for_chain(UP_TIMEOUT).await?;
        Ok(project)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The control plane's admin listener, as published on the host.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port))
    }

    /// Runs the compose tool on this project; fails with its output if it fails.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        let tool = compose_command()?;
        let mut command = Command::new(tool[0]);
        command.args(&tool[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        let output = command
            .args(args)
            .env("SEAM_IMAGE", &self.image)
            .env("SEAM_STATE_DIR", self.state_dir.path())
            .env("SEAM_ADMIN_PORT", self.admin_port.to_string())
            // A little of loadgen's own traffic; the tests send theirs.
            .env("SEAM_DEMO_RATE", "2")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {}", tool.join(" ")))?;
        if !output.status.success() {
            bail!(
                "{} {} failed ({}):\n{}",
                tool.join(" "),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// The running containers of `service`, with their IPs on the project's network.
    pub async fn containers(&self, service: &str) -> anyhow::Result<Vec<Container>> {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .await?;
        let mut containers = Vec::new();
        for id in ids.split_whitespace() {
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                id,
            ])
            .await?;
            let ip = ip
                .split_whitespace()
                .next()
                .with_context(|| format!("container {id} of {service} has no IP"))?;
            containers.push(Container {
                id: id.to_owned(),
                ip: ip
                    .parse()
                    .with_context(|| format!("{ip:?} is not an IPv4 address"))?,
            });
        }
        Ok(containers)
    }

    /// loadgen's app, where the tests send their traffic.
    pub async fn loadgen(&self) -> anyhow::Result<SocketAddr> {
        let containers = self.containers("loadgen").await?;
        let loadgen = containers
            .first()
            .context("no loadgen container is running")?;
        Ok(SocketAddr::from((loadgen.ip, APP_PORT)))
    }

    /// Waits until one request through loadgen comes back 200 through all four services.
    pub async fn wait_for_chain(&self, timeout: Duration) -> anyhow::Result<Chain> {
        wait::until(
            "a request through loadgen → front → middle → back",
            timeout,
            || async {
                let loadgen = self.loadgen().await?;
                let reply = client::http1_get(loadgen, "loadgen", "/", &[]).await?;
                anyhow::ensure!(
                    reply.status == 200,
                    "{} {}",
                    reply.status,
                    reply.text().trim()
                );
                Chain::read(&reply)
            },
        )
        .await
        .with_context(|| self.logs_for_failure())
    }

    /// A sample-app process's or a proxy's host PID in `container`, from `docker top`.
    pub async fn host_pids(&self, container: &str, program: &str) -> anyhow::Result<Vec<i32>> {
        let top = docker(&["top", container, "-eo", "pid,args"]).await?;
        Ok(top
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let pid = fields.next()?.parse().ok()?;
                let args: Vec<&str> = fields.collect();
                let matches = match program {
                    "seam-proxy" => args.first().is_some_and(|arg| arg.ends_with("/seam-proxy")),
                    "sample-app" => args.get(1) == Some(&"sample-app"),
                    _ => false,
                };
                matches.then_some(pid)
            })
            .collect())
    }

    /// How many times Docker restarted `container`.
    pub async fn restart_count(&self, container: &str) -> anyhow::Result<u32> {
        let count = docker(&["inspect", "-f", "{{.RestartCount}}", container]).await?;
        count
            .trim()
            .parse()
            .with_context(|| format!("restart count {count:?}"))
    }

    /// The host's `seamctl` (this tree's build) with `args`, against this project's
    /// published admin port.
    pub async fn seamctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let seamctl = seam_control_plane::launch::binary_path("seamctl")?;
        Command::new(seamctl)
            .args(args)
            .arg("--admin")
            .arg(self.admin().to_string())
            .env_remove("SEAM_ADMIN")
            .output()
            .await
            .context("cannot run seamctl")
    }

    /// Every container's last log lines, for a failure message.
    pub fn logs_for_failure(&self) -> String {
        let Ok(tool) = compose_command() else {
            return String::new();
        };
        let mut command = std::process::Command::new(tool[0]);
        command.args(&tool[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        match command
            .args(["logs", "--no-color", "--tail", "15"])
            .env("SEAM_IMAGE", &self.image)
            .env("SEAM_STATE_DIR", self.state_dir.path())
            .env("SEAM_ADMIN_PORT", self.admin_port.to_string())
            .output()
        {
            Ok(output) => format!(
                "the project's logs:\n{}",
                String::from_utf8_lossy(&output.stdout)
            ),
            Err(error) => format!("cannot read the project's logs: {error}"),
        }
    }

    /// `down`, then a check that no container or network of the project is left.
    pub async fn down(&mut self) -> anyhow::Result<()> {
        self.down = true;
        self.compose(&["down", "--remove-orphans", "--volumes", "--timeout", "5"])
            .await?;
        let left = leftovers(&self.name).await?;
        anyhow::ensure!(left.is_empty(), "left behind by down: {left:?}");
        Ok(())
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs_for_failure());
        }
        let Ok(tool) = compose_command() else { return };
        let mut command = std::process::Command::new(tool[0]);
        command.args(&tool[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        let outcome = command
            .args(["down", "--remove-orphans", "--volumes", "--timeout", "5"])
            .env("SEAM_IMAGE", &self.image)
            .env("SEAM_STATE_DIR", self.state_dir.path())
            .env("SEAM_ADMIN_PORT", self.admin_port.to_string())
            .output();
        match outcome {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "compose down of {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("cannot run compose down for {}: {error}", self.name),
        }
    }
}

/// Containers, networks and volumes labelled with `project`.
pub async fn leftovers(project: &str) -> anyhow::Result<Vec<String>> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut left = Vec::new();
    for kind in ["container", "network", "volume"] {
        let mut args = vec![kind, "ls", "-q", "--filter", &label];
        if kind == "container" {
            args.insert(2, "-a");
        }
        for id in docker(&args).await?.split_whitespace() {
            left.push(format!("{kind} {id}"));
        }
    }
    Ok(left)
}

/// `docker ARGS`: its stdout, or an error with its stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .await
        .context("cannot run docker")?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What one answer through loadgen says: each hop's service, instance and caller.
#[derive(Debug, Clone)]
pub struct Chain {
    pub hops: Vec<Hop>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub service: String,
    pub instance: String,
    pub caller: Option<String>,
}

impl Chain {
    /// Reads a sample app's nested answer; fails unless it walked all four services.
    pub fn read(reply: &Reply) -> anyhow::Result<Self> {
        let mut hops = Vec::new();
        let answer: Value = reply.json()?;
        let mut current = Some(&answer);
        while let Some(hop) = current.filter(|hop| hop.is_object()) {
            if let Some(error) = hop["error"].as_str() {
                bail!("a hop failed: {error}");
            }
            hops.push(Hop {
                service: hop["service"].as_str().unwrap_or_default().to_owned(),
                instance: hop["instance"].as_str().unwrap_or_default().to_owned(),
                caller: hop["caller"].as_str().map(str::to_owned),
            });
            current = hop.get("next");
        }
        let services: Vec<&str> = hops.iter().map(|hop| hop.service.as_str()).collect();
        anyhow::ensure!(
            services == ["loadgen", "front", "middle", "back"],
            "the answer walked {services:?}"
        );
        Ok(Self { hops })
    }

    /// The instance of `service` that served this request.
    pub fn instance(&self, service: &str) -> Option<&str> {
        self.hops
            .iter()
            .find(|hop| hop.service == service)
            .map(|hop| hop.instance.as_str())
    }
}

/// The distinct instances of `service` that served `replies`.
pub fn instances_of(service: &str, replies: &[Reply]) -> BTreeSet<String> {
    replies
        .iter()
        .filter_map(|reply| Chain::read(reply).ok())
        .filter_map(|chain| chain.instance(service).map(str::to_owned))
        .collect()
}
