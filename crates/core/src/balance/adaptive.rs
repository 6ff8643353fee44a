//! Effective weights: slow start and latency/error awareness, computed by the controller
//! whenever it rebuilds a snapshot (pure; the result goes into
//! `AddressView::effective_weight`, which every algorithm balances by).
//!
//! # What the controller passes ([`WeightInputs`])
//! - `weight`: the configured (or SRV) weight; `available`: `AddressView::unavailable`
//!   is `None`.
//! - `available_since`: when the address last became available (added, recovered from
//!   unhealthy, ejection ended, undrained); `None` when it has been available since
//!   before the controller started, so a restart does not slow-start everything.
//! - `slow_start`: `FailoverPolicy::slow_start`; `now`: the rebuild time.
//! - `signal`: only for round-robin with `FailoverPolicy::adaptive_weights`:
//!   the address's `ewma::latency_us`, the [`median`] of that figure over the tier's
//!   available members, and its error ratio and request count over the outlier window.
//!   The latency and least-connections algorithms already react to load and latency per
//!   request, so they take `signal: None` and get slow start only.
//!
//! The controller must rebuild while a ramp is in progress (slow start changes the
//! weight as time passes): [`next_change`] says until when.
//!
//! # The formula
//! `effective = max(1, round(weight × ramp × latency_factor × error_factor))`, 0 when the
//! address is unavailable or its weight is 0.
//! - `ramp = max(SLOW_START_MIN_SHARE, elapsed / slow_start)`: linear, like NGINX Plus's
//!   `slow_start` and Envoy's default aggression of 1.0, starting at 10% (Envoy's
//!   `min_weight_percent` default) so the new address gets real traffic to warm up on.
//! - `latency_factor = min(1, LATENCY_TOLERANCE / (latency / median))`: nothing happens
//!   until an address is 1.5× slower than its tier's median; beyond that its weight is
//!   inversely proportional to how much slower it is (3× the median → half weight).
//! - `error_factor`: 1 up to `ERROR_TOLERANCE` (5%) errors, then linear down to
//!   `ADAPTIVE_MIN_SHARE` at 100% errors; ignored below `MIN_SIGNAL_REQUESTS` requests.
//! - Both factors are bounded below by `ADAPTIVE_MIN_SHARE` (10%) so a degraded address
//!   still sees real traffic and can prove it recovered; taking it out entirely is the
//!   job of health checks and outlier ejection, which have hysteresis for that.
//!   Both are continuous, so a small change in inputs never makes a step in weight.

use crate::time::{Duration, Instant};

/// Share of its weight a slow-starting address gets at once (Envoy's
/// `min_weight_percent` default, 10%): enough requests to warm caches and connection
/// pools, few enough that a cold backend is not swamped.
pub const SLOW_START_MIN_SHARE: f64 = 0.1;

/// Latency relative to the tier median that is still considered normal. Below 1.5×,
/// differences are usually workload mix, not a sick backend; reacting there would make
/// weights jitter with every EWMA update.
pub const LATENCY_TOLERANCE: f64 = 1.5;

/// Error ratio that is still considered background noise (clients' bad requests, rare
/// timeouts); at 5% a real problem is usually already visible in the outlier window.
pub const ERROR_TOLERANCE: f64 = 0.05;

/// Requests in the window below which the error ratio is not trusted (1 failure in 3
/// requests says nothing). Envoy's outlier `success_rate_request_volume` default is 100;
/// we only soften a weight, not eject, so a lower 20 is enough.
pub const MIN_SIGNAL_REQUESTS: u32 = 20;

/// Lowest share of its weight an adaptive factor can leave an address (10%), so it keeps
/// receiving the real traffic that shows when it has recovered.
pub const ADAPTIVE_MIN_SHARE: f64 = 0.1;

/// Latency and error figures of one address, relative to its tier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveSignal {
    /// `balance::ewma::latency_us` of the address at `now`.
    pub latency_us: f64,
    /// [`median`] of `latency_us` over the tier's available members.
    pub tier_median_us: f64,
    /// Failed attempts / attempts over the outlier window (0.0..=1.0).
    pub error_ratio: f64,
    /// Attempts over the outlier window.
    pub requests: u32,
}

/// Everything [`effective_weight`] needs about one address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightInputs {
    pub weight: u32,
    pub available: bool,
    pub available_since: Option<Instant>,
    pub slow_start: Duration,
    pub now: Instant,
    pub signal: Option<AdaptiveSignal>,
}

/// Median of `values` (the mean of the two middle ones for an even count); `None` when
/// empty. Reorders `values`. NaNs sort last and so only matter if they are the majority.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let len = values.len();
    let upper = *values.get(len / 2)?;
    if len % 2 == 1 {
        Some(upper)
    } else {
        values.get(len / 2 - 1).map(|&lower| (lower + upper) / 2.0)
    }
}

/// Slow-start share of the weight (`SLOW_START_MIN_SHARE..=1.0`).
fn ramp(inputs: &WeightInputs) -> f64 {
    let Some(since) = inputs.available_since else {
        return 1.0;
    };
    if inputs.slow_start.is_zero() {
        return 1.0;
    }
    let elapsed = inputs.now.saturating_duration_since(since).as_secs_f64();
    (elapsed / inputs.slow_start.as_secs_f64()).clamp(SLOW_START_MIN_SHARE, 1.0)
}

fn latency_factor(signal: &AdaptiveSignal) -> f64 {
    let (latency, median) = (signal.latency_us, signal.tier_median_us);
    if !(latency.is_finite() && median.is_finite() && latency > 0.0 && median > 0.0) {
        return 1.0;
    }
    (LATENCY_TOLERANCE * median / latency).clamp(ADAPTIVE_MIN_SHARE, 1.0)
}

