//! Hostname targets against a real DNS server: Debian's `dnsmasq` started as a child
//! process on a free loopback port, serving records these tests write themselves, and
//! the gateway pointed at it with `GatewayOptions::dns_resolvers` (Kong's
//! `dns_resolver`). This checks Kong's DNS expansion rules (kong-semantics.md §3.2)
//! end to end: A records become one address each, SRV keeps only the top priority with
//! its weights and ports, a dead DNS server leaves the last answer serving, NXDOMAIN
//! is `DNS_ERROR`, and a changed record moves traffic after its TTL.
//!
//! Without `/usr/sbin/dnsmasq` (package `dnsmasq-base`) every test here skips with a
//! loud message, unless `SLUICE_REQUIRE_TOOLS=1` (set by CI) makes that a failure.
//! Every wait polls with a deadline; dnsmasq is stopped by the PID this file started.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_core::controller::TargetStatus;
use sluice_core::snapshot::HealthStatus;
use sluice_proxy::{Gateway, GatewayOptions};

use crate::support::backend::{Backend, Behavior};
use crate::support::{eventually, gateway_with, get};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// TTL of every record served here: one second is the controller's re-resolution
/// floor, so record changes show up as fast as Sluice allows.
const RECORD_TTL_SECS: u32 = 1;
/// How long dnsmasq gets to answer its first query after a (re)start.
const DNSMASQ_READY: Duration = Duration::from_secs(5);
/// Upper bound for a re-resolution to show: TTL 1 s, plus one failed refresh if it
/// lands in the instant dnsmasq is restarting (the controller then waits its 30 s
/// `DNS_RETRY`, Kong's `REQUERY_INTERVAL`), plus slack for a loaded machine.
const RESOLVE_WAIT: Duration = Duration::from_secs(40);

