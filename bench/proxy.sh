#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `sidecar proxy` against nginx, HAProxy and Caddy as reverse proxies, side by side in one run
# (issue 4). One trivial upstream (nginx, a fixed 13-byte body, keep-alive, its own worker, on
# CPU 0) serves every proxy; each proxy runs with one worker and upstream keep-alive, from the
# bench/peers/ templates written into a temp dir, in the foreground, on free 127.0.0.1 ports. The
# upstream alone ("direct") is the baseline. For each target and round, in this order:
#   idle RSS      VmRSS of the serving process (nginx: the worker) one second after start;
#   (a) req/s     wrk -t1 -c50, the proxy pinned alone on CPU 1, wrk and upstream on CPU 0, and
#                 the proxy's CPU busy % meanwhile (who set the pace);
#   (c) latency   p50/p99 at ~2,000 req/s (20 connections paced by wrk.lua), proxy on CPU 1;
#   (b) CPU/req   proxy, upstream and wrk all on CPU 0: the proxy's utime+stime from
#                 /proc/PID/stat, before and after, divided by the requests completed;
#   (c) again     with all on CPU 0; the added latency is the proxy's percentile minus the direct
#                 upstream's of the same round;
#   peak RSS      VmHWM after those loads, and the Pss of all the proxy's processes;
#   (e) syscalls  `strace -c -f` attached during a short load: total calls / requests (strace
#                 slows the proxy down, so only this ratio is kept);
#   (d) idle conns  the proxy restarted with room for BENCH_IDLE_CONNS connections: its RSS
#                 while idle_conns.py holds that many keep-alive connections open through it.
# Rounds are interleaved across the targets, with the order rotated every round, so drift hits
# all of them alike; report.py turns the raw figures into the RESULTS.md section (median,
# min-max, ratios, the issue's targets). bench/README.md has the why of each choice.
#
# Usage: bench/proxy.sh SIDECAR OUT_DIR   (SIDECAR: the binary, or the build dir holding it)
# Writes OUT_DIR/proxy.tsv (raw figures), OUT_DIR/proxy.md (the section), OUT_DIR/proxy-logs/.
# Environment (defaults in brackets; a full run takes about 10 minutes):
#   BENCH_SECONDS [6]  length of each (a), (b), (c) run     BENCH_ROUNDS [3]
#   BENCH_QUICK=1      smoke test in about a minute (2 s runs, 1 round, 1,000 idle connections)
#   BENCH_STRACE_SECONDS [3]   BENCH_IDLE_CONNS [10000]   BENCH_TARGETS [direct nginx haproxy
#   haproxy_busy caddy sidecar sidecar_policy sidecar_busy]   SIDECAR_ARGS (extra flags for
#   `sidecar proxy`)   BENCH_KEEP=1 keeps the
#   temp dir (configs, logs) for inspection.
# shellcheck disable=SC2317 # functions called by name: start_$TARGET, section_$s, traps
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -eq 2 ] || die "usage: bench/proxy.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR"
SIDECAR=$(sidecar_bin "$1")
OUT=$2

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    q_secs=2 q_rounds=1 q_strace=1 q_idle=1000 q_warmup=1
else
    q_secs=6 q_rounds=3 q_strace=3 q_idle=10000 q_warmup=2
fi
SECS=${BENCH_SECONDS:-$q_secs}
ROUNDS=${BENCH_ROUNDS:-$q_rounds}
STRACE_SECS=${BENCH_STRACE_SECONDS:-$q_strace}
IDLE_CONNS=${BENCH_IDLE_CONNS:-$q_idle}
WARMUP_SECS=$q_warmup
ALL_TARGETS="direct nginx haproxy haproxy_busy caddy sidecar sidecar_policy sidecar_busy"
read -r -a TARGETS <<<"${BENCH_TARGETS:-$ALL_TARGETS}"
MAXCONN_DEFAULT=1024 # the connection limit given to nginx and HAProxy (see bench/peers/)
MAXCONN=$MAXCONN_DEFAULT
LOAD_CONNS=50       # (a), (b), (e)
RATE_CONNS=20       # (c): 20 connections ...
PACE_MS=10          # ... each waiting 10 ms on average between requests: ~2,000 req/s
CPU_LOAD=0          # wrk, the upstream, and in (b) the proxy too
CPU_PROXY=1         # the proxy alone in (a), (c), (e)
if [ "$(nproc)" -lt 2 ]; then
    CPU_PROXY=0
