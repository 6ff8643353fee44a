//! Upstream HTTP/1.1 connections: connect (and, for `https` services, the TLS handshake)
//! with a deadline, keep-alive pooling per [`PoolKey`], and an exact answer to "did any
//! byte of this request leave?".
//!
//! Why not hyper-util's legacy `Client`: the retry rules need to know which phase an
//! attempt failed in. Kong retries a POST only when the connect failed, and its timeouts
//! are per phase (connect, then write, then read). The legacy client hides the connect
//! behind its pool (a connect error and a stale pooled connection look alike to the
//! caller) and takes one connect timeout per client. Owning the connection step with
//! [`crate::upstream`] keeps each phase visible, and the pool itself is small: a map from
//! address to idle connections, touched only for a push or a pop under a
//! `std::sync::Mutex` that is never held across an await. HTTP/2 upstreams fit the same
//! shape later (another connection variant).
//!
//! TLS: a connection is pooled under its address *and* its TLS identity (the settings'
//! [`UpstreamTls::id`] and the server name presented), as Kong's pool key is
//! `ip|port|sni|client_certificate`, so a plain and a TLS connection to one address, or
//! two TLS connections with different names or certificates, never stand in for each
//! other. The handshake is part of the connect step: it runs inside `connect_timeout`
//! (nginx arms `proxy_connect_timeout` for the handshake too), and its failure is a
//! connect failure, sent nothing, and is safe to retry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::fasthash::FastHash;
use crate::tls::UpstreamTls;
use crate::upstream::{Stream, UpstreamConn};

/// What pooled connections are interchangeable under: the address, and for TLS the
/// settings and the server name the handshake presented.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls: Option<(u64, ServerName<'static>)>,
}

/// Where one attempt connects: an address, plain or with TLS.
#[derive(Clone, Debug)]
pub struct Endpoint {
    key: PoolKey,
    tls: Option<Arc<UpstreamTls>>,
}

impl Endpoint {
    /// Plain HTTP to `addr`.
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint {
            key: PoolKey { addr, tls: None },
            tls: None,
        }
    }

    /// TLS to `addr` with `tls`'s settings, presenting `server_name`.
    pub fn tls(
        addr: SocketAddr,
        tls: Arc<UpstreamTls>,
        server_name: ServerName<'static>,
    ) -> Endpoint {
        Endpoint {
            key: PoolKey {
                addr,
                tls: Some((tls.id(), server_name)),
            },
            tls: Some(tls),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }
}

/// Idle connections kept per pool key (address, and TLS identity for TLS). Kong's default keep-alive pool is 512 per worker
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
    /// The connect (or the TLS handshake after it) did not finish within the service's
    /// `connect_timeout`.
    TimedOut,
    /// The TLS handshake failed: certificate refused (by either side), no common
    /// protocol, or the peer closed. Kong's balancer reports it as a tcp failure.
    Handshake,
}

/// A connection ready for one exchange.
pub struct Conn {
    /// Boxed, in the pool and on loan: a lent connection travels inside the response
    /// through several layers of the request's future, and a pointer moves where 100
    /// bytes were copied. Allocated once per connection, not per request.
    pub conn: Box<UpstreamConn>,
    pub key: PoolKey,
    /// True when the connection came from the pool (it may have been closed by the peer
    /// just now; a failure before anything was written is then retried on a fresh one).
    pub reused: bool,
}

struct Idle {
    conn: Box<UpstreamConn>,
    since: Instant,
}

impl Idle {
    /// Still usable at `now`: not closed by the peer and not idle too long.
    fn usable(&mut self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT && !self.conn.idle_is_closed()
    }
}

/// Pool keys above which a check-in first sweeps out stale connections and empty keys.
/// Keys are addresses times TLS identities; with `preserve_host` on an https service the
/// server name is the client's `Host`, so clients could otherwise grow the map without
/// bound. 4096 is far above a real address × identity count (hundreds), and a sweep of
/// that many short lists takes well under a millisecond.
const SWEEP_KEYS: usize = 4096;

