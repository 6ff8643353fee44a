//! DNS for the data plane: hostname targets of upstreams (answering the controller's
//! `Resolve` actions) and services whose host is a plain hostname (resolved on the
//! request path, cached by TTL).
//!
//! Kong's rules (kong-semantics.md §3.2): SRV is asked before A/AAAA (`dns_order =
//! LAST,SRV,A,CNAME`); from an SRV answer only the lowest-numbered priority is used, an
//! SRV weight of 0 counts as 1 and an SRV port of 0 means the target's port; every A/AAAA
//! address gets the target's full weight. A failed refresh keeps serving the previous
//! answer (Kong's `dns_stale_ttl`), so a DNS outage does not become a traffic outage.
//!
//! The nameservers come from the system configuration by default, or from an explicit
//! list (Kong's `dns_resolver`, Sluice's `--dns-resolver`), see [`Dns::new`]. Either
//! way hickory's answer cache honours record TTLs, so a re-resolution the controller
//! schedules at TTL expiry sees the new record.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use sluice_core::event::ResolvedAddress;
use tokio::time::Instant;

/// Cache lifetime of a service hostname answer without a usable TTL, and the floor for
/// TTL-0 answers: one second keeps fast-moving records fresh without a DNS query per
/// request (the same floor the controller uses for targets).
const SERVICE_MIN_TTL: Duration = Duration::from_secs(1);
/// Upper bound on caching a service answer, whatever its TTL says, so a changed record
/// is seen within five minutes (the controller's bound for targets).
const SERVICE_MAX_TTL: Duration = Duration::from_secs(300);

/// Deadline of one query against explicitly configured nameservers (hickory applies it
/// end to end, across servers). Those servers are named by the operator and usually
/// close (a local cache or a sidecar), so two seconds is generous; hickory's five-second
/// default holds a refresh needlessly long against a dead server.
const EXPLICIT_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolved answer: addresses and the time to live of the answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub addresses: Vec<ResolvedAddress>,
    pub ttl: Option<Duration>,
}

#[derive(Debug)]
struct CacheEntry {
    addrs: Arc<[SocketAddr]>,
    expires: Instant,
}

/// The resolver plus the service-host cache.
pub struct Dns {
    resolver: Result<TokioResolver, String>,
    cache: Mutex<HashMap<(Arc<str>, u16), CacheEntry>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("resolver", &self.resolver.is_ok())
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// The resolver Sluice runs with: the system configuration when `nameservers` is
    /// empty, else exactly those servers (Kong's `dns_resolver`).
    pub fn new(nameservers: &[SocketAddr]) -> Dns {
        if nameservers.is_empty() {
            Dns::from_system()
        } else {
            Dns::with_nameservers(nameservers)
        }
    }

