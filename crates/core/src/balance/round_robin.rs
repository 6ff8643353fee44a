//! Smooth weighted round-robin (nginx's SWRR), precomputed once per snapshot.
//!
//! nginx's algorithm: every step each member adds its weight to a running `current`, the
//! member with the largest `current` is chosen and loses the total weight. Over one pass
//! of `total` steps every member is chosen exactly `weight` times, and heavy members are
//! interleaved with light ones instead of bunched (weights 5,1,1 give `a a b a c a a`,
//! not `a a a a a b c`). The controller runs the algorithm once when it rebuilds a
//! snapshot ([`smooth_order`]); a pick is then an atomic `fetch_add` on the tier's shared
//! cursor plus an array read, with no lock and no per-request arithmetic over members.
//!
//! Unlike Kong's wheel (which moves on to the next slot even when that slot's address
//! just failed this request, Kong/kong#5907), a pick skips addresses the request already
//! tried, and if a short scan finds nothing it chooses among the untried members by weight.

use std::sync::atomic::Ordering;

use super::entropy::Draws;
use super::{Eligibility, weighted_random};
use crate::snapshot::TierView;

/// Longest pass [`smooth_order`] produces (before the `+ members` of the minimum-one
/// rounding). 65 536 is Kong's largest `slots` value and one more than its largest weight,
/// so a pass is never longer than Kong's biggest balancer table, costs at most 256 KiB per
/// tier, and the scaling error of any member is under one part in 65 536 of the pass.
pub const MAX_PASS: u64 = 65_536;

/// How many entries of the order a pick inspects before it falls back to a weighted
/// random choice among the eligible members. A scan only runs long when most of the pass
/// belongs to addresses this request already tried (weights 1 vs 1000 with the heavy one
/// tried) or that are unusable in panic mode; 64 array reads cost well under a
/// microsecond, and past that the member-wise fallback is cheaper than scanning on.
pub const RR_SCAN_LIMIT: u64 = 64;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The SWRR order of one tier: `members` are `(address index, effective weight)`; the
/// result lists address indices, each exactly `weight / gcd` times per pass.
///
/// Members with weight 0 are left out. When the reduced weights sum to more than
/// [`MAX_PASS`], every weight is scaled by `MAX_PASS / total` and rounded down, with a
/// minimum of 1 so no member disappears: shares are then exact to within one entry of
/// the pass per member (relative error below `1 / (share × 65 536)`).
pub fn smooth_order(members: &[(u32, u32)]) -> Vec<u32> {
    let mut live: Vec<(u32, u64)> = members
        .iter()
        .filter(|&&(_, weight)| weight > 0)
        .map(|&(index, weight)| (index, u64::from(weight)))
        .collect();
    reduce(&mut live);
    let total: u64 = live.iter().map(|&(_, w)| w).sum();
    if total > MAX_PASS {
        for (_, weight) in &mut live {
            *weight = (*weight * MAX_PASS / total).max(1);
        }
        reduce(&mut live);
    }
    let total: u64 = live.iter().map(|&(_, w)| w).sum();
    swrr_by_weight_class(&live, total)
}

/// Members sharing one weight. nginx's SWRR treats them symmetrically: their `current`
/// values differ only by `total × (difference in picks)`, so they are picked in turn, in
/// member order, and the class's best candidate is always `members[picks % len]` with
/// `current = step × weight − total × (picks / len)`.
struct WeightClass {
    weight: i64,
    /// Address indices in member order.
    members: Vec<u32>,
    /// Position (in the input) of each member, for nginx's earliest-member tie-break.
    positions: Vec<usize>,
    picks: i64,
}

/// nginx's SWRR over one pass, evaluated per weight class instead of per member: the
/// output is identical to the member-by-member loop (a test checks it against one), but
/// a step costs O(distinct weights) instead of O(members). Real tiers have a handful of
/// distinct weights, so a 1000-address tier builds in about the time of a 10-address one.
fn swrr_by_weight_class(live: &[(u32, u64)], total: u64) -> Vec<u32> {
    let mut classes: Vec<WeightClass> = Vec::new();
    for (position, &(index, weight)) in live.iter().enumerate() {
        // i64 is ample: weights ≤ 65 535 and steps ≤ MAX_PASS + members keep
        // `step × weight` below 2^33.
        let weight = weight as i64;
        match classes.iter_mut().find(|class| class.weight == weight) {
            Some(class) => {
                class.members.push(index);
                class.positions.push(position);
            }
            None => classes.push(WeightClass {
                weight,
                members: vec![index],
                positions: vec![position],
                picks: 0,
            }),
        }
    }
    let total_signed = total as i64;
    let mut order = Vec::with_capacity(total as usize);
    for step in 1..=total_signed {
        // (current, position of the candidate, class) of the best class so far.
        let mut best: Option<(i64, usize, usize)> = None;
        for (class_slot, class) in classes.iter().enumerate() {
            let len = class.members.len() as i64;
            let current = step * class.weight - total_signed * (class.picks / len);
            let turn = (class.picks % len) as usize;
            let position = class.positions.get(turn).copied().unwrap_or(usize::MAX);
            let better = match best {
                None => true,
                Some((best_current, best_position, _)) => {
                    current > best_current || (current == best_current && position < best_position)
                }
            };
            if better {
                best = Some((current, position, class_slot));
            }
        }
        if let Some((_, _, class_slot)) = best
            && let Some(class) = classes.get_mut(class_slot)
        {
            let turn = (class.picks % class.members.len() as i64) as usize;
            if let Some(&index) = class.members.get(turn) {
                order.push(index);
            }
            class.picks += 1;
        }
    }
    order
}

