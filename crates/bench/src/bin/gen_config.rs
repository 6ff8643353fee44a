//! `gen-config`: writes the config-scale benchmark's Kong file to stdout.
//!
//! ```text
//! gen-config --routes 10000 --upstreams 1000 --targets 10 > big.yml
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sluice_bench::kong_gen::{Scale, generate};

#[derive(Parser, Debug)]
#[command(
    name = "gen-config",
    about = "Large Kong declarative file for the config-scale benchmark."
)]
struct Cli {
    #[arg(long, default_value_t = 10_000)]
    routes: usize,
    #[arg(long, default_value_t = 1_000)]
    upstreams: usize,
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Add active health checks to every upstream.
    #[arg(long)]
    active_checks: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let text = generate(Scale {
        routes: cli.routes,
        upstreams: cli.upstreams,
        targets_per_upstream: cli.targets,
        active_checks: cli.active_checks,
    });
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-config: {e}");
            ExitCode::from(2)
        }
    }
}
