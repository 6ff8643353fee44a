//! The `sluice` binary: command-line parsing and wiring only.
//!
//! - `sluice run --config kong.yml`: the gateway (proxy, admin API, status page).
//! - `sluice check kong.yml`: validate a file; every problem with file:line:column.
//! - `sluice demo`: the gateway in front of fifteen in-process demo backends.
//! - `sluice backend`: one demo backend as its own process (drills, benchmarks).

mod backend;
mod control;
mod demo;
mod logging;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "An API gateway that keeps traffic flowing when parts of the world break."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway on a Kong declarative configuration file.
    Run {
        /// Kong declarative configuration (`_format_version: "3.0"`).
        #[arg(short, long, value_name = "FILE", env = "SLUICE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Validate a configuration file. Exit code 0: valid, 1: invalid, 2: unreadable.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Run the gateway in front of built-in demo backends (no outside services needed).
    Demo {
        #[command(flatten)]
        listen: DemoListenArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Run one demo backend (for drills and benchmarks).
    Backend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Service name echoed in answers.
        #[arg(long, default_value = "backend")]
        service: String,
        /// Instance name echoed in answers and in `x-backend-instance`.
        #[arg(long, default_value = "backend-1")]
        instance: String,
        /// Region echoed in answers and in `x-backend-region`.
        #[arg(long, default_value = "primary")]
        region: String,
        /// Initial fault: none, down, hang, slow[:ms], error[:status].
        #[arg(long, default_value = "none")]
        fault: String,
    },
}

/// Listener addresses; defaults are Kong's (proxy on every interface, admin on loopback).
#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Proxy listener.
    #[arg(long, default_value = "0.0.0.0:8000", env = "SLUICE_PROXY_LISTEN")]
    pub proxy_listen: SocketAddr,
    /// Admin API listener. A non-loopback address requires --admin-token.
    #[arg(long, default_value = "127.0.0.1:8001", env = "SLUICE_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// Status page listener (Kong Manager's port).
    #[arg(long, default_value = "127.0.0.1:8002", env = "SLUICE_GUI_LISTEN")]
    pub gui_listen: SocketAddr,
    /// Token every admin request must carry (`Authorization: Bearer <token>`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The demo binds everything to loopback: it is for trying Sluice on one machine.
#[derive(Args, Debug, Clone)]
pub struct DemoListenArgs {
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub proxy_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub admin_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8002")]
    pub gui_listen: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "SLUICE_LOG_FORMAT")]
    pub log_format: logging::LogFormat,
    /// Log filter (`info`, `debug`, `info,sluice_proxy=debug`); overrides SLUICE_LOG.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Write one JSON access-log line per request to standard output.
    #[arg(long)]
    pub access_log: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Run {
            config,
            listen,
            log,
        } => runtime_main(move || run::run_file(config, listen, log)),
        Command::Demo { listen, log } => runtime_main(move || run::run_demo(listen, log)),
        Command::Backend {
            listen,
            service,
            instance,
            region,
            fault,
        } => runtime_main(move || run::run_backend(listen, service, instance, region, fault)),
    }
}

fn runtime_main<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sluice check`: 0 valid (warnings allowed), 1 invalid, 2 unreadable.
fn check(path: &std::path::Path) -> ExitCode {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{origin}: error: cannot read the file: {e}");
            return ExitCode::from(2);
        }
    };
    match sluice_config::parse(&text, &origin) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            let c = &loaded.config;
            let targets: usize = c.upstreams.iter().map(|u| u.targets.len()).sum();
            println!(
                "{origin}: ok: {} services, {} routes, {} upstreams, {} targets, {} plugins, {} warning(s)",
                c.services.len(),
                c.routes.len(),
                c.upstreams.len(),
                targets,
                c.plugins.len(),
                loaded.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            ExitCode::from(1)
        }
    }
}
