//! Active health probes (Kong's `healthchecks.active`), classified as
//! lua-resty-healthcheck classifies them so Kong-tuned thresholds mean the same here.
//!
//! - `http`: connect, send `GET <http_path> HTTP/1.0` with the configured headers and
//!   `Host` = the upstream's `host_header` or the target host, and read only the status
//!   line.
//! - `https`: the same request inside TLS. SNI (and the name the certificate must carry
//!   when verifying) is `https_sni`, else the `Host` value without its port (so the
//!   upstream's `host_header`, else the target's hostname; an IP literal sends no SNI);
//!   `https_verify_certificate: false` accepts any certificate (see
//!   [`crate::tls`] for why Kong offers that). The upstream's `client_certificate` is
//!   presented when set (mTLS). The TLS configurations are built once per process (per
//!   client certificate) and shared, not per probe.
//! - `tcp`: a successful connect is a success.
//! - `grpc`/`grpcs`: Kong's schema accepts them but its health checker implements only
//!   http, https and tcp. Sluice probes such targets with a TCP connect (a reachable port
//!   counts as healthy); the config check warns about it and the driver logs it once per
//!   upstream ([`falls_back_to_tcp`]).
//!
//! This is Kong's connection mode, the default. The opt-in keep-alive mode, which reuses
//! one connection per address, is [`crate::probe_keepalive`].
//!
//! Outcomes, per Kong: a connect that does not finish in time is a `Timeout`, a refused
//! one a `TcpFailure`; **any** failed TLS handshake — a rejected certificate, a protocol
//! mismatch, or one that does not finish in time — is a `TcpFailure`; a send or status
//! read that does not finish in time is a `Timeout`, one that errors a `TcpFailure`.
//! Kong's `timeout` bounds each socket operation; here it bounds the whole probe (one
//! deadline shared by every step), so one probe never takes longer than `timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_core::event::ProbeOutcome;
use sluice_core::topology::{ActiveHealthCheck, ProbeType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::client::TlsStream;

use crate::tls;

/// Longest status line accepted. `HTTP/1.1 200 OK\r\n` is 17 bytes; 1 KiB leaves room
/// for any reason phrase and stops a misbehaving peer from streaming bytes at the prober.
const MAX_STATUS_LINE: usize = 1024;

/// Whether `probe_type` is probed with a bare TCP connect although Kong's schema names a
/// richer protocol (gRPC health checking is implemented by neither Kong nor Sluice).
pub fn falls_back_to_tcp(probe_type: ProbeType) -> bool {
    matches!(probe_type, ProbeType::Grpc | ProbeType::Grpcs)
}

/// Run one probe against `addr`. `host_header` is the `Host` value to send (the
/// upstream's `host_header`, else the target's host, possibly with a port); `client` is
/// the upstream's `client_certificate`, presented by `https` probes.
pub async fn probe(
    addr: SocketAddr,
    check: &ActiveHealthCheck,
    host_header: &str,
    client: Option<&tls::ClientIdentity>,
) -> ProbeOutcome {
    let deadline = Instant::now() + effective_timeout(check);
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return ProbeOutcome::Timeout,
        Ok(Err(_)) => return ProbeOutcome::TcpFailure,
        Ok(Ok(stream)) => stream,
    };
    match check.probe_type {
        ProbeType::Tcp | ProbeType::Grpc | ProbeType::Grpcs => ProbeOutcome::TcpSuccess,
        ProbeType::Http => {
            let _ = stream.set_nodelay(true);
            exchange(
                stream,
                deadline,
                &build_request(check, host_header, HttpVersion::Kong),
            )
            .await
        }
        // Boxed: TLS session state is kilobytes, and keeping it out of line keeps the
        // `http` and `tcp` probe futures (the common case) small.
        ProbeType::Https => {
            Box::pin(https_exchange(stream, deadline, check, host_header, client)).await
        }
    }
}

/// The `https` probe on a connected stream: TLS handshake, then [`exchange`].
async fn https_exchange(
    stream: TcpStream,
    deadline: Instant,
    check: &ActiveHealthCheck,
    host_header: &str,
    client: Option<&tls::ClientIdentity>,
) -> ProbeOutcome {
    let Some(tls_stream) = tls_handshake(stream, deadline, check, host_header, client).await else {
        return ProbeOutcome::TcpFailure;
    };
    exchange(
        tls_stream,
        deadline,
        &build_request(check, host_header, HttpVersion::Kong),
    )
    .await
}

