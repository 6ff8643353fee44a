//! The keep-alive probe mode (`sluice:probe-keepalive=on`) against real loopback
//! backends. Reuse is proven by counting the connections each backend accepted; outcomes
//! are checked exactly on `probe_keepalive::probe`, and end to end through the gateway.
//! No sleeps: every wait is a bounded poll of an observable condition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::event::ProbeOutcome;
use sluice_core::snapshot::HealthStatus;
use sluice_core::topology::{ActiveHealthCheck, HealthChecks, ProbeType};
use sluice_proxy::probe_keepalive::{BODY_MAX, Kept, Ready, probe, try_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::backend::{Backend, Behavior};
use crate::support::{eventually, gateway};

/// Max age long enough that no connection ages out during a test.
const LONG: Duration = Duration::from_secs(3600);

/// What the scripted backend sends for each request.
#[derive(Clone, Debug)]
enum Script {
    /// These bytes, keeping the connection open.
    Reply(Vec<u8>),
    /// These bytes, then close the connection.
    ReplyThenClose(Vec<u8>),
    /// A keep-alive 200 to a connection's first request; later requests on it are
    /// dropped without a byte (a backend that closed the idle connection as our request
    /// was on its way).
    DropReused,
    /// Accept and read, never answer, never close (a full or stuck backend).
    Silent,
}

/// A raw-TCP backend answering every request head with its script.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    last_request: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Scripted {
    async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let last_request = Arc::new(Mutex::new(String::new()));
        let task = tokio::spawn({
            let (accepted, requests, last_request) =
                (accepted.clone(), requests.clone(), last_request.clone());
            async move {
                // Owned here: aborting the accept loop closes every connection too.
                let mut connections = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(
                        stream,
                        script.clone(),
                        requests.clone(),
                        last_request.clone(),
                    ));
                    while connections.try_join_next().is_some() {}
                }
            }
        });
        Scripted {
            addr,
            accepted,
            requests,
            last_request,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stop listening and close every connection (a killed process).
    fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    requests: Arc<AtomicU64>,
    last_request: Arc<Mutex<String>>,
) {
    let mut buf = Vec::new();
    let mut served = 0u32;
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 16 * 1024 {
                return;
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        *last_request.lock().unwrap() = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        match &script {
            Script::Reply(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Script::ReplyThenClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Script::DropReused if served == 1 => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
            Script::DropReused => return,
            Script::Silent => std::future::pending::<()>().await,
        }
    }
}

fn check(probe_type: ProbeType) -> ActiveHealthCheck {
    let mut check = HealthChecks::default().active;
    check.probe_type = probe_type;
    check.http_path = "/health".into();
    check.timeout = Duration::from_millis(500);
    check.keepalive = Some(LONG);
    check
}

/// `n` probes in a row, each reusing what the previous one kept.
async fn probes(
    addr: SocketAddr,
    check: &ActiveHealthCheck,
    max_age: Duration,
    n: usize,
    mut kept: Option<Kept>,
) -> (Vec<ProbeOutcome>, Option<Kept>) {
    let mut outcomes = Vec::new();
    for _ in 0..n {
        let (outcome, next) = probe(addr, check, "backend.test", max_age, kept, None).await;
        outcomes.push(outcome);
        kept = next;
    }
    (outcomes, kept)
}

fn ok_length() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok".to_vec()
}

#[tokio::test]
async fn http_probes_reuse_one_connection_and_send_http11_keepalive() {
    let backend = Scripted::start(Script::Reply(ok_length())).await;
    let (outcomes, kept) = probes(backend.addr, &check(ProbeType::Http), LONG, 5, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 5]);
    assert!(kept.is_some(), "the connection is kept for the next probe");
    assert_eq!(backend.requests(), 5);
    assert_eq!(backend.accepted(), 1, "five probes, one connection");
    let request = backend.last_request.lock().unwrap().clone();
    assert!(request.starts_with("GET /health HTTP/1.1\r\nHost: backend.test\r\n"));
    assert!(request.contains("Connection: keep-alive\r\n"), "{request}");
}

