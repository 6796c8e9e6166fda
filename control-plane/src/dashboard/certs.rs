//! `/api/certs`: every connected proxy's certificate as the proxy itself reports it on
//! its admin `/identity` (identity, serial, issuing root, expiry), beside the control
//! plane's trust bundle and where a root rotation stands (what `/ca` serves). Pure.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::scrape::ProxyScrape;

/// `ca_state` is the control plane's `/ca` answer; `scraped` the latest scrape.
pub fn certs_view(ca_state: Value, scraped: &[ProxyScrape], now: SystemTime) -> Value {
    let trusted: Vec<&str> = ca_state["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|root| root["key_id"].as_str())
        .collect();
    let proxies: Vec<Value> = scraped
        .iter()
        .map(|proxy| {
            let Some(identity) = &proxy.identity else {
                return json!({
                    "service": proxy.record.service,
                    "spiffe_id": proxy.record.spiffe_id,
                    "error": proxy.error.clone().unwrap_or_else(|| "no /identity answer".into()),
                });
            };
            let not_after = identity["not_after"].as_str().unwrap_or_default();
            let expires_in_seconds = humantime::parse_rfc3339(not_after).ok().map(|expiry| {
                match expiry.duration_since(now) {
                    Ok(left) => left.as_secs_f64(),
                    Err(past) => -past.duration().as_secs_f64(),
                }
            });
            let issuer = identity["issuer_key_id"].as_str().unwrap_or_default();
            json!({
                "service": proxy.record.service,
                "spiffe_id": identity["spiffe_id"],
                "serial": identity["serial"],
                "not_before": identity["not_before"],
                "not_after": identity["not_after"],
                "expires_in_seconds": expires_in_seconds,
                "issuer": identity["issuer"],
                "issuer_key_id": issuer,
                "issuer_trusted": trusted.contains(&issuer),
                "issued_by_signing_root": trusted.first() == Some(&issuer),
            })
        })
        .collect();
    json!({
        "trust_domain": ca_state["trust_domain"],
        "rotation": ca_state["rotation"],
        "roots": ca_state["roots"],
        "proxies": proxies,
    })
}
