//! `/api/services/NAME`: one service in detail — its golden metrics over the last ~5
//! minutes (what it answered; for a service nobody calls, what it sent), the edges in and out of it, its endpoints with those some proxy has ejected
//! marked, what the control plane pushes for it (routes, policy, allow list), and its
//! proxies with the version each ACKed or why it NACKed. Pure, like `graph`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::graph::{self, Edge};
use super::history::{History, Point};
use super::model_json;
use super::scrape::ProxyScrape;
use crate::ctl::stat_table::RowKey;
use crate::model::MeshModel;
use crate::registry::ProxyRecord;

/// The detail of `name`, or `None` when neither the model, the proxies nor the metrics
/// know it.
pub fn service_view(
    name: &str,
    history: &History,
    model: &MeshModel,
    records: &[ProxyRecord],
) -> Option<Value> {
    let inbound = history.series(&RowKey::Service(name.to_owned()));
    let (series_of, series) = if inbound.is_empty() {
        ("outbound", combine(history.series_out_of(name)))
    } else {
        ("inbound", inbound)
    };
    let in_model = model.services().get(name);
    let graph = graph::graph(history, model.services().keys().map(String::as_str));
    let node = graph.nodes.iter().find(|node| node.service == name);
    let own_records: Vec<&ProxyRecord> = records
        .iter()
        .filter(|record| record.service == name)
        .collect();
    if in_model.is_none() && own_records.is_empty() && node.is_none() && series.is_empty() {
        return None;
    }
    let scraped: &[ProxyScrape] = history.latest().map_or(&[], |round| &round.proxies);
    let edge_json = |edge: &Edge| serde_json::to_value(edge).unwrap_or(Value::Null);
    Some(json!({
        "service": name,
        "model_version": model.version,
        "in_mesh_file": in_model.is_some(),
        "window_seconds": graph.window_seconds,
        "now": node,
        "series_of": series_of,
        "series": series,
        "calls": graph.edges.iter().filter(|e| e.caller == name).map(edge_json).collect::<Vec<_>>(),
        "called_by": graph.edges.iter().filter(|e| e.callee == name).map(edge_json).collect::<Vec<_>>(),
        "endpoints": in_model.map(|service| {
            service
                .endpoints
                .iter()
                .map(|endpoint| endpoint_state(&endpoint.address.to_string(), &endpoint.identity.as_ref().map_or_else(|| "plaintext".to_owned(), ToString::to_string), scraped))
                .collect::<Vec<_>>()
        }).unwrap_or_default(),
        "dns_endpoints": in_model.map(|service| model_json::endpoints(service)["dns_endpoints"].clone()),
        "pushed": in_model.map(model_json::pushed),
        "proxies": own_records
            .iter()
            .map(|record| proxy_state(record, scraped))
            .collect::<Vec<_>>(),
    }))
}

/// The series of a service nobody calls, from the edges out of it, point by point (the
/// points of one round share their time): requests per second summed, the success rate
/// weighted by them, and each percentile the highest of the edges' (exact with one edge,
/// an upper bound with more).
fn combine(edges: Vec<Vec<Point>>) -> Vec<Point> {
    let mut by_time: BTreeMap<u64, Vec<Point>> = BTreeMap::new();
    for point in edges.into_iter().flatten() {
        by_time.entry(point.at_unix_ms).or_default().push(point);
    }
    by_time
        .into_iter()
        .map(|(at_unix_ms, points)| {
            let rps: f64 = points.iter().map(|point| point.rps).sum();
            let successes: f64 = points
                .iter()
                .filter_map(|point| Some(point.success_rate? * point.rps))
                .sum();
            let answered: f64 = points
                .iter()
                .filter(|point| point.success_rate.is_some())
                .map(|point| point.rps)
                .sum();
            let highest =
                |field: fn(&Point) -> Option<f64>| points.iter().filter_map(field).reduce(f64::max);
            Point {
                at_unix_ms,
                success_rate: (answered > 0.0).then(|| successes / answered),
                rps,
                p50_ms: highest(|point| point.p50_ms),
                p95_ms: highest(|point| point.p95_ms),
                p99_ms: highest(|point| point.p99_ms),
            }
        })
        .collect()
}

/// An endpoint, `ejected` when some proxy's breaker holds it out now (`probing` when
/// the only ones that do are letting a probe through), with who ejected it.
fn endpoint_state(address: &str, identity: &str, scraped: &[ProxyScrape]) -> Value {
    let mut ejected_by = Vec::new();
    for proxy in scraped {
        let ejected = proxy
            .config
            .as_ref()
            .and_then(|config| config["ejected_endpoints"].as_array());
        for entry in ejected.into_iter().flatten() {
            if entry["address"].as_str() == Some(address) {
                ejected_by.push(json!({
                    "proxy": proxy.record.spiffe_id,
                    "service": proxy.record.service,
                    "remaining_ms": entry["remaining_ms"],
                    "probing": entry["probing"],
                    "times_ejected": entry["times_ejected"],
                }));
            }
        }
    }
    let state = if ejected_by.is_empty() {
        "ok"
    } else if ejected_by.iter().all(|by| by["probing"] == true) {
        "probing"
    } else {
        "ejected"
    };
    json!({
        "address": address,
        "identity": identity,
        "state": state,
        "ejected_by": ejected_by,
    })
}

/// A proxy as the registry holds it, with whether the latest scrape could read it.
fn proxy_state(record: &ProxyRecord, scraped: &[ProxyScrape]) -> Value {
    let scrape = scraped.iter().find(|proxy| proxy.record.id == record.id);
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    value["scraped"] = json!(scrape.is_some());
    value["scrape_error"] = json!(scrape.and_then(|proxy| proxy.error.clone()));
    value
}
