//! Active health probes (Kong's `healthchecks.active`).
//!
//! `http`: connect, send `GET <http_path> HTTP/1.0` with the configured headers and
//! `Host` = the upstream's `host_header` or the target host, and read only the status
//! line, as lua-resty-healthcheck does. `tcp`: a successful connect is a success.
//! `https`/`grpc`/`grpcs` need TLS or HTTP/2 in the prober, which this build does not
//! have: they are reported as TCP connects (a reachable port counts as healthy) and the
//! driver logs that once per upstream. The whole probe is bounded by `timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_core::event::ProbeOutcome;
use sluice_core::topology::{ActiveHealthCheck, ProbeType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line accepted. `HTTP/1.1 200 OK\r\n` is 17 bytes; 1 KiB leaves room
/// for any reason phrase and stops a misbehaving peer from streaming bytes at the prober.
const MAX_STATUS_LINE: usize = 1024;

/// Run one probe against `addr`.
pub async fn probe(addr: SocketAddr, check: &ActiveHealthCheck, host_header: &str) -> ProbeOutcome {
    match tokio::time::timeout(
        effective_timeout(check),
        probe_inner(addr, check, host_header),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Timeout,
    }
}

async fn probe_inner(
    addr: SocketAddr,
    check: &ActiveHealthCheck,
    host_header: &str,
) -> ProbeOutcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return ProbeOutcome::TcpFailure;
    };
    if !matches!(check.probe_type, ProbeType::Http) {
        return ProbeOutcome::TcpSuccess;
    }
    let _ = stream.set_nodelay(true);
    let request = build_request(check, host_header);
    if stream.write_all(request.as_bytes()).await.is_err() {
        return ProbeOutcome::TcpFailure;
    }
    read_status(&mut stream).await
}

fn build_request(check: &ActiveHealthCheck, host_header: &str) -> String {
    let path = if check.http_path.starts_with('/') {
        check.http_path.as_str()
    } else {
        "/"
    };
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {host_header}\r\n");
    for (name, values) in &check.headers {
        for value in values {
            // Header text comes from validated config; CR/LF would split the request,
            // so such a value is skipped rather than sent.
            if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
                continue;
            }
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\nUser-Agent: sluice-healthcheck\r\n\r\n");
    request
}

async fn read_status(stream: &mut TcpStream) -> ProbeOutcome {
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    loop {
        let Some(spare) = buf.get_mut(len..) else {
            return ProbeOutcome::TcpFailure;
        };
        if spare.is_empty() {
            return ProbeOutcome::TcpFailure;
        }
        match stream.read(spare).await {
            Ok(0) | Err(_) => return parse_status(buf.get(..len).unwrap_or(&[])),
            Ok(n) => len += n,
        }
        let seen = buf.get(..len).unwrap_or(&[]);
        if seen.contains(&b'\n') {
            return parse_status(seen);
        }
    }
}

/// Parse `HTTP/1.x NNN ...` from the start of `bytes`.
fn parse_status(bytes: &[u8]) -> ProbeOutcome {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let Ok(line) = std::str::from_utf8(line) else {
        return ProbeOutcome::TcpFailure;
    };
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") && code.len() == 3 => {
            match code.parse::<u16>() {
                Ok(code) if (100..=999).contains(&code) => ProbeOutcome::Status(code),
                _ => ProbeOutcome::TcpFailure,
            }
        }
        _ => ProbeOutcome::TcpFailure,
    }
}

/// Probe timeouts of zero would never let a probe succeed; the config layer rejects
/// them, this is the floor if one slips through.
pub fn effective_timeout(check: &ActiveHealthCheck) -> Duration {
    check.timeout.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\n"),
            ProbeOutcome::Status(200)
        );
        assert_eq!(parse_status(b"HTTP/1.0 503\r\n"), ProbeOutcome::Status(503));
        assert_eq!(parse_status(b"garbage\r\n"), ProbeOutcome::TcpFailure);
        assert_eq!(
            parse_status(b"HTTP/1.1 2000 OK\r\n"),
            ProbeOutcome::TcpFailure
        );
        assert_eq!(parse_status(b""), ProbeOutcome::TcpFailure);
    }

    #[test]
    fn request_carries_host_and_headers() {
        let mut check = sluice_core::topology::HealthChecks::default().active;
        check.http_path = "/status".into();
        check.headers = vec![("x-probe".into(), vec!["1".into(), "bad\r\nx: y".into()])];
        let request = build_request(&check, "api.internal:8080");
        assert!(request.starts_with("GET /status HTTP/1.0\r\nHost: api.internal:8080\r\n"));
        assert!(request.contains("x-probe: 1\r\n"));
        assert!(!request.contains("x: y"), "CR/LF values are dropped");
    }
}
