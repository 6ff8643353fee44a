//! Consistent hashing: Maglev lookup tables (Eisenbud et al., NSDI 2016) and the stable
//! key hash the data plane uses for `hash_on` values.
//!
//! Why Maglev rather than Kong's ketama-like ring: a lookup is one array index instead
//! of a binary search, every member's share of the table is within a few percent of its
//! weight, and adding or removing one of `n` members moves about `1/n` of the keys.
//! Kong's ring walks to the next *available* point on lookup; we do the same on the
//! table (walk forward to the next usable, untried entry), so when an address is
//! ejected or tried only the keys it owned move, and they spread over the others in
//! proportion to their table shares.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::entropy::{Draws, mix64};
use super::{Eligibility, weighted_random};

/// Smallest table: Kong treats any `slots` below 1000 as 1000 for its continuum, and a
/// Maglev table much smaller than ~100 entries per member is visibly unbalanced.
pub const MIN_TABLE_SIZE: u32 = 1_000;

/// Largest `slots` value Kong accepts; the table is the smallest prime at or above it
/// (65 537), 256 KiB per tier. Members keep their share within about 1% up to ~650
/// members at that size.
pub const MAX_TABLE_SIZE: u32 = 65_536;

/// `table_size(MAX_TABLE_SIZE)`: the smallest prime ≥ 65 536, and the cap of any table.
const LARGEST_TABLE: u32 = 65_537;

/// How many table entries a lookup walks before checking whether any member is eligible
/// at all (so a retry with everything tried does not scan 65 537 entries for nothing).
const WALK_BEFORE_CHECK: usize = 256;

/// Marks an unfilled entry while the table is built.
const EMPTY: u32 = u32::MAX;

/// Salt that makes a member's skip independent of its offset (both come from one key hash).
const SKIP_SALT: u64 = 0xA076_1D64_78BD_642F;

const FNV_OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// Stable 64-bit hash of a consistent-hashing key (header value, cookie, client IP...).
///
/// FNV-1a 64 over the bytes, finished with the SplitMix64 mixer: FNV alone leaves short,
/// similar keys (`"user-1"`, `"user-2"`) close together in the low bits that a modulo
/// uses; the mixer spreads them. It is stable across processes, versions and platforms
/// (no per-process seed), which consistent hashing needs: every Sluice node must map a
/// key to the same address. It is not collision-resistant against a chosen-key attacker,
/// who gains nothing from that anyway: a client can already pin its own key.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix64(hash)
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut divisor = 2u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 1;
    }
    true
}

/// Table size for Kong's `slots`: the smallest prime at or above `slots` clamped to
/// [`MIN_TABLE_SIZE`]..=[`MAX_TABLE_SIZE`] (so 1009..=65 537). Maglev needs a prime
/// size so that every member's permutation visits every entry.
///
/// Bigger tables move fewer keys when membership changes. Measured here (equal weights,
/// adding one member to `n` ≤ 60): at most 1.26/n of the keys move with 65 537 entries
/// and 1.86/n with Kong's default 10 007 (the ideal is 1/(n+1)). Operators who care
/// about stickiness should set `slots: 65536`; it costs 256 KiB per tier.
pub fn table_size(slots: u32) -> u32 {
    let mut candidate = slots.clamp(MIN_TABLE_SIZE, MAX_TABLE_SIZE);
    while !is_prime(candidate) {
        candidate += 1;
    }
    candidate
}

/// One member while the table is built.
struct Builder {
    index: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    /// Position in this member's permutation.
    next: u64,
    /// Fill credit (Envoy's weighted-Maglev scheme): the member fills an entry in
    /// round `r` when `r × weight ≥ target`, then `target` grows by the largest weight.
    target: u64,
}

