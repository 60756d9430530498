#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HTTP/2 (issue 16): `sidecar proxy` serving h2c with prior knowledge, side by side in one run with
# nginx and HAProxy, in three set-ups:
#   HTTP/1.1 upstream: targets nginx (`listen ... http2`, proxy_pass over HTTP/1.1), haproxy
#     (`bind ... proto h2`, HTTP/1.1 to the server) and sidecar, in front of
#     bench/peers/nginx-upstream.conf (a fixed 13-byte body); "direct" is that nginx answering h2c
#     itself (a second server block with http2), the limit.
#   HTTP/2 upstream: haproxy_h2up (`server ... proto h2`) and sidecar_h2up (cluster `protocol:
#     http2`) in front of that same h2c server block (nginx does not proxy to HTTP/2 upstreams).
#   gRPC unary: h2load POSTs a pre-framed gRPC message (-d, content-type application/grpc,
#     te: trailers) to /helloworld.Greeter/SayHello; grpc_haproxy (HAProxy in gRPC pass-through:
#     h2 both sides) and grpc_sidecar (`protocol: http2`) in front of nghttpd answering with a
#     framed reply and a grpc-status trailer; grpc_direct is nghttpd itself. nghttpd (C, one
#     thread) keeps the upstream far from being the limit, which a Python grpcio server would be.
# The load is h2load -c 50 -m 10 (500 streams in flight), small responses. For each target and
# round, in this order:
#   req/s     h2load for BENCH_SECONDS, the proxy alone on CPU 1, h2load and the upstream on CPU 0;
#   CPU/req   everything on CPU 0: the proxy's utime+stime (/proc/PID/stat) over the requests
#             h2load completed, in microseconds;
#   peak RSS  VmHWM of the serving process after both loads (nginx: its worker).
# Rounds interleave the targets so drift hits all alike. Writes OUT_DIR/h2.tsv (raw figures) and
# OUT_DIR/h2.md (medians, min-max); bench/RESULTS.md is not touched.
#
# Usage: bench/h2.sh SIDECAR OUT_DIR   (SIDECAR: the binary, or the build dir holding it)
# Environment: BENCH_SECONDS [6], BENCH_ROUNDS [3], BENCH_TARGETS [direct nginx haproxy sidecar
#   haproxy_h2up sidecar_h2up grpc_direct grpc_haproxy grpc_sidecar],
#   BENCH_QUICK=1 (2 s, 1 round), BENCH_KEEP=1 (keep the temp dir), BENCH_POOL [1024] (idle
#   upstream connections nginx and the sidecar keep).
# shellcheck disable=SC2317 # functions called by name: start_$TARGET, traps
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -eq 2 ] || die "usage: bench/h2.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    SECS=${BENCH_SECONDS:-2} ROUNDS=${BENCH_ROUNDS:-1}
else
    SECS=${BENCH_SECONDS:-6} ROUNDS=${BENCH_ROUNDS:-3}
fi
read -r -a TARGETS <<<"${BENCH_TARGETS:-direct nginx haproxy sidecar haproxy_h2up sidecar_h2up \
grpc_direct grpc_haproxy grpc_sidecar}"
IDLE_CONNS=0
# Upstream connections kept idle by nginx (keepalive) and the sidecar (max_idle): 500 streams are
# in flight, each on an HTTP/1.1 upstream connection of its own, so a pool of 64 (their defaults)
# would measure connection churn; HAProxy keeps every idle server connection.
POOL=${BENCH_POOL:-1024}
CPU_LOAD=0
CPU_PROXY=1
[ "$(nproc)" -ge 2 ] || CPU_PROXY=0

command -v h2load >/dev/null || die "h2load missing (Debian nghttp2-client; scripts/deps.sh)"
command -v haproxy >/dev/null || die "haproxy missing (scripts/deps.sh bench)"
command -v nghttpd >/dev/null || die "nghttpd missing (Debian nghttp2-server; scripts/deps.sh)"
bench_begin h2

render() { # TEMPLATE DIR PORT: a bench/peers template with the run's values
    sed -e "s|@DIR@|$2|g" -e "s|@PORT@|$3|g" -e "s|@UPSTREAM@|127.0.0.1:$UP_PORT|g" \
        -e "s|@MAXCONN@|1024|g" "$BENCH_DIR/peers/$1" >"$2/$1"
}

# The upstream: HTTP/1.1 on UP_PORT for the proxies; its h2c twin on a second port is "direct".
UP_DIR=$TMP/upstream
mkdir -p "$UP_DIR/tmp"
UP_PORT=$(free_port)
render nginx-upstream.conf "$UP_DIR" "$UP_PORT"
DIRECT_PORT=$(free_port)
sed -i "s|^    server {|    server {\n        listen 127.0.0.1:$DIRECT_PORT http2;|" "$UP_DIR/nginx-upstream.conf"
spawn "$UP_DIR/out.log" "$CPU_LOAD" nginx -e "$UP_DIR/error.log" -p "$UP_DIR/" \
    -c "$UP_DIR/nginx-upstream.conf"
