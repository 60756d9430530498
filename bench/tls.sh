#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `sidecar proxy` terminating and originating TLS, against nginx and HAProxy terminating TLS, side
# by side in one run (issue 14's performance targets). Every server uses the same ECDSA P-256
# certificate (tests/certs.sh: a leaf under an intermediate, the chain sent) and the system
# OpenSSL, one worker/thread, and proxies to the same plain upstream as bench/proxy.sh (nginx, a
# fixed 13-byte body, keep-alive, on CPU 0). For each round, in this order:
#   openssl speed   ECDSA P-256 signs/s and X25519 derivations/s on the proxies' CPU: the
#                   physical limit of full handshakes, 1 / (1/sign + 1/x25519);
# then for each terminating target (nginx, haproxy, sidecar), started fresh:
#   idle RSS        VmRSS (and RssAnon) of the serving process one second after start;
#   (h) handshakes  bench_tls_handshakes (bench/tls_handshakes.c) on CPU 0, the proxy alone on
#                   CPU 1: full TLS 1.3 handshakes/s, each connection one small request; the
#                   proxy's CPU per handshake (utime+stime from /proc) and how busy it and the
#                   client were (who set the pace);
#   (k) keep-alive  wrk -t1 -c50 over https, proxy, upstream and wrk all on CPU 0: the proxy's
#                   CPU per request;
#   peak RSS        VmHWM after those loads;
#   (i) idle conns  the proxy restarted with room for BENCH_IDLE_CONNS connections: its RSS while
#                   idle_conns.py --tls holds that many idle TLS connections open through it
#                   (in the first BENCH_IDLE_ROUNDS rounds: 10,000 Python handshakes take a
#                   minute or two per target, and the figure hardly varies);
# and for the two-sidecar chain (wrk -> sidecar "out" -> sidecar "in" -> upstream), once over
# plaintext ("pair_plain") and once over mesh mTLS ("pair_mtls": a `tls: {mode: mesh}` cluster
# on the caller's side, `mtls: strict` with the workload identity on the callee's):
#   (m) mTLS        p50/p99 at ~2,000 req/s (wrk.lua's pacing), both sidecars on CPU 1 and
#                   again all on CPU 0, and each sidecar's CPU per request meanwhile; the added
#                   latency is pair_mtls's percentile minus pair_plain's of the same round.
# Rounds rotate the order of the targets, so drift hits all of them alike; tls_report.py turns the
# raw figures into the RESULTS.md section (median, min-max, ratios, the issue's targets).
# bench/README.md has the why of each choice.
#
# Usage: bench/tls.sh SIDECAR OUT_DIR   (SIDECAR: the binary, or the build dir holding it; the
# handshake client bench_tls_handshakes is taken from the same build dir, built there if missing)
# Writes OUT_DIR/tls.tsv (raw figures), OUT_DIR/tls.md (the section), OUT_DIR/tls-logs/.
# Environment (defaults in brackets; a full run takes about 10 minutes):
#   BENCH_SECONDS [6]  length of each (h), (k), (m) run     BENCH_ROUNDS [5]
#   BENCH_QUICK=1      smoke test in about two minutes (2 s runs, 1 round, 1,000 idle connections)
#   BENCH_IDLE_CONNS [10000]   BENCH_IDLE_ROUNDS [1]   BENCH_HS_CONNS [50] connections in
#   flight in (h)
#   BENCH_SPEED_SECONDS [3]    BENCH_TLS_TARGETS [nginx haproxy sidecar pair_plain pair_mtls]
#   SIDECAR_ARGS (extra flags for the terminating `sidecar proxy`)   BENCH_KEEP=1 keeps the temp
#   dir (configs, certificates, logs) for inspection.
# shellcheck disable=SC2317 # functions called by name: start_$TARGET, traps
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -eq 2 ] || die "usage: bench/tls.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR"
SIDECAR=$(sidecar_bin "$1")
BUILD=$(dirname "$SIDECAR")
CLIENT=$BUILD/bench_tls_handshakes
OUT=$2

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    q_secs=2 q_rounds=1 q_idle=1000 q_speed=1 q_warmup=1
else
    q_secs=6 q_rounds=5 q_idle=10000 q_speed=3 q_warmup=2
