//! Sluice's extensions, written as Kong tags so that a file Kong accepts stays a file Kong
//! accepts.
//!
//! Kong validates every tag against `^[ \x21-\x2B\x2D\x2E\x30-\x7E\x80-\xF4]+$`
//! (`kong/db/schema/typedefs.lua`, `validate_tag`): printable ASCII except `,` and `/`,
//! or UTF-8. So our syntax uses `:` and `=` (allowed) and separates list items with `|`
//! (a comma would make Kong reject the file):
//!
//! - targets: `region:<name>` and `tier:<0..255>`;
//! - upstreams: `sluice:<key>=<value>` for the failover policy and the active-probe
//!   connection mode (see [`UPSTREAM_KEYS`]);
//! - routes: `sluice:hedge-after=50ms`, `sluice:retry-on=502|503`.
//!
//! Durations are `<number><unit>` with unit `ms`, `s`, `m` or `h` (`250ms`, `1.5s`);
//! shares are a fraction `0.05` or a percentage `5%`; switches are `on|off|true|false`.

use std::time::Duration;

use sluice_core::topology::{ActiveHealthCheck, FailoverPolicy};

use crate::decode::Sp;
use crate::diagnostic::Sink;
use crate::model::RouteExtensions;

/// Kong's tag rule; a tag outside it would make Kong reject the file, so we do too.
pub(crate) fn check_kong_tag(sink: &mut Sink, tag: &Sp<String>) -> bool {
    let valid = is_kong_tag(&tag.value);
    if !valid {
        sink.error_hint(
            &tag.path,
            tag.pos,
            format!(
                "invalid tag '{}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
                tag.value
            ),
            if tag.value.contains(',') {
                "Kong rejects ',' in tags; Sluice separates list values with '|', e.g. sluice:retry-on=502|503"
            } else {
                "remove the character; Kong rejects this tag"
            },
        );
    }
    valid
}

/// Kong's tag character rule, without reporting.
pub fn is_kong_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .chars()
            .all(|c| !c.is_ascii() || c == ' ' || (c.is_ascii_graphic() && c != ',' && c != '/'))
}

/// `sluice:<key>=<value>` split, or `None` when the tag is not a Sluice tag. Tags that
/// break Kong's rule are left to [`check_kong_tag`], so they are reported once.
fn sluice_tag(tag: &str) -> Option<(&str, Option<&str>)> {
    if !is_kong_tag(tag) {
        return None;
    }
    let rest = tag.strip_prefix("sluice:")?;
    Some(match rest.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (rest, None),
    })
}

/// Keys accepted on upstreams, for the error hint and the docs.
pub const UPSTREAM_KEYS: &[&str] = &[
    "overprovisioning",
    "panic-threshold",
    "hold-down",
    "hold-down-max",
    "ramp",
    "ramp-start",
    "ramp-abort-error-rate",
    "slow-start",
    "adaptive-weights",
    "outlier",
    "outlier-consecutive",
    "outlier-failure-rate",
    "outlier-min-requests",
    "outlier-window",
    "outlier-base-ejection",
    "outlier-max-ejection",
    "outlier-max-ejected",
    "retry-budget",
    "retry-budget-min",
    "retry-budget-window",
    "probe-keepalive",
    "probe-keepalive-max-age",
];

/// How long a keep-alive probe connection is reused when `probe-keepalive-max-age` is not
/// set. A reused connection cannot see a stopped listener or a full accept queue (see
/// docs/configuration.md, "Keep-alive probes"), so every connection is replaced after
/// this long: such a fault is then noticed within 30 s plus Kong's usual threshold. At a 1 s interval that is one
/// fresh connect per 30 probes, about 1 µs of CPU per probe on average (a loopback
/// connect costs ~31 µs, BENCHMARKS.md), so the bound is nearly free.
pub const DEFAULT_PROBE_KEEPALIVE_MAX_AGE: Duration = Duration::from_secs(30);

/// Keys accepted on routes.
pub const ROUTE_KEYS: &[&str] = &["hedge-after", "retry-on"];

