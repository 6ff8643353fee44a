#!/usr/bin/env bash
# One proxy under wrk, with its CPU split into user and system time per request, and
# optionally a perf profile or a syscall count: the tool behind the "where the rest is"
# paragraphs of BENCHMARKS.md (throughput.sh is the benchmark; this is the microscope).
#
#   bench/profile.sh <peer> [perf|strace|syscalls|callgrind]
#   peer: sluice | nginx | haproxy (the drill configuration from `drill config`)
#   env:  SLUICE_BIN (default target/release/sluice; for `perf`, a build with
#         RUSTFLAGS="-C force-frame-pointers=yes" gives call graphs), WORK (default
#         /tmp/sluice-profile-<peer>), DURATION (wrk seconds, default 6), PLAIN_PEERS
#         (as in throughput.sh: set, NGINX and HAProxy send no Kong headers)
#
# Layout as throughput.sh: the proxy pinned to core 0, wrk and one NGINX backend process
# (five ports) on core 1, `wrk -t1 -c64`, 2 s warm-up. Prints req/s, p99 and CPU µs per
# request as user + system from /proc/<pid>/stat (for NGINX, its worker). `perf` records
# 5 s at 2 kHz with frame-pointer call graphs into $WORK/perf.data; `strace` counts
# syscalls into $WORK/strace.txt (strace slows the proxy a lot: read the counts per
# request, not the rate); `syscalls` counts them with kernel tracepoints (`perf stat`),
# which leaves the rate almost untouched, and prints them per request. Ports 18000-18002
# and 18081-18085 on loopback. Stops only the processes it started, by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEER=${1:?peer: sluice, nginx or haproxy}
MODE=${2:-}
BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
DRILL=$ROOT/target/release/drill
DURATION=${DURATION:-6}
W=${WORK:-/tmp/sluice-profile-$PEER}
rm -rf "$W"; mkdir -p "$W"/backend/{client_body,proxy,fastcgi,uwsgi,scgi,logs}
P=(18081 18082 18083 18084 18085)
{
echo "worker_processes 1; daemon off; pid $W/backend/nginx.pid; error_log $W/backend/error.log warn;"
echo "events { worker_connections 4096; }"
echo "http { access_log off; keepalive_requests 10000000; client_body_temp_path $W/backend/client_body; proxy_temp_path $W/backend/proxy; fastcgi_temp_path $W/backend/fastcgi; uwsgi_temp_path $W/backend/uwsgi; scgi_temp_path $W/backend/scgi;"
for p in "${P[@]}"; do echo "server { listen 127.0.0.1:$p; location / { add_header x-backend-region primary; add_header x-backend-instance p; return 200 \"hello\\n\"; } }"; done
echo "}"; } > "$W/backend/nginx.conf"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 1 nginx -p "$W/backend" -c "$W/backend/nginx.conf" & PIDS+=($!)
sleep 0.3
mapfile -t argv < <(SLUICE_BIN="$BIN" "$DRILL" config --peer "$PEER" \
    --primary 127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083 \
    --secondary 127.0.0.1:18084,127.0.0.1:18085 \
    --listen 127.0.0.1:18000 --admin 127.0.0.1:18001 --gui 127.0.0.1:18002 --dir "$W" \
    ${PLAIN_PEERS:+--plain-peers})
# `callgrind` (sluice only: an NGINX worker under valgrind runs as `nobody`, out of
# callgrind_control's reach): the proxy runs under valgrind, and what is counted is instructions, not
# time: a per-request count that machine noise does not move, for A/B checks of
# user-space changes too small for the timings (about 30x slower; read the count only).
[ "$MODE" = callgrind ] && argv=(valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --trace-children=yes --callgrind-out-file="$W/callgrind.out.%p" "${argv[@]}")
taskset -c 0 "${argv[@]}" > "$W/peer.log" 2>&1 & PROXY=$!; PIDS+=($PROXY)
for _ in $(seq 300); do curl -fs -o /dev/null http://127.0.0.1:18000/ && break; sleep 0.1; done
# NGINX and HAProxy fork: measure the worker (the last child), else the process itself.
WPID=$PROXY; children=$(pgrep -P "$PROXY" || true); [ -n "$children" ] && WPID=$(echo $children | awk '{print $NF}')
taskset -c 1 wrk -t1 -c64 -d2s http://127.0.0.1:18000/ > /dev/null
stat_field() { sed 's/.*) //' "/proc/$WPID/stat" | awk -v f="$1" '{print $f}'; }
u0=$(stat_field 12); s0=$(stat_field 13)
case "$MODE" in
  perf) perf record -F 2000 --call-graph fp -p "$WPID" -o "$W/perf.data" -- sleep 5 > /dev/null 2>&1 & TOOL=$! ;;
  strace) strace -c -f -p "$WPID" -o "$W/strace.txt" & TOOL=$!; sleep 0.5 ;;
  # Syscalls counted by kernel tracepoints: unlike strace, this barely slows the proxy,
  # so the counts per request are those of a full-speed run (epoll_wait batching included).
  syscalls) perf stat -x, -o "$W/syscalls.txt" -e 'raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write' -p "$WPID" & TOOL=$!; sleep 0.2 ;;
  # Zeroed in the background: valgrind takes the request when the process next runs.
  callgrind) callgrind_control -z "$WPID" > /dev/null & TOOL=$!; sleep 0.2 ;;
  *) TOOL= ;;
esac
taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency http://127.0.0.1:18000/ > "$W/wrk.txt"
u1=$(stat_field 12); s1=$(stat_field 13)
[ "$MODE" = strace ] || [ "$MODE" = syscalls ] && kill -INT "$TOOL"
[ -n "$TOOL" ] && { wait "$TOOL" || true; }
if [ "$MODE" = callgrind ]; then
    # The counts are written when the process exits.
    kill -TERM "$PROXY"; wait "$PROXY" 2>/dev/null || true
    dump="$W/callgrind.out.$WPID"
    n=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    echo "instructions/request $((ir / n)) over $n requests (callgrind_annotate $dump)"
fi
n=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
hz=$(getconf CLK_TCK)
grep -E "Requests/sec|  99%" "$W/wrk.txt"
[ "$MODE" = syscalls ] && awk -F, -v n="$n" '/^[0-9]/ {printf "%-36s %.3f per request\n", $3, $1 / n}' "$W/syscalls.txt"
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$n" -v hz="$hz" 'BEGIN {
    printf "cpu us/request %.2f (user %.2f, system %.2f) over %d requests\n",
        (u + s) / hz * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n, n }'
echo "outputs in $W"
