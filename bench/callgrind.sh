#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per request of `sidecar proxy`, counted by callgrind: repeatable on a loaded
# machine where requests/s are not, so it compares builds (before/after a change) and modes where
# bench/proxy.sh cannot. It says nothing of cache misses or syscalls (bench/proxy.sh's strace
# step counts those: 4 per request).
#
# For each mode the proxy runs under valgrind --tool=callgrind (one worker) in front of the
# bench's nginx upstream (bench/peers/nginx-upstream.conf); after a warm-up the counters are
# zeroed (callgrind_control -z), CG_CONNS x CG_PER keep-alive requests go through
# (fixed_requests.py), and the counters are dumped (callgrind_control -d): the instructions of
# the whole process in that window, divided by the requests. Modes:
#   plain        --listen/--upstream, access log off (as in bench/proxy.sh)
#   log          the same with the JSON access log on (to stdout)
#   policy       issue 5's scenario, as bench/proxy.sh's sidecar_policy: a per-client-IP rate
#                limit never hit, two endpoints, health checks every second, outlier detection
#                and circuit breakers at their defaults; access log off
#   policy_nohc  the same without health checks (what the data path itself pays)
#   envoy        plain's listener, route and cluster written as an Envoy v3 bootstrap
#                (docs/envoy.md): the translated configuration must cost what plain costs
#   authzN       the plain data path with N AuthorizationPolicies (authz1, authz20, authz200):
#                N-1 DENY policies that do not match, then an ALLOW that does
#   plain_token  plain, with the jwt mode's Authorization header (what parsing it costs alone)
#   jwt          an RS256 JWT (PyJWT, key by openssl) on every request, verified once, cached
#   authz20jwt   authz20 whose ALLOW requires a request principal, with that JWT
#   trace_0      plain with tracing on at 0% sampling: every request's context is read and
#                propagated (a traceparent written, OTLP's default), no span is recorded
#   trace_1      tracing at 1% (the default), spans exported over OTLP/HTTP protobuf to a local
#                receiver (bench/otlp_sink.py) that acknowledges every batch; batching at its
#                defaults (512 spans or 5 s)
#   trace_100    tracing at 100%, exported the same way
#   trace_100_gzip  the same with compression: gzip
#                In the trace modes the window holds exactly its own spans' whole cost: the
#                warm-up's spans are exported before the counters are zeroed, and the dump waits
#                one batch interval for the window's last export (checked: exported = sampled).
#                Recording, encoding, compression and the HTTP export (net/h1client for the
#                sink's plain http:// URL) are all counted: the exporter runs on the main loop,
#                a thread of the same process.
#   plain_cookie plain, with the oidc mode's Cookie header (what carrying it costs alone)
#   cors         plain's route with a CORS policy (docs/cors.md) and an allowed Origin on every
#                request: the origin matched, Access-Control-Allow-Origin/-Credentials/-Expose-
#                Headers and Vary: Origin added to the response
#   oidc         an OpenID Connect login (docs/oidc.md) with a valid session cookie on every
#                request: one AES-GCM open, identity headers added, the cookie removed upstream
#   h2           HTTP/2 (issue 16): h2load -c 50 -m 10 (500 streams in flight) over h2c to the
#                proxy, HTTP/1.1 upstream (bench/h2.sh's sidecar target); CG_H2_REQS requests
#                after CG_H2_WARMUP, each run on fresh connections (their setup is in the
#                window: 50 connections for 20,000 requests)
#   h2_h2up      the same with an HTTP/2 upstream (cluster `protocol: http2`) to the nginx
#                upstream's h2c twin (bench/h2.sh's sidecar_h2up)
#   grpc         unary gRPC calls (h2load POSTs a framed request, content-type application/grpc,
#                te: trailers) through `protocol: http2` to nghttpd answering a framed reply and
#                a grpc-status trailer (bench/h2.sh's grpc_sidecar)
#
# Usage: bench/callgrind.sh SIDECAR OUT_DIR [MODE...]   (SIDECAR: binary or build dir; release
# build; default modes: plain, log, policy, policy_nohc). Writes OUT_DIR/callgrind.md (a table) and prints it.
# Environment: CG_CONNS [50], CG_PER [100], CG_WARMUP [20] (requests per connection);
# CG_H2_REQS [20000], CG_H2_WARMUP [5000] (requests of the h2 modes, h2load -c 50 -m 10).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 2 ] || die "usage: bench/callgrind.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR [MODE...]"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
shift 2
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(plain log policy policy_nohc)
CONNS=${CG_CONNS:-50}
PER=${CG_PER:-100}
WARMUP=${CG_WARMUP:-20}
H2_REQS=${CG_H2_REQS:-20000}
H2_WARMUP=${CG_H2_WARMUP:-5000}
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
TMP=$(mktemp -d /tmp/sidecar-callgrind.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$OUT"
trap 'stop_all; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# drain ADMIN_PORT MODE [TRIES]: waits until every sampled span has left the exporter's queue and
# its export has been acknowledged (sidecar_tracing_spans_total: exported = sampled), 60 s at most
# (TRIES x 0.1 s).
drain() {
    local i m s e
    for ((i = 0; i < ${3:-600}; i++)); do
        m=$(curl -s "http://127.0.0.1:$1/metrics") || true
        s=$(awk '/^sidecar_tracing_spans_total\{result="sampled"\}/ { print $2 }' <<<"$m")
        e=$(awk '/^sidecar_tracing_spans_total\{result="exported"\}/ { print $2 }' <<<"$m")
        [ -n "$s" ] && [ "$s" = "$e" ] && return 0
        sleep 0.1
    done
    die "$2: spans were not all exported before the dump (sampled $s, exported $e)"
}

# wait_grpc PORT PID LOG: waits up to 20 s until a unary call through the proxy is answered.
wait_grpc() {
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s --http2-prior-knowledge --max-time 2 \
            "http://127.0.0.1:$1/helloworld.Greeter/SayHello" 2>/dev/null | grep -aq Hello &&
            return 0
        sleep 0.1
    done
    tail -n 5 "$3" >&2 || true
    return 1
}

# load MODE PORT PER H2_N: the requests of one step: CONNS x PER keep-alive HTTP/1.1 requests
# (fixed_requests.py, with FR_HEADER=$hdr) or, in the h2 modes, H2_N through h2load -c 50 -m 10,
# which must all succeed.
load() {
    local out
    case $1 in
    h2 | h2_h2up | grpc)
        local -a url=("http://127.0.0.1:$2/")
        if [ "$1" = grpc ]; then
            url=(-d "$GRPC_DIR/request.bin" -H "content-type: application/grpc" -H "te: trailers"
                "http://127.0.0.1:$2/helloworld.Greeter/SayHello")
        fi
        out=$(h2load -n "$4" -c 50 -m 10 "${url[@]}" 2>&1) || return 1
        grep -q "^requests: $4 total, $4 started, $4 done, $4 succeeded" <<<"$out" || {
            log "$1: $(grep '^requests:' <<<"$out")"
            return 1
        }
        ;;
    *) FR_HEADER=$hdr python3 "$BENCH_DIR/fixed_requests.py" "$2" "$CONNS" "$3" >/dev/null ;;
    esac
}