UP_PID=$SPAWNED_PID
wait_http "$UP_PORT" "$UP_PID" "$UP_DIR/out.log" || die "upstream did not start"

# The gRPC upstream: nghttpd answering /helloworld.Greeter/SayHello with one framed message
# (HelloReply{message: "Hello world"}) and the grpc-status trailer; the request is a framed
# HelloRequest{name: "world"}.
GRPC_DIR=$TMP/grpc
mkdir -p "$GRPC_DIR/www/helloworld.Greeter"
printf '\x00\x00\x00\x00\x0d\x0a\x0bHello world' >"$GRPC_DIR/www/helloworld.Greeter/SayHello"
printf '\x00\x00\x00\x00\x07\x0a\x05world' >"$GRPC_DIR/request.bin"
GRPC_PORT=$(free_port)
spawn "$GRPC_DIR/out.log" "$CPU_LOAD" nghttpd --no-tls -d "$GRPC_DIR/www" \
    --trailer 'grpc-status: 0' "$GRPC_PORT"
GRPC_PID=$SPAWNED_PID
for _ in $(seq 50); do
    curl -s --http2-prior-knowledge --max-time 1 \
        "http://127.0.0.1:$GRPC_PORT/helloworld.Greeter/SayHello" 2>/dev/null | grep -aq Hello &&
        break
    sleep 0.1
done

start_direct() { # the upstream itself, over h2c (its worker serves)
    SERVE_PID=$(proc_leaves "$UP_PID" | tail -n 1)
    PORT=$DIRECT_PORT
}

start_grpc_direct() {
    SERVE_PID=$GRPC_PID
    PORT=$GRPC_PORT
}

start_nginx() {
    render nginx-proxy.conf "$1" "$2"
    sed -i -e "s|listen 127.0.0.1:$2 backlog=4096;|listen 127.0.0.1:$2 backlog=4096 http2;|" \
        -e "s|keepalive 64;|keepalive $POOL;|" "$1/nginx-proxy.conf"
    spawn "$1/out.log" "$CPU_PROXY" nginx -e "$1/error.log" -p "$1/" -c "$1/nginx-proxy.conf"
}

