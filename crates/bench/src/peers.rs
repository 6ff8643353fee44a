//! The same failover setup written for each proxy under test: Sluice (Kong YAML with
//! region tags), NGINX, HAProxy and Envoy, each with its own best failover features.
//!
//! Shared settings, so that the comparison is about mechanisms and not about numbers
//! picked differently ([`Settings`]): connect timeout, per-try timeout, number of
//! retries, active health-check interval and thresholds, passive failure thresholds.
//! Where a proxy lacks a feature, the nearest thing it has is used and the comment says
//! so. These files are what `BENCHMARKS.md` reports on; `drill config` writes them out.
//!
//! Topology: primaries (tier 0, region `primary`) and secondaries (tier 1, region
//! `secondary`); the secondary takes traffic only when the primary cannot.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The proxies this crate can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Sluice,
    Nginx,
    Haproxy,
    Envoy,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Sluice => "sluice",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Envoy => "envoy",
        }
    }

    /// File name of the config this peer reads.
    pub fn config_file(self) -> &'static str {
        match self {
            Peer::Sluice => "kong.yml",
            Peer::Nginx => "nginx.conf",
            Peer::Haproxy => "haproxy.cfg",
            Peer::Envoy => "envoy.yaml",
        }
    }
}

/// Where everything listens.
#[derive(Clone, Debug)]
pub struct Layout {
    pub primaries: Vec<SocketAddr>,
    pub secondaries: Vec<SocketAddr>,
    /// The proxy's listener (the load goes here).
    pub listen: SocketAddr,
    /// Admin listener (Sluice admin API, Envoy admin); unused by NGINX and HAProxy.
    pub admin: SocketAddr,
    /// Sluice's status page listener; unused by the others.
    pub gui: SocketAddr,
}

/// The knobs every proxy gets the same value for.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connect_timeout_ms: u64,
    /// Per-try timeout: how long one attempt may wait for an answer.
    pub per_try_timeout_ms: u64,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Active health-check interval and timeout.
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    /// Consecutive failed / passed checks before a target is marked down / up.
    pub check_fall: u32,
    pub check_rise: u32,
    /// Consecutive 5xx answers from real traffic before a target is taken out.
    pub passive_http_failures: u32,
    /// Sluice's failback hold-down and ramp (the peers have no equivalent; they fail
    /// back as soon as their checks pass).
    pub sluice_hold_down: &'static str,
    /// Tier overprovisioning factor for Sluice and Envoy (same meaning in both; NGINX
    /// and HAProxy have no graded spill: backups serve only when every primary is out).
    pub sluice_overprovisioning: f64,
    pub sluice_ramp: &'static str,
    /// NGINX and HAProxy send the headers a Kong gateway (and Sluice) sends: upstream,
    /// `X-Forwarded-For/-Proto/-Host/-Port/-Path`, `X-Real-IP`, `Via` and a request id;
    /// to the client, `Via`, two latency headers and the request id. The same job, so
    /// the same bytes through the kernel: without them the peers write about 240 bytes
    /// per request where Sluice writes about 610. Off (`drill config --plain-peers`)
    /// for the comparison with peers doing less that BENCHMARKS.md reported before.
    pub kong_headers: bool,
}

impl Default for Settings {
    /// Drill values. 250 ms connect: loopback connects take microseconds, so this only
    /// matters for a dead host, where it bounds the cost of one try. 500 ms per try: well
    /// above the brownout's 200 ms (slow answers still succeed) while keeping the hang
    /// drill's worst case short. 5 retries: Kong's default. 500 ms checks, 2 to fall and
    /// 2 to rise: HAProxy's `inter 500ms fall 2 rise 2` from the brief, applied to all.
    /// Hold-down and ramp are shortened from the example's 10 s/20 s so that a drill
    /// sees a full failback within half a minute.
    fn default() -> Self {
        Settings {
            connect_timeout_ms: 250,
            per_try_timeout_ms: 500,
            retries: 5,
            check_interval_ms: 500,
            check_timeout_ms: 500,
            check_fall: 2,
            check_rise: 2,
            passive_http_failures: 2,
            sluice_hold_down: "3s",
            sluice_overprovisioning: 1.5,
            sluice_ramp: "3s",
            kong_headers: true,
        }
    }
}