# measure MODE: one proxy under callgrind; prints the instructions per request of the window.
measure() {
    local mode=$1 dir=$TMP/$1 port pid f ir hdr=""
    mkdir -p "$dir"
    port=$(free_port)
    local admin
    admin=$(free_port)
    local args=(proxy --admin "127.0.0.1:$admin" --workers 1)
    [ "$mode" = log ] || args+=(--access-log off)
    case $mode in
    plain | log) args+=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT") ;;
    policy | policy_nohc)
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
        ;;
    envoy)
        cat >"$dir/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: listen
    address: { socket_address: { address: 127.0.0.1, port_value: $port } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, route: { cluster: upstream } }]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } }
EOF
        args+=(-c "$dir/envoy.yaml")
        ;;
    authz* | jwt | plain_token)
        # AuthorizationPolicy evaluation: N-1 DENY policies that do not match, then an ALLOW
        # that does (every policy is walked), on the plain data path. "...jwt": with an RS256
        # token on every request (verified once, then from the cache) that the ALLOW requires.
        local n=${mode#authz} i need=""
        n=${n%jwt}
        case $mode in jwt | plain_token) n=0 ;; esac
        args+=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" -c "$dir/authz.yaml")
        {
            echo "authorization:"
            for ((i = 1; i < n; i++)); do
                echo "  - { name: deny-$i, action: DENY, rules: [{ from: [{ source: { not_ip_blocks: [127.0.0.0/8] } }] }, { to: [{ operation: { paths: ['/deny-$i/*', '*.php'], methods: [DELETE] } }] }] }"
            done
            case $mode in *jwt) need="from: [{ source: { request_principals: ['*'] } }], " ;; esac
            [ "$n" -gt 0 ] && echo "  - { name: allow, rules: [{ ${need}to: [{ operation: { methods: [GET, HEAD], paths: ['/*'] } }] }] }"
            case $mode in
            *jwt | plain_token)
                openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/jwt.key" 2>/dev/null
                python3 - "$dir/jwt.key" "$dir/jwks.json" "$dir/token" <<'PY'