/// Parses `250ms`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "" => return Err(format!("'{text}' has no unit")),
        other => return Err(format!("unknown duration unit '{other}'")),
    };
    // A day bounds every timer Sluice has; beyond it a value is a typo, and the bound
    // keeps `Duration::from_secs_f64` away from overflow.
    const MAX_SECONDS: f64 = 86_400.0;
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("'{text}' is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a share: `0.05` or `5%`, within 0..=1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("'{text}' is not a share"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{text}' is out of range (0 to 1, or 0% to 100%)"));
    }
    Ok(value)
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("'{text}' is not on/off")),
    }
}

fn parse_count(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .map_err(|_| format!("'{text}' is not a non-negative integer"))
}

/// Applies `sluice:` tags of an upstream to its failover policy and active check. Unknown
/// keys and bad values are errors at the tag's position.
pub(crate) fn apply_upstream_tags(
    sink: &mut Sink,
    tags: &[Sp<String>],
    policy: &mut FailoverPolicy,
    active: &mut ActiveHealthCheck,
) {
    // The two keep-alive keys may come in either order; combined after the loop.
    let mut keepalive = false;
    let mut keepalive_max_age = None;
    for tag in tags {
        let Some((key, value)) = sluice_tag(&tag.value) else {
            continue;
        };
        let Some(value) = value else {
            missing_value(sink, tag, key, UPSTREAM_KEYS);
            continue;
        };
        let result = match key {
            "overprovisioning" => value
                .parse::<f64>()
                .map_err(|_| format!("'{value}' is not a number"))
                .and_then(|v| {
                    if (1.0..=10.0).contains(&v) {
                        Ok(v)
                    } else {
                        Err(format!("'{value}' is out of range (1.0 to 10.0)"))
                    }
                })
                .map(|v| policy.overprovisioning = v),
            "panic-threshold" => parse_share(value).map(|v| policy.panic_threshold = v),
            "hold-down" => parse_duration(value).map(|v| policy.failback_hold_down = v),
            "hold-down-max" => parse_duration(value).map(|v| policy.failback_hold_down_max = v),
            "ramp" => parse_duration(value).map(|v| policy.failback_ramp = v),
            "ramp-start" => parse_share(value).map(|v| policy.ramp_start_share = v),
            "ramp-abort-error-rate" => parse_share(value).map(|v| policy.ramp_abort_error_rate = v),
            "slow-start" => parse_duration(value).map(|v| policy.slow_start = v),
            "adaptive-weights" => parse_switch(value).map(|v| policy.adaptive_weights = v),
            "outlier" => parse_switch(value).map(|v| policy.outlier.enabled = v),
            "outlier-consecutive" => {
                parse_count(value).map(|v| policy.outlier.consecutive_failures = v)
            }
            "outlier-failure-rate" => parse_share(value).map(|v| policy.outlier.failure_rate = v),
            "outlier-min-requests" => parse_count(value).map(|v| policy.outlier.min_requests = v),
            "outlier-window" => parse_duration(value).map(|v| policy.outlier.window = v),
            "outlier-base-ejection" => {
                parse_duration(value).map(|v| policy.outlier.base_ejection = v)
            }
            "outlier-max-ejection" => {
                parse_duration(value).map(|v| policy.outlier.max_ejection = v)
            }
            "outlier-max-ejected" => {
                parse_share(value).map(|v| policy.outlier.max_ejected_share = v)
            }
            "retry-budget" => parse_share(value).map(|v| policy.retry_budget.ratio = v),
            "retry-budget-min" => parse_count(value).map(|v| policy.retry_budget.min_per_sec = v),
            "retry-budget-window" => parse_duration(value).map(|v| policy.retry_budget.window = v),
            "probe-keepalive" => parse_switch(value).map(|v| keepalive = v),
            "probe-keepalive-max-age" => parse_duration(value).and_then(|v| {
                if v.is_zero() {
                    Err("a zero age would reconnect on every probe; use probe-keepalive=off".into())
                } else {
                    keepalive_max_age = Some(v);
                    Ok(())
                }
            }),
            _ => {
                unknown_key(sink, tag, key, UPSTREAM_KEYS, "upstream");
                continue;
            }
        };
        if let Err(problem) = result {
            bad_value(sink, tag, key, &problem);
        }
    }
    active.keepalive =
        keepalive.then(|| keepalive_max_age.unwrap_or(DEFAULT_PROBE_KEEPALIVE_MAX_AGE));
    if policy.failback_hold_down_max < policy.failback_hold_down {
        // Keep the engine's invariant (max ≥ base) rather than reject: a user who only
        // raised `hold-down` meant "at least this long".
        policy.failback_hold_down_max = policy.failback_hold_down;
    }
    if policy.outlier.max_ejection < policy.outlier.base_ejection {
        policy.outlier.max_ejection = policy.outlier.base_ejection;
    }
}