/// The config file for `peer` (paths inside it point into `dir`).
pub fn config(peer: Peer, layout: &Layout, settings: &Settings, dir: &Path) -> String {
    match peer {
        Peer::Sluice => sluice(layout, settings),
        Peer::Nginx => nginx(layout, settings, dir),
        Peer::Haproxy => haproxy(layout, settings),
        Peer::Envoy => envoy(layout, settings),
    }
}

/// Command line (program and arguments) that runs `peer` on `config_path`.
pub fn command_line(
    peer: Peer,
    sluice: &Path,
    layout: &Layout,
    config_path: &Path,
    dir: &Path,
) -> Vec<String> {
    let config = config_path.display().to_string();
    match peer {
        Peer::Sluice => vec![
            sluice.display().to_string(),
            "run".into(),
            "--config".into(),
            config,
            "--proxy-listen".into(),
            layout.listen.to_string(),
            "--admin-listen".into(),
            layout.admin.to_string(),
            "--gui-listen".into(),
            layout.gui.to_string(),
            "--log-level".into(),
            "warn".into(),
        ],
        Peer::Nginx => vec![
            "nginx".into(),
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            config,
        ],
        Peer::Haproxy => vec!["haproxy".into(), "-db".into(), "-f".into(), config],
        Peer::Envoy => vec![
            "envoy".into(),
            "-c".into(),
            config,
            // One worker thread: the same single core every proxy gets.
            "--concurrency".into(),
            "1".into(),
            "--log-level".into(),
            "warn".into(),
            // Several Envoys may run one after another; keep their shared memory apart.
            "--base-id".into(),
            layout.listen.port().to_string(),
        ],
    }
}

fn sluice(layout: &Layout, s: &Settings) -> String {
    let mut targets = String::new();
    for addr in &layout.primaries {
        let _ = writeln!(
            targets,
            "      - {{target: \"{addr}\", tags: [region:primary]}}"
        );
    }
    for addr in &layout.secondaries {
        let _ = writeln!(
            targets,
            "      - {{target: \"{addr}\", tags: [region:secondary]}}"
        );
    }
    let interval = s.check_interval_ms as f64 / 1000.0;
    let timeout = s.check_timeout_ms as f64 / 1000.0;
    format!(
        r#"# Sluice drill/benchmark configuration: plain Kong 3.x declarative YAML.
# region:primary targets are tier 0; region:secondary targets take traffic only when the
# primary lacks healthy capacity. Balancing is Kong's `latency` algorithm (P2C over peak
# EWMA in Sluice); passive checks and outlier ejection catch gray failures.
_format_version: "3.0"

services:
  - name: drill
    host: drill.upstream
    retries: {retries}
    connect_timeout: {connect}
    read_timeout: {per_try}
    write_timeout: {per_try}
    routes:
      - name: drill
        paths: [/]
        # Retry 5xx answers on another target, as the peers below are configured to
        # (Kong itself retries only connection errors and timeouts).
        tags: ["sluice:retry-on=500|502|503|504"]

upstreams:
  - name: drill.upstream
    algorithm: latency
    # overprovisioning 1.5: the three primaries are sized N+1 (two carry the load), so
    # losing one must not spill to the secondary (1.4, Envoy's default, keeps a tier whole
    # only down to 72 % healthy and sent 6.5 % to the secondary here). Sluice's own
    # default is 1.5 since f530ca2; written out so the Envoy config can match it.
    tags: ["sluice:hold-down={hold}", "sluice:ramp={ramp}", "sluice:outlier=on", "sluice:overprovisioning={overprovisioning}"]
    healthchecks:
      active:
        type: http
        http_path: /health
        timeout: {timeout}
        healthy:   {{interval: {interval}, successes: {rise}}}
        unhealthy: {{interval: {interval}, http_failures: {fall}, tcp_failures: {fall}, timeouts: {fall}}}
      passive:
        healthy:   {{successes: {rise}}}
        unhealthy: {{http_failures: {passive}, tcp_failures: 1, timeouts: {fall}}}
    targets:
{targets}"#,
        retries = s.retries,
        connect = s.connect_timeout_ms,
        per_try = s.per_try_timeout_ms,
        hold = s.sluice_hold_down,
        overprovisioning = s.sluice_overprovisioning,
        ramp = s.sluice_ramp,
        rise = s.check_rise,
        fall = s.check_fall,
        passive = s.passive_http_failures,
    )
}

