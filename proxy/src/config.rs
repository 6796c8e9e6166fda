//! The proxy's command line; every flag can also be set as `SEAM_<FLAG>`, and the join
//! token itself as `SEAM_JOIN_TOKEN`. In Kubernetes the proxy proves itself with a
//! projected ServiceAccount token file instead of a join token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::control_plane::ControlPlaneAddress;
use crate::inbound::ProbePath;
use crate::telemetry::AccessLogFormat;
use crate::telemetry::trace_context::Propagation;

#[derive(Debug, Clone, Parser)]
#[command(name = "seam-proxy", version, about = "The Seam sidecar proxy")]
pub struct Args {
    /// The service this proxy speaks for (its service account in file mode).
    #[arg(long, env = "SEAM_SERVICE")]
    pub service: String,
    #[arg(long, env = "SEAM_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The control plane's gRPC address (HOST:PORT). With replicas: several, comma-separated
    /// or as a repeated flag, or a DNS name that resolves to several; names are resolved
    /// at every connection attempt, and when the replica in use fails the others are tried.
    #[arg(
        long,
        env = "SEAM_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    pub control_plane: Vec<ControlPlaneAddress>,
    /// PEM file of the mesh's trust anchors (the control plane's `ca.pem`).
    #[arg(long, env = "SEAM_TRUST_ANCHORS")]
    pub trust_anchors: PathBuf,
    /// File holding the service's join token (else SEAM_JOIN_TOKEN is read). Not needed
    /// with --service-account-token-file.
    #[arg(long, env = "SEAM_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// The ServiceAccount this proxy's identity names: it expects to be certified as
    /// `spiffe://<td>/ns/<namespace>/sa/<service-account>`. Default: --service.
    #[arg(long, env = "SEAM_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// A projected Kubernetes ServiceAccount token (audience `seam`) to prove the
    /// identity with instead of a join token; read anew at every certification and
    /// renewal, so a token the kubelet rotated is picked up.
    #[arg(long, env = "SEAM_SERVICE_ACCOUNT_TOKEN_FILE")]
    pub service_account_token_file: Option<PathBuf>,
    /// The authority whose policy (authorization, rate limits, opaque ports) the inbound
    /// side enforces: in Kubernetes the pod's IP, which the control plane resolves to the
    /// Service selecting the pod. Default: --service.
    #[arg(long, env = "SEAM_INBOUND_POLICY")]
    pub inbound_policy: Option<String>,
    /// mTLS from other proxies (and redirected connections for the pod): a comma-separated
    /// list; an IPv6 address is left out where the machine has no IPv6.
    #[arg(
        long,
        env = "SEAM_INBOUND",
        value_delimiter = ',',
        default_value = "0.0.0.0:4143,[::]:4143"
    )]
    pub inbound: Vec<SocketAddr>,
    /// The local app's traffic (and its redirected connections): a comma-separated list;
    /// an IPv6 address is left out where the machine has no IPv6.
    #[arg(
        long,
        env = "SEAM_OUTBOUND",
        value_delimiter = ',',
        default_value = "127.0.0.1:4140,[::1]:4140"
    )]
    pub outbound: Vec<SocketAddr>,
    /// /ready, /live, /metrics, /config, /identity, /tap.
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:4191")]
    pub admin: SocketAddr,
    /// The networks `/tap` on the admin listener answers (a tap shows request paths):
    /// comma-separated CIDRs; other clients get 403.
    #[arg(
        long,
        env = "SEAM_TAP_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub tap_allow: Vec<ipnet::IpNet>,
    /// Where the local app listens.
    #[arg(long, env = "SEAM_APP", default_value = "127.0.0.1:8080")]
    pub app: SocketAddr,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "SEAM_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Where spans go over OTLP/gRPC (e.g. `http://collector:4317`); without it only trace
    /// headers are propagated.
    #[arg(long, env = "SEAM_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Trace header formats read and written: `w3c`, `b3`, or `w3c,b3`.
    #[arg(long, env = "SEAM_TRACE_PROPAGATION", default_value = "w3c")]
    pub trace_propagation: Propagation,
    /// The share of new traces sampled (0 to 1); a caller's decision is always followed.
    #[arg(long, env = "SEAM_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
    /// `json`: one JSON line per request on stdout; `off`: none.
    #[arg(long, env = "SEAM_ACCESS_LOG", default_value = "off")]
    pub access_log: AccessLogFormat,
    /// A client must send a whole request head within this long, or is cut off (not
    /// asked of other proxies' mTLS connections, which stay pooled between requests).
    #[arg(long, env = "SEAM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// The largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    #[arg(long, env = "SEAM_MAX_HEADER_BYTES", default_value_t = crate::server::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Open connections per listener; beyond it new connections are closed at once.
    #[arg(long, env = "SEAM_MAX_CONNECTIONS", default_value_t = crate::server::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Local listeners for opaque TCP to a service, without iptables: `ADDR=SERVICE`,
    /// comma-separated (`127.0.0.1:15432=db`). Each connection to ADDR is carried as an
    /// opaque stream over mTLS to one of SERVICE's endpoints (for an app that cannot be
    /// told to use an HTTP proxy, such as a database client).
    #[arg(
        long = "tcp-upstream",
        env = "SEAM_TCP_UPSTREAM",
        value_delimiter = ','
    )]
    pub tcp_upstreams: Vec<TcpUpstream>,
    /// How long a redirected connection (transparent mode) may take to show its protocol;
    /// one that sends nothing by then is taken to wait for its server to speak first, and
    /// is carried as opaque TCP.
    #[arg(long, env = "SEAM_DETECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub detect_timeout: Duration,
    /// The app's health-check paths that plaintext callers (the kubelet's probes) may
    /// reach although the service accepts only mTLS: comma-separated `PORT:PATH`
    /// (`8080:/healthz,8081:/ready`), matched on the request's destination port and exact
    /// path (query ignored), for GET and HEAD (and POST to the gRPC health check).
    #[arg(long, env = "SEAM_PROBE_PATHS", value_delimiter = ',')]
    pub probe_paths: Vec<ProbePath>,
    /// An authority no request or connection has used for this long is forgotten and
    /// unsubscribed from (the next use subscribes again and waits for the answer, as the
    /// first did); the inbound policy and --tcp-upstream services are kept.
    // Ten minutes: a service called every few minutes (a cron-like job, a periodic
    // refresh) never pays the re-subscription round trip, while names used once (or an
    // app spraying Host values) free their slot and the control plane's state for this
    // proxy within minutes: filling the 5,000 slots would take over 8 new names a second
    // held for ten minutes.
    #[arg(long, env = "SEAM_IDLE_UNSUBSCRIBE_AFTER", default_value = "10m", value_parser = positive_duration)]
    pub idle_unsubscribe_after: Duration,
}