start_haproxy() { # DIR PORT [UPSTREAM_PORT: an HTTP/2 server, `proto h2` on the server line]
    render haproxy.cfg "$1" "$2"
    sed -i "s|bind 127.0.0.1:$2|bind 127.0.0.1:$2 proto h2|" "$1/haproxy.cfg"
    if [ $# -ge 3 ]; then
        sed -i "s|server app 127.0.0.1:$UP_PORT|server app 127.0.0.1:$3 proto h2|" \
            "$1/haproxy.cfg"
    fi
    spawn "$1/out.log" "$CPU_PROXY" haproxy -db -f "$1/haproxy.cfg"
}

start_haproxy_h2up() { start_haproxy "$1" "$2" "$DIRECT_PORT"; }
start_grpc_haproxy() { start_haproxy "$1" "$2" "$GRPC_PORT"; }

start_sidecar() { # DIR PORT [UPSTREAM_PORT: an HTTP/2 server, cluster protocol http2]
    cat >"$1/sidecar.yaml" <<EOC
listeners:
  - name: bench
    address: 127.0.0.1:$2
    routes: [{cluster: app}]
clusters:
  - name: app
    endpoints: [127.0.0.1:${3:-$UP_PORT}]
    max_idle: $POOL
    protocol: $([ $# -ge 3 ] && echo http2 || echo http1)
EOC
    spawn "$1/out.log" "$CPU_PROXY" "$SIDECAR" proxy -c "$1/sidecar.yaml" --workers 1 \
        --admin "127.0.0.1:$(free_port)" --access-log off
}

start_sidecar_h2up() { start_sidecar "$1" "$2" "$DIRECT_PORT"; }
start_grpc_sidecar() { start_sidecar "$1" "$2" "$GRPC_PORT"; }

# h2load RESULT: requests/s and completed requests of one run into H2_RPS and H2_DONE.
run_h2load() {
    local cpu=$1 out
    local -a load=("http://127.0.0.1:$PORT/")
    if [[ $TARGET == grpc_* ]]; then
        load=(-d "$GRPC_DIR/request.bin" -H "content-type: application/grpc" -H "te: trailers"
            "http://127.0.0.1:$PORT/helloworld.Greeter/SayHello")
    fi
    out=$(taskset -c "$cpu" h2load -c 50 -m 10 -D "$SECS" --warm-up-time=1 "${load[@]}" 2>&1) ||
        true
    H2_RPS=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
    H2_DONE=$(awk '/^requests:/ { print $8 }' <<<"$out")
    H2_FAILED=$(awk '/^requests:/ { print $10 }' <<<"$out")
    [ -n "$H2_RPS" ] || {
        log "h2load gave no figures: $out"
        H2_RPS=0 H2_DONE=0 H2_FAILED=0
    }
}

for round in $(seq "$ROUNDS"); do
    n=${#TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do
        TARGET=${TARGETS[$(((i + round - 1) % n))]}
        dir=$TMP/$TARGET-$round
        mkdir -p "$dir/tmp"
        path=/
        [[ $TARGET == grpc_* ]] && path=/helloworld.Greeter/SayHello
        if [ "$TARGET" = direct ] || [ "$TARGET" = grpc_direct ]; then
            "start_$TARGET"
            pid=""
        else
            PORT=$(free_port)
            "start_$TARGET" "$dir" "$PORT"
            pid=$SPAWNED_PID
            for _ in $(seq 100); do
                curl -s --http2-prior-knowledge --max-time 1 "http://127.0.0.1:$PORT$path" \
                    2>/dev/null | grep -aq Hello && break
                sleep 0.1
            done
            SERVE_PID=$(proc_leaves "$pid" | tail -n 1)
        fi
        log "$TARGET round $round: port $PORT, serving pid $SERVE_PID"
        # req/s: the proxy alone on its CPU.
        [ -n "$pid" ] && pin "$CPU_PROXY" $(proc_tree "$pid")
        run_h2load "$CPU_LOAD"
        record "$TARGET" "$round" rps "$H2_RPS"
        record "$TARGET" "$round" failed "$H2_FAILED"
        # CPU per request: everything on one CPU.
        [ -n "$pid" ] && pin "$CPU_LOAD" $(proc_tree "$pid")
        t0=$(cpu_ticks "$SERVE_PID")
        run_h2load "$CPU_LOAD"
        t1=$(cpu_ticks "$SERVE_PID")
        if [ "${H2_DONE:-0}" -gt 0 ]; then
            record "$TARGET" "$round" cpu_us_per_req \
                "$(awk -v t=$((t1 - t0)) -v n="$H2_DONE" -v hz="$CLK_TCK" \
                    'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
        fi
        record "$TARGET" "$round" peak_rss_kib "$(proc_kib VmHWM "$SERVE_PID")"
        [ -n "$pid" ] && stop_proc "$pid"
    done
done

python3 - "$TSV" "$OUT/h2.md" "$SECS" "$ROUNDS" <<'EOF'
import statistics, sys
from collections import defaultdict
tsv, out, secs, rounds = sys.argv[1:5]
v = defaultdict(list)
for line in open(tsv):
    t, r, m, x = line.rstrip("\n").split("\t")
    v[(t, m)].append(float(x))
targets = []
for (t, _m) in v:
    if t not in targets:
        targets.append(t)
def cell(t, m, fmt):
    xs = v.get((t, m))
    if not xs:
        return "-"
    med = statistics.median(xs)
    return (fmt % med) + (f" ({fmt % min(xs)}-{fmt % max(xs)})" if len(xs) > 1 else "")
rows = ["| target | req/s (proxy alone on a CPU) | CPU us/req (all on one CPU) | peak RSS KiB | failed |",
        "| --- | ---: | ---: | ---: | ---: |"]
for t in targets:
    rows.append(f"| {t} | {cell(t, 'rps', '%.0f')} | {cell(t, 'cpu_us_per_req', '%.1f')} | "
                f"{cell(t, 'peak_rss_kib', '%.0f')} | {cell(t, 'failed', '%.0f')} |")
def med(t):
    xs = v.get((t, "cpu_us_per_req"))
    return statistics.median(xs) if xs else None
text = (f"## HTTP/2 (h2load -c 50 -m 10, {secs} s runs, {rounds} rounds; median (min-max))\n\n"
        + "\n".join(rows) + "\n\n")
for side, peers, what in (("sidecar", ("nginx", "haproxy"), "HTTP/1.1 upstream, vs the better of "
                           "nginx and HAProxy (issue 16 target: <= 0.75x)"),
                          ("sidecar_h2up", ("haproxy_h2up",), "HTTP/2 upstream, vs HAProxy"),
                          ("grpc_sidecar", ("grpc_haproxy",), "gRPC unary, vs HAProxy")):
    best = [med(t) for t in peers if med(t)]
    if best and med(side):
        text += f"- sidecar CPU/req, {what}: {med(side) / min(best):.2f}x\n"
open(out, "w").write(text)
print(text)
EOF
