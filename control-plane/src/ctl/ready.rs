//! `seamctl ready ADDR` (hidden): exits 0 when the admin listener at ADDR answers 200 on
//! `/ready`, else 1 with what it answered. It is the health check of Seam's containers,
//! whose image has no shell or curl to run one. With `--wait` it asks again until the
//! answer is 200 or `--timeout` passes: the `postStart` hook of a classic (pre-1.29)
//! sidecar, which holds the app's start until its proxy is ready.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::ctl::status::resolve;
use crate::launch;

/// How often `--wait` asks again.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct ReadyArgs {
    /// An admin listener (HOST:PORT): the control plane's or a proxy's.
    #[arg(default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Ask until `/ready` answers 200 (or `--timeout` passes) instead of once.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Duration,
}

pub async fn run(args: ReadyArgs) -> anyhow::Result<()> {
    if !args.wait {
        return check(&args.admin).await;
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let last = match check(&args.admin).await {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if tokio::time::Instant::now() + POLL_EVERY > deadline {
            return Err(last.context(format!(
                "{} not ready after {}",
                args.admin,
                humantime::format_duration(args.timeout)
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn check(admin: &str) -> anyhow::Result<()> {
    let Some(admin) = resolve(admin).await?.into_iter().next() else {
        bail!("{admin:?} resolves to no address");
    };
    let (status, body) = launch::http_get(admin, "/ready")
        .await
        .with_context(|| format!("cannot reach {admin}"))?;
    if status != 200 {
        bail!("{admin}/ready answered {status}: {}", body.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An admin listener that answers 503 to its first `not_ready` requests, then 200.
    async fn admin(not_ready: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answered in 0.. {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = tcp.read(&mut request).await;
                let (status, body) = if answered < not_ready {
                    ("503 Service Unavailable", "no certificate yet\n")
                } else {
                    ("200 OK", "ready\n")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn args(admin: std::net::SocketAddr, wait: bool, timeout: Duration) -> ReadyArgs {
        ReadyArgs {
            admin: admin.to_string(),
            wait,
            timeout,
        }
    }

    #[tokio::test]
    async fn wait_asks_again_until_the_proxy_is_ready() {
        let addr = admin(2).await;
        let once = run(args(addr, false, Duration::from_secs(5))).await;
        assert!(
            format!("{:#}", once.unwrap_err()).contains("answered 503: no certificate yet"),
            "without --wait one answer decides"
        );
        run(args(addr, true, Duration::from_secs(30)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn wait_gives_up_after_the_timeout_with_the_last_answer() {
        let addr = admin(usize::MAX).await;
        let err = run(args(addr, true, Duration::from_millis(500)))
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("not ready after 500ms"), "{err}");
        assert!(err.contains("answered 503"), "{err}");
    }
}
