//! A log-linear latency histogram with bounded relative error, and nearest-rank
//! percentiles over it.
//!
//! Why not sort the samples? The load generator keeps every record anyway, but the
//! summaries slice a run into many windows and regions; a histogram per slice is cheap
//! to fill, merge and query, and its error bound is stated rather than accidental.
//!
//! Layout (the HdrHistogram idea, written out small): values below
//! [`SUB_BUCKETS`] get one bucket each (exact); above that, every power-of-two range
//! `[2^m, 2^(m+1))` is split into [`SUB_BUCKETS`] equal buckets. A bucket's width is
//! therefore at most `value / SUB_BUCKETS`, so any reported value is within
//! `1 / SUB_BUCKETS` (0.78 %) of a recorded one. Values are unit-free `u64`; the load
//! generator records microseconds.

/// log2 of the number of sub-buckets per power of two. Seven bits (128 sub-buckets)
/// keep the relative error under 0.8 %, finer than the run-to-run noise of any
/// latency measured on a shared 2-core machine, while the whole `u64` range fits in
/// 7,424 counters (58 KiB) per histogram.
const SUB_BUCKET_BITS: u32 = 7;
/// Sub-buckets per power of two, and the first value that is no longer exact.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Enough buckets for every `u64`: the exact range plus 57 halvings of 128 buckets.
const BUCKET_COUNT: usize = ((64 - SUB_BUCKET_BITS as usize) + 1) * SUB_BUCKETS as usize;

/// Counts of values in log-linear buckets, plus the exact minimum and maximum.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Bucket index of a value.
fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    // Position of the highest set bit; at least SUB_BUCKET_BITS here.
    let magnitude = 63 - value.leading_zeros();
    let shift = magnitude - SUB_BUCKET_BITS;
    // The top SUB_BUCKET_BITS+1 bits of the value, in [SUB_BUCKETS, 2*SUB_BUCKETS).
    let top = value >> shift;
    let sub = top - SUB_BUCKETS;
    ((u64::from(shift) + 1) * SUB_BUCKETS + sub) as usize
}

/// Largest value that falls into bucket `index`.
fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    let lowest = (SUB_BUCKETS + sub) << shift;
    // (1 << shift) - 1 cannot overflow: shift is at most 56.
    lowest.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKET_COUNT],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        if let Some(count) = self.counts.get_mut(bucket_of(value)) {
            *count += 1;
        }
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (exact), or `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// Smallest recorded value (exact), or `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    /// Arithmetic mean (exact), or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The `quantile` (0.0..=1.0) by the nearest-rank rule: the smallest recorded value
    /// `v` such that at least `ceil(quantile * count)` values are `<= v`. Reported as the
    /// upper edge of `v`'s bucket, clamped into `[min, max]` so that `quantile(1.0)` is
    /// the exact maximum and no answer lies outside what was recorded. `None` when empty.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let quantile = if quantile.is_nan() {
            0.0
        } else {
            quantile.clamp(0.0, 1.0)
        };
        // Nearest rank, 1-based; rank 1 for quantile 0 (the minimum).
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        // The extremes are known exactly; do not blur them to a bucket edge.
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.total {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper(index).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for value in 0..SUB_BUCKETS {
            assert_eq!(bucket_upper(bucket_of(value)), value);
        }
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        // Every value maps to a bucket whose upper edge is >= the value, and the next
        // value after an upper edge starts the next bucket.
        let mut value = 0u64;
        let mut previous_index = None;
        while value < 1 << 20 {
            let index = bucket_of(value);
            let upper = bucket_upper(index);
            assert!(
                upper >= value,
                "value {value} above its bucket edge {upper}"
            );
            if let Some(previous) = previous_index {
                assert_eq!(index, previous + 1, "bucket after value {value}");
            }
            previous_index = Some(index);
            value = upper + 1;
        }
    }

    #[test]
    fn relative_error_is_bounded() {
        for value in [
            129u64,
            1_000,
            4_321,
            99_999,
            1_234_567,
            10_000_000_000,
            u64::MAX,
        ] {
            let upper = bucket_upper(bucket_of(value));
            let error = (upper - value) as f64 / value as f64;
            assert!(
                error <= 1.0 / SUB_BUCKETS as f64,
                "value {value}: edge {upper}, error {error}"
            );
        }
        assert!(bucket_of(u64::MAX) < BUCKET_COUNT);
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let mut histogram = Histogram::new();
        for value in 1..=100 {
            histogram.record(value);
        }
        assert_eq!(histogram.quantile(0.5), Some(50));
        assert_eq!(histogram.quantile(0.9), Some(90));
        assert_eq!(histogram.quantile(0.99), Some(99));
        assert_eq!(histogram.quantile(0.999), Some(100));
        assert_eq!(histogram.quantile(1.0), Some(100));
        assert_eq!(histogram.quantile(0.0), Some(1));
        // 50.5 % needs 51 values at or below.
        assert_eq!(histogram.quantile(0.505), Some(51));
        assert_eq!(histogram.mean(), Some(50.5));
    }

    #[test]
    fn a_single_outlier_moves_only_the_tail() {
        // 999 fast answers and one stuck for 5 s: p99 stays fast, p99.9 and max see it.
        let mut histogram = Histogram::new();
        for _ in 0..999 {
            histogram.record(300);
        }
        histogram.record(5_000_000);
        let p99 = histogram.quantile(0.99).unwrap_or_default();
        assert!((300..=303).contains(&p99), "p99 {p99}");
        let p999 = histogram.quantile(0.999).unwrap_or_default();
        assert!((300..=303).contains(&p999), "p99.9 {p999}");
        assert_eq!(histogram.quantile(0.9991), Some(5_000_000));
        assert_eq!(histogram.max(), Some(5_000_000));
    }

    #[test]
    fn large_values_report_within_the_error_bound() {
        let mut histogram = Histogram::new();
        for value in [10_000u64, 20_000, 30_000, 40_000] {
            histogram.record(value);
        }
        let median = histogram.quantile(0.5).unwrap_or_default();
        assert!(
            (20_000..=20_000 + 20_000 / SUB_BUCKETS).contains(&median),
            "median {median}"
        );
        // Clamped to the exact extremes.
        assert_eq!(histogram.quantile(1.0), Some(40_000));
        assert_eq!(histogram.quantile(0.0), Some(10_000));
    }

    #[test]
    fn empty_histogram_has_no_answers() {
        let histogram = Histogram::new();
        assert_eq!(histogram.quantile(0.5), None);
        assert_eq!(histogram.max(), None);
        assert_eq!(histogram.min(), None);
        assert_eq!(histogram.mean(), None);
        assert_eq!(histogram.count(), 0);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut left = Histogram::new();
        let mut right = Histogram::new();
        let mut both = Histogram::new();
        for value in 0..5_000u64 {
            let scrambled = value * 7_919 % 100_003;
            if value % 3 == 0 {
                left.record(scrambled);
            } else {
                right.record(scrambled);
            }
            both.record(scrambled);
        }
        left.merge(&right);
        for quantile in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(left.quantile(quantile), both.quantile(quantile));
        }
        assert_eq!(left.count(), both.count());
        assert_eq!(left.mean(), both.mean());
    }

    #[test]
    fn out_of_range_quantiles_are_clamped() {
        let mut histogram = Histogram::new();
        histogram.record(7);
        histogram.record(9);
        assert_eq!(histogram.quantile(-1.0), Some(7));
        assert_eq!(histogram.quantile(2.0), Some(9));
        assert_eq!(histogram.quantile(f64::NAN), Some(7));
    }
}
