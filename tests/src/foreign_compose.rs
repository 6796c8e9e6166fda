//! A compose project that was not written for Seam (tests/fixtures/foreign-compose),
//! meshed with `seamctl inject` and run with the real docker-compose: the fixture's
//! images, built from what the host has (no registry: `FROM scratch` with Debian's static
//! busybox, and with Debian's `redis-server` and the libraries `ldd` names), and a project
//! brought up from the compose file inject wrote, always taken down, failed test or not.
//! The Seam image, the compose tool and the leftover check are the `compose` kit's.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::compose::{compose_command, leftovers};

/// The fixture's images: tags no real image has.
pub const BUSYBOX_IMAGE: &str = "seam-fixture/busybox:1";
pub const REDIS_IMAGE: &str = "seam-fixture/redis:7";
const BUSYBOX: &str = "/bin/busybox";

/// The fixture project, as its authors wrote it.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/foreign-compose")
}

/// Runs `command`, failing with its output unless it succeeds.
pub async fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .await
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

/// Builds the fixture's two images from the host's busybox and redis-server.
pub async fn fixture_images() -> anyhow::Result<()> {
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
    build(busybox.path(), BUSYBOX_IMAGE).await?;

    // redis-server and redis-check-rdb are one binary that tells which it is by its
    // name, so it is copied in as redis-server.
    let context = tempfile::tempdir()?;
    let root = context.path().join("root");
    for dir in ["usr/bin", "data", "tmp"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy(&redis, root.join("usr/bin/redis-server"))?;
    let ldd = run(Command::new("ldd").arg(&redis)).await?;
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
    build(context.path(), REDIS_IMAGE).await
}

async fn build(context: &Path, tag: &str) -> anyhow::Result<()> {
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context))
    .await
    .map(|_| ())
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

/// A compose project brought up from `file` under a name of its own; taken down with its
/// volumes and orphans by [`Project::down`], or when dropped (a failed test).
pub struct Project {
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    is_up: bool,
}

impl Project {
    /// `up -d` of `file` with `env` set.
    pub async fn up(file: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let project = Self {
            name: format!("seam-inject-{}-{nanos}", std::process::id()),
            file: file.to_owned(),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect(),
            // Taken down even if `up` fails half way.
            is_up: true,
        };
        project.compose(&["up", "-d"]).await?;
        Ok(project)
    }

    fn command(&self) -> anyhow::Result<std::process::Command> {
        let tool = compose_command()?;
        let mut command = std::process::Command::new(tool[0]);
        command
            .args(&tool[1..])
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(std::process::Stdio::null());
        Ok(command)
    }

    /// Runs the compose tool on this project; fails with its output if it fails.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::from(self.command()?).args(args)).await
    }

    /// The logs of `service` so far.
    pub async fn logs(&self, service: &str) -> anyhow::Result<String> {
        let output = self.compose(&["logs", "--no-color", service]).await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Takes the project down (containers, networks, volumes) and checks nothing of it is
    /// left.
    pub async fn down(mut self) -> anyhow::Result<()> {
        self.is_up = false;
        self.compose(&["down", "--remove-orphans", "--volumes", "-t", "5"])
            .await?;
        let left = leftovers(&self.name).await?;
        anyhow::ensure!(left.is_empty(), "left behind by down: {left:?}");
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if !self.is_up {
            return;
        }
        let down = self.command().and_then(|mut command| {
            let output = command
                .args(["down", "--remove-orphans", "--volumes", "-t", "5"])
                .output()?;
            anyhow::ensure!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        });
        if let Err(err) = down {
            eprintln!("cannot take down compose project {}: {err:#}", self.name);
        }
    }
}
