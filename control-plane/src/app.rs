//! Wiring and lifecycle of the control plane: CA, mesh source (the mesh file and its
//! resolver loop, or a Kubernetes cluster), gRPC and admin listeners, and an orderly stop
//! on SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use seam_proto::v1::discovery_server::DiscoveryServer;
use seam_proto::v1::identity_server::IdentityServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::admin::{self, AdminState};
use crate::ca::{self, CertificateAuthority};
use crate::config::{Args, SourceKind};
use crate::dashboard::Dashboard;
use crate::discovery::DiscoveryService;
use crate::dns;
use crate::identity::{IdentityService, Proofs};
use crate::kubernetes;
use crate::kubernetes::events::PolicyEvents;
use crate::kubernetes::token_review::TokenReviewer;
use crate::kubernetes::watch::ClusterSource;
use crate::launch::print_listening_line;
use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::rotation::Rotation;
use crate::source::{MeshSource, ModelSource};
use crate::tls;
use crate::trust_bundle_file;
use crate::webhook;

/// How long open discovery streams get to close after a stop is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.source == SourceKind::File && args.mesh_file.is_none() {
        anyhow::bail!("--mesh-file is required with --source file (the default)");
    }
    // The one client every Kubernetes part of the control plane shares.
    let kube_client = match args.source {
        SourceKind::File => None,
        SourceKind::Kubernetes => Some(kubernetes::client(args.kubeconfig.as_deref()).await?),
    };
    // The CA's state: the state directory, or in Kubernetes the Secret --ca-secret.
    let ca = Arc::new(match &kube_client {
        None => CertificateAuthority::load_or_create(&args.state_dir, &args.trust_domain)
            .context("cannot set up the mesh CA")?,
        Some(client) => kubernetes::ca_secret::load_or_create(
            client.clone(),
            &args.namespace,
            &args.ca_secret,
            &args.trust_domain,
        )
        .await
        .context("cannot set up the mesh CA (--ca-secret)")?,
    });
    // Replicas sharing --state-dir, or in Kubernetes the CA Secret, follow each other's
    // rotation steps.
    let _following_store = AbortOnDropHandle::new(tokio::spawn(ca::follow::follow_store(
        ca.clone(),
        ca::follow::FOLLOW_EVERY,
    )));
    // Kubernetes: the trust bundle in every namespace, and in the injector's webhooks.
    let _bundle_publishers = kube_client.as_ref().map(|client| {
        [
            AbortOnDropHandle::new(tokio::spawn(kubernetes::trust_configmaps::run(
                client.clone(),
                ca.clone(),
            ))),
            AbortOnDropHandle::new(tokio::spawn(kubernetes::webhook_ca::run(
                client.clone(),
                args.webhook_config.clone(),
                ca.clone(),
            ))),
        ]
    });
    let _published_bundle = match &args.publish_trust_bundle {
        Some(path) => Some(AbortOnDropHandle::new(trust_bundle_file::publish(
            ca.clone(),
            path.clone(),
        )?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    // The model: the cluster's objects, or the mesh file (watched, its DNS names resolved).
    let (source, _source_tasks) = match (&kube_client, &args.mesh_file) {
        (Some(client), _) => {
            let cluster =
                ClusterSource::new(ca.trust_domain(), &args.cluster_domain, metrics.clone());
            let events = PolicyEvents::new(client.clone());
            let watching = cluster.start(client.clone(), Some(events));
            (
                ModelSource::Cluster(cluster),
                vec![AbortOnDropHandle::new(watching)],
            )
        }
        (None, Some(mesh_file)) => {
            let source = MeshSource::load(mesh_file, ca.trust_domain(), metrics.clone())
                .context("cannot load the mesh file")?;
            let watching = source
                .watch()
                .with_context(|| format!("cannot watch {}", mesh_file.display()))?;
            let resolver = dns::spawn(source.clone(), args.dns_refresh, metrics.clone());
            (
                ModelSource::File(source),
                vec![
                    AbortOnDropHandle::new(watching),
                    AbortOnDropHandle::new(resolver),
                ],
            )
        }
        (None, None) => anyhow::bail!("--mesh-file is required with --source file"),
    };
    let registry = Arc::new(ProxyRegistry::default());
    let shutdown = CancellationToken::new();

    let (tls_config, _renewal) = tls::serving_config(ca.clone(), args.cert_ttl)
        .context("cannot issue the control plane's certificate")?;
    let rotation = Rotation::new(ca.clone(), args.cert_ttl);
    let rotation_task = tokio::spawn(rotation.clone().run());
    let grpc_listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on {} (--admin)", args.admin))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let mut listening = vec![("grpc", grpc_addr), ("admin", admin_addr)];
    let _webhook = match args.webhook_listener() {
        Some(addr) => {
            let (webhook_addr, tasks) = start_webhook(&args, addr, ca.clone()).await?;
            listening.push(("webhook", webhook_addr));
            Some(tasks)
        }
        None => None,
    };

    let identity = IdentityService {
        ca: ca.clone(),
        model: source.subscribe(),
        certificate_lifetime: args.cert_ttl,
        metrics: metrics.clone(),
        proofs: match &kube_client {
            None => Proofs::JoinTokens,
            Some(client) => Proofs::ServiceAccountTokens(TokenReviewer::new(client.clone())),
        },
    };
    let discovery = DiscoveryService::new(
        source.subscribe(),
        registry.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let incoming = ReceiverStream::new(tls::accept_tls(grpc_listener, tls_config, metrics.clone()));
    let grpc_shutdown = shutdown.clone();
    // Proxies are served once the source has a model: an empty one would tell them every
    // service is gone.
    let model_ready = source.ready();
    let grpc = tokio::spawn(async move {
        tokio::select! {
            () = model_ready => {}
            () = grpc_shutdown.cancelled() => return Ok(()),
        }
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(IdentityServer::new(identity))
            .add_service(DiscoveryServer::new(discovery))
            .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
            .await
    });
    // The dashboard's scraper runs as long as the admin listener it serves.
    let (dashboard, _dashboard_scraper) = Dashboard::start(registry.clone());
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(AdminState {
            metrics,
            registry,
            source,
            ca,
            rotation,
            dashboard,
        }),
    ));
    tracing::info!(%grpc_addr, %admin_addr, "control plane serving");
    print_listening_line(&listening);

    stop_signal().await?;
    tracing::info!("stopping");
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, grpc).await {
        Ok(Ok(result)) => result.context("gRPC server failed")?,
        Ok(Err(join)) => return Err(join).context("gRPC server task failed"),
        Err(_) => tracing::warn!("gRPC connections did not close within {SHUTDOWN_GRACE:?}"),
    }
    admin.abort();
    rotation_task.abort();
    Ok(())
}

/// Starts the injection webhook on `addr`; it serves until the returned tasks are dropped.
async fn start_webhook(
    args: &Args,
    addr: std::net::SocketAddr,
    ca: Arc<CertificateAuthority>,
) -> anyhow::Result<(std::net::SocketAddr, [AbortOnDropHandle<()>; 2])> {
    let names = webhook::tls::dns_names(&args.namespace, &args.cluster_domain);
    let (config, renewal) = webhook::tls::serving_config(ca, names, args.cert_ttl)
        .context("cannot issue the webhook's certificate")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--webhook-listen)"))?;
    let bound = listener.local_addr()?;
    let server = tokio::spawn(webhook::server::serve(
        listener,
        config,
        Arc::new(args.injection()),
    ));
    Ok((
        bound,
        [
            AbortOnDropHandle::new(renewal),
            AbortOnDropHandle::new(server),
        ],
    ))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
