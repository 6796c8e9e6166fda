//! Bounded load through an app client, for tests that count outcomes: a fixed number of
//! GETs, a fixed number at a time, every reply kept ([`load`]); steady, paced load in the
//! background until the test stops it, bounded in count and time, every reply kept with
//! when it came ([`SteadyLoad`]); and ways to read the replies (who served them, which
//! failed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{self, AppClient, Reply};
use crate::wait;

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
    replies.iter().filter_map(failure).collect()
}

/// What went wrong with a reply, if it is not a 200.
fn failure(reply: &anyhow::Result<Reply>) -> Option<String> {
    match reply {
        Ok(reply) if reply.status == 200 => None,
        Ok(reply) => Some(format!("{} {}", reply.status, reply.text().trim())),
        Err(error) => Some(format!("{error:#}")),
    }
}

/// What a [`SteadyLoad`] sends and how fast.
#[derive(Clone, Debug)]
pub struct Steady {
    /// The proxy's outbound listener.
    pub outbound: SocketAddr,
    pub host: &'static str,
    pub path: &'static str,
    /// At most one request per `pace`.
    pub pace: Duration,
    /// Every `fresh_every`th request goes on a new connection (0: never); the others on
    /// one kept-alive client.
    pub fresh_every: usize,
    /// The load stops by itself after this many requests or this long.
    pub max_requests: usize,
    pub max_time: Duration,
}

impl Steady {
    /// 40 requests a second to `host` through `outbound`, for at most `max_time`.
    pub fn new(outbound: SocketAddr, host: &'static str, max_time: Duration) -> Self {
        let pace = Duration::from_millis(25);
        Self {
            outbound,
            host,
            path: "/steady",
            pace,
            fresh_every: 0,
            max_requests: usize::try_from(max_time.as_millis() / pace.as_millis())
                .unwrap_or(usize::MAX),
            max_time,
        }
    }

    pub fn fresh_every(mut self, every: usize) -> Self {
        self.fresh_every = every;
        self
    }
}

/// One reply of a steady load and when it came.
#[derive(Debug)]
pub struct Timed {
    pub at: Instant,
    pub reply: anyhow::Result<Reply>,
}

/// Paced load running in the background.
pub struct SteadyLoad {
    stop: watch::Sender<bool>,
    answered: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Timed>>,
}

impl SteadyLoad {
    pub fn start(settings: Steady) -> Self {
        let (stop, stopped) = watch::channel(false);
        let answered = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run_steady(settings, stopped, answered.clone()));
        Self {
            stop,
            answered,
            task,
        }
    }

    /// Replies with status 200 so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `count` more requests than now have been answered 200.
    pub async fn wait_more(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let before = self.answered();
        wait::until(
            &format!("{count} more answered requests"),
            timeout,
            || async {
                let now = self.answered() - before;
                anyhow::ensure!(now >= count, "{now} answered so far");
                Ok(())
            },
        )
        .await
    }

    /// Stops the load and returns every reply, in the order they came.
    pub async fn stop(self) -> Vec<Timed> {
        let _ = self.stop.send(true);
        self.task.await.expect("steady load task")
    }
}

async fn run_steady(
    settings: Steady,
    mut stopped: watch::Receiver<bool>,
    answered: Arc<AtomicUsize>,
) -> Vec<Timed> {
    let app = AppClient::new(settings.outbound);
    let started = Instant::now();
    let mut pace = tokio::time::interval(settings.pace);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replies = Vec::new();
    for sent in 1..=settings.max_requests {
        if *stopped.borrow() || started.elapsed() > settings.max_time {
            break;
        }
        tokio::select! {
            _ = pace.tick() => {}
            _ = stopped.changed() => break,
        }
        let reply = if settings.fresh_every > 0 && sent % settings.fresh_every == 0 {
            client::http1_get(settings.outbound, settings.host, settings.path, &[]).await
        } else {
            app.get(settings.host, settings.path).await
        };
        if matches!(&reply, Ok(reply) if reply.status == 200) {
            answered.fetch_add(1, Ordering::SeqCst);
        }
        replies.push(Timed {
            at: Instant::now(),
            reply,
        });
    }
    replies
}

/// [`failures`] of a steady load's replies.
pub fn timed_failures(replies: &[Timed]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|timed| failure(&timed.reply))
        .collect()
}
