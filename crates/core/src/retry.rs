//! Retry policy (when a failed attempt may be retried) and the retry budget (how many
//! retries the whole upstream may spend), both pure.
//!
//! Kong's rule for *when*: connection errors and timeouts before the response header;
//! a non-idempotent request only when nothing was sent upstream. Sluice's rule for
//! *where* lives in `balance::pick` (never an address already tried).

use crate::time::Duration;

/// Retry budget: retries may add at most `ratio` of live request volume, plus a floor
/// of `min_per_sec`, measured over `window` (Linkerd's defaults: 20%, 10/s, 10 s).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetPolicy {
    pub ratio: f64,
    pub min_per_sec: u32,
    pub window: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        RetryBudgetPolicy {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}
