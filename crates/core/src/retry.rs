//! Retry policy (when a failed attempt may be retried) and the retry budget (how many
//! retries the whole upstream may spend), both pure.
//!
//! Kong's rule for *when*: connection errors and timeouts before the response header;
//! a non-idempotent request only when nothing was sent upstream. Sluice's rule for
//! *where* lives in `balance::pick` (never an address already tried).
//!
//! How the proxy uses this module for one request:
//! 1. `budget.deposit(now)` once, when the request arrives.
//! 2. After a failed attempt that sent nothing to the client yet: [`decide`]. On
//!    [`RetryDecision::Retry`], `budget.try_withdraw(now)`; if the budget says no, the
//!    request gives up with [`GiveUpReason::BudgetExhausted`].
//! 3. The next attempt is picked with every tried address in `PickContext::tried`.
//!
//! A retry budget exists because per-request retries multiply load exactly when a
//! backend is failing: 5 retries on every request can sextuple the traffic an ailing
//! region sees. The budget caps the extra load at a share of real traffic (Finagle and
//! Linkerd's design; Envoy has it but not by default).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::{Duration, Instant};

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

/// How an attempt failed, as the data plane observed it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused (RST to the SYN): nothing reached the backend.
    ConnectRefused,
    /// The connection was not established within the connect timeout.
    ConnectTimeout,
    /// Any other failure to establish the connection (unreachable, reset during the
    /// handshake, TLS handshake failure): the request was not sent.
    ConnectError,
    /// Writing the request failed after the connection was up: bytes may have arrived.
    WriteError,
    /// Writing the request timed out after the connection was up.
    WriteTimeout,
    /// No response header within the read timeout; the request was sent.
    ReadTimeout,
    /// The connection broke (reset, EOF, malformed response) before a response header.
    ReadError,
    /// A complete response header arrived with this status.
    Status(u16),
}

impl FailureKind {
    /// Nothing of the request was sent upstream yet (connect-phase failures): retrying
    /// cannot repeat a side effect, so even a POST may be retried.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            FailureKind::ConnectRefused | FailureKind::ConnectTimeout | FailureKind::ConnectError
        )
    }

    /// Stable snake_case name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::ConnectError => "connect_error",
            FailureKind::WriteError => "write_error",
            FailureKind::WriteTimeout => "write_timeout",
            FailureKind::ReadTimeout => "read_timeout",
            FailureKind::ReadError => "read_error",
            FailureKind::Status(_) => "status",
        }
    }
}

/// When a failed attempt may be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Kong's `service.retries` (0..=32767, default 5): at most `1 + retries` attempts.
    pub retries: u32,
    /// Sluice extension: response statuses that are retried for idempotent requests.
    /// Empty (the default) is Kong's behaviour: a response is never retried. Shared, so
    /// a request can carry its route's list without copying it.
    pub retry_on_status: std::sync::Arc<[u16]>,
}

impl Default for RetryPolicy {
    /// Kong's defaults: 5 retries, errors and timeouts only.
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            retry_on_status: std::sync::Arc::from([]),
        }
    }
}

/// Why a failed request is not retried (also the label of the give-up metric).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// `retries` retries were already made.
    RetriesExhausted,
    /// The request was (possibly) sent and its method is not idempotent.
    NotIdempotent,
    /// The request was (possibly) sent and its body was streamed, not buffered, so it
    /// cannot be sent again.
    BodyNotReplayable,
    /// A response arrived with a status that is not in `retry_on_status`.
    StatusNotRetryable,
    /// The policy allowed a retry but the upstream's retry budget is spent (set by the
    /// caller after `RetryBudget::try_withdraw` refused).
    BudgetExhausted,
}

impl GiveUpReason {
    /// Stable snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::RetriesExhausted => "retries_exhausted",
            GiveUpReason::NotIdempotent => "not_idempotent",
            GiveUpReason::BodyNotReplayable => "body_not_replayable",
            GiveUpReason::StatusNotRetryable => "status_not_retryable",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Pick another address (excluding those tried) and try again.
    Retry,
    GiveUp(GiveUpReason),
}

