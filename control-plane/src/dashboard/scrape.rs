//! The dashboard's scraper, a background task of the control plane started with its
//! admin listener: every [`INTERVAL`] it reads every connected proxy's admin `/metrics`,
//! `/callers` (who called it, over mTLS or not), `/config` (which endpoints it has
//! ejected) and `/identity` (its certificate), at most [`CONCURRENCY`] proxies at a time
//! and each within [`PROXY_TIMEOUT`]. A proxy that does not answer is marked with why and
//! never holds up the others; its counters are left out of that round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};

use super::history::{History, Round};
use crate::ctl::stat_table::Snapshot;
use crate::launch;
use crate::registry::{ProxyRecord, ProxyRegistry};

/// Time between scrapes.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one proxy may take to answer all four reads; under [`INTERVAL`], so rounds
/// never overlap.
pub const PROXY_TIMEOUT: Duration = Duration::from_millis(1500);
/// Proxies read at the same time.
pub const CONCURRENCY: usize = 16;

/// What one proxy answered in one round.
#[derive(Clone, Debug)]
pub struct ProxyScrape {
    /// The control plane's record of it when the round began.
    pub record: ProxyRecord,
    pub callers: Option<Value>,
    pub config: Option<Value>,
    pub identity: Option<Value>,
    /// Why some or all of it could not be read.
    pub error: Option<String>,
}

/// Scrapes every proxy each [`INTERVAL`] into `history`, for as long as the task runs.
pub async fn run(registry: Arc<ProxyRegistry>, history: Arc<Mutex<History>>) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let round = scrape_round(registry.snapshot()).await;
        history.lock().record(round);
    }
}

/// Reads every proxy of `records`.
pub async fn scrape_round(records: Vec<ProxyRecord>) -> Round {
    let taken = Instant::now();
    let at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let answers: Vec<(ProxyScrape, Option<String>)> = futures_util::stream::iter(records)
        .map(scrape_proxy)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut snapshot = Snapshot::default();
    let mut proxies = Vec::with_capacity(answers.len());
    for (proxy, metrics) in answers {
        if let Some(metrics) = metrics {
            snapshot.add_proxy(&proxy.record.service, &metrics);
        }
        proxies.push(proxy);
    }
    proxies.sort_by_key(|proxy| proxy.record.id);
    Round {
        taken,
        at_unix_ms,
        snapshot,
        proxies,
    }
}

/// One proxy's four reads, and its `/metrics` text when that read worked.
async fn scrape_proxy(record: ProxyRecord) -> (ProxyScrape, Option<String>) {
    let mut scrape = ProxyScrape {
        record,
        callers: None,
        config: None,
        identity: None,
        error: None,
    };
    let address = match scrape
        .record
        .admin_addr
        .as_deref()
        .map(str::parse::<SocketAddr>)
    {
        Some(Ok(address)) => address,
        Some(Err(_)) => {
            scrape.error = Some("its admin address is not IP:port".into());
            return (scrape, None);
        }
        None => {
            scrape.error = Some("it did not say where its admin listener is".into());
            return (scrape, None);
        }
    };
    let reads = async {
        tokio::join!(
            get_text(address, "/metrics"),
            get_json(address, "/callers"),
            get_json(address, "/config"),
            get_json(address, "/identity"),
        )
    };
    let Ok((metrics, callers, config, identity)) = tokio::time::timeout(PROXY_TIMEOUT, reads).await
    else {
        scrape.error = Some(format!("{address} did not answer within {PROXY_TIMEOUT:?}"));
        return (scrape, None);
    };
    let mut problems = Vec::new();
    let mut keep = |result: anyhow::Result<Value>| match result {
        Ok(value) => Some(value),
        Err(error) => {
            problems.push(format!("{error:#}"));
            None
        }
    };
    scrape.callers = keep(callers);
    scrape.config = keep(config);
    scrape.identity = keep(identity);
    let metrics = match metrics {
        Ok(text) => Some(text),
        Err(error) => {
            problems.push(format!("{error:#}"));
            None
        }
    };
    if !problems.is_empty() {
        scrape.error = Some(problems.join("; "));
    }
    (scrape, metrics)
}

async fn get_text(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = launch::http_get(address, path)
        .await
        .with_context(|| format!("cannot reach {address}{path}"))?;
    if status != 200 {
        bail!("{address}{path} answered {status}: {}", body.trim());
    }
    Ok(body)
}

async fn get_json(address: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let body = get_text(address, path).await?;
    serde_json::from_str(&body).with_context(|| format!("{address}{path} is not JSON"))
}
