//! The scenario most tests start from: service `a`'s proxy calls service `b`'s proxy,
//! which fronts an echo app named `b`. The mesh lists both services with their real
//! inbound addresses once the proxies are up; both proxies are ready.
//!
//! ```text
//! test client ──► proxy a (outbound) ══mTLS══► proxy b (inbound) ──► echo "b"
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use futures_util::future::try_join_all;

use crate::mesh::TestMesh;
use crate::proxy::{JoinTokenVia, ProxyOptions, TestProxy};
use crate::upstream::EchoServer;

/// A ready two-proxy mesh (fields drop in order: proxies before the control plane).
pub struct TwoHop {
    pub a: TestProxy,
    pub b: TestProxy,
    /// The app behind proxy `a` (it receives nothing in most tests).
    pub app_a: EchoServer,
    /// The app behind proxy `b`.
    pub app_b: EchoServer,
    pub mesh: TestMesh,
}

impl TwoHop {
    /// Starts it all with default proxy options (`a` gets its token from the
    /// environment, `b` from a file, so both ways are used).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|options| options).await
    }

    /// Starts it all; `customize` may change each proxy's options (called for `a`, then `b`).
    pub async fn start_with(
        customize: impl Fn(ProxyOptions) -> ProxyOptions,
    ) -> anyhow::Result<Self> {
        Self::start_in_with(TestMesh::start(&["a", "b"]).await?, customize).await
    }

    /// Starts `a` and `b` with default options in a mesh the test made itself (one with
    /// more services, or control-plane flags such as `--cert-ttl`).
    pub async fn start_in(mesh: TestMesh) -> anyhow::Result<Self> {
        Self::start_in_with(mesh, |options| options).await
    }

    async fn start_in_with(
        mesh: TestMesh,
        customize: impl Fn(ProxyOptions) -> ProxyOptions,
    ) -> anyhow::Result<Self> {
        let app_a = EchoServer::start("a").await?;
        let app_b = EchoServer::start("b").await?;
        let (a, b) = tokio::try_join!(
            mesh.start_proxy_with(customize(ProxyOptions::new("a", app_a.addr()))),
            mesh.start_proxy_with(customize(
                ProxyOptions::new("b", app_b.addr()).join_token_via(JoinTokenVia::File)
            )),
        )
        .context("starting proxies a and b")?;
        mesh.set_endpoints(&[("a", &[a.inbound()]), ("b", &[b.inbound()])])
            .await
            .context("listing the proxies in the mesh file")?;
        Ok(Self {
            a,
            b,
            app_a,
            app_b,
            mesh,
        })
    }
}

/// Service `a`'s proxy in front of an echo app, and one proxy of `service` in front of each
/// of `apps` (in their order), in a mesh of the two services; all proxies start together.
/// The mesh does not list the endpoints yet: tests do, often with a policy. Fields drop in
/// order: proxies before the control plane.
pub struct CallerAndEndpoints<const N: usize> {
    pub a: TestProxy,
    pub endpoints: [TestProxy; N],
    /// The app behind proxy `a` (it receives nothing).
    pub app_a: EchoServer,
    pub mesh: TestMesh,
}

impl<const N: usize> CallerAndEndpoints<N> {
    pub async fn start(service: &str, apps: [SocketAddr; N]) -> anyhow::Result<Self> {
        let mesh = TestMesh::start(&["a", service]).await?;
        let app_a = EchoServer::start("a").await?;
        let (a, endpoints) = tokio::try_join!(
            mesh.start_proxy("a", app_a.addr()),
            try_join_all(apps.map(|app| mesh.start_proxy(service, app))),
        )
        .context("starting the proxies")?;
        let Ok(endpoints) = endpoints.try_into() else {
            unreachable!("one proxy per app");
        };
        Ok(Self {
            a,
            endpoints,
            app_a,
            mesh,
        })
    }

    /// As [`CallerAndEndpoints::start`], with the mesh listing the endpoints (no policy).
    pub async fn start_listed(service: &str, apps: [SocketAddr; N]) -> anyhow::Result<Self> {
        let started = Self::start(service, apps).await?;
        let inbounds = started.endpoints.each_ref().map(TestProxy::inbound);
        started
            .mesh
            .set_endpoints(&[(service, &inbounds)])
            .await
            .context("listing the endpoints")?;
        Ok(started)
    }
}
