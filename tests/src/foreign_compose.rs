//! A compose project that was not written for Seam, meshed with `seamctl inject` and run
//! with the real docker-compose: the fixture's images, built from what the host has (no
//! registry: `FROM scratch` with Debian's static busybox, and with Debian's
//! `redis-server` and the libraries `ldd` names), the Seam image, and a running project
//! that is always taken down, even when a test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// The fixture's images: tags no real image has.
pub const BUSYBOX_IMAGE: &str = "seam-fixture/busybox:1";
pub const REDIS_IMAGE: &str = "seam-fixture/redis:7";
const BUSYBOX: &str = "/bin/busybox";

/// Runs `command`, failing with its output unless it succeeds.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// The compose command: the `docker compose` plugin if installed, else `docker-compose`.
pub fn compose_command() -> anyhow::Result<Command> {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if plugin.is_ok_and(|output| output.status.success()) {
        let mut command = Command::new("docker");
        command.arg("compose");
        return Ok(command);
    }
    let standalone = Command::new("docker-compose").arg("version").output();
    if standalone.is_ok_and(|output| output.status.success()) {
        return Ok(Command::new("docker-compose"));
    }
    bail!("neither `docker compose` nor `docker-compose` runs here; install docker-compose")
}

/// Builds the Seam image (`SEAM_IMAGE`, else `seam:dev`) from the binaries the tests run,
/// with `deploy/compose/build-image`; returns its tag.
pub fn seam_image() -> anyhow::Result<String> {
    crate::fresh_binaries::ensure()?;
    let tag = std::env::var("SEAM_IMAGE").unwrap_or_else(|_| "seam:dev".to_owned());
    let seamctl = seam_control_plane::launch::binary_path("seamctl")?;
    let bin_dir = seamctl.parent().context("seamctl has a directory")?;
    let script = workspace().join("deploy/compose/build-image");
    run(Command::new(&script)
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(["--tag", &tag]))?;
    Ok(tag)
}

/// Builds the fixture's two images from the host's busybox and redis-server.
pub fn fixture_images() -> anyhow::Result<()> {
    let missing = |what: &str| {
        anyhow::anyhow!(
            "{what} is missing: install Debian's busybox-static and redis-server \
             (apt-get install -y busybox-static redis-server), which the fixture's images \
             are built from"
        )
    };
    if !Path::new(BUSYBOX).is_file() {
        return Err(missing(BUSYBOX));
    }
    let redis = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .ok_or_else(|| missing("redis-server"))?
        .canonicalize()
        .context("cannot resolve redis-server")?;

    let busybox = tempfile::tempdir()?;
    std::fs::copy(BUSYBOX, busybox.path().join("busybox"))?;
    std::fs::write(
        busybox.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )?;
    build(busybox.path(), BUSYBOX_IMAGE)?;

    // redis-server and redis-check-rdb are one binary that tells which it is by its
    // name, so it is copied in as redis-server.
    let context = tempfile::tempdir()?;
    let root = context.path().join("root");
    for dir in ["usr/bin", "data", "tmp"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy(&redis, root.join("usr/bin/redis-server"))?;
    let ldd = run(Command::new("ldd").arg(&redis))?;
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let inside = root.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().context("a library has a directory")?)?;
        std::fs::copy(library, &inside).with_context(|| format!("cannot copy {library}"))?;
    }
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\n",
    )?;
    build(context.path(), REDIS_IMAGE)
}

fn build(context: &Path, tag: &str) -> anyhow::Result<()> {
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context))
    .map(|_| ())
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// Copies the directory `from` into `to`, keeping file modes (the fixture's CGI script
/// must stay executable).
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A free TCP port on loopback, from the OS.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A compose project brought up from `file` under a name of its own; taken down with its
/// volumes and orphans by [`Project::down`], or when dropped (a failed test).
pub struct Project {
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    is_up: bool,
}

impl Project {
    /// `docker-compose -p <unique> -f file up -d` with `env` set.
    pub fn up(file: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let project = Self {
            name: format!("seaminject{}x{nanos}", std::process::id()),
            file: file.to_owned(),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect(),
            // Taken down even if `up` fails half way.
            is_up: true,
        };
        run(project.command()?.args(["up", "-d"]))?;
        Ok(project)
    }

    fn command(&self) -> anyhow::Result<Command> {
        let mut command = compose_command()?;
        command
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        Ok(command)
    }

    /// `restart` of one service's containers.
    pub fn restart(&self, service: &str) -> anyhow::Result<()> {
        run(self.command()?.args(["restart", "-t", "2", service])).map(|_| ())
    }

    /// The logs of `service` so far.
    pub fn logs(&self, service: &str) -> anyhow::Result<String> {
        let output = run(self.command()?.args(["logs", "--no-color", service]))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Project {
    /// Takes the project down (containers, networks, volumes) and checks that no container
    /// of it is left.
    pub fn down(mut self) -> anyhow::Result<()> {
        self.take_down()?;
        let label = format!("label=com.docker.compose.project={}", self.name);
        let left = run(Command::new("docker").args(["ps", "-a", "-q", "--filter", &label]))?;
        let left = String::from_utf8_lossy(&left.stdout);
        if !left.trim().is_empty() {
            bail!("containers of {} are left after down: {left}", self.name);
        }
        Ok(())
    }

    fn take_down(&mut self) -> anyhow::Result<()> {
        if !self.is_up {
            return Ok(());
        }
        run(self
            .command()?
            .args(["down", "--remove-orphans", "--volumes", "-t", "5"]))?;
        self.is_up = false;
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(err) = self.take_down() {
            eprintln!("cannot take down compose project {}: {err:#}", self.name);
        }
    }
}
