//! Run the data plane alone for load tests: `gateway_bench <kong.yml> <listen addr>
//! [worker threads] [seconds]`. Serves until the time is up (default 60 s), then shuts
//! down gracefully. Used to measure requests/s and latency with an external load
//! generator (wrk) against a real backend; no admin API, no binary.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_proxy::{Gateway, GatewayOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config_path = args
        .next()
        .ok_or("usage: gateway_bench <kong.yml> <listen> [threads] [seconds]")?;
    let listen: SocketAddr = args.next().ok_or("missing listen address")?.parse()?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    let seconds: u64 = args.next().map(|t| t.parse()).transpose()?.unwrap_or(60);
    let text = std::fs::read_to_string(&config_path)?;
    let config = sluice_config::parse(&text, &config_path)
        .map_err(|d| format!("{d}"))?
        .config;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let options = GatewayOptions {
            listen: vec![listen],
            ..GatewayOptions::default()
        };
        let gateway = Gateway::start(config, options).await?;
        eprintln!("gateway_bench listening on {}", gateway.local_addr());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        gateway.shutdown().await;
        let counters = gateway.server_counters();
        eprintln!("served {} requests", counters.total_requests);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
