//! Client-facing listeners: accept loop, HTTP/1.1 and h2c on the same port, keep-alive,
//! `TCP_NODELAY`, graceful shutdown; and the TLS listener's loop, the same with a
//! bounded TLS handshake ([`crate::tls_server`]) before hyper.
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

use tokio_rustls::TlsAcceptor;

use crate::fastlane;
use crate::metrics::TlsHandshake;
use crate::proxy::{self, ConnInfo, Shared};
use crate::tls_server::{Opening, check_opening};

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
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_with(listener, shared, None, shutdown, grace).await;
}

/// Serve the TLS `listener` (every connection through hyper after a handshake bounded by
/// the duration next to `acceptor`) until `shutdown` turns true, then drain for at most
/// `grace`, like [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: (TlsAcceptor, Duration),
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_with(listener, shared, Some(acceptor), shutdown, grace).await;
}

async fn serve_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<(TlsAcceptor, Duration)>,
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
                spawn_connection(&shared, stream, remote, local, drain_rx.clone(), tls.as_ref());
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
    tls: Option<&(TlsAcceptor, Duration)>,
) {
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
    let tls = tls.cloned();
    tokio::spawn(async move {
        if let Some((acceptor, handshake_timeout)) = tls {
            serve_tls_connection(
                acceptor,
                handshake_timeout,
                stream,
                remote,
                local,
                shared,
                drain,
            )
            .await;
        } else if shared.fast_lane {
            let info = ConnInfo::new(remote, local, &shared.trusted_proxies);
            // Outside tokio's cooperative budget: the fast lane yields at every request
            // anyway (its upstream read waits for the backend), and counting the budget
            // on each of its reads and writes was about 2 % of a request's instructions.
            // Hyper's lane keeps the budget.
            tokio::task::unconstrained(fastlane::serve(stream, shared, info, drain)).await;
        } else {
            let info = ConnInfo::new(remote, local, &shared.trusted_proxies);
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

/// One connection of the TLS listener: plain HTTP gets nginx's 400, anything else is a
/// TLS handshake bounded by `handshake_timeout` (by default
/// [`TLS_HANDSHAKE_TIMEOUT`](crate::tls_server::TLS_HANDSHAKE_TIMEOUT); abandoned at once
/// when the gateway drains), then the decrypted stream is served: HTTP/1.1 on the fast
/// lane (as a plain connection is), h2 (when ALPN chose it) by hyper.
async fn serve_tls_connection(
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    mut stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
) {
    let metrics = &shared.core.metrics;
    let handshake = async {
        if let Opening::PlainHttp = check_opening(&mut stream).await {
            metrics.on_tls_handshake(TlsHandshake::PlainHttp);
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                // A bad ClientHello, an alert, a reset: nothing to answer.
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                metrics.on_tls_handshake(TlsHandshake::Failed);
                None
            }
        }
    };
    let draining = async {
        // A `Ref` must not live across an await: only whether the wait ended is kept.
        let _ = drain.wait_for(|draining| *draining).await.is_ok();
    };
    let tls = tokio::select! {
        outcome = tokio::time::timeout(handshake_timeout, handshake) => match outcome {
            Ok(Some(tls)) => tls,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                metrics.on_tls_handshake(TlsHandshake::TimedOut);
                return;
            }
        },
        () = draining => return,
    };
    metrics.on_tls_handshake(
        if tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) {
            TlsHandshake::Tls12
        } else {
            TlsHandshake::Tls13
        },
    );
    let info = ConnInfo::new_tls(
        remote,
        local,
        &shared.trusted_proxies,
        tls.get_ref().1.server_name(),
    );
    // HTTP/1.1 over TLS starts on the fast lane like a plain connection (the decrypted
    // bytes are the same; it hands anything it does not take to hyper); h2 goes to hyper.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    if shared.fast_lane && !h2 {
        tokio::task::unconstrained(fastlane::serve(tls, shared, info, drain)).await;
    } else {
        proxy::serve_hyper(tls, Bytes::new(), shared, info, drain).await;
    }
}
