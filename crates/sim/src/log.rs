//! The transition log: one line per state transition, in fixed columns.
//!
//! Columns (documented in `docs/testing.md`):
//!
//! ```text
//!   TIME_MS  SOURCE    SUBJECT               DETAIL
//!    61250  health    10.1.0.2:8000         unhealthy (active timeouts 3/3)
//!    61250  decision  api                   failover t0=0.0% t1=100.0% | tier 0 healthy share 0.33 ...
//! ```
//!
//! - `TIME_MS`: virtual milliseconds since the start of the run.
//! - `SOURCE`: who caused the line: `fault` (a fault window opened or closed), `operator`,
//!   `config`, `dns`, `health` (an address changed health), `address` (an address became
//!   available or unavailable in a published snapshot), `decision` (a decision record),
//!   `snapshot` (a published snapshot changed mode), `client` (a request the client saw
//!   fail), `check` (an invariant violation), and in full mode `attempt`, `probe`.
//! - `SUBJECT`: the address, upstream or fault the line is about.
//! - `DETAIL`: free text.
//!
//! Memory is bounded: the log keeps the last [`TransitionLog::capacity`] lines (older ones
//! are counted, not kept), unless it streams every line to stdout as it is written
//! (`--log full`).

use std::collections::VecDeque;

use sluice_core::Instant;

/// Lines kept for the failure report: enough to cover the minutes before a violation
/// in a busy run, small enough to print.
pub const DEFAULT_LOG_CAPACITY: usize = 4_000;

/// Which lines are recorded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// State transitions only.
    Transitions,
    /// Also every attempt and probe, streamed to stdout.
    Full,
}

/// Bounded, column-formatted transition log.
#[derive(Debug)]
pub struct TransitionLog {
    lines: VecDeque<String>,
    capacity: usize,
    dropped: u64,
    level: LogLevel,
}

impl TransitionLog {
    pub fn new(level: LogLevel, capacity: usize) -> TransitionLog {
        TransitionLog {
            lines: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            level,
        }
    }

    pub fn level(&self) -> LogLevel {
        self.level
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether per-attempt and per-probe lines are wanted (cheap check before
    /// formatting them).
    pub fn full(&self) -> bool {
        self.level == LogLevel::Full
    }

    /// Appends one line in the documented columns.
    pub fn line(&mut self, at: Instant, source: &str, subject: &str, detail: &str) {
        let text = format!("{:>9}  {source:<8}  {subject:<21} {detail}", at.as_millis());
        if self.level == LogLevel::Full {
            println!("{text}");
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(text);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// How many older lines were dropped to respect the capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept lines as one printable block, with a header naming the columns.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:>9}  {:<8}  {:<21} {}\n",
            "TIME_MS", "SOURCE", "SUBJECT", "DETAIL"
        );
        if self.dropped > 0 {
            out.push_str(&format!("  ... {} earlier lines dropped\n", self.dropped));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_in_columns() {
        let mut log = TransitionLog::new(LogLevel::Transitions, 2);
        log.line(Instant::from_millis(1), "fault", "r0", "region_blackout");
        log.line(
            Instant::from_millis(2),
            "health",
            "10.1.0.1:8000",
            "unhealthy",
        );
        log.line(Instant::from_millis(3), "decision", "api", "failover");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(log.dropped(), 1);
        assert_eq!(
            lines[0],
            "        2  health    10.1.0.1:8000         unhealthy"
        );
        assert!(log.render().contains("1 earlier lines dropped"));
        assert!(log.render().starts_with("  TIME_MS  SOURCE"));
    }
}
