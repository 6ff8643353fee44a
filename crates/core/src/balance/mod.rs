//! Address selection: pure functions over an [`UpstreamSnapshot`].
//!
//! `pick` first chooses a tier by the snapshot's tier shares (failover / spill), then an
//! address inside it by the upstream's algorithm, skipping every address this request
//! already tried. When the chosen tier has nothing untried left it moves on to the next
//! tier, so a retry crosses into the secondary region at once, before health checks
//! have even flipped.
//!
//! Submodules: [`round_robin`] (SWRR order builder), [`least_conn`], [`latency`] (P2C over
//! [`ewma`]), [`hash`] (Maglev tables and the key hash), [`adaptive`] (slow start and
//! latency/error-aware effective weights the controller computes), [`entropy`] (turning
//! the caller's `u64` into draws).

pub mod adaptive;
pub mod entropy;
pub mod ewma;
pub mod hash;
pub mod latency;
pub mod least_conn;
pub mod round_robin;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use crate::snapshot::{AddressView, Mode, TierView, Unavailable, UpstreamSnapshot};
use crate::time::Instant;
use crate::topology::Algorithm;
use entropy::Draws;

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

/// Which addresses one pick may return, and with what weight.
///
/// Outside panic an address is usable when it is available and its effective weight is
/// above zero; balancing uses the effective weight. In panic every address with a
/// configured weight above zero that an operator did not drain is usable (health and
/// ejection are ignored, as Envoy's panic mode does) and balancing uses the configured
/// weight, because the effective weight of an unhealthy address is 0.
pub(crate) struct Eligibility<'a> {
    addresses: &'a [AddressView],
    tried: &'a [u32],
    panic: bool,
}

impl<'a> Eligibility<'a> {
    fn new(snapshot: &'a UpstreamSnapshot, tried: &'a [u32], panic: bool) -> Self {
        Eligibility {
            addresses: &snapshot.addresses,
            tried,
            panic,
        }
    }

    /// The balancing weight of a usable address regardless of `tried`, `None` when unusable.
    fn usable_weight(&self, address: &AddressView) -> Option<u32> {
        let weight = if self.panic {
            (address.unavailable != Some(Unavailable::Drained)).then_some(address.weight)
        } else {
            address
                .unavailable
                .is_none()
                .then_some(address.effective_weight)
        };
        weight.filter(|&w| w > 0)
    }

    /// The address at `index` with its balancing weight, when this pick may return it:
    /// it exists, is usable, and was not tried by this request.
    pub(crate) fn candidate(&self, index: u32) -> Option<(&'a AddressView, u32)> {
        if self.tried.contains(&index) {
            return None;
        }
        let address = self.addresses.get(index as usize)?;
        self.usable_weight(address).map(|weight| (address, weight))
    }

    /// The balancing weight of the address at `index` when this pick may return it.
    pub(crate) fn weight_of(&self, index: u32) -> Option<u32> {
        self.candidate(index).map(|(_, weight)| weight)
    }

    /// Whether any member is usable at all, tried or not (tells `AllTried` from "empty").
    fn any_usable(&self, members: &[u32]) -> bool {
        members.iter().any(|&index| {
            self.addresses
                .get(index as usize)
                .and_then(|address| self.usable_weight(address))
                .is_some()
        })
    }
}

/// A random eligible member, chosen with probability proportional to its balancing
/// weight. Two passes over `members`, no allocation. Used as the fallback of the
/// round-robin and hash pickers.
pub(crate) fn weighted_random(
    members: &[u32],
    eligible: &Eligibility<'_>,
    draws: &mut Draws,
) -> Option<u32> {
    let total: u64 = members
        .iter()
        .filter_map(|&index| eligible.weight_of(index))
        .map(u64::from)
        .sum();
    if total == 0 {
        return None;
    }
    let mut target = draws.below(total);
    for &index in members {
        if let Some(weight) = eligible.weight_of(index) {
            let weight = u64::from(weight);
            if target < weight {
                return Some(index);
            }
            target -= weight;
        }
    }
    None
}

/// The tier the tier split sends this request to: a draw in `0..Σ share_ppm` walked over
/// the cumulative shares. With no share anywhere (nothing available, or a snapshot in
/// panic whose split is empty) the most preferred tier is first.
fn choose_tier(tiers: &[TierView], draws: &mut Draws) -> usize {
    let total: u64 = tiers.iter().map(|t| u64::from(t.share_ppm)).sum();
    if total == 0 {
        return 0;
    }
    let mut target = draws.below(total);
    for (position, tier) in tiers.iter().enumerate() {
        let share = u64::from(tier.share_ppm);
        if target < share {
            return position;
        }
        target -= share;
    }
    0
}

/// One pick inside one tier with the upstream's algorithm.
fn pick_in_tier(
    snapshot: &UpstreamSnapshot,
    position: usize,
    tier: &TierView,
    cx: &PickContext<'_>,
    eligible: &Eligibility<'_>,
    draws: &mut Draws,
) -> Option<u32> {
    match snapshot.algorithm {
        Algorithm::RoundRobin => round_robin::pick(tier, eligible, draws),
        Algorithm::LeastConnections => least_conn::pick(&tier.members, eligible, draws),
        Algorithm::Latency => latency::pick(&tier.members, eligible, cx.now, draws),
        Algorithm::ConsistentHashing => match (cx.hash_key, snapshot.hash_tables.get(position)) {
            (Some(key), Some(table)) if !table.is_empty() => {
                hash::pick(table, key, &tier.members, eligible, draws)
            }
            // No key (Kong's `hash_on: none` path, or the key's source was absent) or no
            // table for this tier: round-robin, as Kong does for an empty hash input.
            _ => round_robin::pick(tier, eligible, draws),
        },
    }
}

/// Choose the address for one attempt of one request.
///
/// Errors, in the order they are checked: [`NoPeer::NoAddresses`] when no address has a
/// configured weight above 0; [`NoPeer::Unavailable`] when the upstream is in
/// `Mode::Unavailable`, Kong's balancer threshold fails (`!balancer_healthy`), or no tier
/// has a usable address; [`NoPeer::AllTried`] when every usable address was tried.
pub fn pick(snapshot: &UpstreamSnapshot, cx: &PickContext<'_>) -> Result<Picked, NoPeer> {
    if !snapshot.addresses.iter().any(|a| a.weight > 0) {
        return Err(NoPeer::NoAddresses);
    }
    if snapshot.mode == Mode::Unavailable || !snapshot.balancer_healthy {
        return Err(NoPeer::Unavailable);
    }
    let panic = snapshot.mode == Mode::Panic;
    let eligible = Eligibility::new(snapshot, cx.tried, panic);
    let mut draws = Draws::new(cx.entropy);
    let tier_count = snapshot.tiers.len();
    let first = choose_tier(&snapshot.tiers, &mut draws);
    let mut saw_usable = false;
    // Chosen tier, then the less preferred ones, then wrap to the more preferred ones.
    for step in 0..tier_count {
        let position = (first + step) % tier_count;
        let Some(tier) = snapshot.tiers.get(position) else {
            continue;
        };
        if let Some(index) = pick_in_tier(snapshot, position, tier, cx, &eligible, &mut draws) {
            return Ok(Picked {
                index,
                tier: tier.tier,
                crossed_tier: step > 0,
                panic,
            });
        }
        saw_usable = saw_usable || eligible.any_usable(&tier.members);
    }
    Err(if saw_usable {
        NoPeer::AllTried
    } else {
        NoPeer::Unavailable
    })
}