/// A duration above zero, such as `10m` or `500ms`.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be above zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

impl Args {
    /// The limits every listener applies.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        crate::server::ServerLimits {
            header_read_timeout: self.header_read_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
        }
    }

    /// The ServiceAccount the proxy's identity names (`--service-account`, else
    /// `--service`).
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or(&self.service)
    }

    /// The authority of the inbound policy (`--inbound-policy`, else `--service`).
    pub fn inbound_policy(&self) -> &str {
        self.inbound_policy.as_deref().unwrap_or(&self.service)
    }

    /// How the proxy proves its identity: the ServiceAccount token file when given (read
    /// at each certification, not here), else the join token.
    pub fn proof(&self) -> anyhow::Result<crate::identity::Proof> {
        match &self.service_account_token_file {
            Some(path) => Ok(crate::identity::Proof::ServiceAccountTokenFile(
                path.clone(),
            )),
            None => Ok(crate::identity::Proof::JoinToken(self.join_token()?)),
        }
    }

    /// The join token, from `--join-token-file` or `SEAM_JOIN_TOKEN`.
    pub fn join_token(&self) -> anyhow::Result<String> {
        let token = match &self.join_token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the join token from {}", path.display()))?,
            None => std::env::var("SEAM_JOIN_TOKEN")
                .context("no join token: give --join-token-file or set SEAM_JOIN_TOKEN")?,
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            bail!("the join token is empty");
        }
        Ok(token)
    }
}

