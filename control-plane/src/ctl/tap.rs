//! `seamctl tap SERVICE`: live requests seen by every proxy of a service, as they finish.
//! The control plane's `/proxies` names the proxies; `crate::tap` opens `/tap` on each
//! (the filters and the rate travel with it and apply at the proxies) and merges their
//! events. `--output wide` prints one aligned line per request, `--output json` the
//! proxies' event objects, one per line. It runs until Ctrl-C, until every proxy's
//! stream has ended, or until its reader goes away (`| head`).

use anyhow::{Context, bail};

use super::fleet::service_of;
use super::status;
use crate::tap::{self, TapEvent, TapMessage, TapQuery};

#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// The service whose proxies to tap (its inbound and outbound requests).
    pub service: String,
    /// Only requests the service sends to this service.
    #[arg(long)]
    pub to: Option<String>,
    /// Only requests whose path starts with this (such as `/api/`).
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub method: Option<String>,
    /// At most this many requests per second in all, shared among the proxies.
    #[arg(long, default_value_t = tap::DEFAULT_MAX_RPS, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rps: u32,
    /// Show the values of these request headers (comma-separated names); no header value
    /// is shown otherwise.
    #[arg(long, value_delimiter = ',')]
    pub headers: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Wide)]
    pub output: Output,
    /// The control plane's admin address (HOST:PORT).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One aligned line per request.
    Wide,
    /// The proxies' event objects, one per line.
    Json,
}

pub async fn run(args: TapArgs) -> anyhow::Result<()> {
    let admin = status::resolve(&args.admin)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("{:?} resolves to no address", args.admin))?;
    let query = TapQuery {
        service: args.service.clone(),
        to: args.to,
        path_prefix: args.path_prefix,
        method: args.method,
        max_rps: args.max_rps,
        headers: args.headers,
    };
    let mut messages = tap::open_via_admin(admin, &query)
        .await
        .map_err(anyhow::Error::from)?;
    if args.output == Output::Wide && !super::print_line(&wide_header())? {
        return Ok(());
    }
    let mut events = 0_u64;
    let mut failures = 0_u64;
    loop {
        let message = tokio::select! {
            message = messages.recv() => message,
            result = tokio::signal::ctrl_c() => return Ok(result?),
        };
        match message {
            Some(TapMessage::Event(event)) => {
                events += 1;
                let line = match args.output {
                    Output::Wide => wide_line(&event),
                    Output::Json => serde_json::to_string(&event)?,
                };
                if !super::print_line(&line)? {
                    // The reader went away: dropping the streams closes the taps.
                    return Ok(());
                }
            }
            Some(TapMessage::ProxyFailed { admin_addr, reason }) => {
                failures += 1;
                eprintln!("seamctl tap: proxy at {admin_addr}: {reason}");
            }
            None => break,
        }
    }
    if events == 0 && failures > 0 {
        bail!("no proxy of {} could be tapped", args.service);
    }
    Ok(())
}

/// Column widths of the wide output (a longer cell pushes the rest right).
const WIDTHS: [usize; 10] = [12, 3, 20, 7, 30, 10, 9, 11, 7, 21];

fn wide_header() -> String {
    columns(&[
        "TIME",
        "DIR",
        "CALLER → CALLEE",
        "METHOD",
        "AUTHORITY+PATH",
        "STATUS",
        "LATENCY",
        "BYTES",
        "RETRIES",
        "ENDPOINT",
        "TLS",
    ])
}

/// One request: `08:00:00.123 out web → api GET api:8080/x 200 1.23ms 0B/12B 0 … mTLS`.
fn wide_line(event: &TapEvent) -> String {
    let time = event.time.get(11..23).unwrap_or(&event.time);
    let direction = if event.direction == "inbound" {
        "in"
    } else {
        "out"
    };
    let identity = |id: &Option<String>| id.as_deref().map_or("-", service_of).to_owned();
    let parties = format!("{} → {}", identity(&event.caller), identity(&event.callee));
    let target = format!("{}{}", event.authority, event.path);
    let status = match event.grpc_status {
        Some(code) => format!("{}/grpc:{code}", event.status),
        None => event.status.to_string(),
    };
    let latency = format!("{:.2}ms", event.latency_ms);
    let request_bytes = event
        .request_bytes
        .map_or_else(|| "?".to_owned(), |bytes| bytes.to_string());
    let bytes = format!("{request_bytes}B/{}B", event.response_bytes);
    let retries = event.retries.to_string();
    let endpoint = event.endpoint.as_deref().unwrap_or("-");
    let tls = if event.mtls { "mTLS" } else { "plain" };
    let mut line = columns(&[
        time,
        direction,
        &parties,
        &event.method,
        &target,
        &status,
        &latency,
        &bytes,
        &retries,
        endpoint,
        tls,
    ]);
    if let Some(headers) = &event.headers {
        for (name, value) in headers {
            line.push_str(&format!("  {name}={value:?}"));
        }
    }
    line
}

fn columns(cells: &[&str]) -> String {
    let mut line = String::new();
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push_str(cell);
        if let Some(width) = WIDTHS.get(index) {
            let used = cell.chars().count();
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
        }
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TapEvent {
        serde_json::from_str(
            r#"{"time":"2026-12-03T08:00:00.123Z","direction":"outbound",
            "proxy":"spiffe://seam.local/ns/default/sa/web","service":"api","route":"default",
            "caller":"spiffe://seam.local/ns/default/sa/web",
            "callee":"spiffe://seam.local/ns/default/sa/api","method":"GET",
            "authority":"api:8080","path":"/x","status":200,"grpc_status":null,
            "latency_ms":1.234,"request_bytes":0,"response_bytes":12,"retries":1,
            "endpoint":"127.0.0.1:4143","mtls":true}"#,
        )
        .expect("sample event parses")
    }

    #[test]
    fn a_wide_line_lines_up_under_the_header() {
        let header = wide_header();
        let line = wide_line(&event());
        assert_eq!(
            line,
            "08:00:00.123 out web → api            GET     api:8080/x                     \
             200        1.23ms    0B/12B      1       127.0.0.1:4143        mTLS"
        );
        for column in ["DIR", "METHOD", "STATUS", "LATENCY", "RETRIES", "TLS"] {
            let at = header.find(column).expect("column in header");
            assert!(
                line.chars().nth(header[..at].chars().count()) != Some(' '),
                "{column} is not aligned:\n{header}\n{line}"
            );
        }
    }

    #[test]
    fn a_plaintext_grpc_call_and_named_headers_show() {
        let mut event = event();
        event.direction = "inbound".into();
        event.caller = None;
        event.mtls = false;
        event.grpc_status = Some(14);
        event.request_bytes = None;
        event.headers = Some([("x-foo".to_owned(), "bar".to_owned())].into());
        let line = wide_line(&event);
        assert!(line.starts_with("08:00:00.123 in  - → api"), "{line}");
        assert!(line.contains(" 200/grpc:14 "), "{line}");
        assert!(line.contains(" ?B/12B "), "{line}");
        assert!(line.ends_with("plain  x-foo=\"bar\""), "{line}");
    }
}
