//! `/api/graph`: the service graph over the last window — services as nodes coloured by
//! health, caller → callee edges with success rate, requests per second, p99 and whether
//! the callee saw the caller over mTLS. Pure: built from the scrape history and the model.

use std::collections::BTreeSet;

use serde::Serialize;

use super::history::History;
use super::scrape::ProxyScrape;
use crate::ctl::fleet::service_of;
use crate::ctl::stat_table::{RowKey, RowStats};

/// At or above: healthy (green).
pub const HEALTHY_SUCCESS_RATE: f64 = 0.99;
/// At or above, and below healthy: degraded (amber). Below: failing (red).
pub const DEGRADED_SUCCESS_RATE: f64 = 0.95;

#[derive(Debug, Serialize)]
pub struct Graph {
    /// The time the numbers cover; 0 until two scrapes were taken.
    pub window_seconds: f64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Proxies whose admin endpoints could not be read in the latest scrape.
    pub unreachable: Vec<Unreachable>,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub service: String,
    pub health: Health,
    /// What its own proxies answered (inbound); for a service nobody calls, what it got
    /// back from the services it called.
    pub success_rate: Option<f64>,
    /// Requests it answered per second; for a service nobody calls, requests it sent.
    pub rps: f64,
    pub p99_ms: Option<f64>,
    pub proxies: usize,
    pub unreachable_proxies: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Failing,
    /// No requests in the window.
    Idle,
}

impl Health {
    pub fn of(success_rate: Option<f64>) -> Self {
        match success_rate {
            None => Self::Idle,
            Some(rate) if rate >= HEALTHY_SUCCESS_RATE => Self::Healthy,
            Some(rate) if rate >= DEGRADED_SUCCESS_RATE => Self::Degraded,
            Some(_) => Self::Failing,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub transport: Transport,
}

/// How the callee's proxies saw the caller arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Over mTLS, with the caller's identity.
    Mtls,
    /// Without mTLS: the callee counted unauthenticated callers and none with this
    /// caller's identity.
    Plaintext,
    /// The callee's proxies counted neither (not meshed, or not readable).
    Unknown,
}

#[derive(Debug, Serialize)]
pub struct Unreachable {
    pub service: String,
    pub spiffe_id: String,
    pub admin_addr: Option<String>,
    pub error: String,
}

/// The graph from `history`, with every service of `model_services` as a node even
/// when it has no traffic or no proxy.
pub fn graph<'a>(history: &History, model_services: impl IntoIterator<Item = &'a str>) -> Graph {
    let (window_seconds, rows) = history
        .window()
        .map_or((0.0, Vec::new()), |(window, rows)| {
            (window.as_secs_f64(), rows)
        });
    let proxies: &[ProxyScrape] = history.latest().map_or(&[], |round| &round.proxies);

    let edges: Vec<Edge> = rows
        .iter()
        .filter_map(|row| match &row.key {
            RowKey::Edge { caller, callee } => Some(Edge {
                caller: caller.clone(),
                callee: callee.clone(),
                rps: row.requests_per_second,
                success_rate: row.success_rate,
                p99_ms: row.p99.map(|d| d.as_secs_f64() * 1e3),
                transport: transport(caller, callee, proxies),
            }),
            RowKey::Service(_) => None,
        })
        .collect();

    let mut names: BTreeSet<String> = model_services.into_iter().map(str::to_owned).collect();
    names.extend(proxies.iter().map(|proxy| proxy.record.service.clone()));
    for edge in &edges {
        names.insert(edge.caller.clone());
        names.insert(edge.callee.clone());
    }
    let nodes = names
        .into_iter()
        .map(|service| node(service, &rows, &edges, proxies))
        .collect();
    let unreachable = proxies
        .iter()
        .filter_map(|proxy| {
            Some(Unreachable {
                service: proxy.record.service.clone(),
                spiffe_id: proxy.record.spiffe_id.clone(),
                admin_addr: proxy.record.admin_addr.clone(),
                error: proxy.error.clone()?,
            })
        })
        .collect();
    Graph {
        window_seconds,
        nodes,
        edges,
        unreachable,
    }
}

fn node(service: String, rows: &[RowStats], edges: &[Edge], proxies: &[ProxyScrape]) -> Node {
    let inbound = rows
        .iter()
        .find(|row| row.key == RowKey::Service(service.clone()));
    let (success_rate, rps, p99_ms) = match inbound.filter(|row| row.success_rate.is_some()) {
        Some(row) => (
            row.success_rate,
            row.requests_per_second,
            row.p99.map(|d| d.as_secs_f64() * 1e3),
        ),
        None => {
            let (success_rate, rps) = outbound(&service, edges);
            (success_rate, rps, None)
        }
    };
    let own: Vec<&ProxyScrape> = proxies
        .iter()
        .filter(|proxy| proxy.record.service == service)
        .collect();
    Node {
        health: Health::of(success_rate),
        success_rate,
        rps,
        p99_ms,
        proxies: own.len(),
        unreachable_proxies: own.iter().filter(|proxy| proxy.error.is_some()).count(),
        service,
    }
}

/// The success rate of everything `service` sent (each edge weighted by its rate), and
/// the requests per second it sent.
fn outbound(service: &str, edges: &[Edge]) -> (Option<f64>, f64) {
    let (mut requests, mut successes) = (0.0, 0.0);
    for edge in edges.iter().filter(|edge| edge.caller == service) {
        if let Some(rate) = edge.success_rate {
            requests += edge.rps;
            successes += edge.rps * rate;
        }
    }
    ((requests > 0.0).then(|| successes / requests), requests)
}

/// What the callee's proxies' `/callers` say about how `caller` reached them.
pub fn transport(caller: &str, callee: &str, proxies: &[ProxyScrape]) -> Transport {
    let mut plaintext_seen = false;
    for proxy in proxies
        .iter()
        .filter(|proxy| proxy.record.service == callee)
    {
        let entries = proxy
            .callers
            .as_ref()
            .and_then(|callers| callers["callers"].as_array());
        for entry in entries.into_iter().flatten() {
            match entry["transport"].as_str() {
                Some("mtls") if entry["caller"].as_str().map(service_of) == Some(caller) => {
                    return Transport::Mtls;
                }
                Some("plaintext") => plaintext_seen = true,
                _ => {}
            }
        }
    }
    if plaintext_seen {
        Transport::Plaintext
    } else {
        Transport::Unknown
    }
}
