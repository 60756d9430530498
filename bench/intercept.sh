#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Transparent interception (issue 17), in two network namespaces this script creates and removes
# (a pod and a server joined by a veth pair, 10.213.9.1 and 10.213.9.2, never the host's tables):
#
#   (a) the cost of interception: wrk (uid 1000) in the pod calls the server's nginx (CPU 0)
#       two ways: "direct" to the proxy's own port (127.0.0.1:15002, a static cluster: no
#       REDIRECT, no SO_ORIGINAL_DST) and "intercepted" to the server's address, which the rules
#       of `sidecar iptables` send to the outbound listener (protocol http, an original_dst
#       cluster); then "direct_auto" and "intercepted_auto" the same with the listener's protocol
#       auto (detection, then the hand-over to HTTP/1). The pod's side, wrk and the proxy (uid
#       1337, one worker), shares one pinned core (CPU 1): requests/s is what the whole path
#       costs that core per request, REDIRECT's NAT included wherever the kernel runs it. Each
#       with keep-alive (wrk -c50) and with a new connection per request (Connection: close),
#       where REDIRECT, conntrack's NAT and the original-destination lookup are paid every time;
#       requests/s, the proxy's own CPU per request (utime+stime from /proc) and p99 latency.
#       A mode and its baseline run back to back, in alternating order from round to round, and
#       each ratio is taken within its round (intercepted / direct, intercepted_auto /
#       direct_auto), so load that drifts across the run weighs on both sides alike;
#   (b) the TCP relay against HAProxy in mode tcp: iperf3 (client and server on CPU 0) through
#       `sidecar proxy` (listener protocol tcp, one worker) and through HAProxy (nbthread 1), each
#       alone on CPU 1, and iperf3 to the server directly as the ceiling: Gbit/s and the proxy's
#       CPU seconds per GB relayed (utime+stime from /proc);
#   (c) RSS per idle relayed TCP connection: BENCH_INTERCEPT_IDLE (default 2000) keep-alive
#       HTTP connections to the nginx (one request each, then idle) held through each relay
#       (protocol tcp: the bytes are not parsed), (RSS after - RSS before) / connections.
#
# Several short rounds (BENCH_ROUNDS, default 9, of BENCH_SECONDS, default 5 s; BENCH_QUICK=1: 3
# rounds of 2 s); the report gives the median over the rounds and their interquartile range
# (p25-p75), which a single disturbed round does not move, and says how busy the rest of the
# machine was before and after the run (a shared machine makes every figure noisier; the ratios
# least). Needs root, iptables, nginx, HAProxy, wrk and iperf3 (scripts/deps.sh bench). Writes $OUT/intercept.md (the RESULTS.md section), raw figures
# in $OUT/intercept.tsv. Measurements, not tests: nothing here passes or fails on a figure.
#
# Usage: bench/intercept.sh SIDECAR OUT_DIR   (SIDECAR: the binary, or the build dir holding it)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh disable=SC2034 # IDLE_CONNS is read by lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -eq 2 ] || die "usage: bench/intercept.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, iptables)"
for t in ip iptables nginx haproxy wrk iperf3 setpriv; do
    command -v "$t" >/dev/null || die "$t is not installed (scripts/deps.sh bench)"
done
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-3}
    SECS=${BENCH_SECONDS:-2}
    IDLE=${BENCH_INTERCEPT_IDLE:-500}
else
    ROUNDS=${BENCH_ROUNDS:-9}
    SECS=${BENCH_SECONDS:-5}
    IDLE=${BENCH_INTERCEPT_IDLE:-2000}
fi
IDLE_CONNS=$IDLE # read by bench_begin (the descriptor limit)
CPU_LOAD=0
CPU_PROXY=$(($(nproc) > 1 ? 1 : 0))
POD=scbench$$-pod
SRV=scbench$$-srv
POD_IP=10.213.9.1
SRV_IP=10.213.9.2
UP_PORT=8081
IPERF_PORT=5201

bench_begin intercept

ns_cleanup() {
    bench_cleanup
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
}
trap ns_cleanup EXIT

nsspawn() { # nsspawn LOG CPU NS UID CMD...
    local out=$1 cpu=$2
    shift 2
    spawn "$out" "$cpu" ip netns exec "$1" setpriv --reuid="$2" --regid="$2" --clear-groups \
        "${@:3}"
}

topology() {
    ip netns add "$POD"
    ip netns add "$SRV"
    ip -n "$POD" link set lo up
    ip -n "$SRV" link set lo up
    ip -n "$POD" link add eth0 type veth peer name eth0 netns "$SRV"
    ip -n "$POD" addr add "$POD_IP/24" dev eth0
    ip -n "$SRV" addr add "$SRV_IP/24" dev eth0
    ip -n "$POD" link set eth0 up
    ip -n "$SRV" link set eth0 up
}