fn error_factor(signal: &AdaptiveSignal) -> f64 {
    if signal.requests < MIN_SIGNAL_REQUESTS || !signal.error_ratio.is_finite() {
        return 1.0;
    }
    let excess = ((signal.error_ratio - ERROR_TOLERANCE) / (1.0 - ERROR_TOLERANCE)).clamp(0.0, 1.0);
    1.0 - excess * (1.0 - ADAPTIVE_MIN_SHARE)
}

/// The weight balancing should use for an address (see the module docs for the formula).
pub fn effective_weight(inputs: &WeightInputs) -> u32 {
    if !inputs.available || inputs.weight == 0 {
        return 0;
    }
    let mut factor = ramp(inputs);
    if let Some(signal) = &inputs.signal {
        factor *= latency_factor(signal) * error_factor(signal);
    }
    let scaled = (f64::from(inputs.weight) * factor).round();
    // `factor` is within 0.001..=1.0, so `scaled` fits; `as` saturates anyway.
    (scaled as u32).clamp(1, inputs.weight)
}

/// When the slow-start ramp of this address ends (the controller should rebuild the
/// snapshot at least every so often until then); `None` when no ramp is running.
pub fn next_change(inputs: &WeightInputs) -> Option<Instant> {
    let since = inputs.available_since?;
    if inputs.slow_start.is_zero() || !inputs.available {
        return None;
    }
    let end = since + inputs.slow_start;
    (end > inputs.now).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs(weight: u32) -> WeightInputs {
        WeightInputs {
            weight,
            available: true,
            available_since: None,
            slow_start: Duration::from_secs(30),
            now: Instant::from_millis(100_000),
            signal: None,
        }
    }

    fn signal(latency_ms: f64, median_ms: f64, error_ratio: f64, requests: u32) -> AdaptiveSignal {
        AdaptiveSignal {
            latency_us: latency_ms * 1_000.0,
            tier_median_us: median_ms * 1_000.0,
            error_ratio,
            requests,
        }
    }

    #[test]
    fn unavailable_or_zero_weight_is_zero() {
        assert_eq!(
            effective_weight(&WeightInputs {
                available: false,
                ..inputs(100)
            }),
            0
        );
        assert_eq!(effective_weight(&inputs(0)), 0);
        assert_eq!(effective_weight(&inputs(100)), 100);
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_minimum_share() {
        let at = |elapsed_s: u64| WeightInputs {
            available_since: Some(Instant::from_millis(100_000 - elapsed_s * 1_000)),
            ..inputs(1_000)
        };
        assert_eq!(effective_weight(&at(0)), 100, "starts at 10%, not 0");
        assert_eq!(effective_weight(&at(15)), 500);
        assert_eq!(effective_weight(&at(30)), 1_000);
        assert_eq!(effective_weight(&at(90)), 1_000);
        assert_eq!(next_change(&at(15)), Some(Instant::from_millis(115_000)));
        assert_eq!(next_change(&at(30)), None);
        let disabled = WeightInputs {
            slow_start: Duration::ZERO,
            ..at(0)
        };
        assert_eq!(effective_weight(&disabled), 1_000);
        assert_eq!(next_change(&disabled), None);
    }

    #[test]
    fn a_slow_address_loses_weight_inversely_to_its_slowness() {
        let with = |s| WeightInputs {
            signal: Some(s),
            ..inputs(100)
        };
        assert_eq!(
            effective_weight(&with(signal(14.0, 10.0, 0.0, 100))),
            100,
            "within tolerance"
        );
        assert_eq!(effective_weight(&with(signal(30.0, 10.0, 0.0, 100))), 50);
        assert_eq!(
            effective_weight(&with(signal(1_000.0, 10.0, 0.0, 100))),
            10,
            "bounded below"
        );
    }

    #[test]
    fn errors_lower_the_weight_once_there_are_enough_requests() {
        let with = |s| WeightInputs {
            signal: Some(s),
            ..inputs(100)
        };
        assert_eq!(effective_weight(&with(signal(10.0, 10.0, 0.05, 100))), 100);
        assert_eq!(effective_weight(&with(signal(10.0, 10.0, 1.0, 100))), 10);
        let half = effective_weight(&with(signal(10.0, 10.0, 0.525, 100)));
        assert_eq!(half, 55, "halfway between tolerance and 100% errors");
        assert_eq!(
            effective_weight(&with(signal(10.0, 10.0, 1.0, 5))),
            100,
            "too few requests"
        );
    }

    #[test]
    fn a_light_address_never_drops_to_zero() {
        let worst = WeightInputs {
            available_since: Some(Instant::from_millis(100_000)),
            signal: Some(signal(1_000.0, 1.0, 1.0, 1_000)),
            ..inputs(1)
        };
        assert_eq!(effective_weight(&worst), 1);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    proptest! {
        #[test]
        fn effective_weight_stays_within_one_and_the_configured_weight(
            weight in 1u32..=65_535,
            elapsed_ms in 0u64..100_000,
            latency in 0.0f64..1e7,
            median_value in 0.0f64..1e7,
            error_ratio in 0.0f64..=1.0,
            requests in 0u32..1_000,
        ) {
            let got = effective_weight(&WeightInputs {
                weight,
                available: true,
                available_since: Some(Instant::from_millis(100_000 - elapsed_ms)),
                slow_start: Duration::from_secs(60),
                now: Instant::from_millis(100_000),
                signal: Some(AdaptiveSignal { latency_us: latency, tier_median_us: median_value, error_ratio, requests }),
            });
            prop_assert!(got >= 1 && got <= weight);
        }
    }
}
