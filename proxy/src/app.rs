//! Wiring and lifecycle of the proxy: identity, discovery, the three listeners, readiness,
//! and draining on SIGTERM (stop accepting, let in-flight requests finish up to the grace
//! period, exit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::crypto::CryptoProvider;
use seam_proto::SpiffeId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::Args;
use crate::control_plane::ControlPlane;
use crate::discovery::DiscoveryClientTask;
use crate::identity::{IdentityManager, load_trust_anchors};
use crate::inbound::{self, Inbound, InboundSettings};
use crate::listeners;
use crate::metrics::Metrics;
use crate::outbound::{self, Outbound};
use crate::state::Directory;
use crate::state::endpoints::EndpointStates;
use crate::tap::serve::TapEndpoint;
use crate::telemetry::{Telemetry, TelemetryConfig};
use crate::tls::TlsState;

/// The most authorities one proxy tracks at once (a bound on what an app can make it
/// hold), half the control plane's limit per proxy so an app sending any number of Host
/// values cannot get its proxy's discovery stream closed; the idle sweep frees room.
const MAX_AUTHORITIES: usize = 5_000;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let provider = CryptoProvider::get_default()
        .context("no crypto provider installed")?
        .clone();
    let (anchors, trust_domain) = load_trust_anchors(&args.trust_anchors)?;
    let proof = args.proof()?;
    let expected = SpiffeId::workload(&trust_domain, &args.namespace, args.service_account())
        .context("--service-account (or --service) and --namespace must make a valid SPIFFE id")?;
    let tls = TlsState::new(provider.clone(), anchors);
    let control_plane = ControlPlane::new(args.control_plane.clone(), &trust_domain, tls.clone())?;
    let metrics = Arc::new(Metrics::new());
    let refusal_summaries = tokio::spawn(metrics.refusal_log.clone().run());
    let telemetry = Arc::new(Telemetry::start(
        &TelemetryConfig {
            service: args.service.clone(),
            propagation: args.trace_propagation,
            sample_ratio: args.trace_sample_ratio,
            otlp_endpoint: args.otlp_endpoint.clone(),
            access_log: args.access_log,
        },
        metrics.clone(),
    )?);

    let inbound_listeners = listeners::bind_all(&args.inbound, "--inbound")?;
    let outbound_listeners = listeners::bind_all(&args.outbound, "--outbound")?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on {} (--admin)", args.admin))?;
    let inbound_addrs = local_addrs(&inbound_listeners)?;
    let outbound_addrs = local_addrs(&outbound_listeners)?;
    let admin_addr = admin_listener.local_addr()?;
    let mut tcp_upstreams = Vec::with_capacity(args.tcp_upstreams.len());
    for upstream in &args.tcp_upstreams {
        let listener = TcpListener::bind(upstream.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--tcp-upstream)", upstream.listen))?;
        tcp_upstreams.push((listener, upstream.service.clone()));
    }

    let (certified, certified_rx) = watch::channel(false);
    let identity = tokio::spawn(
        IdentityManager {
            service: args.service_account().to_owned(),
            namespace: args.namespace.clone(),
            expected,
            proof,
            control_plane: control_plane.clone(),
            tls: tls.clone(),
            provider,
            certified,
        }
        .run(),
    );
    let certificate_expiry = metrics.certificate_expiry.clone();
    let expiry_tls = tls.clone();
    let mut expiry_watch = certified_rx.clone();
    let expiry = tokio::spawn(async move {
        while expiry_watch.changed().await.is_ok() {
            if let Some(certificate) = expiry_tls.certificate() {
                let seconds = certificate
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                certificate_expiry.set(seconds);
            }
        }
    });

    let (changes, subscription_changes) = mpsc::unbounded_channel();
    let directory = Arc::new(
        Directory::new(changes, MAX_AUTHORITIES)
            .with_refusal_counter(metrics.authorities_refused.clone()),
    );
    // Our own service's entry carries the authorization policy the inbound side enforces:
    // subscribe at once so it is known before the first caller arrives, and keep it.
    directory.pin(args.inbound_policy())?;
    let idle_sweep = tokio::spawn(crate::discovery::idle::sweep_forever(
        directory.clone(),
        args.idle_unsubscribe_after,
    ));
    let discovery_connected = Arc::new(AtomicBool::new(false));
    let (ever_connected, discovery_ever_connected) = watch::channel(false);
    let discovery = tokio::spawn(
        DiscoveryClientTask {
            control_plane: control_plane.clone(),
            directory: directory.clone(),
            subscription_changes,
            admin_addr,
            connected: discovery_connected.clone(),
            ever_connected,
            certified: certified_rx,
            metrics: metrics.clone(),
        }
        .run(),
    );

    let endpoint_states = Arc::new(EndpointStates::default());
    let draining = Arc::new(AtomicBool::new(false));
    let stop_accepting = CancellationToken::new();
    let connections = Arc::new(GracefulShutdown::new());
    let limits = args.server_limits();
    let inbound = Arc::new(Inbound::new(
        InboundSettings {
            service: args.service.clone(),
            policy_authority: args.inbound_policy().to_owned(),
            app: args.app,
            limits,
            detect_timeout: args.detect_timeout,
            probe_paths: inbound::ProbePaths::new(args.probe_paths.clone()),
        },
        tls.clone(),
        metrics.clone(),
        telemetry.clone(),
        directory.clone(),
    ));
    let mut accepting = Vec::new();
    for listener in inbound_listeners {
        accepting.push(tokio::spawn(inbound::serve(
            listener,
            inbound.clone(),
            connections.clone(),
            stop_accepting.clone(),
        )));
    }
    let outbound = Arc::new(Outbound::new(
        directory.clone(),
        tls.clone(),
        metrics.clone(),
        endpoint_states.clone(),
        telemetry.clone(),
        args.detect_timeout,
    ));
    for listener in outbound_listeners {
        accepting.push(tokio::spawn(outbound::serve(
            listener,
            outbound.clone(),
            connections.clone(),
            stop_accepting.clone(),
            limits,
        )));
    }
    let mut tcp_upstream_addrs = Vec::new();
    for (listener, service) in tcp_upstreams {
        tcp_upstream_addrs.push((service.clone(), listener.local_addr()?));
        // Subscribed at once and kept, so no connection waits for the answer.
        directory.pin(&service)?;
        accepting.push(tokio::spawn(outbound::serve_tcp_upstream(
            listener,
            outbound.clone(),
            service.into(),
            stop_accepting.clone(),
            limits,
        )));
    }
    let shutdown_requested = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(AdminState {
            service: args.service.clone(),
            control_plane: control_plane.clone(),
            tls: tls.clone(),
            directory,
            endpoint_states,
            metrics,
            discovery_connected,
            discovery_ever_connected,
            draining: draining.clone(),
            inbound,
            shutdown_requested: shutdown_requested.clone(),
            tap: TapEndpoint {
                taps: telemetry.taps.clone(),
                allow: args.tap_allow.clone(),
                tls: tls.clone(),
            },
        }),
    ));
    tracing::info!(inbound = ?inbound_addrs, outbound = ?outbound_addrs, %admin_addr, app = %args.app, "proxy started");
    print_listening_line(
        inbound_addrs[0],
        outbound_addrs[0],
        admin_addr,
        &tcp_upstream_addrs,
    );

    tokio::select! {
        result = stop_signal() => result?,
        () = shutdown_requested.cancelled() => tracing::info!("stop asked for on the admin port (/shutdown)"),
    }
    tracing::info!(grace = ?args.shutdown_grace, "draining");
    draining.store(true, Ordering::Relaxed);
    stop_accepting.cancel();
    futures_util::future::join_all(accepting).await;
    let connections = Arc::into_inner(connections)
        .context("a listener still holds the connection tracker after it stopped")?;
    if tokio::time::timeout(args.shutdown_grace, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?args.shutdown_grace, "in-flight requests did not finish within the grace period");
    }
    telemetry.shutdown().await;
    for task in [
        identity,
        discovery,
        idle_sweep,
        admin_task,
        expiry,
        refusal_summaries,
    ] {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

fn local_addrs(listeners: &[TcpListener]) -> std::io::Result<Vec<std::net::SocketAddr>> {
    listeners.iter().map(TcpListener::local_addr).collect()
}

/// Prints `{"event":"listening",...}`, the line tooling reads to learn the bound ports
/// (the first address of each listener flag, and `tcp:<service>` for each
/// `--tcp-upstream`).
fn print_listening_line(
    inbound: std::net::SocketAddr,
    outbound: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    tcp_upstreams: &[(String, std::net::SocketAddr)],
) {
    let mut line = serde_json::json!({
        "event": "listening",
        "inbound": inbound.to_string(),
        "outbound": outbound.to_string(),
        "admin": admin.to_string(),
    });
    for (service, address) in tcp_upstreams {
        line[format!("tcp:{service}")] = address.to_string().into();
    }
    println!("{line}");
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