#[tokio::test]
async fn a_kept_connection_sends_the_current_host_path_and_headers() {
    // The request is rendered once per connection and reused: a reload that changes the
    // path or headers, or a different Host, must still be what is sent.
    let backend = Scripted::start(Script::Reply(ok_length())).await;
    let mut http = check(ProbeType::Http);
    let (_, kept) = probes(backend.addr, &http, LONG, 2, None).await;
    let last = || backend.last_request.lock().unwrap().clone();
    assert!(last().starts_with("GET /health HTTP/1.1\r\nHost: backend.test\r\n"));
    let (outcome, kept) = probe(backend.addr, &http, "other.test", LONG, kept, None).await;
    assert_eq!(outcome, ProbeOutcome::Status(200));
    assert!(
        last().starts_with("GET /health HTTP/1.1\r\nHost: other.test\r\n"),
        "{}",
        last()
    );
    http.http_path = "/ready".into();
    http.headers = vec![("X-Probe".into(), vec!["1".into()])];
    let (outcome, kept) = probe(backend.addr, &http, "other.test", LONG, kept, None).await;
    assert_eq!(outcome, ProbeOutcome::Status(200));
    let request = last();
    assert!(
        request.starts_with("GET /ready HTTP/1.1\r\nHost: other.test\r\n"),
        "{request}"
    );
    assert!(request.contains("X-Probe: 1\r\n"), "{request}");
    assert!(kept.is_some());
    assert_eq!(backend.accepted(), 1, "all on one connection");
    assert_eq!(backend.requests(), 4);
}

#[tokio::test]
async fn chunked_bodies_are_read_whole_and_the_connection_reused() {
    let chunked = b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndown\r\n3;ext=1\r\n!!!\r\n0\r\n\r\n".to_vec();
    let backend = Scripted::start(Script::Reply(chunked)).await;
    let (outcomes, _) = probes(backend.addr, &check(ProbeType::Http), LONG, 4, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(503); 4]);
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test]
async fn a_body_larger_than_the_read_buffer_is_read_whole() {
    // The body takes several reads of the probe's 4 KiB buffer; a reader that stopped
    // early would leave "xxxx..." to be read as the next probe's status line.
    let body = "x".repeat(20_000);
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let backend = Scripted::start(Script::Reply(reply.into_bytes())).await;
    let (outcomes, _) = probes(backend.addr, &check(ProbeType::Http), LONG, 3, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 3]);
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test]
async fn connection_close_and_http10_answers_work_on_fresh_connections() {
    let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let http10 = b"HTTP/1.0 200 OK\r\n\r\nunframed body, ends with the connection".to_vec();
    for reply in [close, http10] {
        let backend = Scripted::start(Script::ReplyThenClose(reply)).await;
        let (outcomes, kept) = probes(backend.addr, &check(ProbeType::Http), LONG, 3, None).await;
        assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 3]);
        assert!(kept.is_none(), "a closing answer is not kept");
        assert_eq!(backend.accepted(), 3, "one connection per probe");
    }
}

#[tokio::test]
async fn a_backend_closing_idle_connections_causes_no_failure() {
    // Answers as if keeping the connection, then closes it (an idle timeout shorter
    // than the probe interval): the next probe finds it closed and reconnects.
    let backend = Scripted::start(Script::ReplyThenClose(ok_length())).await;
    let (outcomes, _) = probes(backend.addr, &check(ProbeType::Http), LONG, 4, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 4]);
    assert_eq!(backend.accepted(), 4);
}

#[tokio::test]
async fn a_request_racing_an_idle_close_is_retried_once_on_a_fresh_connection() {
    // The reused connection takes our request and closes without a byte: that is the
    // idle-close race, not a failure; only the fresh connection's answer counts.
    let backend = Scripted::start(Script::DropReused).await;
    let (outcomes, _) = probes(backend.addr, &check(ProbeType::Http), LONG, 3, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 3]);
    assert_eq!(backend.accepted(), 3);
    assert_eq!(backend.requests(), 5, "1, then 2 + 2 (dropped, retried)");
}

