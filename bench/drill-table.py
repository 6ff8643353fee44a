#!/usr/bin/env python3
"""Turns `drill run` JSON reports into the side-by-side Markdown table of BENCHMARKS.md.

Usage: drill-table.py RESULTS_DIR      (every <peer>-<scenario>.json in it)
       drill-table.py --one REPORT.json (one line, for progress output)
"""
import glob
import json
import os
import sys

PEERS = ["sluice", "nginx", "haproxy", "envoy"]
SCENARIOS = ["baseline", "blackout", "brownout", "gray", "one-down", "hang"]


def fmt(value, unit="", digits=1):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def cell(report):
    """The scenario's headline numbers, in one table cell."""
    scenario = report["scenario"]
    total = report["total"]
    during = report["during"]
    failed = total["failed"]
    parts = [f"**{failed}** failed / {total['requests']}"]
    if scenario == "baseline":
        parts.append(f"p99 {fmt(total['latency']['p99_ms'], ' ms', 2)}")
    elif scenario == "blackout":
        parts.append(f"first secondary answer {fmt(report['failover_first_secondary_ms'], ' ms')}")
        parts.append(f"p99 on secondary {fmt(report['p99_on_secondary_ms'], ' ms', 2)}")
        parts.append(f"p99 whole run {fmt(total['latency']['p99_ms'], ' ms', 1)}, max {fmt(total['latency']['max_ms'], ' ms', 0)}")
        parts.append(f"first primary after restore {fmt(report['failback_first_primary_ms'], ' ms', 0)}")
        parts.append(f"≥90 % primary after {fmt(report['failback_90pct_ms'], ' ms', 0)}")
    elif scenario == "brownout":
        parts.append(f"p99 {fmt(during['latency']['p99_ms'], ' ms', 2)}, p99.9 {fmt(during['latency']['p999_ms'], ' ms', 1)}")
        parts.append(f"{report.get('bad_host_requests')} requests reached the slow host")
    elif scenario == "gray":
        parts.append(f"errors {during['failed'] / max(during['requests'], 1) * 100:.3f} %")
        parts.append(f"{report.get('bad_host_requests')} requests reached the bad host (from proxy start: 1 s warm-up + {report['fault_s']:.0f} s)")
    elif scenario == "one-down":
        share = during["regions"].get("secondary", 0.0)
        parts.append(f"secondary share {share * 100:.2f} %")
        parts.append(f"p99 {fmt(during['latency']['p99_ms'], ' ms', 2)}")
    elif scenario == "hang":
        parts.append(f"p99 {fmt(during['latency']['p99_ms'], ' ms', 1)}, max {fmt(during['latency']['max_ms'], ' ms', 0)}")
        parts.append(f"{report.get('bad_host_requests')} requests reached the hung host")
    met = all(goal["met"] for goal in report["goals"])
    parts.append("goals met" if met else "**missed:** " + "; ".join(
        f"{g['name'].split(' (')[0]} (want {g['target']})" for g in report["goals"] if not g["met"]))
    return "<br>".join(parts)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        report = json.load(open(sys.argv[2]))
        print("   " + cell(report).replace("<br>", "; ").replace("**", ""))
        return
    directory = sys.argv[1]
    reports = {}
    for path in glob.glob(os.path.join(directory, "*.json")):
        name = os.path.basename(path)[:-5]
        for peer in PEERS:
            if name.startswith(peer + "-"):
                try:
                    reports[(peer, name[len(peer) + 1:])] = json.load(open(path))
                except (OSError, ValueError):
                    pass
    peers = [p for p in PEERS if any(k[0] == p for k in reports)]
    print("| drill | " + " | ".join(peers) + " |")
    print("|---|" + "---|" * len(peers))
    for scenario in SCENARIOS:
        if not any(k[1] == scenario for k in reports):
            continue
        row = [cell(reports[(p, scenario)]) if (p, scenario) in reports else "not run" for p in peers]
        print(f"| {scenario} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
