//! The resolver loop: follows the DNS names of the mesh file's `dns:NAME:PORT` endpoints,
//! each in a task of its own, and hands their addresses to the mesh source, which
//! publishes a new model when they change. A name the file gains is resolved at once; a
//! name the file drops stops being followed; each name is asked again after
//! min(its answer's TTL, `--dns-refresh`), never sooner than [`MIN_INTERVAL`]. A name
//! that does not exist or has no addresses brings no endpoints and is asked again after
//! [`MIN_INTERVAL`]; a failed lookup keeps the name's last good addresses. Each change of a name's state (resolved, no addresses,
//! failing) is logged once, and every answer is counted in
//! `seam_dns_resolutions_total{result}`.

mod lookup;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::metrics::{Metrics, ResultLabel};
use crate::model::DnsName;
use crate::source::MeshSource;

pub use lookup::Lookups;

/// The most often a name is asked again, whatever its TTL or `--dns-refresh` say.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Answers waiting for the loop; a follower whose answer finds the queue full waits.
const ANSWER_QUEUE: usize = 64;

/// What a lookup said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name's addresses (ascending, each once; never empty) and the shortest TTL
    /// among them, when DNS gave one (`/etc/hosts` gives none).
    Addresses {
        ips: Vec<IpAddr>,
        ttl: Option<Duration>,
    },
    /// The name does not exist (NXDOMAIN) or has no A or AAAA records (NODATA): a
    /// service scaled to 0, or not started yet.
    NoAddresses { why: String },
    /// No answer could be had (timeout, SERVFAIL, no resolver): the name may still exist.
    Failed { why: String },
}

/// A name's state, as far as the log is concerned: each change is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Resolved,
    NoAddresses,
    Failing,
}

impl Answer {
    fn health(&self) -> Health {
        match self {
            Self::Addresses { .. } => Health::Resolved,
            Self::NoAddresses { .. } => Health::NoAddresses,
            Self::Failed { .. } => Health::Failing,
        }
    }

    fn result_label(&self) -> &'static str {
        match self {
            Self::Addresses { .. } => "resolved",
            Self::NoAddresses { .. } => "no_addresses",
            Self::Failed { .. } => "failed",
        }
    }

    /// The addresses the name has after this answer, or `None` when its last good
    /// addresses stay (a failed lookup says nothing about them).
    pub fn addresses(&self) -> Option<Vec<IpAddr>> {
        match self {
            Self::Addresses { ips, .. } => Some(ips.clone()),
            Self::NoAddresses { .. } => Some(Vec::new()),
            Self::Failed { .. } => None,
        }
    }

    /// How long until the name is asked again: its TTL, capped by `refresh`, and never
    /// less than [`MIN_INTERVAL`].
    pub fn next_lookup_in(&self, refresh: Duration) -> Duration {
        let wanted = match self {
            Self::Addresses { ttl: Some(ttl), .. } => (*ttl).min(refresh),
            // Not there yet (compose starts containers side by side) or scaled to zero:
            // its first instance is served within half a second of its DNS record.
            Self::NoAddresses { .. } => MIN_INTERVAL,
            _ => refresh,
        };
        wanted.max(MIN_INTERVAL)
    }
}

/// A name being followed: its own task, which looks it up again and again, and the
/// state its last answer put it in.
struct Follower {
    _task: AbortOnDropHandle<()>,
    health: Option<Health>,
}

/// Runs the resolver loop for `source`'s names until the task is aborted.
pub fn spawn(
    source: Arc<MeshSource>,
    refresh: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(source, refresh, metrics))
}

