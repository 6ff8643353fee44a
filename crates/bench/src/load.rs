//! Open-loop, paced HTTP/1.1 load over a fixed set of keep-alive connections.
//!
//! The schedule is fixed before the run: request `n` is due at `n / rate` seconds. The
//! load does not slow down when the proxy does (open loop), and every latency is measured
//! from the *due* time, not from when a connection became free. A proxy that stalls for a
//! second therefore shows a second of latency on every request that was due meanwhile,
//! instead of one slow request and a silent gap (coordinated omission, as wrk2 fixes it
//! for wrk).
//!
//! How requests reach connections: a pacing thread releases ticket `n` into a shared
//! queue at its due time, and whichever connection is idle takes it and sends at once;
//! a busy connection takes no ticket, so overdue tickets go to whichever connection
//! frees up first, like a client pool with a shared queue. Why a thread: tokio's timer
//! ticks in whole milliseconds, which put up to a millisecond of the generator's own lag
//! (2 ms at p99) into every latency it measured; a sleeping thread wakes within the
//! kernel's timer slack (50 µs), so the latencies are the proxy's, not the pacer's.
//!
//! Bounded in time always: no ticket is due after `duration`, every request has a
//! timeout, and the run as a whole is cut off at `duration + timeout + connect_timeout
//! + GRACE`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::record::{ErrorKind, Outcome, Record};

/// Extra time the whole run may take beyond its last possible request, for tasks to
/// notice the end and hand their records back. One second is far more than that takes.
const GRACE: Duration = Duration::from_secs(1);

/// What to send, how fast, and for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// `http://host:port/path?query`; only plain HTTP.
    pub url: Uri,
    /// Overrides the `Host` header (default: the URL's authority).
    pub host: Option<String>,
    /// Requests per second, paced evenly.
    pub rate: f64,
    /// How long requests keep falling due.
    pub duration: Duration,
    /// Keep-alive connections (each carries one request at a time).
    pub connections: usize,
    /// Per-request limit from the moment it is sent.
    pub timeout: Duration,
    /// Limit on opening one connection.
    pub connect_timeout: Duration,
}

/// Everything one run produced.
#[derive(Debug)]
pub struct LoadRun {
    /// The origin of every `intended_us` in `records`.
    pub started: Instant,
    /// The same origin as wall-clock milliseconds since the Unix epoch, for lining the
    /// run up with logs of other processes.
    pub started_unix_ms: u64,
    /// Requests that fell due, sorted by `seq`.
    pub records: Vec<Record>,
    /// Tickets that fell due but were still unsent or unanswered when the hard cut-off
    /// came (0 unless the generator itself fell far behind).
    pub abandoned: u64,
    pub spec: LoadSpec,
}

/// Checks a spec and fills in what the URL implies.
fn validate(spec: &LoadSpec) -> anyhow::Result<(String, String)> {
    if spec.url.scheme_str() != Some("http") {
        anyhow::bail!(
            "only http:// URLs are supported, got '{}'",
            spec.url.scheme_str().unwrap_or("")
        );
    }
    let authority = spec
        .url
        .authority()
        .ok_or_else(|| anyhow::anyhow!("URL '{}' has no host:port", spec.url))?;
    let port = authority.port_u16().unwrap_or(80);
    let address = format!("{}:{port}", authority.host());
    if !(spec.rate.is_finite() && spec.rate > 0.0) {
        anyhow::bail!("rate must be a positive number of requests per second");
    }
    if spec.connections == 0 {
        anyhow::bail!("connections must be at least 1");
    }
    if spec.duration.is_zero() {
        anyhow::bail!("duration must be positive");
    }
    let path = spec
        .url
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    Ok((address, path))
}