fn nginx(layout: &Layout, s: &Settings, dir: &Path) -> String {
    let mut servers = String::new();
    // NGINX OSS has no active checks: passive only. `max_fails` failures within
    // `fail_timeout` take a server out for `fail_timeout`; 2 and 5 s match the others'
    // fall count and a short recovery.
    for addr in &layout.primaries {
        let _ = writeln!(
            servers,
            "        server {addr} max_fails={} fail_timeout=5s;",
            s.passive_http_failures
        );
    }
    for addr in &layout.secondaries {
        let _ = writeln!(servers, "        server {addr} backup;");
    }
    let dir = dir.display();
    // Kong's own template sets these with the same variables (Kong adds the
    // latency headers from Lua; `$upstream_header_time` and `$request_time` are
    // NGINX's nearest equivalents, in seconds).
    let headers = if s.kong_headers {
        r#"
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Path $uri;
            proxy_set_header Via "1.1 nginx";
            proxy_set_header X-Request-Id $request_id;
            add_header Via "1.1 nginx" always;
            add_header X-Upstream-Latency $upstream_header_time always;
            add_header X-Proxy-Latency $request_time always;
            add_header X-Request-Id $request_id always;"#
    } else {
        ""
    };
    format!(
        r#"# NGINX drill/benchmark configuration: `backup` servers take traffic only when every
# primary is unavailable; proxy_next_upstream retries on errors, timeouts and 5xx, also
# for non-idempotent requests. One worker, pinned by the caller.
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream drill {{
        # least_conn is OSS NGINX's nearest thing to latency-aware balancing (least_time is
        # NGINX Plus, or OSS only from 1.31).
        least_conn;
{servers}        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://drill;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout {connect}ms;
            proxy_read_timeout {per_try}ms;
            proxy_send_timeout {per_try}ms;
            proxy_next_upstream error timeout http_500 http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries {tries};{headers}
        }}
    }}
}}
"#,
        listen = layout.listen,
        connect = s.connect_timeout_ms,
        per_try = s.per_try_timeout_ms,
        tries = s.retries + 1,
    )
}

