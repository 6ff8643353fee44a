//! Summaries of a run's records: counts, errors by kind, latency percentiles, and the
//! share of answers per region and per instance, over the whole run and per time window.
//!
//! All selections are by *intended* send time, so a window holds the requests that were
//! due in it, however long they then took.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::histogram::Histogram;
use crate::record::{Outcome, Record};

/// Latency percentiles in milliseconds (nearest rank, ≤ 0.8 % histogram error).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram) -> Latency {
        let ms = |us: Option<u64>| us.map_or(0.0, |us| us as f64 / 1000.0);
        Latency {
            p50_ms: ms(histogram.quantile(0.5)),
            p90_ms: ms(histogram.quantile(0.9)),
            p99_ms: ms(histogram.quantile(0.99)),
            p999_ms: ms(histogram.quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean().map_or(0.0, |us| us / 1000.0),
        }
    }
}

/// Counts and latency of one set of records.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Slice {
    pub requests: u64,
    /// Complete 2xx/3xx answers.
    pub ok: u64,
    /// Everything else: transport errors, 4xx and 5xx.
    pub failed: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests with no complete answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency from intended send time, every request (failed ones included: a fast
    /// error is still a client-visible latency).
    pub latency: Latency,
    /// Share (0..1) of answers carrying each `x-backend-region`, over answered requests.
    pub regions: BTreeMap<String, f64>,
    /// Share (0..1) of answers carrying each `x-backend-instance`.
    pub instances: BTreeMap<String, f64>,
    /// Answers by instance, as counts (for "how many still reached the bad host").
    pub instance_counts: BTreeMap<String, u64>,
}

impl Slice {
    /// Summarises the given records.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Slice {
        let mut slice = Slice::default();
        let mut histogram = Histogram::new();
        let mut region_counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut labelled = 0u64;
        for record in records {
            slice.requests += 1;
            histogram.record(record.latency_us);
            if record.outcome.is_ok() {
                slice.ok += 1;
            } else {
                slice.failed += 1;
            }
            match record.outcome {
                Outcome::Status(status) => *slice.statuses.entry(status).or_default() += 1,
                Outcome::Error(kind) => {
                    *slice.errors.entry(kind.as_str().to_owned()).or_default() += 1;
                }
            }
            if let Some(region) = &record.region {
                *region_counts.entry(region.to_string()).or_default() += 1;
                labelled += 1;
            }
            if let Some(instance) = &record.instance {
                *slice
                    .instance_counts
                    .entry(instance.to_string())
                    .or_default() += 1;
            }
        }
        slice.latency = Latency::of(&histogram);
        if labelled > 0 {
            slice.regions = region_counts
                .into_iter()
                .map(|(region, count)| (region, count as f64 / labelled as f64))
                .collect();
        }
        let answered: u64 = slice.instance_counts.values().sum();
        if answered > 0 {
            slice.instances = slice
                .instance_counts
                .iter()
                .map(|(instance, count)| (instance.clone(), *count as f64 / answered as f64))
                .collect();
        }
        slice
    }

    /// Failed requests as a fraction of all requests (0 when there were none).
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

/// One time window of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
    #[serde(flatten)]
    pub slice: Slice,
}

/// The whole-run summary the load generator prints.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub rate: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub started_unix_ms: u64,
    /// Requests that fell due but got no record before the hard cut-off.
    pub abandoned: u64,
    /// Achieved rate of *completed* requests over the scheduled duration.
    pub achieved_rate: f64,
    /// How late the generator itself sent requests (p99, ms). Large values mean the
    /// generator, not the proxy, was the bottleneck (all connections busy, or CPU).
    pub send_lag_p99_ms: f64,
    #[serde(flatten)]
    pub total: Slice,
    pub windows: Vec<Window>,
}

/// Records whose intended time lies in `[from_us, to_us)`.
pub fn between(records: &[Record], from_us: u64, to_us: u64) -> impl Iterator<Item = &Record> {
    records
        .iter()
        .filter(move |r| r.intended_us >= from_us && r.intended_us < to_us)
}

