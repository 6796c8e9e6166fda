//! Linux network namespaces for system tests: each "pod" of a transparent-mode test is a
//! namespace of its own, made with `ip netns add`, named `seamt-<pid>-<n>-<label>` and
//! deleted when dropped, even when the test panics. The first namespace a test process
//! makes also removes those that earlier test processes left behind (a process killed
//! before its drops ran): the pid in the name tells whose they were.
//!
//! The kit never touches the namespace the tests run in: it only adds and deletes named
//! namespaces and runs commands inside them (`ip -n NAME ...`, `ip netns exec NAME ...`).
//! The test process itself reaches inside by creating sockets on a short-lived thread
//! that has entered the namespace (`setns`): a socket belongs to the namespace it was
//! created in, wherever it is used from afterwards. Everything here needs root.

use std::ffi::OsStr;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sched::CloneFlags;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// Every namespace the kit makes is named with this prefix, then the test process's pid.
pub const NAME_PREFIX: &str = "seamt-";

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// How long a connection made inside a namespace may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails unless the test runs as root, with a message saying why root is needed. System
/// tests call it (through [`NetNs::create`]) first, so they fail at once, never skip.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "needs root: network namespaces, veth pairs and iptables rules need \
             CAP_SYS_ADMIN and CAP_NET_ADMIN; run the system tests as root (CI does)"
        );
    }
    Ok(())
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Makes a namespace named `seamt-<pid>-<n>-<label>` with `lo` up. `label` says what
    /// it is for (`pod-a`, `switch`) and shows in `ip netns list` while the test runs.
    pub fn create(label: &str) -> anyhow::Result<Self> {
        require_root()?;
        static LEFTOVERS: Once = Once::new();
        LEFTOVERS.call_once(remove_leftovers);
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{number}-{label}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let namespace = Self { name };
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs
    /// the program itself, so killing the child kills the program). The child is killed
    /// when dropped.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Like [`NetNs::command`], as user `uid` and group `gid` with no supplementary groups
    /// (`setpriv`), as a process of another user in the pod would run.
    pub fn command_as(&self, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
        let mut command = self.command("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(program);
        command
    }

    /// Runs `program args` inside the namespace to completion; fails unless it succeeds,
    /// with what it printed. Returns its stdout.
    pub async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .await
            .with_context(|| format!("cannot run {program} in {}", self.name))?;
        if !output.status.success() {
            bail!(
                "`{program} {}` in {} exited with {}: {}",
                args.join(" "),
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The namespace's rules as `tool` (`iptables-nft-save`, `ip6tables-legacy-save`, ...)
    /// prints them, without what changes between two identical rule sets: the comment
    /// lines (dates) and the packet counters.
    pub async fn iptables_save(&self, tool: &str) -> anyhow::Result<String> {
        Ok(normalise_save(&self.run(tool, &[]).await?))
    }

    /// A TCP listener bound to `addr` inside the namespace, for the test process to accept on.
    pub async fn bind_tcp(&self, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        let listener = self
            .in_namespace(move || {
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .await
            .with_context(|| format!("cannot bind {addr} in {}", self.name))?;
        Ok(TcpListener::from_std(listener)?)
    }

    /// A TCP connection to `addr` made from inside the namespace, so it goes through the
    /// namespace's routes and iptables rules like a connection the pod's app opens.
    pub async fn connect_tcp(&self, addr: SocketAddr) -> anyhow::Result<TcpStream> {
        let stream = self
            .in_namespace(move || {
                let stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })
            .await
            .with_context(|| format!("cannot connect to {addr} from {}", self.name))?;
        Ok(TcpStream::from_std(stream)?)
    }

    /// Runs `work` on a new thread that has entered the namespace, and hands back what it
    /// made. A fresh thread each time: a thread that entered a namespace stays in it, so
    /// no pooled thread (such as tokio's blocking pool) may be the one to enter.
    async fn in_namespace<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.path();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                let made = enter_namespace(&path).and_then(|()| Ok(work()?));
                // The receiver is gone only if the test stopped waiting.
                let _ = sender.send(made);
            })
            .context("cannot start a thread to enter the namespace")?;
        receiver
            .await
            .context("the thread inside the namespace panicked")?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {err:#}", self.name);
        }
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter_namespace(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter {}", path.display()))
}

/// Runs `ip <args>` to completion (it is quick) and returns its stdout.
fn run_ip(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Deletes the namespaces of test processes that are gone, after killing whatever they
/// left running inside. Failures are reported, not fatal: they belong to an earlier run.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = owner_pid(&name) else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let pids = run_ip(&["netns", "pids", &name]).unwrap_or_default();
        for pid in pids.split_whitespace().filter_map(|pid| pid.parse().ok()) {
            // Already gone is as good as killed.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Err(err) = run_ip(&["netns", "del", &name]) {
            eprintln!("cannot delete leftover network namespace {name}: {err:#}");
        }
    }
}

/// The pid in a kit namespace's name (`seamt-<pid>-...`), or `None` for other names.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// `iptables-save` output without comment lines and with chain counters cut off
/// (`:OUTPUT ACCEPT [12:720]` becomes `:OUTPUT ACCEPT`).
pub fn normalise_save(save: &str) -> String {
    save.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match line.rsplit_once(" [") {
            Some((head, counters)) if line.starts_with(':') && counters.ends_with(']') => head,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_owner_from_kit_names_only() {
        assert_eq!(owner_pid("seamt-4242-3-pod-a"), Some(4242));
        assert_eq!(owner_pid("seamt-17-1-switch"), Some(17));
        assert_eq!(owner_pid("seamt-x-1-switch"), None);
        assert_eq!(owner_pid("cni-1234-5678"), None);
        assert_eq!(owner_pid("seamt-"), None);
    }

    #[test]
    fn normalised_saves_drop_dates_and_counters_only() {
        let save = "# Generated by iptables-save v1.8.9 on Wed Dec  2 22:04:48 2026\n\
                    *nat\n:PREROUTING ACCEPT [12:720]\n:SEAM_OUTPUT - [0:0]\n\
                    -A OUTPUT -m comment --comment \"seam: [x]\" -j SEAM_OUTPUT\nCOMMIT\n\
                    # Completed on Wed Dec  2 22:04:48 2026\n";
        assert_eq!(
            normalise_save(save),
            "*nat\n:PREROUTING ACCEPT\n:SEAM_OUTPUT -\n\
             -A OUTPUT -m comment --comment \"seam: [x]\" -j SEAM_OUTPUT\nCOMMIT\n"
        );
    }
}