fi
SECS=${BENCH_SECONDS:-$q_secs}
ROUNDS=${BENCH_ROUNDS:-$q_rounds}
IDLE_CONNS=${BENCH_IDLE_CONNS:-$q_idle}
IDLE_ROUNDS=${BENCH_IDLE_ROUNDS:-1} # (i)'s idle connections: in the first round(s) only
SPEED_SECS=${BENCH_SPEED_SECONDS:-$q_speed}
WARMUP_SECS=$q_warmup
ALL_TARGETS="nginx haproxy sidecar pair_plain pair_mtls"
read -r -a TARGETS <<<"${BENCH_TLS_TARGETS:-$ALL_TARGETS}"
MAXCONN_DEFAULT=1024 # the connection limit given to nginx and HAProxy (see bench/peers/)
MAXCONN=$MAXCONN_DEFAULT
HS_CONNS=${BENCH_HS_CONNS:-50} # (h): handshakes in flight
LOAD_CONNS=50                  # (k)
RATE_CONNS=20                  # (m): 20 connections ...
PACE_MS=10                     # ... each waiting 10 ms on average between requests: ~2,000 req/s
CPU_LOAD=0                     # the clients, the upstream, and in (k) the proxy too
CPU_PROXY=1                    # the proxy alone in (h), the sidecar pair in (m)'s first placement
if [ "$(nproc)" -lt 2 ]; then
    CPU_PROXY=0
fi
bench_begin tls
# ratio NUM DEN [SCALE]: NUM * SCALE / DEN with three decimals.
ratio() {
    awk -v n="$1" -v d="$2" -v s="${3:-1}" 'BEGIN { if (d > 0) printf "%.3f\n", n * s / d }'
}

# The test PKI every server uses (ECDSA P-256 leaves under an intermediate), and the single file
# HAProxy reads (leaf, intermediate, key).
make_pki() {
    PKI=$TMP/pki
    sh "$BENCH_DIR/../tests/certs.sh" "$PKI" >"$TMP/certs.log" 2>&1 ||
        die "tests/certs.sh failed: $(tail -n 3 "$TMP/certs.log")"
    cat "$PKI/server.pem" "$PKI/server.key" >"$PKI/haproxy.pem"
    chmod -R a+rX "$PKI"
}

# render TEMPLATE DIR PORT: writes bench/peers/TEMPLATE into DIR with its placeholders filled.
render() {
    sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM@#127.0.0.1:${UP_PORT:-0}#g" \
        -e "s#@MAXCONN@#$MAXCONN#g" -e "s#@CERT@#$PKI/server.pem#g" \
        -e "s#@KEY@#$PKI/server.key#g" -e "s#@CRT@#$PKI/haproxy.pem#g" \
        "$BENCH_DIR/peers/$1" >"$2/$1"
}

# start_<target> DIR PORT: start one target on 127.0.0.1:PORT, pinned to CPU_PROXY, in the
# foreground with its config, pid and log files in DIR. Sets SPAWNED_PID (the pairs: the entry
# sidecar's, with PAIR_PIDS holding both).
start_nginx() {
    render nginx-tls.conf "$1" "$2"
    spawn "$1/out.log" "$CPU_PROXY" nginx -e "$1/error.log" -p "$1/" -c "$1/nginx-tls.conf"
}

start_haproxy() {
    render haproxy-tls.cfg "$1" "$2"
    spawn "$1/out.log" "$CPU_PROXY" haproxy -db -f "$1/haproxy-tls.cfg"
}

