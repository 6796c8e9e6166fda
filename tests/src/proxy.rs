//! A running `seam-proxy` in a test: its listeners, its admin endpoints (`/ready`,
//! `/config`, `/identity`, `/metrics`), its stderr log, and waits on its state, such as
//! "the subscription to `b` lists two endpoints".

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use seam_control_plane::launch::{self, SeamProcess};
use serde_json::Value;

use crate::logs::ChildLog;
use crate::mesh;
use crate::wait;

/// How the proxy is handed its join token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinTokenVia {
    /// The `SEAM_JOIN_TOKEN` environment variable.
    Env,
    /// A file named by `--join-token-file`.
    File,
}

/// What to start a proxy with.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub service: String,
    pub app: SocketAddr,
    /// `None`: the mesh's right token for the service.
    pub join_token: Option<String>,
    pub join_token_via: JoinTokenVia,
    /// `--shutdown-grace`, when set.
    pub shutdown_grace: Option<String>,
    /// Pass every setting as a `SEAM_<FLAG>` environment variable instead of a flag.
    pub settings_via_env: bool,
    /// More flags, passed as given (telemetry settings, for instance).
    pub extra_args: Vec<String>,
}

impl ProxyOptions {
    pub fn new(service: &str, app: SocketAddr) -> Self {
        Self {
            service: service.to_string(),
            app,
            join_token: None,
            join_token_via: JoinTokenVia::Env,
            shutdown_grace: None,
            settings_via_env: false,
            extra_args: Vec::new(),
        }
    }

    pub fn join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_string());
        self
    }

    pub fn join_token_via(mut self, via: JoinTokenVia) -> Self {
        self.join_token_via = via;
        self
    }

    pub fn settings_via_env(mut self) -> Self {
        self.settings_via_env = true;
        self
    }

    /// Adds flags to the proxy's command line.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args
            .extend(args.iter().map(|arg| (*arg).to_string()));
        self
    }

    pub fn shutdown_grace(mut self, grace: &str) -> Self {
        self.shutdown_grace = Some(grace.to_string());
        self
    }
}

/// A running proxy.
pub struct TestProxy {
    service: String,
    process: SeamProcess,
    log: ChildLog,
}

impl TestProxy {
    pub(crate) fn new(service: String, process: SeamProcess, log: ChildLog) -> Self {
        Self {
            service,
            process,
            log,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The SPIFFE id this proxy's certificate should carry.
    pub fn spiffe_id(&self) -> String {
        mesh::spiffe_id(&self.service)
    }

    pub fn inbound(&self) -> SocketAddr {
        self.process.addr("inbound")
    }

    pub fn outbound(&self) -> SocketAddr {
        self.process.addr("outbound")
    }

    pub fn admin(&self) -> SocketAddr {
        self.process.addr("admin")
    }

    /// The local listener of `--tcp-upstream ADDR=service`.
    pub fn tcp_upstream(&self, service: &str) -> SocketAddr {
        self.process.addr(&format!("tcp:{service}"))
    }

    pub fn log(&self) -> &ChildLog {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The lines the proxy printed on stdout after its listening line (access logs).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout_lines()
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.process
            .wait_ready(timeout)
            .await
            .with_context(|| format!("{} log:\n{}", self.process.name(), self.log.tail()))
    }

    /// The status `/ready` answers now.
    pub async fn ready_status(&self) -> anyhow::Result<u16> {
        Ok(launch::http_get(self.admin(), "/ready").await?.0)
    }

    /// `GET <path>` on the admin listener, parsed as JSON.
    pub async fn admin_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = launch::http_get(self.admin(), path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path} is not JSON: {body}"))
    }

    /// `GET /config`.
    pub async fn config(&self) -> anyhow::Result<Value> {
        self.admin_json("/config").await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = launch::http_get(self.admin(), "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until `/config` shows the subscription to `authority` in state `found` with
    /// exactly `count` endpoints, and returns their addresses.
    pub async fn wait_endpoints(
        &self,
        authority: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        wait::until(
            &format!("{} sees {count} endpoint(s) for {authority}", self.service),
            timeout,
            || async {
                let config = self.config().await?;
                let subscription = &config["subscriptions"][authority];
                let endpoints: Vec<String> = subscription["endpoints"]
                    .as_array()
                    .map(|endpoints| {
                        endpoints
                            .iter()
                            .filter_map(|endpoint| endpoint["address"].as_str())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if subscription["state"] != "found" || endpoints.len() != count {
                    bail!("/config: {config}");
                }
                Ok(endpoints)
            },
        )
        .await
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> anyhow::Result<()> {
        self.process.terminate()
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(timeout, self.process.wait())
            .await
            .with_context(|| format!("{} did not exit within {timeout:?}", self.process.name()))?
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.log.print_if_panicking();
    }
}
