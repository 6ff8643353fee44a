//! Upgraded connections (WebSocket over HTTP/1.1 `Upgrade`): after the upstream
//! answered `101 Switching Protocols`, the client's and the upstream's connections are
//! joined and bytes flow both ways until either side closes.
//!
//! What Kong (nginx) does, and so Sluice: the upgrade request is routed, balanced and
//! retried like any other request (a connect failure goes to another address; nothing
//! was sent), `Upgrade` and `Connection: upgrade` are passed on instead of being dropped
//! as hop-by-hop headers, and the tunnel is closed when the upstream sends nothing for the
//! service's `read_timeout` (nginx's `proxy_read_timeout` applies between two reads from
//! the upstream: the reason Kong users raise `read_timeout` for quiet WebSockets).
//!
//! A tunnel holds its address's in-flight count until it closes, so least-connections
//! and P2C see a long-lived WebSocket as load.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::forward::InFlight;

/// The protocol a client asks to switch to, when its request is a WebSocket upgrade:
/// HTTP/1.1, `Upgrade: websocket` and the `upgrade` token in `Connection` (RFC 9110
/// §7.8). Like Kong, only `websocket` is passed on; any other `Upgrade` (h2c, TLS) is
/// dropped as a hop-by-hop header and the request proxied as an ordinary one. An HTTP/2
/// request never is an upgrade (RFC 8441's extended CONNECT is not supported).
pub fn requested_protocol<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let protocol = headers.get(header::UPGRADE)?;
    let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
    (websocket && connection_has_upgrade(headers)).then(|| protocol.clone())
}

/// Whether a `Connection` header lists the `upgrade` token.
fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Put the upgrade request headers back after hop-by-hop stripping removed them.
pub fn restore_upgrade_headers(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Join `client` (once hyper hands its connection over) and `upstream` (the upstream
/// connection, with any bytes read past the `101` replayed first), until either side
/// closes or the upstream is silent for `idle_limit`. Runs as its own task.
pub async fn run<U>(
    client: OnUpgrade,
    upstream: U,
    idle_limit: Duration,
    in_flight: Option<InFlight>,
) where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade hand-over failed; tunnel not opened");
            return;
        }
    };
    let started = Instant::now();
    let last_upstream_read = Arc::new(AtomicU64::new(0));
    let mut client = TokioIo::new(client);
    let mut upstream = Watched {
        inner: upstream,
        started,
        last_read_ms: last_upstream_read.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let last = Duration::from_millis(last_upstream_read.load(Ordering::Relaxed));
        let deadline = started + last + idle_limit;
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "tunnel ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let last = Duration::from_millis(last_upstream_read.load(Ordering::Relaxed));
                if Instant::now() >= started + last + idle_limit {
                    tracing::debug!(?idle_limit, "tunnel closed: the upstream sent nothing for read_timeout");
                    break;
                }
            }
        }
    }
    drop(in_flight);
}

/// The upstream side of a tunnel, stamping the time of every read that brought bytes.
struct Watched<S> {
    inner: S,
    started: Instant,
    last_read_ms: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_read_ms.store(ms, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::new(());
        *r.version_mut() = version;
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn an_upgrade_needs_the_header_and_the_connection_token() {
        let ws = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert_eq!(
            requested_protocol(&request(Version::HTTP_11, &ws)).unwrap(),
            "websocket"
        );
        assert!(
            requested_protocol(&request(Version::HTTP_11, &[("upgrade", "websocket")])).is_none()
        );
        assert!(
            requested_protocol(&request(Version::HTTP_11, &[("connection", "upgrade")])).is_none()
        );
        assert!(requested_protocol(&request(Version::HTTP_2, &ws)).is_none());
        assert!(requested_protocol(&request(Version::HTTP_10, &ws)).is_none());
        let h2c = [
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
        ];
        assert!(
            requested_protocol(&request(Version::HTTP_11, &h2c)).is_none(),
            "only websocket is tunnelled, as in Kong"
        );
    }
}
