#!/usr/bin/env bash
# Active-probe cost: CPU and memory of `sluice run` actively health-checking many
# targets, against the same configuration with active checks off.
#
#   bench/probe-cost.sh [targets=10000] [measured_seconds=30]
#   env: UPSTREAMS=10 (targets are split evenly), INTERVAL=1 (healthy and unhealthy
#        probe interval, seconds), PROBE_TYPE=http (or tcp: connect only),
#        KEEPALIVE=off (on: the upstreams carry `sluice:probe-keepalive=on`, so probes
#        reuse one connection per address), KEEPALIVE_MAX_AGE= (empty: Sluice's default,
#        30s; else a `sluice:probe-keepalive-max-age` value such as 5m),
#        PERF=0 (1: `perf record -g` on Sluice during the measured window, report in
#        perf.txt), PERF_DATA= (with PERF=1: keep perf.data at this path for call-graph
#        reports; it is large, so not kept by default), CASES="off on" (which configurations to run), PORT_BASE=20000,
#        WARMUP=5, SLUICE=target/release/sluice
#
# Why this shape: every target must be a distinct ip:port (Sluice, like Kong, tracks
# health per address), so the targets are 127.0.0.1:PORT_BASE.. PORT_BASE+targets-1,
# answered by HAProxy processes binding that port range and returning 200 to every
# request (C, cheap, and not what is being measured). Each HAProxy takes at most 5,000
# ports: with keep-alive probes every target holds a connection open, and 5,000
# listening sockets plus 5,000 connections fit the usual 20,000-fd limit per process.
# HAProxy keeps idle client connections 10 s between requests (`timeout
# http-keep-alive`), well over the probe interval, and 120 s before a first request
# (`timeout client`, over the 30 s default max age: `tcp` keep-alive probes never send a
# request, and with the 5 s used before, HAProxy closed every such connection after 5 s,
# so those runs reconnected each address every ~5 s rather than every 30 s). So with
# KEEPALIVE=on connections are replaced only at the max age. PORT_BASE defaults below
# Linux's ephemeral range (32768-60999) so the range does not collide with client
# sockets. Each case runs Sluice with no traffic for WARMUP seconds (configuration load,
# first probe round), then measures utime+stime from /proc/PID/stat over
# measured_seconds, RSS at the end, and probes completed (sluice_probes_total on the
# Admin API) over the same window. Only processes this script started are stopped, by
# PID. Raw outputs go to bench/results/probe-cost-<HHMMSS>/.
#
# Build first: cargo build --release -p sluice; needs haproxy (apt-get install haproxy),
# curl and python3.
set -euo pipefail

