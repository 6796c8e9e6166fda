//! Reads one admin endpoint of every proxy connected to the control plane: the control
//! plane's `/proxies` says who is connected and where each proxy's admin listener is, and
//! each proxy answers for itself (`/identity`, `/callers`). Used by `seamctl certs` and
//! `seamctl verify`, which both report what the proxies themselves hold and count.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::ctl::status::{self, ProxyStatus};
use crate::launch;

/// One connected proxy and what its admin endpoint answered.
pub struct ProxyAnswer {
    pub proxy: ProxyStatus,
    pub answer: anyhow::Result<Value>,
}

/// `GET <path>` on every connected proxy, in the control plane's order.
pub async fn each_proxy(admin: SocketAddr, path: &str) -> anyhow::Result<Vec<ProxyAnswer>> {
    let proxies = status::fetch(admin).await?.proxies;
    let mut answers = Vec::with_capacity(proxies.len());
    for proxy in proxies {
        let answer = match &proxy.admin_addr {
            Some(address) => get_json(address, path).await,
            None => Err(anyhow::anyhow!(
                "the proxy did not say where its admin port is"
            )),
        };
        answers.push(ProxyAnswer { proxy, answer });
    }
    Ok(answers)
}

async fn get_json(address: &str, path: &str) -> anyhow::Result<Value> {
    let address: SocketAddr = address
        .parse()
        .with_context(|| format!("admin address {address:?} is not an IP:port"))?;
    let (status, body) = launch::http_get(address, path)
        .await
        .with_context(|| format!("cannot reach the proxy admin at {address}"))?;
    if status != 200 {
        bail!("{address}{path} answered {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{address}{path} is not JSON"))
}

/// The service of a `spiffe://<td>/ns/<ns>/sa/<service>` id, or the id itself.
pub fn service_of(spiffe_id: &str) -> &str {
    match spiffe_id.rsplit_once("/sa/") {
        Some((_, service)) if !service.contains('/') => service,
        _ => spiffe_id,
    }
}

/// Pads the columns of `rows` to their widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}
