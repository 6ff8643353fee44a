//! A small, real HTTP backend with switchable faults.
//!
//! `sluice demo` runs fifteen of these inside the process (three services × five
//! instances in two regions); `sluice backend` runs one as its own process for the
//! failover drills and benchmarks in `bench/`. Faults are real, not simulated: `down`
//! closes the listening socket and every open connection (clients see refused
//! connections and resets), `hang` accepts and never answers, `slow` delays every
//! answer, and `error` answers real traffic with a 5xx while `/health` keeps saying 200
//! (a gray failure that only passive checks and outlier ejection can see).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What a backend currently does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Healthy.
    None,
    /// Listener closed and open connections dropped: connections are refused.
    Down,
    /// Every answer is delayed by this many milliseconds.
    Slow { millis: u64 },
    /// Real traffic gets this status; `/health` still answers 200.
    Error { status: u16 },
    /// Connections are accepted and requests read, but nothing is ever answered.
    Hang,
}

impl Fault {
    /// Parses the CLI/API spelling: `none`, `down`, `hang`, `slow:200`, `error:500`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        let number = |default: u64| -> Result<u64, String> {
            arg.map_or(Ok(default), |a| {
                a.parse::<u64>()
                    .map_err(|_| format!("'{a}' is not a number"))
            })
        };
        match kind {
            "none" | "restore" => Ok(Fault::None),
            "down" => Ok(Fault::Down),
            "hang" => Ok(Fault::Hang),
            // 200 ms is the brownout drill's delay.
            "slow" => Ok(Fault::Slow {
                millis: number(200)?,
            }),
            "error" => {
                let status = number(500)?;
                match u16::try_from(status) {
                    Ok(s) if (500..=599).contains(&s) => Ok(Fault::Error { status: s }),
                    _ => Err(format!("error status must be 500..599, got {status}")),
                }
            }
            other => Err(format!(
                "unknown fault '{other}' (expected none, down, hang, slow[:ms], error[:status])"
            )),
        }
    }
}

/// Identity of a backend instance, echoed in every answer so a client can see who served it.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    pub service: String,
    pub instance: String,
    pub region: String,
}

struct Shared {
    identity: Identity,
    addr: SocketAddr,
    fault: Mutex<Fault>,
    hits: AtomicU64,
    /// Requests other than `/health` probes and stats reads (for drills that count how
    /// much real traffic still reached a faulty instance).
    traffic: AtomicU64,
    /// Bumped to make every open connection and the accept loop stop (fault `down`).
    generation: watch::Sender<u64>,
}

/// A running backend. Cloning gives another handle to the same instance.
#[derive(Clone)]
pub struct Backend {
    shared: Arc<Shared>,
}

#[derive(Serialize)]
struct Answer<'a> {
    service: &'a str,
    instance: &'a str,
    region: &'a str,
    method: &'a str,
    path: &'a str,
}

impl Backend {
    /// Binds `addr` (port 0 for an ephemeral port) and starts serving.
    pub async fn start(addr: SocketAddr, identity: Identity) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel(0);
        let backend = Backend {
            shared: Arc::new(Shared {
                identity,
                addr,
                fault: Mutex::new(Fault::None),
                hits: AtomicU64::new(0),
                traffic: AtomicU64::new(0),
                generation,
            }),
        };
        backend.spawn_accept(listener);
        Ok(backend)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    pub fn fault(&self) -> Fault {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests answered or attempted since start (probes included).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Switches the fault. Going `down` closes the listener and every connection;
    /// leaving `down` binds the same address again.
    pub async fn set_fault(&self, fault: Fault) -> std::io::Result<()> {
        if self.switch(fault) {
            self.rebind().await
        } else {
            Ok(())
        }
    }

    /// Switches the fault at once (what clients see changes immediately). Returns true
    /// when the backend is leaving `down` and its listener must be bound again with
    /// [`Backend::rebind`].
    pub fn switch(&self, fault: Fault) -> bool {
        let previous = {
            let mut guard = self.shared.fault.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *guard, fault)
        };
        if fault == Fault::Down && previous != Fault::Down {
            // Stop the accept loop and drop every open connection.
            self.shared.generation.send_modify(|g| *g += 1);
        }
        previous == Fault::Down && fault != Fault::Down
    }

    /// Binds the backend's address again after `down`. Bounded retries cover the short
    /// window in which the kernel may still hold the port.
    pub async fn rebind(&self) -> std::io::Result<()> {
        let mut last_error = None;
        for _ in 0..50 {
            match TcpListener::bind(self.shared.addr).await {
                Ok(listener) => {
                    self.spawn_accept(listener);
                    return Ok(());
                }
                Err(e) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = Fault::Down;
        Err(last_error.unwrap_or_else(|| std::io::Error::other("could not bind again")))
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let mut stop = shared.generation.subscribe();
        stop.mark_unchanged();
        // The generation this listener serves: any later one means the backend went
        // `down` (it only moves then).
        let serving = *stop.borrow();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let shared = shared.clone();
                        let mut conn_stop = shared.generation.subscribe();
                        conn_stop.mark_unchanged();
                        // Accepted just before a switch to `down` that this new
                        // subscription already counts as seen: drop it, or it would
                        // answer while the backend is down.
                        if *conn_stop.borrow() != serving {
                            continue;
                        }
                        tokio::spawn(async move {
                            let service = service_fn({
                                let shared = shared.clone();
                                move |req| answer(shared.clone(), req)
                            });
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = conn => {}
                                _ = conn_stop.changed() => {}
                            }
                        });
                    }
                }
            }
        });
    }
}

