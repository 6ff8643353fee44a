//! Client-facing listeners: accept loop, HTTP/1.1 and h2c on the same port (hyper-util
//! `auto`), keep-alive, `TCP_NODELAY`, graceful shutdown.
//!
//! One task per connection; the handler holds no lock across an await. Shutdown stops
//! accepting at once, asks every connection to finish (HTTP/1.1: close after the
//! current response; h2: GOAWAY), and waits for in-flight requests up to a bound, after
//! which the remaining connections are dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{self, ConnInfo, Shared};

/// Longest time a client may take to send a request head (nginx's
/// `client_header_timeout` default is 60 s; 30 s still serves slow mobile links while
/// freeing slowloris sockets twice as fast).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head buffered per HTTP/1.1 connection. nginx accepts 4 × 8 KiB
/// `large_client_header_buffers`; 64 KiB is hyper's minimum-safe ceiling well above
/// that, and larger heads get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serve `listener` until `shutdown` turns true, then drain for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                spawn_connection(&builder, &graceful, &shared, stream, remote, local);
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace period over; dropping remaining connections");
        }
    }
}

fn spawn_connection(
    builder: &Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    shared: &Arc<Shared>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let info = ConnInfo::new(remote, local, &shared.trusted_proxies);
    let stats = shared.clone();
    stats
        .stats
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    stats
        .stats
        .connections_active
        .fetch_add(1, Ordering::Relaxed);
    shared.core.metrics.on_connection_opened();
    let handler_shared = shared.clone();
    let service =
        service_fn(move |request| proxy::handle(handler_shared.clone(), info.clone(), request));
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let watched = graceful.watch(connection);
    tokio::spawn(async move {
        // Client-side protocol errors (garbage, resets) end the connection; hyper has
        // already answered what it could (400/431). Nothing to do but count it.
        if let Err(e) = watched.await {
            tracing::debug!(%remote, error = %e, "client connection ended with an error");
        }
        stats
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        stats
            .stats
            .connections_handled
            .fetch_add(1, Ordering::Relaxed);
        stats.core.metrics.on_connection_closed();
    });
}