/// The TLS handshake of an `https` probe (both connection modes), before `deadline`,
/// presenting `client` (the upstream's `client_certificate`) when set. `None` when it
/// fails in any way: Kong reports every failed `sslhandshake`, timeouts included, as a
/// tcp failure.
pub(crate) async fn tls_handshake(
    stream: TcpStream,
    deadline: Instant,
    check: &ActiveHealthCheck,
    host_header: &str,
    client: Option<&tls::ClientIdentity>,
) -> Option<TlsStream<TcpStream>> {
    let _ = stream.set_nodelay(true);
    let sni = check
        .https_sni
        .as_deref()
        .unwrap_or_else(|| crate::headers::host_without_port(host_header));
    // That covers a name rustls cannot present and a first-use trust store load that
    // outlasts the deadline: the handshake never started in time.
    let handshake = async {
        let verify = check.https_verify_certificate;
        let connector = match client {
            Some(client) => client.probe_connector(verify, sni).await,
            None => tls::connector(verify, sni).await,
        }
        .ok()?;
        connector.connect(stream).await.ok()
    };
    timeout_at(deadline, handshake).await.ok().flatten()
}

/// Send `request`, then read and classify the status line, all before `deadline`.
async fn exchange<S>(mut stream: S, deadline: Instant, request: &str) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout_at(deadline, stream.write_all(request.as_bytes())).await {
        Err(_) => return ProbeOutcome::Timeout,
        Ok(Err(_)) => return ProbeOutcome::TcpFailure,
        Ok(Ok(())) => {}
    }
    // TLS buffers the request; flushing pushes it onto the socket.
    match timeout_at(deadline, stream.flush()).await {
        Err(_) => return ProbeOutcome::Timeout,
        Ok(Err(_)) => return ProbeOutcome::TcpFailure,
        Ok(Ok(())) => {}
    }
    timeout_at(deadline, read_status(&mut stream))
        .await
        .unwrap_or(ProbeOutcome::Timeout)
}

/// Which request line and connection header a probe sends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum HttpVersion {
    /// Kong's: `HTTP/1.0` and `Connection: close`, one connection per probe.
    Kong,
    /// The keep-alive mode's: `HTTP/1.1` and `Connection: keep-alive`.
    KeepAlive,
}

pub(crate) fn build_request(
    check: &ActiveHealthCheck,
    host_header: &str,
    version: HttpVersion,
) -> String {
    let path = if check.http_path.starts_with('/') {
        check.http_path.as_str()
    } else {
        "/"
    };
    let (line_end, connection) = match version {
        HttpVersion::Kong => ("HTTP/1.0", "close"),
        HttpVersion::KeepAlive => ("HTTP/1.1", "keep-alive"),
    };
    let mut request = format!("GET {path} {line_end}\r\nHost: {host_header}\r\n");
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
    request.push_str("Connection: ");
    request.push_str(connection);
    request.push_str("\r\nUser-Agent: sluice-healthcheck\r\n\r\n");
    request
}

/// Read the status line (up to the first `\n`) and classify it. Like Kong's
/// `sock:receive()`, a connection that ends before a whole line is a failed receive.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> ProbeOutcome {
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    loop {
        let Some(spare) = buf.get_mut(len..) else {
            return ProbeOutcome::TcpFailure;
        };
        if spare.is_empty() {
            // No line end within the limit: the status code, if any, is at the start.
            return parse_status_line(&buf);
        }
        match stream.read(spare).await {
            Ok(0) | Err(_) => return ProbeOutcome::TcpFailure,
            Ok(n) => len += n,
        }
        let seen = buf.get(..len).unwrap_or(&[]);
        if let Some(end) = seen.iter().position(|&b| b == b'\n') {
            return parse_status_line(seen.get(..end).unwrap_or(&[]));
        }
    }
}