fn haproxy(layout: &Layout, s: &Settings) -> String {
    // The Kong headers (see `Settings::kong_headers`): `option forwardfor` writes
    // X-Forwarded-For, `unique-id-header` the request id; the latency header is the
    // time to the response header in milliseconds (the `%Tr` timer).
    let headers = if s.kong_headers {
        r#"
    option forwardfor
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request set-header X-Forwarded-Path %[path]
    http-request set-header Via "1.1 haproxy"
    http-response set-header Via "1.1 haproxy"
    http-response set-header X-Upstream-Latency %Tr
    http-response set-header X-Request-Id %[unique-id]"#
    } else {
        ""
    };
    let mut servers = String::new();
    for (index, addr) in layout.primaries.iter().enumerate() {
        let _ = writeln!(servers, "    server p{} {addr} check", index + 1);
    }
    for (index, addr) in layout.secondaries.iter().enumerate() {
        let _ = writeln!(servers, "    server s{} {addr} check backup", index + 1);
    }
    format!(
        r#"# HAProxy drill/benchmark configuration: `backup` servers take traffic only when every
# primary is down; retries redispatch to another server on every retry and cover
# connection failures, empty answers, timeouts and 500/502/503/504; `observe layer7`
# marks a server down after {passive} consecutive 5xx from real traffic.
global
    nbthread 1
    # Bounded by the container's open-file limit (20,000 here): HAProxy needs two
    # descriptors per proxied connection.
    maxconn 4096

defaults
    mode http
    timeout connect {connect}ms
    timeout client 30s
    timeout server {per_try}ms
    timeout http-keep-alive 30s
    retries {retries}
    option redispatch 1
    retry-on all-retryable-errors
    option http-keep-alive

frontend drill
    bind {listen}{headers}
    default_backend drill

backend drill
    # leastconn is HAProxy's nearest thing to latency-aware balancing.
    balance leastconn
    option httpchk GET /health
    http-reuse always
    default-server inter {interval}ms fall {fall} rise {rise} observe layer7 error-limit {passive} on-error mark-down
{servers}"#,
        listen = layout.listen,
        connect = s.connect_timeout_ms,
        per_try = s.per_try_timeout_ms,
        retries = s.retries,
        interval = s.check_interval_ms,
        fall = s.check_fall,
        rise = s.check_rise,
        passive = s.passive_http_failures,
    )
}

