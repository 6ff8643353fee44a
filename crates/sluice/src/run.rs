//! Process lifecycles for each subcommand: start, wait for a signal, stop.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::backend::{Backend, Fault, Identity};
use crate::{DemoListenArgs, ListenArgs, LogArgs};

/// `sluice backend`: one demo backend until SIGINT/SIGTERM.
pub async fn run_backend(
    listen: SocketAddr,
    service: String,
    instance: String,
    region: String,
    fault: String,
) -> anyhow::Result<()> {
    let fault = Fault::parse(&fault).map_err(anyhow::Error::msg)?;
    let backend = Backend::start(
        listen,
        Identity {
            service,
            instance,
            region,
        },
    )
    .await
    .with_context(|| format!("binding {listen}"))?;
    backend.set_fault(fault).await?;
    // The address goes to stdout so scripts that asked for port 0 can find it.
    println!("listening on {}", backend.addr());
    wait_for_stop().await;
    Ok(())
}

pub async fn run_file(_config: PathBuf, _listen: ListenArgs, _log: LogArgs) -> anyhow::Result<()> {
    anyhow::bail!("wiring in progress")
}

pub async fn run_demo(_listen: DemoListenArgs, _log: LogArgs) -> anyhow::Result<()> {
    anyhow::bail!("wiring in progress")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