start_servers() {
    local dir=$TMP/upstream
    mkdir -p "$dir/tmp"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$UP_PORT#g" \
        -e "s#listen 127.0.0.1:#listen $SRV_IP:#" "$BENCH_DIR/peers/nginx-upstream.conf" \
        >"$dir/nginx.conf"
    spawn "$dir/out.log" "$CPU_LOAD" ip netns exec "$SRV" nginx -e "$dir/error.log" -p "$dir/" \
        -c "$dir/nginx.conf"
    spawn "$TMP/iperf3.log" "$CPU_LOAD" ip netns exec "$SRV" iperf3 -s -B "$SRV_IP" \
        -p "$IPERF_PORT"
    for _ in $(seq 100); do
        ip netns exec "$POD" curl -sf -o /dev/null "http://$SRV_IP:$UP_PORT/" && return 0
        sleep 0.1
    done
    die "the upstream nginx did not start"
}

# proxy_config PROTOCOL: the sidecar's config, the outbound listener's protocol given.
proxy_config() {
    cat <<EOF
admin: 127.0.0.1:15000
access_log: "off"
workers: 1
retries: 0
listeners:
  - name: outbound
    address: 127.0.0.1:15001
    protocol: $1
    routes: [{ name: passthrough, cluster: passthrough }]
  - name: direct
    address: 127.0.0.1:15002
    routes: [{ name: app, cluster: app }]
  - name: tcp
    address: 127.0.0.1:15010
    protocol: tcp
    tcp_cluster: iperf
  - name: tcp_idle
    address: 127.0.0.1:15012
    protocol: tcp
    tcp_cluster: app
clusters:
  - name: passthrough
    type: original_dst
  # The idle-connection count passes the default circuit breaker (1024 connections per cluster).
  - name: app
    endpoints: ["$SRV_IP:$UP_PORT"]
    circuit_breakers: { max_connections: 100000 }
  - name: iperf
    endpoints: ["$SRV_IP:$IPERF_PORT"]
EOF
}

PROXY_PID=""
start_proxy() {
    local cfg=$TMP/proxy-$1.yaml
    proxy_config "$1" >"$cfg"
    chmod 644 "$cfg"
    nsspawn "$TMP/proxy-$1.log" "$CPU_PROXY" "$POD" 1337 "$SIDECAR" proxy -c "$cfg"
    PROXY_PID=$SPAWNED_PID
    for _ in $(seq 100); do
        ip netns exec "$POD" curl -sf -o /dev/null http://127.0.0.1:15000/ready && return 0
        sleep 0.1
    done
    tail -n 5 "$TMP/proxy-$1.log" >&2
    die "the proxy did not start"
}

HAPROXY_PID=""
start_haproxy() {
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 20000
    no strict-limits
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend relay
    bind 127.0.0.1:15011
    default_backend iperf
backend iperf
    server iperf $SRV_IP:$IPERF_PORT
frontend idle
    bind 127.0.0.1:15013
    default_backend app
backend app
    server app $SRV_IP:$UP_PORT
EOF
    # As the proxy's user, so its upstream connections are not intercepted (as a mesh proxy's).
    chmod 644 "$TMP/haproxy.cfg"
    nsspawn "$TMP/haproxy.log" "$CPU_PROXY" "$POD" 1337 haproxy -db -f "$TMP/haproxy.cfg"
    HAPROXY_PID=$SPAWNED_PID
    sleep 0.5
    alive "$HAPROXY_PID" || die "HAProxy did not start: $(tail -n 3 "$TMP/haproxy.log")"
}

# wrk_in_pod OUT URL CLOSE: wrk (-c50) as uid 1000 in the pod (run_wrk), on the proxy's core, a
# new connection per request with CLOSE=1.
wrk_in_pod() {
    WRK_URL=$2
    WRK_WRAP=(ip netns exec "$POD" setpriv --reuid=1000 --regid=1000 --clear-groups)
    WRK_ARGS=()
    [ "$3" = 1 ] && WRK_ARGS=(-H "Connection: close")
    run_wrk "$1" "$CPU_PROXY" 0 50 "$SECS"
}

