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
    /// Threads that serve traffic (Kong's `nginx_worker_processes`). Default: the CPUs
    /// this process may run on. With one, Sluice runs a single-threaded runtime, which
    /// serves about 20 % more requests per CPU-second than a one-worker multi-threaded
    /// one (BENCHMARKS.md).
    #[arg(long, global = true, value_name = "N", env = "SLUICE_WORKER_THREADS")]
    worker_threads: Option<std::num::NonZeroUsize>,
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
        /// Nameserver for hostname targets and services, `IP` or `IP:PORT` (port 53 by
        /// default); repeat for more, tried in order. Kong's `dns_resolver`. Without it
        /// the system configuration (`/etc/resolv.conf`) is used.
        #[arg(
            long = "dns-resolver",
            value_name = "IP[:PORT]",
            env = "SLUICE_DNS_RESOLVER",
            value_delimiter = ',',
            value_parser = parse_nameserver
        )]
        dns_resolver: Vec<SocketAddr>,
        #[command(flatten)]
        real_ip: RealIpArgs,
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
    /// TLS proxy listener (Kong's `0.0.0.0:8443 ssl`): certificates chosen by SNI from the
    /// configuration's `snis`, a generated self-signed one when none matches. Off unless
    /// given: opening a second public port is the operator's decision (and Sluice used to
    /// sit behind a TLS terminator that may already own 8443).
    #[arg(long, value_name = "ADDR", env = "SLUICE_PROXY_LISTEN_TLS")]
    pub proxy_listen_tls: Option<SocketAddr>,
    /// Admin API listener. A non-loopback address requires --admin-token.
    #[arg(long, default_value = "127.0.0.1:8001", env = "SLUICE_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// Status page listener (Kong Manager's port).
    #[arg(long, default_value = "127.0.0.1:8002", env = "SLUICE_GUI_LISTEN")]
    pub gui_listen: SocketAddr,
    /// Token every admin request must carry (`Authorization: Bearer <token>`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve simple HTTP/1.1 requests on the fast lane (default). `false` sends every
    /// connection through hyper: for comparison, and as a way out.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL",
        env = "SLUICE_HTTP1_FAST_LANE"
    )]
    pub http1_fast_lane: bool,
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

/// Kong's realip settings (kong.conf `trusted_ips`, `real_ip_header`,
/// `real_ip_recursive`): which peers may speak for their clients.
#[derive(Args, Debug, Clone)]
pub struct RealIpArgs {
    /// Address blocks of proxies in front of Sluice whose `X-Forwarded-*` and real-IP
    /// headers are believed (`10.0.0.0/8`, `192.0.2.7`, `::/0`; comma-separated or
    /// repeated). Kong's `trusted_ips`; default: nobody.
    #[arg(
        long = "trusted-ips",
        value_name = "CIDR",
        env = "SLUICE_TRUSTED_IPS",
        value_delimiter = ',',
        value_parser = sluice_proxy::realip::IpBlock::parse
    )]
    pub trusted_ips: Vec<sluice_proxy::realip::IpBlock>,
    /// Header a trusted proxy names the client in (Kong's `real_ip_header`).
    #[arg(
        long = "real-ip-header",
        value_name = "HEADER",
        default_value = "X-Real-IP",
        env = "SLUICE_REAL_IP_HEADER",
        value_parser = parse_real_ip_header
    )]
    pub real_ip_header: http::HeaderName,
    /// With `--real-ip-header X-Forwarded-For`: skip trusted addresses from the right
    /// (Kong's `real_ip_recursive`).
    #[arg(long = "real-ip-recursive", env = "SLUICE_REAL_IP_RECURSIVE")]
    pub real_ip_recursive: bool,
}

impl RealIpArgs {
    pub fn into_trusted_proxies(self) -> sluice_proxy::realip::TrustedProxies {
        sluice_proxy::realip::TrustedProxies::new(
            self.trusted_ips,
            self.real_ip_header,
            self.real_ip_recursive,
        )
    }
}