TARGETS=${1:-10000}
MEASURED=${2:-30}
UPSTREAMS=${UPSTREAMS:-10}
INTERVAL=${INTERVAL:-1}
PROBE_TYPE=${PROBE_TYPE:-http}
KEEPALIVE=${KEEPALIVE:-off}
KEEPALIVE_MAX_AGE=${KEEPALIVE_MAX_AGE:-}
PERF=${PERF:-0}
CASES=${CASES:-off on}
PORT_BASE=${PORT_BASE:-20000}
WARMUP=${WARMUP:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
OUT=${OUT:-$ROOT/bench/results/probe-cost-$(date -u +%H%M%S)}
CLK_TCK=$(getconf CLK_TCK)

[ -x "$SLUICE" ] || { echo "build first: cargo build --release -p sluice" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "needs haproxy (apt-get install haproxy)" >&2; exit 2; }
if (( PORT_BASE + TARGETS > 32768 )); then
    echo "PORT_BASE+targets reaches the ephemeral port range; lower PORT_BASE or targets" >&2
    exit 2
fi
mkdir -p "$OUT"
work=$(mktemp -d)
started=()
cleanup() {
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- the backend: HAProxy answering 200 on every port of the range ------------------
PER_HAPROXY=5000
last_port=$((PORT_BASE + TARGETS - 1))
for ((first = PORT_BASE; first <= last_port; first += PER_HAPROXY)); do
    last=$((first + PER_HAPROXY - 1)); (( last > last_port )) && last=$last_port
    cat > "$work/haproxy-$first.cfg" <<EOF
global
    # Up to 5,000 listening sockets plus one fd per client connection (keep-alive
    # probes hold one per target) must fit the usual 20,000-fd limit.
    maxconn 7000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 5s
    timeout http-keep-alive 10s
frontend probe_targets
    bind 127.0.0.1:${first}-${last}
    http-request return status 200 content-type text/plain string ok
EOF
    haproxy -db -f "$work/haproxy-$first.cfg" >> "$OUT/haproxy.log" 2>&1 &
    started+=($!)
    for _ in $(seq 100); do
        if curl -fsS -o /dev/null "http://127.0.0.1:${last}/" 2>/dev/null; then break; fi
        sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:${last}/" || { echo "haproxy did not start" >&2; cat "$OUT/haproxy.log" >&2; exit 1; }
done

# --- the Kong configuration ---------------------------------------------------------
gen_config() { # $1 = on|off, $2 = file
    python3 - "$1" "$2" "$TARGETS" "$UPSTREAMS" "$PORT_BASE" "$INTERVAL" "$PROBE_TYPE" "$KEEPALIVE" "$KEEPALIVE_MAX_AGE" <<'EOF'
import sys
mode, path, targets, upstreams, base, interval, probe_type = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
keepalive, max_age = sys.argv[8], sys.argv[9]
tags = []
if keepalive == "on":
    tags.append('"sluice:probe-keepalive=on"')
    if max_age:
        tags.append(f'"sluice:probe-keepalive-max-age={max_age}"')
per = -(-targets // upstreams)
lines = ['_format_version: "3.0"', "services:"]
for u in range(upstreams):
    lines += [f"  - name: svc{u}", f"    host: pool{u}", f"    routes: [{{ name: r{u}, paths: [\"/u{u}\"] }}]"]
lines.append("upstreams:")
port = base
for u in range(upstreams):
    lines += [f"  - name: pool{u}"]
    if tags:
        lines += [f"    tags: [{', '.join(tags)}]"]
    if mode == "on":
        lines += ["    healthchecks:", "      active:", f"        type: {probe_type}", "        http_path: /health",
                  "        timeout: 1",
                  "        healthy:", f"          interval: {interval}", "          successes: 2",
                  "        unhealthy:", f"          interval: {interval}", "          tcp_failures: 2",
                  "          http_failures: 2", "          timeouts: 2"]
    lines.append("    targets:")
    for _ in range(per):
        if port >= base + targets:
            break
        lines.append(f"      - target: 127.0.0.1:{port}")
        port += 1
open(path, "w").write("\n".join(lines) + "\n")
EOF
}

cpu_ticks() { # utime + stime of PID $1 (fields 14 and 15, counted after the ")")
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
probes_total() { # $1 = admin port; all probe results summed
    curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^sluice_probes_total\{/ { s += $NF } END { printf "%d\n", s }'
}
probe_failures() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^sluice_probes_total\{/ && !/result="success"/ { s += $NF } END { printf "%d\n", s }'
}

run_case() { # $1 = on|off
    local mode=$1 config="$work/kong-$1.yml" admin gui proxy pid
    gen_config "$mode" "$config"
    admin=$(free_port); gui=$(free_port); proxy=$(free_port)
    "$SLUICE" run --config "$config" --proxy-listen "127.0.0.1:$proxy" \
        --admin-listen "127.0.0.1:$admin" --gui-listen "127.0.0.1:$gui" \
        --log-level warn > "$OUT/sluice-$mode.log" 2>&1 &
    pid=$!
    started+=("$pid")
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "http://127.0.0.1:$admin/status" 2>/dev/null && break
        sleep 0.05
    done
    # Warm-up is part of the measurement design (configuration load and the first probe
    # round are excluded), not synchronisation.
    sleep "$WARMUP"
    local t0 p0 f0 t1 p1 f1 rss hwm
    t0=$(cpu_ticks "$pid"); p0=$(probes_total "$admin"); f0=$(probe_failures "$admin")
    local perf_pid=""
    if [ "$PERF" = 1 ] && [ "$mode" = on ]; then
        # perf's own CPU is outside Sluice's /proc/PID/stat, but its sampling disturbs the
        # process a little: compare CPU numbers from runs without PERF.
        perf record -F 999 -g -p "$pid" -o "${PERF_DATA:-$work/perf.data}" -- sleep "$MEASURED" > /dev/null 2>&1 &
        perf_pid=$!
        started+=("$perf_pid")
    fi
    sleep "$MEASURED"
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    t1=$(cpu_ticks "$pid"); p1=$(probes_total "$admin"); f1=$(probe_failures "$admin")
    rss=$(rss_kib "$pid"); hwm=$(hwm_kib "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    if [ -n "$perf_pid" ] && [ -n "${PERF_DATA:-}" ]; then cp "$PERF_DATA" "$work/perf.data"; fi
    if [ -n "$perf_pid" ] && [ -f "$work/perf.data" ]; then
        {
            echo "# perf record -F 999 -g -p <sluice pid> during the measured window; perf report --no-children"
            perf report -i "$work/perf.data" --no-children --sort dso -g none 2>/dev/null | grep '%' | head -8
            perf report -i "$work/perf.data" --no-children --sort sym -g none 2>/dev/null | grep '%' | head -40
        } > "$OUT/perf.txt" || true  # `head` closing the pipe is not a failure
    fi
    python3 - "$mode" "$t0" "$t1" "$CLK_TCK" "$MEASURED" "$p0" "$p1" "$f0" "$f1" "$rss" "$hwm" <<'EOF' | tee -a "$OUT/summary.txt"
import sys
mode = sys.argv[1]
t0, t1, tck, secs, p0, p1, f0, f1, rss, hwm = map(float, sys.argv[2:])
cpu = (t1 - t0) / tck
print(f"checks {mode:3}: cpu {cpu:6.2f} s in {secs:.0f} s = {100 * cpu / secs:5.1f}% of one core; "
      f"probes {(p1 - p0) / secs:8.0f}/s (failed {(f1 - f0) / secs:.0f}/s); "
      f"RSS {rss / 1024:6.1f} MiB (peak {hwm / 1024:6.1f} MiB)")
EOF
}

{
    echo "probe-cost: targets=$TARGETS upstreams=$UPSTREAMS type=$PROBE_TYPE keepalive=$KEEPALIVE${KEEPALIVE_MAX_AGE:+ max-age=$KEEPALIVE_MAX_AGE} interval=${INTERVAL}s measured=${MEASURED}s warmup=${WARMUP}s"
    echo "commit $(git -C "$ROOT" describe --always --dirty) (binary: $(stat -c %y "$SLUICE")); $(uptime)"
} | tee "$OUT/summary.txt"
for case in $CASES; do run_case "$case"; done
echo "raw outputs: $OUT"
