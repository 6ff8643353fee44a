//! Client-facing listeners: accept loop, HTTP/1.1 and h2c on the same port, keep-alive,
//! `TCP_NODELAY`, graceful shutdown.
//!
//! One task per connection; the handler holds no lock across an await. A connection
//! starts on the HTTP/1.1 fast lane ([`crate::fastlane`]) and moves to hyper-util's
//! `auto` server (HTTP/1.1 and h2c) at the first request the fast lane does not take. Shutdown stops
//! accepting at once, asks every connection to finish (HTTP/1.1: close after the
//! current response; h2: GOAWAY), and waits for in-flight requests up to a bound, after
//! which the remaining connections are dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fastlane;
use crate::proxy::{self, ConnInfo, Shared};

/// Longest time a client may take to send a request head (nginx's
/// `client_header_timeout` default is 60 s; 30 s still serves slow mobile links while
/// freeing slowloris sockets twice as fast).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head buffered per HTTP/1.1 connection. nginx accepts 4 × 8 KiB
/// `large_client_header_buffers`; 64 KiB is hyper's minimum-safe ceiling well above
/// that, and larger heads get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The hyper server settings every hyper-served connection uses.
pub(crate) fn hyper_builder() -> &'static auto::Builder<TokioExecutor> {
    static BUILDER: OnceLock<auto::Builder<TokioExecutor>> = OnceLock::new();
    BUILDER.get_or_init(|| {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES);
        builder.http2().timer(TokioTimer::new());
        builder
    })
}

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
    // Every connection task holds a receiver: the signal to finish, and (when all are
    // dropped) the sign that every connection is done.
    let (drain_tx, drain_rx) = watch::channel(false);

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
                spawn_connection(&shared, stream, remote, local, drain_rx.clone());
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    drop(drain_rx);
    tokio::select! {
        _ = drain_tx.closed() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace period over; dropping remaining connections");
        }
    }
}

fn spawn_connection(
    shared: &Arc<Shared>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    drain: watch::Receiver<bool>,
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
    let shared = shared.clone();
    tokio::spawn(async move {
        if shared.fast_lane {
            // Outside tokio's cooperative budget: the fast lane yields at every request
            // anyway (its upstream read waits for the backend), and counting the budget
            // on each of its reads and writes was about 2 % of a request's instructions.
            // Hyper's lane keeps the budget.
            tokio::task::unconstrained(fastlane::serve(stream, shared, info, drain)).await;
        } else {
            proxy::serve_hyper(stream, Bytes::new(), shared, info, drain).await;
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
