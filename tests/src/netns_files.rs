//! Per-namespace `/etc` files: `ip netns exec NAME` bind-mounts each file of
//! `/etc/netns/NAME/` over its namesake in `/etc` for the command it runs, so a process
//! started that way reads a hosts file (or resolv.conf) the test owns, and the host's own
//! `/etc` is never touched. The directory is removed on drop, even when the test panics
//! (and `/etc/netns` too, if this made it and it is left empty).
//! A file is rewritten in place, never replaced by rename: the bind mount holds the inode.

use std::path::PathBuf;

use anyhow::Context;

use crate::netns::NetNs;

/// Where `ip netns exec` looks for a namespace's files.
const NETNS_ETC: &str = "/etc/netns";

/// `/etc/netns/NAME/` for one namespace, removed on drop.
#[derive(Debug)]
pub struct NetnsFiles {
    dir: PathBuf,
    /// Whether `/etc/netns` was made here.
    made_parent: bool,
}

impl NetnsFiles {
    /// Creates `/etc/netns/NAME/` for `namespace` (it must not exist yet).
    pub fn create(namespace: &NetNs) -> anyhow::Result<Self> {
        let dir = PathBuf::from(NETNS_ETC).join(namespace.name());
        let made_parent = !std::path::Path::new(NETNS_ETC).exists();
        std::fs::create_dir_all(NETNS_ETC).with_context(|| format!("cannot create {NETNS_ETC}"))?;
        // Made before the directory, so a failure below still cleans up the parent.
        let files = Self { dir, made_parent };
        std::fs::create_dir(&files.dir)
            .with_context(|| format!("cannot create {}", files.dir.display()))?;
        Ok(files)
    }

    /// Writes `/etc/netns/NAME/<file>` in place (`hosts`, `resolv.conf`). A file must
    /// exist before the command that is to see it starts.
    pub fn write(&self, file: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Drop for NetnsFiles {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {err}", self.dir.display());
        }
        if self.made_parent {
            // Fails, harmlessly, while another namespace's files are there.
            let _ = std::fs::remove_dir(NETNS_ETC);
        }
    }
}
