//! Live load figures per address, shared between the data plane (which writes them on
//! every request) and the balancers (which read them).
//!
//! This is the one place where the core holds shared mutable state: lock-free atomics,
//! written by the proxy with a caller-supplied `now`. They survive snapshot rebuilds and
//! config reloads because the controller keeps one `Arc<AddressLoad>` per address key.
//!
//! The EWMA arithmetic (peak-EWMA, decay, default RTT) lives in `balance::ewma`; this
//! type only stores its state. Value and stamp are two separate atomics, so a reader can
//! see a new value with an old stamp for an instant: the EWMA is a heuristic and that
//! window only shifts one decay step, never a decision's correctness.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::time::Instant;

/// In-flight requests and a peak-EWMA of response latency for one address.
#[derive(Debug, Default)]
pub struct AddressLoad {
    in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds, stored as f64 bits. `0.0` = no estimate yet.
    ewma_us_bits: AtomicU64,
    /// When the EWMA was last updated (virtual ms).
    ewma_stamp_ms: AtomicU64,
    /// Whether the EWMA holds a measurement rather than a seed: the first real sample
    /// replaces a seed outright instead of being blended with a number nobody measured.
    ewma_measured: AtomicBool,
}

impl AddressLoad {
    /// A load record for an address that appears at `now`, seeded with the default RTT
    /// (`balance::ewma::DEFAULT_RTT`) stamped at `now`.
    ///
    /// The controller should create loads this way rather than with `Default`: the seed
    /// makes a new address look as expensive as a typical backend instead of free (so P2C
    /// does not herd every request onto it), and because it decays from `now`, an address
    /// that never wins a comparison still becomes cheap enough to be probed by real traffic.
    pub fn new(now: Instant) -> Self {
        let load = AddressLoad::default();
        crate::balance::ewma::seed(&load, now);
        load
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request to this address started.
    pub fn start(&self) {
        // Saturate rather than wrap: u32::MAX in-flight requests is impossible in practice,
        // but a wrap to 0 would make the busiest address look idle.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            });
    }

    /// A request to this address ended (in any way).
    pub fn finish(&self) {
        // Saturate rather than wrap: a snapshot swap must never make a count negative.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Raw EWMA state: (latency µs, stamp). Balancers decay it with their own `now`.
    /// A latency of `0.0` means no estimate has been stored yet.
    pub fn ewma_raw(&self) -> (f64, Instant) {
        (
            f64::from_bits(self.ewma_us_bits.load(Ordering::Relaxed)),
            Instant::from_millis(self.ewma_stamp_ms.load(Ordering::Relaxed)),
        )
    }

    /// Store a new EWMA value computed by `balance::ewma` from a measurement.
    pub fn store_ewma(&self, us: f64, now: Instant) {
        self.ewma_us_bits.store(us.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ms.store(now.as_millis(), Ordering::Relaxed);
        self.ewma_measured.store(true, Ordering::Relaxed);
    }

    /// Store an assumed EWMA value (a default for an address with no measurement yet);
    /// the next measurement replaces it.
    pub fn seed_ewma(&self, us: f64, now: Instant) {
        self.ewma_us_bits.store(us.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ms.store(now.as_millis(), Ordering::Relaxed);
        self.ewma_measured.store(false, Ordering::Relaxed);
    }

    /// Whether the EWMA is based on at least one measurement (not only a seed).
    pub fn ewma_measured(&self) -> bool {
        self.ewma_measured.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_and_never_goes_negative() {
        let load = AddressLoad::default();
        load.start();
        load.start();
        assert_eq!(load.in_flight(), 2);
        load.finish();
        load.finish();
        load.finish();
        assert_eq!(load.in_flight(), 0, "an extra finish saturates at zero");
    }

    #[test]
    fn new_seeds_the_default_rtt_at_creation_time() {
        let now = Instant::from_millis(42_000);
        let (us, stamp) = AddressLoad::new(now).ewma_raw();
        assert_eq!(stamp, now);
        assert_eq!(
            us,
            crate::balance::ewma::DEFAULT_RTT.as_micros() as f64,
            "a new address starts at the default RTT, not at zero"
        );
        let (us, _) = AddressLoad::default().ewma_raw();
        assert_eq!(us, 0.0, "Default keeps meaning 'no estimate'");
    }
}