/// Build the Maglev table of one tier. `members` are `(address index, weight, stable
/// key)`, the key being something that identifies the address across config reloads and
/// process restarts, e.g. `"10.0.0.1:8080"`; `size` should be [`table_size`] (prime).
///
/// Weights are respected: in round `r` a member fills one entry when
/// `r × weight ≥ its target`, so per round the heaviest member fills one entry and a
/// member of half its weight one every second round; every member with weight > 0 fills
/// at least one entry if the table has room. Members with weight 0 are left out. The
/// result is independent of the order of `members` (they are sorted by key first).
/// `size` is capped at 65 537. A non-prime `size` still terminates (a member whose permutation cycles over full
/// entries probes linearly), but balances worse.
///
/// Which weights to pass: every change of a member's weight rebuilds the table and remaps
/// the keys whose entries changed hands, so weights that move on every refresh (slow
/// start, adaptive weights) make keys wander during the ramp. Passing the configured
/// weight of every usable member (0 for unusable ones) keeps keys where they are until
/// membership changes; passing effective weights instead gives hashing a gradual slow
/// start at the price of that churn. Envoy makes the first choice (no slow start for
/// Maglev or ring hash).
pub fn maglev_table(members: &[(u32, u32, &str)], size: u32) -> Vec<u32> {
    // Never above the largest size `table_size` returns: a caller's bad `size` must not
    // allocate gigabytes.
    let m = u64::from(size.min(LARGEST_TABLE));
    let mut live: Vec<(u32, u32, &str)> = members.iter().copied().filter(|m| m.1 > 0).collect();
    if m == 0 || live.is_empty() {
        return Vec::new();
    }
    live.sort_by(|a, b| a.2.cmp(b.2).then(a.0.cmp(&b.0)));
    let max_weight = live.iter().map(|m| u64::from(m.1)).max().unwrap_or(1);
    let mut builders: Vec<Builder> = live
        .iter()
        .map(|&(index, weight, key)| {
            let h = hash_key(key.as_bytes());
            Builder {
                index,
                weight: u64::from(weight),
                offset: h % m,
                skip: mix64(h ^ SKIP_SALT) % (m - 1).max(1) + 1,
                next: 0,
                target: 0,
            }
        })
        .collect();
    let mut table = vec![EMPTY; m as usize];
    // Min-heap of (round due, member position): rounds in order, members in key order
    // within a round, exactly Envoy's nested loop without iterating idle rounds.
    let mut due: BinaryHeap<Reverse<(u64, usize)>> = (0..builders.len())
        .map(|position| Reverse((1, position)))
        .collect();
    let mut filled = 0u64;
    while filled < m {
        let Some(Reverse((round, position))) = due.pop() else {
            break;
        };
        let Some(builder) = builders.get_mut(position) else {
            continue;
        };
        fill_next(builder, &mut table, m);
        filled += 1;
        builder.target += max_weight;
        let next_round = builder.target.div_ceil(builder.weight).max(round + 1);
        due.push(Reverse((next_round, position)));
    }
    table
}

/// Claim the next free entry of `builder`'s permutation.
fn fill_next(builder: &mut Builder, table: &mut [u32], m: u64) {
    while builder.next < m {
        let entry = (builder.offset + builder.next * builder.skip) % m;
        builder.next += 1;
        if let Some(slot) = table.get_mut(entry as usize)
            && *slot == EMPTY
        {
            *slot = builder.index;
            return;
        }
    }
    // Only reachable with a non-prime size: the permutation cycled. Probe linearly.
    if let Some(slot) = table.iter_mut().find(|slot| **slot == EMPTY) {
        *slot = builder.index;
    }
}