# The sidecar with the quick-start TLS flags (its --help lists them), one worker, an admin port
# of its own, no access log; SIDECAR_ARGS adds flags.
start_sidecar() {
    local args
    args=(proxy --listen "127.0.0.1:$2" --upstream "127.0.0.1:$UP_PORT" --workers 1
        --admin "127.0.0.1:$(free_port)" --access-log off
        --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key")
    # shellcheck disable=SC2206 # SIDECAR_ARGS is a list of words
    args+=(${SIDECAR_ARGS:-})
    grep -q "^sidecar_cmd=" "$META" ||
        echo "sidecar_cmd=sidecar ${args[*]//$TMP/<tmp>}" >>"$META"
    spawn "$1/out.log" "$CPU_PROXY" "$SIDECAR" "${args[@]}"
}

# start_pair DIR PORT MTLS: both sidecars of a pair, "in" first.
start_pair() {
    local in_pid
    pair_configs "$1" "$2" "$3"
    spawn "$1/in.log" "$CPU_PROXY" "$SIDECAR" proxy -c "$1/in.yaml" \
        --admin "127.0.0.1:$(free_port)"
    in_pid=$SPAWNED_PID
    spawn "$1/out.log" "$CPU_PROXY" "$SIDECAR" proxy -c "$1/out.yaml" \
        --admin "127.0.0.1:$(free_port)"
    PAIR_PIDS=("$SPAWNED_PID" "$in_pid")
    if ! grep -q "^${TARGET}_cmd=" "$META"; then
        echo "${TARGET}_cmd=sidecar proxy -c out.yaml: \`$(tr -s ' \n' ' ' <"$1/out.yaml")\`;" \
            "sidecar proxy -c in.yaml: \`$(tr -s ' \n' ' ' <"$1/in.yaml")\`" |
            sed "s#$TMP#<tmp>#g" >>"$META"
    fi
}

start_pair_plain() {
    start_pair "$1" "$2" 0
}

start_pair_mtls() {
    start_pair "$1" "$2" 1
}

# The upstream: started once, on CPU 0 with the clients, for the whole run.
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

# wait_https PORT PID LOG: as wait_http, over TLS verified against the test CA (name localhost).
wait_https() {
    wait_url "$2" "$3" "https://localhost:$1/" --cacert "$PKI/ca.pem" \
        --resolve "localhost:$1:127.0.0.1"
}

# wait_target PORT PID LOG: waits until the current target answers through itself.
wait_target() {
    if [[ $TARGET == pair_* ]]; then
        wait_http "$@"
    else
        wait_https "$@"
    fi
}

# One line per negotiated handshake parameter of the target, for the report (first round only).
probe_tls() {
    local out
    grep -q "^${TARGET}_tls=" "$META" && return 0
    out=$(timeout 5 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost \
        </dev/null 2>/dev/null) || true
    echo "${TARGET}_tls=$(awk -F': *' '/^New, / { sub(/^New, /, ""); sub(/, Cipher is /, " ")
        v = $0 } /^Server Temp Key:/ { k = $2 } /^Peer signature type:/ { s = $2 }
        END { printf "%s, key exchange %s, %s signature", v, k, s }' <<<"$out")" >>"$META"
}

# (s) openssl speed pinned to CPU_PROXY: ECDSA P-256 signs/s and X25519 derivations/s, and the
# handshakes/s a core doing nothing else would allow.
measure_speed() {
    local dir=$TMP/speed-$ROUND sign x
    mkdir -p "$dir"
    taskset -c "$CPU_PROXY" openssl speed -seconds "$SPEED_SECS" ecdsap256 >"$dir/ecdsa.txt" \
        2>&1 || true
    taskset -c "$CPU_PROXY" openssl speed -seconds "$SPEED_SECS" ecdhx25519 >"$dir/x25519.txt" \
        2>&1 || true
    sign=$(awk '/ecdsa \(nistp256\)/ { print $(NF - 1) }' "$dir/ecdsa.txt" | tail -n 1)
    x=$(awk '/ecdh \(X25519\)/ { print $NF }' "$dir/x25519.txt" | tail -n 1)
    if [ -z "$sign" ] || [ -z "$x" ]; then
        note openssl "round $ROUND: openssl speed gave no figures (see $LOGS/speed-$ROUND)"
    else
        record openssl "$ROUND" sign_per_s "$sign"
        record openssl "$ROUND" x25519_per_s "$x"
        record openssl "$ROUND" limit_hs_per_s \
            "$(awk -v s="$sign" -v x="$x" 'BEGIN { printf "%.0f\n", 1 / (1 / s + 1 / x) }')"
    fi
    cp -r "$dir" "$LOGS/"
}

