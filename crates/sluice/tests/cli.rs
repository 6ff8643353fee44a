//! End-to-end tests of the `sluice` binary as a user runs it: `check` exit codes and
//! diagnostics, `demo` failover and failback with zero client errors, `run` with SIGHUP
//! and `POST /config` reloads. Real processes, real sockets, loopback only; every wait
//! is a bounded poll, never a fixed sleep used as synchronisation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A child process that is killed (by its PID, which we started) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal HTTP/1.1 client: one request per connection. Returns status, headers and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-yaml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head:?}")))?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_reports_every_problem_with_file_line_column() {
    let dir = temp_dir("check");
    let file = dir.join("kong.yml");
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nservices:\n- name: productAPI\n  host: products\n  routes:\n  - name: r1\n  - name: r2\n    paths: [\"products\"]\nupstreams:\n- name: products\n  targets:\n  - target: 10.0.0.1:80\n    weight: heavy\n  - target: 10.0.0.1:80\nplugins:\n- name: rate-limiting\n",
    )
    .unwrap();
    let out = Command::new(SLUICE)
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an invalid file exits 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    for expected in [
        format!("{name}:6:5: error: services[0].routes[0]"),
        format!("{name}:8:13: error: services[0].routes[1].paths[0]"),
        format!("{name}:13:13: error: upstreams[0].targets[0].weight"),
        format!("{name}:14:13: error: upstreams[0].targets[1].target"),
        format!("{name}:16:9: error: plugins[0].name: plugin 'rate-limiting' is not supported"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_exit_codes_valid_and_unreadable() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/kong.yml");
    let ok = Command::new(SLUICE)
        .args(["check", example])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 services"));

    let missing = Command::new(SLUICE)
        .args(["check", "/nonexistent/kong.yml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "an unreadable file exits 2");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// Reads the demo's stdout until the "Try:" block printed the addresses we need.
fn demo_addresses(child: &mut Child) -> (SocketAddr, SocketAddr) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut proxy = None;
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.is_none() || admin.is_none() {
        assert!(
            Instant::now() < deadline,
            "demo did not print its addresses"
        );
        let line = lines.next().expect("demo exited early").unwrap();
        let url = |l: &str| {
            l.split("http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        if line.contains("curl -i") && line.contains("/products") {
            proxy = url(&line);
        } else if line.contains("/sluice/decisions") {
            admin = url(&line);
        }
    }
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (proxy.unwrap(), admin.unwrap())
}

#[test]
fn demo_fails_over_and_back_with_zero_client_errors() {
    let mut child = Command::new(SLUICE)
        .args([
            "demo",
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gui-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (proxy, admin) = demo_addresses(&mut child);
    let _demo = Proc(child);

    let (status, head, body) = http(proxy, "GET", "/products", None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&head, "x-backend-region"), Some("primary"));
    assert!(body.contains("\"service\":\"productAPI\""), "{body}");

    // Clients keep calling all the time; every response is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let total = Arc::new(AtomicU64::new(0));
    // Every answer from the primary region: when its request was sent and when the answer
    // was in hand. The hold-down check below compares these with the failback decision.
    let primary_answers = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    // Consecutive answers from the secondary region: proves a full failover, not a spill.
    let secondary_streak = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, total, primary_answers) = (
                stop.clone(),
                failures.clone(),
                total.clone(),
                primary_answers.clone(),
            );
            let secondary_streak = secondary_streak.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                // Bounded: the loop ends on `stop` or after 120 s, whichever comes first.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    let sent = Instant::now();
                    match http(proxy, "GET", "/products", None) {
                        Ok((200, head, _)) => {
                            if header(&head, "x-backend-region") == Some("secondary") {
                                secondary_streak.fetch_add(1, Ordering::Relaxed);
                            } else {
                                secondary_streak.store(0, Ordering::Relaxed);
                                primary_answers.lock().unwrap().push((sent, Instant::now()));
                            }
                        }
                        Ok((code, _, body)) => {
                            failures.lock().unwrap().push(format!("{code} {body}"))
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let fault = |f: &str| {
        let body = format!("{{\"region\":\"primary\",\"fault\":\"{f}\"}}");
        let mut s = TcpStream::connect(admin).unwrap();
        write!(s, "POST /sluice/demo/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "fault injection failed: {r}");
    };

    wait_for("some traffic", Duration::from_secs(20), || {
        (total.load(Ordering::Relaxed) > 50).then_some(())
    });
    fault("down");
    wait_for(
        "all traffic served from the secondary region",
        Duration::from_secs(30),
        || (secondary_streak.load(Ordering::Relaxed) >= 200).then_some(()),
    );

    fault("none");
    let restored = Instant::now();
    // The failback is the gateway's decision, read from its decision log: the example's
    // hold-down is 10 s after the primary's probes pass again, so 60 s is a bound for a
    // loaded machine, not an expectation. What clients saw is no evidence of a failback:
    // a single answer from the primary can also come from a request a client thread sent
    // before the failover and recorded late, so the test waits for the decision itself.
    let failback = wait_for(
        "a failback decision for products.upstream",
        Duration::from_secs(60),
        || {
            let asked = Instant::now();
            let (status, _, body) = http(admin, "GET", "/sluice/decisions", None).ok()?;
            (status == 200).then_some(())?;
            let log: serde_json::Value = serde_json::from_str(&body).ok()?;
            // The first decision that moved traffic back: normally `failback_start`;
            // `failback_complete` when the core admitted the primary at once because
            // the secondary could no longer carry the load alone.
            let record = log["data"].as_array()?.iter().find(|r| {
                r["upstream"] == "products.upstream"
                    && (r["kind"] == "failback_start" || r["kind"] == "failback_complete")
            })?;
            // The gateway read its clock (`now_ms`) after `asked`, so the decision was
            // made no earlier than `asked` minus its age: a bound that only errs early.
            let age = log["now_ms"]
                .as_u64()?
                .checked_sub(record["at_ms"].as_u64()?)?;
            Some(
                asked
                    .checked_sub(Duration::from_millis(age))
                    .unwrap_or(asked),
            )
        },
    );
    let seen = Instant::now();
    // Traffic really returns: an answer from the primary to a request sent after the
    // decision was seen (the ramp's first step sends it 5%, hundreds of requests a second).
    wait_for(
        "traffic back in the primary region",
        Duration::from_secs(30),
        || {
            let answers = primary_answers.lock().unwrap();
            answers.iter().any(|(sent, _)| *sent >= seen).then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} client requests failed: {:?}",
        failures.len(),
        total.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    // The hold-down held: no request sent after the primary came back was answered by
    // it before the failback decision. Both bounds only err towards allowing an answer
    // (sent after `restored`, in hand before the earliest time the decision can have
    // been made), so a loaded machine cannot make this fail.
    let early: Vec<_> = primary_answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(sent, answered)| *sent >= restored && *answered < failback)
        .map(|(sent, _)| sent.duration_since(restored))
        .collect();
    assert!(
        early.is_empty(),
        "the primary answered {} requests during the hold-down (sent {:?} after the restore)",
        early.len(),
        &early[..early.len().min(5)]
    );

    let (status, _, decisions) = http(admin, "GET", "/sluice/decisions", None).unwrap();
    assert_eq!(status, 200);
    assert!(
        decisions.contains("\"failover\"") || decisions.contains("\"spill\""),
        "no failover decision recorded: {decisions}"
    );
}

fn start_backend(instance: &str, region: &str) -> (Proc, SocketAddr) {
    let mut child = Command::new(SLUICE)
        .args([
            "backend",
            "--listen",
            "127.0.0.1:0",
            "--service",
            "svc",
            "--instance",
            instance,
            "--region",
            region,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .expect("backend address");
    (Proc(child), addr)
}

fn config_for(target: SocketAddr) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  host: svc.upstream\n  routes:\n  - name: r\n    paths: [/]\nupstreams:\n- name: svc.upstream\n  targets:\n  - target: \"{target}\"\n"
    )
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn run_reloads_on_sighup_and_post_config_and_keeps_running_config_on_errors() {
    reload_scenario(&[]);
}

/// The single-threaded runtime (`--worker-threads 1`, the default on a one-CPU machine)
/// reloads too: nothing on the reload path may need a second worker.
#[test]
fn single_threaded_runtime_reloads_on_sighup_and_post_config() {
    reload_scenario(&["--worker-threads", "1"]);
}

fn reload_scenario(extra_args: &[&str]) {
    let (_a, addr_a) = start_backend("a", "primary");
    let (_b, addr_b) = start_backend("b", "primary");
    let dir = temp_dir("reload");
    let file = dir.join("kong.yml");
    std::fs::write(&file, config_for(addr_a)).unwrap();
    let (proxy, admin, gui) = (free_port(), free_port(), free_port());
    let child = Command::new(SLUICE)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .args([
            "--proxy-listen",
            &proxy.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--gui-listen",
            &gui.to_string(),
        ])
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _gateway = Proc(child);
    let instance = || {
        http(proxy, "GET", "/x", None)
            .ok()
            .and_then(|(_, head, _)| header(&head, "x-backend-instance").map(str::to_owned))
    };
    wait_for(
        "the gateway to serve backend a",
        Duration::from_secs(30),
        || (instance().as_deref() == Some("a")).then_some(()),
    );

    // SIGHUP with a new file: traffic moves to b.
    std::fs::write(&file, config_for(addr_b)).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "SIGHUP reload to take effect",
        Duration::from_secs(30),
        || (instance().as_deref() == Some("b")).then_some(()),
    );

    // An invalid file on SIGHUP: the running configuration stays.
    std::fs::write(&file, "_format_version: \"3.0\"\nservices: [{name: x}]\n").unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // An invalid POST /config: 400 with Kong's error body, and the running configuration stays.
    let (status, _, body) = http(admin, "POST", "/config", Some("_format_version: \"3.0\"\nupstreams: [{name: u, targets: [{target: x, weight: heavy}]}]\n")).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid declarative configuration"), "{body}");
    for _ in 0..20 {
        assert_eq!(
            instance().as_deref(),
            Some("b"),
            "an invalid reload must not change the running configuration"
        );
    }

    // The log level changes at runtime; a bad filter is a 400 that names it.
    let (status, _, body) = http(
        admin,
        "PUT",
        "/sluice/log-level",
        Some(r#"{"level":"debug"}"#),
    )
    .unwrap();
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = http(
        admin,
        "PUT",
        "/sluice/log-level",
        Some(r#"{"level":"[[nonsense"}"#),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("[[nonsense"), "{body}");

    // A valid POST /config (Kong DB-less body): traffic moves back to a.
    let (status, _, body) = http(admin, "POST", "/config", Some(&config_for(addr_a))).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for(
        "POST /config to take effect",
        Duration::from_secs(30),
        || (instance().as_deref() == Some("a")).then_some(()),
    );
}

#[test]
fn refuses_a_public_admin_listener_without_a_token() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/minimal.yml");
    let out = Command::new(SLUICE)
        .args([
            "run",
            "--config",
            example,
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
            "--gui-listen",
            "127.0.0.1:0",
        ])
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a public admin listener without a token must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the admin API on 0.0.0.0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("token"),
        "the message says how to fix it: {stderr}"
    );
}

/// A certificate for `name` signed by a fresh CA: (CA PEM, leaf PEM, leaf key PEM).
fn signed_certificate(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: OpenSSL (curl) takes a leaf whose subject equals its issuer's
    // for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sluice CLI test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let leaf = leaf_params.signed_by(&key, &ca).unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn tls_config_for(target: SocketAddr, cert_pem: &str, key_pem: &str) -> String {
    let block = |text: &str| -> String { text.lines().map(|l| format!("      {l}\n")).collect() };
    format!(
        "_format_version: \"3.0\"\ncertificates:\n  - id: 9d1f3c2a-0b4e-4e8f-a1c2-000000000001\n    cert: |\n{}    key: |\n{}    snis: [{{name: api.example.test}}]\nservices:\n- name: svc\n  url: http://{target}\n  routes:\n  - name: r\n    protocols: [https]\n    paths: [/]\n",
        block(cert_pem),
        block(key_pem)
    )
}

/// `curl` over TLS to `tls` for api.example.test, trusting only `ca_file`: the status,
/// or `None` when the handshake or the verification failed.
fn curl_status(tls: SocketAddr, ca_file: &std::path::Path) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca_file)
        .arg("--resolve")
        .arg(format!("api.example.test:{}:127.0.0.1", tls.port()))
        .arg(format!("https://api.example.test:{}/x", tls.port()))
        .output()
        .ok()?;
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && code != 0).then_some(code)
}

/// `sluice run --proxy-listen-tls`: the certificate of the file is served for its SNI,
/// the https-only route answers 426 on the plain listener, and SIGHUP and POST /config
/// swap the certificate for new handshakes while a rejected configuration keeps it.
/// Needs curl (skipped without it).
#[test]
fn run_serves_tls_by_sni_and_swaps_certificates_on_reload() {
    if !Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("curl not installed: skipped");
        return;
    }
    let (_a, backend) = start_backend("a", "primary");
    let dir = temp_dir("tls-run");
    let (ca1, cert1, key1) = signed_certificate("api.example.test");
    let (ca2, cert2, key2) = signed_certificate("api.example.test");
    let (ca1_file, ca2_file) = (dir.join("ca1.pem"), dir.join("ca2.pem"));
    std::fs::write(&ca1_file, ca1).unwrap();
    std::fs::write(&ca2_file, ca2).unwrap();
    let file = dir.join("kong.yml");
    std::fs::write(&file, tls_config_for(backend, &cert1, &key1)).unwrap();
    let (proxy, tls, admin, gui) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(SLUICE)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .args([
            "--proxy-listen",
            &proxy.to_string(),
            "--proxy-listen-tls",
            &tls.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--gui-listen",
            &gui.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _gateway = Proc(child);

    wait_for(
        "TLS with the first certificate",
        Duration::from_secs(30),
        || (curl_status(tls, &ca1_file) == Some(200)).then_some(()),
    );
    assert_eq!(
        curl_status(tls, &ca2_file),
        None,
        "CA 2 must not verify yet"
    );
    let (status, _, _) = http(proxy, "GET", "/x", None).unwrap();
    assert_eq!(status, 426, "https-only route on the plain listener");
    let (status, _, body) = http(admin, "GET", "/", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&format!("{tls} ssl")), "{body}");

    // SIGHUP with the second certificate.
    std::fs::write(&file, tls_config_for(backend, &cert2, &key2)).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "SIGHUP to swap the certificate",
        Duration::from_secs(30),
        || (curl_status(tls, &ca2_file) == Some(200)).then_some(()),
    );
    assert_eq!(
        curl_status(tls, &ca1_file),
        None,
        "the old certificate is gone"
    );

    // A rejected POST /config (a key that is not the certificate's): nothing changes.
    let (status, _, body) = http(
        admin,
        "POST",
        "/config",
        Some(&tls_config_for(backend, &cert1, &key2)),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("certificate does not match key"), "{body}");
    assert_eq!(curl_status(tls, &ca2_file), Some(200));

    // POST /config with the first certificate again.
    let (status, _, body) = http(
        admin,
        "POST",
        "/config",
        Some(&tls_config_for(backend, &cert1, &key1)),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for(
        "POST /config to swap the certificate",
        Duration::from_secs(30),
        || (curl_status(tls, &ca1_file) == Some(200)).then_some(()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