/// Look `key` up in `table` and walk forward to the first eligible entry. Falls back to
/// a weighted random member when no table entry is eligible but a member is (the table
/// was built before panic made more addresses usable).
pub(super) fn pick(
    table: &[u32],
    key: u64,
    members: &[u32],
    eligible: &Eligibility<'_>,
    draws: &mut Draws,
) -> Option<u32> {
    let len = table.len();
    if len == 0 {
        return weighted_random(members, eligible, draws);
    }
    let start = (key % len as u64) as usize;
    for step in 0..len {
        if step == WALK_BEFORE_CHECK
            && !members
                .iter()
                .any(|&index| eligible.weight_of(index).is_some())
        {
            return None;
        }
        if let Some(&index) = table.get((start + step) % len)
            && eligible.weight_of(index).is_some()
        {
            return Some(index);
        }
    }
    weighted_random(members, eligible, draws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> String {
        format!("10.0.{}.{}:8080", i / 256, i % 256)
    }

    fn table_for(weights: &[u32], size: u32) -> Vec<u32> {
        let keys: Vec<String> = (0..weights.len() as u32).map(key).collect();
        let members: Vec<(u32, u32, &str)> = weights
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, (&w, k))| (i as u32, w, k.as_str()))
            .collect();
        maglev_table(&members, size)
    }

    fn share(table: &[u32], index: u32) -> f64 {
        table.iter().filter(|&&i| i == index).count() as f64 / table.len() as f64
    }

    #[test]
    fn table_sizes_are_primes_within_kongs_bounds() {
        assert_eq!(table_size(10), 1_009, "Kong treats slots < 1000 as 1000");
        assert_eq!(table_size(10_000), 10_007);
        assert_eq!(table_size(65_536), 65_537);
        assert_eq!(table_size(u32::MAX), 65_537);
        assert_eq!(table_size(MAX_TABLE_SIZE), LARGEST_TABLE);
        assert_eq!(
            table_for(&[1, 1], u32::MAX).len(),
            65_537,
            "sizes are capped"
        );
    }

    #[test]
    fn key_hash_is_stable_and_spreads_similar_keys() {
        // Pinned value: a change here would remap every key of every user on upgrade.
        assert_eq!(hash_key(b""), mix64(FNV_OFFSET_BASIS));
        assert_eq!(hash_key(b"user-1"), hash_key(b"user-1"));
        let a = hash_key(b"user-1") % 1_009;
        let b = hash_key(b"user-2") % 1_009;
        assert_ne!(a, b);
    }

    #[test]
    fn every_entry_is_filled_and_equal_weights_get_equal_shares() {
        let table = table_for(&[100; 5], 10_007);
        assert_eq!(table.len(), 10_007);
        assert!(table.iter().all(|&i| i < 5));
        for i in 0..5 {
            assert!(
                (share(&table, i) - 0.2).abs() < 0.01,
                "member {i}: {}",
                share(&table, i)
            );
        }
    }

    #[test]
    fn weights_zero_are_left_out_and_order_does_not_matter() {
        let keys = [key(0), key(1), key(2)];
        let forward = maglev_table(
            &[(0, 10, &keys[0]), (1, 0, &keys[1]), (2, 30, &keys[2])],
            1_009,
        );
        let backward = maglev_table(
            &[(2, 30, &keys[2]), (1, 0, &keys[1]), (0, 10, &keys[0])],
            1_009,
        );
        assert_eq!(forward, backward);
        assert!(!forward.contains(&1));
        assert!((share(&forward, 2) - 0.75).abs() < 0.02);
        assert!(maglev_table(&[(0, 0, "a")], 1_009).is_empty());
        assert!(maglev_table(&[(0, 1, "a")], 0).is_empty());
    }

    #[test]
    fn a_non_prime_size_still_fills_every_entry() {
        let table = table_for(&[1, 1, 1, 1], 1_000);
        assert_eq!(table.len(), 1_000);
        assert!(table.iter().all(|&i| i < 4));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn adding_a_member_moves_about_one_nth_of_the_keys(n in 2u32..60) {
            // At Kong's largest `slots` (65 537 entries). With the default 10 007 entries
            // the measured worst case up to 60 members is 1.86/n (Maglev's disruption
            // grows as entries per member shrink); see `table_size`.
            let before = table_for(&vec![100; n as usize], 65_537);
            let after = table_for(&vec![100; n as usize + 1], 65_537);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64;
            let fraction = moved / before.len() as f64;
            let ideal = 1.0 / f64::from(n + 1);
            // Keys that move must mostly move to the new member: ≤ 1.5/n in total.
            prop_assert!(fraction <= 1.5 / f64::from(n), "moved {fraction}, ideal {ideal}");
            prop_assert!(fraction >= 0.5 * ideal, "moved {fraction}, ideal {ideal}");
        }

        #[test]
        fn shares_roughly_follow_weights(weights in proptest::collection::vec(1u32..=1_000, 2..10)) {
            let table = table_for(&weights, 65_537);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, &w) in weights.iter().enumerate() {
                let expected = f64::from(w) / total;
                let got = share(&table, i as u32);
                // Relative error under 10%, or a tiny absolute one for very light members
                // (each member fills at least one entry, and rounds are discrete).
                prop_assert!((got - expected).abs() <= (0.1 * expected).max(0.002),
                    "member {} weight {} got {} expected {}", i, w, got, expected);
            }
        }
    }
}
