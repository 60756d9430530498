#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What each sidecar of bench/tls.sh's two-sidecar chain pays per request at ~2,000 req/s, in the
# figures that do not depend on how busy the machine is: system calls per request, by name
# (strace -f -c attached to the running sidecar), and context switches per request (wake-ups,
# from /proc/PID/task/*/status); plus CPU per request without strace (noisy on a shared machine:
# the median of several rounds). The setup is tls.sh's (m): wrk with 20 connections, each pausing
# ~10 ms between requests (wrk.lua's pacing) -> sidecar "out" -> sidecar "in" -> the bench's
# nginx upstream; the sidecars on CPU 1, wrk and nginx on CPU 0. Modes:
#   plain   the chain over plaintext
#   mtls    "out" originates mesh mTLS (`tls: {mode: mesh}`), "in" is `mtls: strict`
#   mtls_openssl  mtls with OpenSSL carrying the records of both hops (`tls.record_layer: openssl`
#           on "out"'s cluster and "in"'s listener): what the pair cost before the native layer
#   relay   the floor: two bench_relay (bench/relay.c: one read and one write per message, no
#           HTTP) in place of the sidecars; what the kernel charges for the unavoidable syscalls
#   nginx, haproxy  the same chain of two nginx (bench/peers/nginx-proxy.conf) or two HAProxy
#           (bench/peers/haproxy.cfg) reverse proxies over plaintext, for comparison
# Usage: bench/pair_syscalls.sh SIDECAR OUT_DIR [MODE...]   (SIDECAR: binary or build dir; the
# relay mode takes bench_relay from the same build dir, built there if missing)
# Environment: PS_SECONDS [5] (each run), PS_ROUNDS [3] (CPU rounds per mode), PS_STRACE [1]
# (0: CPU figures only). Writes OUT_DIR/pair_syscalls.md (tables) and prints it.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 2 ] || die "usage: bench/pair_syscalls.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR [MODE...]"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
shift 2
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(plain mtls)
SECS=${PS_SECONDS:-5}
ROUNDS=${PS_ROUNDS:-3}
STRACE=${PS_STRACE:-1}
CONNS=20
PACE_MS=10
CPU_LOAD=0
CPU_PAIR=1
[ "$(nproc)" -ge 2 ] || CPU_PAIR=0
IDLE_CONNS=0 # read by bench_begin
command -v wrk >/dev/null || die "wrk is not installed (scripts/deps.sh bench)"
[ "$STRACE" = 0 ] || command -v strace >/dev/null || die "strace is not installed"
RELAY=$(dirname "$SIDECAR")/bench_relay
if [[ " ${MODES[*]} " == *" relay "* ]] && [ ! -x "$RELAY" ]; then
    ninja -C "$(dirname "$SIDECAR")" bench_relay >/dev/null || die "cannot build bench_relay"
fi
bench_begin pair_syscalls
REPORT=$OUT/pair_syscalls.md

pair_setup "$CPU_LOAD"

# start_pair DIR MODE: the two proxies of MODE (the sidecars' configs are bench/tls.sh's, from
# lib.sh's pair_configs); sets PORT, OUT_PID, IN_PID, OUT_SERVE, IN_SERVE, OUT_TREE, IN_TREE.
start_pair() {
    local dir=$1 mode=$2 in_port
    mkdir -p "$dir"
    PORT=$(free_port)
    pair_configs "$dir" "$PORT" "$([[ $mode == mtls* ]] && echo 1 || echo 0)"
    if [ "$mode" = mtls_openssl ]; then
        pair_openssl "$dir"
    fi
    in_port=$PAIR_IN_PORT
    case $mode in
    relay)
        spawn "$dir/in.log" "$CPU_PAIR" "$RELAY" "$in_port" "$UP_PORT"
        IN_PID=$SPAWNED_PID
        spawn "$dir/out.log" "$CPU_PAIR" "$RELAY" "$PORT" "$in_port"
        ;;
    nginx | haproxy)
        local conf=nginx-proxy.conf
        [ "$mode" = nginx ] || conf=haproxy.cfg
        mkdir -p "$dir/in/tmp" "$dir/out/tmp"
        peer_conf "$conf" "$dir/in" "$in_port" "$UP_PORT"
        peer_conf "$conf" "$dir/out" "$PORT" "$in_port"
        if [ "$mode" = nginx ]; then
            spawn "$dir/in.log" "$CPU_PAIR" nginx -e "$dir/in/error.log" -p "$dir/in/" \
                -c "$dir/in/$conf"
            IN_PID=$SPAWNED_PID
            spawn "$dir/out.log" "$CPU_PAIR" nginx -e "$dir/out/error.log" -p "$dir/out/" \
                -c "$dir/out/$conf"
        else
            spawn "$dir/in.log" "$CPU_PAIR" haproxy -db -f "$dir/in/$conf"
            IN_PID=$SPAWNED_PID
            spawn "$dir/out.log" "$CPU_PAIR" haproxy -db -f "$dir/out/$conf"
        fi
        ;;
    *)
        spawn "$dir/in.log" "$CPU_PAIR" "$SIDECAR" proxy -c "$dir/in.yaml" \
            --admin "127.0.0.1:$(free_port)"
        IN_PID=$SPAWNED_PID
        spawn "$dir/out.log" "$CPU_PAIR" "$SIDECAR" proxy -c "$dir/out.yaml" \
            --admin "127.0.0.1:$(free_port)"
        ;;
    esac
    OUT_PID=$SPAWNED_PID
    wait_http "$PORT" "$OUT_PID" "$dir/out.log" || die "the $mode pair did not start"
    sleep 0.5
    # nginx serves from a worker process: strace that one, count CPU over the whole tree.
    OUT_SERVE=$(proc_leaves "$OUT_PID" | head -n 1)
    IN_SERVE=$(proc_leaves "$IN_PID" | head -n 1)
    read -r -a OUT_TREE <<<"$(proc_tree "$OUT_PID" | tr '\n' ' ')"
    read -r -a IN_TREE <<<"$(proc_tree "$IN_PID" | tr '\n' ' ')"
}

