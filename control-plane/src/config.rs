//! The control plane's command line; every flag can also be set as `SEAM_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "seam-control-plane",
    version,
    about = "The Seam control plane: mesh CA and discovery push"
)]
pub struct Args {
    /// Where services, endpoints and policies come from: a mesh file, or the Kubernetes
    /// cluster the control plane runs in.
    #[arg(long, env = "SEAM_SOURCE", value_enum, default_value_t = SourceKind::File)]
    pub source: SourceKind,
    /// The mesh file (YAML) listing services; watched and reloaded on change. Required
    /// with `--source file` (checked at start).
    #[arg(long, env = "SEAM_MESH_FILE")]
    pub mesh_file: Option<PathBuf>,
    /// The kubeconfig for `--source kubernetes`; without it, the in-cluster configuration
    /// or `$KUBECONFIG` (as kubectl finds it).
    #[arg(long, env = "SEAM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's own Kubernetes namespace (its Secret; its Service's DNS names
    /// go on the webhook's certificate).
    #[arg(long, env = "SEAM_NAMESPACE", default_value = "seam-system")]
    pub namespace: String,
    /// With `--source kubernetes`: the Secret (in `--namespace`) holding the mesh CA,
    /// created on first start.
    #[arg(long, env = "SEAM_CA_SECRET", default_value = "seam-ca")]
    pub ca_secret: String,
    /// With `--source kubernetes`: the MutatingWebhookConfiguration whose webhooks'
    /// caBundle the control plane keeps equal to the mesh trust bundle.
    #[arg(long, env = "SEAM_WEBHOOK_CONFIG", default_value = "seam-injector")]
    pub webhook_config: String,
    /// The cluster's DNS domain, for names such as `web.shop.svc.cluster.local`.
    #[arg(long, env = "SEAM_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where proxies reach the gRPC API (TLS).
    #[arg(long, env = "SEAM_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The admin HTTP listener: /ready, /live, /metrics, /proxies, /mesh.
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: SocketAddr,
    /// Holds the mesh CA (ca.pem, the trust anchor for proxies; ca.key, mode 0600).
    /// Replicas of one mesh share it (a shared volume): they make one root, and each
    /// follows the others' rotation steps within seconds.
    #[arg(long, env = "SEAM_STATE_DIR", default_value = "./seam-state")]
    pub state_dir: PathBuf,
    /// Also keep a copy of the trust bundle (certificates only, mode 0644) at this path,
    /// rewritten when it changes: for proxies that must not see the state directory.
    #[arg(long, env = "SEAM_PUBLISH_TRUST_BUNDLE", value_name = "FILE")]
    pub publish_trust_bundle: Option<PathBuf>,
    /// The SPIFFE trust domain of the mesh.
    #[arg(long, env = "SEAM_TRUST_DOMAIN", default_value = "seam.local")]
    pub trust_domain: String,
    /// Lifetime of the workload certificates the CA signs (e.g. 24h, 20s).
    #[arg(long, env = "SEAM_CERT_TTL", default_value = "24h", value_parser = parse_lifetime)]
    pub cert_ttl: Duration,
    /// How often the names of `dns:NAME:PORT` endpoints are resolved again (sooner when
    /// their TTL is shorter, never more often than every 500ms).
    #[arg(long, env = "SEAM_DNS_REFRESH", default_value = "2s", value_parser = parse_refresh)]
    pub dns_refresh: Duration,

    // ---- the injection webhook --------------------------------------------------------
    /// The injection webhook's HTTPS listener (`/inject`, `/inject-annotated`). Default:
    /// 0.0.0.0:8444 with `--source kubernetes`; off with a mesh file unless given (it
    /// works there too, to try injection without a cluster).
    #[arg(long, env = "SEAM_WEBHOOK_LISTEN", value_name = "ADDR")]
    pub webhook_listen: Option<SocketAddr>,
    /// The image injected pods run seam-proxy (and seamctl) from.
    #[arg(long, env = "SEAM_PROXY_IMAGE", value_name = "IMAGE", default_value = crate::injector::DEFAULT_IMAGE)]
    pub proxy_image: String,
    /// Where injected proxies reach this control plane (default:
    /// `seam-control-plane.<namespace>.svc:8443`).
    #[arg(long, env = "SEAM_PROXY_CONTROL_PLANE", value_name = "HOST:PORT")]
    pub proxy_control_plane: Option<String>,
    /// `false` for clusters older than 1.29: injected proxies run as classic sidecars
    /// (a pod's annotation `seam.io/native-sidecar` overrides it).
    #[arg(long, env = "SEAM_NATIVE_SIDECAR", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub native_sidecar: bool,
}

