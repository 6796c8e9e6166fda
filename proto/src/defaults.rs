//! The defaults of every request-handling key of the mesh file, in one place so the
//! control plane (which fills them in) and the proxy (which falls back to them when an
//! update carries no policy) can never disagree. The README's table lists the same values.

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
