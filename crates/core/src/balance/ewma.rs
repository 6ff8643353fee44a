//! Peak-EWMA latency estimate per address (Finagle / Linkerd style), the input of the
//! `latency` balancer and of adaptive round-robin weights.
//!
//! The estimate is one number per address that behaves like a decaying peak:
//! * Between samples it **decays toward zero** with time constant [`DECAY_TAU`]:
//!   `e(t) = e₀ · exp(−Δt/τ)`. An address nobody picks (because it looked slow) thus gets
//!   cheaper and is probed again by real traffic.
//! * A sample **at or above** the decayed estimate replaces it at once: a backend that
//!   just got slow is treated as slow immediately, and a probe of a recovered address
//!   (whose estimate decayed below its real latency) corrects it in one sample.
//! * The first measurement replaces the seed ([`DEFAULT_RTT`]) whatever its value.
//! * A sample **below** the decayed estimate is blended in with weight
//!   `1 − exp(−rtt/τ)`, the time the request was outstanding: the estimate comes down
//!   mainly by decaying, not by one lucky fast answer.
//!
//! This is the rule of Linkerd's `tower` PeakEwma, which decays the estimate on every
//! read and blends each response over its round-trip time. Kong's `latency.lua` blends
//! from the *undecayed* stored value instead, so a probe of an address that looked slow
//! drags its old latency back in and the address stays shunned long after it recovered
//! (a test here reproduces that scenario: see `balance::latency`).
//!
//! Reads never go below [`LATENCY_FLOOR`]: a zero cost would make the in-flight factor of
//! `cost` meaningless, and the zero-cost address would take every request until its
//! first answer arrived (herding).
//!
//! The state is two atomics in [`AddressLoad`]; the data plane calls [`observe`] /
//! [`observe_failure`] after each attempt, the balancers call [`cost`] / [`latency_us`]
//! with their own `now`.

use std::sync::LazyLock;

use crate::load::AddressLoad;
use crate::time::{Duration, Instant};

/// Time constant of the decay. 10 s is Linkerd's and Finagle's default and Kong's
/// `DECAY_TIME`: long enough that one fast answer does not erase a slow trend, short
/// enough that a backend that recovered is trusted again within tens of seconds.
pub const DECAY_TAU: Duration = Duration::from_secs(10);

/// Estimate of an address with no sample yet (Linkerd's default RTT). A new address must
/// not look free, or the P2C balancer sends it a burst before its first answer; 30 ms is a
/// typical cross-zone request and decays toward the floor within ~35 s if the address is
/// never picked, so it is not starved either.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Lowest latency estimate a read returns. Differences below 1 ms between backends are
/// mostly scheduling noise on the proxy host; treating them as equal makes the choice
/// in-flight driven (least-request), which is right for fast backends. It also bounds
/// herding: an idle or decayed address is never cheaper than 1 ms, so it collects at most
/// about `peer_ms` extra in-flight requests before a peer at `peer_ms` wins again.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(1);

fn micros(d: Duration) -> f64 {
    d.as_micros() as f64
}

/// Gaps (in ms) between an address's last sample and a read for which the decay factor
/// is looked up instead of computed. Under load nearly every read falls within a few
/// milliseconds of the address's last sample: 64 covers every address that gets a sample
/// at least every 64 ms (16 requests a second), in 512 bytes. Longer gaps call `exp`.
const DECAY_TABLE_MS: usize = 64;

/// `exp(−k/τ)` for `k` in `0..DECAY_TABLE_MS` ms, computed once by the very expression
/// [`decay_factor`] uses for longer gaps, so a looked-up factor is bit-for-bit the one
/// `exp` gives: no estimate, cost or pick changes. Immutable after its first use.
static DECAY_TABLE: LazyLock<[f64; DECAY_TABLE_MS]> =
    LazyLock::new(|| std::array::from_fn(|k| decay_exp(k as u64)));

/// `exp(−elapsed/τ)`, computed.
fn decay_exp(elapsed_ms: u64) -> f64 {
    (-(elapsed_ms as f64) / DECAY_TAU.as_millis() as f64).exp()
}

/// `exp(−Δt/τ)` for the time between `stamp` and `now` (1.0 when `now` is not later).
///
/// Short gaps read [`DECAY_TABLE`] (a libm `exp` is ~75 instructions; two per pick
/// were a fifth of a `latency` pick), and a gap of 0 is exactly `exp(-0) = 1`.
fn decay_factor(stamp: Instant, now: Instant) -> f64 {
    let elapsed_ms = now.as_millis().saturating_sub(stamp.as_millis());
    if elapsed_ms == 0 {
        return 1.0;
    }
    match DECAY_TABLE.get(elapsed_ms as usize) {
        Some(&factor) => factor,
        None => decay_exp(elapsed_ms),
    }
}