/// Summaries of consecutive windows of `window_us` covering `[0, duration_us)`.
pub fn windows(records: &[Record], duration_us: u64, window_us: u64) -> Vec<Window> {
    let window_us = window_us.max(1);
    let count = duration_us.div_ceil(window_us);
    // One pass: records are bucketed by window index instead of filtered per window.
    let mut buckets: Vec<Vec<&Record>> = (0..count).map(|_| Vec::new()).collect();
    for record in records.iter().filter(|r| r.intended_us < duration_us) {
        let index = (record.intended_us / window_us) as usize;
        if let Some(bucket) = buckets.get_mut(index) {
            bucket.push(record);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(index, bucket)| {
            let start_us = index as u64 * window_us;
            Window {
                start_s: start_us as f64 / 1e6,
                end_s: (start_us + window_us).min(duration_us) as f64 / 1e6,
                slice: Slice::of(bucket),
            }
        })
        .collect()
}

impl Summary {
    pub fn of(run: &crate::load::LoadRun, window_us: u64) -> Summary {
        let duration_us = u64::try_from(run.spec.duration.as_micros()).unwrap_or(u64::MAX);
        let mut lag = Histogram::new();
        for record in &run.records {
            lag.record(record.send_lag_us);
        }
        let total = Slice::of(&run.records);
        Summary {
            url: run.spec.url.to_string(),
            rate: run.spec.rate,
            duration_s: run.spec.duration.as_secs_f64(),
            connections: run.spec.connections,
            started_unix_ms: run.started_unix_ms,
            abandoned: run.abandoned,
            achieved_rate: total.requests as f64 / run.spec.duration.as_secs_f64().max(1e-9),
            send_lag_p99_ms: lag.quantile(0.99).map_or(0.0, |us| us as f64 / 1000.0),
            total,
            windows: windows(&run.records, duration_us, window_us),
        }
    }
}

/// The first record at or after `from_us` (by intended time) that satisfies `predicate`.
pub fn first_at_or_after(
    records: &[Record],
    from_us: u64,
    predicate: impl Fn(&Record) -> bool,
) -> Option<&Record> {
    records
        .iter()
        .filter(|r| r.intended_us >= from_us)
        .find(|r| predicate(r))
}

/// The start of the first window of `window_us` at or after `from_us` in which at least
/// `share` of the answered requests satisfy `predicate` — "traffic is back on the
/// primary" without being fooled by a single early answer. Windows slide by a tenth of
/// their width. `None` if no window before `until_us` qualifies.
pub fn sustained_from(
    records: &[Record],
    from_us: u64,
    until_us: u64,
    window_us: u64,
    share: f64,
    predicate: impl Fn(&Record) -> bool,
) -> Option<u64> {
    let step = (window_us / 10).max(1);
    let mut start = from_us;
    while start + window_us <= until_us {
        let mut answered = 0u64;
        let mut matching = 0u64;
        for record in between(records, start, start + window_us) {
            if record.region.is_some() {
                answered += 1;
                if predicate(record) {
                    matching += 1;
                }
            }
        }
        if answered > 0 && matching as f64 >= share * answered as f64 {
            return Some(start);
        }
        start += step;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::ErrorKind;

    fn record(
        seq: u64,
        intended_us: u64,
        latency_us: u64,
        outcome: Outcome,
        region: &str,
    ) -> Record {
        Record {
            seq,
            intended_us,
            send_lag_us: 0,
            latency_us,
            outcome,
            region: (!region.is_empty()).then(|| Arc::from(region)),
            instance: (!region.is_empty()).then(|| Arc::from(format!("{region}-1").as_str())),
        }
    }

    #[test]
    fn slice_counts_failures_errors_and_shares() {
        let records = vec![
            record(0, 0, 1_000, Outcome::Status(200), "primary"),
            record(1, 10, 2_000, Outcome::Status(200), "primary"),
            record(2, 20, 3_000, Outcome::Status(200), "secondary"),
            record(3, 30, 4_000, Outcome::Status(502), ""),
            record(4, 40, 500, Outcome::Error(ErrorKind::Reset), ""),
        ];
        let slice = Slice::of(&records);
        assert_eq!(slice.requests, 5);
        assert_eq!(slice.ok, 3);
        assert_eq!(slice.failed, 2);
        assert_eq!(slice.statuses.get(&502), Some(&1));
        assert_eq!(slice.errors.get("reset"), Some(&1));
        assert_eq!(slice.regions.get("primary").copied(), Some(2.0 / 3.0));
        assert_eq!(slice.regions.get("secondary").copied(), Some(1.0 / 3.0));
        assert_eq!(slice.instance_counts.get("primary-1"), Some(&2));
        assert_eq!(slice.latency.max_ms, 4.0);
        // 2 ms, within the histogram's 1/128 bucket width.
        assert!(
            (2.0..=2.016).contains(&slice.latency.p50_ms),
            "{}",
            slice.latency.p50_ms
        );
        assert!((slice.error_ratio() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn windows_partition_by_intended_time() {
        let records: Vec<Record> = (0..30)
            .map(|i| record(i, i * 100_000, 1_000, Outcome::Status(200), "primary"))
            .collect();
        // 3 s of records in 1 s windows; the last window is cut at the duration.
        let windows = windows(&records, 2_500_000, 1_000_000);
        let counts: Vec<u64> = windows.iter().map(|w| w.slice.requests).collect();
        // Records at 2.5 s and later fall outside the run's duration and are dropped.
        assert_eq!(counts, vec![10, 10, 5]);
        assert_eq!(windows.last().map(|w| w.end_s), Some(2.5));
    }

    #[test]
    fn sustained_share_ignores_a_lone_early_answer() {
        // From 1 s on: one primary answer at 1.0 s, then secondary until 3 s, then primary.
        let mut records = Vec::new();
        for i in 0..500u64 {
            let t = 1_000_000 + i * 10_000;
            let region = if i == 0 || t >= 3_000_000 {
                "primary"
            } else {
                "secondary"
            };
            records.push(record(i, t, 1_000, Outcome::Status(200), region));
        }
        let first_primary = first_at_or_after(&records, 1_000_000, |r| {
            r.region.as_deref() == Some("primary")
        });
        assert_eq!(first_primary.map(|r| r.intended_us), Some(1_000_000));
        let back = sustained_from(&records, 1_000_000, 6_000_000, 500_000, 0.9, |r| {
            r.region.as_deref() == Some("primary")
        });
        // The first 0.5 s window with ≥ 90 % primary starts at 2.95 s (the window
        // [2.95, 3.45) has 45 of 50 answers from primary).
        assert_eq!(back, Some(2_950_000));
        let never = sustained_from(&records, 1_000_000, 6_000_000, 500_000, 0.9, |r| {
            r.region.as_deref() == Some("tertiary")
        });
        assert_eq!(never, None);
    }
}
