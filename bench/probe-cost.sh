#!/usr/bin/env bash
# Active-probe cost: CPU and memory of `sluice run` actively health-checking many
# targets, against the same configuration with active checks off.
#
#   bench/probe-cost.sh [targets=10000] [measured_seconds=30]
#   env: UPSTREAMS=10 (targets are split evenly), INTERVAL=1 (healthy and unhealthy
#        probe interval, seconds), PROBE_TYPE=http (or tcp: connect only),
#        CASES="off on" (which configurations to run), PORT_BASE=20000, WARMUP=5,
#        SLUICE=target/release/sluice
#
# Why this shape: every target must be a distinct ip:port (Sluice, like Kong, tracks
# health per address), so the targets are 127.0.0.1:PORT_BASE.. PORT_BASE+targets-1,
# all answered by one HAProxy process binding that port range and returning 200 to
# every request (C, cheap, and not what is being measured). PORT_BASE defaults below
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

# --- the backend: one HAProxy answering 200 on every port of the range -------------
last_port=$((PORT_BASE + TARGETS - 1))
cat > "$work/haproxy.cfg" <<EOF
global
    # 10,000 listening sockets plus two fds per connection must fit the usual
    # 20,000-fd limit; probes keep at most a few hundred connections open.
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend probe_targets
    bind 127.0.0.1:${PORT_BASE}-${last_port}
    http-request return status 200 content-type text/plain string ok
EOF
haproxy -db -f "$work/haproxy.cfg" > "$OUT/haproxy.log" 2>&1 &
started+=($!)
for _ in $(seq 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:${last_port}/" 2>/dev/null; then break; fi
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:${last_port}/" || { echo "haproxy did not start" >&2; cat "$OUT/haproxy.log" >&2; exit 1; }

# --- the Kong configuration ---------------------------------------------------------
gen_config() { # $1 = on|off, $2 = file
    python3 - "$1" "$2" "$TARGETS" "$UPSTREAMS" "$PORT_BASE" "$INTERVAL" "$PROBE_TYPE" <<'EOF'
import sys
mode, path, targets, upstreams, base, interval, probe_type = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
per = -(-targets // upstreams)
lines = ['_format_version: "3.0"', "services:"]
for u in range(upstreams):
    lines += [f"  - name: svc{u}", f"    host: pool{u}", f"    routes: [{{ name: r{u}, paths: [\"/u{u}\"] }}]"]
lines.append("upstreams:")
port = base
for u in range(upstreams):
    lines += [f"  - name: pool{u}"]
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
    sleep "$MEASURED"
    t1=$(cpu_ticks "$pid"); p1=$(probes_total "$admin"); f1=$(probe_failures "$admin")
    rss=$(rss_kib "$pid"); hwm=$(hwm_kib "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
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
    echo "probe-cost: targets=$TARGETS upstreams=$UPSTREAMS type=$PROBE_TYPE interval=${INTERVAL}s measured=${MEASURED}s warmup=${WARMUP}s"
    echo "commit $(git -C "$ROOT" describe --always --dirty) (binary: $(stat -c %y "$SLUICE")); $(uptime)"
} | tee "$OUT/summary.txt"
for case in $CASES; do run_case "$case"; done
echo "raw outputs: $OUT"
