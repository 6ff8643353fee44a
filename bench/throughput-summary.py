#!/usr/bin/env python3
"""Medians over the rounds of a throughput.sh run (its wrk.csv), one line per proxy.

Usage: throughput-summary.py RESULTS_DIR
"""
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1] + "/wrk.csv")))
print("| proxy | median req/s | range req/s | median p99 ms | CPU µs/request | RSS under load MB |")
print("|---|---|---|---|---|---|")
for peer in dict.fromkeys(r["proxy"] for r in rows):
    mine = [r for r in rows if r["proxy"] == peer]

    def col(key):
        return [float(r[key]) for r in mine]

    print(f"| {peer} | {statistics.median(col('rps')):.0f} | {min(col('rps')):.0f}–{max(col('rps')):.0f} | "
          f"{statistics.median(col('p99_ms')):.2f} | {statistics.median(col('cpu_us_per_req')):.1f} | "
          f"{statistics.median(col('rss_load_kb')) / 1024:.1f} |")
