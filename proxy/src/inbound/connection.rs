//! How an inbound connection opens, and what it becomes. A connection addressed to the
//! listener goes to `--app`; one iptables redirected here goes to the port it was meant
//! for on the app. Its first bytes tell TLS (the mesh's mTLS) from plaintext. After an
//! mTLS handshake, ALPN says whether the caller speaks HTTP (`h2`, `http/1.1`) or sends an
//! opaque stream (`seam-tcp`), which the service's allow list admits or refuses by the
//! caller's identity before its bytes are copied to the app. Plaintext is let in only
//! where the service allows it: HTTP as requests, anything else on a redirected
//! connection (a protocol that is not HTTP, a port the service declares opaque, a client
//! that waits for its server to speak first) as an opaque stream. Where it does not,
//! plaintext HTTP to a port with probe paths (`--probe-paths`) is read request by
//! request, and only the app's probes get through.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use seam_proto::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{CountedCaller, HANDSHAKE_TIMEOUT, Inbound, InboundCaller, POLICY_WAIT};
use crate::body::ProxyBody;
use crate::detect::{Detection, Protocol};
use crate::metrics::{ConnectionMetrics, DeniedLabels, Direction};
use crate::opaque::{self, Flow};
use crate::original_dst::{self, Arrival};
use crate::server::{
    ConnectionLimit, FirstBytes, detect_protocol, first_bytes, http_server, next_connection,
    peer_http_server, speaking,
};
use crate::state::Resolution;
use crate::state::authz;
use crate::telemetry::CountedIo;
use crate::tls::{ALPN_H2, ALPN_HTTP11, ALPN_OPAQUE, refusal};

/// On a port the service declares opaque, how long a redirected connection may take to
/// show a TLS handshake before it is taken for plaintext.
const OPAQUE_TLS_WAIT: Duration = Duration::from_millis(100);

/// What a connection's first bytes make of it.
enum Opening {
    Tls,
    /// Plaintext HTTP (the version, once the bytes tell it).
    Http(Option<Protocol>),
    /// Plaintext that is not HTTP, on a redirected connection.
    Opaque,
    /// Closed at once, for this reason (counted in `seam_connections_refused_total`).
    Refused(&'static str),
}

/// Accepts peers' connections until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    connections: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    let limit = ConnectionLimit::new(&inbound.limits);
    let connection_metrics = Arc::new(inbound.metrics.connection_metrics(Direction::Inbound));
    while let Some((tcp, peer)) =
        next_connection(&listener, &stop, "inbound", &inbound.metrics.refusal_log).await
    {
        let Some(permit) = inbound.metrics.admit(&limit, Direction::Inbound, peer) else {
            continue;
        };
        let inbound = inbound.clone();
        let metrics = connection_metrics.clone();
        // A watcher per connection: the drain waits for it, handshake included.
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = metrics.opened();
            serve_connection(inbound, tcp, peer, watcher, &metrics).await;
        });
    }
}

async fn serve_connection(
    inbound: Arc<Inbound>,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    metrics: &Arc<ConnectionMetrics>,
) {
    let arrival = original_dst::arrival(&tcp);
    let app = match arrival {
        Arrival::Addressed => inbound.apps.app(),
        Arrival::Redirected(destination) => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, destination.port()))
        }
    };
    match opening(&inbound, &tcp, arrival).await {
        Opening::Tls => {
            let Some((tls, caller)) = handshake(&inbound, tcp, peer).await else {
                return;
            };
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let io = CountedIo::new(tls, metrics);
            let protocol = match alpn.as_deref() {
                Some(ALPN_OPAQUE) => {
                    opaque_stream(&inbound, io, caller, app).await;
                    return;
                }
                Some(ALPN_H2) => Some(Protocol::Http2),
                Some(ALPN_HTTP11) => Some(Protocol::Http1),
                _ => None,
            };
            serve_http(
                inbound,
                TokioIo::new(io),
                protocol,
                caller,
                app,
                watcher,
                peer,
            )
            .await;
        }
        Opening::Http(protocol) => {
            // The port on the app the requests go to: the original destination of a
            // redirected connection, `--app`'s port of an addressed one.
            let caller = if inbound.plaintext_allowed().await {
                InboundCaller::plaintext()
            } else if inbound.probe_paths.on_port(app.port()) {
                InboundCaller::probes_only(app.port())
            } else {
                refuse_plaintext(&inbound, peer);
                return;
            };
            let io = TokioIo::new(CountedIo::new(tcp, metrics));
            serve_http(inbound, io, protocol, caller, app, watcher, peer).await;
        }
        Opening::Opaque => {
            if !inbound.plaintext_allowed().await {
                refuse_plaintext(&inbound, peer);
                return;
            }
            let io = CountedIo::new(tcp, metrics);
            opaque_stream(&inbound, io, InboundCaller::plaintext(), app).await;
        }
        Opening::Refused(reason) => {
            if inbound
                .metrics
                .connection_refused(Direction::Inbound, reason)
            {
                let why = match reason {
                    "unknown_protocol" => "it speaks neither TLS nor HTTP",
                    "timeout" => "it sent nothing within the header read timeout",
                    "closed_by_peer" => "it closed before sending anything",
                    _ => "it failed before sending anything",
                };
                tracing::info!(%peer, reason, "refused an inbound connection: {why}");
            }
        }
    }
}

