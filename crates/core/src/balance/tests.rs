//! Behaviour of `balance::pick` across algorithms: error kinds, retries that avoid tried
//! addresses (Kong/kong#5907), tier crossing, panic mode, the tier split, and properties
//! that must hold for every algorithm and every snapshot shape.

use std::sync::atomic::Ordering;

use proptest::prelude::*;

use super::testkit::{Shape, SnapshotBuilder};
use super::{NoPeer, PickContext, Picked, pick};
use crate::snapshot::{Mode, Unavailable, UpstreamSnapshot};
use crate::time::Instant;
use crate::topology::Algorithm;

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConnections,
    Algorithm::Latency,
    Algorithm::ConsistentHashing,
];

fn cx(entropy: u64, hash_key: Option<u64>, tried: &[u32]) -> PickContext<'_> {
    PickContext {
        now: Instant::from_millis(1_000),
        entropy,
        hash_key,
        tried,
    }
}

fn index(result: Result<Picked, NoPeer>) -> Option<u32> {
    result.ok().map(|p| p.index)
}

#[test]
fn error_kinds_follow_kong() {
    for algorithm in ALGORITHMS {
        let empty = SnapshotBuilder::new(algorithm).build();
        assert_eq!(pick(&empty, &cx(0, None, &[])), Err(NoPeer::NoAddresses));
        let all_zero = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(0))
            .build();
        assert_eq!(pick(&all_zero, &cx(0, None, &[])), Err(NoPeer::NoAddresses));

        let threshold_failed = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(10))
            .balancer_healthy(false)
            .build();
        assert_eq!(
            pick(&threshold_failed, &cx(0, None, &[])),
            Err(NoPeer::Unavailable)
        );
        let unavailable_mode = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(10))
            .mode(Mode::Unavailable)
            .build();
        assert_eq!(
            pick(&unavailable_mode, &cx(0, None, &[])),
            Err(NoPeer::Unavailable)
        );
        let all_down = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(10).unavailable(Unavailable::Unhealthy))
            .address(Shape::weight(10).unavailable(Unavailable::Ejected { until_ms: 9 }))
            .build();
        assert_eq!(
            pick(&all_down, &cx(0, Some(1), &[])),
            Err(NoPeer::Unavailable)
        );

        let two = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(10))
            .address(Shape::weight(10))
            .build();
        assert_eq!(
            pick(&two, &cx(0, Some(1), &[0, 1])),
            Err(NoPeer::AllTried),
            "{algorithm:?}"
        );
    }
}

/// Kong/kong#5907: with weights 1 and 1000, Kong's round-robin retry moves to the next
/// wheel slot, which is almost always the heavy target that just failed. Sluice's retry
/// must land on the light target whatever the cursor position.
#[test]
fn kong_5907_retry_after_heavy_target_failed_lands_on_the_light_one() {
    for algorithm in ALGORITHMS {
        let snapshot = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(1))
            .address(Shape::weight(1_000))
            .build();
        let pass = snapshot.tiers[0].rr_order.len() as u64;
        assert_eq!(pass, 1_001);
        for cursor in 0..pass {
            snapshot.tiers[0].rr_cursor.store(cursor, Ordering::Relaxed);
            let retry = pick(&snapshot, &cx(cursor, Some(cursor), &[1]));
            assert_eq!(
                retry,
                Ok(Picked {
                    index: 0,
                    tier: 0,
                    crossed_tier: false,
                    panic: false
                }),
                "{algorithm:?}, cursor {cursor}"
            );
        }
    }
}

#[test]
fn a_retry_crosses_to_the_secondary_tier_when_the_primary_is_fully_tried() {
    for algorithm in ALGORITHMS {
        let snapshot = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .address(Shape::weight(100).tier(1))
            .share(0, 1_000_000)
            .share(1, 0)
            .build();
        for entropy in 0..50 {
            let first = pick(&snapshot, &cx(entropy, Some(entropy), &[]));
            let first = first.unwrap_or_else(|e| panic!("{algorithm:?}: {e:?}"));
            assert_eq!((first.tier, first.crossed_tier), (0, false));
            let retry = pick(&snapshot, &cx(entropy, Some(entropy), &[0, 1]));
            assert_eq!(
                retry,
                Ok(Picked {
                    index: 2,
                    tier: 1,
                    crossed_tier: true,
                    panic: false
                }),
                "{algorithm:?}"
            );
        }
    }
}

