//! Address selection: pure functions over an [`UpstreamSnapshot`].
//!
//! `pick` first chooses a tier by the snapshot's tier shares (failover / spill), then an
//! address inside it by the upstream's algorithm, skipping every address this request
//! already tried. When the chosen tier has nothing untried left it moves on to the next
//! tier, so a retry crosses into the secondary region at once, before health checks
//! have even flipped.

use crate::snapshot::UpstreamSnapshot;
use crate::time::Instant;

/// Per-pick inputs supplied by the caller (the core draws no randomness of its own).
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    pub now: Instant,
    /// Fresh random bits for this pick (tier choice, P2C candidates).
    pub entropy: u64,
    /// Hash of the request's consistent-hashing key, when the algorithm uses one.
    pub hash_key: Option<u64>,
    /// Address indices (into `snapshot.addresses`) this request already tried.
    pub tried: &'a [u32],
}

/// The chosen address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Picked {
    /// Index into `snapshot.addresses`.
    pub index: u32,
    pub tier: u8,
    /// True when the address is not in the tier the tier split chose first.
    pub crossed_tier: bool,
    /// True when the pick ignored health because the upstream is in panic mode.
    pub panic: bool,
}

/// Why no address could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPeer {
    /// The upstream has no address with weight > 0 (or no targets at all).
    NoAddresses,
    /// Kong's balancer threshold says the upstream is unhealthy, or nothing is available.
    Unavailable,
    /// Every usable address was already tried by this request.
    AllTried,
}
