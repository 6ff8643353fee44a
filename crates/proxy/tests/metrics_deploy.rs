//! The operational artefacts built on the metrics, checked against the code:
//! - `deploy/prometheus/*.yml` pass `promtool check rules` (and the example
//!   `prometheus.yml` passes `promtool check config`), and the unit tests in
//!   `deploy/prometheus/tests/` pass `promtool test rules`;
//! - every metric the rules and the Grafana dashboard query is one this crate exports;
//! - `deploy/grafana/sluice.json` is well-formed dashboard JSON;
//! - `docs/metrics.md` lists exactly the families in `metrics::FAMILIES`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_proxy::metrics::{FAMILIES, MetricType, reference_markdown};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `promtool`, or `None` (loudly) when it is absent and CI did not demand it.
fn promtool() -> Option<&'static str> {
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("SLUICE_REQUIRE_TOOLS").is_none(),
        "promtool is required (SLUICE_REQUIRE_TOOLS is set): apt-get install prometheus"
    );
    eprintln!(
        "SKIPPED: promtool not found; install Debian's `prometheus` package to run this test"
    );
    None
}

fn run_promtool(args: &[&str]) -> (bool, String) {
    let Some(promtool) = promtool() else {
        return (true, String::new());
    };
    let output = Command::new(promtool)
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn rule_tests() -> Vec<String> {
    let dir = repo_root().join("deploy/prometheus/tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml"))
        .map(|name| format!("tests/{name}"))
        .collect();
    files.sort();
    files
}

#[test]
fn promtool_check_rules_accepts_the_rule_files() {
    let (ok, report) = run_promtool(&["check", "rules", "recording-rules.yml", "alerts.yml"]);
    assert!(ok, "promtool check rules:\n{report}");
}

#[test]
fn promtool_check_config_accepts_the_example_prometheus_config() {
    let (ok, report) = run_promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "promtool check config:\n{report}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let tests = rule_tests();
    assert!(
        tests.len() >= 2,
        "expected the SLO and operations test files, got {tests:?}"
    );
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, report) = run_promtool(&args);
    assert!(ok, "promtool test rules:\n{report}");
}

/// Every alert in alerts.yml has at least one unit test that expects it to fire.
#[test]
fn every_alert_has_a_firing_test() {
    let alerts = read("deploy/prometheus/alerts.yml");
    let tests: String = rule_tests()
        .iter()
        .map(|t| read(&format!("deploy/prometheus/{t}")))
        .collect();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let fires = tests
            .split(&format!("alertname: {name}\n"))
            .skip(1)
            .any(|after| {
                after.trim_start().starts_with("exp_alerts:\n")
                    && !after.trim_start().starts_with("exp_alerts: []")
            });
        assert!(fires, "no unit test expects {name} to fire");
        assert!(
            read("docs/alerting.md").contains(&format!("### {name}")),
            "docs/alerting.md has no section for {name}"
        );
    }
}

/// Metric names used in a PromQL-bearing text: `sluice_...`/`kong_...` identifiers, with
/// histogram and recording-rule suffixes mapped back to their family.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("sluice_") || rest.starts_with("kong_"))
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    names.sort();
    names.dedup();
    names
}

fn assert_all_exported(what: &str, text: &str) {
    let known = |name: &str| {
        FAMILIES.iter().any(|f| {
            f.name == name
                || (f.kind == MetricType::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.name)))
        })
    };
    let unknown: Vec<String> = metric_names(text)
        .into_iter()
        .filter(|n| !known(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} queries metrics Sluice does not export: {unknown:?}"
    );
}

#[test]
fn rules_only_query_exported_metrics() {
    assert_all_exported(
        "recording-rules.yml",
        &read("deploy/prometheus/recording-rules.yml"),
    );
    assert_all_exported("alerts.yml", &read("deploy/prometheus/alerts.yml"));
}

#[test]
fn grafana_dashboard_is_well_formed_and_queries_exported_metrics() {
    let text = read("deploy/grafana/sluice.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(
        dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard title"
    );
    assert!(
        dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard uid"
    );
    let panels = dashboard["panels"].as_array().expect("panels array");
    assert!(panels.len() >= 10, "only {} panels", panels.len());

    let mut ids = Vec::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(panel["type"].is_string(), "panel {title} has no type");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(!ids.contains(&id), "duplicate panel id {id}");
        ids.push(id);
        let grid = &panel["gridPos"];
        for key in ["h", "w", "x", "y"] {
            assert!(grid[key].is_u64(), "panel {title} gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no queries");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: a target without expr"));
            exprs.push(expr.to_owned());
        }
    }
    // Recording rules the dashboard reads must exist in recording-rules.yml.
    let rules = read("deploy/prometheus/recording-rules.yml");
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.contains(':') && word.contains("sluice") {
                assert!(
                    rules.contains(&format!("record: {word}")),
                    "dashboard reads unknown rule {word}"
                );
            }
        }
    }
    assert_all_exported("deploy/grafana/sluice.json", &exprs.join("\n"));
}

#[test]
fn docs_metrics_md_lists_every_family() {
    let doc = read("docs/metrics.md");
    let begin = "<!-- BEGIN FAMILIES (generated from metrics::FAMILIES; do not edit) -->\n";
    let end = "<!-- END FAMILIES -->";
    let generated = reference_markdown();
    let current = doc
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let (head, tail) = match (doc.split_once(begin), doc.split_once(end)) {
            (Some((head, _)), Some((_, tail))) => (head.to_owned(), tail.to_owned()),
            _ => panic!("docs/metrics.md lacks the BEGIN/END FAMILIES markers"),
        };
        let updated = format!("{head}{begin}{generated}{end}{tail}");
        std::fs::write(repo_root().join("docs/metrics.md"), updated)
            .expect("write docs/metrics.md");
        return;
    }
    assert_eq!(
        current,
        Some(generated.as_str()),
        "docs/metrics.md is out of date with metrics::FAMILIES; rerun with UPDATE_EXPECT=1"
    );
}
