//! The proxies connected right now, as operators see them (`/proxies`, `seamctl status`):
//! who each is, what it subscribed to, what it was sent and what it acknowledged or refused.
//!
//! Each connected proxy's record has its own lock, so sends, ACKs and NACKs of different
//! proxies never wait on each other; the registry's map is only locked to add or remove a
//! proxy, and read-locked briefly to list them (the listing copies each record under its
//! own lock, and is serialised with no lock held).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Serialize)]
pub struct ProxyRecord {
    pub id: u64,
    pub service: String,
    pub spiffe_id: String,
    pub admin_addr: Option<String>,
    pub proxy_version: Option<String>,
    pub connected_at_unix: u64,
    /// By authority; shown as a list in authority order.
    #[serde(serialize_with = "as_list")]
    pub subscriptions: BTreeMap<String, SubscriptionRecord>,
    pub nacks_total: u64,
}

fn as_list<S: serde::Serializer>(
    subscriptions: &BTreeMap<String, SubscriptionRecord>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(subscriptions.values())
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionRecord {
    pub authority: String,
    pub sent_version: Option<u64>,
    pub acked_version: Option<u64>,
    pub nack: Option<NackRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NackRecord {
    pub version: u64,
    pub reason: String,
}

#[derive(Default)]
pub struct ProxyRegistry {
    next_id: AtomicU64,
    proxies: RwLock<BTreeMap<u64, Arc<Mutex<ProxyRecord>>>>,
}

/// A connected proxy's entry; removed from the registry when dropped.
pub struct ProxyEntry {
    id: u64,
    record: Arc<Mutex<ProxyRecord>>,
    registry: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

impl ProxyRegistry {
    pub fn register(
        self: &Arc<Self>,
        service: &str,
        spiffe_id: &str,
        metrics: Arc<Metrics>,
    ) -> ProxyEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connected_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = Arc::new(Mutex::new(ProxyRecord {
            id,
            service: service.to_owned(),
            spiffe_id: spiffe_id.to_owned(),
            admin_addr: None,
            proxy_version: None,
            connected_at_unix,
            subscriptions: BTreeMap::new(),
            nacks_total: 0,
        }));
        self.proxies.write().insert(id, record.clone());
        metrics.connected_proxies.inc();
        ProxyEntry {
            id,
            record,
            registry: self.clone(),
            metrics,
        }
    }

    /// Every connected proxy, in connection order.
    pub fn snapshot(&self) -> Vec<ProxyRecord> {
        let records: Vec<_> = self.proxies.read().values().cloned().collect();
        records.iter().map(|record| record.lock().clone()).collect()
    }
}

impl ProxyEntry {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn update(&self, change: impl FnOnce(&mut ProxyRecord)) {
        change(&mut self.record.lock());
    }

    fn update_subscription(&self, authority: &str, change: impl FnOnce(&mut SubscriptionRecord)) {
        self.update(|record| {
            if let Some(subscription) = record.subscriptions.get_mut(authority) {
                change(subscription);
            }
        });
    }

    pub fn hello(&self, admin_addr: String, proxy_version: String) {
        self.update(|record| {
            record.admin_addr = Some(admin_addr).filter(|a| !a.is_empty());
            record.proxy_version = Some(proxy_version).filter(|v| !v.is_empty());
        });
    }

    pub fn subscribed(&self, authority: &str) {
        self.update(|record| {
            record
                .subscriptions
                .entry(authority.to_owned())
                .or_insert_with(|| SubscriptionRecord {
                    authority: authority.to_owned(),
                    ..SubscriptionRecord::default()
                });
        });
    }

    pub fn unsubscribed(&self, authority: &str) {
        self.update(|record| {
            record.subscriptions.remove(authority);
        });
    }

    pub fn sent(&self, authority: &str, version: u64) {
        self.update_subscription(authority, |s| s.sent_version = Some(version));
    }

    pub fn acked(&self, authority: &str, version: u64) {
        self.update_subscription(authority, |s| {
            s.acked_version = Some(version);
            if s.nack.as_ref().is_some_and(|nack| nack.version <= version) {
                s.nack = None;
            }
        });
    }

    pub fn nacked(&self, authority: &str, version: u64, reason: String) {
        self.update(|record| {
            record.nacks_total += 1;
            if let Some(subscription) = record.subscriptions.get_mut(authority) {
                subscription.nack = Some(NackRecord { version, reason });
            }
        });
    }
}

impl Drop for ProxyEntry {
    fn drop(&mut self) {
        self.registry.proxies.write().remove(&self.id);
        self.metrics.connected_proxies.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_acks_and_nacks_and_forgets_a_proxy_when_it_leaves() {
        let registry = Arc::new(ProxyRegistry::default());
        let metrics = Arc::new(Metrics::new());
        let entry = registry.register(
            "web",
            "spiffe://seam.local/ns/default/sa/web",
            metrics.clone(),
        );
        entry.subscribed("api");
        entry.sent("api", 3);
        entry.nacked("api", 3, "bad endpoint".into());
        let record = &registry.snapshot()[0];
        assert_eq!(record.nacks_total, 1);
        assert_eq!(
            record.subscriptions["api"].nack.as_ref().unwrap().reason,
            "bad endpoint"
        );
        entry.sent("api", 4);
        entry.acked("api", 4);
        let subscription = registry.snapshot()[0].subscriptions["api"].clone();
        assert_eq!(
            (subscription.sent_version, subscription.acked_version),
            (Some(4), Some(4))
        );
        assert!(subscription.nack.is_none());
        assert!(metrics.encode().contains("seam_connected_proxies 1"));
        drop(entry);
        assert!(registry.snapshot().is_empty());
        assert!(metrics.encode().contains("seam_connected_proxies 0"));
    }
}
