//! Making sure the tests and the benchmark run the binaries of the tree as it is now. They
//! start `seam-proxy`, `seam-control-plane` and `seamctl` from `target/`, but `cargo test`
//! and `cargo run --bin seam-bench` build only their own targets: after an edit they would
//! silently run the old binaries. So the first use in each process builds them, with
//! `cargo build` in the profile the running binary was built in (a no-op when nothing
//! changed). Run outside cargo (no `CARGO` in the environment), it checks instead that
//! every binary is newer than every source it is built from, and fails naming the stale
//! binary and the newer source. With `SEAM_BIN_DIR` set (binaries of another build, on
//! purpose) it does neither.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, bail};

/// The binaries the tests start, and the packages they come from.
const BINARIES: [&str; 3] = ["seam-proxy", "seam-control-plane", "seamctl"];
const PACKAGES: [&str; 2] = ["seam-proxy", "seam-control-plane"];
/// What the binaries are built from, relative to the workspace root.
const SOURCES: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    "proto",
    "proxy/src",
    "proxy/Cargo.toml",
    "control-plane/src",
    "control-plane/Cargo.toml",
];

/// Builds (under cargo) or checks (outside it) the Seam binaries, once per process.
pub fn ensure() -> anyhow::Result<()> {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    OUTCOME
        .get_or_init(|| {
            if std::env::var_os("SEAM_BIN_DIR").is_some() {
                return Ok(());
            }
            let outcome = match std::env::var_os("CARGO") {
                Some(cargo) => build(Path::new(&cargo)),
                None => binary_dir().and_then(|dir| check_fresh(&dir)),
            };
            outcome.map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// The profile directory the running binary was built in (`target/debug` for tests,
/// whose binaries sit one level down in `deps/`).
fn binary_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe.parent().context("the executable has no directory")?;
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

fn build(cargo: &Path) -> anyhow::Result<()> {
    let profile = binary_dir()?
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut command = std::process::Command::new(cargo);
    // Variables cargo set for the running crate would reach the build scripts of the
    // nested build, which would then rerun, and so would the outer cargo's next build.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| key_text.starts_with(prefix))
        {
            command.env_remove(&key);
        }
    }
    command.current_dir(workspace()).arg("build").arg("--bins");
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", cargo.display()))?;
    if !output.status.success() {
        bail!(
            "building the Seam binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Fails if a binary in `dir` is missing or older than one of its sources.
fn check_fresh(dir: &Path) -> anyhow::Result<()> {
    let root = workspace();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for source in SOURCES {
        newest_file(&root.join(source), &mut newest)?;
    }
    for name in BINARIES {
        let binary = dir.join(name);
        let built = std::fs::metadata(&binary)
            .and_then(|meta| meta.modified())
            .with_context(|| {
                format!(
                    "{} is missing: run `cargo build --workspace` first",
                    binary.display()
                )
            })?;
        if let Some((changed, source)) = &newest
            && changed > &built
        {
            bail!(
                "{} is older than {}: run `cargo build --workspace`, or run the tests \
                 with `cargo test`, which builds them",
                binary.display(),
                source.display()
            );
        }
    }
    Ok(())
}

fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            newest_file(&entry?.path(), newest)?;
        }
    } else {
        let modified = meta.modified()?;
        if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
            *newest = Some((modified, path.to_path_buf()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_older_than_a_source_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in BINARIES {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let err = check_fresh(dir.path()).unwrap_err().to_string();
        assert!(err.contains("seam-proxy is older than"), "{err}");

        std::fs::remove_file(dir.path().join("seamctl")).unwrap();
        for name in ["seam-proxy", "seam-control-plane"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let err = check_fresh(dir.path()).unwrap_err().to_string();
        assert!(err.contains("seamctl is missing"), "{err}");
    }
}
