#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per request of `sidecar proxy`, plain data path against the traffic policy of
# issue 5 switched on (the "sidecar_policy" scenario of bench/proxy.sh: a per-client-IP rate limit
# never hit, two endpoints, active health checks every second, outlier detection and circuit
# breakers at their defaults), counted by callgrind. Instruction counts stay repeatable on a loaded machine where requests/s do not;
# they say nothing of cache misses or syscalls, which the policy does not add.
#
# For each mode: the proxy starts under valgrind --tool=callgrind (one worker, access log off) in
# front of the bench's nginx upstream; a warm-up of BENCH_INSTR_WARMUP requests; the counters are
# zeroed (callgrind_control -z); BENCH_INSTR_REQUESTS requests go through over
# BENCH_INSTR_CONNS keep-alive connections (a small Python client, not measured); the counters
# are dumped (callgrind_control -d): instructions (Ir) of the whole process in that window,
# divided by the requests. The window includes the health checks that ran meanwhile; a third run
# without them isolates what the data path itself pays.
#
# Usage: bench/proxy_instr.sh SIDECAR OUT_DIR   (SIDECAR: the binary, or the build dir holding it)
# Writes OUT_DIR/proxy_instr.md and prints it. Environment: BENCH_INSTR_REQUESTS [3000],
# BENCH_INSTR_CONNS [4], BENCH_INSTR_WARMUP [300].
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -eq 2 ] || die "usage: bench/proxy_instr.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR"
SIDECAR=$1
[ -d "$SIDECAR" ] && SIDECAR=$SIDECAR/sidecar
[ -x "$SIDECAR" ] || die "no sidecar binary at $SIDECAR"
OUT=$2
REQUESTS=${BENCH_INSTR_REQUESTS:-3000}
CONNS=${BENCH_INSTR_CONNS:-4}
WARMUP=${BENCH_INSTR_WARMUP:-300}
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
TMP=$(mktemp -d /tmp/sidecar-instr.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$OUT"
trap 'stop_all; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# requests PORT N: N GETs over CONNS keep-alive connections, one after the other on each.
requests() {
    python3 - "$1" "$2" "$CONNS" <<'PY'
import socket, sys
port, n, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(conns)]
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
bad = 0
for i in range(n):
    s = socks[i % conns]
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += s.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        bad += 1
for s in socks:
    s.close()
if bad:
    sys.exit("%d non-200 responses" % bad)
PY
}

# Ir of the last callgrind dump in DIR.
dump_ir() {
    local f
    f=$(find "$1" -name 'cg.out.*' -newer "$1/zeroed" | sort | tail -n 1)
    [ -n "$f" ] || return 1
    awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

# measure MODE: one proxy (plain, policy or policy_nohc) under callgrind; prints its instructions
# in the window and per request.
measure() {
    local mode=$1 dir=$TMP/$1 port pid ir
    mkdir -p "$dir"
    port=$(free_port)
    local args=(proxy --admin "127.0.0.1:$(free_port)" --access-log off --workers 1)
    if [ "$mode" != plain ]; then
        cat >"$dir/policy.yaml" <<EOF
listeners:
  - name: listen
    address: 127.0.0.1:$port
    rate_limit: { requests_per_unit: 1000000000, unit: second, key: client_ip }
    routes: [{ name: default, cluster: app }]
clusters:
  - name: app
    endpoints: [127.0.0.1:$UP_PORT, localhost:$UP_PORT]
EOF
        if [ "$mode" = policy ]; then
            echo "    health_check: { path: /, interval: 1s, timeout: 1s }" >>"$dir/policy.yaml"
        fi
        args+=(-c "$dir/policy.yaml")
    else
        args+=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT")
    fi
    spawn "$dir/out.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind \
        --callgrind-out-file="$dir/cg.out.%p" "$SIDECAR" "${args[@]}"
    pid=$SPAWNED_PID
    wait_http "$port" "$pid" "$dir/out.log" || die "$mode: the proxy did not start"
    requests "$port" "$WARMUP" || die "$mode: warm-up failed"
    callgrind_control -z "$pid" >/dev/null 2>&1
    touch "$dir/zeroed"
    sleep 1 # the file's time stamp must precede the dump's
    requests "$port" "$REQUESTS" || die "$mode: the measured requests failed"
    callgrind_control -d "$pid" >/dev/null 2>&1
    ir=$(dump_ir "$dir") || die "$mode: no callgrind dump"
    stop_proc "$pid"
    awk -v ir="$ir" -v n="$REQUESTS" 'BEGIN { printf "%d %.0f\n", ir, ir / n }'
}

up=$TMP/upstream
mkdir -p "$up/tmp"
UP_PORT=$(free_port)
sed -e "s#@DIR@#$up#g" -e "s#@PORT@#$UP_PORT#g" "$BENCH_DIR/peers/nginx-upstream.conf" \
    >"$up/nginx-upstream.conf"
spawn "$up/out.log" 0 nginx -e "$up/error.log" -p "$up/" -c "$up/nginx-upstream.conf"
wait_http "$UP_PORT" "$SPAWNED_PID" "$up/out.log" || die "the upstream nginx did not start"

log "plain data path under callgrind: $REQUESTS requests"
read -r plain_ir plain_per <<<"$(measure plain)"
log "policy on under callgrind: $REQUESTS requests"
read -r policy_ir policy_per <<<"$(measure policy)"
log "policy on, no health checks, under callgrind: $REQUESTS requests"
read -r nohc_ir nohc_per <<<"$(measure policy_nohc)"

{
    echo "### Instructions per request, traffic policy on and off (callgrind)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); \`sidecar proxy\` ($("$SIDECAR" --version 2>&1 |
        head -n 1)), one worker, access log off, $REQUESTS requests over $CONNS keep-alive" \
        "connections after a warm-up of $WARMUP, to one nginx upstream; instructions of the whole" \
        "proxy process in that window (callgrind Ir), health checks included."
    echo
    echo "| mode | instructions | per request |"
    echo "| --- | ---: | ---: |"
    echo "| plain data path (\`--listen --upstream\`) | $plain_ir | $plain_per |"
    echo "| policy on (rate limit per client IP not hit, 2 endpoints, health checks 1 s," \
        "outlier detection, breakers) |" \
        "$policy_ir | $policy_per |"
    echo "| policy on without health checks (rate limit, 2 endpoints, outlier detection," \
        "breakers) |" \
        "$nohc_ir | $nohc_per |"
    echo
    awk -v a="$policy_per" -v b="$plain_per" -v c="$nohc_per" 'BEGIN {
        printf "Policy on: %+.1f%% instructions per request (%+.1f%% without the health checks).\n",
            (a / b - 1) * 100, (c / b - 1) * 100 }'
} | tee "$OUT/proxy_instr.md"
