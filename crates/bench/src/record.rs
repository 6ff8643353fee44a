//! One record per request the load generator meant to send: when it was due, what came
//! back, how long it took, and which backend answered.
//!
//! Times are microseconds from the start of the run, so records from one run compare
//! directly with the drill's fault timeline (which uses the same origin).

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

/// Why a request got no HTTP answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The proxy refused the TCP connection (nothing listening).
    Refused,
    /// The connection was reset or broken while the request was in flight.
    Reset,
    /// The proxy closed the connection before a complete answer.
    Closed,
    /// No complete answer within the request timeout.
    Timeout,
    /// Connecting failed for another reason (including the connect timeout).
    Connect,
    /// Anything else (protocol errors, malformed answers).
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Other => "other",
        }
    }
}

/// What a request ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete HTTP answer with this status.
    Status(u16),
    /// No (complete) HTTP answer.
    Error(ErrorKind),
}

impl Outcome {
    /// Whether the client saw success: a complete 2xx or 3xx answer. Everything else
    /// (transport errors, 4xx, 5xx) is a failed client request in every report.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Status(status) if (200..400).contains(&status))
    }
}

/// One request.
#[derive(Clone, Debug)]
pub struct Record {
    /// Position in the schedule (0-based).
    pub seq: u64,
    /// When the schedule wanted it sent, µs from the run start.
    pub intended_us: u64,
    /// How late it actually went out (generator lag: timer granularity, all
    /// connections busy), µs. Already included in `latency_us`.
    pub send_lag_us: u64,
    /// From the intended send time to the end of the answer (or the error), µs. Measuring
    /// from the intended time is what keeps a stalled proxy from hiding its own queue
    /// (coordinated omission).
    pub latency_us: u64,
    pub outcome: Outcome,
    /// `x-backend-region` of the answer, when present.
    pub region: Option<Arc<str>>,
    /// `x-backend-instance` of the answer, when present.
    pub instance: Option<Arc<str>>,
}

/// CSV header matching [`write_csv`].
pub const CSV_HEADER: &str = "seq,intended_us,send_lag_us,latency_us,status,error,region,instance";

/// Writes records as CSV (one line per request, in schedule order as given).
pub fn write_csv(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for record in records {
        let (status, error) = match record.outcome {
            Outcome::Status(status) => (status.to_string(), ""),
            Outcome::Error(kind) => (String::new(), kind.as_str()),
        };
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            record.seq,
            record.intended_us,
            record.send_lag_us,
            record.latency_us,
            status,
            error,
            csv_field(record.region.as_deref()),
            csv_field(record.instance.as_deref()),
        )?;
    }
    Ok(())
}

/// Header values come from the backend; keep them from breaking the CSV layout.
fn csv_field(value: Option<&str>) -> String {
    value
        .unwrap_or("")
        .chars()
        .map(|c| if c == ',' || c.is_control() { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_2xx_and_3xx_count_as_ok() {
        assert!(Outcome::Status(200).is_ok());
        assert!(Outcome::Status(304).is_ok());
        assert!(!Outcome::Status(404).is_ok());
        assert!(!Outcome::Status(502).is_ok());
        assert!(!Outcome::Error(ErrorKind::Timeout).is_ok());
    }

    #[test]
    fn csv_has_one_line_per_record_and_sanitised_headers() {
        let records = vec![
            Record {
                seq: 0,
                intended_us: 500,
                send_lag_us: 3,
                latency_us: 812,
                outcome: Outcome::Status(200),
                region: Some(Arc::from("primary")),
                instance: Some(Arc::from("p,1\n")),
            },
            Record {
                seq: 1,
                intended_us: 1000,
                send_lag_us: 0,
                latency_us: 20,
                outcome: Outcome::Error(ErrorKind::Refused),
                region: None,
                instance: None,
            },
        ];
        let mut out = Vec::new();
        assert!(write_csv(&mut out, &records).is_ok());
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                CSV_HEADER,
                "0,500,3,812,200,,primary,p_1_",
                "1,1000,0,20,,refused,,",
            ]
        );
    }
}