fn parse_real_ip_header(text: &str) -> Result<http::HeaderName, String> {
    if text.eq_ignore_ascii_case("proxy_protocol") {
        return Err(
            "the PROXY protocol is not supported: name a header (X-Real-IP, X-Forwarded-For)"
                .into(),
        );
    }
    http::HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a header name"))
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
    let workers = cli.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
    });
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Run {
            config,
            listen,
            log,
            dns_resolver,
            real_ip,
        } => runtime_main(workers, move || {
            run::run_file(
                config,
                listen,
                log,
                dns_resolver,
                real_ip.into_trusted_proxies(),
            )
        }),
        Command::Demo { listen, log } => runtime_main(workers, move || run::run_demo(listen, log)),
        Command::Backend {
            listen,
            service,
            instance,
            region,
            fault,
        } => runtime_main(workers, move || {
            run::run_backend(listen, service, instance, region, fault)
        }),
    }
}

/// The standard DNS port, implied when `--dns-resolver` names only an IP (as Kong's
/// `dns_resolver` does).
const DNS_PORT: u16 = 53;

/// `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address.
fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| format!("{text:?} is not a nameserver address (IP or IP:PORT)"))
}

/// Run `f` on a tokio runtime with `workers` threads serving tasks.
///
/// One worker gets the current-thread scheduler: no work-stealing queues, no atomics on
/// every wake-up, and the I/O driver polled by the same thread that runs the tasks
/// (nginx's model of one event loop per worker). Blocking work (config parsing, trust
/// store loading) still goes to the blocking pool, so it never stalls that thread.
fn runtime_main<F, Fut>(workers: std::num::NonZeroUsize, f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut builder = if workers.get() == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers.get());
        b
    };
    let runtime = match builder.enable_all().build() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_addresses_default_to_port_53() {
        assert_eq!(
            parse_nameserver("10.0.0.2"),
            Ok(SocketAddr::from(([10, 0, 0, 2], 53)))
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 5353)))
        );
        assert_eq!(parse_nameserver("[::1]:54").map(|a| a.port()), Ok(54));
        assert_eq!(parse_nameserver("::1").map(|a| a.port()), Ok(53));
        assert!(parse_nameserver("dns.internal").is_err());
    }

    #[test]
    fn run_takes_repeated_and_comma_separated_resolvers() {
        let cli = Cli::try_parse_from([
            "sluice",
            "run",
            "--config",
            "kong.yml",
            "--dns-resolver",
            "127.0.0.1:5353",
            "--dns-resolver",
            "10.0.0.2,10.0.0.3:54",
        ])
        .map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Run { dns_resolver, .. },
            ..
        }) = cli
        else {
            panic!("run did not parse: {cli:?}");
        };
        let expected: Vec<SocketAddr> = ["127.0.0.1:5353", "10.0.0.2:53", "10.0.0.3:54"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        assert_eq!(dns_resolver, expected);
    }

    #[test]
    fn realip_options_parse_and_refuse_what_sluice_cannot_do() {
        let cli = Cli::try_parse_from([
            "sluice",
            "run",
            "--config",
            "kong.yml",
            "--trusted-ips",
            "10.0.0.0/8,192.0.2.7",
            "--real-ip-header",
            "X-Forwarded-For",
            "--real-ip-recursive",
            "--worker-threads",
            "1",
        ])
        .map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Run { real_ip, .. },
            worker_threads,
        }) = cli
        else {
            panic!("run did not parse: {cli:?}");
        };
        assert_eq!(real_ip.trusted_ips.len(), 2);
        assert_eq!(real_ip.real_ip_header, "x-forwarded-for");
        assert!(real_ip.real_ip_recursive);
        assert_eq!(worker_threads.map(|n| n.get()), Some(1));
        let trusted = real_ip.into_trusted_proxies();
        assert!(trusted.is_trusted("10.9.8.7".parse().unwrap()));
        assert!(!trusted.is_trusted("11.0.0.1".parse().unwrap()));

        for (flag, value, says) in [
            ("--trusted-ips", "10.0.0.0/40", "prefix length"),
            ("--real-ip-header", "proxy_protocol", "PROXY protocol"),
            ("--worker-threads", "0", "0"),
        ] {
            let err = Cli::try_parse_from(["sluice", "run", "--config", "k.yml", flag, value])
                .expect_err("must be refused")
                .to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }
}