/// Runs the load and returns every record. Errors only on a bad spec.
pub async fn run(spec: LoadSpec) -> anyhow::Result<LoadRun> {
    let (address, path) = validate(&spec)?;
    let host = match &spec.host {
        Some(host) => HeaderValue::from_str(host)
            .map_err(|_| anyhow::anyhow!("host '{host}' is not a valid header value"))?,
        None => HeaderValue::from_str(&address)
            .map_err(|_| anyhow::anyhow!("address '{address}' is not a valid header value"))?,
    };
    let uri: Uri = path
        .parse()
        .map_err(|_| anyhow::anyhow!("path '{path}' is not a valid request target"))?;
    // Seconds between due times, as a float so that rates like 3 per second pace exactly.
    let interval_s = 1.0 / spec.rate;
    let total_tickets = (spec.duration.as_secs_f64() * spec.rate).floor() as u64;

    let started = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (release, tickets) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        address,
        uri,
        host,
        tickets: tokio::sync::Mutex::new(tickets),
        taken: AtomicU64::new(0),
        total_tickets,
        interval_s,
        started,
        timeout: spec.timeout,
        connect_timeout: spec.connect_timeout,
    });
    let pacer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || pace(&shared, &release))
            .map_err(|e| anyhow::anyhow!("cannot start the pacing thread: {e}"))?
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.connections {
        let shared = shared.clone();
        tasks.spawn(async move { connection_task(shared).await });
    }
    let hard_stop = started + spec.duration + spec.timeout + spec.connect_timeout + GRACE;
    let mut records = Vec::with_capacity(total_tickets.min(10_000_000) as usize);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(mut batch))) => records.append(&mut batch),
            // A panicked task loses only its own records; the count shows up below.
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    // Done once the last ticket is released (or at once when the tasks are gone).
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    records.sort_by_key(|r| r.seq);
    let issued = shared.taken.load(Ordering::Relaxed).min(total_tickets);
    let abandoned = issued.saturating_sub(records.len() as u64);
    Ok(LoadRun {
        started,
        started_unix_ms,
        records,
        abandoned,
        spec,
    })
}

struct Shared {
    address: String,
    uri: Uri,
    host: HeaderValue,
    /// Tickets released at their due time (see [`pace`]), in order.
    tickets: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<u64>>,
    /// Tickets connections took.
    taken: AtomicU64,
    total_tickets: u64,
    interval_s: f64,
    started: Instant,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Shared {
    fn due(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq as f64 * self.interval_s)
    }
}

/// Release every ticket into `release` at its due time, sleeping in between. Stops early
/// when nobody takes tickets any more.
fn pace(shared: &Shared, release: &tokio::sync::mpsc::UnboundedSender<u64>) {
    let started = shared.started.into_std();
    for seq in 0..shared.total_tickets {
        let due = started + shared.due(seq);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if release.send(seq).is_err() {
            return;
        }
    }
}

