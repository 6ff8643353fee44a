//! `sluice-sim` command line: run one seed with a full log, or a range of seeds with a
//! summary.
//!
//! ```text
//! cargo run -p sluice-sim --release -- --seeds 0..100000        # long run
//! cargo run -p sluice-sim --release -- --seed 42 --log full     # reproduce one seed
//! ```
//!
//! Exit status: 0 when every seed passed, 1 when any failed, 2 on a usage error.

use std::process::ExitCode;
use std::time::Instant as WallInstant;

use sluice_core::Duration;
use sluice_sim::log::LogLevel;
use sluice_sim::runner::{SeedProfile, run_seed};

const USAGE: &str = "usage: sluice-sim (--seed N | --seeds A..B) [--log transitions|full] \
[--fault-phase-secs S] [--rps R] [--keep-going]";

/// Parsed command line.
#[derive(Debug)]
struct Args {
    seeds: std::ops::Range<u64>,
    log: LogLevel,
    profile: SeedProfile,
    /// Continue after the first failing seed (default: stop, print its report).
    keep_going: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut seeds = None;
    let mut log = LogLevel::Transitions;
    let mut profile = SeedProfile::LONG;
    let mut keep_going = false;
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--seed" => {
                let seed: u64 = parse_number("--seed", &value("--seed")?)?;
                seeds = Some(seed..seed.saturating_add(1));
            }
            "--seeds" => {
                let text = value("--seeds")?;
                let (start, end) = text
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds wants A..B, got {text:?}"))?;
                let start = parse_number("--seeds start", start)?;
                let end = parse_number("--seeds end", end)?;
                if end <= start {
                    return Err(format!("--seeds {text}: the range is empty"));
                }
                seeds = Some(start..end);
            }
            "--log" => {
                log = match value("--log")?.as_str() {
                    "full" => LogLevel::Full,
                    "transitions" => LogLevel::Transitions,
                    other => return Err(format!("--log wants transitions or full, got {other:?}")),
                };
            }
            "--fault-phase-secs" => {
                let secs = parse_number("--fault-phase-secs", &value("--fault-phase-secs")?)?;
                profile.fault_phase = Duration::from_secs(secs);
            }
            "--rps" => {
                let rps: u64 = parse_number("--rps", &value("--rps")?)?;
                profile.requests_per_sec = u32::try_from(rps)
                    .ok()
                    .filter(|r| (1..=100_000).contains(r))
                    .ok_or_else(|| format!("--rps {rps}: must be 1..=100000"))?;
            }
            "--keep-going" => keep_going = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let seeds = seeds.ok_or_else(|| format!("--seed or --seeds is required\n{USAGE}"))?;
    Ok(Args {
        seeds,
        log,
        profile,
        keep_going,
    })
}

fn parse_number(name: &str, text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{name}: {text:?} is not a non-negative integer"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let single = args.seeds.end - args.seeds.start == 1;
    let started = WallInstant::now();
    let mut run = 0u64;
    let mut failed = Vec::new();
    let mut requests = 0u64;
    for seed in args.seeds.clone() {
        let report = run_seed(seed, args.profile, args.log);
        run += 1;
        requests += report.stats.requests;
        if single {
            println!("{}", report.summary());
        }
        if !report.passed() {
            println!("{}", report.failure_text());
            failed.push(seed);
            if !args.keep_going {
                break;
            }
        }
        if !single && run.is_multiple_of(100) {
            eprintln!(
                "... {run} seeds, {} failed, {:.1} s",
                failed.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "seeds run: {run} ({}..{}), failures: {}{}, time: {elapsed:.1} s ({:.0} virtual requests/s of wall time)",
        args.seeds.start,
        args.seeds.end,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" {failed:?}")
        },
        requests as f64 / elapsed.max(1e-9),
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Args, String> {
        parse_args(text.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_ranges_single_seeds_and_rejects_nonsense() {
        let args = parse("--seeds 5..9 --log full --rps 200").unwrap();
        assert_eq!(args.seeds, 5..9);
        assert_eq!(args.log, LogLevel::Full);
        assert_eq!(args.profile.requests_per_sec, 200);
        assert_eq!(parse("--seed 42").unwrap().seeds, 42..43);
        assert!(parse("--seeds 9..5").unwrap_err().contains("empty"));
        assert!(parse("--seeds 9").unwrap_err().contains("A..B"));
        assert!(
            parse("--seed x")
                .unwrap_err()
                .contains("not a non-negative integer")
        );
        assert!(parse("--rps 0 --seed 1").is_err());
        assert!(parse("--log").unwrap_err().contains("needs a value"));
        assert!(parse("").unwrap_err().contains("required"));
    }
}