#[tokio::test]
async fn a_killed_backend_fails_the_next_probe() {
    let backend = Scripted::start(Script::Reply(ok_length())).await;
    let http = check(ProbeType::Http);
    let (outcomes, kept) = probes(backend.addr, &http, LONG, 2, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 2]);
    backend.kill();
    // The kept connection is closed and the reconnect refused: a tcp failure, as a
    // fresh-connection probe would report.
    let (outcomes, kept) = probes(backend.addr, &http, LONG, 2, kept).await;
    assert_eq!(outcomes, vec![ProbeOutcome::TcpFailure; 2]);
    assert!(kept.is_none());
}

#[tokio::test]
async fn a_silent_backend_is_a_timeout_and_the_connection_is_dropped() {
    let backend = Scripted::start(Script::Silent).await;
    let mut http = check(ProbeType::Http);
    http.timeout = Duration::from_millis(100);
    let (outcomes, kept) = probes(backend.addr, &http, LONG, 2, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::Timeout; 2]);
    assert!(kept.is_none());
    assert_eq!(
        backend.accepted(),
        2,
        "a timed-out connection is never reused"
    );
}

#[tokio::test]
async fn garbage_and_oversized_answers_are_http_failures_and_not_reused() {
    let too_long = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        BODY_MAX + 1
    );
    let endless_header = [
        b"HTTP/1.1 200 OK\r\nX-Long: ".as_slice(),
        &[b'x'; 64 * 1024],
    ]
    .concat();
    let replies = [
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n".to_vec(),
        too_long.into_bytes(),
        endless_header,
    ];
    for reply in replies {
        let backend = Scripted::start(Script::Reply(reply.clone())).await;
        let (outcomes, kept) = probes(backend.addr, &check(ProbeType::Http), LONG, 2, None).await;
        assert_eq!(
            outcomes,
            vec![ProbeOutcome::Status(0); 2],
            "{}",
            String::from_utf8_lossy(&reply[..reply.len().min(60)])
        );
        assert!(kept.is_none());
        assert_eq!(
            backend.accepted(),
            2,
            "an unreadable answer ends the connection"
        );
    }
}

#[tokio::test]
async fn a_max_age_replaces_connections() {
    let backend = Scripted::start(Script::Reply(ok_length())).await;
    let (outcomes, _) = probes(
        backend.addr,
        &check(ProbeType::Http),
        Duration::ZERO,
        3,
        None,
    )
    .await;
    assert_eq!(outcomes, vec![ProbeOutcome::Status(200); 3]);
    assert_eq!(
        backend.accepted(),
        3,
        "every connection is too old to reuse"
    );
}

#[tokio::test]
async fn tcp_probes_keep_a_connection_and_reconnect_when_it_ends() {
    let backend = Scripted::start(Script::Silent).await;
    let tcp = check(ProbeType::Tcp);
    let (outcomes, kept) = probes(backend.addr, &tcp, LONG, 4, None).await;
    assert_eq!(outcomes, vec![ProbeOutcome::TcpSuccess; 4]);
    // A tcp probe does not wait for the backend's accept. One more connection, made
    // after the probes, is accepted after all of theirs (the accept queue is FIFO).
    let _marker = TcpStream::connect(backend.addr).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || backend.accepted() >= 2).await);
    assert_eq!(
        backend.accepted(),
        2,
        "liveness is checked without reconnecting"
    );
    assert_eq!(backend.requests(), 0, "and without sending anything");
    backend.kill();
    // The backend's close reaches the prober's reactor asynchronously; poll until the
    // next probe sees it (bounded), then it must reconnect and be refused.
    let mut kept = kept;
    let mut last = ProbeOutcome::TcpSuccess;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while last == ProbeOutcome::TcpSuccess && tokio::time::Instant::now() < deadline {
        let (outcome, next) = probe(backend.addr, &tcp, "backend.test", LONG, kept, None).await;
        last = outcome;
        kept = next;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        last,
        ProbeOutcome::TcpFailure,
        "the killed backend is detected"
    );
    assert!(kept.is_none());
}