/// Reads the `sluice:` tags of a route.
pub(crate) fn route_extensions(sink: &mut Sink, tags: &[Sp<String>]) -> RouteExtensions {
    let mut extensions = RouteExtensions::default();
    for tag in tags {
        let Some((key, value)) = sluice_tag(&tag.value) else {
            continue;
        };
        let Some(value) = value else {
            missing_value(sink, tag, key, ROUTE_KEYS);
            continue;
        };
        match key {
            "hedge-after" => match parse_duration(value) {
                Ok(delay) if !delay.is_zero() => extensions.hedge_after = Some(delay),
                Ok(_) => bad_value(sink, tag, key, "a zero delay would double every request"),
                Err(problem) => bad_value(sink, tag, key, &problem),
            },
            "retry-on" => {
                let mut statuses = Vec::new();
                for item in value.split('|') {
                    match item.parse::<u16>() {
                        Ok(status) if (500..=599).contains(&status) || status == 429 => {
                            statuses.push(status)
                        }
                        _ => {
                            bad_value(
                                sink,
                                tag,
                                key,
                                &format!("'{item}' is not a retryable status (429 or 500..599)"),
                            );
                        }
                    }
                }
                extensions.retry_on_status = statuses;
            }
            _ => unknown_key(sink, tag, key, ROUTE_KEYS, "route"),
        }
    }
    extensions
}

fn unknown_key(sink: &mut Sink, tag: &Sp<String>, key: &str, valid: &[&str], entity: &str) {
    sink.error_hint(
        &tag.path,
        tag.pos,
        format!("unknown Sluice {entity} setting '{key}'"),
        format!("valid keys: {}", valid.join(", ")),
    );
}

fn missing_value(sink: &mut Sink, tag: &Sp<String>, key: &str, valid: &[&str]) {
    if valid.contains(&key) {
        sink.error_hint(
            &tag.path,
            tag.pos,
            format!("Sluice setting '{key}' has no value"),
            format!("write sluice:{key}=<value>"),
        );
    } else {
        sink.error_hint(
            &tag.path,
            tag.pos,
            format!("unknown Sluice setting '{key}'"),
            format!("valid keys: {}", valid.join(", ")),
        );
    }
}

fn bad_value(sink: &mut Sink, tag: &Sp<String>, key: &str, problem: &str) {
    let expected = match key {
        "hedge-after"
        | "hold-down"
        | "hold-down-max"
        | "ramp"
        | "slow-start"
        | "outlier-window"
        | "outlier-base-ejection"
        | "outlier-max-ejection"
        | "retry-budget-window"
        | "probe-keepalive-max-age" => "a duration such as 250ms, 10s or 2m",
        "panic-threshold"
        | "ramp-start"
        | "ramp-abort-error-rate"
        | "outlier-failure-rate"
        | "outlier-max-ejected"
        | "retry-budget" => "a share such as 0.05 or 5%",
        "adaptive-weights" | "outlier" | "probe-keepalive" => "on or off",
        "retry-on" => "statuses separated by '|', e.g. 502|503|504",
        "overprovisioning" => "a factor from 1.0 to 10.0, e.g. 1.4",
        _ => "a non-negative integer",
    };
    sink.error_hint(
        &tag.path,
        tag.pos,
        format!("invalid value for Sluice setting '{key}': {problem}"),
        format!("expected {expected}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err(), "a bare number is ambiguous");
        assert!(parse_duration("10days").is_err());
        assert!(parse_duration("48h").is_err(), "beyond the sanity bound");
    }

    #[test]
    fn shares_accept_fractions_and_percentages() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert_eq!(parse_share("5%"), Ok(0.05));
        assert!(parse_share("120%").is_err());
        assert!(parse_share("half").is_err());
    }

    #[test]
    fn sluice_tags_split_key_and_value() {
        assert_eq!(
            sluice_tag("sluice:hold-down=10s"),
            Some(("hold-down", Some("10s")))
        );
        assert_eq!(sluice_tag("sluice:outlier"), Some(("outlier", None)));
        assert_eq!(sluice_tag("region:eu"), None);
    }
}
