//! Shared test helpers: backends, a gateway built from Kong YAML, and an HTTP client.

pub mod backend;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_config::Config;
use sluice_proxy::{Gateway, GatewayOptions};

/// Parse Kong declarative YAML (panics with the diagnostics if it does not validate).
pub fn config(yaml: &str) -> Config {
    match sluice_config::parse(yaml, "test.yml") {
        Ok(loaded) => loaded.config,
        Err(diagnostics) => panic!("test config does not validate:\n{diagnostics}\n{yaml}"),
    }
}

/// Start a gateway on an ephemeral loopback port.
pub async fn gateway(yaml: &str) -> Gateway {
    gateway_with(yaml, GatewayOptions::default()).await
}

pub async fn gateway_with(yaml: &str, mut options: GatewayOptions) -> Gateway {
    options.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    options.shutdown_grace = Duration::from_secs(2);
    options.fast_lane = crate::FAST_LANE;
    Gateway::start(config(yaml), options).await.unwrap()
}

/// The `targets:` entries of an upstream nested under `upstreams[]` in test YAML, one
/// `- target: ip:port` line each at the indentation the test configs use.
pub fn target_entries(targets: &[SocketAddr]) -> String {
    targets
        .iter()
        .map(|t| format!("      - target: \"{t}\"\n"))
        .collect()
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Send a request through the gateway; `host` sets the Host header.
pub async fn send(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{}", gw.local_addr(), path))
        .header("host", host);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(gw: &Gateway, path: &str) -> Reply {
    send(gw, "GET", "example.test", path, &[], "").await
}

/// Poll `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