#[tokio::test]
async fn tcp_probes_on_a_usable_kept_connection_are_answered_at_once_and_others_run() {
    let backend = Scripted::start(Script::Silent).await;
    let tcp = check(ProbeType::Tcp);
    let (_, kept) = probes(backend.addr, &tcp, LONG, 1, None).await;
    let now = tokio::time::Instant::now;
    // Young and idle: the answer `probe` would give, with the same connection.
    let kept = match try_now(&tcp, LONG, kept, now()) {
        Ready::Success(kept) => kept,
        other => panic!("expected an answer at once, got {other:?}"),
    };
    // Past the max age: run a full probe without it (it reconnects).
    assert!(matches!(
        try_now(&tcp, Duration::ZERO, Some(kept), now()),
        Ready::Run(None)
    ));
    // http probes always run (their answer needs an exchange), with their connection.
    let (_, kept) = probes(backend.addr, &tcp, LONG, 1, None).await;
    let http = check(ProbeType::Http);
    assert!(matches!(
        try_now(&http, LONG, kept, now()),
        Ready::Run(Some(_))
    ));
    // A closed connection is dropped, and the full probe then sees the refusal.
    let (_, mut kept) = probes(backend.addr, &tcp, LONG, 1, None).await;
    backend.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut last = ProbeOutcome::TcpSuccess;
    while last == ProbeOutcome::TcpSuccess && tokio::time::Instant::now() < deadline {
        kept = match try_now(&tcp, LONG, kept, now()) {
            Ready::Success(conn) => Some(conn),
            Ready::Run(conn) => {
                assert!(
                    conn.is_none(),
                    "an unusable tcp connection is not handed on"
                );
                let (outcome, next) =
                    probe(backend.addr, &tcp, "backend.test", LONG, conn, None).await;
                last = outcome;
                next
            }
        };
        tokio::task::yield_now().await;
    }
    assert_eq!(
        last,
        ProbeOutcome::TcpFailure,
        "the killed backend is detected"
    );
}

// ---- through the gateway ---------------------------------------------------------------

fn keepalive_yaml(targets: &[SocketAddr]) -> String {
    let targets = crate::support::target_entries(targets);
    format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
    tags: ["sluice:probe-keepalive=on", "sluice:probe-keepalive-max-age=1h"]
    healthchecks:
      active:
        http_path: /health
        timeout: 0.5
        healthy:
          interval: 0.05
          successes: 1
        unhealthy:
          interval: 0.05
          tcp_failures: 1
          http_failures: 1
          timeouts: 1
    targets:
{targets}"#
    )
}

#[tokio::test]
async fn the_gateway_reuses_probe_connections_and_still_detects_a_killed_backend() {
    let flaky = Backend::start("flaky", Behavior::Ok).await;
    let gw = gateway(&keepalive_yaml(&[flaky.addr])).await;
    assert!(
        eventually(Duration::from_secs(3), || flaky.hits() >= 5).await,
        "probes reach the backend"
    );
    assert_eq!(
        flaky.connections(),
        1,
        "five probes or more over one connection"
    );
    let target = flaky.addr.to_string();
    let health = |gw: &sluice_proxy::Gateway| {
        gw.upstream_status("pool")?
            .targets
            .into_iter()
            .find(|t| t.target == target)
            .map(|t| t.health)
    };
    assert_eq!(health(&gw), Some(HealthStatus::Healthy));
    flaky.kill();
    assert!(
        eventually(Duration::from_secs(3), || health(&gw)
            == Some(HealthStatus::Unhealthy))
        .await,
        "killed backend marked unhealthy: {:?}",
        gw.upstream_status("pool")
    );
    flaky.revive().await;
    assert!(
        eventually(Duration::from_secs(3), || health(&gw)
            == Some(HealthStatus::Healthy))
        .await,
        "revived backend marked healthy again"
    );
    gw.shutdown().await;
}
