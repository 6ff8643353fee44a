//! Turning the caller's single `u64` of entropy into as many random draws as one pick
//! needs (tier choice, tie-breaks, P2C candidates), deterministically.
//!
//! SplitMix64 (Steele, Lea & Flood 2014, the seeding generator of `xoshiro`) is used as
//! the stream: it is a bijective mixer over a Weyl sequence, so every draw is a good
//! 64-bit value even when the caller's entropy is a small counter, and the same entropy
//! always yields the same sequence, which keeps picks reproducible in tests and the sim.

/// Golden-ratio increment of the SplitMix64 Weyl sequence.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective avalanche mixer (also used to finish
/// string hashes in `balance::hash`).
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic stream of random draws seeded by the caller's entropy.
#[derive(Clone, Debug)]
pub struct Draws {
    state: u64,
}

impl Draws {
    pub fn new(entropy: u64) -> Self {
        Draws { state: entropy }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniform draw in `0..n` (0 when `n == 0`), by Lemire's multiply-shift. Its bias is
    /// at most `n / 2^64`, far below anything a balancer could measure.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_entropy_gives_the_same_draws() {
        let mut a = Draws::new(7);
        let mut b = Draws::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Draws::new(7).next_u64(), Draws::new(8).next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut draws = Draws::new(0);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            let v = draws.below(5);
            assert!(v < 5);
            if let Some(count) = seen.get_mut(v as usize) {
                *count += 1;
            }
        }
        for count in seen {
            assert!(
                (800..1_200).contains(&count),
                "skewed draw counts: {seen:?}"
            );
        }
        assert_eq!(draws.below(0), 0);
    }
}
