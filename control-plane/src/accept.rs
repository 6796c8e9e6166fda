//! Accepting connections on the control plane's listeners without spinning: a failed
//! accept (such as running out of file descriptors, which leaves the connection waiting in
//! the queue and fails the next accept at once) is retried after a pause that doubles while
//! the failures go on, and logged when a run of failures starts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The first pause after a failed accept; it doubles while failures go on, up to the max.
const RETRY_FIRST: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The next connection on `listener` (named `name` in the log).
pub async fn next_connection(listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr) {
    let mut pause = RETRY_FIRST;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                if pause == RETRY_FIRST {
                    tracing::warn!(listener = name, error = %err, "accept failed; retrying with backoff");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}
