//! Least-connections: the eligible member with the lowest `(in_flight + 1) / weight`.
//!
//! This is Kong's `least-connections` score (the `+1` makes the heaviest member win when
//! everything is idle), computed over live in-flight counts shared by every worker
//! thread of the proxy, not per worker as in Kong. Scores are compared by
//! cross-multiplication in integers, so equal ratios really tie; ties are broken by the
//! caller's entropy (reservoir sampling), so an idle tier is not always sent to the
//! first member.

use super::Eligibility;
use super::entropy::Draws;

/// The least-loaded eligible member of `members`, ties broken at random.
pub(super) fn pick(members: &[u32], eligible: &Eligibility<'_>, draws: &mut Draws) -> Option<u32> {
    // (index, in_flight + 1, weight) of the best so far, and how many members tie with it.
    let mut best: Option<(u32, u64, u64)> = None;
    let mut ties: u64 = 0;
    for &index in members {
        let Some((address, weight)) = eligible.candidate(index) else {
            continue;
        };
        let load = u64::from(address.load.in_flight()) + 1;
        let weight = u64::from(weight);
        match best {
            None => {
                best = Some((index, load, weight));
                ties = 1;
            }
            Some((_, best_load, best_weight)) => {
                // load / weight  vs  best_load / best_weight, without division.
                let lhs = u128::from(load) * u128::from(best_weight);
                let rhs = u128::from(best_load) * u128::from(weight);
                if lhs < rhs {
                    best = Some((index, load, weight));
                    ties = 1;
                } else if lhs == rhs {
                    // Reservoir sampling: the k-th tied member replaces the choice with
                    // probability 1/k, so every tied member ends up equally likely.
                    ties += 1;
                    if draws.below(ties) == 0 {
                        best = Some((index, load, weight));
                    }
                }
            }
        }
    }
    best.map(|(index, _, _)| index)
}

#[cfg(test)]
mod tests {
    use crate::balance::testkit::{Shape, SnapshotBuilder};
    use crate::balance::{PickContext, pick};
    use crate::time::Instant;
    use crate::topology::Algorithm;

    fn cx(entropy: u64, tried: &[u32]) -> PickContext<'_> {
        PickContext {
            now: Instant::ZERO,
            entropy,
            hash_key: None,
            tried,
        }
    }

    #[test]
    fn picks_the_lowest_load_per_weight() {
        let snapshot = SnapshotBuilder::new(Algorithm::LeastConnections)
            .address(Shape::weight(100))
            .address(Shape::weight(100))
            .address(Shape::weight(300))
            .build();
        let in_flight = |i: usize, n: u32| {
            for _ in 0..n {
                snapshot.addresses[i].load.start();
            }
        };
        // Scores: (4+1)/100 = 0.05, (1+1)/100 = 0.02, (8+1)/300 = 0.03.
        in_flight(0, 4);
        in_flight(1, 1);
        in_flight(2, 8);
        for entropy in 0..20 {
            assert_eq!(pick(&snapshot, &cx(entropy, &[])).map(|p| p.index), Ok(1));
        }
        // Without the best one, the heavy member's 0.03 beats 0.05.
        assert_eq!(pick(&snapshot, &cx(0, &[1])).map(|p| p.index), Ok(2));
    }

    #[test]
    fn ties_are_broken_by_entropy_not_by_position() {
        let snapshot = SnapshotBuilder::new(Algorithm::LeastConnections)
            .address(Shape::weight(10))
            .address(Shape::weight(10))
            .address(Shape::weight(10))
            .build();
        let mut seen = [0u32; 3];
        for entropy in 0..3_000 {
            let picked = pick(&snapshot, &cx(entropy, &[])).map(|p| p.index as usize);
            if let Ok(i) = picked {
                seen[i] += 1;
            }
        }
        for count in seen {
            assert!(
                (800..1_200).contains(&count),
                "tie-break is skewed: {seen:?}"
            );
        }
    }
}