/// One `--tcp-upstream`: a local address and the service its connections go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpstream {
    pub listen: SocketAddr,
    pub service: String,
}

impl std::str::FromStr for TcpUpstream {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (listen, service) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ADDR=SERVICE (such as 127.0.0.1:15432=db)"))?;
        let listen = listen
            .trim()
            .parse()
            .map_err(|_| format!("{listen:?} in {text:?} is not an IP:port"))?;
        let service = service.trim();
        if service.is_empty() {
            return Err(format!("{text:?} names no service after '='"));
        }
        Ok(Self {
            listen,
            service: service.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_upstream_is_an_address_and_a_service() {
        assert_eq!(
            "127.0.0.1:15432=db".parse::<TcpUpstream>(),
            Ok(TcpUpstream {
                listen: "127.0.0.1:15432".parse().unwrap(),
                service: "db".into()
            })
        );
        for bad in ["127.0.0.1:15432", "nowhere=db", "127.0.0.1:1="] {
            assert!(bad.parse::<TcpUpstream>().is_err(), "{bad}");
        }
    }

    #[test]
    fn control_planes_are_a_comma_separated_list_or_a_repeated_flag() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(
                ["seam-proxy", "--service=b", "--trust-anchors=ca.pem"]
                    .iter()
                    .chain(args),
            )
        };
        let shown = |args: Args| -> Vec<String> {
            args.control_plane.iter().map(ToString::to_string).collect()
        };
        let listed = parse(&[
            "--control-plane=cp-0:8443,cp-1:8443",
            "--control-plane",
            "[::1]:9",
        ])
        .expect("three addresses");
        assert_eq!(shown(listed), ["cp-0:8443", "cp-1:8443", "[::1]:9"]);
        let error = parse(&["--control-plane=cp-0:8443,cp-1"])
            .expect_err("a bad entry")
            .to_string();
        assert!(error.contains("\"cp-1\" is not HOST:PORT"), "{error}");
        assert!(parse(&[]).is_err(), "--control-plane is required");
    }

    #[test]
    fn probe_paths_are_a_list_and_a_bad_entry_is_named() {
        let base = [
            "seam-proxy",
            "--service=b",
            "--control-plane=127.0.0.1:1",
            "--trust-anchors=ca.pem",
        ];
        let args = Args::try_parse_from(
            base.iter()
                .chain(&["--probe-paths=8080:/healthz,8081:/ready"]),
        )
        .expect("two probe paths");
        let listed: Vec<_> = args
            .probe_paths
            .iter()
            .map(|p| (p.port, p.path.as_str()))
            .collect();
        assert_eq!(listed, [(8080, "/healthz"), (8081, "/ready")]);
        let error = Args::try_parse_from(base.iter().chain(&["--probe-paths=8080:/healthz,ready"]))
            .expect_err("a bad entry")
            .to_string();
        assert!(error.contains("\"ready\" is not PORT:PATH"), "{error}");
    }

    #[test]
    fn idle_unsubscribe_defaults_to_ten_minutes_and_refuses_zero() {
        let base = [
            "seam-proxy",
            "--service=b",
            "--control-plane=127.0.0.1:1",
            "--trust-anchors=ca.pem",
        ];
        let args = Args::try_parse_from(base).expect("defaults");
        assert_eq!(args.idle_unsubscribe_after, Duration::from_secs(600));
        let args = Args::try_parse_from(base.iter().chain(&["--idle-unsubscribe-after=2s"]))
            .expect("two seconds");
        assert_eq!(args.idle_unsubscribe_after, Duration::from_secs(2));
        let error = Args::try_parse_from(base.iter().chain(&["--idle-unsubscribe-after=0s"]))
            .expect_err("zero")
            .to_string();
        assert!(error.contains("must be above zero"), "{error}");
    }
}
