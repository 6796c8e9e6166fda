//! Every way the proxy itself can fail a request, and the one function that turns them into
//! responses, so a 502, 503 or 504 always means the same thing and names its cause.

use http::{Response, StatusCode, header};

use crate::body::{self, ProxyBody};

/// Marks responses the proxy wrote itself (rather than forwarded from the app).
pub const PROXY_ERROR_HEADER: &str = "x-seam-proxy-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request names no service: it has no Host header or :authority")]
    NoAuthority,
    #[error("invalid authority {0:?}")]
    BadAuthority(String),
    #[error("unknown service {0}")]
    UnknownService(String),
    #[error("no endpoints for {0}")]
    NoEndpoints(String),
    #[error("the control plane has not answered for {0} yet")]
    DiscoveryPending(String),
    #[error("{0}")]
    TooManyServices(#[from] crate::state::LookupError),
    #[error("cannot connect to {service} at {endpoint}: {cause}")]
    PeerConnect {
        service: String,
        endpoint: std::net::SocketAddr,
        cause: String,
    },
    #[error("cannot reach {service} at {endpoint}: {cause}")]
    Peer {
        service: String,
        endpoint: std::net::SocketAddr,
        cause: String,
    },
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    #[error("per-try timeout after {}", humantime::format_duration(*.0))]
    PerTryTimeout(std::time::Duration),
    #[error(
        "load shed: every endpoint of {service} has {limit} requests in flight (max_concurrent_requests)"
    )]
    LoadShed { service: String, limit: u32 },
    #[error("every endpoint of {0} is ejected by the circuit breaker")]
    AllEjected(String),
    #[error("cannot reach the application at {app}: {cause}")]
    App {
        app: std::net::SocketAddr,
        cause: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoAuthority | Self::BadAuthority(_) => StatusCode::BAD_REQUEST,
            Self::UnknownService(_)
            | Self::NoEndpoints(_)
            | Self::DiscoveryPending(_)
            | Self::TooManyServices(_)
            | Self::LoadShed { .. }
            | Self::AllEjected(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) | Self::PerTryTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Peer { .. } | Self::PeerConnect { .. } | Self::App { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        proxy_response(self.status(), format!("{self}\n"))
    }
}

/// A response the proxy wrote itself: `text` as plain text, marked with
/// `x-seam-proxy-error: true`.
pub fn proxy_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(PROXY_ERROR_HEADER, "true")
        .body(body::text(text))
        .expect("status and static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_and_shedding_name_their_cause() {
        let cases = [
            (
                ProxyError::Timeout(Duration::from_secs(2)),
                504,
                "timeout after 2s",
            ),
            (
                ProxyError::PerTryTimeout(Duration::from_millis(500)),
                504,
                "per-try timeout after 500ms",
            ),
            (
                ProxyError::LoadShed {
                    service: "api".into(),
                    limit: 4,
                },
                503,
                "load shed: every endpoint of api has 4 requests in flight",
            ),
            (
                ProxyError::AllEjected("api".into()),
                503,
                "every endpoint of api is ejected",
            ),
        ];
        for (error, status, text) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert!(error.to_string().starts_with(text), "{error}");
        }
    }
}
