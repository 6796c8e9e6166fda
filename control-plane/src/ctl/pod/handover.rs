//! What `seamctl pod` reads as root and hands to the proxy, which runs as the proxy uid
//! and could not read it itself: the control plane keeps `ca.pem` in its private state
//! directory (mode 0700, the file 0600), which the pod mounts read-only, and a join token
//! file (a compose secret) keeps the mode of the file it came from. The trust anchors
//! become a world-readable copy in the pod's own directory (they are public
//! certificates), and the token goes into the proxy's environment only (`SEAM_JOIN_TOKEN`,
//! never the app's), so neither is ever written anywhere the app could read it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The copy of the trust anchors the proxy reads.
pub const TRUST_ANCHORS_COPY: &str = "ca.pem";

/// What the proxy gets from the pod.
#[derive(Debug)]
pub struct Handover {
    pub trust_anchors: PathBuf,
    pub join_token: String,
}

/// Reads `join_token_file` and copies `trust_anchors` into `work_dir`, readable by all.
/// Done before every start of the proxy, so a restarted proxy sees a rotated bundle.
pub fn prepare(
    trust_anchors: &Path,
    join_token_file: &Path,
    work_dir: &Path,
) -> anyhow::Result<Handover> {
    let join_token = fs::read_to_string(join_token_file)
        .with_context(|| {
            format!(
                "cannot read the join token from {}",
                join_token_file.display()
            )
        })?
        .trim()
        .to_owned();
    if join_token.is_empty() {
        bail!("the join token in {} is empty", join_token_file.display());
    }
    let bundle = fs::read(trust_anchors).with_context(|| {
        format!(
            "cannot read the trust anchors from {} (is the control plane's state directory mounted, and has it started once?)",
            trust_anchors.display()
        )
    })?;
    if !bundle
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
    {
        bail!("{} holds no PEM certificate", trust_anchors.display());
    }
    fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    fs::set_permissions(work_dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot open up {}", work_dir.display()))?;
    let copy = work_dir.join(TRUST_ANCHORS_COPY);
    let temporary = work_dir.join(format!("{TRUST_ANCHORS_COPY}.tmp"));
    fs::write(&temporary, &bundle)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot open up {}", temporary.display()))?;
    fs::rename(&temporary, &copy).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(Handover {
        trust_anchors: copy,
        join_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn private_files_become_a_readable_copy_and_a_trimmed_token() {
        let dir = tempfile::tempdir().unwrap();
        let (anchors, token) = (dir.path().join("ca.pem"), dir.path().join("token"));
        fs::write(&anchors, CERT).unwrap();
        fs::set_permissions(&anchors, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&token, "s3cret\n").unwrap();
        let work = dir.path().join("pod");

        let handover = prepare(&anchors, &token, &work).unwrap();
        assert_eq!(handover.join_token, "s3cret");
        assert_eq!(fs::read_to_string(&handover.trust_anchors).unwrap(), CERT);
        let mode = fs::metadata(&handover.trust_anchors)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn missing_or_empty_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (anchors, token) = (dir.path().join("ca.pem"), dir.path().join("token"));
        let work = dir.path().join("pod");
        fs::write(&token, " \n").unwrap();
        let error = format!("{:#}", prepare(&anchors, &token, &work).unwrap_err());
        assert!(
            error.contains("join token") && error.contains("empty"),
            "{error}"
        );

        fs::write(&token, "s3cret").unwrap();
        let error = format!("{:#}", prepare(&anchors, &token, &work).unwrap_err());
        assert!(error.contains("ca.pem"), "{error}");

        fs::write(&anchors, "not a certificate").unwrap();
        let error = format!("{:#}", prepare(&anchors, &token, &work).unwrap_err());
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
