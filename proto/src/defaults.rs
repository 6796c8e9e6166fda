//! The defaults of the mesh file's keys that have one (the request-handling keys, and a
//! service's `opaque_ports`), in one place so the control plane (which fills them in) and
//! the proxy (which falls back to them when an update carries no policy) can never
//! disagree. The README's tables list the same values.

use std::time::Duration;

/// `timeout`: the whole request, retries included, until response headers.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// `retries.attempts`: extra tries after the first.
pub const RETRY_ATTEMPTS: u32 = 2;
/// `retries.budget_percent`.
pub const RETRY_BUDGET_PERCENT: u32 = 20;
/// `retries.on`, as the mesh file spells them.
pub const RETRY_ON: [&str; 4] = ["5xx", "connect-failure", "reset", "unavailable"];
/// `circuit_breaker.consecutive_failures`.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// `circuit_breaker.base_ejection_time`.
pub const BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// `circuit_breaker.max_ejection_percent`.
pub const MAX_EJECTION_PERCENT: u32 = 50;
/// `max_concurrent_requests`, per endpoint.
pub const MAX_CONCURRENT_REQUESTS: u32 = 1024;
/// The most `retries.attempts` a mesh file may ask for.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// `opaque_ports` when a service gives none: well-known ports of protocols where the
/// server speaks first (FTP 21, SSH 22, SMTP 25, POP3 110, IMAP 143, SMTPS 465, submission
/// 587, IMAPS 993, POP3S 995, MySQL 3306, VNC 5900). A proxy waiting for the client's first
/// bytes to detect the protocol would wait forever on them, so detection is skipped and
/// the connection is carried as opaque TCP.
pub const OPAQUE_PORTS: [u16; 11] = [21, 22, 25, 110, 143, 465, 587, 993, 995, 3306, 5900];
