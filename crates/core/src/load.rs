//! Live load figures per address, shared between the data plane (which writes them on
//! every request) and the balancers (which read them).
//!
//! This is the one place where the core holds shared mutable state: lock-free atomics,
//! written by the proxy with a caller-supplied `now`. They survive snapshot rebuilds and
//! config reloads because the controller keeps one `Arc<AddressLoad>` per address key.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::time::Instant;

/// In-flight requests and a peak-EWMA of response latency for one address.
#[derive(Debug, Default)]
pub struct AddressLoad {
    in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds, stored as f64 bits.
    ewma_us_bits: AtomicU64,
    /// When the EWMA was last updated (virtual ms).
    ewma_stamp_ms: AtomicU64,
}

impl AddressLoad {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request to this address started.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
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
    pub fn ewma_raw(&self) -> (f64, Instant) {
        (
            f64::from_bits(self.ewma_us_bits.load(Ordering::Relaxed)),
            Instant::from_millis(self.ewma_stamp_ms.load(Ordering::Relaxed)),
        )
    }

    /// Store a new EWMA value computed by `balance::ewma`.
    pub fn store_ewma(&self, us: f64, now: Instant) {
        self.ewma_us_bits.store(us.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ms.store(now.as_millis(), Ordering::Relaxed);
    }
}
