//! `sluice demo`: the embedded default a newcomer runs first.
//!
//! Starts, inside this process, one real HTTP backend per target of
//! `examples/kong.yml` (productAPI, orderAPI and klantAPI; three instances in the
//! `primary` region and two in `secondary` each) on loopback ephemeral ports, rewrites
//! the example's placeholder target addresses to those ports, and hands the resulting
//! configuration text to the gateway. Nothing is written outside the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::backend::{Backend, Fault, Identity};

/// The demo configuration, embedded so `sluice demo` works from any directory.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../examples/kong.yml");
/// Where the embedded example comes from, for diagnostics.
pub const EXAMPLE_ORIGIN: &str = "examples/kong.yml";

/// One running demo backend and the configuration target it stands behind.
#[derive(Clone)]
pub struct DemoBackend {
    pub upstream: String,
    pub region: String,
    /// The target string as it appears in the rewritten configuration (`127.0.0.1:PORT`).
    pub target: String,
    pub backend: Backend,
}

/// The demo's backends, addressable by target string.
pub struct Demo {
    pub backends: Vec<DemoBackend>,
    runtime: tokio::runtime::Handle,
}

/// Parses the embedded example, starts a backend per target, and returns the demo plus the
/// configuration text with every placeholder address replaced by its backend's real one.
pub async fn start() -> anyhow::Result<(Arc<Demo>, String)> {
    let loaded = sluice_config::parse(EXAMPLE_CONFIG, EXAMPLE_ORIGIN)
        .map_err(|d| anyhow::anyhow!("the embedded example configuration is invalid:\n{d}"))?;
    let mut text = EXAMPLE_CONFIG.to_owned();
    let mut backends = Vec::new();
    // Instance numbers count per (upstream, region) so names read "productAPI-primary-2".
    let mut counters: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (index, upstream) in loaded.config.upstreams.iter().enumerate() {
        // Backends answer with the name of the service in front of them ("productAPI").
        let service = loaded
            .config
            .services
            .iter()
            .find(|s| s.upstream == Some(index))
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| upstream.name.to_string());
        for target in &upstream.targets {
            let region = target.region.to_string();
            let n = counters
                .entry((service.clone(), region.clone()))
                .or_default();
            *n += 1;
            let identity = Identity {
                service: service.clone(),
                instance: format!("{service}-{region}-{n}"),
                region: region.clone(),
            };
            let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
            let backend = Backend::start(bind, identity)
                .await
                .context("starting a demo backend on loopback")?;
            let real = backend.addr().to_string();
            // Placeholders are unique per target, so a plain replacement is exact.
            text = text.replace(&target.target, &real);
            backends.push(DemoBackend {
                upstream: upstream.name.to_string(),
                region,
                target: real,
                backend,
            });
        }
    }
    Ok((
        Arc::new(Demo {
            backends,
            runtime: tokio::runtime::Handle::current(),
        }),
        text,
    ))
}

impl Demo {
    /// Applies `fault` to every backend matching the target string or, when `target` is a
    /// region name, to every backend in that region. Returns how many backends changed.
    pub fn apply(&self, selector: &str, fault: Fault) -> usize {
        let mut changed = 0;
        for b in self
            .backends
            .iter()
            .filter(|b| b.target == selector || b.region == selector)
        {
            if b.backend.switch(fault) {
                // Leaving `down` binds the port again, which is async.
                let backend = b.backend.clone();
                self.runtime.spawn(async move {
                    if let Err(e) = backend.rebind().await {
                        tracing::warn!(error = %e, addr = %backend.addr(), "demo backend could not listen again");
                    }
                });
            }
            changed += 1;
        }
        changed
    }
}

impl sluice_admin::DemoControl for Demo {
    fn backends(&self) -> Vec<sluice_admin::DemoBackend> {
        self.backends
            .iter()
            .map(|b| sluice_admin::DemoBackend {
                target: b.target.clone(),
                region: b.region.clone(),
                upstream: b.upstream.clone(),
                fault: to_admin_fault(b.backend.fault()),
            })
            .collect()
    }

    fn set_fault(
        &self,
        target: &str,
        fault: sluice_admin::Fault,
    ) -> Result<(), sluice_admin::NotFound> {
        if self.apply(target, from_admin_fault(fault)) == 0 {
            Err(sluice_admin::NotFound)
        } else {
            Ok(())
        }
    }
}

fn to_admin_fault(fault: Fault) -> sluice_admin::Fault {
    match fault {
        Fault::None => sluice_admin::Fault::None,
        Fault::Down | Fault::Hang => sluice_admin::Fault::Down,
        Fault::Slow { millis } => {
            sluice_admin::Fault::Slow(std::time::Duration::from_millis(millis))
        }
        Fault::Error { status } => sluice_admin::Fault::Error(status),
    }
}

fn from_admin_fault(fault: sluice_admin::Fault) -> Fault {
    match fault {
        sluice_admin::Fault::None => Fault::None,
        sluice_admin::Fault::Down => Fault::Down,
        sluice_admin::Fault::Slow(d) => Fault::Slow {
            millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        },
        sluice_admin::Fault::Error(status) => Fault::Error { status },
    }
}
