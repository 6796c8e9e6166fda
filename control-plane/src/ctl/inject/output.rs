//! Where inject writes, and the writing: the meshed compose file (by default
//! `docker-compose.seam.yml` beside the input, so the input's relative paths — build
//! contexts, bind mounts, `env_file` — mean the same), and beside it `seam/mesh.yaml` and
//! `seam/secrets/seam-token-<service>`. A join token already on disk is kept, so a second
//! run writes the same bytes; a new one is random. Each file is replaced whole (written
//! aside, then renamed), so docker-compose or the control plane never reads half of one.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::sidecar::secret_of;

/// The default name of the meshed compose file, beside the input.
pub const DEFAULT_OUTPUT: &str = "docker-compose.seam.yml";

/// The files one run writes.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub compose: PathBuf,
    pub mesh_file: PathBuf,
    pub secrets: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct WriteError {
    path: PathBuf,
    action: &'static str,
    #[source]
    source: std::io::Error,
}

fn failed(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_owned();
    move |source| WriteError {
        path,
        action,
        source,
    }
}

impl Layout {
    /// The files for input `input`, with the compose file at `output` if given.
    pub fn new(input: &Path, output: Option<&Path>) -> Self {
        let compose =
            output.map_or_else(|| input.with_file_name(DEFAULT_OUTPUT), Path::to_path_buf);
        let beside = compose.parent().unwrap_or(Path::new("")).join("seam");
        Self {
            compose,
            mesh_file: beside.join("mesh.yaml"),
            secrets: beside.join("secrets"),
        }
    }

    /// The join token of each service: the one on disk, else a new one written there.
    pub fn tokens<'a>(
        &self,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, WriteError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.secrets)
            .map_err(failed(&self.secrets, "cannot make the secrets directory"))?;
        let mut tokens = Vec::new();
        for service in services {
            let path = self.secrets.join(secret_of(service));
            let token = match fs::read_to_string(&path) {
                Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
                Ok(_) => new_token(&path)?,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => new_token(&path)?,
                Err(err) => return Err(failed(&path, "cannot read the join token")(err)),
            };
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// Writes the mesh file and the compose file.
    pub fn write(&self, compose: &str, mesh_file: &str) -> Result<(), WriteError> {
        replace(&self.mesh_file, mesh_file, 0o644)?;
        replace(&self.compose, compose, 0o644)
    }
}

/// A random token, written to `path` readable by its owner only (root in the sidecar,
/// which hands it to the proxy).
fn new_token(path: &Path) -> Result<String, WriteError> {
    let token = format!("{:032x}", rand::random::<u128>());
    replace(path, &format!("{token}\n"), 0o600)?;
    Ok(token)
}

fn replace(path: &Path, text: &str, mode: u32) -> Result<(), WriteError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = PathBuf::from(aside);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&aside)
        .map_err(failed(&aside, "cannot write"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed(&aside, "cannot write"))?;
    fs::rename(&aside, path).map_err(failed(path, "cannot replace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_beside_the_compose_file_written() {
        assert_eq!(
            Layout::new(Path::new("app/docker-compose.yml"), None),
            Layout {
                compose: "app/docker-compose.seam.yml".into(),
                mesh_file: "app/seam/mesh.yaml".into(),
                secrets: "app/seam/secrets".into(),
            }
        );
        let elsewhere = Layout::new(Path::new("compose.yaml"), Some(Path::new("out/meshed.yml")));
        assert_eq!(elsewhere.mesh_file, Path::new("out/seam/mesh.yaml"));
    }

    #[test]
    fn tokens_are_kept_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&dir.path().join("docker-compose.yml"), None);
        let first = layout.tokens(["api", "db"]).unwrap();
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1]);
        assert_eq!(
            layout.tokens(["db", "api"]).unwrap(),
            [first[1].clone(), first[0].clone()]
        );
        let written = fs::read_to_string(layout.secrets.join("seam-token-api")).unwrap();
        assert_eq!(written.trim(), first[0]);
    }
}
