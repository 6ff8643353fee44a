//! `loadgen`: open-loop, paced HTTP/1.1 load against one URL, every response recorded.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8000/ --rate 2000 --duration 30s --connections 64 \
//!         [--csv requests.csv] [--window 1s] [--timeout 5s]
//! ```
//!
//! Prints a JSON summary (requests, errors by kind, p50/p90/p99/p99.9/max latency from
//! the intended send time, region and instance shares, per-window breakdown) to stdout.
//! Runs on one thread so it can be pinned to one core next to the backends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_bench::load::{self, LoadSpec};
use sluice_bench::parse_duration;
use sluice_bench::record::write_csv;
use sluice_bench::summary::Summary;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Open-loop paced HTTP/1.1 load; every response recorded."
)]
struct Cli {
    /// Target, e.g. http://127.0.0.1:8000/products
    #[arg(long)]
    url: String,
    /// Host header (default: the URL's host:port).
    #[arg(long)]
    host: Option<String>,
    /// Requests per second, paced evenly.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// How long requests keep falling due (e.g. 30s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Per-request timeout from the moment it is sent.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Connect timeout.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Width of the per-window breakdown.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    window: Duration,
    /// Also write one CSV line per request here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Leave the per-window breakdown out of the JSON.
    #[arg(long)]
    no_windows: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = match cli.url.parse() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("loadgen: --url '{}': {e}", cli.url);
            return ExitCode::from(2);
        }
    };
    let spec = LoadSpec {
        url,
        host: cli.host,
        rate: cli.rate,
        duration: cli.duration,
        connections: cli.connections,
        timeout: cli.timeout,
        connect_timeout: cli.connect_timeout,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let run = match runtime.block_on(load::run(spec)) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &cli.csv {
        let written = std::fs::File::create(path).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            write_csv(&mut out, &run.records)
        });
        if let Err(e) = written {
            eprintln!("loadgen: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let window_us = u64::try_from(cli.window.as_micros()).unwrap_or(u64::MAX);
    let mut summary = Summary::of(&run, window_us);
    if cli.no_windows {
        summary.windows.clear();
    }
    match serde_json::to_string_pretty(&summary) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