fi
bench_begin proxy
# render TEMPLATE DIR PORT: writes bench/peers/TEMPLATE into DIR with its placeholders filled.
render() {
    sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM@#127.0.0.1:${UP_PORT:-0}#g" \
        -e "s#@MAXCONN@#$MAXCONN#g" "$BENCH_DIR/peers/$1" >"$2/$1"
}

# start_<target> DIR PORT: start one proxy under test on 127.0.0.1:PORT, pinned to CPU_PROXY, in
# the foreground with its config, pid and log files in DIR. Sets SPAWNED_PID.
start_nginx() {
    render nginx-proxy.conf "$1" "$2"
    spawn "$1/out.log" "$CPU_PROXY" nginx -e "$1/error.log" -p "$1/" -c "$1/nginx-proxy.conf"
}

start_haproxy() {
    render haproxy.cfg "$1" "$2"
    spawn "$1/out.log" "$CPU_PROXY" haproxy -db -f "$1/haproxy.cfg"
}

# HAProxy polling without sleeping (its `busy-polling`), against the sidecar's busy_poll.
start_haproxy_busy() {
    render haproxy.cfg "$1" "$2"
    sed -i 's/^global$/global\n    busy-polling/' "$1/haproxy.cfg"
    spawn "$1/out.log" "$CPU_PROXY" haproxy -db -f "$1/haproxy.cfg"
}

start_caddy() {
    render Caddyfile "$1" "$2"
    spawn "$1/out.log" "$CPU_PROXY" env GOMAXPROCS=1 HOME="$1" XDG_DATA_HOME="$1" \
        XDG_CONFIG_HOME="$1" caddy run --adapter caddyfile --config "$1/Caddyfile"
}

# The sidecar takes the flags its --help lists among --workers, --admin (a free port, so that
# the default 15000 of anything else running here is left alone) and a switch for the access log;
# SIDECAR_ARGS adds any others, and arguments after DIR PORT more still.
start_sidecar() {
    local help args
    help=$(timeout 5 "$SIDECAR" proxy --help 2>&1) || true
    args=(proxy --listen "127.0.0.1:$2" --upstream "127.0.0.1:$UP_PORT")
    grep -q -- '--workers' <<<"$help" && args+=(--workers 1)
    grep -q -- '--admin' <<<"$help" && args+=(--admin "127.0.0.1:$(free_port)")
    if grep -q -- '--no-access-log' <<<"$help"; then
        args+=(--no-access-log)
    elif grep -q -- '--access-log' <<<"$help"; then
        args+=(--access-log off)
    fi
    # shellcheck disable=SC2206 # SIDECAR_ARGS is a list of words
    args+=(${SIDECAR_ARGS:-} "${@:3}")
    grep -q "^${TARGET}_cmd=" "$META" || echo "${TARGET}_cmd=sidecar ${args[*]}" >>"$META"
    spawn "$1/out.log" "$CPU_PROXY" "$SIDECAR" "${args[@]}"
}

# The plain sidecar with busy polling (for a proxy with a CPU of its own).
start_sidecar_busy() {
    start_sidecar "$1" "$2" --busy-poll 20ms
}

