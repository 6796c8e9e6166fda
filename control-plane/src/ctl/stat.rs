//! `seamctl stat`: success rate, requests per second and p50/p95/p99 latency per service
//! and per caller → callee edge, refreshed in place like `top`. The control plane's
//! `/proxies` says which proxies are connected and where their admin listeners are; each
//! refresh scrapes every proxy's `/metrics` and compares with the previous scrape (see
//! `stat_table`). `--once` prints one table, over one interval, and exits.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::stat_table::{self, Snapshot};
use super::status;
use crate::launch;

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// The control plane's admin address (HOST:PORT).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Time between refreshes, and the window each table covers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print one table (after one interval) and exit, instead of refreshing.
    #[arg(long)]
    pub once: bool,
}

/// What one round of scraping found.
#[derive(Clone)]
pub struct Scrape {
    pub snapshot: Snapshot,
    pub taken: Instant,
    pub proxies: usize,
    /// Proxies whose `/metrics` could not be read, with why.
    pub unreachable: Vec<String>,
}

pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let admin = tokio::net::lookup_host(&args.admin)
        .await
        .with_context(|| {
            format!(
                "cannot resolve the control plane admin address {:?} (want HOST:PORT)",
                args.admin
            )
        })?
        .next()
        .with_context(|| format!("{:?} resolves to no address", args.admin))?;
    let refresh_in_place = !args.once && std::io::stdout().is_terminal();
    let mut before = scrape(admin).await?;
    loop {
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            result = tokio::signal::ctrl_c() => return Ok(result?),
        }
        let after = scrape(admin).await?;
        let text = render(&before, &after);
        if refresh_in_place {
            // Home the cursor and clear the screen, then draw: a table that stays put.
            print!("\x1b[H\x1b[2J{text}");
        } else if !super::print_line(&text)? {
            return Ok(());
        }
        if args.once {
            return Ok(());
        }
        before = after;
    }
}

/// The table for the time between two scrapes, with a heading.
pub fn render(before: &Scrape, after: &Scrape) -> String {
    let elapsed = after.taken.duration_since(before.taken);
    let rows = stat_table::compare(&before.snapshot, &after.snapshot, elapsed);
    let mut text = format!(
        "seamctl stat: {} proxies, last {:.1}s ({})\n\n",
        after.proxies,
        elapsed.as_secs_f64(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
    );
    text.push_str(&stat_table::render(&rows));
    for problem in &after.unreachable {
        text.push_str(&format!("\nnot counted: {problem}\n"));
    }
    text
}

/// Asks the control plane for its proxies and reads every proxy's `/metrics`.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<Scrape> {
    let listing = status::fetch(admin).await?;
    let reads = listing.proxies.iter().map(|proxy| async move {
        let Some(addr) = proxy.admin_addr.as_deref() else {
            return Err(format!("{}: no admin address reported", proxy.service));
        };
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return Err(format!(
                "{}: admin address {addr:?} is not HOST:PORT",
                proxy.service
            ));
        };
        match launch::http_get(addr, "/metrics").await {
            Ok((200, body)) => Ok((proxy.service.clone(), body)),
            Ok((status, _)) => Err(format!(
                "{} at {addr}: /metrics answered {status}",
                proxy.service
            )),
            Err(err) => Err(format!("{} at {addr}: {err:#}", proxy.service)),
        }
    });
    let taken = Instant::now();
    let mut snapshot = Snapshot::default();
    let mut unreachable = Vec::new();
    for read in join_all(reads).await {
        match read {
            Ok((service, body)) => snapshot.add_proxy(&service, &body),
            Err(problem) => unreachable.push(problem),
        }
    }
    Ok(Scrape {
        snapshot,
        taken,
        proxies: listing.proxies.len(),
        unreachable,
    })
}