/// A dnsmasq child process serving only the records it was given.
struct Dnsmasq {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Start dnsmasq with `records` (dnsmasq option lines such as
    /// `host-record=a.example.test,127.0.0.1`), or `None` when dnsmasq is not installed
    /// and the environment does not require it.
    fn start(records: &[String]) -> Option<Dnsmasq> {
        if !std::path::Path::new(DNSMASQ).exists() {
            assert!(
                std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "{DNSMASQ} is missing and SLUICE_REQUIRE_TOOLS=1: install dnsmasq-base"
            );
            eprintln!(
                "\n*** SKIPPED: {DNSMASQ} not found (apt-get install dnsmasq-base); \
                 the DNS target tests did not run ***\n"
            );
            return None;
        }
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-dns-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Dnsmasq {
            port: free_port(),
            dir,
            child: None,
        };
        server.launch(records);
        Some(server)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Write the records and start the process on `self.port`, waiting until it answers.
    fn launch(&mut self, records: &[String]) {
        let conf = self.dir.join("records.conf");
        let mut text = String::new();
        for line in records {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                // Names under example.test that have no record get NXDOMAIN rather
                // than REFUSED (there is no upstream server to forward them to).
                "--local=/example.test/",
                &format!("--port={}", self.port),
                &format!("--local-ttl={RECORD_TTL_SECS}"),
                &format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()),
                &format!("--conf-file={}", conf.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DNSMASQ_READY;
        while !answers_queries(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dnsmasq exited at start ({status}); records: {records:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not answer on port {} within {DNSMASQ_READY:?}",
                self.port
            );
        }
    }

    /// SIGKILL the process this test started and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Replace the records: kill and start again on the same port.
    fn restart(&mut self, records: &[String]) {
        self.kill();
        self.launch(records);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port free for both UDP and TCP (dnsmasq binds both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether a DNS server on `port` answers an A query for `ready.example.test` (any
/// answer, NXDOMAIN included, proves it is serving). Waits at most 100 ms.
fn answers_queries(port: u16) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    // Header: id 0x5eed, flags RD, one question; then the name, type A, class IN.
    let mut query = vec![0x5e, 0xed, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "example", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send_to(&query, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    matches!(socket.recv(&mut reply), Ok(n) if n >= 12 && reply[..2] == [0x5e, 0xed])
}

async fn dns_gateway(yaml: &str, dns: &Dnsmasq) -> Gateway {
    let options = GatewayOptions {
        dns_resolvers: vec![dns.addr()],
        ..GatewayOptions::default()
    };
    gateway_with(yaml, options).await
}

fn target_status(gw: &Gateway, upstream: &str, target: &str) -> Option<TargetStatus> {
    gw.upstream_status(upstream)?
        .targets
        .into_iter()
        .find(|t| t.target == target)
}

/// The resolved addresses of a target, sorted.
fn addresses_of(gw: &Gateway, upstream: &str, target: &str) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = target_status(gw, upstream, target)
        .map(|t| t.addresses.iter().map(|a| a.key.addr).collect())
        .unwrap_or_default();
    addrs.sort();
    addrs
}

/// Kong YAML: one service on `/` in front of upstream `pool` with `targets` and the
/// given extra upstream/service settings.
fn pool_yaml(service_extra: &str, upstream_extra: &str, targets: &[&str]) -> String {
    let mut yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: pool
    {service_extra}
    routes: [{{ name: r, paths: ["/"] }}]
upstreams:
  - name: pool
{upstream_extra}
    targets:
"#
    );
    for target in targets {
        yaml.push_str(&format!("      - target: {target}\n"));
    }
    yaml
}

#[tokio::test]
async fn a_record_addresses_are_balanced_and_checked_each_on_its_own() {
    let first = Backend::start("first", Behavior::Ok).await;
    let port = first.addr.port();
    let second = Backend::start_at(
        SocketAddr::from(([127, 0, 0, 2], port)),
        "second",
        Behavior::Ok,
    )
    .await;
    let Some(dns) = Dnsmasq::start(&[
        "host-record=multi.example.test,127.0.0.1".into(),
        "host-record=multi.example.test,127.0.0.2".into(),
    ]) else {
        return;
    };
    let target = format!("multi.example.test:{port}");
    let checks = r#"    healthchecks:
      active:
        http_path: /health
        timeout: 0.5
        healthy:
          interval: 0.1
          successes: 1
        unhealthy:
          interval: 0.1
          tcp_failures: 1
          http_failures: 1
          timeouts: 1"#;
    let gw = dns_gateway(&pool_yaml("", checks, &[&target]), &dns).await;
    let both = vec![first.addr, second.addr];
    assert!(
        eventually(RESOLVE_WAIT, || addresses_of(&gw, "pool", &target) == both).await,
        "one target, two addresses: {:?}",
        gw.upstream_status("pool")
    );
    for _ in 0..40 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    assert!(
        first.hits() >= 10 && second.hits() >= 10,
        "both A records take traffic: first {} second {}",
        first.hits(),
        second.hits()
    );

    // Each address is probed on its own: killing one marks only that one unhealthy.
    second.kill();
    let health_of = |gw: &Gateway, addr: SocketAddr| {
        target_status(gw, "pool", &target)
            .and_then(|t| t.addresses.into_iter().find(|a| a.key.addr == addr))
            .map(|a| a.health)
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            health_of(&gw, second.addr) == Some(HealthStatus::Unhealthy)
        })
        .await,
        "the killed address is marked unhealthy: {:?}",
        gw.upstream_status("pool")
    );
    assert_eq!(health_of(&gw, first.addr), Some(HealthStatus::Healthy));
    assert_eq!(
        target_status(&gw, "pool", &target).map(|t| t.health),
        Some(HealthStatus::Healthy),
        "a target with one healthy address is healthy (Kong's rule)"
    );
    let before = first.hits();
    for _ in 0..20 {
        let reply = get(&gw, "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-backend"), "first");
    }
    assert!(first.hits() >= before + 20);
    gw.shutdown().await;
}

#[tokio::test]
async fn srv_uses_the_top_priority_its_weights_and_its_ports() {
    let light = Backend::start("light", Behavior::Ok).await;
    let heavy = Backend::start("heavy", Behavior::Ok).await;
    let backup = Backend::start("backup", Behavior::Ok).await;
    let zero = Backend::start("zero", Behavior::Ok).await;
    let one = Backend::start("one", Behavior::Ok).await;
    let srv = |name: &str, port: u16, priority: u16, weight: u16| {
        format!("srv-host={name},backends.example.test,{port},{priority},{weight}")
    };
    let Some(dns) = Dnsmasq::start(&[
        "host-record=backends.example.test,127.0.0.1".into(),
        srv("_api._tcp.example.test", light.addr.port(), 10, 1),
        srv("_api._tcp.example.test", heavy.addr.port(), 10, 9),
        // A lower priority (higher number): Kong ignores it entirely.
        srv("_api._tcp.example.test", backup.addr.port(), 20, 100),
        srv("_zero._tcp.example.test", zero.addr.port(), 0, 0),
        srv("_zero._tcp.example.test", one.addr.port(), 0, 1),
    ]) else {
        return;
    };
    // The target port (1) is never used: every SRV entry carries its own.
    let yaml = r#"
_format_version: "3.0"
services:
  - name: api
    host: api-pool
    routes: [{ name: api, paths: ["/api"] }]
  - name: zero
    host: zero-pool
    routes: [{ name: zero, paths: ["/zero"] }]
upstreams:
  - name: api-pool
    targets: [{ target: "_api._tcp.example.test:1" }]
  - name: zero-pool
    targets: [{ target: "_zero._tcp.example.test:1" }]
"#;
    let gw = dns_gateway(yaml, &dns).await;
    let top = {
        let mut v = vec![light.addr, heavy.addr];
        v.sort();
        v
    };
    assert!(
        eventually(RESOLVE_WAIT, || {
            addresses_of(&gw, "api-pool", "_api._tcp.example.test:1") == top
        })
        .await,
        "only the top priority's entries, at their SRV ports: {:?}",
        gw.upstream_status("api-pool")
    );
    let weights: Vec<(SocketAddr, u32)> =
        target_status(&gw, "api-pool", "_api._tcp.example.test:1")
            .map(|t| t.addresses.iter().map(|a| (a.key.addr, a.weight)).collect())
            .unwrap_or_default();
    assert!(
        weights.contains(&(light.addr, 1)) && weights.contains(&(heavy.addr, 9)),
        "SRV weights become address weights: {weights:?}"
    );

    const REQUESTS: u64 = 300;
    for _ in 0..REQUESTS {
        assert_eq!(
            send_path(&gw, "/api").await,
            200,
            "{:?}",
            gw.upstream_status("api-pool")
        );
    }
    assert_eq!(backup.hits(), 0, "the lower SRV priority takes nothing");
    let heavy_share = heavy.hits() as f64 / REQUESTS as f64;
    // Weighted round-robin is exact over whole wheel turns (10 slots): 0.9 ± one turn.
    assert!(
        (heavy_share - 0.9).abs() <= 0.05,
        "weight 9 of 10 gets ~90%: heavy {} light {}",
        heavy.hits(),
        light.hits()
    );
    assert_eq!(light.hits() + heavy.hits(), REQUESTS);

    // SRV weight 0 counts as 1 (Kong): both entries equal.
    let zero_target = "_zero._tcp.example.test:1";
    assert!(
        eventually(RESOLVE_WAIT, || addresses_of(&gw, "zero-pool", zero_target)
            .len()
            == 2)
        .await,
        "{:?}",
        gw.upstream_status("zero-pool")
    );
    let zero_weights: Vec<u32> = target_status(&gw, "zero-pool", zero_target)
        .map(|t| t.addresses.iter().map(|a| a.weight).collect())
        .unwrap_or_default();
    assert_eq!(zero_weights, vec![1, 1], "SRV weight 0 becomes 1");
    for _ in 0..40 {
        assert_eq!(send_path(&gw, "/zero").await, 200);
    }
    assert!(
        zero.hits() >= 15 && one.hits() >= 15,
        "equal weights share evenly: zero {} one {}",
        zero.hits(),
        one.hits()
    );
    gw.shutdown().await;
}

async fn send_path(gw: &Gateway, path: &str) -> u16 {
    get(gw, path).await.status
}

#[tokio::test]
async fn a_dead_dns_server_leaves_the_last_answer_serving() {
    let backend = Backend::start("backend", Behavior::Ok).await;
    let Some(mut dns) = Dnsmasq::start(&["host-record=svc.example.test,127.0.0.1".into()]) else {
        return;
    };
    let target = format!("svc.example.test:{}", backend.addr.port());
    let gw = dns_gateway(&pool_yaml("", "", &[&target]), &dns).await;
    assert!(
        eventually(RESOLVE_WAIT, || {
            addresses_of(&gw, "pool", &target) == vec![backend.addr]
        })
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    assert_eq!(get(&gw, "/").await.status, 200);

    dns.kill();
    // With a 1 s TTL the controller re-resolves within about a second; that refresh
    // fails. The target reports the error and keeps its previous address.
    assert!(
        eventually(RESOLVE_WAIT, || {
            target_status(&gw, "pool", &target).is_some_and(|t| t.dns_error.is_some())
        })
        .await,
        "the failed refresh is reported: {:?}",
        gw.upstream_status("pool")
    );
    assert_eq!(addresses_of(&gw, "pool", &target), vec![backend.addr]);
    let before = backend.hits();
    for i in 0..20 {
        let reply = get(&gw, "/").await;
        assert_eq!(reply.status, 200, "request {i} with DNS down: {reply:?}");
    }
    assert_eq!(backend.hits(), before + 20);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_name_that_never_resolves_is_a_dns_error_and_a_503() {
    let Some(dns) = Dnsmasq::start(&["host-record=other.example.test,127.0.0.1".into()]) else {
        return;
    };
    let target = "missing.example.test:8080";
    let gw = dns_gateway(&pool_yaml("", "", &[target]), &dns).await;
    // Before the first answer the target has no addresses either; wait for the
    // resolver's verdict itself.
    assert!(
        eventually(RESOLVE_WAIT, || {
            target_status(&gw, "pool", target).is_some_and(|t| t.dns_error.is_some())
        })
        .await,
        "the lookup failure is reported: {:?}",
        gw.upstream_status("pool")
    );
    let status = target_status(&gw, "pool", target);
    assert!(
        status
            .as_ref()
            .is_some_and(|t| t.health == HealthStatus::DnsError && t.addresses.is_empty()),
        "NXDOMAIN shows as DNS_ERROR with no addresses: {status:?}"
    );
    eprintln!(
        "NXDOMAIN reported as: {:?}",
        status.and_then(|t| t.dns_error)
    );
    let reply = get(&gw, "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        reply
            .body
            .contains("failure to get a peer from the ring-balancer"),
        "Kong's message: {}",
        reply.body
    );
    gw.shutdown().await;
}

/// Kong#5907 with DNS-expanded addresses: SRV weights 1000 vs 1, the heavy one
/// resets every connection. One retry must go to the light one, never the heavy again.
#[tokio::test]
async fn retries_skip_every_address_already_tried_across_srv_entries() {
    let heavy = Backend::start("heavy", Behavior::Reset).await;
    let light = Backend::start("light", Behavior::Ok).await;
    let Some(dns) = Dnsmasq::start(&[
        "host-record=backends.example.test,127.0.0.1".into(),
        format!(
            "srv-host=_pair._tcp.example.test,backends.example.test,{},1,1000",
            heavy.addr.port()
        ),
        format!(
            "srv-host=_pair._tcp.example.test,backends.example.test,{},1,1",
            light.addr.port()
        ),
    ]) else {
        return;
    };
    let target = "_pair._tcp.example.test:1";
    let gw = dns_gateway(&pool_yaml("retries: 1", "", &[target]), &dns).await;
    assert!(
        eventually(RESOLVE_WAIT, || addresses_of(&gw, "pool", target).len()
            == 2)
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    const REQUESTS: u64 = 30;
    for i in 0..REQUESTS {
        let reply = get(&gw, "/").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert_eq!(reply.body, "light");
    }
    assert_eq!(
        light.hits(),
        REQUESTS,
        "each request reached light exactly once"
    );
    assert!(
        heavy.hits() > 0,
        "the heavy entry was picked first at least once (else this tests nothing)"
    );
    assert!(
        heavy.hits() <= REQUESTS,
        "heavy tried at most once per request: {}",
        heavy.hits()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_changed_record_moves_traffic_after_its_ttl() {
    let old = Backend::start("old", Behavior::Ok).await;
    let port = old.addr.port();
    let new = Backend::start_at(
        SocketAddr::from(([127, 0, 0, 2], port)),
        "new",
        Behavior::Ok,
    )
    .await;
    let Some(mut dns) = Dnsmasq::start(&["host-record=moving.example.test,127.0.0.1".into()])
    else {
        return;
    };
    let target = format!("moving.example.test:{port}");
    let gw = dns_gateway(&pool_yaml("", "", &[&target]), &dns).await;
    assert!(
        eventually(RESOLVE_WAIT, || addresses_of(&gw, "pool", &target)
            == vec![old.addr])
        .await,
        "{:?}",
        gw.upstream_status("pool")
    );
    assert_eq!(get(&gw, "/").await.header("x-backend"), "old");

    dns.restart(&["host-record=moving.example.test,127.0.0.2".into()]);
    assert!(
        eventually(RESOLVE_WAIT, || addresses_of(&gw, "pool", &target)
            == vec![new.addr])
        .await,
        "the new record replaces the old address: {:?}",
        gw.upstream_status("pool")
    );
    let old_hits = old.hits();
    for i in 0..20 {
        let reply = get(&gw, "/").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert_eq!(reply.header("x-backend"), "new");
    }
    assert_eq!(
        old.hits(),
        old_hits,
        "nothing goes to the old address any more"
    );
    gw.shutdown().await;
}

/// A service whose `host` is a plain hostname (no upstream) is resolved through the
/// configured nameserver too.
#[tokio::test]
async fn a_service_hostname_resolves_through_the_configured_server() {
    let backend = Backend::start("direct", Behavior::Ok).await;
    let Some(dns) = Dnsmasq::start(&["host-record=direct.example.test,127.0.0.1".into()]) else {
        return;
    };
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: direct
    url: http://direct.example.test:{port}
    routes: [{{ name: r, paths: ["/"] }}]
"#,
        port = backend.addr.port()
    );
    let gw = dns_gateway(&yaml, &dns).await;
    let reply = get(&gw, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "direct");
    gw.shutdown().await;
}