# The sidecar with the traffic policy of issue 5 switched on, against "sidecar" (the plain data
# path): a rate limit per client IP on the listener that this load never hits (the --rate-limit
# flag's form: x-ratelimit-* headers on 429s only), two endpoints (the same upstream under two
# names), active health checks of both every second, outlier detection and circuit breakers at
# their defaults (on; this load never trips them), round robin as in the plain run.
start_sidecar_policy() {
    local args
    cat >"$1/sidecar-policy.yaml" <<EOF
access_log: "off"
workers: 1
listeners:
  - name: listen
    address: 127.0.0.1:$2
    rate_limit: { requests_per_unit: 1000000000, unit: second, key: client_ip }
    routes: [{ name: default, cluster: app }]
clusters:
  - name: app
    endpoints: [127.0.0.1:$UP_PORT, localhost:$UP_PORT]
    health_check: { path: /, interval: 1s, timeout: 1s }
EOF
    args=(proxy -c "$1/sidecar-policy.yaml" --admin "127.0.0.1:$(free_port)")
    # shellcheck disable=SC2206 # SIDECAR_ARGS is a list of words
    args+=(${SIDECAR_ARGS:-})
    grep -q '^sidecar_policy_cmd=' "$META" ||
        echo "sidecar_policy_cmd=sidecar ${args[*]} (config: bench/proxy.sh start_sidecar_policy)" \
            >>"$META"
    spawn "$1/out.log" "$CPU_PROXY" "$SIDECAR" "${args[@]}"
}

# The upstream: started once, on CPU 0 with wrk, for the whole run.
start_upstream() {
    local dir=$TMP/upstream
    mkdir -p "$dir/tmp"
    UP_PORT=$(free_port)
    render nginx-upstream.conf "$dir" "$UP_PORT"
    spawn "$dir/out.log" "$CPU_LOAD" nginx -e "$dir/error.log" -p "$dir/" \
        -c "$dir/nginx-upstream.conf"
    UP_PID=$SPAWNED_PID
    wait_http "$UP_PORT" "$UP_PID" "$dir/out.log" || die "the upstream nginx did not start"
}

# load NAME CONNS SECONDS [PACE_MS]: one wrk run against the current target (PORT), output in
# DIR/NAME.txt; adds its errors to ERRORS and NON2XX. Returns 1 when wrk gave no summary.
load() {
    if ! run_wrk "$DIR/$1.txt" "$CPU_LOAD" "$PORT" "$2" "$3" "${4:-}"; then
        note "$TARGET" "round $ROUND: wrk run '$1' gave no summary: $(tail -n 1 "$DIR/$1.txt")"
        ERRORS=$((ERRORS + 1))
        return 1
    fi
    ERRORS=$((ERRORS + WRK[connect_errors] + WRK[read_errors] + WRK[write_errors] + WRK[timeouts]))
    NON2XX=$((NON2XX + WRK[non2xx]))
}

# ratio NUM DEN [SCALE]: NUM * SCALE / DEN with three decimals.
ratio() {
    awk -v n="$1" -v d="$2" -v s="${3:-1}" 'BEGIN { if (d > 0) printf "%.3f\n", n * s / d }'
}

# (a) with the target where it is (alone on CPU_PROXY): requests/s, and how busy the target was
# (near 100 % means the target is the bottleneck, lower means wrk and the upstream are).
measure_throughput() {
    local before after
    before=$(cpu_ticks "${PIDS[@]}")
    load throughput "$LOAD_CONNS" "$SECS" || return 0
    after=$(cpu_ticks "${PIDS[@]}")
    record "$TARGET" "$ROUND" rps "$(ratio "${WRK[requests]}" "${WRK[duration_us]}" 1000000)"
    record "$TARGET" "$ROUND" busy_pct \
        "$(ratio $((after - before)) "${WRK[duration_us]}" $((100000000 / CLK_TCK)))"
}

# (b) with the target where it is (on CPU_LOAD with wrk and the upstream): its CPU time per
# request.
measure_cpu() {
    local before after
    before=$(cpu_ticks "${PIDS[@]}")
    load cpu "$LOAD_CONNS" "$SECS" || return 0
    after=$(cpu_ticks "${PIDS[@]}")
    record "$TARGET" "$ROUND" cpu_us_per_req \
        "$(ratio $((after - before)) "${WRK[requests]}" $((1000000 / CLK_TCK)))"
}

# measure_latency NAME SUFFIX...: (c) with the target where it is: p50/p99 at the paced rate,
# recorded as p50_usSUFFIX, p99_usSUFFIX and paced_rpsSUFFIX for each SUFFIX.
measure_latency() {
    local name=$1 suffix
    shift
    load "$name" "$RATE_CONNS" "$SECS" "$PACE_MS" || return 0
    for suffix in "$@"; do
        record "$TARGET" "$ROUND" "p50_us$suffix" "${WRK[p50_us]}"
        record "$TARGET" "$ROUND" "p99_us$suffix" "${WRK[p99_us]}"
        record "$TARGET" "$ROUND" "paced_rps$suffix" \
            "$(ratio "${WRK[requests]}" "${WRK[duration_us]}" 1000000)"
    done
}

