//! Process lifecycles for each subcommand: start, wait for a signal, stop.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use std::sync::Arc;

use sluice_admin::AdminOptions;
use sluice_proxy::realip::TrustedProxies;
use sluice_proxy::{Gateway, GatewayOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::backend::{Backend, Fault, Identity};
use crate::control::GatewayControl;
use crate::{DemoListenArgs, ListenArgs, LogArgs, demo, logging};

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
    println!("served {} requests", backend.hits());
    Ok(())
}

pub async fn run_file(
    config: PathBuf,
    listen: ListenArgs,
    log: LogArgs,
    dns_resolvers: Vec<SocketAddr>,
    trusted_proxies: TrustedProxies,
) -> anyhow::Result<()> {
    let log_handle = logging::init(log.log_format, log.log_level.as_deref())?;
    let origin = config.display().to_string();
    let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {origin}"))?;
    let loaded = sluice_config::parse(&text, &origin)
        .map_err(|d| anyhow::anyhow!("{origin} is invalid:\n{d}"))?;
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    let listeners = Listeners {
        proxy: listen.proxy_listen,
        proxy_tls: listen.proxy_listen_tls,
        admin: listen.admin_listen,
        gui: listen.gui_listen,
        token: listen.admin_token,
        dns_resolvers,
        trusted_proxies,
        fast_lane: listen.http1_fast_lane,
    };
    serve(
        loaded.config,
        listeners,
        log,
        None,
        Some(config),
        log_handle,
    )
    .await
}

pub async fn run_demo(listen: DemoListenArgs, log: LogArgs) -> anyhow::Result<()> {
    let log_handle = logging::init(log.log_format, log.log_level.as_deref())?;
    let (demo, text) = demo::start().await?;
    let loaded = sluice_config::parse(&text, demo::EXAMPLE_ORIGIN)
        .map_err(|d| anyhow::anyhow!("the demo configuration is invalid:\n{d}"))?;
    let listeners = Listeners {
        proxy: listen.proxy_listen,
        proxy_tls: None,
        admin: listen.admin_listen,
        gui: listen.gui_listen,
        token: None,
        dns_resolvers: Vec::new(),
        trusted_proxies: TrustedProxies::default(),
        fast_lane: true,
    };
    println!(
        "Sluice demo: {} backends for {} upstreams (primary and secondary regions) on loopback.",
        demo.backends.len(),
        loaded.config.upstreams.len()
    );
    for b in &demo.backends {
        println!(
            "  {:<18} {:<10} {:<22} {}",
            b.upstream,
            b.region,
            b.target,
            b.backend.identity().instance
        );
    }
    serve(loaded.config, listeners, log, Some(demo), None, log_handle).await
}

struct Listeners {
    proxy: SocketAddr,
    /// `--proxy-listen-tls`: the TLS proxy listener, when enabled.
    proxy_tls: Option<SocketAddr>,
    admin: SocketAddr,
    gui: SocketAddr,
    token: Option<String>,
    /// Nameservers for hostname targets (`--dns-resolver`); empty = system configuration.
    dns_resolvers: Vec<SocketAddr>,
    /// Kong's realip settings (`--trusted-ips` and friends).
    trusted_proxies: TrustedProxies,
    /// `--http1-fast-lane`.
    fast_lane: bool,
}

