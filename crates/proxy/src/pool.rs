//! Upstream HTTP/1.1 connections: connect with a deadline, keep-alive pooling per
//! address, and an exact answer to "did any byte of this request leave?".
//!
//! Why not hyper-util's legacy `Client`: the retry rules need to know which phase an
//! attempt failed in. Kong retries a POST only when the connect failed, and its timeouts
//! are per phase (connect, then write, then read). The legacy client hides the connect
//! behind its pool (a connect error and a stale pooled connection look alike to the
//! caller) and takes one connect timeout per client. Owning the connection step with
//! `hyper::client::conn::http1` keeps each phase visible, and the pool itself is small:
//! a map from address to idle senders, touched only for a push or a pop under a
//! `std::sync::Mutex` that is never held across an await. HTTP/2 or TLS upstreams fit
//! the same shape later (another `Sender` variant and a TLS step in `connect`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::UpstreamBody;

/// Idle connections kept per address. Kong's default keep-alive pool is 512 per worker
/// across all upstreams; per address, 128 covers a 2-core gateway running at a few
/// thousand concurrent requests per backend while bounding idle sockets.
pub const MAX_IDLE_PER_ADDRESS: usize = 128;

/// How long an idle connection is kept. Kong's (nginx) upstream keepalive idle timeout
/// is 60 s; staying at or below typical backend keep-alive timeouts (Node 5 s, nginx 75
/// s) would be safer, so use a bit less than the shortest common one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a connection could not be obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The peer refused the connection (RST to the SYN).
    Refused,
    /// Unreachable, reset during the handshake, or any other connect failure.
    Failed,
    /// The connect did not finish within the service's `connect_timeout`.
    TimedOut,
}

/// A ready-to-use sender for one request.
pub struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    addr: SocketAddr,
    /// True when the connection came from the pool (it may have been closed by the peer
    /// just now; a failure before anything was written is then retried on a fresh one).
    pub reused: bool,
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// Keep-alive pool of HTTP/1.1 connections, keyed by address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new() -> Arc<Pool> {
        Arc::new(Pool::default())
    }

    /// A live idle connection to `addr`, if the pool has one.
    fn checkout(&self, addr: SocketAddr) -> Option<http1::SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.get_mut(&addr)?;
        // Newest first: the most recently used connection is the least likely to have
        // been closed by the peer's idle timer.
        while let Some(entry) = list.pop() {
            // Not `is_ready()`: a connection checked in the instant its response ended
            // may not have flipped to ready yet; `Conn::send` awaits readiness anyway.
            if !entry.sender.is_closed()
                && now.saturating_duration_since(entry.since) < IDLE_TIMEOUT
            {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Get a connection: a pooled one, else a new connect bounded by `connect_timeout`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        if let Some(sender) = self.checkout(addr) {
            return Ok(Conn {
                sender,
                addr,
                reused: true,
            });
        }
        self.connect(addr, connect_timeout).await
    }

    /// Open a fresh connection (never from the pool).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let connect = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Failed
                }
            })?;
            // Small request/response exchanges must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let (sender, connection) = http1::Builder::new()
                .handshake::<_, UpstreamBody>(TokioIo::new(stream))
                .await
                .map_err(|_| ConnectError::Failed)?;
            tokio::spawn(async move {
                // The connection task ends when the peer closes or the sender is
                // dropped; its error is reported to the request that was using it.
                // `with_upgrades`: after a `101` the socket is handed to the tunnel
                // (WebSocket) instead of being closed.
                let _ = connection.with_upgrades().await;
            });
            Ok::<_, ConnectError>(sender)
        };
        match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(sender)) => Ok(Conn {
                sender,
                addr,
                reused: false,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::TimedOut),
        }
    }

    /// Return a connection whose previous exchange completed cleanly.
    fn checkin(&self, addr: SocketAddr, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|e| {
            !e.sender.is_closed() && now.saturating_duration_since(e.since) < IDLE_TIMEOUT
        });
        if list.len() < MAX_IDLE_PER_ADDRESS {
            list.push(Idle { sender, since: now });
        }
    }

    /// Warm standby: make sure `addr` has an idle connection that will still be fresh at
    /// the next call (`horizon` from now), opening one if not. Returns true when it opened
    /// one. A failed connect is not an error here: probes and passive checks judge health.
    pub async fn keep_warm(
        &self,
        addr: SocketAddr,
        horizon: Duration,
        connect_timeout: Duration,
    ) -> bool {
        if self.has_idle_fresh_until(addr, horizon) {
            return false;
        }
        match self.connect(addr, connect_timeout).await {
            Ok(conn) => {
                self.checkin(addr, conn.sender);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether an idle connection to `addr` will still be within `IDLE_TIMEOUT` after
    /// `horizon`.
    fn has_idle_fresh_until(&self, addr: SocketAddr, horizon: Duration) -> bool {
        let now = Instant::now();
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.get(&addr).is_some_and(|list| {
            list.iter().any(|e| {
                !e.sender.is_closed()
                    && now.saturating_duration_since(e.since) + horizon < IDLE_TIMEOUT
            })
        })
    }

    /// Idle connections currently pooled for `addr` (for tests and status).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.get(&addr).map_or(0, Vec::len)
    }
}

/// Outcome of sending one request on a connection.
pub enum SendError {
    /// Nothing was written: the connection was already closed. The request comes back
    /// so it can go out on a fresh connection.
    NotSent(Box<Request<UpstreamBody>>),
    /// The exchange failed after (part of) the request was written.
    Failed(hyper::Error),
}

/// A connection that is waiting for its exchange to finish so it can go back to the pool.
pub struct Lease {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: Option<http1::SendRequest<UpstreamBody>>,
}

impl Lease {
    /// The response body was read to its end: the connection can carry another request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(self.addr, sender);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("addr", &self.addr).finish()
    }
}

impl Conn {
    /// Send the request; resolves at the response header.
    pub async fn send(
        mut self,
        pool: &Arc<Pool>,
        request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        if self.sender.ready().await.is_err() {
            return Err(SendError::NotSent(Box::new(request)));
        }
        match self.sender.try_send_request(request).await {
            Ok(response) => Ok((
                response,
                Lease {
                    pool: pool.clone(),
                    addr: self.addr,
                    sender: Some(self.sender),
                },
            )),
            Err(mut err) => match err.take_message() {
                Some(request) => Err(SendError::NotSent(Box::new(request))),
                None => Err(SendError::Failed(err.into_error())),
            },
        }
    }
}
