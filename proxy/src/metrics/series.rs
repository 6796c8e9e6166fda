//! Finds the series a request is counted in by the identity of its label strings. The
//! service, route and peer labels are `Arc<str>`s that every request of one config
//! snapshot (or one inbound connection) shares, so comparing their addresses finds a
//! request's counter and histogram without hashing their text, which a `Family` lookup
//! does every time. A label set met for the first time, or with the strings of a newer
//! snapshot, is looked up in the families by its text: equal label sets always land in
//! one series, and the index only remembers where.

use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::bounded::{GrpcStatusLabel, StatusLabel};
use super::{Direction, RequestRecord};

/// Entries kept before the index starts over: every config update brings new strings
/// (the series themselves stay in their families).
const MAX_ENTRIES: usize = 4096;

/// What one request adds to.
#[derive(Clone)]
pub struct Series {
    pub requests: Counter,
    pub latency: Histogram,
}

/// A label set by the addresses of its strings. The entry keeps the strings alive, so no
/// other string can take one of these addresses while it is indexed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    direction: Direction,
    service: usize,
    route: usize,
    status: StatusLabel,
    grpc_status: Option<GrpcStatusLabel>,
    tls: bool,
    peer: Option<usize>,
}

impl Key {
    fn of(record: &RequestRecord<'_>) -> Self {
        let address = |text: &Arc<str>| Arc::as_ptr(text).cast::<u8>() as usize;
        let (status, grpc_status) = record.bounded_codes();
        Self {
            direction: record.direction,
            service: address(record.service),
            route: address(record.route),
            status,
            grpc_status,
            tls: record.tls,
            peer: record.peer.map(address),
        }
    }
}

struct Entry {
    series: Series,
    _strings: (Arc<str>, Arc<str>, Option<Arc<str>>),
}

#[derive(Default)]
pub struct SeriesIndex(RwLock<HashMap<Key, Entry>>);

impl SeriesIndex {
    /// Counts `record` in its series, found in the index or else by `by_text`.
    pub fn count(&self, record: &RequestRecord<'_>, by_text: impl FnOnce() -> Series) {
        let key = Key::of(record);
        let seconds = record.elapsed.as_secs_f64();
        if let Some(entry) = self.0.read().get(&key) {
            entry.series.requests.inc();
            entry.series.latency.observe(seconds);
            return;
        }
        let series = by_text();
        series.requests.inc();
        series.latency.observe(seconds);
        let mut entries = self.0.write();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let strings = (
            record.service.clone(),
            record.route.clone(),
            record.peer.cloned(),
        );
        entries.insert(
            key,
            Entry {
                series,
                _strings: strings,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.read().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Metrics;
    use super::*;

    fn record<'a>(service: &'a Arc<str>, route: &'a Arc<str>) -> RequestRecord<'a> {
        RequestRecord {
            direction: Direction::Outbound,
            service,
            route,
            status: 200,
            grpc: false,
            grpc_status: None,
            tls: true,
            peer: None,
            elapsed: Duration::from_millis(1),
        }
    }

    /// The value of the one `seam_requests_total` series.
    fn requests_total(metrics: &Metrics) -> String {
        let text = metrics.encode();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("seam_requests_total{"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        lines[0].rsplit(' ').next().unwrap().to_owned()
    }

    #[test]
    fn equal_labels_in_strings_of_their_own_share_one_series() {
        let metrics = Metrics::new();
        let route: Arc<str> = "default".into();
        let first: Arc<str> = "api".into();
        // A newer snapshot's string: another address, the same text.
        let second: Arc<str> = "api".into();
        metrics.record_request(&record(&first, &route));
        metrics.record_request(&record(&first, &route));
        metrics.record_request(&record(&second, &route));
        assert_eq!(requests_total(&metrics), "3");
        assert_eq!(metrics.series.len(), 2);
    }

    #[test]
    fn the_index_starts_over_when_full_and_counts_stay_right() {
        let metrics = Metrics::new();
        let route: Arc<str> = "default".into();
        let services: Vec<Arc<str>> = (0..=MAX_ENTRIES).map(|_| "api".into()).collect();
        for service in &services {
            metrics.record_request(&record(service, &route));
        }
        assert_eq!(requests_total(&metrics), (MAX_ENTRIES + 1).to_string());
        assert_eq!(
            metrics.series.len(),
            1,
            "cleared at {MAX_ENTRIES}, then one more"
        );
    }
}
