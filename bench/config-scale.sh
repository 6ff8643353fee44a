#!/usr/bin/env bash
# Config scale: a Kong file with 10,000 routes and 1,000 upstreams x 10 targets.
#
# Measures, with the release binary:
# - `sluice check big.yml`: wall time and peak RSS (GNU time), best of $REPEATS;
# - `sluice run --config big.yml`: time from exec until the proxy listener answers
#   (any HTTP status: the routes point at addresses nobody listens on), and the RSS of
#   the running gateway right after loading and again 2 s later;
# - route matching per request at that size: `cargo bench -p sluice-proxy --bench router`
#   when that bench exists (written by the proxy engineer), output saved alongside.
#
# Usage: bench/config-scale.sh [routes] [upstreams] [targets]   (default 10000 1000 10)
# Env: REPEATS (3), RESULTS (bench/results/config-scale-<UTC>), SLUICE_BIN, SKIP_ROUTER_BENCH=1.
# Needs: cargo build --release -p sluice -p sluice-bench. Stops only what it started.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUTES="${1:-10000}"
UPSTREAMS="${2:-1000}"
TARGETS="${3:-10}"
REPEATS="${REPEATS:-3}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="${RESULTS:-$ROOT/bench/results/config-scale-$STAMP}"
SLUICE="${SLUICE_BIN:-$ROOT/target/release/sluice}"
GEN="$ROOT/target/release/gen-config"
mkdir -p "$RESULTS"
for bin in "$SLUICE" "$GEN"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p sluice -p sluice-bench" >&2; exit 2; }
done

STARTED_PIDS=()
cleanup() { for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

BIG="$RESULTS/big.yml"
"$GEN" --routes "$ROUTES" --upstreams "$UPSTREAMS" --targets "$TARGETS" > "$BIG"
echo "file: $(wc -c < "$BIG") bytes, $(wc -l < "$BIG") lines; $ROUTES routes, $UPSTREAMS upstreams x $TARGETS targets" | tee "$RESULTS/summary.txt"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/summary.txt"

for i in $(seq 1 "$REPEATS"); do
    /usr/bin/time -f "check wall_s=%e max_rss_kb=%M exit=%x" "$SLUICE" check "$BIG" > "$RESULTS/check-$i.out" 2> "$RESULTS/check-$i.time" || true
    tail -1 "$RESULTS/check-$i.time" | tee -a "$RESULTS/summary.txt"
done

for i in $(seq 1 "$REPEATS"); do
    proxy="$(free_port)"; admin="$(free_port)"; gui="$(free_port)"
    start_ns="$(date +%s%N)"
    "$SLUICE" run --config "$BIG" --proxy-listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" \
        --gui-listen "127.0.0.1:$gui" --log-level warn > "$RESULTS/run-$i.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    ready=""
    # Poll every 10 ms for up to 60 s: any HTTP answer means the config is loaded and
    # the listener is serving.
    for _ in $(seq 1 6000); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$proxy/svc1/r1" || true)"
        if [ -n "$code" ] && [ "$code" != "000" ]; then ready="$(date +%s%N)"; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    if [ -z "$ready" ]; then
        echo "run $i: gateway did not come up; see $RESULTS/run-$i.log" | tee -a "$RESULTS/summary.txt"
        tail -5 "$RESULTS/run-$i.log"
        kill "$pid" 2>/dev/null || true
        continue
    fi
    rss_ready="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    sleep 2
    rss_later="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
    echo "run $i: ready_ms=$(( (ready - start_ns) / 1000000 )) rss_ready_kb=$rss_ready rss_2s_kb=$rss_later peak_rss_kb=$hwm first_status=$code" | tee -a "$RESULTS/summary.txt"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done

if [ -z "${SKIP_ROUTER_BENCH:-}" ]; then
    if [ -f "$ROOT/crates/proxy/benches/router.rs" ]; then
        (cd "$ROOT" && cargo bench -p sluice-proxy --bench router 2>&1) | tee "$RESULTS/router-bench.txt" | grep -E "time:|^[a-z].*/" || true
    else
        echo "router bench: crates/proxy/benches/router.rs does not exist (yet)" | tee -a "$RESULTS/summary.txt"
    fi
fi
echo "results in $RESULTS"
