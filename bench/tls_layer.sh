#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The TLS transport layer on its own (bench/tls_serve.c: a fixed 13-byte response over the layer,
# one loop) against nginx serving the same response with the same ECDSA P-256 certificate and the
# same OpenSSL, side by side: server CPU per request with keep-alive, and with a new connection
# (a full TLS handshake) per request. Each server is pinned to one CPU and wrk to another; CPU is
# the server's user + system time over the run divided by the requests wrk completed.
# Usage: bench/tls_layer.sh [BUILD_DIR]   (env: BENCH_SECONDS [10], BENCH_CONNS [50],
#        BENCH_CPU_SERVER [0], BENCH_CPU_LOAD [1])
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
BUILD=${1:-build}
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-50}
CPU_SRV=${BENCH_CPU_SERVER:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}

ninja -C "$BUILD" bench_tls_serve >/dev/null
TMP=$(mktemp -d)
trap 'stop_all; rm -rf "$TMP"' EXIT
chmod 755 "$TMP"
tests/certs.sh "$TMP/pki"
chmod 644 "$TMP"/pki/*
mkdir -p "$TMP/tmp"

# run NAME PORT PIDS...: prints one line per mode with requests/s and CPU us per request.
run() {
    local name=$1 port=$2 mode t0 t1 out reqs
    shift 2
    for mode in keepalive handshake; do
        local hdr=()
        [ "$mode" = handshake ] && hdr=(-H "Connection: close")
        t0=$(cpu_ticks "$@")
        out=$(taskset -c "$CPU_LOAD" wrk -t1 -c "$CONNS" -d "${SECS}s" "${hdr[@]}" \
            "https://127.0.0.1:$port/" 2>&1)
        t1=$(cpu_ticks "$@")
        reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
        [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || die "wrk failed against $name: $out"
        awk -v n="$name" -v m="$mode" -v r="$reqs" -v s="$SECS" -v c=$((t1 - t0)) -v hz="$CLK_TCK" \
            'BEGIN { printf "%-8s %-9s %9.0f req/s  %7.1f us CPU/request\n", n, m, r / s, \
                     c * 1e6 / hz / r }'
    done
}

port=$(free_port)
spawn "$TMP/sc.log" "$CPU_SRV" "$BUILD/bench_tls_serve" "$TMP/pki/server.pem" \
    "$TMP/pki/server.key" "$port"
sc_pid=$SPAWNED_PID
wait_https_any "$port"
run layer "$port" "$sc_pid"
stop_proc "$sc_pid"

nport=$(free_port)
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $TMP/tmp/body;
    proxy_temp_path $TMP/tmp/proxy;
    fastcgi_temp_path $TMP/tmp/fastcgi;
    uwsgi_temp_path $TMP/tmp/uwsgi;
    scgi_temp_path $TMP/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {
        listen 127.0.0.1:$nport ssl backlog=4096;
        ssl_certificate $TMP/pki/server.pem;
        ssl_certificate_key $TMP/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1;
        location / { return 200 "Hello, World!"; }
    }
}
CONF
spawn "$TMP/nginx.log" "$CPU_SRV" nginx -e "$TMP/error.log" -p "$TMP/" -c "$TMP/nginx.conf"
ng_pid=$SPAWNED_PID
wait_https_any "$nport"
# shellcheck disable=SC2046 # one PID per word
run nginx "$nport" $(proc_leaves "$ng_pid")