/// Idempotent methods per RFC 9110 §9.2.2: GET, HEAD, PUT, DELETE, OPTIONS, TRACE.
/// Method names are case-sensitive (RFC 9110 §9.1), so `"get"` is not GET.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// May the request be retried after this failure?
///
/// `attempts_so_far` counts the attempts made, including the one that just failed (a
/// first-attempt failure passes 1; 0 is treated as 1). The proxy must not ask once any
/// response byte went to the client: nothing can be retried after that.
///
/// Checks, in order, so the reason names the most fundamental obstacle:
/// 1. a status is retried only when listed in `retry_on_status`;
/// 2. once the request may have reached the backend (anything but a connect-phase
///    failure), only an idempotent method is retried ...
/// 3. ... and only if its body was buffered and can be replayed;
/// 4. never more than `retries` retries.
pub fn decide(
    policy: &RetryPolicy,
    attempts_so_far: u32,
    failure: &FailureKind,
    idempotent: bool,
    body_replayable: bool,
) -> RetryDecision {
    if let FailureKind::Status(status) = failure
        && !policy.retry_on_status.contains(status)
    {
        return RetryDecision::GiveUp(GiveUpReason::StatusNotRetryable);
    }
    if !failure.nothing_sent() {
        if !idempotent {
            return RetryDecision::GiveUp(GiveUpReason::NotIdempotent);
        }
        if !body_replayable {
            return RetryDecision::GiveUp(GiveUpReason::BodyNotReplayable);
        }
    }
    let retries_made = attempts_so_far.max(1) - 1;
    if retries_made >= policy.retries {
        return RetryDecision::GiveUp(GiveUpReason::RetriesExhausted);
    }
    RetryDecision::Retry
}

/// Hedging: send a second attempt to another address when the first has not answered
/// within `after`, and use whichever answers first. Only for idempotent requests with a
/// replayable body, and every hedge is a withdrawal from the same [`RetryBudget`], so
/// hedging cannot multiply load on a slow upstream.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HedgePolicy {
    pub after: Duration,
}

impl HedgePolicy {
    /// When to hedge an attempt that started at `started`.
    pub fn hedge_at(&self, started: Instant) -> Instant {
        started + self.after
    }

    /// Whether this request may be hedged at all (the budget is asked separately).
    pub fn applies(&self, idempotent: bool, body_replayable: bool) -> bool {
        idempotent && body_replayable && !self.after.is_zero()
    }
}

/// Longest budget window kept, in seconds. The ring holds one bucket per second, so
/// this bounds memory (2 × 3600 × 8 bytes = 56 KiB per upstream) whatever the config
/// says; budgets are meant to react within seconds, an hour is far past useful.
pub const MAX_WINDOW_SECS: u64 = 3_600;

/// Low 32 bits of a bucket: the count; high 32 bits: the second it belongs to (seconds
/// since the caller's origin, mod 2^32: wraps after 136 years).
const COUNT_MASK: u64 = 0xFFFF_FFFF;

fn pack(second: u32, count: u32) -> u64 {
    (u64::from(second) << 32) | u64::from(count)
}

fn unpack(bucket: u64) -> (u32, u32) {
    ((bucket >> 32) as u32, (bucket & COUNT_MASK) as u32)
}

/// `a` is a later second than `b`, comparing on the 2^32 circle (valid while the two are
/// less than 68 years apart).
fn is_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A shared, lock-free retry budget for one upstream.
///
/// Over the sliding window it grants at most
/// `floor(ratio × requests deposited in the window) + min_per_sec × window_secs`
/// withdrawals (retries and hedges). Granularity is one second: the window is the
/// current second plus the `window_secs − 1` before it, each second counted in one
/// bucket of a ring; a bucket from an older lap of the ring counts as empty and is
/// overwritten on first use. Each bucket is one `AtomicU64` packing (second, count), so
/// a reset and an increment are one compare-and-swap and nothing is lost to races.
///
/// Deterministic: the same sequence of calls with the same `now` gives the same answers.
/// Concurrent withdrawals in the same second are exact (the grant is a CAS on the
/// counter that was checked); two racing exactly across a second boundary can each see
/// the other's bucket stale and overshoot the bound by one.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// `min_per_sec × window_secs`: retries allowed even with no traffic to base a ratio
    /// on, so a quiet upstream can still retry its occasional failure.
    reserve: u64,
    window_secs: u64,
    deposits: Box<[AtomicU64]>,
    withdrawals: Box<[AtomicU64]>,
}