#[test]
fn crossing_wraps_to_more_preferred_tiers() {
    // Failed over: all traffic to tier 1. Once tier 1 is tried, a retry wraps to tier 0.
    let snapshot = SnapshotBuilder::new(Algorithm::RoundRobin)
        .address(Shape::weight(100))
        .address(Shape::weight(100).tier(1))
        .share(0, 0)
        .share(1, 1_000_000)
        .mode(Mode::FailedOver)
        .build();
    assert_eq!(index(pick(&snapshot, &cx(0, None, &[]))), Some(1));
    let retry = pick(&snapshot, &cx(0, None, &[1]));
    assert_eq!(
        retry,
        Ok(Picked {
            index: 0,
            tier: 0,
            crossed_tier: true,
            panic: false
        })
    );
}

#[test]
fn panic_mode_uses_unhealthy_and_ejected_but_never_drained_addresses() {
    for algorithm in ALGORITHMS {
        let snapshot = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(100).unavailable(Unavailable::Unhealthy))
            .address(Shape::weight(100).unavailable(Unavailable::Drained))
            .address(Shape::weight(100).unavailable(Unavailable::Ejected { until_ms: 5 }))
            .address(Shape::weight(0))
            .mode(Mode::Panic)
            .build();
        let mut seen = [false; 4];
        for entropy in 0..200 {
            let picked = pick(
                &snapshot,
                &cx(entropy, Some(entropy.wrapping_mul(7919)), &[]),
            );
            let picked = picked.unwrap_or_else(|e| panic!("{algorithm:?}: {e:?}"));
            assert!(picked.panic);
            seen[picked.index as usize] = true;
        }
        assert_eq!(seen, [true, false, true, false], "{algorithm:?}");
    }
}

#[test]
fn round_robin_follows_the_weights_exactly_over_a_pass() {
    let snapshot = SnapshotBuilder::new(Algorithm::RoundRobin)
        .address(Shape::weight(50))
        .address(Shape::weight(20))
        .address(Shape::weight(30))
        .build();
    let mut counts = [0u32; 3];
    for entropy in 0..10 * 10 {
        if let Some(i) = index(pick(&snapshot, &cx(entropy, None, &[]))) {
            counts[i as usize] += 1;
        }
    }
    assert_eq!(counts, [50, 20, 30], "ten passes of 5:2:3");
}

#[test]
fn consistent_hashing_is_sticky_and_only_moves_the_keys_of_a_tried_address() {
    let snapshot = SnapshotBuilder::new(Algorithm::ConsistentHashing)
        .address(Shape::weight(100))
        .address(Shape::weight(100))
        .address(Shape::weight(100))
        .address(Shape::weight(100))
        .build();
    let keys: Vec<u64> = (0..2_000u64)
        .map(|k| super::hash::hash_key(&k.to_le_bytes()))
        .collect();
    let home: Vec<Option<u32>> = keys
        .iter()
        .map(|&k| index(pick(&snapshot, &cx(k, Some(k), &[]))))
        .collect();
    for (&k, &h) in keys.iter().zip(&home) {
        assert_eq!(
            index(pick(&snapshot, &cx(k ^ 0xFFFF, Some(k), &[]))),
            h,
            "entropy must not matter"
        );
    }
    let mut moved_to = [0u32; 4];
    for (&k, &h) in keys.iter().zip(&home) {
        let retry = index(pick(&snapshot, &cx(k, Some(k), &[2])));
        if h == Some(2) {
            let target = retry.unwrap_or(2);
            assert_ne!(target, 2);
            moved_to[target as usize] += 1;
        } else {
            assert_eq!(retry, h, "a key not on the tried address keeps its address");
        }
    }
    // The displaced keys spread over the others instead of piling onto one neighbour.
    assert!(
        moved_to
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 2)
            .all(|(_, &n)| n > 50),
        "{moved_to:?}"
    );
}

fn arbitrary_snapshot(
    algorithm: Algorithm,
    states: &[(u8, u8)],
    mode: Mode,
    shares: (u32, u32),
) -> UpstreamSnapshot {
    let mut builder = SnapshotBuilder::new(algorithm)
        .mode(mode)
        .share(0, shares.0)
        .share(1, shares.1);
    for &(state, tier) in states {
        let shape = Shape::weight(u32::from(state % 5) * 25).tier(tier % 2);
        builder = builder.address(match state / 5 {
            0 => shape.unavailable(Unavailable::Unhealthy),
            1 => shape.unavailable(Unavailable::Drained),
            2 => shape.unavailable(Unavailable::Ejected { until_ms: 1 }),
            _ => shape,
        });
    }
    builder.build()
}

fn algorithm_strategy() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(ALGORITHMS.to_vec())
}

