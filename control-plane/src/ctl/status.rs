//! `seamctl status`: the control plane's view of its proxies, from its admin `/proxies`,
//! as a table — who is connected, with which identity, what each one subscribed to and
//! which version it last ACKed, and whether it rejected (NACKed) anything and why.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::launch;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The control plane's admin address (HOST:PORT).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
}

/// `GET /proxies` as the control plane serves it (see CONTRACT.md). Unknown fields are
/// ignored and missing ones default, so an older or newer control plane still prints.
#[derive(Debug, Deserialize)]
pub struct ProxiesResponse {
    #[serde(default)]
    pub proxies: Vec<ProxyStatus>,
}

#[derive(Debug, Deserialize)]
pub struct ProxyStatus {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub spiffe_id: Option<String>,
    #[serde(default)]
    pub admin_addr: Option<String>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionStatus>,
    #[serde(default)]
    pub nacks_total: u64,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionStatus {
    pub authority: String,
    #[serde(default)]
    pub sent_version: Option<u64>,
    #[serde(default)]
    pub acked_version: Option<u64>,
    #[serde(default)]
    pub nack: Option<Nack>,
}

#[derive(Debug, Deserialize)]
pub struct Nack {
    pub version: u64,
    pub reason: String,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    // `localhost` may resolve to ::1 and 127.0.0.1 while the admin listens on one of them.
    let mut last_error = None;
    for admin in resolve(&args.admin).await? {
        match fetch(admin).await {
            Ok(proxies) => {
                print!("{}", render(&proxies));
                return Ok(());
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{:?} resolves to no address", args.admin)))
}

pub(crate) async fn resolve(admin: &str) -> anyhow::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(admin)
        .await
        .with_context(|| {
            format!("cannot resolve the control plane admin address {admin:?} (want HOST:PORT)")
        })?
        .collect())
}

/// Reads `/proxies` from the control plane at `admin`.
pub async fn fetch(admin: SocketAddr) -> anyhow::Result<ProxiesResponse> {
    let (status, body) = launch::http_get(admin, "/proxies").await.with_context(|| {
        format!(
            "cannot reach the control plane admin at {admin} \
             (is seam-control-plane running? pass --admin or set SEAM_ADMIN)"
        )
    })?;
    if status != 200 {
        bail!(
            "the control plane admin at {admin} answered {status} to /proxies: {}",
            body.trim()
        );
    }
    serde_json::from_str(&body)
        .with_context(|| format!("the control plane admin at {admin} sent unreadable /proxies"))
}

/// The table, one row per proxy, columns padded to their widest cell.
pub fn render(response: &ProxiesResponse) -> String {
    if response.proxies.is_empty() {
        return "no proxies connected\n".to_owned();
    }
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "IDENTITY".to_owned(),
        "ADMIN".to_owned(),
        "SUBSCRIPTIONS (acked version)".to_owned(),
        "NACKS".to_owned(),
        "LAST NACK".to_owned(),
    ]];
    for proxy in &response.proxies {
        rows.push([
            proxy.service.clone(),
            proxy.spiffe_id.clone().unwrap_or_else(|| "-".into()),
            proxy.admin_addr.clone().unwrap_or_else(|| "-".into()),
            subscriptions_cell(&proxy.subscriptions),
            proxy.nacks_total.to_string(),
            last_nack_cell(&proxy.subscriptions),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = width - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', padding));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `back@3, api@2 (sent 4)`: the ACKed version, and the sent one when it is ahead.
fn subscriptions_cell(subscriptions: &[SubscriptionStatus]) -> String {
    if subscriptions.is_empty() {
        return "-".to_owned();
    }
    subscriptions
        .iter()
        .map(|subscription| {
            let acked = subscription
                .acked_version
                .map_or_else(|| "-".to_owned(), |version| version.to_string());
            match subscription.sent_version {
                Some(sent) if subscription.acked_version != Some(sent) => {
                    format!("{}@{acked} (sent {sent})", subscription.authority)
                }
                _ => format!("{}@{acked}", subscription.authority),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reason of the most recent NACK; versions grow over time, so the highest is latest.
fn last_nack_cell(subscriptions: &[SubscriptionStatus]) -> String {
    subscriptions
        .iter()
        .filter_map(|subscription| Some((&subscription.authority, subscription.nack.as_ref()?)))
        .max_by_key(|(_, nack)| nack.version)
        .map_or_else(
            || "-".to_owned(),
            |(authority, nack)| format!("{authority} v{}: {}", nack.version, nack.reason),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_row_per_proxy_with_versions_and_nacks() {
        let body = r#"{"proxies":[
          {"id":1,"service":"front","spiffe_id":"spiffe://seam.local/ns/default/sa/front",
           "admin_addr":"127.0.0.1:4191","connected_at_unix":1763789000,
           "subscriptions":[{"authority":"back","sent_version":3,"acked_version":3,"nack":null}],
           "nacks_total":0},
          {"id":2,"service":"back","spiffe_id":"spiffe://seam.local/ns/default/sa/back",
           "admin_addr":"127.0.0.1:4192","connected_at_unix":1763789001,
           "subscriptions":[{"authority":"db","sent_version":5,"acked_version":4,
             "nack":{"version":5,"reason":"endpoint has no identity"}}],
           "nacks_total":2}]}"#;
        let response: ProxiesResponse = serde_json::from_str(body).expect("sample /proxies parses");
        assert_eq!(
            render(&response),
            "SERVICE  IDENTITY                                 ADMIN           SUBSCRIPTIONS (acked version)  NACKS  LAST NACK\n\
             front    spiffe://seam.local/ns/default/sa/front  127.0.0.1:4191  back@3                         0      -\n\
             back     spiffe://seam.local/ns/default/sa/back   127.0.0.1:4192  db@4 (sent 5)                  2      db v5: endpoint has no identity\n"
        );
        let empty: ProxiesResponse =
            serde_json::from_str(r#"{"proxies":[]}"#).expect("empty /proxies parses");
        assert_eq!(render(&empty), "no proxies connected\n");
    }
}