/// One keep-alive connection: take a released ticket, send, record; reconnect after any
/// error.
async fn connection_task(shared: Arc<Shared>) -> Vec<Record> {
    let mut records = Vec::new();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut interned = Interner::default();
    loop {
        // The lock queues idle connections fairly; the one holding it takes the next
        // ticket when it is released.
        let Some(seq) = shared.tickets.lock().await.recv().await else {
            return records;
        };
        shared.taken.fetch_add(1, Ordering::Relaxed);
        let due_offset = shared.due(seq);
        let due = shared.started + due_offset;
        let sent = Instant::now();
        let (outcome, region, instance) = match send_one(&shared, &mut sender, &mut interned).await
        {
            Ok((status, region, instance)) => (Outcome::Status(status), region, instance),
            Err(kind) => {
                // The connection may be half-broken; never reuse it after an error.
                sender = None;
                (Outcome::Error(kind), None, None)
            }
        };
        let finished = Instant::now();
        records.push(Record {
            seq,
            intended_us: micros(due_offset),
            send_lag_us: micros(sent.saturating_duration_since(due)),
            latency_us: micros(finished.saturating_duration_since(due)),
            outcome,
            region,
            instance,
        });
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

type Answer = (u16, Option<Arc<str>>, Option<Arc<str>>);

/// Sends one request on the current connection (opening one when needed).
async fn send_one(
    shared: &Shared,
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    interned: &mut Interner,
) -> Result<Answer, ErrorKind> {
    // A pooled connection the server has since closed is not a failed request: any
    // client pool would notice and open a new one before sending.
    if sender.as_ref().is_some_and(|s| s.is_closed()) {
        *sender = None;
    }
    let mut active = match sender.take() {
        Some(active) => active,
        None => connect(shared).await?,
    };
    let exchange = async {
        active.ready().await.map_err(|e| classify(&e))?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(shared.uri.clone())
            .header(http::header::HOST, shared.host.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|_| ErrorKind::Other)?;
        let response = active
            .send_request(request)
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let region = interned.header(response.headers(), "x-backend-region");
        let instance = interned.header(response.headers(), "x-backend-instance");
        // The whole body is part of the answer (and must be read to reuse the connection).
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| classify(&e))?;
        Ok::<Answer, ErrorKind>((status, region, instance))
    };
    let answer = tokio::time::timeout(shared.timeout, exchange)
        .await
        .map_err(|_| ErrorKind::Timeout)??;
    *sender = Some(active);
    Ok(answer)
}

async fn connect(shared: &Shared) -> Result<SendRequest<Empty<Bytes>>, ErrorKind> {
    let stream =
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(&shared.address))
            .await
        {
            Err(_) => return Err(ErrorKind::Connect),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ErrorKind::Refused);
            }
            Ok(Err(_)) => return Err(ErrorKind::Connect),
            Ok(Ok(stream)) => stream,
        };
    // Small requests and answers: do not let Nagle add 40 ms.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        // Errors surface on the request future; this task only drives the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Maps a hyper error to the kind a user of a client library would see.
fn classify(error: &hyper::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => ErrorKind::Reset,
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                std::io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
                _ => ErrorKind::Other,
            };
        }
        source = current.source();
    }
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        ErrorKind::Closed
    } else if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Other
    }
}

/// Shares one allocation per distinct header value (a handful of regions and
/// instances across hundreds of thousands of records).
#[derive(Default)]
struct Interner {
    known: Vec<Arc<str>>,
}

