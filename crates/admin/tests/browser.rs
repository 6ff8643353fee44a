//! Browser test of the status page: headless Chromium renders the page served by
//! `gui_router` over a fake gateway, before and after a fault injected through the
//! demo panel's endpoint fails the upstream over, and the rendered DOM must show the
//! upstream, its regions, the traffic shares and the decision that moved traffic.
//! A screenshot of the failed-over page is kept in `target/artifacts/status-page.png`.
//!
//! Needs `/usr/bin/chromium` (Debian's `chromium` package); without it the test is
//! skipped with a loud message, never silently passed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_admin::{AdminOptions, gui_router, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use common::FakeControl;

const CHROMIUM: &str = "/usr/bin/chromium";

/// True when Chromium is missing and the test should skip (loudly). With
/// `SLUICE_REQUIRE_TOOLS` set (CI sets it) a missing browser is a failure, as for
/// promtool and dnsmasq, so a broken install can never turn into a silent pass.
fn chromium_missing(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return false;
    }
    assert!(
        std::env::var_os("SLUICE_REQUIRE_TOOLS").is_none(),
        "{test}: {CHROMIUM} is missing and SLUICE_REQUIRE_TOOLS is set"
    );
    true
}
/// Wall-clock bound on one Chromium run: a cold start on a loaded 2-core machine takes a
/// few seconds; a minute means it hung, and the test fails instead of waiting forever.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// The page's own virtual clock: enough for the first poll plus two more (1 s apart).
const VIRTUAL_TIME_BUDGET_MS: &str = "3000";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Run headless Chromium on `url` with `extra` arguments; returns its stdout.
async fn chromium(url: &str, extra: &[String], profile: &Path) -> String {
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(extra)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, command.output())
        .await
        .expect("chromium finished within the time bound")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// POST a JSON body over a plain loopback connection and return the status line.
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_a_failover_as_it_happens() {
    if chromium_missing("status page browser test") {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED status page browser test: {CHROMIUM} is missing.               !!!\n\
             !!! Install it with `apt-get install -y chromium` (the CI script does).   !!!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }

    let fake = FakeControl::new(true);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        gui_router(Arc::new(fake.clone()), AdminOptions::default()),
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}/");
    let profile =
        std::env::temp_dir().join(format!("sluice-admin-chromium-{}", std::process::id()));

    let artifacts = target_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");

    // Before: everything in the preferred tier. Each rendered DOM is kept next to the
    // screenshot, so a failure can be read without re-running Chromium.
    let before = chromium(&url, &["--dump-dom".into()], &profile).await;
    std::fs::write(artifacts.join("status-page-before.html"), &before).expect("write artifact");
    assert!(
        before.contains("data-upstream=\"api-up\""),
        "upstream card rendered:\n{before}"
    );
    assert!(
        before.contains("data-mode=\"normal\""),
        "normal mode:\n{before}"
    );
    assert!(
        before.contains("tier 0 · eu-west 100%"),
        "the bar shows tier 0 taking all traffic"
    );
    assert!(before.contains("127.0.0.1:9001"), "addresses listed");
    assert!(
        before.contains("region eu-west"),
        "the fault panel lists regions"
    );
    assert!(
        before.contains("No decisions yet"),
        "no decision before the fault"
    );

    // The operator fails a primary backend through the demo panel's endpoint.
    let status = post_json(
        addr,
        "/sluice/demo/faults",
        r#"{"target":"127.0.0.1:9001","fault":"down"}"#,
    )
    .await;
    assert!(status.contains("200"), "fault accepted: {status}");

    // After: failed over, 70/30 split, the decision explains it.
    let after = chromium(&url, &["--dump-dom".into()], &profile).await;
    std::fs::write(artifacts.join("status-page-after.html"), &after).expect("write artifact");
    assert!(
        after.contains("data-mode=\"failed_over\""),
        "failed-over mode:\n{after}"
    );
    assert!(after.contains("failed over"), "the mode badge says so");
    assert!(
        after.contains("tier 0 · eu-west 70%"),
        "tier 0 keeps 70%:\n{after}"
    );
    assert!(after.contains("tier 1 · us-east 30%"), "tier 1 takes 30%");
    assert!(
        after.contains("ejected 26.0 s"),
        "the ejected address and its remaining time"
    );
    assert!(
        after.contains("data-seq=\"1\""),
        "the decision record is listed"
    );
    assert!(
        after.contains("why: spill"),
        "the upstream card says why its traffic moved"
    );
    assert!(
        after.contains("tier 0 healthy share 0.50 &lt; 1/1.4"),
        "with its trigger"
    );
    assert!(
        after.contains("before: tier 0 (eu-west) 100%"),
        "and the split before"
    );
    assert!(
        after.contains("after: tier 0 (eu-west) 70%, tier 1 (us-east) 30%"),
        "and after"
    );
    assert!(
        after.contains("down"),
        "the fault panel shows the injected fault"
    );

    let screenshot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &url,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,900".into(),
        ],
        &profile,
    )
    .await;
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    assert!(
        png.len() > 10_000,
        "a real page, not a blank image ({} bytes)",
        png.len()
    );

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server shut down cleanly");
    let _ = std::fs::remove_dir_all(&profile);
}

/// With an admin token, the page takes it from the URL fragment and sends it on every
/// poll; without it the page says how to open it instead of showing stale or no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_sends_the_token_from_the_url_fragment() {
    if chromium_missing("status page token test") {
        eprintln!(
            "\n!!! SKIPPED status page token test: {CHROMIUM} is missing (apt-get install -y chromium) !!!\n"
        );
        return;
    }
    let fake = FakeControl::new(false);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = AdminOptions {
        token: Some("page-token".into()),
        ..AdminOptions::default()
    };
    let server = tokio::spawn(serve(
        listener,
        gui_router(Arc::new(fake), options),
        async {
            let _ = stopped.await;
        },
    ));
    let profile = std::env::temp_dir().join(format!(
        "sluice-admin-chromium-token-{}",
        std::process::id()
    ));

    let with_token = chromium(
        &format!("http://{addr}/#token=page-token"),
        &["--dump-dom".into()],
        &profile,
    )
    .await;
    assert!(
        with_token.contains("data-upstream=\"api-up\""),
        "data shown:\n{with_token}"
    );
    assert!(with_token.contains(">live<"), "the header says live");

    let without = chromium(&format!("http://{addr}/"), &["--dump-dom".into()], &profile).await;
    assert!(
        !without.contains("data-upstream="),
        "no data without the token"
    );
    assert!(
        without.contains("unauthorized: open this page as /#token="),
        "the page explains what to do:\n{without}"
    );

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server shut down cleanly");
    let _ = std::fs::remove_dir_all(&profile);
}
