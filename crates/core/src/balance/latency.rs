//! The `latency` balancer: power of two choices over peak-EWMA cost.
//!
//! Two distinct eligible members are drawn at random and the one with the lower
//! `ewma × (in_flight + 1) / weight` wins (Mitzenmacher's P2C, as in Finagle and
//! Linkerd). Two random candidates instead of a full scan keep a pick O(1) and, more
//! importantly, stop every proxy thread from stampeding to the single cheapest address
//! between two EWMA updates, which a deterministic "lowest score wins" scan does
//! (Kong's `latency` balancer degenerates to that scan, Kong/kong#14961).

use super::entropy::Draws;
use super::{Eligibility, ewma};
use crate::snapshot::AddressView;
use crate::time::Instant;

/// Random draws of a member tried before falling back to counting the eligible members.
/// Rejection sampling stays uniform; 8 draws succeed with probability > 99.6% whenever
/// at least half of the members are eligible, and the exact fallback covers the rest.
const SAMPLE_ATTEMPTS: u32 = 8;

/// A member drawn for a comparison: its index, its view and its balancing weight, so
/// the comparison does not look the address up again (that second lookup was a fifth of
/// a pick).
type Drawn<'a> = (u32, &'a AddressView, u32);

/// A uniformly random eligible member other than `exclude`, if any.
fn draw_member<'a>(
    members: &[u32],
    eligible: &Eligibility<'a>,
    exclude: Option<u32>,
    draws: &mut Draws,
) -> Option<Drawn<'a>> {
    let len = members.len() as u64;
    if len == 0 {
        return None;
    }
    let acceptable = |index: u32| -> Option<Drawn<'a>> {
        if Some(index) == exclude {
            return None;
        }
        eligible
            .candidate(index)
            .map(|(address, weight)| (index, address, weight))
    };
    for _ in 0..SAMPLE_ATTEMPTS {
        if let Some(&index) = members.get(draws.below(len) as usize)
            && let Some(drawn) = acceptable(index)
        {
            return Some(drawn);
        }
    }
    // Exact fallback: count the acceptable members, then take a random one of them.
    // Duplicated member entries count twice in both paths, so they stay consistent.
    let count = members
        .iter()
        .filter(|&&index| acceptable(index).is_some())
        .count() as u64;
    if count == 0 {
        return None;
    }
    let nth = draws.below(count) as usize;
    members
        .iter()
        .filter_map(|&index| acceptable(index))
        .nth(nth)
}

/// The P2C draws: a first eligible member and, when another exists, a second one with a
/// different address index. `None` when no member is eligible.
fn draw_pair<'a>(
    members: &[u32],
    eligible: &Eligibility<'a>,
    draws: &mut Draws,
) -> Option<(Drawn<'a>, Option<Drawn<'a>>)> {
    let first = draw_member(members, eligible, None, draws)?;
    let second = draw_member(members, eligible, Some(first.0), draws);
    Some((first, second))
}

/// The P2C candidates' indexes (see [`draw_pair`]).
#[cfg(test)]
pub(crate) fn candidates(
    members: &[u32],
    eligible: &Eligibility<'_>,
    draws: &mut Draws,
) -> Option<(u32, Option<u32>)> {
    draw_pair(members, eligible, draws).map(|(first, second)| (first.0, second.map(|s| s.0)))
}

/// Cost of one more request on a drawn member, per unit of weight.
fn weighted_cost(drawn: &Drawn<'_>, now: Instant) -> f64 {
    let (_, address, weight) = drawn;
    ewma::cost(&address.load, now) / f64::from(*weight)
}