impl Interner {
    fn header(&mut self, headers: &http::HeaderMap, name: &str) -> Option<Arc<str>> {
        let value = headers.get(name)?.to_str().ok()?;
        if let Some(known) = self.known.iter().find(|k| &***k == value) {
            return Some(known.clone());
        }
        // Bounded: a backend inventing a new value per answer must not grow this list
        // (and the linear search) without limit.
        const MAX_DISTINCT: usize = 256;
        let fresh: Arc<str> = Arc::from(value);
        if self.known.len() < MAX_DISTINCT {
            self.known.push(fresh.clone());
        }
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> LoadSpec {
        LoadSpec {
            url: url.parse().unwrap_or_default(),
            host: None,
            rate: 100.0,
            duration: Duration::from_secs(1),
            connections: 2,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn spec_validation_names_the_problem() {
        assert_eq!(
            validate(&spec("http://127.0.0.1:8000/a?b=1")).ok(),
            Some(("127.0.0.1:8000".to_owned(), "/a?b=1".to_owned()))
        );
        let https = validate(&spec("https://127.0.0.1/"))
            .err()
            .map(|e| e.to_string());
        assert!(https.unwrap_or_default().contains("only http://"));
        let mut zero_rate = spec("http://127.0.0.1:1/");
        zero_rate.rate = 0.0;
        assert!(validate(&zero_rate).is_err());
        let mut no_connections = spec("http://127.0.0.1:1/");
        no_connections.connections = 0;
        assert!(validate(&no_connections).is_err());
    }

    #[test]
    fn due_times_follow_the_rate() {
        let shared = Shared {
            address: String::new(),
            uri: Uri::from_static("/"),
            host: HeaderValue::from_static("x"),
            tickets: tokio::sync::Mutex::new(tokio::sync::mpsc::unbounded_channel().1),
            taken: AtomicU64::new(0),
            total_tickets: 10,
            interval_s: 1.0 / 2000.0,
            started: Instant::now(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(shared.due(0), Duration::ZERO);
        assert_eq!(shared.due(1), Duration::from_micros(500));
        assert_eq!(shared.due(2000), Duration::from_secs(1));
    }

    /// A loopback backend inside this runtime (real clock): answers every request with
    /// the backend headers, and stalls the request numbered `stall_at` for `stall`.
    async fn stalling_backend(stall_at: u64, stall: Duration) -> std::net::SocketAddr {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("cannot bind loopback: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("no local address: {e}"),
        };
        let served = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let served = served.clone();
                        async move {
                            if served.fetch_add(1, Ordering::Relaxed) == stall_at {
                                tokio::time::sleep(stall).await;
                            }
                            http::Response::builder()
                                .header("x-backend-region", "primary")
                                .header("x-backend-instance", "p1")
                                .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_stall_shows_on_every_request_due_during_it() {
        // One connection, 100 req/s, and the 20th request (due at 190 ms) stalls for
        // 300 ms. A closed-loop client would record one slow request and then simply send
        // the next ones late; measured from the due time, every request due during the
        // stall shows the wait: ~30 requests, the first ~300 ms, then shrinking by 10 ms.
        let addr = stalling_backend(19, Duration::from_millis(300)).await;
        let stalled = run(LoadSpec {
            url: format!("http://{addr}/").parse().unwrap_or_default(),
            host: None,
            rate: 100.0,
            duration: Duration::from_secs(1),
            connections: 1,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        })
        .await;
        let stalled = match stalled {
            Ok(run) => run,
            Err(e) => panic!("run failed: {e}"),
        };
        assert_eq!(stalled.records.len(), 100);
        assert!(
            stalled
                .records
                .iter()
                .all(|r| r.outcome == Outcome::Status(200))
        );
        assert!(
            stalled
                .records
                .iter()
                .all(|r| r.region.as_deref() == Some("primary")
                    && r.instance.as_deref() == Some("p1"))
        );
        let slow = stalled
            .records
            .iter()
            .filter(|r| r.latency_us >= 100_000)
            .count();
        // 300 ms stall at 10 ms spacing: the stalled request plus the ~20 due within the
        // following 200 ms all wait ≥ 100 ms. Bounds are loose for a loaded machine.
        assert!((15..=35).contains(&slow), "{slow} requests ≥ 100 ms");
        let stalled_record = stalled
            .records
            .get(19)
            .map(|r| r.latency_us)
            .unwrap_or_default();
        assert!(
            stalled_record >= 300_000,
            "stalled request took {stalled_record} µs"
        );
        // The ones right after it were sent late, and the lag is part of their latency.
        let next = stalled
            .records
            .get(20)
            .map(|r| (r.send_lag_us, r.latency_us));
        assert!(
            next.is_some_and(|(lag, latency)| lag >= 250_000 && latency >= lag),
            "{next:?}"
        );
    }

    #[tokio::test]
    async fn refused_connections_are_recorded_not_fatal() {
        // Bind and drop a listener to get a loopback port with nothing behind it.
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("cannot bind loopback: {e}"),
        };
        let mut refused = spec(&format!("http://127.0.0.1:{port}/"));
        refused.rate = 50.0;
        refused.duration = Duration::from_millis(200);
        let run = run(refused).await;
        let run = match run {
            Ok(run) => run,
            Err(e) => panic!("run failed: {e}"),
        };
        assert_eq!(run.records.len(), 10);
        assert!(
            run.records
                .iter()
                .all(|r| r.outcome == Outcome::Error(ErrorKind::Refused)),
            "{:?}",
            run.records
        );
        assert_eq!(run.abandoned, 0);
    }
}
