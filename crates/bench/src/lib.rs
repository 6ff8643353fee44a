//! `sluice-bench`: the load generator and failover drills behind `BENCHMARKS.md`.
//!
//! Everything here runs against real processes on loopback: `sluice backend` processes
//! as the backends, and Sluice, NGINX, HAProxy or Envoy as the proxy in front of them.
//!
//! - [`load`]: open-loop, paced HTTP/1.1 load that records every request, with latency
//!   measured from the intended send time (coordinated-omission safe).
//! - [`histogram`]: the log-linear histogram and nearest-rank percentiles used for every
//!   latency number.
//! - [`summary`]: counts, errors by kind, percentiles and region/instance shares, whole
//!   run and per window; helpers to find "when did traffic move".
//! - [`record`]: the per-request record and its CSV form.
//! - [`peers`]: equivalent failover configurations for Sluice and its peers.
//! - [`procs`]: starting, killing and restarting the processes a drill owns.
//! - [`drill`]: the five failover drills (blackout, brownout, gray failure, one down,
//!   hang) and what each one measures.
//! - [`kong_gen`]: large Kong files for the config-scale benchmark.
//!
//! Binaries: `loadgen` (load against any URL), `drill` (one drill against one proxy,
//! JSON out), `gen-config` (the config-scale file).

pub mod drill;
pub mod histogram;
pub mod kong_gen;
pub mod load;
pub mod peers;
pub mod procs;
pub mod record;
pub mod summary;

use std::time::Duration;

/// Parses `250ms`, `1.5s`, `2m` (the spelling every bench command line uses).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 10s, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("'{text}': unit must be ms, s or m")),
    };
    // An hour bounds any benchmark run; beyond that a value is a typo.
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("'{text}' is out of range (0 to 1h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("90m").is_err());
    }
}