    /// A resolver asking only `nameservers` (UDP, falling back to TCP for truncated
    /// answers; hickory asks two servers at a time and takes the first answer). Search domains of the system configuration do not apply: a
    /// target name is looked up as written. `/etc/hosts` is still consulted first, as
    /// Kong does.
    pub fn with_nameservers(nameservers: &[SocketAddr]) -> Dns {
        let servers = nameservers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        options.timeout = EXPLICIT_TIMEOUT;
        let resolver = builder
            .build()
            .map_err(|e| format!("DNS resolver for {nameservers:?} could not be built: {e}"));
        Dns {
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A resolver from the system configuration (`/etc/resolv.conf`, `/etc/hosts`). If
    /// the system configuration cannot be read, every lookup fails with that reason
    /// (IP targets and IP services keep working).
    pub fn from_system() -> Dns {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|builder| builder.build())
            .map_err(|e| format!("system DNS configuration unusable: {e}"));
        Dns {
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn resolver(&self) -> Result<&TokioResolver, String> {
        self.resolver.as_ref().map_err(Clone::clone)
    }

    /// Resolve an upstream target the way Kong does: SRV first, then A/AAAA.
    pub async fn resolve_target(&self, host: &str, port: u16) -> Result<Answer, String> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Answer {
                addresses: vec![ResolvedAddress {
                    addr: SocketAddr::new(ip, port),
                    weight: None,
                }],
                ttl: None,
            });
        }
        let resolver = self.resolver()?;
        if let Ok(lookup) = resolver.lookup(host, RecordType::SRV).await {
            let srv: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some((srv.clone(), record.ttl)),
                    _ => None,
                })
                .collect();
            if let Some(top) = srv.iter().map(|(s, _)| s.priority).min() {
                let mut addresses = Vec::new();
                let mut ttl = srv.iter().map(|(_, ttl)| *ttl).min();
                for (entry, _) in srv.iter().filter(|(s, _)| s.priority == top) {
                    let entry_port = if entry.port == 0 { port } else { entry.port };
                    let name = entry.target.to_ascii();
                    let Ok(ips) = resolver.lookup_ip(name.as_str()).await else {
                        continue;
                    };
                    for record in ips.as_lookup().answers() {
                        ttl = ttl.map(|t| t.min(record.ttl));
                        if let Some(ip) = ip_of(&record.data) {
                            addresses.push(ResolvedAddress {
                                addr: SocketAddr::new(ip, entry_port),
                                weight: Some(u32::from(entry.weight.max(1))),
                            });
                        }
                    }
                }
                if !addresses.is_empty() {
                    addresses.sort_by_key(|a| a.addr);
                    return Ok(Answer {
                        addresses,
                        ttl: ttl.map(|t| Duration::from_secs(u64::from(t))),
                    });
                }
            }
        }
        let lookup = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| format!("dns server error: {e}"))?;
        let mut ttl: Option<u32> = None;
        let mut addresses = Vec::new();
        for record in lookup.as_lookup().answers() {
            if let Some(ip) = ip_of(&record.data) {
                ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                addresses.push(ResolvedAddress {
                    addr: SocketAddr::new(ip, port),
                    weight: None,
                });
            }
        }
        if addresses.is_empty() {
            return Err(format!("dns server error: no A/AAAA records for {host}"));
        }
        // Kong sorts a target's addresses by IP.
        addresses.sort_by_key(|a| a.addr);
        addresses.dedup_by_key(|a| a.addr);
        Ok(Answer {
            addresses,
            ttl: ttl.map(|t| Duration::from_secs(u64::from(t))),
        })
    }

    /// Addresses of a service's hostname, from the cache while fresh. A failed refresh
    /// serves the stale answer if there is one.
    pub async fn resolve_service(
        &self,
        host: &Arc<str>,
        port: u16,
    ) -> Result<Arc<[SocketAddr]>, String> {
        let now = Instant::now();
        let stale = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&(host.clone(), port)) {
                Some(entry) if entry.expires > now => return Ok(entry.addrs.clone()),
                Some(entry) => Some(entry.addrs.clone()),
                None => None,
            }
        };
        match self.resolve_target(host, port).await {
            Ok(answer) => {
                let addrs: Arc<[SocketAddr]> = answer.addresses.iter().map(|a| a.addr).collect();
                let ttl = answer
                    .ttl
                    .unwrap_or(SERVICE_MIN_TTL)
                    .clamp(SERVICE_MIN_TTL, SERVICE_MAX_TTL);
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.insert(
                    (host.clone(), port),
                    CacheEntry {
                        addrs: addrs.clone(),
                        expires: now + ttl,
                    },
                );
                Ok(addrs)
            }
            Err(e) => stale.ok_or(e),
        }
    }
}

fn ip_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_need_no_dns() {
        let dns = Dns::from_system();
        let answer = dns.resolve_target("127.0.0.1", 9000).await.unwrap();
        assert_eq!(answer.addresses.len(), 1);
        assert_eq!(answer.addresses[0].addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[tokio::test]
    async fn localhost_resolves_from_hosts_file() {
        let dns = Dns::from_system();
        let host: Arc<str> = Arc::from("localhost");
        let addrs = dns.resolve_service(&host, 8080).await.unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
    }
}