# (a) one round of every HTTP mode for the proxy running now (<modes> for it).
measure_http() {
    local round=$1 mode url close rps t0 t1
    shift
    for close in 0 1; do
        for mode in "$@"; do
            case $mode in
            direct*) url=http://127.0.0.1:15002/ ;;
            *) url=http://$SRV_IP:$UP_PORT/ ;;
            esac
            t0=$(cpu_ticks "$PROXY_PID")
            if ! wrk_in_pod "$LOGS/wrk-$mode-$close-$round.txt" "$url" "$close"; then
                note "$mode" "wrk failed (round $round, close=$close)"
                continue
            fi
            t1=$(cpu_ticks "$PROXY_PID")
            rps=$(awk -v r="${WRK[requests]}" -v d="${WRK[duration_us]}" \
                'BEGIN { printf "%.0f", r / (d / 1e6) }')
            record "$mode" "$round" "rps_c$close" "$rps"
            record "$mode" "$round" "cpu_us_c$close" "$(awk -v t=$((t1 - t0)) -v k="$CLK_TCK" \
                -v r="${WRK[requests]}" 'BEGIN { if (r > 0) printf "%.2f", (t / k) * 1e6 / r }')"
            record "$mode" "$round" "p99_us_c$close" "${WRK[p99_us]}"
            record "$mode" "$round" "errors_c$close" \
                $((WRK[connect_errors] + WRK[read_errors] + WRK[write_errors] + WRK[timeouts]))
        done
    done
}

# (b) one iperf3 run to 127.0.0.1:PORT (or the server) with PID's CPU measured.
measure_iperf() {
    local target=$1 round=$2 host=$3 port=$4 pid=${5:-} t0 t1 json bps bytes
    # iperf3 runs as the proxy's user: its direct connection to the server is not intercepted.
    t0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    json=$TMP/iperf-$target-$round.json
    timeout $((SECS + 30)) taskset -c "$CPU_LOAD" ip netns exec "$POD" setpriv --reuid=1337 \
        --regid=1337 --clear-groups iperf3 -c "$host" -p "$port" -t "$SECS" -J >"$json" 2>&1 ||
        true
    t1=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    read -r bps bytes < <(python3 -c '
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]["sum_received"]
    print(int(e["bits_per_second"]), int(e["bytes"]))
except Exception:
    print(0, 0)' "$json")
    if [ "$bps" = 0 ]; then
        note "$target" "iperf3 failed (round $round): $(tr -s ' \t\n' ' ' <"$json" | head -c 200)"
        return
    fi
    record "$target" "$round" gbps "$(awk -v b="$bps" 'BEGIN { printf "%.3f", b / 1e9 }')"
    if [ -n "$pid" ]; then
        record "$target" "$round" cpu_s_per_gb \
            "$(awk -v t=$((t1 - t0)) -v k="$CLK_TCK" -v b="$bytes" \
                'BEGIN { printf "%.3f", (t / k) / (b / 1e9) }')"
    fi
}

# (c) RSS per idle connection held through 127.0.0.1:PORT, for PID.
measure_idle() {
    local target=$1 port=$2 pid=$3 before after hold held
    before=$(proc_kib VmRSS "$pid")
    ip netns exec "$POD" setpriv --reuid=1337 --regid=1337 --clear-groups /usr/bin/python3 \
        "$BENCH_DIR/idle_conns.py" "$port" "$IDLE" >"$TMP/idle-$target.out" 2>&1 &
    hold=$!
    for _ in $(seq 600); do
        grep -q '^ready' "$TMP/idle-$target.out" 2>/dev/null && break
        sleep 0.1
    done
    sleep 1
    after=$(proc_kib VmRSS "$pid")
    held=$(awk '$1 == "ready" { print $2 }' "$TMP/idle-$target.out")
    note "$target" "idle: $(grep '^ready' "$TMP/idle-$target.out" || echo 'not ready') (held, failed)"
    if [ "${held:-0}" -gt 0 ]; then
        record "$target" 1 idle_kib_per_conn \
            "$(awk -v a="$after" -v b="$before" -v n="$held" 'BEGIN { printf "%.2f", (a - b) / n }')"
    fi
    kill "$hold" 2>/dev/null || true
    wait "$hold" 2>/dev/null || true
}