/// Path of the counters read by the drills in `crates/bench`; answered before any fault
/// applies (a drill reads it from a hanging or failing instance too) and not counted.
pub const STATS_PATH: &str = "/_backend/stats";

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == STATS_PATH {
        let body = format!(
            "{{\"hits\":{},\"traffic\":{}}}",
            shared.hits.load(Ordering::Relaxed),
            shared.traffic.load(Ordering::Relaxed)
        );
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    shared.hits.fetch_add(1, Ordering::Relaxed);
    let fault = *shared.fault.lock().unwrap_or_else(|e| e.into_inner());
    let is_probe = req.uri().path() == "/health";
    if !is_probe {
        shared.traffic.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Slow { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
        _ => {}
    }
    let id = &shared.identity;
    let (status, body) = match fault {
        Fault::Error { status } if !is_probe => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!(
                "{{\"error\":\"injected fault\",\"instance\":\"{}\"}}",
                id.instance
            ),
        ),
        _ => {
            let body = Answer {
                service: &id.service,
                instance: &id.instance,
                region: &id.region,
                method: req.method().as_str(),
                path: req.uri().path(),
            };
            (
                StatusCode::OK,
                serde_json::to_string(&body).unwrap_or_default(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&id.instance) {
        headers.insert("x-backend-instance", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&id.region) {
        headers.insert("x-backend-region", v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.0 request over a fresh connection; the status code, or the I/O error.
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))
    }

    fn identity() -> Identity {
        Identity {
            service: "s".into(),
            instance: "s-primary-1".into(),
            region: "primary".into(),
        }
    }

    #[tokio::test]
    async fn faults_are_real_socket_behaviour() {
        let backend = Backend::start(([127, 0, 0, 1], 0).into(), identity())
            .await
            .unwrap();
        let addr = backend.addr();
        assert_eq!(get(addr, "/x").await.unwrap(), 200);

        // Gray failure: traffic gets the 5xx, the health endpoint keeps saying 200.
        backend
            .set_fault(Fault::Error { status: 503 })
            .await
            .unwrap();
        assert_eq!(get(addr, "/x").await.unwrap(), 503);
        assert_eq!(get(addr, "/health").await.unwrap(), 200);

        // Down: the kernel refuses the connection.
        backend.set_fault(Fault::Down).await.unwrap();
        let refused = tokio::net::TcpStream::connect(addr).await;
        assert!(refused.is_err(), "a down backend must refuse connections");

        // Restored on the same port.
        backend.set_fault(Fault::None).await.unwrap();
        assert_eq!(get(addr, "/x").await.unwrap(), 200);
        assert_eq!(backend.hits(), 4, "every answered request is counted");
    }

    #[tokio::test]
    async fn going_down_drops_open_keepalive_connections() {
        let backend = Backend::start(([127, 0, 0, 1], 0).into(), identity())
            .await
            .unwrap();
        let mut stream = tokio::net::TcpStream::connect(backend.addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        backend.set_fault(Fault::Down).await.unwrap();
        // The open connection is closed by the backend: reading sees EOF or a reset.
        let after = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("connection must be closed promptly");
        assert!(
            matches!(after, Ok(0) | Err(_)),
            "expected EOF/reset, got {after:?}"
        );
    }

    /// A connection the kernel completed just before the switch to `down`, still in the
    /// accept queue: whether the accept loop sees the stop or the connection first (a
    /// random `select!` branch), the connection is never answered. One thread, so the
    /// switch happens before the accept loop runs; 20 rounds, so both branches are seen.
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_accepted_as_the_backend_goes_down_is_never_answered() {
        for _ in 0..20 {
            let backend = Backend::start(([127, 0, 0, 1], 0).into(), identity())
                .await
                .unwrap();
            let mut stream = tokio::net::TcpStream::connect(backend.addr())
                .await
                .unwrap();
            // No await between the connect and the switch: the accept loop has not run.
            assert!(!backend.switch(Fault::Down));
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let after = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("the connection must be closed promptly");
            assert!(
                matches!(after, Ok(0) | Err(_)),
                "a down backend answered: {:?}",
                after.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            );
            assert_eq!(backend.hits(), 0);
        }
    }

    #[test]
    fn fault_spellings() {
        assert_eq!(Fault::parse("down"), Ok(Fault::Down));
        assert_eq!(Fault::parse("slow"), Ok(Fault::Slow { millis: 200 }));
        assert_eq!(Fault::parse("slow:50"), Ok(Fault::Slow { millis: 50 }));
        assert_eq!(Fault::parse("error:503"), Ok(Fault::Error { status: 503 }));
        assert!(Fault::parse("error:200").is_err());
        assert!(Fault::parse("explode").is_err());
        assert!(Fault::parse("slow:abc").is_err());
    }
}
