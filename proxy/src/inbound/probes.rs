//! The app's health-check paths that plaintext may reach (`--probe-paths`). In a pod
//! whose inbound TCP iptables redirects to the proxy, the kubelet's HTTP and gRPC probes
//! arrive here in plaintext, without an identity; a service that accepts only mTLS would
//! refuse them and the pod would never become ready. So a plaintext request whose
//! destination port and path are listed, with a probe's method (GET or HEAD; POST too
//! for the gRPC health check), is let through as an unmeshed caller; every other
//! plaintext request is refused as before. The list is consulted only for plaintext
//! connections: mTLS callers never pay for it.

use http::Method;

/// The path of the gRPC health check, which the kubelet's `grpc` probes call (POST).
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// One `PORT:PATH` entry of `--probe-paths`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePath {
    pub port: u16,
    /// The path alone: a query in the flag is dropped, as it is from requests.
    pub path: String,
}

impl std::str::FromStr for ProbePath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let entry = text.trim();
        let (port, path) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?} is not PORT:PATH (such as 8080:/healthz)"))?;
        let port = match port.trim().parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{port:?} in {entry:?} is not a port (1-65535)")),
        };
        let path = path.trim();
        let path = path.split_once('?').map_or(path, |(path, _query)| path);
        if !path.starts_with('/') {
            return Err(format!(
                "{path:?} in {entry:?} is not a path (it must start with /)"
            ));
        }
        Ok(Self {
            port,
            path: path.to_owned(),
        })
    }
}

/// Every probe path of the pod's app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbePaths {
    paths: Vec<ProbePath>,
}

impl ProbePaths {
    pub fn new(paths: Vec<ProbePath>) -> Self {
        Self { paths }
    }

    /// Whether any probe path is on `port` (else a plaintext connection to it is refused
    /// at once, as it would be without probes).
    pub fn on_port(&self, port: u16) -> bool {
        self.paths.iter().any(|probe| probe.port == port)
    }

    /// Whether a plaintext request to `port` with this method and path is a probe.
    pub fn admits(&self, port: u16, method: &Method, path: &str) -> bool {
        let listed = || {
            self.paths
                .iter()
                .any(|probe| probe.port == port && probe.path == path)
        };
        match *method {
            Method::GET | Method::HEAD => listed(),
            Method::POST => path == GRPC_HEALTH_PATH && listed(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[&str]) -> ProbePaths {
        ProbePaths::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn an_entry_is_a_port_and_a_path() {
        assert_eq!(
            "8080:/healthz".parse::<ProbePath>(),
            Ok(ProbePath {
                port: 8080,
                path: "/healthz".into()
            })
        );
        assert_eq!(
            " 8081:/ready?verbose=1 ".parse::<ProbePath>().unwrap().path,
            "/ready"
        );
    }

    #[test]
    fn a_bad_entry_is_named_in_the_error() {
        for (bad, says) in [
            ("/healthz", "\"/healthz\" is not PORT:PATH"),
            (
                "http:/healthz",
                "\"http\" in \"http:/healthz\" is not a port",
            ),
            ("0:/healthz", "\"0\" in \"0:/healthz\" is not a port"),
            ("70000:/x", "\"70000\" in \"70000:/x\" is not a port"),
            (
                "8080:healthz",
                "\"healthz\" in \"8080:healthz\" is not a path",
            ),
            ("8080:", "\"\" in \"8080:\" is not a path"),
        ] {
            let error = bad.parse::<ProbePath>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn only_a_probe_method_on_a_listed_port_and_path_is_admitted() {
        let probes = paths(&["8080:/healthz", "9090:/grpc.health.v1.Health/Check"]);
        let grpc = GRPC_HEALTH_PATH;
        // (port, method, path, admitted)
        let rows = [
            (8080, Method::GET, "/healthz", true),
            (8080, Method::HEAD, "/healthz", true),
            (8080, Method::POST, "/healthz", false),
            (8080, Method::PUT, "/healthz", false),
            (8080, Method::GET, "/healthz/", false),
            (8080, Method::GET, "/other", false),
            (8081, Method::GET, "/healthz", false),
            (9090, Method::POST, grpc, true),
            (9090, Method::GET, grpc, true),
            (8080, Method::POST, grpc, false),
        ];
        for (port, method, path, admitted) in rows {
            assert_eq!(
                probes.admits(port, &method, path),
                admitted,
                "{method} {port}{path}"
            );
        }
        assert!(probes.on_port(8080) && probes.on_port(9090) && !probes.on_port(8081));
        assert!(!ProbePaths::default().on_port(8080));
    }
}