report() {
    python3 - "$TSV" "$NOTES" "$ROUNDS" "$SECS" "$IDLE" <<'EOF'
import statistics, sys
from collections import defaultdict
tsv, notes, rounds, secs, idle = sys.argv[1:]
v = defaultdict(list)
for line in open(tsv):
    t, r, m, x = line.rstrip("\n").split("\t")
    v[(t, m)].append(float(x))
def summary(x, fmt):
    """The median and the interquartile range (p25-p75) of <x>."""
    if not x:
        return "-"
    q = statistics.quantiles(x, n=4, method="inclusive") if len(x) > 1 else [x[0], x[0], x[0]]
    return f"{fmt.format(statistics.median(x))} ({fmt.format(q[0])}-{fmt.format(q[2])})"
def spread(t, m, fmt="{:.0f}"):
    return summary(v.get((t, m)), fmt)
def ratio(t, m, base):
    """The per-round ratios to <base> (measured in the same round), summarised."""
    a, b = r_of(t, m), r_of(base, m)
    return summary([a[k] / b[k] for k in a if k in b and b[k]], "{:.3f}")
rv = defaultdict(dict)
for line in open(tsv):
    t, r, m, x = line.rstrip("\n").split("\t")
    rv[(t, m)][r] = float(x)
def r_of(t, m):
    return rv.get((t, m), {})
print(f"{rounds} rounds of {secs} s each; median (p25-p75 over the rounds). Ratios are taken "
      "within each round, then summarised.")
print()
print("### (a) Interception cost: HTTP through REDIRECT + SO_ORIGINAL_DST vs the proxy's port")
print()
print("wrk and the proxy share one pinned core; nginx, the server, is on the other. Ratios: "
      "intercepted to direct, intercepted_auto to direct_auto (the same proxy, protocol auto).")
print()
print("| path | keep-alive req/s | ratio | proxy CPU µs/req | p99 µs | new conn/request req/s "
      "| ratio | proxy CPU µs/req | p99 µs |")
print("|---|---|---|---|---|---|---|---|---|")
for t, base in (("direct", "direct"), ("intercepted", "direct"),
                ("direct_auto", "direct_auto"), ("intercepted_auto", "direct_auto")):
    print(f"| {t} | {spread(t, 'rps_c0')} | {ratio(t, 'rps_c0', base)} | "
          f"{spread(t, 'cpu_us_c0', '{:.1f}')} | {spread(t, 'p99_us_c0')} | "
          f"{spread(t, 'rps_c1')} | {ratio(t, 'rps_c1', base)} | "
          f"{spread(t, 'cpu_us_c1', '{:.1f}')} | {spread(t, 'p99_us_c1')} |")
print()
print("### (b) TCP relay: iperf3 through the relay, the relay alone on one core")
print()
print("| relay | Gbit/s | vs HAProxy | CPU s per GB | vs HAProxy |")
print("|---|---|---|---|---|")
for t in ("iperf3_direct", "sidecar", "haproxy"):
    print(f"| {t} | {spread(t, 'gbps', '{:.2f}')} | {ratio(t, 'gbps', 'haproxy')} | "
          f"{spread(t, 'cpu_s_per_gb', '{:.3f}')} | {ratio(t, 'cpu_s_per_gb', 'haproxy')} |")
print()
print(f"### (c) Memory per idle relayed TCP connection ({idle} connections)")
print()
print("| relay | RSS KiB per connection |")
print("|---|---|")
for t in ("sidecar", "haproxy"):
    print(f"| {t} | {spread(t, 'idle_kib_per_conn', '{:.2f}')} |")
n = [l.rstrip("\n").split("\t", 1) for l in open(notes) if l.strip()]
if n:
    print()
    print("Notes:")
    print()
    for t, text in n:
        print(f"- {t}: {text}")
EOF
}

main() {
    local round busy_before busy_after
    log "intercept: $ROUNDS rounds of $SECS s; raw figures in $TSV"
    busy_before=$(busy_pct 2)
    note machine "load of everything else before the run: ${busy_before}% of all CPUs"
    topology
    start_servers
    ip netns exec "$POD" "$SIDECAR" iptables --backend auto >"$LOGS/iptables.log" 2>&1 ||
        die "sidecar iptables failed: $(tail -n 3 "$LOGS/iptables.log")"
    start_haproxy
    for round in $(seq "$ROUNDS"); do
        log "round $round"
        start_proxy http
        if [ $((round % 2)) = 1 ]; then
            measure_http "$round" direct intercepted
        else
            measure_http "$round" intercepted direct
        fi
        measure_iperf sidecar "$round" 127.0.0.1 15010 "$PROXY_PID"
        measure_iperf haproxy "$round" 127.0.0.1 15011 "$HAPROXY_PID"
        measure_iperf iperf3_direct "$round" "$SRV_IP" "$IPERF_PORT"
        stop_proc "$PROXY_PID"
        start_proxy auto
        if [ $((round % 2)) = 1 ]; then
            measure_http "$round" direct_auto intercepted_auto
        else
            measure_http "$round" intercepted_auto direct_auto
        fi
        stop_proc "$PROXY_PID"
    done
    start_proxy http
    measure_idle sidecar 15012 "$PROXY_PID"
    measure_idle haproxy 15013 "$HAPROXY_PID"
    busy_after=$(busy_pct 2)
    note machine "load of everything else after the run: ${busy_after}% of all CPUs; load \
average $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "${busy_before:-0}" -ge 5 ] || [ "${busy_after:-0}" -ge 5 ]; then
        note machine "the machine was shared with other work during the run: every figure is \
noisier than on a quiet machine, the within-round ratios and CPU per request least"
    fi
    report >"$OUT/intercept.md"
    log "wrote $OUT/intercept.md"
}

main