/// What the connection's first bytes make of it. A connection addressed to the listener
/// comes from a proxy (TLS) or a plaintext HTTP client, and has the header read timeout to
/// send its first byte. A redirected one may be anything the app serves: on a port the
/// service declares opaque only a TLS handshake is waited for, briefly; elsewhere the
/// detection wait applies.
async fn opening(inbound: &Inbound, tcp: &TcpStream, arrival: Arrival) -> Opening {
    let Arrival::Redirected(destination) = arrival else {
        return match first_bytes(tcp, inbound.limits.header_read_timeout).await {
            Ok(Detection::Known(Protocol::Tls)) => Opening::Tls,
            Ok(Detection::Known(Protocol::Unknown)) => Opening::Refused("unknown_protocol"),
            Ok(detection) => Opening::Http(detection.known()),
            Err(reason) => Opening::Refused(reason),
        };
    };
    if inbound.is_opaque_port(destination.port()).await {
        // A meshed caller opens with its TLS handshake at once; a plaintext caller of a
        // server-first protocol sends nothing until the app greets it, so it is not
        // waited for longer than a handshake takes to arrive.
        return match detect_protocol(tcp, OPAQUE_TLS_WAIT).await {
            FirstBytes::Protocol(Protocol::Tls) => Opening::Tls,
            FirstBytes::Closed => Opening::Refused("closed_by_peer"),
            FirstBytes::Protocol(_) | FirstBytes::Silent => Opening::Opaque,
        };
    }
    match detect_protocol(tcp, inbound.detect_timeout).await {
        FirstBytes::Protocol(Protocol::Tls) => Opening::Tls,
        FirstBytes::Protocol(protocol @ (Protocol::Http1 | Protocol::Http2)) => {
            Opening::Http(Some(protocol))
        }
        FirstBytes::Protocol(Protocol::Unknown) | FirstBytes::Silent => Opening::Opaque,
        FirstBytes::Closed => Opening::Refused("closed_by_peer"),
    }
}

fn refuse_plaintext(inbound: &Inbound, peer: SocketAddr) {
    if inbound
        .metrics
        .connection_refused(Direction::Inbound, "plaintext")
    {
        tracing::info!(%peer, "refused a plaintext connection: the service accepts only mTLS");
    }
}

impl Inbound {
    async fn plaintext_allowed(&self) -> bool {
        matches!(
            self.directory.resolve(&self.policy_authority, POLICY_WAIT).await,
            Ok(Resolution::Found(service)) if service.authorization.allow_plaintext
        )
    }

    /// Whether this service declares `port` opaque (as the control plane last said).
    async fn is_opaque_port(&self, port: u16) -> bool {
        matches!(
            self.directory.resolve(&self.policy_authority, POLICY_WAIT).await,
            Ok(Resolution::Found(service)) if service.is_opaque_port(port)
        )
    }
}

