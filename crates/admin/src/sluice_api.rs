//! Sluice's own Admin API endpoints, under `/sluice/`: what Kong has no words for.
//!
//! - `GET /sluice/upstreams`: per upstream, the traffic mode, the tiers with their regions
//!   and share of traffic, and per address its health, ejection, effective weight, latency
//!   EWMA and in-flight count. The status page draws this.
//! - `GET /sluice/decisions?since=<seq>`: the decision log (why traffic moved).
//! - `GET|POST /sluice/demo/faults`: the demo's fault panel, when the demo runs.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::decision::{DecisionRecord, TierShare};
use sluice_core::snapshot::{AddressView, Mode, Unavailable};

use crate::api::{AppState, Params, params};
use crate::control::{AddressHealth, DemoBackend, Fault};
use crate::declarative::read_body;
use crate::error::ApiError;
use crate::health::health_name;
use crate::kong::algorithm_name;

/// Parts per million in one whole: tier shares are integers in ppm.
const PPM: f64 = 1_000_000.0;

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Normal => "normal",
        Mode::FailedOver => "failed_over",
        Mode::FailingBack => "failing_back",
        Mode::Panic => "panic",
        Mode::Unavailable => "unavailable",
    }
}

fn share(ppm: u32) -> f64 {
    f64::from(ppm) / PPM
}

fn tier_shares(shares: &[TierShare]) -> Vec<Value> {
    shares
        .iter()
        .map(|t| {
            json!({
                "tier": t.tier,
                "regions": t.regions.iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
                "share_ppm": t.share_ppm,
                "share": share(t.share_ppm),
            })
        })
        .collect()
}

pub fn decision(record: &DecisionRecord) -> Value {
    json!({
        "seq": record.seq,
        "at_ms": record.at.as_millis(),
        "upstream": record.upstream.as_ref(),
        "kind": record.kind.as_str(),
        "trigger": record.trigger,
        "inputs": record.inputs.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
        "before": tier_shares(&record.before),
        "after": tier_shares(&record.after),
    })
}

pub(crate) async fn decisions(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let since = match params.get("since") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid 'since' value '{text}': expected a decision sequence number (0 or more)"
            ))
        })?,
    };
    let records = state.control.decisions(since);
    let last_seq = records.last().map_or(since, |r| r.seq);
    Ok(Json(json!({
        "data": records.iter().map(|r| decision(r)).collect::<Vec<_>>(),
        "last_seq": last_seq,
        "now_ms": state.control.now().as_millis(),
    })))
}

/// `PUT /sluice/log-level` with body `{"level": "debug"}` (an `EnvFilter` directive):
/// change the log level of the running process. 204 on success, 400 with the reason.
pub(crate) async fn set_log_level(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<axum::http::StatusCode, ApiError> {
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a JSON body like {{\"level\":\"debug\"}}: {e}"
        ))
    })?;
    let level = parsed
        .get("level")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("missing string field 'level'".into()))?;
    state
        .control
        .set_log_filter(level)
        .map_err(|e| ApiError::BadRequest(format!("invalid log level '{level}': {e}")))?;
    tracing::info!(level, "log level changed through the admin API");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Why an address is out of rotation, in the status page's words.
fn state_name(unavailable: Option<Unavailable>) -> &'static str {
    match unavailable {
        None => "available",
        Some(Unavailable::ZeroWeight) => "zero_weight",
        Some(Unavailable::Drained) => "drained",
        Some(Unavailable::Unhealthy) => "unhealthy",
        Some(Unavailable::Ejected { .. }) => "ejected",
    }
}

fn address(
    address: &AddressView,
    spec: Option<&sluice_core::topology::UpstreamSpec>,
    counters: &[AddressHealth],
    now_ms: u64,
) -> Value {
    let target = spec.and_then(|u| {
        usize::try_from(address.target_index)
            .ok()
            .and_then(|i| u.targets.get(i))
    });
    let (ewma_us, _stamp) = address.load.ewma_raw();
    let ejected_for_ms = match address.unavailable {
        Some(Unavailable::Ejected { until_ms }) => json!(until_ms.saturating_sub(now_ms)),
        _ => Value::Null,
    };
    let counters = counters
        .iter()
        .find(|c| c.addr == address.key.addr && c.hostname == address.key.hostname)
        .map_or(Value::Null, |c| {
            json!({
                "successes": c.successes,
                "http_failures": c.http_failures,
                "tcp_failures": c.tcp_failures,
                "timeouts": c.timeouts,
            })
        });
    json!({
        "address": address.key.addr.to_string(),
        "hostname": address.key.hostname.as_ref(),
        "target": target.map(|t| t.target.as_str()),
        "target_id": target.map(|t| t.id.as_str()),
        "tier": address.tier,
        "region": address.region.as_ref(),
        "weight": address.weight,
        "effective_weight": address.effective_weight,
        "health": health_name(address.health),
        "available": address.is_available(),
        "state": state_name(address.unavailable),
        "ejected_for_ms": ejected_for_ms,
        // Raw peak-EWMA as last stored (not decayed to now); 0 until the first response.
        "latency_ewma_ms": if ewma_us.is_finite() { ewma_us / 1000.0 } else { 0.0 },
        "in_flight": address.load.in_flight(),
        "counters": counters,
    })
}

