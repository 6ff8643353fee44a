//! Structured logging setup: text or JSON lines, level from `--log-level` or
//! `SLUICE_LOG` (an `EnvFilter` directive such as `info,sluice_proxy=debug`), changeable
//! at runtime through the returned handle.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// Output format of log lines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Lets the admin API change the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Replace the filter, e.g. `debug` or `info,sluice_proxy=trace`.
    pub fn set_filter(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. `level` wins over `SLUICE_LOG`; the default is `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> anyhow::Result<LogHandle> {
    let directives = level
        .map(str::to_owned)
        .or_else(|| std::env::var("SLUICE_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid log level '{directives}': {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init()?,
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init()?,
    }
    Ok(LogHandle { handle })
}