/// Milliseconds as a decimal number of seconds (`250` → `0.25`).
fn seconds(millis: u64) -> String {
    let text = format!("{}.{:03}", millis / 1000, millis % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn envoy(layout: &Layout, s: &Settings) -> String {
    let endpoints = |addrs: &[SocketAddr]| {
        let mut out = String::new();
        for addr in addrs {
            let _ = write!(
                out,
                "\n        - endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}",
                addr.ip(),
                addr.port()
            );
        }
        out
    };
    format!(
        r#"# Envoy drill/benchmark configuration: priority 0 = primary, priority 1 = secondary
# (Envoy spills by its overprovisioning factor, set as for Sluice); active HTTP health checks; outlier
# detection on consecutive 5xx; retries on 5xx/reset/connect failure to a different host
# (previous_hosts) and a different priority (previous_priorities); circuit breakers
# raised so that retries are not capped at Envoy's default 3 concurrent.
admin:
  address: {{socket_address: {{address: "{admin_ip}", port_value: {admin_port}}}}}
static_resources:
  listeners:
  - name: drill
    address: {{socket_address: {{address: "{listen_ip}", port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: drill
          codec_type: HTTP1
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: drill
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: drill
                  timeout: 10s
                  retry_policy:
                    retry_on: "5xx,reset,connect-failure,refused-stream"
                    num_retries: {retries}
                    per_try_timeout: {per_try}s
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                    host_selection_retry_max_attempts: 5
                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
                        update_frequency: 2
  clusters:
  - name: drill
    type: STATIC
    connect_timeout: {connect}s
    # LEAST_REQUEST (P2C on active requests) is Envoy's nearest thing to latency-aware
    # balancing.
    lb_policy: LEAST_REQUEST
    circuit_breakers:
      thresholds:
      - {{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100000}}
    health_checks:
    - timeout: {check_timeout}s
      interval: {interval}s
      unhealthy_threshold: {fall}
      healthy_threshold: {rise}
      http_health_check: {{path: /health}}
    outlier_detection:
      consecutive_5xx: {passive}
      consecutive_gateway_failure: {passive}
      interval: 1s
      base_ejection_time: 5s
      max_ejection_percent: 100
    load_assignment:
      cluster_name: drill
      policy: {{overprovisioning_factor: {overprovisioning_percent}}}
      endpoints:
      - priority: 0
        lb_endpoints:{primaries}
      - priority: 1
        lb_endpoints:{secondaries}
"#,
        admin_ip = layout.admin.ip(),
        admin_port = layout.admin.port(),
        listen_ip = layout.listen.ip(),
        listen_port = layout.listen.port(),
        retries = s.retries,
        // Envoy's durations are protobuf Durations: seconds only ("0.25s").
        per_try = seconds(s.per_try_timeout_ms),
        connect = seconds(s.connect_timeout_ms),
        check_timeout = seconds(s.check_timeout_ms),
        interval = seconds(s.check_interval_ms),
        fall = s.check_fall,
        rise = s.check_rise,
        passive = s.passive_http_failures,
        // Envoy writes the factor in percent (default 140).
        overprovisioning_percent = (s.sluice_overprovisioning * 100.0).round() as u32,
        primaries = endpoints(&layout.primaries),
        secondaries = endpoints(&layout.secondaries),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Layout {
            primaries: vec![addr(9001), addr(9002), addr(9003)],
            secondaries: vec![addr(9011), addr(9012)],
            listen: addr(8000),
            admin: addr(8001),
            gui: addr(8002),
        }
    }

    #[test]
    fn every_config_names_every_backend_with_its_role() {
        let dir = Path::new("/tmp/drill");
        for peer in [Peer::Sluice, Peer::Nginx, Peer::Haproxy, Peer::Envoy] {
            let text = config(peer, &layout(), &Settings::default(), dir);
            for port in [9001, 9002, 9003, 9011, 9012] {
                assert!(text.contains(&port.to_string()), "{peer:?} lacks {port}");
            }
            // Sluice takes its listener on the command line, as Kong does.
            if peer != Peer::Sluice {
                assert!(text.contains("8000"), "{peer:?} lacks its listener");
            }
        }
        let nginx = config(Peer::Nginx, &layout(), &Settings::default(), dir);
        assert_eq!(nginx.matches(" backup;").count(), 2);
        let haproxy = config(Peer::Haproxy, &layout(), &Settings::default(), dir);
        assert_eq!(haproxy.matches(" check backup").count(), 2);
        let sluice = config(Peer::Sluice, &layout(), &Settings::default(), dir);
        assert_eq!(sluice.matches("tags: [region:secondary]").count(), 2);
        assert_eq!(sluice.matches("tags: [region:primary]").count(), 3);
    }

    /// NGINX and HAProxy send the headers Sluice sends unless asked not to.
    #[test]
    fn peers_send_kongs_headers_unless_plain() {
        let dir = Path::new("/tmp/drill");
        let plain = Settings {
            kong_headers: false,
            ..Settings::default()
        };
        for peer in [Peer::Nginx, Peer::Haproxy] {
            let full = config(peer, &layout(), &Settings::default(), dir);
            for header in [
                "X-Real-IP",
                "X-Forwarded-Proto",
                "X-Forwarded-Host",
                "X-Forwarded-Port",
                "X-Forwarded-Path",
                "Via",
                "X-Request-Id",
                "X-Upstream-Latency",
            ] {
                assert!(full.contains(header), "{peer:?} lacks {header}");
            }
            assert!(!config(peer, &layout(), &plain, dir).contains("X-Real-IP"));
        }
    }

    #[test]
    fn shared_settings_reach_every_proxy() {
        let settings = Settings {
            per_try_timeout_ms: 777,
            ..Settings::default()
        };
        let dir = Path::new("/tmp/drill");
        assert!(config(Peer::Sluice, &layout(), &settings, dir).contains("read_timeout: 777"));
        assert!(
            config(Peer::Nginx, &layout(), &settings, dir).contains("proxy_read_timeout 777ms")
        );
        assert!(config(Peer::Haproxy, &layout(), &settings, dir).contains("timeout server 777ms"));
        assert!(config(Peer::Envoy, &layout(), &settings, dir).contains("per_try_timeout: 0.777s"));
    }
}
