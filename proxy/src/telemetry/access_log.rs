//! `--access-log json`: one JSON object per request on stdout. Lines go through a bounded
//! queue to a writer thread that writes whatever has queued in one go, so a reader that
//! stops draining stdout never blocks a request; lines that do not fit are dropped and counted in
//! `seam_access_log_dropped_total`.

use std::io::Write as _;
use std::str::FromStr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Lines waiting for stdout beyond this many are dropped.
const MAX_QUEUED_LINES: usize = 8192;
/// The most bytes written to stdout at once.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The `--access-log` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Off,
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown access log format {0:?}: expected off or json")]
pub struct UnknownFormat(String);

impl FromStr for AccessLogFormat {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" | "" => Ok(Self::Off),
            "json" => Ok(Self::Json),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub direction: &'static str,
    pub service: &'a str,
    pub trace_id: String,
    /// `x-request-id`, when the request has one.
    pub request_id: Option<&'a str>,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    pub duration_seconds: f64,
    pub upstream: Option<String>,
    pub peer_identity: Option<&'a str>,
    /// Whether the request came (inbound) or went (outbound) over mTLS: false for a
    /// plaintext caller, a plaintext endpoint, or a request that never left.
    pub tls: bool,
    pub retries: u32,
}

pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(dropped: Counter) -> std::io::Result<Self> {
        let (lines, queue) = sync_channel::<String>(MAX_QUEUED_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                // Whatever queued up while the last write ran goes out in one write.
                let mut batch = String::new();
                while let Ok(line) = queue.recv() {
                    batch.clear();
                    batch.push_str(&line);
                    batch.push('\n');
                    while batch.len() < MAX_BATCH_BYTES
                        && let Ok(line) = queue.try_recv()
                    {
                        batch.push_str(&line);
                        batch.push('\n');
                    }
                    if std::io::stdout()
                        .lock()
                        .write_all(batch.as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
            })?;
        Ok(Self { lines, dropped })
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let line = match serde_json::to_string(entry) {
            Ok(line) => line,
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode an access log entry");
                return;
            }
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}