# (h) full TLS 1.3 handshakes, one small request each, the target alone on CPU_PROXY and the
# client on CPU_LOAD: handshakes/s, the target's CPU per handshake and busy %, the client's busy %.
measure_handshakes() {
    local out=$DIR/handshakes.txt before after line kv hs dur
    local -A H=()
    timeout $((WARMUP_SECS + 30)) taskset -c "$CPU_LOAD" "$CLIENT" 127.0.0.1 "$PORT" \
        "$HS_CONNS" "$WARMUP_SECS" >"$DIR/handshakes-warmup.txt" 2>&1 || true
    before=$(cpu_ticks "${PIDS[@]}")
    timeout $((SECS + 30)) taskset -c "$CPU_LOAD" "$CLIENT" 127.0.0.1 "$PORT" "$HS_CONNS" \
        "$SECS" >"$out" 2>&1 || true
    after=$(cpu_ticks "${PIDS[@]}")
    line=$(grep '^BENCH ' "$out" | tail -n 1) || true
    if [ -z "$line" ]; then
        note "$TARGET" "round $ROUND: the handshake client gave no summary: $(tail -n 1 "$out")"
        ERRORS=$((ERRORS + 1))
        return 0
    fi
    for kv in ${line#BENCH }; do
        H[${kv%%=*}]=${kv#*=}
    done
    hs=${H[handshakes]} dur=${H[duration_us]}
    ERRORS=$((ERRORS + H[errors]))
    NON2XX=$((NON2XX + H[non2xx]))
    record "$TARGET" "$ROUND" resumed "${H[resumed]}"
    [ "$hs" -gt 0 ] || return 0
    record "$TARGET" "$ROUND" hs_per_s "$(ratio "$hs" "$dur" 1000000)"
    record "$TARGET" "$ROUND" hs_busy_pct \
        "$(ratio $((after - before)) "$dur" $((100000000 / CLK_TCK)))"
    record "$TARGET" "$ROUND" cpu_us_per_hs \
        "$(ratio $((after - before)) "$hs" $((1000000 / CLK_TCK)))"
    record "$TARGET" "$ROUND" client_busy_pct "$(ratio "${H[cpu_us]}" "$dur" 100)"
    record "$TARGET" "$ROUND" client_cpu_us_per_hs "$(ratio "${H[cpu_us]}" "$hs")"
}

# load NAME CONNS SECONDS [PACE_MS]: one wrk run against the current target (PORT; https for the
# terminating targets), output in DIR/NAME.txt; adds its errors to ERRORS and NON2XX.
load() {
    local scheme=https
    [[ $TARGET == pair_* ]] && scheme=http
    if ! WRK_SCHEME=$scheme run_wrk "$DIR/$1.txt" "$CPU_LOAD" "$PORT" "$2" "$3" "${4:-}"; then
        note "$TARGET" "round $ROUND: wrk run '$1' gave no summary: $(tail -n 1 "$DIR/$1.txt")"
        ERRORS=$((ERRORS + 1))
        return 1
    fi
    ERRORS=$((ERRORS + WRK[connect_errors] + WRK[read_errors] + WRK[write_errors] + WRK[timeouts]))
    NON2XX=$((NON2XX + WRK[non2xx]))
}

# (k) keep-alive HTTPS, the target on CPU_LOAD with wrk and the upstream: its CPU per request
# (the 50 handshakes at wrk's start are in it: well under 1 % of a run's CPU).
measure_keepalive() {
    local before after
    load warmup "$LOAD_CONNS" "$WARMUP_SECS" || true
    before=$(cpu_ticks "${PIDS[@]}")
    load keepalive "$LOAD_CONNS" "$SECS" || return 0
    after=$(cpu_ticks "${PIDS[@]}")
    record "$TARGET" "$ROUND" ka_rps "$(ratio "${WRK[requests]}" "${WRK[duration_us]}" 1000000)"
    record "$TARGET" "$ROUND" ka_cpu_us_per_req \
        "$(ratio $((after - before)) "${WRK[requests]}" $((1000000 / CLK_TCK)))"
}

# (i): RSS with IDLE_CONNS idle TLS connections held open through the target, restarted for this
# with room for them (MAXCONN); "before" is the new process after one request.
measure_idle_conns() {
    local out=$DIR/idle.out before after client status
    stop_proc "$PID"
    PID="" MAXCONN=$((IDLE_CONNS + 1024)) PORT=$(free_port)
    mkdir -p "$DIR/idle/tmp"
    "start_$TARGET" "$DIR/idle" "$PORT"
    MAXCONN=$MAXCONN_DEFAULT
    if ! wait_https "$PORT" "$SPAWNED_PID" "$DIR/idle/out.log"; then
        note "$TARGET" "round $ROUND: did not restart for the idle-connections test"
        stop_proc "$SPAWNED_PID"
        return 0
    fi
    PID=$SPAWNED_PID
    sleep 1
    find_pids
    before=$(proc_kib VmRSS "${SERVING[@]}")
    spawn "$out" "$CPU_LOAD" python3 "$BENCH_DIR/idle_conns.py" "$PORT" "$IDLE_CONNS" --tls
    client=$SPAWNED_PID
    for _ in $(seq 3000); do
        grep -q '^ready' "$out" && break
        alive "$client" || break
        sleep 0.1
    done
    status=$(grep '^ready' "$out" || true)
    if [ -n "$status" ]; then
        sleep 1
        after=$(proc_kib VmRSS "${SERVING[@]}")
        record "$TARGET" "$ROUND" rss_conns_kib "$after"
        record "$TARGET" "$ROUND" rss_conns_added_kib $((after - before))
        read -r _ _ failed <<<"$status"
        if [ "$failed" != 0 ]; then
            note "$TARGET" "round $ROUND: $failed of $IDLE_CONNS idle TLS connections failed"
        fi
    else
        note "$TARGET" "round $ROUND: idle-connection client did not finish: $(tail -n 1 "$out")"
    fi
    stop_proc "$client"
}

# (m) one paced run with the pair where it is: p50/p99 and each sidecar's CPU per request,
# recorded with SUFFIX.
measure_pair() {
    local suffix=$1 before_out before_in after_out after_in
    before_out=$(cpu_ticks "${PAIR_PIDS[0]}")
    before_in=$(cpu_ticks "${PAIR_PIDS[1]}")
    load "paced$suffix" "$RATE_CONNS" "$SECS" "$PACE_MS" || return 0
    after_out=$(cpu_ticks "${PAIR_PIDS[0]}")
    after_in=$(cpu_ticks "${PAIR_PIDS[1]}")
    record "$TARGET" "$ROUND" "p50_us$suffix" "${WRK[p50_us]}"
    record "$TARGET" "$ROUND" "p99_us$suffix" "${WRK[p99_us]}"
    record "$TARGET" "$ROUND" "paced_rps$suffix" \
        "$(ratio "${WRK[requests]}" "${WRK[duration_us]}" 1000000)"
    record "$TARGET" "$ROUND" "cpu_us_out$suffix" \
        "$(ratio $((after_out - before_out)) "${WRK[requests]}" $((1000000 / CLK_TCK)))"
    record "$TARGET" "$ROUND" "cpu_us_in$suffix" \
        "$(ratio $((after_in - before_in)) "${WRK[requests]}" $((1000000 / CLK_TCK)))"
}

# Sets PIDS (every process of the target: CPU time, pinning) and SERVING (the processes serving
# traffic, whose RSS is reported: nginx's worker, not its master).
find_pids() {
    local p more
    PIDS=()
    for p in "$PID" "${PAIR_PIDS[@]:1}"; do
        read -r -a more <<<"$(proc_tree "$p" | tr '\n' ' ')"
        PIDS+=("${more[@]}")
    done
    read -r -a SERVING <<<"$(proc_leaves "$PID" | tr '\n' ' ')"
}

# One round of every measurement on one target. Sets the globals the helpers above read.
bench_target() {
    local p
    TARGET=$1 ROUND=$2 DIR=$TMP/$1-$2 ERRORS=0 NON2XX=0 PAIR_PIDS=()
    mkdir -p "$DIR/tmp"
    log "round $ROUND: $TARGET"
    PORT=$(free_port)
    "start_$TARGET" "$DIR" "$PORT"
    if ! wait_target "$PORT" "$SPAWNED_PID" "$DIR/out.log"; then
        note "$TARGET" "round $ROUND: did not start or did not proxy (see $LOGS/$TARGET-$ROUND)"
        for p in "${PAIR_PIDS[@]:-$SPAWNED_PID}"; do
            stop_proc "$p"
        done
        cp -r "$DIR" "$LOGS/$TARGET-$ROUND"
        return 0
    fi
    PID=$SPAWNED_PID
    record "$TARGET" "$ROUND" background_pct "$(busy_pct 1)"
    find_pids
    if [[ $TARGET == pair_* ]]; then
        record "$TARGET" "$ROUND" rss_idle_kib "$(proc_kib VmRSS "${PAIR_PIDS[@]}")"
        load warmup "$RATE_CONNS" "$WARMUP_SECS" "$PACE_MS" || true
        measure_pair ""
        pin "$CPU_LOAD" "${PIDS[@]}"
        measure_pair _1cpu
        record "$TARGET" "$ROUND" rss_peak_kib "$(proc_kib VmHWM "${PAIR_PIDS[@]}")"
    else
        record "$TARGET" "$ROUND" rss_idle_kib "$(proc_kib VmRSS "${SERVING[@]}")"
        record "$TARGET" "$ROUND" rss_idle_anon_kib "$(proc_kib RssAnon "${SERVING[@]}")"
        probe_tls
        measure_handshakes
        pin "$CPU_LOAD" "${PIDS[@]}"
        measure_keepalive
        pin "$CPU_PROXY" "${PIDS[@]}"
        record "$TARGET" "$ROUND" rss_peak_kib "$(proc_kib VmHWM "${SERVING[@]}")"
        [ "$ROUND" -gt "$IDLE_ROUNDS" ] || measure_idle_conns
    fi
    record "$TARGET" "$ROUND" errors "$ERRORS"
    record "$TARGET" "$ROUND" non2xx "$NON2XX"
    if [[ $TARGET == pair_* ]]; then
        for p in "${PAIR_PIDS[@]}"; do
            stop_proc "$p"
        done
    elif [ -n "$PID" ]; then
        stop_proc "$PID"
    fi
    cp -r "$DIR" "$LOGS/$TARGET-$ROUND"
}

# What the report prints about the run and the software measured.
write_meta() {
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "seconds=$SECS"
        echo "rounds=$ROUNDS"
        echo "speed_seconds=$SPEED_SECS"
        echo "idle_conns=$IDLE_CONNS"
        echo "idle_rounds=$IDLE_ROUNDS"
        echo "hs_conns=$HS_CONNS"
        echo "load_conns=$LOAD_CONNS"
        echo "rate_conns=$RATE_CONNS"
        echo "pace_ms=$PACE_MS"
        echo "cpu_proxy=$CPU_PROXY"
        echo "cpu_load=$CPU_LOAD"
        echo "targets=${TARGETS[*]}"
        echo "version_nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
        echo "version_haproxy=$(haproxy -v 2>&1 | head -n 1 | awk '{print $3}')"
        echo "version_wrk=$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
        echo "version_openssl=$(openssl version 2>&1 | head -n 1 | awk '{print $1, $2}')"
        if [ -x "$SIDECAR" ]; then
            echo "version_sidecar=$(timeout 5 "$SIDECAR" --version 2>&1 | head -n 1)"
        fi
    } >"$META"
}

# The handshake client: built in the sidecar's build dir when missing (a meson target that is
# not built by default).
find_client() {
    if [ ! -x "$CLIENT" ] && [ -f "$BUILD/build.ninja" ]; then
        log "building bench_tls_handshakes in $BUILD"
        nice ninja -C "$BUILD" bench_tls_handshakes >"$TMP/ninja.log" 2>&1 || true
    fi
    [ -x "$CLIENT" ] || die "no $CLIENT (ninja -C BUILD bench_tls_handshakes builds it)"
}

main() {
    local round k t order
    write_meta
    find_client
    make_pki
    if [ ! -x "$SIDECAR" ]; then
        note sidecar "not measured: $SIDECAR does not exist (did not build)"
    fi
    start_upstream
    log "upstream nginx on 127.0.0.1:$UP_PORT; ${ROUNDS} round(s) of ${SECS}s runs"
    for ((round = 1; round <= ROUNDS; round++)); do
        ROUND=$round
        measure_speed
        k=$(((round - 1) % ${#TARGETS[@]}))
        order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
        for t in "${order[@]}"; do
            if [[ $t == sidecar* || $t == pair_* ]] && [ ! -x "$SIDECAR" ]; then
                continue
            fi
            bench_target "$t" "$round"
        done
    done
    stop_all
    python3 "$BENCH_DIR/tls_report.py" "$TSV" "$NOTES" "$META" >"$OUT/tls.md"
    log "wrote $OUT/tls.md"
}

# On one line: bash reads a script as it runs it, so an edit made meanwhile cannot run here.
main; exit