/// The stored estimate, or the default RTT when there is none (or it is corrupt).
fn stored_or_default(us: f64) -> f64 {
    if us.is_finite() && us > 0.0 {
        us
    } else {
        micros(DEFAULT_RTT)
    }
}

/// Seed (or reseed) an address with the default RTT at `now`. The controller calls this
/// for a new address and may call it when an address comes back from being unavailable,
/// so its stale, decayed estimate does not make it look free.
pub fn seed(load: &AddressLoad, now: Instant) {
    load.seed_ewma(micros(DEFAULT_RTT), now);
}

/// Record one response latency (connect + time to response header) measured at `now`.
/// Failed attempts go through [`observe_failure`] instead.
///
/// Concurrent observers may overwrite each other's update; a lost sample only delays
/// convergence by one sample, which is why this is two relaxed stores and not a lock.
pub fn observe(load: &AddressLoad, rtt: Duration, now: Instant) {
    let sample = micros(rtt);
    let decayed = decayed_us(load, now);
    let next = if sample >= decayed || !load.ewma_measured() {
        // Peak: a slower answer is believed at once. And the first measurement replaces
        // the seed: the default RTT was a guess, not something to average with.
        sample
    } else {
        let w = (-sample / micros(DECAY_TAU)).exp();
        decayed * w + sample * (1.0 - w)
    };
    load.store_ewma(next, now);
}

/// The estimate decayed toward zero since its last update, without the floor.
fn decayed_us(load: &AddressLoad, now: Instant) -> f64 {
    let (us, stamp) = load.ewma_raw();
    stored_or_default(us) * decay_factor(stamp, now)
}

/// Ceiling of the penalty one failure can add (see [`observe_failure`]). Above the latency
/// of any healthy API call it competes with, so a repeatedly failing address loses every
/// comparison against a healthy one; low enough that, once it stops failing and is left
/// idle, its estimate decays back to tens of milliseconds within about a minute.
pub const FAILURE_PENALTY_CAP: Duration = Duration::from_secs(1);

/// Record a failed attempt (transport error, timeout, or a status the proxy counts as a
/// failure) that took `elapsed`.
///
/// Failing fast must not look fast: a backend that answers every request with an instant
/// 503 or refuses connections would otherwise have the lowest latency of all and attract
/// more traffic the more it fails (the pitfall Linkerd's "load biaser" fixes for 429s).
/// The sample is the larger of `elapsed` and double the current estimate (capped at
/// [`FAILURE_PENALTY_CAP`] unless `elapsed` itself is longer), and because it is never
/// below the estimate it is taken at once, peak-style: consecutive failures double the
/// cost each time, and successes bring it back down with the usual decay.
pub fn observe_failure(load: &AddressLoad, elapsed: Duration, now: Instant) {
    let current = latency_us(load, now);
    let doubled = (current * 2.0).min(micros(FAILURE_PENALTY_CAP));
    let penalty_us = micros(elapsed).max(current).max(doubled);
    load.store_ewma(penalty_us, now);
}

/// Latency estimate in microseconds as of `now`: the stored value decayed toward zero by
/// the idle time since the last sample, never below [`LATENCY_FLOOR`].
pub fn latency_us(load: &AddressLoad, now: Instant) -> f64 {
    decayed_us(load, now).max(micros(LATENCY_FLOOR))
}

