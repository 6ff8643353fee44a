//! Outlier ejection from real traffic (Sluice extension, Envoy-like), one
//! [`OutlierDetector`] per address.
//!
//! Kong's passive checks need hand-tuned counters and never recover by themselves;
//! Envoy's outlier detection is the better model for "this address fails real
//! requests", so Sluice runs it next to Kong's checker:
//!
//! - **Consecutive failures**: `consecutive_failures` failed attempts in a row eject.
//! - **Failure rate**: over the last `window`, once at least `min_requests` attempts
//!   were seen, a failure ratio ≥ `failure_rate` ejects.
//! - **Ejection time** grows with repeats: `base × 2^(n-1)`, capped at `max_ejection`,
//!   where `n` counts recent ejections. `n` decays by one for every `max_ejection` the
//!   address spends clean (not ejected, not re-ejected), so an address that fails once a
//!   day always gets the base time.
//! - **Expiry** is a timer: [`OutlierDetector::ejected_until`] feeds the controller's
//!   `next_deadline`; after it the address returns with clean counters.
//! - **Active probes do not un-eject.** An address that answers `/health` with 200 but
//!   fails real traffic (a gray failure) stays out until its ejection expires, and is
//!   re-ejected for longer if it still fails. Envoy un-ejects on a successful active check,
//!   which is exactly the gray-failure hole this closes.
//!
//! A failure is a 5xx status, a transport failure or a timeout: those say the address is
//! broken. 4xx (including 429) says the request or the client is, and counts as success.
//!
//! The share cap (`max_ejected_share`) needs the whole tier and lives in the controller:
//! the detector only says *wants ejection*; the controller decides.
//!
//! Memory is bounded: the window is [`WINDOW_BUCKETS`] fixed buckets per address.

use crate::event::AttemptOutcome;
use crate::time::{Duration, Instant};
use crate::topology::OutlierPolicy;

/// Buckets the failure-rate window is divided into. Ten gives a 10% granularity on
/// the window's edge (1 s for the default 10 s window) at 160 bytes per address.
pub const WINDOW_BUCKETS: usize = 10;

/// Why an address wants to be ejected.
#[derive(Clone, Debug, PartialEq)]
pub enum EjectReason {
    ConsecutiveFailures { count: u32 },
    FailureRate { failed: u32, total: u32 },
}

impl EjectReason {
    pub fn describe(&self) -> String {
        match self {
            EjectReason::ConsecutiveFailures { count } => {
                format!("{count} consecutive failures")
            }
            EjectReason::FailureRate { failed, total } => {
                format!("{failed} of {total} attempts failed in the window")
            }
        }
    }
}

/// Whether an attempt outcome counts as a failure for outlier detection.
pub fn is_failure(outcome: AttemptOutcome) -> bool {
    match outcome {
        AttemptOutcome::Status(status) => (500..=599).contains(&status),
        AttemptOutcome::TcpFailure | AttemptOutcome::Timeout => true,
    }
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket period this holds (`now / bucket_width`); stale buckets are ignored.
    period: u64,
    total: u32,
    failed: u32,
}

/// The window's counts as of one bucket period: what [`OutlierDetector::window_counts`]
/// would sum from the buckets for any `now` in `period`.
#[derive(Copy, Clone, Debug, Default)]
struct WindowSums {
    period: u64,
    failed: u32,
    total: u32,
}

/// Outlier state of one address.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    consecutive: u32,
    buckets: [Bucket; WINDOW_BUCKETS],
    /// The bucket sums of the window ending in the period the last attempt fell in, kept
    /// up to date by each attempt of that period so the failure-rate check after every
    /// attempt reads two numbers instead of summing the ten buckets (that sum was ~15%
    /// of the controller's cost per attempt). Recomputed from the buckets when an
    /// attempt falls in another period (at most once per bucket width, 1 s by default);
    /// `None` after an ejection cleared the buckets. A cache: equality ignores it.
    sums: Option<WindowSums>,
    ejected_until: Option<Instant>,
    /// How many recent ejections count towards the next ejection's length.
    ejections: u32,
    /// When the address last became clean (ejection ended), for decaying `ejections`.
    clean_since: Instant,
    /// Total ejections ever (for the admin API and metrics).
    total_ejections: u64,
}