impl RetryBudget {
    /// A budget for `policy`. A negative or non-finite ratio counts as 0; the window is
    /// rounded up to whole seconds within `1..=MAX_WINDOW_SECS`.
    pub fn new(policy: &RetryBudgetPolicy) -> Self {
        let ratio = if policy.ratio.is_finite() && policy.ratio > 0.0 {
            policy.ratio
        } else {
            0.0
        };
        let window_secs = policy
            .window
            .as_millis()
            .div_ceil(1_000)
            .clamp(1, u128::from(MAX_WINDOW_SECS)) as u64;
        let ring = |_| AtomicU64::new(0);
        RetryBudget {
            ratio,
            reserve: u64::from(policy.min_per_sec).saturating_mul(window_secs),
            window_secs,
            deposits: (0..window_secs).map(ring).collect(),
            withdrawals: (0..window_secs).map(ring).collect(),
        }
    }

    fn second(now: Instant) -> u32 {
        // Seconds mod 2^32: buckets compare seconds with wrapping arithmetic.
        (now.as_millis() / 1_000) as u32
    }

    fn slot(&self, second: u32) -> usize {
        (u64::from(second) % self.window_secs) as usize
    }

    /// Whether a bucket stamped `bucket_second` lies in the window ending at `second`.
    fn in_window(&self, bucket_second: u32, second: u32) -> bool {
        u64::from(second.wrapping_sub(bucket_second)) < self.window_secs
    }

    fn sum(&self, ring: &[AtomicU64], second: u32, skip: Option<usize>) -> u64 {
        ring.iter()
            .enumerate()
            .filter(|&(slot, _)| Some(slot) != skip)
            .map(|(_, bucket)| unpack(bucket.load(Ordering::Acquire)))
            .filter(|&(bucket_second, _)| self.in_window(bucket_second, second))
            .map(|(_, count)| u64::from(count))
            .sum()
    }

