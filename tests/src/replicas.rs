//! Control-plane replicas serving one mesh: several real `seam-control-plane` processes
//! started at once on the same mesh file and the same state directory (so the first
//! start races to create the CA), each on its own ports, and proxies given every
//! replica's address. A replica can be killed; the mesh file is changed and waited on
//! through the replicas still running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use seam_control_plane::launch::{self, SeamProcess};
use serde_json::Value;
use tempfile::TempDir;

use crate::logs::ChildLog;
use crate::mesh::{self, MeshService, endpoint_set, render_mesh_file, write_atomically};
use crate::proxy::TestProxy;
use crate::wait;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// One control plane process and its log; `None` once killed.
struct Replica {
    process: Option<SeamProcess>,
    log: ChildLog,
    grpc: SocketAddr,
    admin: SocketAddr,
}

/// Replicas of one control plane over a mesh file in a temporary directory.
pub struct ReplicatedMesh {
    // Field order matters for drop: the processes go before the directory they use.
    replicas: Vec<Replica>,
    services: Mutex<BTreeMap<String, MeshService>>,
    proxies_started: AtomicUsize,
    mesh_path: PathBuf,
    state_dir: PathBuf,
    dir: TempDir,
}

impl ReplicatedMesh {
    /// Writes a mesh file listing `services` with no endpoints and starts `count`
    /// replicas at once, with `extra_args` each, on an empty state directory; waits until
    /// every one is ready.
    pub async fn start(
        services: &[&str],
        count: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("seam-replicas-")
            .tempdir()?;
        let mesh_path = dir.path().join("mesh.yaml");
        let state_dir = dir.path().join("state");
        let services = mesh::services_without_endpoints(services);
        write_atomically(&mesh_path, &render_mesh_file(&services))?;
        let starts = (0..count).map(|index| {
            let (log, stderr) = ChildLog::create(
                format!("seam-control-plane #{index}"),
                dir.path().join(format!("control-plane-{index}.log")),
            )?;
            let mut command = mesh::seam_command("seam-control-plane")?;
            command
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(&state_dir)
                .arg("--mesh-file")
                .arg(&mesh_path)
                .args(extra_args);
            Ok::<_, anyhow::Error>(async move {
                let mut process =
                    SeamProcess::spawn(format!("seam-control-plane #{index}"), command, stderr)
                        .await
                        .with_context(|| format!("replica {index} log:\n{}", log.tail()))?;
                process
                    .wait_ready(READY_TIMEOUT)
                    .await
                    .with_context(|| format!("replica {index} log:\n{}", log.tail()))?;
                let (grpc, admin) = (process.addr("grpc"), process.addr("admin"));
                Ok::<_, anyhow::Error>(Replica {
                    process: Some(process),
                    log,
                    grpc,
                    admin,
                })
            })
        });
        let starts: Vec<_> = starts.collect::<anyhow::Result<_>>()?;
        let replicas = futures_util::future::try_join_all(starts).await?;
        Ok(Self {
            replicas,
            services: Mutex::new(services),
            proxies_started: AtomicUsize::new(0),
            mesh_path,
            state_dir,
            dir,
        })
    }