impl PartialEq for OutlierDetector {
    fn eq(&self, other: &Self) -> bool {
        // `sums` is derived from `buckets` (or absent): not part of the state.
        self.consecutive == other.consecutive
            && self.buckets == other.buckets
            && self.ejected_until == other.ejected_until
            && self.ejections == other.ejections
            && self.clean_since == other.clean_since
            && self.total_ejections == other.total_ejections
    }
}

impl Eq for OutlierDetector {}

impl Default for OutlierDetector {
    fn default() -> Self {
        OutlierDetector {
            consecutive: 0,
            buckets: [Bucket::default(); WINDOW_BUCKETS],
            sums: None,
            ejected_until: None,
            ejections: 0,
            clean_since: Instant::ZERO,
            total_ejections: 0,
        }
    }
}

impl OutlierDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Until when the address is ejected, if it is (and `now` has not passed it).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    pub fn total_ejections(&self) -> u64 {
        self.total_ejections
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    fn bucket_width(policy: &OutlierPolicy) -> u64 {
        (policy.window.as_millis() as u64 / WINDOW_BUCKETS as u64).max(1)
    }

    /// (failed, total) over the window ending at `now`.
    pub fn window_counts(&self, policy: &OutlierPolicy, now: Instant) -> (u32, u32) {
        self.counts_in(now.as_millis() / Self::bucket_width(policy))
    }

    /// (failed, total) over the window ending in bucket period `current`.
    fn counts_in(&self, current: u64) -> (u32, u32) {
        match self.sums {
            Some(sums) if sums.period == current => (sums.failed, sums.total),
            _ => self.sum_buckets(current),
        }
    }

    /// (failed, total) summed from the buckets of the window ending in period `current`.
    fn sum_buckets(&self, current: u64) -> (u32, u32) {
        let oldest = current.saturating_sub(WINDOW_BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.period >= oldest && b.period <= current && b.total > 0)
            .fold((0, 0), |(f, t), b| {
                (f.saturating_add(b.failed), t.saturating_add(b.total))
            })
    }

    /// Record one attempt. Returns why the address should be ejected, when it should;
    /// the caller applies the share cap and calls [`OutlierDetector::eject`].
    /// Attempts that finish while ejected (started before the ejection) are ignored.
    pub fn on_attempt(
        &mut self,
        policy: &OutlierPolicy,
        now: Instant,
        outcome: AttemptOutcome,
    ) -> Option<EjectReason> {
        if !policy.enabled || self.is_ejected(now) {
            return None;
        }
        let failed = is_failure(outcome);
        let period = now.as_millis() / Self::bucket_width(policy);
        // The sums of this period's window before the attempt. A bucket this attempt
        // recycles held a period a multiple of WINDOW_BUCKETS away, outside that window,
        // so recycling it changes no sum and the attempt adds to both alike.
        let (window_failed, window_total) = self.counts_in(period);
        let slot = (period % WINDOW_BUCKETS as u64) as usize;
        if let Some(bucket) = self.buckets.get_mut(slot) {
            if bucket.period != period {
                *bucket = Bucket {
                    period,
                    total: 0,
                    failed: 0,
                };
            }
            bucket.total = bucket.total.saturating_add(1);
            if failed {
                bucket.failed = bucket.failed.saturating_add(1);
            }
        }
        // Saturating like the bucket sum: a bucket stuck at u32::MAX means the sum
        // already is.
        self.sums = Some(WindowSums {
            period,
            failed: window_failed.saturating_add(u32::from(failed)),
            total: window_total.saturating_add(1),
        });
        if failed {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            self.consecutive = 0;
        }
        // Enabled and not ejected were checked above, and the period is this attempt's.
        self.wants_ejection_in(policy, period)
    }

    /// Whether the current counts call for an ejection (used again when a share cap
    /// that blocked an ejection frees up).
    pub fn wants_ejection(&self, policy: &OutlierPolicy, now: Instant) -> Option<EjectReason> {
        if !policy.enabled || self.is_ejected(now) {
            return None;
        }
        self.wants_ejection_in(policy, now.as_millis() / Self::bucket_width(policy))
    }

