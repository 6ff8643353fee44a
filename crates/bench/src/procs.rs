//! The processes a drill or benchmark starts: `sluice backend` instances and the proxy
//! under test. Each is owned by a [`Proc`], killed by its own PID when dropped
//! (`kill_on_drop`), never by name.
//!
//! Also: locating the `sluice` binary, and waiting until a proxy answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a backend may take to print its address. A debug build on a loaded 2-core
/// machine starts in well under a second; ten leaves room for a cold page cache.
const BACKEND_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A child process this program started and will kill.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `command` as a process this program owns.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> anyhow::Result<Proc> {
        let name = name.into();
        command.kill_on_drop(true).stdin(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Proc { name, child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL (a blackout, not a shutdown) and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM through `kill <pid>`), waits up to `grace`, then
    /// SIGKILLs it. For proxies with child processes (NGINX's workers): a SIGKILLed NGINX
    /// master leaves its workers running, still holding their listening sockets.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        self.kill().await;
    }

    /// `None` while running; the exit status once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// The `sluice` binary: `$SLUICE_BIN`, else `target/release/sluice` when `release` is
/// asked for, else `target/debug/sluice`, relative to this crate's workspace.
pub fn sluice_binary(release: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "SLUICE_BIN={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let profile = if release { "release" } else { "debug" };
    let path = target.join(profile).join("sluice");
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first with `cargo build {}-p sluice` (or set SLUICE_BIN)",
        path.display(),
        if release { "--release " } else { "" }
    );
    Ok(path)
}

/// A backend's identity and where it listens.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    pub instance: String,
    pub region: String,
    /// Port 0 on first start; the real address afterwards (restarts reuse it).
    pub addr: SocketAddr,
}

/// Starts `sluice backend` with `fault` (pinned to `cpus` with `taskset` when given) and
/// waits for it to print its address. Returns the process and the address it listens on.
/// `taskset` execs the backend, so the PID owned is the backend's own.
pub async fn start_backend(
    sluice: &Path,
    spec: &BackendSpec,
    fault: &str,
    cpus: Option<&str>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut command = match cpus {
        Some(cpus) if !cpus.is_empty() => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(sluice);
            command
        }
        _ => Command::new(sluice),
    };
    command
        .arg("backend")
        .arg("--listen")
        .arg(spec.addr.to_string())
        .arg("--service")
        .arg("drill")
        .arg("--instance")
        .arg(&spec.instance)
        .arg("--region")
        .arg(&spec.region)
        .arg("--fault")
        .arg(fault)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(format!("backend {}", spec.instance), command)?;
    let stdout = proc
        .child
        .stdout
        .take()
        .context("backend stdout was not captured")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(BACKEND_START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr
                    .trim()
                    .parse::<SocketAddr>()
                    .with_context(|| format!("backend printed a bad address: {line}"));
            }
        }
        anyhow::bail!("backend {} exited before listening", spec.instance)
    })
    .await
    .with_context(|| {
        format!(
            "backend {} did not start within {BACKEND_START_TIMEOUT:?}",
            spec.instance
        )
    })??;
    // Keep draining stdout so the backend never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((proc, addr))
}

/// The backend's own count of real requests (probes excluded), from its stats path.
pub async fn backend_stats(addr: SocketAddr) -> Option<u64> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(BACKEND_STATS_PATH)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let stats: serde_json::Value = serde_json::from_slice(&body).ok()?;
        stats.get("traffic")?.as_u64()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// `sluice backend`'s counters (see `crates/sluice/src/backend.rs`, `STATS_PATH`).
pub const BACKEND_STATS_PATH: &str = "/_backend/stats";

/// A loopback port that was free a moment ago (bind port 0, read it, release it). The
/// proxies need their listen ports written into config files before they start.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One GET; the status, or `None` on any failure within `timeout`.
pub async fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// Polls `path` on `addr` until it answers 200, for at most `limit`. The poll interval
/// (50 ms) is short against every proxy's start-up time and long enough not to load it.
pub async fn wait_for_200(
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    const POLL: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = proc.exited() {
            anyhow::bail!("{} exited ({status}) before answering", proc.name);
        }
        if get_status(addr, path, Duration::from_secs(1)).await == Some(200) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} did not answer 200 on {addr}{path} within {limit:?}",
                proc.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
