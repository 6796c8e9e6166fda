//! How a Kubernetes user names a Service, turned into the mesh's `NAME.NAMESPACE`: `name`
//! (in the caller's namespace), `name.ns`, `name.ns.svc` and
//! `name.ns.svc.<cluster-domain>`, each with or without `:port`, as cluster DNS answers
//! them. Pure string rules; addresses (ClusterIP:port, pod IP:port, a bare pod IP) are the
//! model's to resolve (`model::resolve`).

/// A Service named by an authority: its mesh name and the port asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// `NAME.NAMESPACE`.
    pub key: String,
    pub port: Option<u16>,
}

/// The Service `authority` names for a caller in `caller_namespace` (`None` when the
/// caller's identity names no namespace: then a bare `name` names nothing), or `None`
/// when it is not a Service name of this cluster.
pub fn service_name(
    authority: &str,
    caller_namespace: Option<&str>,
    cluster_domain: &str,
) -> Option<ServiceName> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().ok()?)),
        None => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().any(|label| label.is_empty()) {
        return None;
    }
    let (name, namespace) = match labels.as_slice() {
        [name] => (*name, caller_namespace?),
        [name, namespace] | [name, namespace, "svc"] => (*name, *namespace),
        [name, namespace, "svc", domain @ ..] => {
            let cluster_domain = cluster_domain.strip_suffix('.').unwrap_or(cluster_domain);
            if !domain.join(".").eq_ignore_ascii_case(cluster_domain) {
                return None;
            }
            (*name, *namespace)
        }
        _ => return None,
    };
    Some(ServiceName {
        key: format!("{name}.{namespace}"),
        port,
    })
}

/// The namespace of a workload identity `spiffe://<td>/ns/<namespace>/sa/<account>`.
pub fn namespace_of(spiffe_path: &str) -> Option<&str> {
    match spiffe_path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "ns", namespace, "sa", _] => Some(namespace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Named = Option<(String, Option<u16>)>;

    fn named(authority: &str) -> Named {
        service_name(authority, Some("shop"), "cluster.local").map(|name| (name.key, name.port))
    }

    #[test]
    fn every_name_a_kubernetes_user_writes_names_the_service() {
        let web = |port: Option<u16>| Some(("web.shop".to_owned(), port));
        let cases: &[(&str, Named)] = &[
            ("web", web(None)),
            ("web:80", web(Some(80))),
            ("web.shop", web(None)),
            ("web.shop:8080", web(Some(8080))),
            ("web.shop.svc", web(None)),
            ("web.shop.svc:80", web(Some(80))),
            ("web.shop.svc.cluster.local", web(None)),
            ("web.shop.svc.cluster.local:80", web(Some(80))),
            ("web.shop.svc.cluster.local.:80", web(Some(80))),
            ("WEB.Shop.svc.Cluster.Local", web(None)),
            ("db.data:5432", Some(("db.data".to_owned(), Some(5432)))),
        ];
        for (authority, expected) in cases {
            assert_eq!(&named(authority), expected, "{authority}");
        }
    }

    #[test]
    fn other_names_name_no_service() {
        for authority in [
            "web.shop.svc.other.domain",
            "web.shop.pod",
            "web.shop.svc.cluster",
            "a.b.c.d.e.f.g",
            "web..shop",
            "web:http",
            "web:70000",
            "",
        ] {
            assert_eq!(named(authority), None, "{authority}");
        }
    }

    #[test]
    fn a_bare_name_needs_the_callers_namespace() {
        assert_eq!(service_name("web", None, "cluster.local"), None);
        assert_eq!(
            service_name("web", Some("blog"), "cluster.local").map(|name| name.key),
            Some("web.blog".to_owned())
        );
    }

    #[test]
    fn the_callers_namespace_comes_from_its_workload_identity() {
        assert_eq!(namespace_of("/ns/shop/sa/web"), Some("shop"));
        assert_eq!(namespace_of("/ns/shop"), None);
        assert_eq!(namespace_of(""), None);
    }
}
