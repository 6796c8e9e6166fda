//! A connection iptables redirected to the outbound listener (transparent mode): the app
//! connected to some address as it always did, and the address it was going to decides.
//! A destination the mesh does not know (asked of the control plane like any authority,
//! and answered from the proxy's cache after) is passed through as plain TCP to where it
//! was going. For a service's address, the first bytes decide: HTTP takes the whole L7
//! path; anything else, and any port the service declares opaque (no bytes are waited
//! for there, so a server that speaks first works), goes as an opaque stream over mTLS.
//! A client that sends nothing within the detection wait is taken to be waiting for its
//! server to speak first.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::spawn_boxed::SpawnBoxed;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;

use super::target::ConnectionTarget;
use super::{FIRST_LOOKUP_WAIT, Outbound};
use crate::detect::Protocol;
use crate::metrics::ConnectionMetrics;
use crate::opaque;
use crate::server::{FirstBytes, detect_protocol};
use crate::state::Resolution;
use crate::telemetry::CountedIo;

/// Serves one redirected connection that was going to `destination`.
pub async fn serve(
    outbound: Arc<Outbound>,
    server: auto::Builder<SpawnBoxed>,
    tcp: TcpStream,
    destination: SocketAddr,
    watcher: Watcher,
    metrics: Arc<ConnectionMetrics>,
) {
    let key = destination.to_string();
    let service = match outbound.directory.resolve(&key, FIRST_LOOKUP_WAIT).await {
        Ok(Resolution::Found(service)) => service,
        _ => {
            let tcp = CountedIo::new(tcp, &metrics);
            opaque::passthrough(tcp, destination, &outbound.metrics).await;
            return;
        }
    };
    // The port the instances serve it on (a virtual address's port may map to another).
    let port = service
        .endpoints
        .first()
        .map_or(destination.port(), |endpoint| endpoint.address.port());
    let first_bytes = if service.is_opaque_port(port) {
        FirstBytes::Silent
    } else {
        detect_protocol(&tcp, outbound.detect_timeout).await
    };
    match first_bytes {
        FirstBytes::Protocol(protocol @ (Protocol::Http1 | Protocol::Http2)) => {
            let target = ConnectionTarget::intercepted(destination);
            super::serve_http(
                outbound,
                server,
                tcp,
                Some(protocol),
                target,
                watcher,
                metrics,
            )
            .await;
        }
        FirstBytes::Closed => {}
        FirstBytes::Protocol(Protocol::Tls | Protocol::Unknown) | FirstBytes::Silent => {
            let tcp = CountedIo::new(tcp, &metrics);
            outbound.forwarder.forward(tcp, &service).await;
        }
    }
}
