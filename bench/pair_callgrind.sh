#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per request of each sidecar of bench/tls.sh's two-sidecar chain (wrk's app ->
# sidecar "out" -> sidecar "in" -> the bench's nginx upstream; lib.sh's pair_configs), counted by
# callgrind: the steady figure for the mTLS pair where CPU times are noisy. One sidecar of the pair
# runs under valgrind --tool=callgrind, the other natively; after a warm-up its counters are zeroed
# (callgrind_control -z), PC_CONNS x PC_PER keep-alive requests go through (fixed_requests.py, so
# every upstream connection is already open and only keep-alive requests are in the window) and
# the counters are dumped: the whole process's instructions in the window over the requests.
# Modes (SIDE-PAIR), default all:
#   out-plain, in-plain     the chain over plaintext
#   out-mtls, in-mtls       "out" originates mesh mTLS, "in" is `mtls: strict`
#   out-mtls_openssl, in-mtls_openssl  as out-mtls, in-mtls with OpenSSL carrying the records of
#                           both hops (lib.sh's pair_openssl): what the pair cost before the
#                           native layer
# Usage: bench/pair_callgrind.sh SIDECAR OUT_DIR [MODE...]   (SIDECAR: binary or build dir)
# Environment: PC_CONNS [20], PC_PER [100]. Writes OUT_DIR/pair_callgrind.md and prints it.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 2 ] || die "usage: bench/pair_callgrind.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR [MODE...]"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
shift 2
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(out-plain in-plain out-mtls_openssl out-mtls in-mtls_openssl in-mtls)
CONNS=${PC_CONNS:-20}
PER=${PC_PER:-100}
IDLE_CONNS=0 # read by bench_begin
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
bench_begin pair_callgrind
REPORT=$OUT/pair_callgrind.md

pair_setup 0

# slow_wait PORT PID LOG: wait_http for a process under valgrind (up to 120 s).
slow_wait() {
    for _ in $(seq 12); do
        wait_http "$1" "$2" "$3" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
    done
    die "the pair did not start: $(tail -n 3 "$3")"
}

# measure MODE: sets IR to the instructions per request of MODE's measured sidecar (in this
# shell, so that stop_all knows what it spawned).
measure() {
    local mode=$1 side=${1%%-*} pair=${1#*-} dir=$TMP/$1 port mtls=1 pid f ir
    mkdir -p "$dir"
    port=$(free_port)
    [ "$pair" = plain ] && mtls=0
    pair_configs "$dir" "$port" "$mtls"
    if [ "$pair" = mtls_openssl ]; then
        pair_openssl "$dir"
    fi
    # a sidecar under valgrind takes seconds over a crowd of first handshakes: more than the
    # default connect timeout (1 s) of its own connects and of the sidecar in front of it
    sed -i 's/"endpoints": \["127.0.0.1:\([0-9]*\)"\]/&, "connect_timeout": "60s"/' \
        "$dir/out.yaml" "$dir/in.yaml"
    local cg=(valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out.%p")
    local in_cmd=("$SIDECAR" proxy -c "$dir/in.yaml" --admin "127.0.0.1:$(free_port)")
    local out_cmd=("$SIDECAR" proxy -c "$dir/out.yaml" --admin "127.0.0.1:$(free_port)")
    if [ "$side" = in ]; then
        spawn "$dir/in.log" 1 "${cg[@]}" "${in_cmd[@]}"
        pid=$SPAWNED_PID
        spawn "$dir/out.log" 1 "${out_cmd[@]}"
    else
        spawn "$dir/in.log" 1 "${in_cmd[@]}"
        spawn "$dir/out.log" 1 "${cg[@]}" "${out_cmd[@]}"
        pid=$SPAWNED_PID
    fi
    slow_wait "$port" "$SPAWNED_PID" "$dir/out.log"
    python3 "$BENCH_DIR/fixed_requests.py" "$port" "$CONNS" 5 >/dev/null ||
        die "$mode: the warm-up failed"
    callgrind_control -z "$pid" >/dev/null 2>&1
    touch "$dir/zeroed"
    sleep 1 # the dump's time stamp must follow the mark's
    python3 "$BENCH_DIR/fixed_requests.py" "$port" "$CONNS" "$PER" >/dev/null ||
        die "$mode: the measured requests failed"
    callgrind_control -d "$pid" >/dev/null 2>&1
    f=$(find "$dir" -name 'cg.out.*' -newer "$dir/zeroed" | sort | tail -n 1)
    [ -n "$f" ] || die "$mode: no callgrind dump"
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    stop_all_but_upstream
    cp "$f" "$OUT/callgrind.pair.$mode.out"
    IR=$((ir / (CONNS * PER)))
}

# Stops the pair (everything spawned after the upstream).
stop_all_but_upstream() {
    while [ ${#SPAWNED[@]} -gt 1 ]; do
        stop_proc "${SPAWNED[-1]}"
    done
}

{
    echo "| mode | instructions/request |"
    echo "| --- | ---: |"
} >"$REPORT"
for m in "${MODES[@]}"; do
    case $m in out-plain | in-plain | out-mtls | in-mtls | out-mtls_openssl | in-mtls_openssl) ;;
    *) die "unknown mode $m (out-plain, in-plain, out-mtls, in-mtls, out-mtls_openssl, in-mtls_openssl)" ;;
    esac
    measure "$m"
    log "$m: $IR instructions/request"
    echo "| $m | $IR |" >>"$REPORT"
done
cat "$REPORT"
