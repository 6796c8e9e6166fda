//! `seamctl verify`: is mTLS actually on? For every caller → callee pair that carried
//! traffic, from the callee proxies' own counts (`/callers`): whether it came over mTLS
//! and with which identities on each side, how many requests were let through and how many
//! the allow list refused. A callee without a Seam proxy (a Kubernetes pod with no
//! sidecar, published as a plaintext endpoint) counts nothing itself, so its edges come
//! from the callers' side (`plaintext_callees` in their `/callers`). Any plaintext edge is
//! flagged, and `--require-mtls` turns that into a non-zero exit for CI.

use anyhow::bail;

use crate::ctl::fleet::{self, ProxyAnswer};
use crate::ctl::status::resolve;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The control plane's admin address (HOST:PORT).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Fail when any edge carried plaintext traffic.
    #[arg(long)]
    pub require_mtls: bool,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let Some(admin) = resolve(&args.admin).await?.into_iter().next() else {
        bail!("{:?} resolves to no address", args.admin);
    };
    let proxies = fleet::each_proxy(admin, "/callers").await?;
    let report = render(&proxies);
    print!("{}", report.text);
    if args.require_mtls && report.plaintext_edges > 0 {
        bail!(
            "{} edge(s) carried plaintext traffic",
            report.plaintext_edges
        );
    }
    Ok(())
}

pub struct Report {
    pub text: String,
    pub mtls_edges: usize,
    pub plaintext_edges: usize,
}

pub fn render(proxies: &[ProxyAnswer]) -> Report {
    let mut rows = vec![vec![
        "CALLER".to_owned(),
        "CALLEE".to_owned(),
        "TRANSPORT".to_owned(),
        "CALLER IDENTITY".to_owned(),
        "CALLEE IDENTITY".to_owned(),
        "ALLOWED".to_owned(),
        "DENIED".to_owned(),
    ]];
    let (mut mtls_edges, mut plaintext_edges) = (0, 0);
    let mut problems = Vec::new();
    for ProxyAnswer { proxy, answer } in proxies {
        let callers = match answer {
            Ok(callers) => callers,
            Err(err) => {
                problems.push(format!("{}: cannot read /callers: {err:#}", proxy.service));
                continue;
            }
        };
        let callee_id = callers["spiffe_id"].as_str().unwrap_or("-").to_owned();
        for caller in callers["callers"].as_array().into_iter().flatten() {
            let caller_id = caller["caller"].as_str().unwrap_or("-");
            let transport = caller["transport"].as_str().unwrap_or("-");
            let mtls = transport == "mtls";
            if mtls {
                mtls_edges += 1;
            } else {
                plaintext_edges += 1;
            }
            rows.push(vec![
                if mtls {
                    fleet::service_of(caller_id).to_owned()
                } else {
                    "(unauthenticated)".to_owned()
                },
                proxy.service.clone(),
                if mtls {
                    "mTLS".to_owned()
                } else {
                    "PLAINTEXT".to_owned()
                },
                if mtls {
                    caller_id.to_owned()
                } else {
                    "-".to_owned()
                },
                callee_id.clone(),
                caller["allowed"].as_u64().unwrap_or(0).to_string(),
                caller["denied"].as_u64().unwrap_or(0).to_string(),
            ]);
        }
        for callee in callers["plaintext_callees"]
            .as_array()
            .into_iter()
            .flatten()
        {
            plaintext_edges += 1;
            let sent =
                callee["requests"].as_u64().unwrap_or(0) + callee["streams"].as_u64().unwrap_or(0);
            rows.push(vec![
                proxy.service.clone(),
                callee["service"].as_str().unwrap_or("-").to_owned(),
                "PLAINTEXT".to_owned(),
                callee_id.clone(),
                "(no proxy)".to_owned(),
                sent.to_string(),
                "-".to_owned(),
            ]);
        }
    }
    let mut text = if rows.len() == 1 {
        "no traffic counted yet\n".to_owned()
    } else {
        fleet::table(&rows)
    };
    for problem in &problems {
        text.push_str(&format!("WARN {problem}\n"));
    }
    text.push_str(&match plaintext_edges {
        0 => format!("{mtls_edges} edge(s), all mTLS\n"),
        n => format!("WARN {n} of {} edge(s) carried plaintext\n", n + mtls_edges),
    });
    Report {
        text,
        mtls_edges,
        plaintext_edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::status::ProxyStatus;
    use serde_json::json;

    fn proxy(service: &str, callers: serde_json::Value) -> ProxyAnswer {
        ProxyAnswer {
            proxy: ProxyStatus {
                service: service.into(),
                spiffe_id: None,
                admin_addr: None,
                subscriptions: vec![],
                nacks_total: 0,
            },
            answer: Ok(callers),
        }
    }

    #[test]
    fn a_callee_without_a_proxy_is_a_plaintext_edge_seen_from_its_caller() {
        let web = "spiffe://seam.local/ns/shop/sa/web";
        let proxies = [
            proxy(
                "web.shop",
                json!({
                    "spiffe_id": web,
                    "callers": [],
                    "plaintext_callees": [
                        {"service": "legacy.shop", "requests": 3, "streams": 1}
                    ],
                }),
            ),
            proxy(
                "api.shop",
                json!({
                    "spiffe_id": "spiffe://seam.local/ns/shop/sa/api",
                    "callers": [
                        {"caller": web, "transport": "mtls", "allowed": 5, "denied": 0}
                    ],
                }),
            ),
        ];
        let report = render(&proxies);
        assert_eq!((report.mtls_edges, report.plaintext_edges), (1, 1));
        let edge = report
            .text
            .lines()
            .find(|line| line.contains("legacy.shop"))
            .expect(&report.text);
        for cell in ["web.shop", "PLAINTEXT", web, "(no proxy)", "4"] {
            assert!(edge.contains(cell), "{cell} missing from {edge:?}");
        }
        assert!(
            report
                .text
                .contains("WARN 1 of 2 edge(s) carried plaintext")
        );
    }
}