    /// [`Self::wants_ejection`] of an enabled, not ejected detector in bucket `period`.
    fn wants_ejection_in(&self, policy: &OutlierPolicy, period: u64) -> Option<EjectReason> {
        if policy.consecutive_failures > 0 && self.consecutive >= policy.consecutive_failures {
            return Some(EjectReason::ConsecutiveFailures {
                count: self.consecutive,
            });
        }
        let (failed, total) = self.counts_in(period);
        if policy.min_requests > 0
            && total >= policy.min_requests
            && f64::from(failed) >= policy.failure_rate * f64::from(total)
            && failed > 0
        {
            return Some(EjectReason::FailureRate { failed, total });
        }
        None
    }

    /// Eject now; returns the end of the ejection. Counters restart so the address
    /// is judged afresh when it returns.
    pub fn eject(&mut self, policy: &OutlierPolicy, now: Instant) -> Instant {
        self.decay(policy, now);
        self.ejections = self.ejections.saturating_add(1);
        self.total_ejections = self.total_ejections.saturating_add(1);
        let until = now + ejection_duration(policy, self.ejections);
        self.ejected_until = Some(until);
        self.consecutive = 0;
        self.buckets = [Bucket::default(); WINDOW_BUCKETS];
        self.sums = None;
        until
    }

    /// End the ejection if it is due. Returns true when it ended at this call.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now >= until => {
                self.ejected_until = None;
                self.clean_since = until;
                true
            }
            _ => false,
        }
    }

    /// Forget ejections that are long past: one step per `max_ejection` spent clean.
    fn decay(&mut self, policy: &OutlierPolicy, now: Instant) {
        if self.ejected_until.is_some() || self.ejections == 0 {
            return;
        }
        let step = policy.max_ejection.max(policy.base_ejection).as_millis() as u64;
        if step == 0 {
            self.ejections = 0;
            return;
        }
        let clean = now.saturating_duration_since(self.clean_since).as_millis() as u64;
        let steps = u32::try_from(clean / step).unwrap_or(u32::MAX);
        self.ejections = self.ejections.saturating_sub(steps);
    }
}

/// `base × 2^(n-1)` capped at `max` (n ≥ 1).
pub fn ejection_duration(policy: &OutlierPolicy, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(31);
    let base = policy.base_ejection.as_millis() as u64;
    let ms = base.saturating_mul(1u64 << doublings);
    Duration::from_millis(ms).min(policy.max_ejection.max(policy.base_ejection))
}

