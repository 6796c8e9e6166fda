//! `sample-app --drive RATE`: the app sends traffic to itself, so a mesh of sample apps in
//! containers has live traffic with nothing on the host. The load is the demo's
//! (`traffic`: a fixed rate, each request with a timeout); every ten seconds one line
//! on stdout says how it went, with the reasons of any failures.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::ctl::summary::{Window, format_latency};
use crate::ctl::traffic;

const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The load and its reporter; both stop when this is dropped.
pub struct Drive {
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Drive {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts `rate` requests a second to the app listening on `local`.
pub fn start(name: &str, local: SocketAddr, rate: u32) -> Drive {
    // An app listening on every address is reached on loopback, which transparent mode
    // never intercepts.
    let target = if local.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))
    } else {
        local
    };
    let window = Arc::new(Mutex::new(Window::default()));
    let load = tokio::spawn(traffic::generate(target, rate, window.clone()));
    let name = name.to_owned();
    let report = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(REPORT_EVERY);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let report = window.lock().take_report();
            println!(
                "{name}: {} requests in the last {}s, {} ok, p50 {} p99 {}; {} of {} ok since start",
                report.requests,
                REPORT_EVERY.as_secs(),
                report.ok,
                format_latency(report.p50),
                format_latency(report.p99),
                report.total_ok,
                report.total,
            );
            for (reason, count) in &report.errors {
                println!("{name}:   {count} × {reason}");
            }
        }
    });
    Drive {
        tasks: [load, report],
    }
}