/// Where the webhook listens with `--source kubernetes` when `--webhook-listen` is not given.
pub const DEFAULT_WEBHOOK_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8444);

impl Args {
    /// The webhook's listener, if it runs: `--webhook-listen`, else 0.0.0.0:8444 in a
    /// cluster. Off by default with a mesh file, where many control planes (tests, demos)
    /// share one machine.
    pub fn webhook_listener(&self) -> Option<SocketAddr> {
        self.webhook_listen.or(match self.source {
            SourceKind::Kubernetes => Some(DEFAULT_WEBHOOK_LISTEN),
            SourceKind::File => None,
        })
    }

    /// How the webhook injects pods.
    pub fn injection(&self) -> crate::injector::Settings {
        crate::injector::Settings {
            image: self.proxy_image.clone(),
            control_plane: self
                .proxy_control_plane
                .clone()
                .unwrap_or_else(|| format!("seam-control-plane.{}.svc:8443", self.namespace)),
            native_sidecar: self.native_sidecar,
            ..crate::injector::Settings::default()
        }
    }
}

/// Where the mesh model comes from (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// The mesh file (`--mesh-file`).
    File,
    /// Services, EndpointSlices, Pods and HTTPRoutes of a Kubernetes cluster.
    Kubernetes,
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if lifetime < Duration::from_secs(5) {
        return Err(format!(
            "{text} is too short; certificates must live at least 5s"
        ));
    }
    Ok(lifetime)
}

fn parse_refresh(text: &str) -> Result<Duration, String> {
    let refresh = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if refresh < crate::dns::MIN_INTERVAL {
        return Err(format!(
            "{text} is too short; names are resolved at most every 500ms"
        ));
    }
    Ok(refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_refresh_is_a_duration_of_at_least_500ms() {
        let args = |extra: &[&str]| {
            let mut all = vec!["seam-control-plane", "--mesh-file", "mesh.yaml"];
            all.extend_from_slice(extra);
            Args::try_parse_from(all)
        };
        assert_eq!(args(&[]).unwrap().dns_refresh, Duration::from_secs(2));
        assert_eq!(
            args(&["--dns-refresh", "500ms"]).unwrap().dns_refresh,
            Duration::from_millis(500)
        );
        let err = args(&["--dns-refresh", "100ms"]).unwrap_err().to_string();
        assert!(
            err.contains("100ms is too short; names are resolved at most every 500ms"),
            "{err}"
        );
        assert!(args(&["--dns-refresh", "often"]).is_err());
    }

    #[test]
    fn the_source_is_the_mesh_file_unless_kubernetes_is_asked_for() {
        let args = |all: &[&str]| Args::try_parse_from(all);
        let file = args(&["seam-control-plane", "--mesh-file", "mesh.yaml"]).unwrap();
        assert_eq!(file.source, SourceKind::File);
        assert_eq!(file.cluster_domain, "cluster.local");
        let kubernetes = args(&["seam-control-plane", "--source", "kubernetes"]).unwrap();
        assert_eq!(kubernetes.source, SourceKind::Kubernetes);
        assert_eq!(kubernetes.mesh_file, None);
        assert_eq!(kubernetes.namespace, "seam-system");
        // The webhook runs by default in a cluster only; an address given wins.
        assert_eq!(file.webhook_listener(), None);
        assert_eq!(
            kubernetes.webhook_listener(),
            Some("0.0.0.0:8444".parse().unwrap())
        );
        let given = args(&[
            "seam-control-plane",
            "--mesh-file",
            "m.yaml",
            "--webhook-listen",
            "127.0.0.1:0",
        ]);
        assert_eq!(
            given.unwrap().webhook_listener(),
            Some("127.0.0.1:0".parse().unwrap())
        );
    }
}
