//! `--publish-trust-bundle FILE`: keeps a copy of the mesh's trust bundle (certificates
//! only, readable by all) at FILE, written at start and again whenever the bundle changes
//! (root rotation). Proxies that cannot be given the state directory, which also holds
//! the CA's private key, mount the directory of this file instead: the compose projects
//! do, so no app container ever sees `ca.key`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::ca::{CertificateAuthority, store};

/// Writes the bundle now (an error here stops the control plane at start), then follows
/// its changes in a task; a failed later write is logged and tried again at the next one.
pub fn publish(
    ca: Arc<CertificateAuthority>,
    path: PathBuf,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut changes = ca.subscribe();
    write(&path, &ca).with_context(|| {
        format!(
            "cannot write the trust bundle to {} (--publish-trust-bundle)",
            path.display()
        )
    })?;
    Ok(tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if let Err(err) = write(&path, &ca) {
                tracing::warn!(path = %path.display(), error = %format!("{err:#}"), "cannot update the published trust bundle");
            }
        }
    }))
}

/// Replaces `path` with the CA's current bundle, creating its directory.
fn write(path: &Path, ca: &CertificateAuthority) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    store::write_public_bundle(path, &ca.trust_bundle())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn read_certificates(path: &Path) -> usize {
        fs::read_to_string(path)
            .unwrap()
            .matches("-----BEGIN CERTIFICATE-----")
            .count()
    }

    #[tokio::test]
    async fn the_copy_holds_the_bundle_only_and_follows_a_rotation() {
        let state = tempfile::tempdir().unwrap();
        let public = tempfile::tempdir().unwrap();
        let ca =
            Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
        let path = public.path().join("trust").join("ca.pem");

        let task = publish(ca.clone(), path.clone()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert_eq!(read_certificates(&path), 1);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);

        let mut followed = ca.subscribe();
        followed.borrow_and_update();
        ca.introduce_root().unwrap();
        followed.changed().await.unwrap();
        // The publishing task saw the same change; wait for its write with a deadline.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while read_certificates(&path) != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the copy did not follow the rotation"
            );
            tokio::task::yield_now().await;
        }
        task.abort();
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_the_flag() {
        let state = tempfile::tempdir().unwrap();
        let ca =
            Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
        let blocker = state.path().join("file");
        fs::write(&blocker, "x").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let err = publish(ca, blocker.join("ca.pem")).unwrap_err();
        assert!(
            format!("{err:#}").contains("--publish-trust-bundle"),
            "{err:#}"
        );
    }
}
