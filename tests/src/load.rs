//! Bounded load through an app client, for tests that count outcomes: a fixed number of
//! GETs, a fixed number at a time, every reply kept; and ways to read the replies (who
//! served them, which failed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::client::{AppClient, Reply};

/// Sends `count` GETs for `host` + `path` through `app`, `concurrency` at a time; every
/// reply (or error) in the order they finished. `done` counts finished requests.
pub async fn load(
    app: &AppClient,
    host: &str,
    path: &str,
    count: usize,
    concurrency: usize,
    done: Arc<AtomicUsize>,
) -> Vec<anyhow::Result<Reply>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, host, path) = (app.clone(), host.to_string(), path.to_string());
        let (next, done) = (next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < count {
                replies.push(app.get(&host, &path).await);
                done.fetch_add(1, Ordering::SeqCst);
            }
            replies
        }));
    }
    let mut replies = Vec::with_capacity(count);
    for worker in workers {
        replies.extend(worker.await.expect("load worker"));
    }
    replies
}

/// The echo name of each successful reply, counted.
pub fn served_by(replies: &[anyhow::Result<Reply>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies.iter().flatten() {
        if reply.status == 200
            && let Ok(echo) = reply.json()
        {
            let name = echo["name"].as_str().unwrap_or_default().to_string();
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

pub fn failures(replies: &[anyhow::Result<Reply>]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|reply| match reply {
            Ok(reply) if reply.status == 200 => None,
            Ok(reply) => Some(format!("{} {}", reply.status, reply.text().trim())),
            Err(error) => Some(format!("{error:#}")),
        })
        .collect()
}