/// How many of a tier's `members` addresses may be ejected at once.
///
/// `floor(members × max_ejected_share)`, but always at least one: a tier of one or
/// two addresses could otherwise never eject its bad address, and for a single-address
/// tier ejection is exactly the signal that moves traffic to the next tier. The
/// catastrophic case the cap guards against (a systemic failure ejecting everything) is
/// bounded by panic mode, which uses every address again when too little is left.
pub fn max_ejected(members: usize, max_ejected_share: f64) -> usize {
    let share = if max_ejected_share.is_finite() {
        max_ejected_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if share == 0.0 {
        return 0;
    }
    ((members as f64 * share).floor() as usize)
        .max(1)
        .min(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }

    const OK: AttemptOutcome = AttemptOutcome::Status(200);
    const FAIL: AttemptOutcome = AttemptOutcome::Status(500);

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets() {
        let p = policy();
        let mut d = OutlierDetector::new();
        for _ in 0..4 {
            assert_eq!(d.on_attempt(&p, at(0), FAIL), None);
        }
        assert_eq!(d.on_attempt(&p, at(0), OK), None);
        for _ in 0..4 {
            assert_eq!(d.on_attempt(&p, at(1), FAIL), None);
        }
        assert_eq!(
            d.on_attempt(&p, at(1), AttemptOutcome::Timeout),
            Some(EjectReason::ConsecutiveFailures { count: 5 })
        );
    }

    #[test]
    fn failure_rate_needs_minimum_volume_within_the_window() {
        let p = policy();
        let mut d = OutlierDetector::new();
        // Alternate: never 5 in a row, 50% failures.
        let mut wanted = None;
        for i in 0..20u64 {
            let outcome = if i % 2 == 0 { FAIL } else { OK };
            wanted = d.on_attempt(&p, at(i * 100), outcome);
            if i < 19 {
                assert_eq!(wanted, None, "below min_requests at {i}");
            }
        }
        assert_eq!(
            wanted,
            Some(EjectReason::FailureRate {
                failed: 10,
                total: 20
            })
        );
        // The same pattern spread over more than the window never reaches the volume.
        let mut d = OutlierDetector::new();
        for i in 0..40u64 {
            let outcome = if i % 2 == 0 { FAIL } else { OK };
            assert_eq!(d.on_attempt(&p, at(i * 1_000), outcome), None);
        }
    }

    #[test]
    fn four_xx_is_not_a_failure() {
        assert!(!is_failure(AttemptOutcome::Status(429)));
        assert!(!is_failure(AttemptOutcome::Status(404)));
        assert!(is_failure(AttemptOutcome::Status(503)));
        assert!(is_failure(AttemptOutcome::TcpFailure));
    }

    #[test]
    fn ejection_time_doubles_caps_and_decays() {
        let p = policy();
        let mut d = OutlierDetector::new();
        let mut now = at(0);
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let until = d.eject(&p, now);
            lengths.push(until.saturating_duration_since(now).as_secs());
            assert!(d.is_ejected(now));
            assert!(!d.expire(now), "not due yet");
            assert!(d.expire(until));
            now = until;
        }
        assert_eq!(lengths, vec![10, 20, 40, 80, 160, 300, 300]);
        // Clean for 2 × max_ejection: the count drops by two, 7 → 5, next is 5+1 = 6th → 300.
        let until = d.eject(&p, now + Duration::from_secs(600));
        assert_eq!(
            until.saturating_duration_since(now + Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        // After a long clean period it is back to the base time.
        d.expire(until);
        let later = until + Duration::from_secs(300 * 10);
        let end = d.eject(&p, later);
        assert_eq!(
            end.saturating_duration_since(later),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn attempts_while_ejected_are_ignored() {
        let p = policy();
        let mut d = OutlierDetector::new();
        d.eject(&p, at(0));
        for _ in 0..10 {
            assert_eq!(d.on_attempt(&p, at(5), FAIL), None);
        }
        assert_eq!(d.consecutive_failures(), 0);
    }

    #[test]
    fn disabled_policy_never_ejects() {
        let mut p = policy();
        p.enabled = false;
        let mut d = OutlierDetector::new();
        for _ in 0..100 {
            assert_eq!(d.on_attempt(&p, at(0), FAIL), None);
        }
    }

    proptest::proptest! {
        /// The counts kept per attempt are the buckets' sums, whatever the order of the
        /// attempts (time going backwards too) and the ejections in between.
        #[test]
        fn kept_window_counts_equal_the_bucket_sums(
            steps in proptest::collection::vec((0u64..3_000, 0u8..8), 1..300),
        ) {
            let mut p = policy();
            p.consecutive_failures = 0;
            let mut d = OutlierDetector::new();
            let mut now = 50_000u64;
            for (delta, kind) in steps {
                // Mostly forward, sometimes back (a late report), sometimes an ejection.
                now = if kind == 7 { now.saturating_sub(delta) } else { now + delta / 4 };
                if kind == 6 {
                    d.eject(&p, at(now));
                    d.expire(at(now + 400_000));
                    continue;
                }
                let outcome = if kind < 2 { FAIL } else { OK };
                d.on_attempt(&p, at(now), outcome);
                let width = OutlierDetector::bucket_width(&p);
                for read in [now, now + 700, now + 1_500] {
                    proptest::prop_assert_eq!(
                        d.window_counts(&p, at(read)),
                        d.sum_buckets(read / width)
                    );
                }
            }
        }
    }

    #[test]
    fn share_cap_allows_at_least_one() {
        assert_eq!(max_ejected(1, 0.5), 1);
        assert_eq!(max_ejected(2, 0.5), 1);
        assert_eq!(max_ejected(3, 0.5), 1);
        assert_eq!(max_ejected(10, 0.5), 5);
        assert_eq!(max_ejected(10, 0.0), 0, "zero share disables ejection");
        assert_eq!(max_ejected(4, f64::NAN), 0);
        assert_eq!(max_ejected(0, 0.5), 0);
    }
}