/// Follows every name of the file in force, each in its own task (so a name whose
/// server is slow to fail holds up no other, and a new name is looked up at once), and
/// hands the answers to `source` as they come.
async fn run(source: Arc<MeshSource>, refresh: Duration, metrics: Arc<Metrics>) {
    let mut names = source.names();
    let lookups = Arc::new(Lookups::default());
    let (answers, mut answered) = mpsc::channel::<(DnsName, Answer)>(ANSWER_QUEUE);
    let mut followers: BTreeMap<DnsName, Follower> = BTreeMap::new();
    loop {
        let current: BTreeSet<DnsName> = names.borrow_and_update().clone();
        followers.retain(|name, _| current.contains(name));
        for name in current {
            followers.entry(name).or_insert_with_key(|name| Follower {
                _task: AbortOnDropHandle::new(tokio::spawn(follow(
                    name.clone(),
                    lookups.clone(),
                    refresh,
                    answers.clone(),
                ))),
                health: None,
            });
        }
        tokio::select! {
            changed = names.changed() => if changed.is_err() {
                return;
            },
            Some(first) = answered.recv() => {
                let mut changes = Vec::new();
                let mut next = Some(first);
                // Every answer already in, so a burst makes one new model.
                while let Some((name, answer)) = next {
                    if let Some(follower) = followers.get_mut(&name) {
                        note(&metrics, &name, follower, &answer);
                        if let Some(addresses) = answer.addresses() {
                            changes.push((name, addresses));
                        }
                    }
                    next = answered.try_recv().ok();
                }
                if !changes.is_empty() {
                    source.resolved(changes);
                }
            }
        }
    }
}

/// Looks `name` up, then again after each answer's interval, until aborted or the loop
/// is gone.
async fn follow(
    name: DnsName,
    lookups: Arc<Lookups>,
    refresh: Duration,
    answers: mpsc::Sender<(DnsName, Answer)>,
) {
    loop {
        let answer = lookups.resolve(&name).await;
        let interval = answer.next_lookup_in(refresh);
        if answers.send((name.clone(), answer)).await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Counts `answer` and logs it if it changes `follower`'s state.
fn note(metrics: &Metrics, name: &DnsName, follower: &mut Follower, answer: &Answer) {
    metrics
        .dns_resolutions
        .get_or_create(&ResultLabel {
            result: answer.result_label(),
        })
        .inc();
    log_change(name, follower.health, answer);
    follower.health = Some(answer.health());
}

/// Logs `answer` for `name` if it changes the name's state (`previous`, `None` for a
/// name not asked before).
fn log_change(name: &DnsName, previous: Option<Health>, answer: &Answer) {
    if previous == Some(answer.health()) {
        return;
    }
    match answer {
        Answer::Addresses { ips, .. } => {
            tracing::info!(%name, addresses = ?ips, "dns: endpoint name resolves");
        }
        Answer::NoAddresses { why } => tracing::warn!(
            %name,
            error = %why,
            "dns: endpoint name has no addresses; it brings no endpoints until it has"
        ),
        Answer::Failed { why } => tracing::warn!(
            %name,
            error = %why,
            "cannot resolve a dns: endpoint name; its last good addresses stay in force"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn a_failed_lookup_keeps_the_addresses_and_a_missing_name_has_none() {
        let found = Answer::Addresses {
            ips: ips(&["10.0.0.1", "fd00::1"]),
            ttl: None,
        };
        assert_eq!(found.addresses(), Some(ips(&["10.0.0.1", "fd00::1"])));
        let gone = Answer::NoAddresses {
            why: "NXDOMAIN".into(),
        };
        assert_eq!(gone.addresses(), Some(Vec::new()));
        let failed = Answer::Failed {
            why: "timeout".into(),
        };
        assert_eq!(failed.addresses(), None);
    }

    #[test]
    fn asks_again_at_the_ttl_capped_by_the_refresh_and_never_too_often() {
        let refresh = Duration::from_secs(2);
        let with_ttl = |seconds: f64| Answer::Addresses {
            ips: ips(&["10.0.0.1"]),
            ttl: Some(Duration::from_secs_f64(seconds)),
        };
        assert_eq!(with_ttl(600.0).next_lookup_in(refresh), refresh);
        assert_eq!(
            with_ttl(1.0).next_lookup_in(refresh),
            Duration::from_secs(1)
        );
        assert_eq!(with_ttl(0.0).next_lookup_in(refresh), MIN_INTERVAL);
        let hosts = Answer::Addresses {
            ips: ips(&["10.0.0.1"]),
            ttl: None,
        };
        assert_eq!(hosts.next_lookup_in(refresh), refresh);
        let failed = Answer::Failed { why: "x".into() };
        assert_eq!(failed.next_lookup_in(refresh), refresh);
        let missing = Answer::NoAddresses { why: "x".into() };
        assert_eq!(missing.next_lookup_in(refresh), MIN_INTERVAL);
        assert_eq!(
            failed.next_lookup_in(Duration::from_millis(100)),
            MIN_INTERVAL
        );
    }
}
