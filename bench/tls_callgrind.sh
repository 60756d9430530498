#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per HTTPS request of the TLS layer (bench/tls_serve.c), of nginx with the same
# certificate and OpenSSL, and of `sidecar proxy` terminating TLS in front of a plain nginx
# (which runs outside valgrind), counted by callgrind: repeatable on a loaded machine where CPU times are
# not. Each server runs under valgrind --tool=callgrind; after a warm-up the counters are zeroed
# (callgrind_control -z), a fixed set of requests goes through (bench/tls_requests.py) and the
# counters are dumped (callgrind_control -d): the whole process's instructions in that window over
# the requests. Two windows: keep-alive (TLS_CONNS x TLS_PER requests) and full handshakes
# (TLS_HS connections of one request each, no resumption).
# Usage: bench/tls_callgrind.sh [BUILD_DIR]   (env: TLS_CONNS [10], TLS_PER [100], TLS_HS [100],
# TLS_RECORD_LAYER [native]: who carries TLS 1.3 records after the handshake in the layer and the
# proxy, native or openssl, to compare the two in one build)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
BUILD=${1:-build}
CONNS=${TLS_CONNS:-10}
PER=${TLS_PER:-100}
HS=${TLS_HS:-100}
RECORDS=${TLS_RECORD_LAYER:-native}
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
ninja -C "$BUILD" bench_tls_serve sidecar >/dev/null
TMP=$(mktemp -d)
trap 'stop_all; rm -rf "$TMP"' EXIT
chmod 755 "$TMP"
tests/certs.sh "$TMP/pki"
chmod 644 "$TMP"/pki/*
mkdir -p "$TMP/tmp"

# window NAME PID PORT CONNS PER: prints NAME and the instructions per request in the window.
window() {
    local name=$1 pid=$2 port=$3 conns=$4 per=$5 before after ir
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 bench/tls_requests.py "$port" "$conns" "$per" "$TMP/pki/ca.pem"
    before=$(ls "$TMP"/cg.out.* 2>/dev/null | wc -l)
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 100); do
        after=$(ls "$TMP"/cg.out.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    ir=$(grep -h '^summary:' "$(ls -t "$TMP"/cg.out.* | head -n 1)" | awk '{ print $2 }')
    awk -v n="$name" -v ir="$ir" -v r=$((conns * per)) \
        'BEGIN { printf "%-20s %12.0f instructions/request\n", n, ir / r }'
}

measure() {
    local name=$1 pid=$2 port=$3
    wait_https_any "$port" 600
    python3 bench/tls_requests.py "$port" 2 5 "$TMP/pki/ca.pem" # warm-up
    window "$name keepalive" "$pid" "$port" "$CONNS" "$PER"
    window "$name handshake" "$pid" "$port" "$HS" 1
}

port=$(free_port)
spawn "$TMP/sc.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind \
    --callgrind-out-file="$TMP/cg.out.%p" "$BUILD/bench_tls_serve" "$TMP/pki/server.pem" \
    "$TMP/pki/server.key" "$port" "$RECORDS"
sc_pid=$SPAWNED_PID
measure layer "$sc_pid" "$port"
stop_proc "$sc_pid"
rm -f "$TMP"/cg.out.*

nport=$(free_port)
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 1024; }
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
        listen 127.0.0.1:$nport ssl;
        ssl_certificate $TMP/pki/server.pem;
        ssl_certificate_key $TMP/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1;
        location / { return 200 "Hello, World!"; }
    }
}
CONF
spawn "$TMP/nginx.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind \
    --callgrind-out-file="$TMP/cg.out.%p" nginx -e "$TMP/error.log" -p "$TMP/" -c "$TMP/nginx.conf"
measure nginx "$SPAWNED_PID" "$nport"
stop_proc "$SPAWNED_PID"
rm -f "$TMP"/cg.out.*

# The proxy terminating TLS (its quick start, access log off) in front of a plain nginx that runs
# outside valgrind: the layer plus the proxy's HTTP/1 path, what bench/tls.sh's (k) times.
uport=$(free_port)
mkdir -p "$TMP/up/tmp"
cat >"$TMP/up/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/up/tmp/body;
    proxy_temp_path $TMP/up/tmp/proxy;
    fastcgi_temp_path $TMP/up/tmp/fastcgi;
    uwsgi_temp_path $TMP/up/tmp/uwsgi;
    scgi_temp_path $TMP/up/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {
        listen 127.0.0.1:$uport;
        location / { return 200 "Hello, World!"; }
    }
}
CONF
spawn "$TMP/up.log" 0-"$(($(nproc) - 1))" nginx -e "$TMP/up/error.log" -p "$TMP/up/" \
    -c "$TMP/up/nginx.conf"
pport=$(free_port)
# the quick start's listener and cluster, written out to choose the record layer
cat >"$TMP/proxy.yaml" <<CONF
listeners:
  - name: listen
    address: 127.0.0.1:$pport
    tls: { cert: $TMP/pki/server.pem, key: $TMP/pki/server.key, record_layer: $RECORDS }
    routes: [{ name: default, cluster: upstream }]
clusters:
  - name: upstream
    endpoints: ["127.0.0.1:$uport"]
CONF
spawn "$TMP/proxy.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind \
    --callgrind-out-file="$TMP/cg.out.%p" "$BUILD/sidecar" proxy -c "$TMP/proxy.yaml" \
    --workers 1 --access-log off --admin "127.0.0.1:$(free_port)"
measure proxy "$SPAWNED_PID" "$pport"