/// The cheaper of two random eligible members.
pub(super) fn pick(
    members: &[u32],
    eligible: &Eligibility<'_>,
    now: Instant,
    draws: &mut Draws,
) -> Option<u32> {
    let (first, second) = draw_pair(members, eligible, draws)?;
    let Some(second) = second else {
        return Some(first.0);
    };
    // Ties keep the first candidate, which is itself random.
    if weighted_cost(&second, now) < weighted_cost(&first, now) {
        Some(second.0)
    } else {
        Some(first.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testkit::{Shape, SnapshotBuilder};
    use crate::balance::{PickContext, pick as pick_address};
    use crate::snapshot::Unavailable;
    use crate::time::Duration;
    use crate::topology::Algorithm;
    use proptest::prelude::*;

    fn cx(entropy: u64, tried: &[u32]) -> PickContext<'_> {
        PickContext {
            now: Instant::from_millis(1_000),
            entropy,
            hash_key: None,
            tried,
        }
    }

    #[test]
    fn the_faster_address_wins_every_comparison_it_is_in() {
        let snapshot = SnapshotBuilder::new(Algorithm::Latency)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .build();
        let now = Instant::from_millis(1_000);
        ewma::observe(&snapshot.addresses[0].load, Duration::from_millis(200), now);
        ewma::observe(&snapshot.addresses[1].load, Duration::from_millis(5), now);
        for entropy in 0..50 {
            assert_eq!(
                pick_address(&snapshot, &cx(entropy, &[])).map(|p| p.index),
                Ok(1)
            );
        }
    }

    #[test]
    fn in_flight_requests_raise_the_cost() {
        let snapshot = SnapshotBuilder::new(Algorithm::Latency)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .build();
        let now = Instant::from_millis(1_000);
        ewma::observe(&snapshot.addresses[0].load, Duration::from_millis(10), now);
        ewma::observe(&snapshot.addresses[1].load, Duration::from_millis(5), now);
        // The faster address with 2 in flight costs 5 ms × 3 = 15 ms; the idle slower
        // one costs 10 ms × 1 = 10 ms and wins.
        for _ in 0..2 {
            snapshot.addresses[1].load.start();
        }
        assert_eq!(pick_address(&snapshot, &cx(3, &[])).map(|p| p.index), Ok(0));
    }

    #[test]
    fn a_single_eligible_member_is_returned_without_a_second_candidate() {
        let snapshot = SnapshotBuilder::new(Algorithm::Latency)
            .address(Shape::weight(100))
            .address(Shape::weight(100).unavailable(Unavailable::Unhealthy))
            .build();
        let eligible = Eligibility::new(&snapshot, &[], false);
        let members = &snapshot.tiers[0].members;
        for entropy in 0..20 {
            let got = candidates(members, &eligible, &mut Draws::new(entropy));
            assert_eq!(got, Some((0, None)));
        }
    }

    /// A virtual-time run: one request per millisecond, each answered at once with its
    /// address's current latency. Address 2 is slow for the first 5 s, then as fast as the
    /// others. Returns, per 1-second bucket, how many requests address 2 received.
    fn run_with_a_slow_phase(seconds: u64) -> Vec<u32> {
        let snapshot = SnapshotBuilder::new(Algorithm::Latency)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .build();
        let mut per_second = vec![0u32; seconds as usize];
        for ms in 0..seconds * 1_000 {
            let now = Instant::from_millis(ms);
            let cx = PickContext {
                now,
                entropy: ms,
                hash_key: None,
                tried: &[],
            };
            let Ok(picked) = pick_address(&snapshot, &cx) else {
                continue;
            };
            let slow = picked.index == 2 && ms < 5_000;
            let rtt = Duration::from_millis(if slow { 50 } else { 5 });
            ewma::observe(&snapshot.addresses[picked.index as usize].load, rtt, now);
            if picked.index == 2 {
                per_second[(ms / 1_000) as usize] += 1;
            }
        }
        per_second
    }

    #[test]
    fn traffic_leaves_a_slow_address_and_returns_after_it_recovers() {
        let slow_counts = run_with_a_slow_phase(60);
        let slow_phase: u32 = slow_counts[..5].iter().sum();
        assert!(
            slow_phase < 100,
            "slow address got {slow_phase} of 5000 requests"
        );
        // Unpicked, its estimate decays toward the others' 5 ms (τ = 10 s: 50 ms → 5 ms
        // takes ~23 s), then real traffic probes it, finds it fast, and it is back.
        let last_ten: u32 = slow_counts[50..].iter().sum();
        assert!(
            last_ten > 2_500,
            "recovered address got {last_ten} of 10000 (fair: 3333)"
        );
    }

    proptest! {
        #[test]
        fn candidates_are_distinct_eligible_and_untried(
            states in proptest::collection::vec(0u8..4, 1..40),
            tried_mask in proptest::collection::vec(any::<bool>(), 40),
            entropy in any::<u64>(),
        ) {
            let mut builder = SnapshotBuilder::new(Algorithm::Latency);
            for &state in &states {
                builder = builder.address(match state {
                    0 => Shape::weight(100).unavailable(Unavailable::Unhealthy),
                    1 => Shape::weight(0),
                    _ => Shape::weight(u32::from(state) * 10),
                });
            }
            let snapshot = builder.build();
            let tried: Vec<u32> = (0..states.len() as u32).filter(|&i| tried_mask[i as usize]).collect();
            let eligible = Eligibility::new(&snapshot, &tried, false);
            let members = &snapshot.tiers[0].members;
            let eligible_count = members.iter().filter(|&&i| eligible.weight_of(i).is_some()).count();
            match candidates(members, &eligible, &mut Draws::new(entropy)) {
                None => prop_assert_eq!(eligible_count, 0),
                Some((first, second)) => {
                    prop_assert!(eligible.weight_of(first).is_some());
                    match second {
                        Some(second) => {
                            prop_assert_ne!(first, second);
                            prop_assert!(eligible.weight_of(second).is_some());
                        }
                        None => prop_assert_eq!(eligible_count, 1),
                    }
                }
            }
        }
    }
}