# (e): syscalls per request under strace -c, all threads of every process of the target.
measure_syscalls() {
    local out=$DIR/strace.txt pid args=() calls
    for pid in "${PIDS[@]}"; do
        args+=(-p "$pid")
    done
    spawn "$DIR/strace.log" "$CPU_LOAD" strace -c -f -q -o "$out" "${args[@]}"
    pid=$SPAWNED_PID
    sleep 1
    if ! load strace "$LOAD_CONNS" "$STRACE_SECS"; then
        stop_proc "$pid"
        return 0
    fi
    stop_proc "$pid" # strace detaches and writes its summary on SIGTERM
    calls=$(awk '$NF == "total" { print $4 }' "$out" 2>/dev/null || true)
    if [ -n "$calls" ]; then
        record "$TARGET" "$ROUND" syscalls_per_req "$(ratio "$calls" "${WRK[requests]}")"
    else
        note "$TARGET" "round $ROUND: strace gave no summary: $(tail -n 1 "$DIR/strace.log")"
    fi
}

# (d): RSS with IDLE_CONNS idle keep-alive client connections held open through the target,
# restarted for this with room for them (MAXCONN); "before" is the new process after one request.
measure_idle_conns() {
    local out=$DIR/idle.out before after client status
    stop_proc "$PID"
    PID="" MAXCONN=$((IDLE_CONNS + 1024)) PORT=$(free_port)
    mkdir -p "$DIR/idle/tmp"
    "start_$TARGET" "$DIR/idle" "$PORT"
    MAXCONN=$MAXCONN_DEFAULT
    if ! wait_http "$PORT" "$SPAWNED_PID" "$DIR/idle/out.log"; then
        note "$TARGET" "round $ROUND: did not restart for the idle-connections test"
        stop_proc "$SPAWNED_PID"
        return 0
    fi
    PID=$SPAWNED_PID
    sleep 1
    find_pids
    before=$(proc_kib VmRSS "${SERVING[@]}")
    spawn "$out" "$CPU_LOAD" python3 "$BENCH_DIR/idle_conns.py" "$PORT" "$IDLE_CONNS"
    client=$SPAWNED_PID
    for _ in $(seq 1800); do
        grep -q '^ready' "$out" && break
        alive "$client" || break
        sleep 0.1
    done
    status=$(grep '^ready' "$out" || true)
    if [ -n "$status" ]; then
        after=$(proc_kib VmRSS "${SERVING[@]}")
        record "$TARGET" "$ROUND" rss_conns_kib "$after"
        record "$TARGET" "$ROUND" rss_conns_added_kib $((after - before))
        read -r _ _ failed <<<"$status"
        if [ "$failed" != 0 ]; then
            note "$TARGET" "round $ROUND: $failed of $IDLE_CONNS idle connections failed"
        fi
    else
        note "$TARGET" "round $ROUND: idle-connection client did not finish: $(tail -n 1 "$out")"
    fi
    stop_proc "$client"
}

# Sets PIDS (every process of the target: CPU time, strace, pinning) and SERVING (the processes
# serving traffic, whose RSS is reported: nginx's worker, not its master).
find_pids() {
    read -r -a PIDS <<<"$(proc_tree "$PID" | tr '\n' ' ')"
    read -r -a SERVING <<<"$(proc_leaves "$PID" | tr '\n' ' ')"
}