import json, sys, time
import jwt
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
k = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
k["kid"] = "bench"
json.dump({"keys": [k]}, open(sys.argv[2], "w"))
now = int(time.time())
open(sys.argv[3], "w").write(jwt.encode(
    {"iss": "https://bench", "sub": "client", "aud": "bench", "iat": now, "exp": now + 3600,
     "scope": "read write", "groups": ["a", "b"]}, key, algorithm="RS256",
    headers={"kid": "bench"}))
PY
                if [ "$mode" != plain_token ]; then
                    echo "request_authentication:"
                    echo "  - { name: bench, jwt_rules: [{ issuer: https://bench, audiences: [bench], jwks_file: $dir/jwks.json }] }"
                fi
                hdr="Authorization: Bearer $(cat "$dir/token")"
                ;;
            esac
        } >"$dir/authz.yaml"
        case $mode in jwt | plain_token) sed -i '/^authorization:$/d' "$dir/authz.yaml" ;; esac
        ;;
    trace_*)
        cat >"$dir/trace.yaml" <<EOF
tracing:
  provider: otlp_http
  endpoint: http://127.0.0.1:$SINK_PORT/v1/traces
  sampling: $(sed 's/_gzip$//' <<<"${mode#trace_}")
  max_queue_size: 20000
EOF
        if [[ $mode == *_gzip ]]; then echo "  compression: gzip" >>"$dir/trace.yaml"; fi
        args+=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" -c "$dir/trace.yaml")
        ;;
    oidc | plain_cookie)
        # A session sealed the way proxy_oidc.c seals it, under a key file the proxy reads. The
        # issuer is never reached (discovery fails and backs off): sessions need no provider.
        printf '%064x\n' 7 >"$dir/cookie.key"
        args+=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT")
        if [ "$mode" = oidc ]; then
            args+=(-c "$dir/oidc.yaml")
            printf 'oidc:\n  issuer: http://127.0.0.1:1\n  client_id: bench\n  client_secret: bench\n  cookie_secret_file: %s\n' \
                "$dir/cookie.key" >"$dir/oidc.yaml"
        fi
        python3 - "$dir/cookie.key" "$dir/cookie" <<'PY'
import base64, os, struct, sys, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = bytes.fromhex(open(sys.argv[1]).read().strip())
fields = [b"http://127.0.0.1:1", b"0b5e6c1a-7f6e-4a51-9a7e-3c2d1e0f9a8b", b"alice@example.com",
          b"alice", b"dev,ops,shop-admins", b"", b""]
plain = b"\x02" + struct.pack(">QQ", int(time.time()) + 3600, int(time.time()) + 300)
plain += b"".join(struct.pack(">H", len(f)) + f for f in fields)
nonce = os.urandom(12)
box = nonce + AESGCM(key).encrypt(nonce, plain, b"_sidecar_oidc")
open(sys.argv[2], "w").write(base64.urlsafe_b64encode(box).rstrip(b"=").decode())
PY
        hdr="Cookie: _sidecar_oidc=$(cat "$dir/cookie")"
        ;;
    cors)
        cat >"$dir/cors.yaml" <<EOF
listeners:
  - name: listen
    address: 127.0.0.1:$port
    cors: { allow_origins: [{ exact: "https://app.example" }, { suffix: ".shop.example" }],
            allow_methods: "GET, POST", expose_headers: x-request-id, allow_credentials: true }
    routes: [{ name: default, cluster: app }]
clusters:
  - name: app
    endpoints: [127.0.0.1:$UP_PORT]