proptest! {
    #[test]
    fn picks_never_return_a_tried_or_unusable_address(
        algorithm in algorithm_strategy(),
        states in prop::collection::vec((0u8..40, 0u8..2), 1..24),
        tried_mask in prop::collection::vec(any::<bool>(), 24),
        panic_mode in any::<bool>(),
        shares in (0u32..=1_000_000, 0u32..=1_000_000),
        entropy in any::<u64>(),
        hash_key in prop::option::of(any::<u64>()),
    ) {
        let mode = if panic_mode { Mode::Panic } else { Mode::Normal };
        let snapshot = arbitrary_snapshot(algorithm, &states, mode, shares);
        let tried: Vec<u32> = (0..states.len() as u32).filter(|&i| tried_mask[i as usize]).collect();
        let usable = |i: usize| {
            let a = &snapshot.addresses[i];
            if panic_mode {
                a.weight > 0 && a.unavailable != Some(Unavailable::Drained)
            } else {
                a.unavailable.is_none() && a.effective_weight > 0
            }
        };
        let any_weight = snapshot.addresses.iter().any(|a| a.weight > 0);
        let any_usable = (0..states.len()).any(usable);
        let any_untried = (0..states.len()).any(|i| usable(i) && !tried.contains(&(i as u32)));
        match pick(&snapshot, &cx(entropy, hash_key, &tried)) {
            Ok(picked) => {
                prop_assert!(!tried.contains(&picked.index));
                prop_assert!(usable(picked.index as usize));
                prop_assert_eq!(picked.panic, panic_mode);
                prop_assert_eq!(picked.tier, snapshot.addresses[picked.index as usize].tier);
            }
            Err(NoPeer::NoAddresses) => prop_assert!(!any_weight),
            Err(NoPeer::Unavailable) => prop_assert!(any_weight && !any_usable),
            Err(NoPeer::AllTried) => prop_assert!(any_usable && !any_untried),
        }
        // And conversely: when something usable is untried, a pick must find it.
        if any_untried {
            prop_assert!(pick(&snapshot, &cx(entropy, hash_key, &tried)).is_ok());
        }
    }

    #[test]
    fn the_tier_split_matches_share_ppm(
        algorithm in algorithm_strategy(),
        primary_ppm in 0u32..=1_000_000,
        seed in any::<u64>(),
    ) {
        let snapshot = SnapshotBuilder::new(algorithm)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .address(Shape::weight(100).tier(1))
            .address(Shape::weight(100).tier(1))
            .share(0, primary_ppm)
            .share(1, 1_000_000 - primary_ppm)
            .build();
        const PICKS: u64 = 4_000;
        let mut primary = 0u64;
        for i in 0..PICKS {
            let entropy = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let picked = pick(&snapshot, &cx(entropy, Some(entropy), &[]));
            prop_assert!(picked.is_ok());
            if let Ok(p) = picked {
                prop_assert!(!p.crossed_tier);
                if p.tier == 0 {
                    primary += 1;
                }
            }
        }
        let expected = f64::from(primary_ppm) / 1e6;
        let got = primary as f64 / PICKS as f64;
        // Binomial standard deviation at 4 000 picks is at most 0.8%; allow 5σ.
        prop_assert!((got - expected).abs() < 0.04, "primary share {} expected {}", got, expected);
    }
}

#[test]
fn balancing_uses_effective_weights_outside_panic_and_configured_ones_in_panic() {
    // Slow start has cut address 0 to a tenth of its configured weight.
    let build = |mode| {
        SnapshotBuilder::new(Algorithm::RoundRobin)
            .address(Shape::weight(100).effective(10))
            .address(Shape::weight(100).effective(90))
            .mode(mode)
            .build()
    };
    let share_of_first = |snapshot: &UpstreamSnapshot| {
        (0..1_000u64)
            .filter(|&e| index(pick(snapshot, &cx(e, None, &[]))) == Some(0))
            .count()
    };
    assert_eq!(share_of_first(&build(Mode::Normal)), 100);
    assert_eq!(share_of_first(&build(Mode::Panic)), 500);
}

#[test]
fn consistent_hashing_without_a_key_falls_back_to_round_robin() {
    let snapshot = SnapshotBuilder::new(Algorithm::ConsistentHashing)
        .address(Shape::weight(30))
        .address(Shape::weight(10))
        .build();
    let mut counts = [0u32; 2];
    for entropy in 0..40 {
        if let Some(i) = index(pick(&snapshot, &cx(entropy, None, &[]))) {
            counts[i as usize] += 1;
        }
    }
    // Kong hashes the empty string instead, sending every keyless request to one address.
    assert_eq!(counts, [30, 10], "ten exact 3:1 round-robin passes");
}
