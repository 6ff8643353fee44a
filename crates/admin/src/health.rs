//! Kong's health endpoints: `GET /upstreams/{u}/health` (per target, or the whole
//! balancer with `?balancer_health=1`) and the `PUT .../healthy|unhealthy` overrides.
//!
//! Health comes from the upstream's latest snapshot, so what the API reports is exactly
//! what the data plane balances on.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sluice_core::snapshot::{AddressView, HealthStatus, UpstreamSnapshot};
use sluice_core::topology::TargetSpec;

use crate::api::{
    AppState, KONG_DEFAULT_TARGET_PORT, Params, encode_component, flag, paginate, params, stamps,
};
use crate::entities::{find_target, find_upstream, snapshot_of};
use crate::error::ApiError;
use crate::kong;

pub(crate) fn health_name(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::HealthchecksOff => "HEALTHCHECKS_OFF",
        HealthStatus::DnsError => "DNS_ERROR",
    }
}

/// Kong's weight summary: total, and how much of it is available right now.
fn weight_summary(addresses: &[&AddressView]) -> Value {
    let total: u64 = addresses.iter().map(|a| u64::from(a.weight)).sum();
    let available: u64 = addresses
        .iter()
        .filter(|a| a.is_available())
        .map(|a| u64::from(a.weight))
        .sum();
    json!({"total": total, "available": available, "unavailable": total - available})
}

/// How Kong derives a target's health from its addresses (§4.5 of our Kong notes): no
/// address is a DNS error, any healthy address makes it healthy, then any unhealthy one
/// makes it unhealthy; weight 0 or checks off read `HEALTHCHECKS_OFF`.
fn target_health(target: &TargetSpec, addresses: &[&AddressView], checks_on: bool) -> &'static str {
    if target.weight == 0 || (!checks_on && !addresses.is_empty()) {
        return "HEALTHCHECKS_OFF";
    }
    if addresses.is_empty() {
        return "DNS_ERROR";
    }
    if addresses.iter().any(|a| a.health == HealthStatus::Healthy) {
        "HEALTHY"
    } else if addresses
        .iter()
        .any(|a| a.health == HealthStatus::Unhealthy)
    {
        "UNHEALTHY"
    } else {
        "HEALTHCHECKS_OFF"
    }
}

/// Kong's `dns` field: the type of the record the target's addresses came from, as
/// Kong reports its first record: `A` or `AAAA` for a name resolved through those
/// records and for an IPv4 or IPv6 literal (Kong's DNS client answers a literal with a
/// synthetic record of its family), `SRV` for an SRV answer. A target with no address
/// reads `unknown`: Kong shows the DNS error text there, which the snapshot does not
/// carry (docs/kong-compatibility.md).
fn dns_source(addresses: &[&AddressView]) -> &'static str {
    addresses.first().map_or("unknown", |a| a.dns.as_str())
}