    /// Every replica's gRPC address, killed ones included (as a proxy is configured).
    pub fn grpc_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|replica| replica.grpc).collect()
    }

    /// The replica whose gRPC address is `grpc`.
    pub fn index_of(&self, grpc: &str) -> Option<usize> {
        self.replicas
            .iter()
            .position(|replica| replica.grpc.to_string() == grpc)
    }

    /// The trust anchors proxies are given.
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join("ca.pem")
    }

    /// SIGKILL: the replica says goodbye to no one.
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let mut process = self.replicas[index]
            .process
            .take()
            .with_context(|| format!("replica {index} is already dead"))?;
        process.kill().await
    }

    /// `GET path` on replica `index`'s admin listener, as JSON.
    pub async fn admin_json(&self, index: usize, path: &str) -> anyhow::Result<Value> {
        let (status, body) = launch::http_get(self.replicas[index].admin, path).await?;
        if status != 200 {
            bail!("replica {index}: GET {path} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path} is not JSON: {body}"))
    }

    /// `POST path` on replica `index`'s admin listener: the status and the body.
    pub async fn admin_post(&self, index: usize, path: &str) -> anyhow::Result<(u16, String)> {
        launch::http_post(self.replicas[index].admin, path).await
    }

    /// The admin addresses of the proxies replica `index` has a discovery stream with.
    pub async fn connected_proxies(&self, index: usize) -> anyhow::Result<Vec<String>> {
        let proxies = self.admin_json(index, "/proxies").await?;
        let mut admins: Vec<String> = proxies["proxies"]
            .as_array()
            .context("/proxies lists no proxies array")?
            .iter()
            .filter_map(|proxy| proxy["admin_addr"].as_str().map(str::to_string))
            .collect();
        admins.sort();
        Ok(admins)
    }

    /// Starts a proxy for `service` in front of `app`, given every replica's address
    /// (a repeated `--control-plane`), and waits until it is ready.
    pub async fn start_proxy(&self, service: &str, app: SocketAddr) -> anyhow::Result<TestProxy> {
        let number = self.proxies_started.fetch_add(1, Ordering::Relaxed) + 1;
        let label = format!("seam-proxy {service}#{number}");
        let (log, stderr) = ChildLog::create(
            label.clone(),
            self.dir
                .path()
                .join(format!("{}.log", label.replace([' ', '#'], "-"))),
        )?;
        let mut command = mesh::seam_command("seam-proxy")?;
        command
            .args(["--service", service])
            .args([
                "--inbound",
                "127.0.0.1:0",
                "--outbound",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .arg("--app")
            .arg(app.to_string())
            .arg("--trust-anchors")
            .arg(self.ca_path())
            .env("SEAM_JOIN_TOKEN", mesh::join_token(service));
        for grpc in self.grpc_addrs() {
            command.arg("--control-plane").arg(grpc.to_string());
        }
        let process = SeamProcess::spawn(label, command, stderr)
            .await
            .with_context(|| format!("proxy log:\n{}", log.tail()))?;
        let mut proxy = TestProxy::new(service.to_string(), process, log);
        proxy.wait_ready(READY_TIMEOUT).await?;
        Ok(proxy)
    }

    /// Sets the endpoints of some services in the mesh file and waits until every replica
    /// still running lists them on `/mesh`.
    pub async fn set_endpoints(&self, changes: &[(&str, &[SocketAddr])]) -> anyhow::Result<()> {
        let contents = {
            let mut services = self.services.lock();
            for (name, endpoints) in changes {
                services
                    .get_mut(*name)
                    .with_context(|| format!("service {name} is not in the test mesh"))?
                    .endpoints = endpoints.to_vec();
            }
            render_mesh_file(&services)
        };
        write_atomically(&self.mesh_path, &contents)?;
        for index in self.running() {
            wait::until(
                &format!("replica {index} applies the new mesh file"),
                RELOAD_TIMEOUT,
                || async {
                    let state = self.admin_json(index, "/mesh").await?;
                    for (name, endpoints) in changes {
                        let mut listed = endpoint_set(&state["services"][*name]["endpoints"]);
                        let mut wanted: Vec<String> =
                            endpoints.iter().map(ToString::to_string).collect();
                        listed.sort();
                        wanted.sort();
                        if listed != wanted {
                            bail!(
                                "replica {index} lists {name} endpoints {listed:?}, want {wanted:?}"
                            );
                        }
                    }
                    Ok(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The indexes of the replicas not killed.
    pub fn running(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|index| self.replicas[*index].process.is_some())
            .collect()
    }
}

impl Drop for ReplicatedMesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for replica in &self.replicas {
                replica.log.print_if_panicking();
            }
            self.dir.disable_cleanup(true);
            eprintln!("----- kept {} -----", self.dir.path().display());
        }
    }
}
