//! Optional access log: one JSON line per request.
//!
//! Records are handed to a background task over a bounded channel with `try_send`: a
//! slow disk or a blocked stdout drops log lines (counted) instead of slowing requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::record::{RequestRecord, TryOutcome};

/// Queued lines before the log starts dropping. 4096 records absorb a burst of several
/// thousand requests per second for the second or so a stalled writer may need.
pub const ACCESS_LOG_QUEUE: usize = 4096;

/// Handle to the access-log writer task.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<RequestRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Start the writer task on `out` (e.g. `tokio::io::stdout()`).
    pub fn spawn<W: AsyncWrite + Unpin + Send + 'static>(mut out: W) -> AccessLog {
        let (tx, mut rx) = mpsc::channel::<RequestRecord>(ACCESS_LOG_QUEUE);
        tokio::spawn(async move {
            let mut line = Vec::with_capacity(512);
            while let Some(record) = rx.recv().await {
                line.clear();
                if serde_json::to_writer(&mut line, &to_json(&record)).is_err() {
                    continue;
                }
                line.push(b'\n');
                if out.write_all(&line).await.is_err() {
                    break;
                }
                if rx.is_empty() {
                    let _ = out.flush().await;
                }
            }
        });
        AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queue a record; never waits.
    pub fn log(&self, record: RequestRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The JSON shape of one line (field names follow Kong's log serializer where it has one).
pub fn to_json(record: &RequestRecord) -> serde_json::Value {
    let tries: Vec<serde_json::Value> = record
        .tries
        .iter()
        .map(|t| {
            serde_json::json!({
                "ip": t.address.ip().to_string(),
                "port": t.address.port(),
                "region": &*t.region,
                "tier": t.tier,
                "state": t.outcome.as_str(),
                "code": match t.outcome { TryOutcome::Status(code) => Some(code), _ => None },
                "balancer_latency": u64::try_from(t.latency.as_millis()).unwrap_or(u64::MAX),
                "hedge": t.hedge,
            })
        })
        .collect();
    serde_json::json!({
        "request_id": format!("{:032x}", record.request_id),
        "method": record.method.as_str(),
        "route": record.route.as_ref().map(|r| &*r.label),
        "service": record.service.as_ref().map(|s| &*s.label),
        "upstream": record.upstream.as_deref(),
        "status": record.status,
        "source": record.source.as_str(),
        "latencies": {
            "request": u64::try_from(record.request_latency.as_millis()).unwrap_or(u64::MAX),
            "proxy": record.upstream_latency.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "kong": u64::try_from(record.proxy_latency.as_millis()).unwrap_or(u64::MAX),
        },
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "tries": tries,
        "crossed_region": record.crossed_region,
        "crossed_tier": record.crossed_tier,
        "retry_budget_exhausted": record.retry_budget_exhausted,
        "try_timeouts": record.try_timeouts,
        "hedged": record.hedged,
        "error": record.error.map(|e| e.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::record::{ResponseSource, RouteRef, Tries, TryRecord};

    fn record() -> RequestRecord {
        let mut tries = Tries::default();
        tries.push(TryRecord {
            address: SocketAddr::from(([10, 0, 0, 1], 8080)),
            region: Arc::from("eu"),
            tier: 0,
            outcome: TryOutcome::ConnectFailed,
            latency: Duration::from_millis(3),
            hedge: false,
        });
        tries.push(TryRecord {
            address: SocketAddr::from(([10, 0, 1, 1], 8080)),
            region: Arc::from("us"),
            tier: 1,
            outcome: TryOutcome::Status(200),
            latency: Duration::from_millis(12),
            hedge: false,
        });
        RequestRecord {
            request_id: 0xab,
            method: http::Method::GET,
            route: Some(RouteRef {
                index: 0,
                label: Arc::from("orders"),
            }),
            service: None,
            upstream: Some(Arc::from("pool")),
            status: 200,
            source: ResponseSource::Upstream,
            tries,
            request_latency: Duration::from_millis(20),
            upstream_latency: Some(Duration::from_millis(12)),
            proxy_latency: Duration::from_millis(8),
            bytes_in: 0,
            bytes_out: 5,
            crossed_region: true,
            crossed_tier: true,
            retry_budget_exhausted: false,
            try_timeouts: 0,
            hedged: false,
            error: None::<ErrorKind>,
        }
    }

    #[test]
    fn line_has_kong_style_fields_and_tries() {
        let json = to_json(&record());
        assert_eq!(json["request_id"], format!("{:032x}", 0xab));
        assert_eq!(json["route"], "orders");
        assert_eq!(json["source"], "service");
        assert_eq!(json["latencies"]["proxy"], 12);
        assert_eq!(json["tries"][0]["state"], "connect_failed");
        assert_eq!(json["tries"][1]["code"], 200);
        assert_eq!(json["tries"][1]["region"], "us");
        assert_eq!(json["crossed_region"], true);
    }

    #[tokio::test]
    async fn writer_emits_one_line_per_record() {
        let (writer, mut reader) = tokio::io::duplex(64 * 1024);
        let log = AccessLog::spawn(writer);
        log.log(record());
        log.log(record());
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while seen.iter().filter(|&&b| b == b'\n').count() < 2 {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "writer closed early");
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(seen).unwrap();
        for line in text.lines() {
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(parsed["status"], 200);
        }
        assert_eq!(log.dropped(), 0);
    }
}