    /// Count one original request (call once per request, not per attempt).
    pub fn deposit(&self, now: Instant) {
        let second = Self::second(now);
        let Some(bucket) = self.deposits.get(self.slot(second)) else {
            return;
        };
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            let (bucket_second, count) = unpack(current);
            if bucket_second == second {
                Some(pack(second, count.saturating_add(1)))
            } else if is_newer(bucket_second, second) {
                // The slot already holds a later lap (a caller with an older `now`):
                // dropping this deposit errs on the side of fewer retries.
                None
            } else {
                Some(pack(second, 1))
            }
        });
    }

    /// Withdrawals the budget would still grant at `now`.
    pub fn remaining(&self, now: Instant) -> u64 {
        let second = Self::second(now);
        self.allowed(second)
            .saturating_sub(self.sum(&self.withdrawals, second, None))
    }

    fn allowed(&self, second: u32) -> u64 {
        let deposits = self.sum(&self.deposits, second, None) as f64;
        // `as` saturates for huge ratios, and the floor keeps grants at or under the bound.
        ((self.ratio * deposits).floor() as u64).saturating_add(self.reserve)
    }

    /// Ask for one retry or hedge at `now`; `true` grants it (and counts it).
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let second = Self::second(now);
        let slot = self.slot(second);
        let Some(bucket) = self.withdrawals.get(slot) else {
            return false;
        };
        let mut current = bucket.load(Ordering::Acquire);
        loop {
            let (bucket_second, count) = unpack(current);
            let (own, next) = if bucket_second == second {
                (u64::from(count), pack(second, count.saturating_add(1)))
            } else if is_newer(bucket_second, second) {
                // The slot holds a later lap (a caller with an older `now`): count against
                // it and charge it, erring toward fewer retries, never more.
                (
                    u64::from(count),
                    pack(bucket_second, count.saturating_add(1)),
                )
            } else {
                // An older lap: its count has left the window.
                (0, pack(second, 1))
            };
            let others = self.sum(&self.withdrawals, second, Some(slot));
            if others + own >= self.allowed(second) {
                return false;
            }
            match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_FAILURES: [FailureKind; 8] = [
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::ConnectError,
        FailureKind::WriteError,
        FailureKind::WriteTimeout,
        FailureKind::ReadTimeout,
        FailureKind::ReadError,
        FailureKind::Status(503),
    ];

    fn at_secs(s: u64) -> Instant {
        Instant::from_millis(s * 1_000)
    }

    #[test]
    fn only_connect_phase_failures_sent_nothing() {
        let sent_nothing: Vec<bool> = ALL_FAILURES.iter().map(FailureKind::nothing_sent).collect();
        assert_eq!(
            sent_nothing,
            [true, true, true, false, false, false, false, false]
        );
    }

    #[test]
    fn kong_defaults_retry_errors_and_timeouts_but_not_statuses() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.retries, 5);
        for failure in &ALL_FAILURES[..7] {
            assert_eq!(
                decide(&policy, 1, failure, true, true),
                RetryDecision::Retry,
                "{failure:?}"
            );
        }
        assert_eq!(
            decide(&policy, 1, &FailureKind::Status(503), true, true),
            RetryDecision::GiveUp(GiveUpReason::StatusNotRetryable)
        );
    }

    #[test]
    fn a_post_is_retried_only_when_nothing_was_sent() {
        let policy = RetryPolicy::default();
        for failure in &ALL_FAILURES[..3] {
            assert_eq!(
                decide(&policy, 1, failure, false, false),
                RetryDecision::Retry
            );
        }
        for failure in &ALL_FAILURES[3..7] {
            assert_eq!(
                decide(&policy, 1, failure, false, true),
                RetryDecision::GiveUp(GiveUpReason::NotIdempotent),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_streamed_body_cannot_be_replayed_once_sent() {
        let policy = RetryPolicy::default();
        assert_eq!(
            decide(&policy, 1, &FailureKind::ReadTimeout, true, false),
            RetryDecision::GiveUp(GiveUpReason::BodyNotReplayable)
        );
        assert_eq!(
            decide(&policy, 1, &FailureKind::ConnectRefused, true, false),
            RetryDecision::Retry,
            "the body was never read, so it is still whole"
        );
    }

    #[test]
    fn statuses_are_retried_only_when_listed_and_idempotent() {
        let policy = RetryPolicy {
            retries: 2,
            retry_on_status: std::sync::Arc::from([502, 503]),
        };
        assert_eq!(
            decide(&policy, 1, &FailureKind::Status(503), true, true),
            RetryDecision::Retry
        );
        assert_eq!(
            decide(&policy, 1, &FailureKind::Status(500), true, true),
            RetryDecision::GiveUp(GiveUpReason::StatusNotRetryable)
        );
        assert_eq!(
            decide(&policy, 1, &FailureKind::Status(503), false, true),
            RetryDecision::GiveUp(GiveUpReason::NotIdempotent)
        );
    }

    #[test]
    fn at_most_retries_retries() {
        let policy = RetryPolicy {
            retries: 2,
            retry_on_status: std::sync::Arc::from([]),
        };
        let failure = FailureKind::ConnectTimeout;
        assert_eq!(
            decide(&policy, 0, &failure, true, true),
            RetryDecision::Retry
        );
        assert_eq!(
            decide(&policy, 1, &failure, true, true),
            RetryDecision::Retry
        );
        assert_eq!(
            decide(&policy, 2, &failure, true, true),
            RetryDecision::Retry
        );
        assert_eq!(
            decide(&policy, 3, &failure, true, true),
            RetryDecision::GiveUp(GiveUpReason::RetriesExhausted),
            "three attempts = the first plus two retries"
        );
        let none = RetryPolicy {
            retries: 0,
            retry_on_status: std::sync::Arc::from([]),
        };
        assert_eq!(
            decide(&none, 1, &failure, true, true),
            RetryDecision::GiveUp(GiveUpReason::RetriesExhausted)
        );
    }

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(method), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "LOCK", "get", ""] {
            assert!(!is_idempotent(method), "{method}");
        }
    }

    #[test]
    fn hedging_needs_an_idempotent_replayable_request() {
        let hedge = HedgePolicy {
            after: Duration::from_millis(50),
        };
        assert_eq!(
            hedge.hedge_at(Instant::from_millis(1_000)),
            Instant::from_millis(1_050)
        );
        assert!(hedge.applies(true, true));
        assert!(!hedge.applies(false, true));
        assert!(!hedge.applies(true, false));
        assert!(
            !HedgePolicy {
                after: Duration::ZERO
            }
            .applies(true, true)
        );
    }

    #[test]
    fn budget_allows_the_reserve_then_the_ratio() {
        let budget = RetryBudget::new(&RetryBudgetPolicy {
            ratio: 0.2,
            min_per_sec: 1,
            window: Duration::from_secs(10),
        });
        // Reserve: 1/s × 10 s = 10 retries with no traffic at all.
        let granted = (0..20).filter(|_| budget.try_withdraw(at_secs(0))).count();
        assert_eq!(granted, 10);
        // 100 requests add 20 more.
        for _ in 0..100 {
            budget.deposit(at_secs(1));
        }
        assert_eq!(budget.remaining(at_secs(1)), 20);
        let granted = (0..50).filter(|_| budget.try_withdraw(at_secs(1))).count();
        assert_eq!(granted, 20);
        assert_eq!(budget.remaining(at_secs(1)), 0);
        // Second 0's withdrawals leave the window at second 10; the deposits of second 1
        // (and their withdrawals) at second 11.
        assert_eq!(budget.remaining(at_secs(9)), 0);
        assert_eq!(budget.remaining(at_secs(10)), 10);
        assert_eq!(budget.remaining(at_secs(11)), 10);
    }

    #[test]
    fn budget_policy_edge_values_do_not_panic() {
        let nan = RetryBudget::new(&RetryBudgetPolicy {
            ratio: f64::NAN,
            min_per_sec: 0,
            window: Duration::ZERO,
        });
        nan.deposit(at_secs(1));
        assert!(
            !nan.try_withdraw(at_secs(1)),
            "no ratio and no reserve: nothing"
        );
        let huge = RetryBudget::new(&RetryBudgetPolicy {
            ratio: 1e300,
            min_per_sec: u32::MAX,
            window: Duration::from_secs(u64::MAX),
        });
        huge.deposit(at_secs(u64::MAX / 1_000));
        assert!(huge.try_withdraw(at_secs(u64::MAX / 1_000)));
    }

    #[test]
    fn concurrent_withdrawals_in_one_second_never_exceed_the_bound() {
        let budget = std::sync::Arc::new(RetryBudget::new(&RetryBudgetPolicy {
            ratio: 0.0,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let budget = std::sync::Arc::clone(&budget);
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|_| budget.try_withdraw(at_secs(5)))
                        .count()
                })
            })
            .collect();
        let granted: usize = workers.into_iter().filter_map(|w| w.join().ok()).sum();
        assert_eq!(
            granted, 100,
            "exactly the 10/s × 10 s reserve, however the threads race"
        );
    }

    /// What the budget should answer, computed from the whole call history.
    struct Model {
        ratio: f64,
        reserve: u64,
        window_secs: u64,
        deposits: Vec<u64>,
        grants: Vec<u64>,
    }

    impl Model {
        fn in_window(&self, list: &[u64], second: u64) -> u64 {
            list.iter()
                .filter(|&&s| s <= second && second - s < self.window_secs)
                .count() as u64
        }

        fn try_withdraw(&mut self, second: u64) -> bool {
            let allowed = (self.ratio * self.in_window(&self.deposits, second) as f64).floor()
                as u64
                + self.reserve;
            let ok = self.in_window(&self.grants, second) < allowed;
            if ok {
                self.grants.push(second);
            }
            ok
        }
    }

    proptest! {
        #[test]
        fn budget_grants_exactly_up_to_its_bound(
            ratio in 0.0f64..1.0,
            min_per_sec in 0u32..3,
            window_secs in 1u64..6,
            calls in prop::collection::vec((0u64..3, any::<bool>()), 1..300),
        ) {
            let budget = RetryBudget::new(&RetryBudgetPolicy {
                ratio,
                min_per_sec,
                window: Duration::from_secs(window_secs),
            });
            let mut model = Model {
                ratio,
                reserve: u64::from(min_per_sec) * window_secs,
                window_secs,
                deposits: Vec::new(),
                grants: Vec::new(),
            };
            let mut second = 0u64;
            let mut granted_at = Vec::new();
            for (advance, is_deposit) in calls {
                second += advance;
                let now = Instant::from_millis(second * 1_000 + 999);
                if is_deposit {
                    budget.deposit(now);
                    model.deposits.push(second);
                    continue;
                }
                let granted = budget.try_withdraw(now);
                prop_assert_eq!(granted, model.try_withdraw(second), "second {}", second);
                if granted {
                    // The bound, restated over what the budget itself granted.
                    granted_at.push(second);
                    let allowed = (ratio * model.in_window(&model.deposits, second) as f64)
                        .floor() as u64
                        + model.reserve;
                    prop_assert!(model.in_window(&granted_at, second) <= allowed);
                }
            }
        }
    }
}
