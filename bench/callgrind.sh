#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per request of `sidecar proxy`, from callgrind: steady even on a loaded machine,
# unlike wall-clock figures, so it compares builds (before/after a change) where bench/proxy.sh
# cannot. The upstream is the bench's nginx (bench/peers/nginx-upstream.conf); the proxy runs
# under valgrind --tool=callgrind with one worker and serves CONNS x PER keep-alive requests from
# fixed_requests.py; a run with no request gives the start-up and drain cost, which is
# subtracted. User-space instructions only: syscalls (4 per request: two reads, a write and a
# writev) are counted by bench/proxy.sh's strace step.
#
# Usage: bench/callgrind.sh SIDECAR [OUT_DIR]   (SIDECAR: binary or build dir, release build)
# Environment: CG_CONNS [50]  CG_PER [400]  SIDECAR_ARGS [--access-log off], e.g.
# SIDECAR_ARGS="" for the access log on. Writes OUT_DIR/callgrind.{idle,load}.out (for
# callgrind_annotate) and prints the figure.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 1 ] || die "usage: bench/callgrind.sh SIDECAR_BINARY_OR_BUILD_DIR [OUT_DIR]"
SIDECAR=$1
[ -d "$SIDECAR" ] && SIDECAR=$SIDECAR/sidecar
OUT=${2:-$(mktemp -d /tmp/sidecar-callgrind.XXXXXX)}
CONNS=${CG_CONNS:-50}
PER=${CG_PER:-400}
read -r -a EXTRA <<<"${SIDECAR_ARGS---access-log off}"
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh BENCH_PKGS)"
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/sidecar-callgrind-up.XXXXXX)
chmod 755 "$TMP"
trap 'stop_all; rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM

mkdir -p "$TMP/tmp"
UP_PORT=$(free_port)
sed -e "s#@DIR@#$TMP#g" -e "s#@PORT@#$UP_PORT#g" "$BENCH_DIR/peers/nginx-upstream.conf" \
    >"$TMP/nginx-upstream.conf"
spawn "$TMP/upstream.log" 0 nginx -e "$TMP/error.log" -p "$TMP/" -c "$TMP/nginx-upstream.conf"
wait_http "$UP_PORT" "$SPAWNED_PID" "$TMP/upstream.log" || die "the upstream nginx did not start"

# run NAME REQUESTS_PER_CONNECTION: one proxy under callgrind; prints its total instructions.
run() {
    local port admin pid total
    port=$(free_port)
    admin=$(free_port)
    spawn "$OUT/callgrind.$1.log" "0-$(($(nproc) - 1))" valgrind --tool=callgrind \
        --callgrind-out-file="$OUT/callgrind.$1.out" "$SIDECAR" proxy \
        --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" \
        --admin "127.0.0.1:$admin" "${EXTRA[@]}"
    pid=$SPAWNED_PID
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
    if [ "$2" -gt 0 ]; then
        python3 "$BENCH_DIR/fixed_requests.py" "$port" "$CONNS" "$2" >/dev/null
    fi
    stop_proc "$pid"
    total=$(sed -n 's/^totals: //p' "$OUT/callgrind.$1.out")
    [ -n "$total" ] || die "no callgrind totals in $OUT/callgrind.$1.out"
    echo "$total"
}

idle=$(run idle 0)
load=$(run load "$PER")
n=$((CONNS * PER))
log "start-up and drain: $idle instructions; with $n requests: $load"
echo "instructions per request: $(((load - idle) / n)) (${n} requests, args: ${EXTRA[*]:-none})"