# peer_conf TEMPLATE DIR PORT UPSTREAM_PORT: a peer's config from bench/peers/.
peer_conf() {
    sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM@#127.0.0.1:$4#g" \
        -e "s#@MAXCONN@#1024#g" "$BENCH_DIR/peers/$1" >"$2/$1"
}

# user_ticks PID...: the user-mode part of cpu_ticks.
user_ticks() {
    local pid stat fields total=0
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11]))
    done
    echo "$total"
}

# Context switches (voluntary + involuntary) of every thread of the PIDs so far.
ctx_switches() {
    local pid
    for pid in "$@"; do
        cat /proc/"$pid"/task/*/status 2>/dev/null
    done | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

# paced NAME: one paced wrk run against PORT (output in $DIR/NAME.txt); dies on no summary.
paced() {
    run_wrk "$DIR/$1.txt" "$CPU_LOAD" "$PORT" "$CONNS" "$SECS" "$PACE_MS" ||
        die "wrk gave no summary: $(tail -n 2 "$DIR/$1.txt")"
    local errs=$((WRK[connect_errors] + WRK[read_errors] + WRK[write_errors] + WRK[timeouts]))
    [ "$errs" = 0 ] && [ "${WRK[non2xx]}" = 0 ] ||
        log "warning: $errs errors, ${WRK[non2xx]} non-2xx in $1"
}

# strace_table FILE REQUESTS: strace -c's summary as "name calls_per_request" lines.
strace_table() {
    awk -v n="$2" '$1 ~ /^[0-9.]+$/ && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" {
        printf "%s %.2f\n", $NF, $4 / n }' "$1" | sort
}

# per_req TICKS_OR_COUNT REQUESTS [TICKS]: a delta per request (us when TICKS=1, else a count).
per_req() {
    awk -v d="$1" -v n="$2" -v t="${3:-0}" -v k="$CLK_TCK" \
        'BEGIN { if (t) printf "%.1f", d * 1e6 / k / n; else printf "%.2f", d / n }'
}

# median VALUE...
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# measure MODE ROUND: one paced run of MODE's pair; appends its figures to the MODE's lists.
measure() {
    local m=$1 o i
    DIR=$TMP/$m PORT=${P_PORT[$m]}
    read -r -a o <<<"${P_OUT[$m]}"
    read -r -a i <<<"${P_IN[$m]}"
    local bo bi uo ui xo xi
    bo=$(cpu_ticks "${o[@]}") bi=$(cpu_ticks "${i[@]}")
    uo=$(user_ticks "${o[@]}") ui=$(user_ticks "${i[@]}")
    xo=$(ctx_switches "${o[@]}") xi=$(ctx_switches "${i[@]}")
    paced "cpu-$2"
    local n=${WRK[requests]} co ci so si wo wi
    co=$(per_req $(($(cpu_ticks "${o[@]}") - bo)) "$n" 1)
    ci=$(per_req $(($(cpu_ticks "${i[@]}") - bi)) "$n" 1)
    so=$(per_req $(($(user_ticks "${o[@]}") - uo)) "$n" 1)
    si=$(per_req $(($(user_ticks "${i[@]}") - ui)) "$n" 1)
    wo=$(per_req $(($(ctx_switches "${o[@]}") - xo)) "$n")
    wi=$(per_req $(($(ctx_switches "${i[@]}") - xi)) "$n")
    R_CPU_OUT[$m]+=" $co" R_CPU_IN[$m]+=" $ci" R_USR_OUT[$m]+=" $so" R_USR_IN[$m]+=" $si"
    R_SW_OUT[$m]+=" $wo" R_SW_IN[$m]+=" $wi" R_RPS[$m]+=" $((n * 1000000 / WRK[duration_us]))"
    R_P50[$m]+=" ${WRK[p50_us]}"
    log "$m round $2: $n requests, p50 ${WRK[p50_us]} us; CPU us/req out $co (user $so)" \
        "in $ci (user $si); context switches/req out $wo in $wi"
}

declare -A P_PORT P_OUT P_IN P_SERVE_OUT P_SERVE_IN R_CPU_OUT R_CPU_IN R_USR_OUT R_USR_IN \
    R_SW_OUT R_SW_IN R_RPS R_P50
for mode in "${MODES[@]}"; do
    start_pair "$TMP/$mode" "$mode"
    P_PORT[$mode]=$PORT P_OUT[$mode]=${OUT_TREE[*]} P_IN[$mode]=${IN_TREE[*]}
    P_SERVE_OUT[$mode]=$OUT_SERVE P_SERVE_IN[$mode]=$IN_SERVE
    DIR=$TMP/$mode
    paced warmup
done
# Rounds rotate the order of the modes, so drift on the machine hits all of them alike.
for ((round = 1; round <= ROUNDS; round++)); do
    for ((k = 0; k < ${#MODES[@]}; k++)); do
        measure "${MODES[(k + round - 1) % ${#MODES[@]}]}" "$round"
    done
done

{
    echo "# Two proxies in a chain at ~2,000 req/s ($(date -u +%FT%TZ))"
    echo
    echo "wrk -c$CONNS paced ${PACE_MS} ms (bench/wrk.lua) on CPU $CPU_LOAD with the nginx upstream;"
    echo "both proxies on CPU $CPU_PAIR; $ROUNDS rounds of ${SECS} s, modes rotated; load average"
    echo "at the end $(cut -d' ' -f1-3 /proc/loadavg). Medians, every round in brackets. CPU from"
    echo "/proc (user+system); user is its user-mode part; switches: context switches (wake-ups)."
    echo
    echo "| mode | req/s | p50 us | out CPU us/req | out user | in CPU us/req | in user | out switches/req | in switches/req |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for mode in "${MODES[@]}"; do
        row="| $mode"
        for v in R_RPS R_P50 R_CPU_OUT R_USR_OUT R_CPU_IN R_USR_IN R_SW_OUT R_SW_IN; do
            declare -n ref=$v
            # shellcheck disable=SC2086 # a list of numbers
            row+=" | $(median ${ref[$mode]})"
            [[ $v == R_CPU_* ]] && row+=" (${ref[$mode]# })"
            unset -n ref
        done
        echo "$row |"
    done
    echo
} >"$REPORT"

if [ "$STRACE" != 0 ]; then
    for mode in "${MODES[@]}"; do
        DIR=$TMP/$mode PORT=${P_PORT[$mode]}
        strace -f -c -o "$DIR/strace-out.txt" -p "${P_SERVE_OUT[$mode]}" 2>"$DIR/strace-out.log" &
        so=$!
        strace -f -c -o "$DIR/strace-in.txt" -p "${P_SERVE_IN[$mode]}" 2>"$DIR/strace-in.log" &
        si=$!
        sleep 1
        paced strace
        n=${WRK[requests]}
        kill -INT "$so" "$si"
        wait "$so" "$si" || true
        {
            echo "## $mode: system calls per request (strace -f -c on each, $n requests)"
            echo
            echo '| syscall | out | in |'
            echo '| --- | ---: | ---: |'
            join -a1 -a2 -e 0 -o 0,1.2,2.2 <(strace_table "$DIR/strace-out.txt" "$n") \
                <(strace_table "$DIR/strace-in.txt" "$n") |
                awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }'
            awk -v n="$n" '$NF == "total" { printf "| total | %.2f", $4 / n }' "$DIR/strace-out.txt"
            awk -v n="$n" '$NF == "total" { printf " | %.2f |\n", $4 / n }' "$DIR/strace-in.txt"
            echo
        } >>"$REPORT"
        for f in "$DIR"/strace-*.txt; do
            cp "$f" "$LOGS/$mode-$(basename "$f")"
        done
    done
fi
cat "$REPORT"
