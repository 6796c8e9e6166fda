//! What the dashboard remembers of the scrapes, with fixed bounds: the last few rounds'
//! raw counters (for the numbers over the graph's window), and per service and per
//! caller → callee edge a ring of points for the last ~5 minutes (for the sparklines).
//!
//! Memory bound: at most [`MAX_SERIES`] series of [`SERIES_POINTS`] points each (about
//! 64 bytes a point, so under 10 MiB), plus [`RECENT_ROUNDS`] snapshots of counters. A
//! series that got no point for as long as a ring spans is forgotten.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::scrape::{INTERVAL, ProxyScrape};
use crate::ctl::stat_table::{self, RowKey, RowStats, Snapshot};

/// Points per series: 5 minutes at one point per scrape.
pub const SERIES_POINTS: usize = 150;
/// Series kept at most (services plus edges); new ones beyond it are not recorded.
pub const MAX_SERIES: usize = 1024;
/// Rounds of raw counters kept: the graph's window spans the oldest to the newest.
pub const RECENT_ROUNDS: usize = 6;

/// One scrape of every connected proxy.
#[derive(Clone, Debug)]
pub struct Round {
    pub taken: Instant,
    pub at_unix_ms: u64,
    /// The counters of every proxy that answered, summed.
    pub snapshot: Snapshot,
    pub proxies: Vec<ProxyScrape>,
}

/// One point of a golden-metrics series: the numbers between two consecutive scrapes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub at_unix_ms: u64,
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Point {
    fn from_stats(at_unix_ms: u64, stats: &RowStats) -> Self {
        let ms = |latency: Option<Duration>| latency.map(|d| d.as_secs_f64() * 1e3);
        Self {
            at_unix_ms,
            success_rate: stats.success_rate,
            rps: stats.requests_per_second,
            p50_ms: ms(stats.p50),
            p95_ms: ms(stats.p95),
            p99_ms: ms(stats.p99),
        }
    }
}

#[derive(Default)]
pub struct History {
    recent: VecDeque<Round>,
    series: BTreeMap<RowKey, VecDeque<Point>>,
}

impl History {
    /// Adds a round: a point for every row with counters in both it and the round
    /// before, and the round itself to the recent ones.
    pub fn record(&mut self, round: Round) {
        if let Some(previous) = self.recent.back() {
            let elapsed = round.taken.duration_since(previous.taken);
            for stats in stat_table::compare(&previous.snapshot, &round.snapshot, elapsed) {
                let full = self.series.len() >= MAX_SERIES;
                if full && !self.series.contains_key(&stats.key) {
                    continue;
                }
                let points = self.series.entry(stats.key.clone()).or_default();
                if points.len() == SERIES_POINTS {
                    points.pop_front();
                }
                points.push_back(Point::from_stats(round.at_unix_ms, &stats));
            }
        }
        let span_ms = u64::try_from((INTERVAL * SERIES_POINTS as u32).as_millis()).unwrap_or(0);
        let oldest_kept = round.at_unix_ms.saturating_sub(span_ms);
        self.series.retain(|_, points| {
            points
                .back()
                .is_some_and(|point| point.at_unix_ms >= oldest_kept)
        });
        if self.recent.len() == RECENT_ROUNDS {
            self.recent.pop_front();
        }
        self.recent.push_back(round);
    }

    /// The numbers over the window from the oldest recent round to the newest, and
    /// that window's length; `None` until two rounds were taken.
    pub fn window(&self) -> Option<(Duration, Vec<RowStats>)> {
        let (first, last) = (self.recent.front()?, self.recent.back()?);
        let elapsed = last.taken.duration_since(first.taken);
        if elapsed.is_zero() {
            return None;
        }
        Some((
            elapsed,
            stat_table::compare(&first.snapshot, &last.snapshot, elapsed),
        ))
    }

    /// The points of one service or edge, oldest first.
    pub fn series(&self, key: &RowKey) -> Vec<Point> {
        self.series
            .get(key)
            .map(|points| points.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The points of every edge out of `caller`, each oldest first.
    pub fn series_out_of(&self, caller: &str) -> Vec<Vec<Point>> {
        self.series
            .iter()
            .filter(|(key, _)| matches!(key, RowKey::Edge { caller: from, .. } if from == caller))
            .map(|(_, points)| points.iter().cloned().collect())
            .collect()
    }

    /// What the latest round read from each proxy.
    pub fn latest(&self) -> Option<&Round> {
        self.recent.back()
    }

    #[cfg(test)]
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}