pub(crate) async fn upstreams(State(state): State<AppState>) -> Json<Value> {
    let config = state.control.config();
    let now_ms = state.control.now().as_millis();
    let mut snapshots = state.control.upstream_snapshots();
    // Config order is the operator's order; snapshots of unknown upstreams go last.
    let position = |name: &str| {
        config
            .upstreams
            .iter()
            .position(|u| u.name.as_ref() == name)
            .unwrap_or(usize::MAX)
    };
    snapshots.sort_by(|a, b| {
        position(&a.name)
            .cmp(&position(&b.name))
            .then(a.name.cmp(&b.name))
    });
    let data: Vec<Value> = snapshots
        .iter()
        .map(|snapshot| {
            let spec = config.upstreams.iter().find(|u| u.name == snapshot.name);
            let counters = state
                .control
                .address_health(&snapshot.name)
                .unwrap_or_default();
            json!({
                "name": snapshot.name.as_ref(),
                "id": spec.map(|u| u.id.as_str()),
                "version": snapshot.version,
                "mode": mode_name(snapshot.mode),
                "algorithm": algorithm_name(snapshot.algorithm),
                "balancer_healthy": snapshot.balancer_healthy,
                "healthchecks_enabled": spec.is_some_and(|u| u.healthchecks.enabled()),
                "tiers": snapshot.tiers.iter().map(|t| json!({
                    "tier": t.tier,
                    "regions": t.regions.iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
                    "share_ppm": t.share_ppm,
                    "share": share(t.share_ppm),
                    "healthy_share": t.healthy_share,
                    "addresses": t.members,
                })).collect::<Vec<_>>(),
                "addresses": snapshot.addresses.iter()
                    .map(|a| address(a, spec, &counters, now_ms))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({"data": data, "now_ms": now_ms}))
}

// ---------------------------------------------------------------------------------------
// Demo fault panel

/// The slow fault's default extra latency: clearly visible in the EWMA column and large
/// against loopback's sub-millisecond round trip, small enough that requests still finish.
const DEFAULT_SLOW_MS: u64 = 200;
/// Longest slow fault accepted: past a minute the backend is effectively down, and a
/// bound keeps a typo from parking demo connections for hours.
const MAX_SLOW_MS: u64 = 60_000;
const DEFAULT_ERROR_STATUS: u16 = 500;
/// Body limit for the fault panel's small JSON commands.
const FAULT_BODY_LIMIT: usize = 4096;

fn fault_json(backend: &DemoBackend) -> Value {
    let (name, delay_ms, status) = match backend.fault {
        Fault::None => ("none", Value::Null, Value::Null),
        Fault::Down => ("down", Value::Null, Value::Null),
        Fault::Slow(d) => (
            "slow",
            json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Value::Null,
        ),
        Fault::Error(s) => ("error", Value::Null, json!(s)),
    };
    json!({
        "target": backend.target,
        "region": backend.region,
        "upstream": backend.upstream,
        "fault": name,
        "delay_ms": delay_ms,
        "status": status,
    })
}

fn fault_list(backends: &[DemoBackend]) -> Value {
    json!({"data": backends.iter().map(fault_json).collect::<Vec<_>>()})
}

pub(crate) async fn demo_faults(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let demo = state.control.demo().ok_or(ApiError::NotFound)?;
    Ok(Json(fault_list(&demo.backends())))
}

/// `POST /sluice/demo/faults` body: which backend(s), and what to do to them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultCommand {
    /// One backend by its target string...
    target: Option<String>,
    /// ...or every backend of a region.
    region: Option<String>,
    /// `down`, `slow`, `error` or `none` (restore).
    fault: String,
    delay_ms: Option<u64>,
    status: Option<u16>,
}

fn parse_fault(command: &FaultCommand) -> Result<Fault, ApiError> {
    match command.fault.as_str() {
        "none" | "restore" => Ok(Fault::None),
        "down" => Ok(Fault::Down),
        "slow" => {
            let ms = command.delay_ms.unwrap_or(DEFAULT_SLOW_MS);
            if ms == 0 || ms > MAX_SLOW_MS {
                return Err(ApiError::BadRequest(format!(
                    "delay_ms must be between 1 and {MAX_SLOW_MS}"
                )));
            }
            Ok(Fault::Slow(Duration::from_millis(ms)))
        }
        "error" => {
            let status = command.status.unwrap_or(DEFAULT_ERROR_STATUS);
            if !(100..=599).contains(&status) {
                return Err(ApiError::BadRequest(
                    "status must be an HTTP status between 100 and 599".into(),
                ));
            }
            Ok(Fault::Error(status))
        }
        other => Err(ApiError::BadRequest(format!(
            "unknown fault '{other}': expected one of none, down, slow, error"
        ))),
    }
}

pub(crate) async fn set_demo_fault(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let demo = state.control.demo().ok_or(ApiError::NotFound)?;
    let bytes = read_body(&headers, body, FAULT_BODY_LIMIT).await?;
    let command: FaultCommand = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid fault command: {e}")))?;
    let fault = parse_fault(&command)?;
    let targets: Vec<String> = match (&command.target, &command.region) {
        (Some(target), None) => vec![target.clone()],
        (None, Some(region)) => {
            let in_region: Vec<String> = demo
                .backends()
                .into_iter()
                .filter(|b| &b.region == region)
                .map(|b| b.target)
                .collect();
            if in_region.is_empty() {
                return Err(ApiError::NotFound);
            }
            in_region
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of 'target' or 'region'".into(),
            ));
        }
    };
    for target in &targets {
        demo.set_fault(target, fault)
            .map_err(|_| ApiError::NotFound)?;
    }
    tracing::info!(?targets, ?fault, "demo fault set");
    Ok(Json(fault_list(&demo.backends())))
}
