//! `drill`: one failover drill against one proxy, or the config files the drills use.
//!
//! ```text
//! drill run --peer sluice --scenario blackout [--release] [--rate 2000] [--connections 64]
//!           [--before 5s] [--fault 15s] [--after 15s] [--work-dir DIR]
//!           [--proxy-cpus 0 --backend-cpus 1] [--baseline-p99 MS]
//! drill config --peer haproxy --primary 127.0.0.1:9001,127.0.0.1:9002 \
//!              --secondary 127.0.0.1:9011 --listen 127.0.0.1:8000 --dir DIR
//! ```
//!
//! `run` prints a JSON report (see `sluice_bench::drill::DrillReport`); exit code 0 even
//! when a goal is missed (the report says which), 2 when the drill could not run.
//! `config` writes the peer's config file into DIR and prints the command line that
//! runs it, one argument per line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_bench::drill::{self, DrillSpec, Scenario};
use sluice_bench::parse_duration;
use sluice_bench::peers::{self, Layout, Peer, Settings};
use sluice_bench::procs;

#[derive(Parser, Debug)]
#[command(name = "drill", about = "Failover drills against real processes.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one drill and print its JSON report.
    Run {
        #[arg(long, value_enum)]
        peer: Peer,
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Use target/release/sluice (default: target/debug/sluice; SLUICE_BIN overrides).
        #[arg(long)]
        release: bool,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        before: Duration,
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        fault: Duration,
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        after: Duration,
        /// Config files and proxy logs (default: a fresh directory under /tmp).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// The same proxy's p99 without a fault (from a `baseline` run), for the
        /// brownout's goal.
        #[arg(long)]
        baseline_p99: Option<f64>,
        /// `taskset -c` list for the proxy (empty: no pinning).
        #[arg(long, default_value = "")]
        proxy_cpus: String,
        /// `taskset -c` list for the backends (empty: no pinning).
        #[arg(long, default_value = "")]
        backend_cpus: String,
    },
    /// Write a peer's config for the given backends and print its command line.
    Config {
        #[arg(long, value_enum)]
        peer: Peer,
        #[arg(long, value_delimiter = ',', required = true)]
        primary: Vec<SocketAddr>,
        #[arg(long, value_delimiter = ',')]
        secondary: Vec<SocketAddr>,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        admin: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        gui: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        release: bool,
        /// NGINX and HAProxy without the Kong headers Sluice sends (peers doing less;
        /// see `Settings::kong_headers`).
        #[arg(long)]
        plain_peers: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            peer,
            scenario,
            release,
            rate,
            connections,
            before,
            fault,
            after,
            work_dir,
            baseline_p99,
            proxy_cpus,
            backend_cpus,
        } => {
            let sluice = match procs::sluice_binary(release) {
                Ok(path) => path,
                // NGINX, HAProxy and Envoy drills still need `sluice backend`.
                Err(e) => return fail(&e),
            };
            let work_dir = work_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "sluice-drill-{}-{}-{}",
                    peer.name(),
                    scenario.name(),
                    std::process::id()
                ))
            });
            let spec = DrillSpec {
                rate,
                connections,
                before,
                fault,
                after,
                proxy_cpus,
                backend_cpus,
                baseline_p99_ms: baseline_p99,
                ..DrillSpec::full(peer, scenario, sluice, work_dir)
            };
            // Two workers: the load and the fault timeline must not wait on each other.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return fail(&e.into()),
            };
            match runtime.block_on(drill::run(spec)) {
                Ok(report) => match serde_json::to_string_pretty(&report) {
                    Ok(json) => {
                        println!("{json}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e.into()),
                },
                Err(e) => fail(&e),
            }
        }
        Command::Config {
            peer,
            primary,
            secondary,
            listen,
            admin,
            gui,
            dir,
            release,
            plain_peers,
        } => {
            let layout = Layout {
                primaries: primary,
                secondaries: secondary,
                listen,
                admin,
                gui,
            };
            let sluice = procs::sluice_binary(release).unwrap_or_else(|_| PathBuf::from("sluice"));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return fail(&e.into());
            }
            if peer == Peer::Nginx {
                for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
                    if let Err(e) = std::fs::create_dir_all(dir.join(sub)) {
                        return fail(&e.into());
                    }
                }
            }
            let path = dir.join(peer.config_file());
            let settings = Settings {
                kong_headers: !plain_peers,
                ..Settings::default()
            };
            let text = peers::config(peer, &layout, &settings, &dir);
            if let Err(e) = std::fs::write(&path, text) {
                return fail(&e.into());
            }
            for arg in peers::command_line(peer, &sluice, &layout, &path, &dir) {
                println!("{arg}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("drill: {error:#}");
    ExitCode::from(2)
}