EOF
        args+=(-c "$dir/cors.yaml")
        hdr="Origin: https://www.shop.example"
        ;;
    h2 | h2_h2up | grpc)
        local ep=127.0.0.1:$UP_PORT proto=http1
        case $mode in
        h2_h2up) ep=127.0.0.1:$H2_PORT proto=http2 ;;
        grpc) ep=127.0.0.1:$GRPC_PORT proto=http2 ;;
        esac
        cat >"$dir/h2.yaml" <<EOF
listeners:
  - name: listen
    address: 127.0.0.1:$port
    routes: [{ cluster: app }]
clusters:
  - name: app
    endpoints: [$ep]
    max_idle: 1024
    protocol: $proto
EOF
        args+=(-c "$dir/h2.yaml")
        ;;
    *) die "unknown mode $mode (h2, h2_h2up, grpc, plain, log, policy, policy_nohc, envoy, authzN, jwt, plain_token, trace_0, trace_1, trace_100, trace_100_gzip, plain_cookie, oidc, cors)" ;;
    esac
    # Names uncompressed: each dump file then names its own functions (callgrind_annotate).
    spawn "$dir/out.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$dir/cg.out.%p" "$SIDECAR" "${args[@]}"
    pid=$SPAWNED_PID
    if [ "$mode" = grpc ]; then
        wait_grpc "$port" "$pid" "$dir/out.log" || die "$mode: the proxy did not start"
    elif [ -n "$hdr" ]; then
        wait_url "$pid" "$dir/out.log" "http://127.0.0.1:$port/" -H "$hdr" ||
            die "$mode: the proxy did not start"
    else
        wait_http "$port" "$pid" "$dir/out.log" || die "$mode: the proxy did not start"
    fi
    local n=$((CONNS * PER))
    case $mode in h2 | h2_h2up | grpc) n=$H2_REQS ;; esac
    load "$mode" "$port" "$WARMUP" "$H2_WARMUP" || die "$mode: the warm-up failed"
    # Tracing: the warm-up's spans are exported before the window opens, and the window's own
    # before it closes, so the window holds exactly the encoding and export of its requests.
    case $mode in trace_*) drain "$admin" "$mode" ;; esac
    callgrind_control -z "$pid" >/dev/null 2>&1
    touch "$dir/zeroed"
    sleep 1 # the dump's time stamp must follow the mark's
    load "$mode" "$port" "$PER" "$H2_REQS" || die "$mode: the measured requests failed"
    # The window's spans: waited for without polling the admin port (its /metrics would be
    # counted), one batch interval and a second; checked right after the dump.
    case $mode in trace_*) sleep 6 ;; esac
    callgrind_control -d "$pid" >/dev/null 2>&1
    case $mode in trace_*) drain "$admin" "$mode" 1 ;; esac
    f=$(find "$dir" -name 'cg.out.*' -newer "$dir/zeroed" | sort | tail -n 1)
    [ -n "$f" ] || die "$mode: no callgrind dump"
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    stop_proc "$pid"
    cp "$f" "$OUT/callgrind.$mode.out"
    echo $((ir / n))
}

up=$TMP/upstream
mkdir -p "$up/tmp"
UP_PORT=$(free_port)
sed -e "s#@DIR@#$up#g" -e "s#@PORT@#$UP_PORT#g" "$BENCH_DIR/peers/nginx-upstream.conf" \
    >"$up/nginx-upstream.conf"
# The h2_h2up mode's upstream: the same server block over h2c on a second port (as bench/h2.sh).
H2_PORT=$(free_port)
sed -i "s|^    server {|    server {\n        listen 127.0.0.1:$H2_PORT http2;|" "$up/nginx-upstream.conf"
spawn "$up/out.log" 0 nginx -e "$up/error.log" -p "$up/" -c "$up/nginx-upstream.conf"
wait_http "$UP_PORT" "$SPAWNED_PID" "$up/out.log" || die "the upstream nginx did not start"

# The grpc mode's upstream: nghttpd answering /helloworld.Greeter/SayHello with a framed
# HelloReply and the grpc-status trailer (as bench/h2.sh); request.bin is a framed HelloRequest.
GRPC_DIR=$TMP/grpc
GRPC_PORT=$(free_port)
case " ${MODES[*]} " in
*" h2 "* | *" h2_h2up "* | *" grpc "*)
    command -v h2load >/dev/null || die "h2load missing (Debian nghttp2-client; scripts/deps.sh)"
    ;;