fn addresses_of(snapshot: Option<&UpstreamSnapshot>, target_index: usize) -> Vec<&AddressView> {
    snapshot
        .map(|s| {
            s.addresses
                .iter()
                .filter(|a| usize::try_from(a.target_index).ok() == Some(target_index))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn upstream_health(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &key).ok_or(ApiError::NotFound)?;
    let snapshot = snapshot_of(state.control.as_ref(), upstream);
    let checks_on = upstream.healthchecks.enabled();
    let node_id = state.control.node_id();

    if flag(&params, "balancer_health") {
        let all: Vec<&AddressView> = snapshot.iter().flat_map(|s| s.addresses.iter()).collect();
        let balancer_healthy = snapshot.as_ref().is_some_and(|s| s.balancer_healthy);
        let hosts: Vec<Value> = upstream
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let addresses = addresses_of(snapshot.as_deref(), index);
                json!({
                    "host": target.host,
                    "port": target.port,
                    "dns": dns_source(&addresses),
                    "nodeWeight": target.weight,
                    "weight": weight_summary(&addresses),
                    "addresses": addresses.iter().map(|a| json!({
                        "ip": a.key.addr.ip().to_string(),
                        "port": a.key.addr.port(),
                        "weight": a.weight,
                        "healthy": a.is_available(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let balancer = if balancer_healthy {
            "HEALTHY"
        } else {
            "UNHEALTHY"
        };
        let health = if checks_on {
            balancer
        } else {
            "HEALTHCHECKS_OFF"
        };
        return Ok(Json(json!({
            "data": {
                "health": health,
                "balancer_health": balancer,
                "id": upstream.id,
                "details": {
                    "healthy": balancer_healthy,
                    "weight": weight_summary(&all),
                    "hosts": hosts,
                },
            },
            "next": null,
            "node_id": node_id,
        })));
    }

    let stamps = stamps(state.control.as_ref());
    let items = upstream
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let addresses = addresses_of(snapshot.as_deref(), index);
            let mut entity = kong::target(upstream, target, stamps);
            if let Value::Object(map) = &mut entity {
                map.insert(
                    "health".into(),
                    json!(target_health(target, &addresses, checks_on)),
                );
                map.insert(
                    "data".into(),
                    json!({
                        "host": target.host,
                        "port": target.port,
                        "dns": dns_source(&addresses),
                        "nodeWeight": target.weight,
                        "weight": weight_summary(&addresses),
                        "addresses": addresses.iter().map(|a| json!({
                            "ip": a.key.addr.ip().to_string(),
                            "port": a.key.addr.port(),
                            "weight": a.weight,
                            "health": if checks_on || a.health == HealthStatus::DnsError {
                                health_name(a.health)
                            } else {
                                "HEALTHCHECKS_OFF"
                            },
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
            (target.id.clone(), entity)
        })
        .collect();
    let path = format!("/upstreams/{}/health", encode_component(&key));
    let mut page = paginate(items, &params, &path)?;
    page.insert("node_id".into(), json!(node_id));
    Ok(Json(Value::Object(page)))
}

fn health_action(action: &str) -> Result<bool, ApiError> {
    match action {
        "healthy" => Ok(true),
        "unhealthy" => Ok(false),
        _ => Err(ApiError::NotFound),
    }
}

/// Kong's address syntax for the per-address override: `ip[:port]`, IPv6 in brackets
/// when a port is given, port 8000 when omitted.
fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, KONG_DEFAULT_TARGET_PORT))
}

pub(crate) async fn set_target_health(
    State(state): State<AppState>,
    Path((upstream_key, target_key, action)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let healthy = health_action(&action)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &upstream_key).ok_or(ApiError::NotFound)?;
    let target = find_target(upstream, &target_key).ok_or(ApiError::NotFound)?;
    state
        .control
        .set_health(&upstream.name, &target.target, None, healthy)
        .map_err(|_| ApiError::NotFound)?;
    // Operator overrides move traffic: leave an audit line for each.
    tracing::info!(upstream = %upstream.name, target = %target.target, healthy, "admin: target health override");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn set_address_health(
    State(state): State<AppState>,
    Path((upstream_key, target_key, address, action)): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let healthy = health_action(&action)?;
    let config = state.control.config();
    let upstream = find_upstream(&config, &upstream_key).ok_or(ApiError::NotFound)?;
    let target = find_target(upstream, &target_key).ok_or(ApiError::NotFound)?;
    let addr = parse_address(&address).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid address '{address}': expected ip[:port], e.g. 10.0.0.1:8080"
        ))
    })?;
    state
        .control
        .set_health(&upstream.name, &target.target, Some(addr), healthy)
        .map_err(|_| ApiError::NotFound)?;
    tracing::info!(upstream = %upstream.name, target = %target.target, address = %addr, healthy, "admin: address health override");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_kong_port() {
        assert_eq!(parse_address("10.0.0.1"), "10.0.0.1:8000".parse().ok());
        assert_eq!(parse_address("10.0.0.1:81"), "10.0.0.1:81".parse().ok());
        assert_eq!(parse_address("[::1]:81"), "[::1]:81".parse().ok());
        assert_eq!(parse_address("::1"), "[::1]:8000".parse().ok());
        assert_eq!(parse_address("example.com"), None);
    }

    fn target(weight: u32) -> TargetSpec {
        TargetSpec {
            id: "t".into(),
            target: "backend.internal:80".into(),
            host: "backend.internal".into(),
            port: 80,
            weight,
            region: "default".into(),
            tier: 0,
            tags: Vec::new(),
        }
    }

    fn address(port: u16, health: HealthStatus) -> AddressView {
        AddressView {
            key: sluice_core::snapshot::AddressKey {
                addr: SocketAddr::from(([10, 0, 0, 1], port)),
                hostname: "backend.internal".into(),
            },
            target_index: 0,
            weight: 100,
            effective_weight: 100,
            tier: 0,
            region: "default".into(),
            health,
            unavailable: None,
            load: std::sync::Arc::default(),
            dns: sluice_core::snapshot::DnsRecord::A,
        }
    }

    #[test]
    fn target_health_follows_kongs_precedence() {
        let healthy = address(1, HealthStatus::Healthy);
        let unhealthy = address(2, HealthStatus::Unhealthy);
        let off = address(3, HealthStatus::HealthchecksOff);
        let t = target(100);
        assert_eq!(
            target_health(&t, &[], true),
            "DNS_ERROR",
            "no address resolved"
        );
        assert_eq!(
            target_health(&t, &[&unhealthy, &healthy], true),
            "HEALTHY",
            "any healthy wins"
        );
        assert_eq!(target_health(&t, &[&off, &unhealthy], true), "UNHEALTHY");
        assert_eq!(target_health(&t, &[&off], true), "HEALTHCHECKS_OFF");
        assert_eq!(
            target_health(&t, &[&unhealthy], false),
            "HEALTHCHECKS_OFF",
            "checks off"
        );
        assert_eq!(
            target_health(&t, &[], false),
            "DNS_ERROR",
            "checks off cannot hide DNS failure"
        );
        assert_eq!(
            target_health(&target(0), &[&healthy], true),
            "HEALTHCHECKS_OFF",
            "weight 0"
        );
    }
}