/// Load cost of sending one more request to this address: `latency × (in_flight + 1)`.
/// The `+1` counts the request being placed, so an idle fast address beats an idle slow
/// one and a queue on any address raises its cost linearly. Balancers divide by weight.
pub fn cost(load: &AddressLoad, now: Instant) -> f64 {
    latency_us(load, now) * (f64::from(load.in_flight()) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_slower_sample_replaces_the_estimate_at_once() {
        let load = AddressLoad::new(at(0));
        observe(&load, Duration::from_millis(5), at(1_000));
        observe(&load, Duration::from_millis(200), at(1_001));
        assert_eq!(load.ewma_raw().0, 200_000.0);
    }

    #[test]
    fn the_first_measurement_replaces_the_seed() {
        let load = AddressLoad::new(at(0));
        assert!(!load.ewma_measured());
        observe(&load, Duration::from_millis(2), at(100));
        assert_eq!(load.ewma_raw().0, 2_000.0);
        assert!(load.ewma_measured());
        seed(&load, at(200));
        assert_eq!(
            latency_us(&load, at(200)),
            micros(DEFAULT_RTT),
            "reseeding on recovery"
        );
        assert!(!load.ewma_measured());
    }

    #[test]
    fn a_faster_sample_is_blended_over_its_round_trip_time() {
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(100), at(0));
        // Ten seconds (one τ) later the estimate has decayed to 100/e ms; a 10 ms answer
        // is blended in with weight 1 − exp(−10 ms / 10 s), i.e. about 0.1%.
        observe(&load, Duration::from_millis(10), at(10_000));
        let decayed = 100_000.0 / std::f64::consts::E;
        let w = (-0.001f64).exp();
        let expected = decayed * w + 10_000.0 * (1.0 - w);
        let got = load.ewma_raw().0;
        assert!(
            (got - expected).abs() < 0.01,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn a_probe_of_a_decayed_address_resets_it_to_the_sample() {
        // The recovered-backend case: 50 ms, then idle for 30 s, then answers in 5 ms.
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(50), at(0));
        assert!(latency_us(&load, at(30_000)) < 5_000.0);
        observe(&load, Duration::from_millis(5), at(30_000));
        assert_eq!(
            load.ewma_raw().0,
            5_000.0,
            "not dragged back toward the old 50 ms"
        );
    }

    #[test]
    fn reading_decays_toward_the_floor_so_idle_addresses_get_probed() {
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(80), at(0));
        assert_eq!(latency_us(&load, at(0)), 80_000.0);
        let later = latency_us(&load, at(10_000));
        assert!((later - 80_000.0 / std::f64::consts::E).abs() < 1.0);
        assert_eq!(
            latency_us(&load, at(3_600_000)),
            micros(LATENCY_FLOOR),
            "an hour idle decays to the floor, never to zero"
        );
    }

    #[test]
    fn an_address_without_samples_costs_the_default_rtt() {
        let load = AddressLoad::new(at(5_000));
        assert_eq!(latency_us(&load, at(5_000)), micros(DEFAULT_RTT));
        let unseeded = AddressLoad::default();
        assert_eq!(latency_us(&unseeded, at(0)), micros(DEFAULT_RTT));
    }

    #[test]
    fn failures_double_the_estimate_up_to_the_cap_and_never_lower_it() {
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(4), at(0));
        observe_failure(&load, Duration::from_micros(200), at(0));
        assert_eq!(
            load.ewma_raw().0,
            8_000.0,
            "an instant failure still doubles the cost"
        );
        for _ in 0..20 {
            observe_failure(&load, Duration::from_micros(200), at(0));
        }
        assert_eq!(load.ewma_raw().0, micros(FAILURE_PENALTY_CAP));
        // A timeout longer than the cap is recorded as it was.
        observe_failure(&load, Duration::from_secs(5), at(0));
        assert_eq!(load.ewma_raw().0, 5_000_000.0);
        // Above the cap, a short failure keeps the estimate rather than lowering it.
        observe_failure(&load, Duration::from_millis(1), at(0));
        assert_eq!(load.ewma_raw().0, 5_000_000.0);
        // Successes bring it back down with the usual decay.
        observe(&load, Duration::from_millis(4), at(60_000));
        assert!(load.ewma_raw().0 < 20_000.0, "{}", load.ewma_raw().0);
    }

    #[test]
    fn looked_up_decay_factors_are_the_computed_ones() {
        // Bit for bit: the table must not move any estimate.
        for elapsed in 0..(DECAY_TABLE_MS as u64 + 3) {
            let computed = (-(elapsed as f64) / DECAY_TAU.as_millis() as f64).exp();
            let got = decay_factor(at(1_000), at(1_000 + elapsed));
            assert_eq!(got.to_bits(), computed.to_bits(), "{elapsed} ms");
        }
    }

    #[test]
    fn cost_grows_linearly_with_in_flight() {
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(10), at(0));
        assert_eq!(cost(&load, at(0)), 10_000.0);
        load.start();
        load.start();
        assert_eq!(cost(&load, at(0)), 30_000.0);
    }

    #[test]
    fn time_running_backwards_never_inflates_or_breaks_the_estimate() {
        let load = AddressLoad::default();
        observe(&load, Duration::from_millis(50), at(10_000));
        observe(&load, Duration::from_millis(5), at(9_000));
        let (us, _) = load.ewma_raw();
        assert!(
            us > 49_900.0 && us <= 50_000.0,
            "no decay for a `now` in the past, only the 5 ms blend: {us}"
        );
        assert_eq!(
            latency_us(&load, at(1_000)),
            us,
            "reads in the past do not decay"
        );
    }
}