/// Kong's status-line match, `^HTTP/\d+\.\d+\s+(\d+)` (case-insensitive). A line that
/// does not match is reported as status 0, which Kong counts as an HTTP failure (the
/// backend answered, but not with HTTP). A code outside every status list, however
/// large, is ignored by the classifier, so an overlong one saturates rather than
/// wrapping into a listed code.
pub(crate) fn parse_status_line(line: &[u8]) -> ProbeOutcome {
    const INVALID: ProbeOutcome = ProbeOutcome::Status(0);
    let Some((scheme, rest)) = line.split_at_checked(5) else {
        return INVALID;
    };
    if !scheme.eq_ignore_ascii_case(b"HTTP/") {
        return INVALID;
    }
    let (major, rest) = leading(rest, |b| b.is_ascii_digit());
    let Some(rest) = rest.strip_prefix(b".") else {
        return INVALID;
    };
    let (minor, rest) = leading(rest, |b| b.is_ascii_digit());
    // `\s` in PCRE: space, \t, \n, \v, \f, \r.
    let (space, rest) = leading(rest, |b| matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r'));
    let (code, _) = leading(rest, |b| b.is_ascii_digit());
    if major.is_empty() || minor.is_empty() || space.is_empty() || code.is_empty() {
        return INVALID;
    }
    // Every byte of `code` is an ASCII digit, so `digit - b'0'` is 0..=9.
    let code = code.iter().fold(0u16, |code, digit| {
        code.saturating_mul(10)
            .saturating_add(u16::from(digit - b'0'))
    });
    ProbeOutcome::Status(code)
}

/// Split `bytes` after its longest prefix whose bytes all satisfy `accept`.
fn leading(bytes: &[u8], accept: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let end = bytes
        .iter()
        .position(|&b| !accept(b))
        .unwrap_or(bytes.len());
    bytes.split_at(end)
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
    fn status_lines_parse_as_kong_matches_them() {
        use ProbeOutcome::Status;
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Status(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Status(503));
        assert_eq!(
            parse_status_line(b"http/1.1  204"),
            Status(204),
            "case-insensitive"
        );
        assert_eq!(parse_status_line(b"HTTP/2.0\t302 Found"), Status(302));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 2000 OK"),
            Status(2000),
            "ignored later"
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 99999999"), Status(u16::MAX));
        // Not HTTP: status 0, an HTTP failure.
        assert_eq!(parse_status_line(b"garbage"), Status(0));
        assert_eq!(parse_status_line(b"HTTP/1 200"), Status(0));
        assert_eq!(parse_status_line(b"HTTP/1.1 OK"), Status(0));
        assert_eq!(parse_status_line(b"HTTP/1.1200"), Status(0));
        assert_eq!(parse_status_line(b""), Status(0));
    }

    #[tokio::test]
    async fn only_a_whole_line_is_judged() {
        let read = |bytes: &'static [u8]| async move { read_status(&mut &*bytes).await };
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await,
            ProbeOutcome::Status(200)
        );
        assert_eq!(read(b"SSH-2.0-OpenSSH\r\n").await, ProbeOutcome::Status(0));
        // The peer closing before a line end is a failed receive, as in Kong.
        assert_eq!(read(b"HTTP/1.1 200 OK").await, ProbeOutcome::TcpFailure);
        assert_eq!(read(b"").await, ProbeOutcome::TcpFailure);
        // A line longer than the limit is judged by its start.
        let long = [b"HTTP/1.1 503 ".as_slice(), &[b'x'; 2 * MAX_STATUS_LINE]].concat();
        assert_eq!(
            read_status(&mut long.as_slice()).await,
            ProbeOutcome::Status(503)
        );
    }

    #[test]
    fn only_grpc_types_fall_back_to_tcp() {
        assert!(falls_back_to_tcp(ProbeType::Grpc));
        assert!(falls_back_to_tcp(ProbeType::Grpcs));
        assert!(!falls_back_to_tcp(ProbeType::Https));
        assert!(!falls_back_to_tcp(ProbeType::Http));
        assert!(!falls_back_to_tcp(ProbeType::Tcp));
    }

    #[test]
    fn request_carries_host_and_headers() {
        let mut check = sluice_core::topology::HealthChecks::default().active;
        check.http_path = "/status".into();
        check.headers = vec![("x-probe".into(), vec!["1".into(), "bad\r\nx: y".into()])];
        let request = build_request(&check, "api.internal:8080", HttpVersion::Kong);
        assert!(request.starts_with("GET /status HTTP/1.0\r\nHost: api.internal:8080\r\n"));
        assert!(request.contains("x-probe: 1\r\n"));
        assert!(request.contains("Connection: close\r\n"));
        assert!(!request.contains("x: y"), "CR/LF values are dropped");
        let request = build_request(&check, "api.internal:8080", HttpVersion::KeepAlive);
        assert!(request.starts_with("GET /status HTTP/1.1\r\nHost: api.internal:8080\r\n"));
        assert!(request.contains("Connection: keep-alive\r\n"));
    }
}