/// The pool's map: looked up twice per request (check-out, check-in) with keys the
/// configuration and DNS chose, so the fast hasher (TLS keys with a client-chosen server
/// name are bounded by [`SWEEP_KEYS`]).
type KeyMap<V> = HashMap<PoolKey, V, FastHash>;

/// Keep-alive pool of HTTP/1.1 connections, keyed by address and TLS identity.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<KeyMap<Vec<Idle>>>,
}

/// Drops the stale connections of every key, and the keys left empty.
fn sweep(idle: &mut KeyMap<Vec<Idle>>, now: Instant) {
    idle.retain(|_, list| {
        list.retain_mut(|e| e.usable(now));
        !list.is_empty()
    });
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

    /// A live idle connection for `key`, if the pool has one, judged at `now`.
    fn checkout(&self, key: &PoolKey, now: Instant) -> Option<Box<UpstreamConn>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.get_mut(key)?;
        // Newest first: the most recently used connection is the least likely to have
        // been closed by the peer's idle timer.
        let mut found = None;
        while let Some(mut entry) = list.pop() {
            if entry.usable(now) {
                found = Some(entry.conn);
                break;
            }
        }
        // An emptied list stays (with its capacity): the next check-in to this key
        // reuses it instead of allocating a new one on every request. Empty keys are
        // swept with stale ones once the map reaches `SWEEP_KEYS`.
        found
    }

    /// Get a connection: a pooled one, else a new connect bounded by `connect_timeout`.
    /// `now` is the caller's clock reading from just before (idle ages are measured
    /// against it): the attempt has read the clock already, and a second reading was a
    /// sizeable part of a check-out.
    pub async fn get(
        &self,
        endpoint: &Endpoint,
        connect_timeout: Duration,
        now: Instant,
    ) -> Result<Conn, ConnectError> {
        if let Some(conn) = self.checkout(&endpoint.key, now) {
            return Ok(Conn {
                conn,
                key: endpoint.key.clone(),
                reused: true,
            });
        }
        // Boxed: a connect (and a TLS handshake) is over a kilobyte of future state
        // that a request served from the pool would otherwise carry and copy through
        // every layer above it; the allocation is paid only when connecting.
        Box::pin(self.connect(endpoint, connect_timeout)).await
    }

    /// Open a fresh connection (never from the pool): TCP, then for TLS endpoints the
    /// handshake, all within `connect_timeout`.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        connect_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let addr = endpoint.key.addr;
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
            match (&endpoint.tls, &endpoint.key.tls) {
                (Some(tls), Some((_, server_name))) => {
                    // A configuration that cannot be built (the trust store could not
                    // be read) fails like a handshake: nothing was sent.
                    let connector = tls.connector(server_name.clone()).await.map_err(|error| {
                        tracing::warn!(%error, %addr, "TLS client configuration");
                        ConnectError::Handshake
                    })?;
                    // Logged like nginx's "upstream SSL certificate verify error": the
                    // 502 alone does not say which certificate or name was refused.
                    let stream = connector.connect(stream).await.map_err(|error| {
                        tracing::warn!(%error, %addr, "TLS handshake with upstream failed");
                        ConnectError::Handshake
                    })?;
                    Ok(Stream::Tls(Box::new(stream)))
                }
                _ => Ok(Stream::Plain(stream)),
            }
        };
        match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(stream)) => Ok(Conn {
                conn: Box::new(UpstreamConn::new(stream)),
                key: endpoint.key.clone(),
                reused: false,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::TimedOut),
        }
    }

    /// Return a connection whose previous exchange completed cleanly, idle from `now`
    /// (the caller's clock reading: it may be a few microseconds old, which only
    /// shortens the connection's idle life by as much).
    pub(crate) fn checkin(&self, key: PoolKey, mut conn: Box<UpstreamConn>, now: Instant) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() >= SWEEP_KEYS && !idle.contains_key(&key) {
            sweep(&mut idle, now);
            if idle.len() >= SWEEP_KEYS {
                // Still full of live connections: this one is closed rather than kept.
                return;
            }
        }
        let list = idle.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_ADDRESS {
            list.retain_mut(|e| e.usable(now));
        }
        if list.len() < MAX_IDLE_PER_ADDRESS {
            list.push(Idle { conn, since: now });
        }
    }

    /// Warm standby: make sure `endpoint` has an idle connection that will still be fresh
    /// at the next call (`horizon` from now), opening one if not (with its TLS handshake,
    /// for a TLS endpoint). Returns true when it opened one. A failed connect is not an
    /// error here: probes and passive checks judge health.
    pub async fn keep_warm(
        &self,
        endpoint: &Endpoint,
        horizon: Duration,
        connect_timeout: Duration,
    ) -> bool {
        if self.has_idle_fresh_until(&endpoint.key, horizon) {
            return false;
        }
        match self.connect(endpoint, connect_timeout).await {
            Ok(conn) => {
                self.checkin(conn.key, conn.conn, Instant::now());
                true
            }
            Err(_) => false,
        }
    }

    /// Whether an idle connection for `key` will still be within `IDLE_TIMEOUT` after
    /// `horizon`.
    fn has_idle_fresh_until(&self, key: &PoolKey, horizon: Duration) -> bool {
        let now = Instant::now();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.get_mut(key).is_some_and(|list| {
            list.iter_mut().any(|e| {
                now.saturating_duration_since(e.since) + horizon < IDLE_TIMEOUT
                    && !e.conn.idle_is_closed()
            })
        })
    }

    /// Idle connections currently pooled to `addr`, plain or TLS (for tests and status).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.iter()
            .filter(|(key, _)| key.addr == addr)
            .map(|(_, list)| list.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a loopback listener that accepts and stays silent: enough to be
    /// pooled.
    async fn sender() -> (Box<UpstreamConn>, tokio::net::TcpListener, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (theirs, _) = listener.accept().await.expect("accept");
        (
            Box::new(UpstreamConn::new(Stream::Plain(ours))),
            listener,
            theirs,
        )
    }

    #[tokio::test]
    async fn plain_and_tls_connections_to_one_address_never_stand_in_for_each_other() {
        let pool = Pool::default();
        let addr: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let plain = PoolKey { addr, tls: None };
        let name = |n: &str| ServerName::try_from(n.to_owned()).expect("name");
        let tls_a = PoolKey {
            addr,
            tls: Some((1, name("a.test"))),
        };
        let tls_b = PoolKey {
            addr,
            tls: Some((1, name("b.test"))),
        };
        let other_settings = PoolKey {
            addr,
            tls: Some((2, name("a.test"))),
        };
        let (s1, _t1, _p1) = sender().await;
        let (s2, _t2, _p2) = sender().await;
        pool.checkin(plain.clone(), s1, Instant::now());
        pool.checkin(tls_a.clone(), s2, Instant::now());
        assert_eq!(pool.idle_count(addr), 2);
        assert!(
            pool.checkout(&tls_b, Instant::now()).is_none(),
            "another server name"
        );
        assert!(
            pool.checkout(&other_settings, Instant::now()).is_none(),
            "other TLS settings"
        );
        assert!(pool.checkout(&tls_a, Instant::now()).is_some());
        assert!(pool.checkout(&tls_a, Instant::now()).is_none(), "taken");
        assert!(pool.checkout(&plain, Instant::now()).is_some());
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test]
    async fn keys_beyond_the_sweep_mark_are_swept_so_clients_cannot_grow_the_pool() {
        let pool = Pool::default();
        let addr: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        // Many server names (as preserve_host on an https service lets clients choose),
        // each checked in and taken again: their emptied lists linger until the map
        // reaches the mark, then a check-in of a new key sweeps them.
        for i in 0..SWEEP_KEYS + 10 {
            let key = PoolKey {
                addr,
                tls: Some((1, ServerName::try_from(format!("h{i}.test")).expect("name"))),
            };
            let (s, _t, _p) = sender().await;
            pool.checkin(key.clone(), s, Instant::now());
            assert!(pool.checkout(&key, Instant::now()).is_some());
        }
        let keys = pool.idle.lock().expect("pool lock").len();
        assert!(keys <= SWEEP_KEYS, "{keys} keys: the map is bounded");
    }
}