/// Starts the gateway, the Admin API and the status page; reloads on SIGHUP (when the
/// configuration came from a file); stops gracefully on SIGINT/SIGTERM.
async fn serve(
    config: sluice_config::Config,
    listen: Listeners,
    log: LogArgs,
    demo: Option<Arc<demo::Demo>>,
    reload_from: Option<PathBuf>,
    log_handle: logging::LogHandle,
) -> anyhow::Result<()> {
    sluice_admin::check_bind(listen.admin, listen.token.as_deref()).map_err(anyhow::Error::msg)?;
    sluice_admin::check_bind(listen.gui, listen.token.as_deref()).map_err(anyhow::Error::msg)?;
    // Bind the operator listeners first: failing there must not leave a proxy running.
    let admin_listener = TcpListener::bind(listen.admin)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", listen.admin))?;
    let gui_listener = TcpListener::bind(listen.gui)
        .await
        .with_context(|| format!("cannot listen on {} (status page)", listen.gui))?;

    let options = GatewayOptions {
        listen: vec![listen.proxy],
        access_log: log.access_log,
        dns_resolvers: listen.dns_resolvers.clone(),
        trusted_proxies: listen.trusted_proxies.clone(),
        fast_lane: listen.fast_lane,
        tls_listen: listen.proxy_tls.into_iter().collect(),
        ..GatewayOptions::default()
    };
    if listen.proxy_tls.is_none() && !config.snis.is_empty() {
        tracing::warn!(
            snis = config.snis.len(),
            "snis are configured but no TLS listener is: add --proxy-listen-tls 0.0.0.0:8443"
        );
    }
    let gateway = Arc::new(Gateway::start(config, options).await?);
    let demo_mode = demo.is_some();
    let control: Arc<dyn sluice_admin::Control> =
        Arc::new(GatewayControl::new(gateway.clone(), demo, log_handle));

    let mut configuration = serde_json::Map::new();
    configuration.insert(
        "proxy_listen".into(),
        gateway
            .local_addrs()
            .iter()
            .map(|a| a.to_string())
            .chain(gateway.tls_local_addrs().iter().map(|a| format!("{a} ssl")))
            .collect::<Vec<_>>()
            .into(),
    );
    configuration.insert("admin_listen".into(), vec![listen.admin.to_string()].into());
    configuration.insert(
        "admin_gui_listen".into(),
        vec![listen.gui.to_string()].into(),
    );
    configuration.insert("database".into(), "off".into());
    let admin_options = AdminOptions {
        token: listen.token.clone(),
        configuration,
        ..AdminOptions::default()
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_addr = admin_listener.local_addr()?;
    let gui_addr = gui_listener.local_addr()?;
    let admin_task = tokio::spawn(sluice_admin::serve(
        admin_listener,
        sluice_admin::router(control.clone(), admin_options.clone()),
        stopped(stop_rx.clone()),
    ));
    let gui_task = tokio::spawn(sluice_admin::serve(
        gui_listener,
        sluice_admin::gui_router(control, admin_options),
        stopped(stop_rx),
    ));

    let proxy_addr = gateway.local_addr();
    tracing::info!(proxy = %proxy_addr, proxy_tls = ?gateway.tls_local_addrs(), admin = %admin_addr, gui = %gui_addr, "sluice is running");
    if demo_mode {
        let p = proxy_addr.port();
        println!();
        println!("Try:");
        println!(
            "  curl -i http://127.0.0.1:{p}/products      # productAPI: see which instance and region answered"
        );
        println!("  curl -i http://127.0.0.1:{p}/orders        # orderAPI");
        println!("  curl -i http://127.0.0.1:{p}/klanten       # klantAPI");
        if let Some(upstream) = gateway.config().upstreams.first() {
            println!(
                "  curl -s http://{admin_addr}/upstreams/{}/health",
                upstream.name
            );
        }
        println!("  curl -s http://{admin_addr}/sluice/decisions   # why traffic moved");
        println!(
            "  open   http://{gui_addr}/                       # live status page; break a region and watch"
        );
        println!("Ctrl-C stops the demo.");
    }

    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => match &reload_from {
                Some(path) => reload(&gateway, path).await,
                None => tracing::warn!("SIGHUP ignored: the demo has no configuration file to reload"),
            },
        }
    }
    tracing::info!("stopping: no new connections; letting in-flight requests finish");
    let _ = stop_tx.send(true);
    gateway.shutdown().await;
    let _ = admin_task.await;
    let _ = gui_task.await;
    Ok(())
}

/// SIGHUP: re-read the file and apply it; on any problem keep the running configuration.
async fn reload(gateway: &Gateway, path: &std::path::Path) {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            gateway.metrics().on_reload(false, "");
            tracing::error!(file = %origin, error = %e, "reload failed: cannot read the file; keeping the running configuration");
            return;
        }
    };
    // Off the runtime thread: parsing a large file must not stall the traffic it serves.
    let parse_origin = origin.clone();
    let parsed =
        tokio::task::spawn_blocking(move || sluice_config::parse(&text, &parse_origin)).await;
    let Ok(parsed) = parsed else {
        gateway.metrics().on_reload(false, "");
        tracing::error!(file = %origin, "reload failed: the parser stopped; keeping the running configuration");
        return;
    };
    match parsed {
        Err(diagnostics) => {
            gateway.metrics().on_reload(false, "");
            tracing::error!(file = %origin, errors = diagnostics.error_count(), "reload failed; keeping the running configuration:\n{diagnostics}");
        }
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!(%warning, "configuration warning");
            }
            if let Err(e) = gateway.apply_config(loaded.config).await {
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
            }
        }
    }
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