/// Divide every weight by the weights' greatest common divisor.
fn reduce(live: &mut [(u32, u64)]) {
    let divisor = live.iter().fold(0, |g, &(_, w)| gcd(g, w));
    if divisor > 1 {
        for (_, weight) in live.iter_mut() {
            *weight /= divisor;
        }
    }
}

/// One round-robin pick inside a tier: the next eligible entry of the precomputed order
/// from the shared cursor, or a weighted random eligible member when a short scan finds
/// none (or the tier has no order).
pub(super) fn pick(tier: &TierView, eligible: &Eligibility<'_>, draws: &mut Draws) -> Option<u32> {
    let order = &tier.rr_order;
    let len = order.len() as u64;
    if len > 0 {
        let start = tier.rr_cursor.fetch_add(1, Ordering::Relaxed) % len;
        for step in 0..len.min(RR_SCAN_LIMIT) {
            let position = (start + step) % len;
            if let Some(&index) = order.get(position as usize)
                && eligible.weight_of(index).is_some()
            {
                return Some(index);
            }
        }
    }
    weighted_random(&tier.members, eligible, draws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(order: &[u32], index: u32) -> u64 {
        order.iter().filter(|&&i| i == index).count() as u64
    }

    #[test]
    fn interleaves_like_nginx() {
        // nginx's documented example: weights a=5, b=1, c=1.
        assert_eq!(
            smooth_order(&[(0, 5), (1, 1), (2, 1)]),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn divides_by_the_gcd_and_drops_zero_weights() {
        let order = smooth_order(&[(3, 100), (4, 0), (5, 300)]);
        assert_eq!(order.len(), 4);
        assert_eq!(counts(&order, 3), 1);
        assert_eq!(counts(&order, 5), 3);
        assert_eq!(counts(&order, 4), 0);
        assert!(smooth_order(&[]).is_empty());
        assert!(smooth_order(&[(1, 0)]).is_empty());
    }

    #[test]
    fn caps_long_passes_and_keeps_every_member() {
        // Coprime large weights would need a pass of 65_535 + 65_521 + 1 entries.
        let order = smooth_order(&[(0, 65_535), (1, 65_521), (2, 1)]);
        assert!(
            order.len() as u64 <= MAX_PASS + 3,
            "pass of {}",
            order.len()
        );
        assert!(
            counts(&order, 2) >= 1,
            "a tiny member keeps at least one entry"
        );
        let heavy = counts(&order, 0) as f64 / order.len() as f64;
        assert!((heavy - 65_535.0 / 131_057.0).abs() < 1e-3, "share {heavy}");
    }

    /// nginx's loop, member by member, as the reference for the weight-class version.
    fn reference_swrr(members: &[(u32, u32)]) -> Vec<u32> {
        let live: Vec<(u32, i64)> = members
            .iter()
            .filter(|m| m.1 > 0)
            .map(|&(i, w)| (i, i64::from(w)))
            .collect();
        let total: i64 = live.iter().map(|m| m.1).sum();
        let mut current = vec![0i64; live.len()];
        let mut order = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            for (slot, &(_, weight)) in live.iter().enumerate() {
                current[slot] += weight;
                if current[slot] > current[best] {
                    best = slot;
                }
            }
            current[best] -= total;
            order.push(live[best].0);
        }
        order
    }

    proptest! {
        #[test]
        fn matches_nginx_member_by_member(
            weights in proptest::collection::vec(0u32..12, 1..16),
        ) {
            // Small weights repeat a lot, which exercises the weight classes; the
            // reference runs on the gcd-reduced weights, as `smooth_order` does.
            let divisor = weights.iter().fold(0u32, |g, &w| gcd(u64::from(g), u64::from(w)) as u32).max(1);
            let members: Vec<(u32, u32)> = weights.iter().enumerate().map(|(i, &w)| (i as u32 * 3, w)).collect();
            let reduced: Vec<(u32, u32)> = members.iter().map(|&(i, w)| (i, w / divisor)).collect();
            prop_assert_eq!(smooth_order(&members), reference_swrr(&reduced));
        }

        #[test]
        fn shares_are_exact_over_one_pass(weights in proptest::collection::vec(0u32..200, 1..12)) {
            let members: Vec<(u32, u32)> = weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
            let order = smooth_order(&members);
            let divisor = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w))).max(1);
            prop_assert_eq!(order.len() as u64, weights.iter().map(|&w| u64::from(w)).sum::<u64>() / divisor);
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(counts(&order, i as u32), u64::from(w) / divisor);
            }
        }

        #[test]
        fn capped_shares_stay_within_one_entry(weights in proptest::collection::vec(1u32..=65_535, 2..8)) {
            let members: Vec<(u32, u32)> = weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
            let order = smooth_order(&members);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let len = order.len() as f64;
            prop_assert!(order.len() as u64 <= MAX_PASS + weights.len() as u64);
            for (i, &w) in weights.iter().enumerate() {
                let expected = f64::from(w) / total * len;
                let got = counts(&order, i as u32) as f64;
                // Rounding down by the scale loses < 1 entry per member; the min-1 rule
                // and renormalising over the shorter pass move each share by < n entries.
                prop_assert!((got - expected).abs() <= weights.len() as f64 + 1.0, "member {} got {} expected {}", i, got, expected);
            }
        }
    }
}