# One round of every measurement on one target. Sets the globals the helpers above read.
bench_target() {
    TARGET=$1 ROUND=$2 DIR=$TMP/$1-$2 ERRORS=0 NON2XX=0
    mkdir -p "$DIR/tmp"
    log "round $ROUND: $TARGET"
    if [ "$TARGET" = direct ]; then
        PORT=$UP_PORT PID=$UP_PID
    else
        PORT=$(free_port)
        "start_$TARGET" "$DIR" "$PORT"
        if ! wait_http "$PORT" "$SPAWNED_PID" "$DIR/out.log"; then
            note "$TARGET" "round $ROUND: did not start or did not proxy (see $LOGS/$TARGET-$ROUND)"
            stop_proc "$SPAWNED_PID"
            cp -r "$DIR" "$LOGS/$TARGET-$ROUND"
            return 0
        fi
        PID=$SPAWNED_PID
    fi
    record "$TARGET" "$ROUND" background_pct "$(busy_pct 1)"
    find_pids
    if [ "$TARGET" != direct ]; then
        record "$TARGET" "$ROUND" rss_idle_kib "$(proc_kib VmRSS "${SERVING[@]}")"
        record "$TARGET" "$ROUND" rss_idle_anon_kib "$(proc_kib RssAnon "${SERVING[@]}")"
    fi

    load warmup "$LOAD_CONNS" "$WARMUP_SECS" || true
    measure_throughput
    if [ "$TARGET" = direct ]; then
        # The upstream always shares CPU_LOAD with wrk: one placement, one latency run that is
        # the baseline of both the proxies' placements.
        measure_latency latency "" _1cpu
        measure_cpu
    else
        measure_latency latency ""
        pin "$CPU_LOAD" "${PIDS[@]}"
        measure_cpu
        measure_latency latency_1cpu _1cpu
        pin "$CPU_PROXY" "${PIDS[@]}"
        record "$TARGET" "$ROUND" rss_peak_kib "$(proc_kib VmHWM "${SERVING[@]}")"
        record "$TARGET" "$ROUND" pss_total_kib "$(proc_pss_kib "${PIDS[@]}")"
    fi
    measure_syscalls
    [ "$TARGET" = direct ] || measure_idle_conns
    record "$TARGET" "$ROUND" errors "$ERRORS"
    record "$TARGET" "$ROUND" non2xx "$NON2XX"

    [ "$TARGET" = direct ] || [ -z "$PID" ] || stop_proc "$PID"
    cp -r "$DIR" "$LOGS/$TARGET-$ROUND"
}

# What the report prints about the run and the software measured.
write_meta() {
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "seconds=$SECS"
        echo "rounds=$ROUNDS"
        echo "strace_seconds=$STRACE_SECS"
        echo "idle_conns=$IDLE_CONNS"
        echo "load_conns=$LOAD_CONNS"
        echo "rate_conns=$RATE_CONNS"
        echo "pace_ms=$PACE_MS"
        echo "cpu_proxy=$CPU_PROXY"
        echo "cpu_load=$CPU_LOAD"
        echo "targets=${TARGETS[*]}"
        echo "version_nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
        echo "version_haproxy=$(haproxy -v 2>&1 | head -n 1 | awk '{print $3}')"
        echo "version_caddy=$(caddy version 2>&1 | awk '{print $1}')"
        echo "version_wrk=$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
        if [ -x "$SIDECAR" ]; then
            echo "version_sidecar=$(timeout 5 "$SIDECAR" --version 2>&1 | head -n 1)"
        fi
    } >"$META"
}

main() {
    local round k t order
    write_meta
    if [[ " ${TARGETS[*]} " == *" sidecar "* ]] && [ ! -x "$SIDECAR" ]; then
        note sidecar "not measured: $SIDECAR does not exist (did not build)"
    fi
    start_upstream
    log "upstream nginx on 127.0.0.1:$UP_PORT; ${ROUNDS} round(s) of ${SECS}s runs"
    for ((round = 1; round <= ROUNDS; round++)); do
        k=$(((round - 1) % ${#TARGETS[@]}))
        order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
        for t in "${order[@]}"; do
            if [[ $t == sidecar* ]] && [ ! -x "$SIDECAR" ]; then
                continue
            fi
            bench_target "$t" "$round"
        done
    done
    stop_all
    python3 "$BENCH_DIR/report.py" "$TSV" "$NOTES" "$META" >"$OUT/proxy.md"
    log "wrote $OUT/proxy.md"
}

# On one line: bash reads a script as it runs it, so an edit made meanwhile cannot run here.
main; exit
