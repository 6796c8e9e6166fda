//! Asking what a name's addresses are, the way the system would: `/etc/hosts` first (read
//! afresh each time, and authoritative for a name it lists, as glibc's `files` source
//! is), then DNS with the servers of `/etc/resolv.conf` (Docker's embedded server in a
//! compose network), A and AAAA both. hickory-resolver asks DNS; its cache is emptied
//! before each lookup, since the loop keeps its own schedule and wants fresh answers.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::future;
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use parking_lot::Mutex;

use super::Answer;
use crate::model::DnsName;

/// How long one lookup (A or AAAA) may take, retries included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one query to one server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The DNS side of lookups: a resolver built from `/etc/resolv.conf` on first use, and
/// again after building it failed; shared by every name's task.
#[derive(Default)]
pub struct Lookups {
    resolver: Mutex<Option<TokioResolver>>,
}

/// What one record type's lookup gave.
enum Records {
    Found { ips: Vec<IpAddr>, ttl: Duration },
    None(String),
    Failed(String),
}

impl Lookups {
    /// Looks `name` up: in `/etc/hosts` as it is now, else in DNS.
    pub async fn resolve(&self, name: &DnsName) -> Answer {
        // A missing or unreadable hosts file lists nothing, as for the system.
        let hosts = Hosts::from_system().unwrap_or_default();
        let resolver = self.resolver();
        if let Ok(resolver) = &resolver {
            resolver.clear_cache();
        }
        answer(&hosts, resolver.as_ref().map_err(String::as_str), name).await
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        let mut built = self.resolver.lock();
        if let Some(resolver) = &*built {
            return Ok(resolver.clone());
        }
        let mut builder = TokioResolver::builder_tokio().map_err(|err| {
            format!("cannot read the system's resolver configuration (/etc/resolv.conf): {err}")
        })?;
        let options = builder.options_mut();
        // Read here, afresh for each lookup.
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = QUERY_TIMEOUT;
        let resolver = builder
            .build()
            .map_err(|err| format!("cannot set up a DNS resolver: {err}"))?;
        *built = Some(resolver.clone());
        Ok(resolver)
    }
}

/// `name`'s addresses from `hosts`, else from DNS.
async fn answer(hosts: &Hosts, resolver: Result<&TokioResolver, &str>, name: &DnsName) -> Answer {
    let Ok(query_name) = Name::from_ascii(name.as_str()) else {
        return Answer::Failed {
            why: format!("{name} is not a name the resolver accepts"),
        };
    };
    let listed: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|kind| hosts.lookup_static_host(&Query::query(query_name.clone(), kind)))
        .flat_map(|lookup| {
            lookup
                .answers()
                .iter()
                .filter_map(|record| record.data.ip_addr())
                .collect::<Vec<_>>()
        })
        .collect();
    if !listed.is_empty() {
        return Answer::Addresses {
            ips: ascending(listed),
            ttl: None,
        };
    }
    let resolver = match resolver {
        Ok(resolver) => resolver,
        Err(why) => return Answer::Failed { why: why.into() },
    };
    let (v4, v6) = future::join(
        records(resolver, name, RecordType::A),
        records(resolver, name, RecordType::AAAA),
    )
    .await;
    combine(v4, v6)
}

/// One record type's lookup of `name`.
async fn records(resolver: &TokioResolver, name: &DnsName, kind: RecordType) -> Records {
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(name.as_str(), kind)).await {
        Ok(Ok(lookup)) => {
            let answers = lookup.answers();
            let ips: Vec<IpAddr> = answers
                .iter()
                .filter_map(|record| record.data.ip_addr())
                .collect();
            let ttl = answers.iter().map(|record| record.ttl).min().unwrap_or(0);
            if ips.is_empty() {
                Records::None(format!("no {kind} records"))
            } else {
                Records::Found {
                    ips,
                    ttl: Duration::from_secs(u64::from(ttl)),
                }
            }
        }
        Ok(Err(err)) => classify(&err, kind),
        Err(_) => Records::Failed(format!(
            "no {kind} answer within {}s",
            LOOKUP_TIMEOUT.as_secs()
        )),
    }
}

fn classify(err: &NetError, kind: RecordType) -> Records {
    if err.is_nx_domain() {
        Records::None("the name does not exist (NXDOMAIN)".into())
    } else if err.is_no_records_found() {
        Records::None(format!("no {kind} records"))
    } else {
        Records::Failed(format!("{kind} lookup failed: {err}"))
    }
}

/// One answer from the A and AAAA lookups: a failure of either means the name's
/// addresses are not known (keeping only the other family's would drop instances).
fn combine(v4: Records, v6: Records) -> Answer {
    match (v4, v6) {
        (Records::Failed(why), _) | (_, Records::Failed(why)) => Answer::Failed { why },
        (Records::None(why), Records::None(_)) => Answer::NoAddresses { why },
        (first, second) => {
            let mut ips = Vec::new();
            let mut ttl: Option<Duration> = None;
            for records in [first, second] {
                if let Records::Found { ips: found, ttl: t } = records {
                    ips.extend(found);
                    ttl = Some(ttl.map_or(t, |seen| seen.min(t)));
                }
            }
            Answer::Addresses {
                ips: ascending(ips),
                ttl,
            }
        }
    }
}

fn ascending(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort_unstable();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ips: &[&str], ttl: u64) -> Records {
        Records::Found {
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn both_families_make_one_answer() {
        let both = combine(
            found(&["10.0.0.2", "10.0.0.1"], 30),
            found(&["fd00::1"], 10),
        );
        assert_eq!(
            both,
            Answer::Addresses {
                ips: vec![
                    "10.0.0.1".parse().unwrap(),
                    "10.0.0.2".parse().unwrap(),
                    "fd00::1".parse().unwrap()
                ],
                ttl: Some(Duration::from_secs(10)),
            }
        );
        let v4_only = combine(found(&["10.0.0.1"], 600), Records::None("no AAAA".into()));
        assert!(
            matches!(v4_only, Answer::Addresses { ttl: Some(ttl), .. } if ttl.as_secs() == 600)
        );
        assert_eq!(
            combine(
                Records::None("the name does not exist (NXDOMAIN)".into()),
                Records::None("x".into())
            ),
            Answer::NoAddresses {
                why: "the name does not exist (NXDOMAIN)".into()
            }
        );
        assert_eq!(
            combine(found(&["10.0.0.1"], 600), Records::Failed("timeout".into())),
            Answer::Failed {
                why: "timeout".into()
            }
        );
    }

    #[tokio::test]
    async fn a_name_in_the_hosts_file_is_answered_from_it() {
        let mut hosts = Hosts::default();
        hosts
            .read_hosts_conf("127.0.0.9 api.test\n::9 api.test\n".as_bytes())
            .unwrap();
        let name = DnsName::parse("API.test").unwrap();
        let answer = answer(&hosts, Err("no resolver in this test"), &name).await;
        assert_eq!(
            answer,
            Answer::Addresses {
                ips: vec!["127.0.0.9".parse().unwrap(), "::9".parse().unwrap()],
                ttl: None
            }
        );
        let other = DnsName::parse("web.test").unwrap();
        assert_eq!(
            super::answer(&hosts, Err("no resolver in this test"), &other).await,
            Answer::Failed {
                why: "no resolver in this test".into()
            }
        );
    }
}
