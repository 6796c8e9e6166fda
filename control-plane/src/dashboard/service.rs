//! `/api/services/NAME`: one service in detail — its golden metrics over the last ~5
//! minutes, the edges in and out of it, its endpoints with those some proxy has ejected
//! marked, what the control plane pushes for it (routes, policy, allow list), and its
//! proxies with the version each ACKed or why it NACKed. Pure, like `graph`.

use serde_json::{Value, json};

use super::graph::{self, Edge};
use super::history::History;
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
    let series = history.series(&RowKey::Service(name.to_owned()));
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
        "series": series,
        "calls": graph.edges.iter().filter(|e| e.caller == name).map(edge_json).collect::<Vec<_>>(),
        "called_by": graph.edges.iter().filter(|e| e.callee == name).map(edge_json).collect::<Vec<_>>(),
        "endpoints": in_model.map(|service| {
            service
                .endpoints
                .iter()
                .map(|endpoint| endpoint_state(&endpoint.address.to_string(), &endpoint.identity.to_string(), scraped))
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
