//! The simulator's only source of randomness: xoshiro256** seeded through SplitMix64.
//!
//! The algorithm is fixed and written out here (not borrowed from a crate that may
//! change its "small" RNG between releases), so a seed printed today reproduces the same
//! run next year. One run seed derives every sub-stream ([`Stream`]): faults, traffic,
//! latencies and probes each get their own generator, so drawing one more latency never
//! shifts which faults a seed enables.
//!
//! References: Blackman & Vigna, "Scrambled linear pseudorandom number generators"
//! (xoshiro256**), and Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators" (SplitMix64).

/// Independent random sub-streams derived from one run seed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Which faults a seed enables, their intensities and timing (the swarm draw).
    Faults,
    /// Request arrivals, hash keys and balancer entropy.
    Traffic,
    /// Latencies and outcomes of attempts and probes.
    World,
    /// BUGGIFY choices on the configuration.
    Config,
}

impl Stream {
    /// A distinct odd constant per stream, mixed into the seed before SplitMix64 expands
    /// it; odd golden-ratio multiples keep the streams' seeds far apart.
    fn salt(self) -> u64 {
        match self {
            Stream::Faults => 0x9E37_79B9_7F4A_7C15,
            Stream::Traffic => 0xBF58_476D_1CE4_E5B9,
            Stream::World => 0x94D0_49BB_1331_11EB,
            Stream::Config => 0xD6E8_FEB8_6659_FD93,
        }
    }
}

/// SplitMix64: used only to expand a 64-bit seed into xoshiro's 256-bit state, as the
/// xoshiro authors recommend (it never yields an all-zero state from distinct outputs).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: fast, 256 bits of state, passes BigCrush; more than enough for
/// simulation draws (not for cryptography).
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator for `stream` of the run with `seed`.
    pub fn new(seed: u64, stream: Stream) -> Rng {
        Rng::from_u64(seed ^ stream.salt())
    }

    /// A generator seeded directly from one `u64` through SplitMix64.
    pub fn from_u64(seed: u64) -> Rng {
        let mut sm = seed;
        let state = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to `0..=1`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `[0, n)`; 0 when `n` is 0. Lemire's multiply-shift: the bias for the
    /// small `n` the simulator uses is below 2^-40, far under anything a run can observe.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[low, high]` (inclusive); `low` when the range is empty.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.below(high - low + 1)
    }

    /// Exponentially distributed with the given mean (inter-arrival times, latency tails).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        -(1.0 - self.unit()).ln() * mean
    }

    /// Picks one element uniformly; `None` for an empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = usize::try_from(self.below(items.len() as u64)).ok()?;
        items.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // Reference vector: xoshiro256** from state {1, 2, 3, 4} (the authors' C code)
        // yields 11520, 0, 1509978240, 1215971899390074240 as its first outputs.
        let mut rng = Rng {
            state: [1, 2, 3, 4],
        };
        assert_eq!(rng.next_u64(), 11520);
        assert_eq!(rng.next_u64(), 0);
        assert_eq!(rng.next_u64(), 1_509_978_240);
        assert_eq!(rng.next_u64(), 1_215_971_899_390_074_240);
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // Reference: SplitMix64 seeded with 0 starts 0xE220A8397B1DCDAF.
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn same_seed_same_stream_same_draws_and_streams_differ() {
        let mut a = Rng::new(42, Stream::Traffic);
        let mut b = Rng::new(42, Stream::Traffic);
        let mut c = Rng::new(42, Stream::Faults);
        let draws_a: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let draws_b: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let draws_c: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(draws_a, draws_b);
        assert_ne!(draws_a, draws_c);
    }

    #[test]
    fn bounded_draws_stay_in_range_and_cover_it() {
        let mut rng = Rng::from_u64(7);
        let mut seen = [false; 5];
        for _ in 0..1_000 {
            let v = rng.between(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            seen.iter().all(|s| *s),
            "every value of a small range is drawn"
        );
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(5, 5), 5);
        assert!(rng.choose::<u8>(&[]).is_none());
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut rng = Rng::from_u64(3);
        let n = 20_000;
        let mean = (0..n).map(|_| rng.exponential(5.0)).sum::<f64>() / f64::from(n);
        assert!((mean - 5.0).abs() < 0.2, "mean {mean}");
    }
}