esac
if [[ " ${MODES[*]} " == *" grpc "* ]]; then
    command -v nghttpd >/dev/null || die "nghttpd missing (Debian nghttp2-server; scripts/deps.sh)"
    mkdir -p "$GRPC_DIR/www/helloworld.Greeter"
    printf '\x00\x00\x00\x00\x0d\x0a\x0bHello world' >"$GRPC_DIR/www/helloworld.Greeter/SayHello"
    printf '\x00\x00\x00\x00\x07\x0a\x05world' >"$GRPC_DIR/request.bin"
    spawn "$GRPC_DIR/out.log" 0 nghttpd --no-tls -d "$GRPC_DIR/www" --trailer 'grpc-status: 0' \
        "$GRPC_PORT"
fi

SINK_PORT=$(free_port)
if [[ " ${MODES[*]} " == *" trace_"* ]]; then
    spawn "$TMP/sink.log" 0 python3 "$BENCH_DIR/otlp_sink.py" "$SINK_PORT"
    wait_http "$SINK_PORT" "$SPAWNED_PID" "$TMP/sink.log" || die "the OTLP sink did not start"
fi

declare -A per
for m in "${MODES[@]}"; do
    case $m in
    h2 | h2_h2up | grpc) log "callgrind: $m, $H2_REQS requests (h2load -c 50 -m 10)" ;;
    *) log "callgrind: $m, $((CONNS * PER)) requests" ;;
    esac
    per[$m]=$(measure "$m")
done

declare -A what=(
    [plain]="plain data path (\`--listen --upstream\`), access log off"
    [log]="plain data path, JSON access log on"
    [policy]="policy on: rate limit per client IP not hit, 2 endpoints, health checks 1 s, outlier detection, breakers"
    [policy_nohc]="policy on without health checks"
    [envoy]="plain's listener, route and cluster from an Envoy bootstrap"
    [authz1]="authorization: 1 ALLOW policy"
    [authz20]="authorization: 19 DENY policies not matching, then 1 ALLOW"
    [authz200]="authorization: 199 DENY policies not matching, then 1 ALLOW"
    [plain_token]="plain data path, the same Authorization: Bearer header on every request, no JWT rules"
    [jwt]="an RS256 JWT on every request (cached), no policy"
    [authz20jwt]="authorization: 19 DENY, then 1 ALLOW requiring a JWT; an RS256 JWT on every request (cached)"
    [trace_0]="tracing on, 0% sampled (context read and propagated, no span)"
    [trace_1]="tracing on, 1% sampled, OTLP/HTTP protobuf export to a local receiver"
    [trace_100]="tracing on, 100% sampled, OTLP/HTTP protobuf export to a local receiver"
    [trace_100_gzip]="tracing on, 100% sampled, OTLP/HTTP protobuf gzip-compressed"
    [plain_cookie]="plain data path, the same session Cookie header on every request, no login"
    [oidc]="OpenID Connect login, a valid session cookie on every request"
    [cors]="a CORS policy on the route, an allowed Origin on every request"
    [h2]="HTTP/2 downstream (h2c, h2load -c 50 -m 10, $H2_REQS requests), HTTP/1.1 upstream"
    [h2_h2up]="HTTP/2 downstream, HTTP/2 upstream (h2c)"
    [grpc]="gRPC unary over HTTP/2 both sides (nghttpd upstream)"
)
{
    echo "\`sidecar proxy\` ($("$SIDECAR" --version 2>&1 | head -n 1)), one worker, nginx upstream;"
    echo "$((CONNS * PER)) requests over $CONNS keep-alive connections after a warm-up; user-space"
    echo "instructions of the whole process in that window (callgrind Ir), health checks included."
    echo "Counts, not times: steady whatever else runs on the machine, so they compare builds."
    echo
    echo "| mode | instructions per request | vs plain |"
    echo "| --- | ---: | ---: |"
    for m in "${MODES[@]}"; do
        rel=""
        if [ -n "${per[plain]:-}" ] && [ "$m" != plain ]; then
            rel=$(awk -v a="${per[$m]}" -v b="${per[plain]}" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')
        fi
        echo "| ${what[$m]} | ${per[$m]} | $rel |"
    done
} | tee "$OUT/callgrind.md"