/// An opaque stream from `caller`: the service's allow list decides by the caller's
/// identity (a refusal is counted, with the caller, and logged a few per window), then
/// its bytes are copied to the app.
async fn opaque_stream<S>(inbound: &Inbound, stream: S, caller: InboundCaller, app: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(Resolution::Found(service)) = inbound
        .directory
        .resolve(&inbound.policy_authority, POLICY_WAIT)
        .await
    else {
        return;
    };
    let decision = authz::authorize(
        caller.as_caller(),
        &inbound.service,
        &service.authorization,
        None,
    );
    let counted = CountedCaller::new(caller, inbound);
    counted.requests.inc();
    counted.tally.record(decision.is_ok());
    if let Err(denied) = decision {
        inbound
            .metrics
            .authorization_denied
            .get_or_create(&DeniedLabels {
                service: inbound.service.to_string(),
                caller: counted.caller.label().to_owned(),
                reason: denied.reason_label(),
            })
            .inc();
        if inbound.metrics.refusal_log.admit(denied.reason_label()) {
            tracing::warn!(caller = counted.caller.label(), service = %inbound.service, reason = %denied, "refused an opaque stream: not allowed");
        }
        return;
    }
    let flow = Flow {
        direction: Direction::Inbound,
        service: inbound.service.clone(),
        peer: counted.caller.shared_label(),
    };
    opaque::to_app(stream, app, &flow, &inbound.metrics).await;
}

/// Serves HTTP on an accepted (and, for mTLS, authenticated) connection; its requests go
/// to the app at `app`.
async fn serve_http<I>(
    inbound: Arc<Inbound>,
    io: I,
    protocol: Option<Protocol>,
    caller: InboundCaller,
    app: SocketAddr,
    watcher: Watcher,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let server = if caller.identity.is_some() {
        peer_http_server(&inbound.limits)
    } else {
        http_server(&inbound.limits)
    };
    let server = speaking(server, protocol);
    let caller = Arc::new(CountedCaller::new(caller, &inbound));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        // Only plaintext callers of a service that accepts only mTLS have a port here;
        // what is not one of the app's probes (a probe never asks for an upgrade) is
        // refused as their connection would have been: closed unanswered (HTTP/2: the
        // stream reset), counted and logged.
        if let Some(port) = caller.caller.probes_only_on
            && (request.headers().contains_key(http::header::UPGRADE)
                || !inbound
                    .probe_paths
                    .admits(port, request.method(), request.uri().path()))
        {
            refuse_plaintext(&inbound, peer);
            return Either::Left(std::future::ready(Err(NotAProbe)));
        }
        Either::Right(
            inbound
                .clone()
                .handle(request, caller.clone(), app)
                .map(Ok::<Response<ProxyBody>, NotAProbe>),
        )
    });
    let connection = server.serve_connection_with_upgrades(io, service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "inbound connection ended with an error");
    }
}

/// Why a probe-only connection was closed: a request that is not one of the app's
/// probes (hyper then ends the connection without answering).
#[derive(Debug, thiserror::Error)]
#[error("a plaintext request that is not one of the app's probes")]
struct NotAProbe;

/// Completes the mTLS handshake and reads the caller's SPIFFE id; refusals are counted
/// by reason and logged (a few per window, see `RefusalLog`).
async fn handshake(
    inbound: &Inbound,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, InboundCaller)> {
    let refuse = |reason: &'static str| inbound.metrics.tls_refused(Direction::Inbound, reason);
    let Some(config) = inbound.tls.inbound_config() else {
        if refuse("no_certificate_yet") {
            tracing::info!(%peer, "refused a connection: this proxy has no certificate yet");
        }
        return None;
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(tcp),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let reason = refusal::reason(&err);
            if refuse(reason) {
                tracing::info!(%peer, reason, error = %err, "refused an inbound TLS handshake");
            }
            return None;
        }
        Err(_) => {
            if refuse("timeout") {
                tracing::info!(%peer, "inbound TLS handshake timed out");
            }
            return None;
        }
    };
    let own_trust_domain = inbound
        .tls
        .certificate()
        .map(|c| c.spiffe_id.trust_domain().to_owned());
    let caller = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| SpiffeId::from_certificate_der(leaf).ok())
        .filter(|id| own_trust_domain.as_deref() == Some(id.trust_domain()));
    let Some(caller) = caller else {
        if refuse("bad_identity") {
            tracing::info!(%peer, "refused a peer whose certificate names no SPIFFE id of this trust domain");
        }
        return None;
    };
    let header = HeaderValue::from_str(caller.as_str()).ok()?;
    Some((
        stream,
        InboundCaller {
            identity: Some(caller),
            header: Some(header),
            probes_only_on: None,
        },
    ))
}
