#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Idle resident memory of every role, each started with the sources it actually uses and nothing
# to do: VmRSS, RssAnon (the process's own heap and stacks; the rest is pages of the binary and of
# the shared libraries it maps) and whether OpenSSL and libcurl are mapped, read SETTLE seconds
# after start. The median of ROUNDS starts per role. Prints a Markdown table.
#
#   bench/idle_rss.sh BUILD_DIR        (BENCH_ROUNDS=3, BENCH_SETTLE=2)
#
# Roles: proxy (plain HTTP/1 listener), proxy with a TLS listener (ECDSA P-256, tests/certs.sh),
# logs (one file tailed to a file output), metrics (a textfile directory; metrics-scrape: a plain
# http:// target, served by python3 -m http.server, scraped once through the exposition before the
# reading), config (a file://
# source; config-http: a plain http:// source, served by python3 -m http.server), secrets (a token
# and one secret from an unreachable plain-http Vault at http://127.0.0.1:1: it idles in its retry
# backoff, without libcurl), pod (a manifest with one `sleep` container; the role's own process).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

[ $# -ge 1 ] || die "usage: bench/idle_rss.sh SIDECAR_BINARY_OR_BUILD_DIR"
BIN=$(sidecar_bin "$1")
ROUNDS=${BENCH_ROUNDS:-3}
SETTLE=${BENCH_SETTLE:-2}
DIR=$(mktemp -d /tmp/sidecar-idle-rss.XXXXXX)
trap 'stop_all; rm -rf "$DIR"' EXIT
trap 'exit 1' INT TERM

sh "$ROOT/tests/certs.sh" "$DIR/pki" >/dev/null 2>&1 || die "tests/certs.sh failed"
mkdir -p "$DIR/logs" "$DIR/textfiles" "$DIR/secrets" "$DIR/www"
echo 'a line' >"$DIR/logs/app.log"
echo 'key: value' >"$DIR/source.yaml"
printf '# TYPE app_requests_total counter\napp_requests_total{code="200"} 1027\n' >"$DIR/www/metrics"
cat >"$DIR/pod.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: idle
spec:
  containers:
    - name: app
      image: local
      command: ["sleep", "3600"]
EOF
cat >"$DIR/secrets.yaml" <<EOF
dest_dir: $DIR/secrets
token: idle-token
vault_addr: http://127.0.0.1:1
secrets:
  - name: api
    path: secret/app
EOF

# role_args NAME ADMIN_PORT PORT: the command line of the role NAME.
role_args() {
    local name=$1 admin=127.0.0.1:$2 port=$3
    case $name in
    proxy) echo "proxy --admin $admin --listen 127.0.0.1:$port --upstream 127.0.0.1:1" ;;
    proxy-tls)
        echo "proxy --admin $admin --listen 127.0.0.1:$port --upstream 127.0.0.1:1" \
            "--tls-cert $DIR/pki/server.pem --tls-key $DIR/pki/server.key"
        ;;
    logs) echo "logs --admin $admin --path $DIR/logs/*.log --output file=$DIR/out.log" ;;
    metrics) echo "metrics --admin $admin --listen 127.0.0.1:$port --textfile-dir $DIR/textfiles" ;;
    metrics-scrape)
        echo "metrics --admin $admin --listen 127.0.0.1:$port --scrape http://127.0.0.1:$web_port/metrics"
        ;;
    config) echo "config --admin $admin --source file://$DIR/source.yaml --dest $DIR/dest.yaml" ;;
    config-http)
        echo "config --admin $admin --source http://127.0.0.1:$port/source.yaml" \
            "--dest $DIR/dest-http.yaml"
        ;;
    secrets) echo "secrets --admin $admin -c $DIR/secrets.yaml" ;;
    pod) echo "pod run $DIR/pod.yaml --admin $admin --pod-dir $DIR/pod-$port" ;;
    esac
}

# maps PID PATTERN: "yes" when a library matching PATTERN is mapped into PID.
maps() {
    if grep -q "$2" "/proc/$1/maps" 2>/dev/null; then echo yes; else echo no; fi
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "| role | idle RSS (MiB) | RssAnon (MiB) | OpenSSL mapped | libcurl mapped |"
echo "|---|---|---|---|---|"
for name in proxy proxy-tls logs metrics metrics-scrape config config-http secrets pod; do
    rss=() anon=() ssl=no curl=no
    for _ in $(seq "$ROUNDS"); do
        admin=$(free_port)
        port=$(free_port)
        web_port=$port
        [ "$name" != metrics-scrape ] || web_port=$(free_port)
        if [ "$name" = config-http ] || [ "$name" = metrics-scrape ]; then
            cp "$DIR/source.yaml" "$DIR/www/source.yaml"
            spawn "$DIR/www.out" 0 python3 -m http.server "$web_port" --bind 127.0.0.1 \
                --directory "$DIR/www"
            web=$SPAWNED_PID
            sleep 1
        fi
        # shellcheck disable=SC2046 # the arguments are split on purpose
        spawn "$DIR/$name.out" 0 "$BIN" $(role_args "$name" "$admin" "$port")
        pid=$SPAWNED_PID
        if [ "$name" = metrics-scrape ]; then
            sleep 1
            curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^app_requests_total' ||
                die "metrics-scrape: the target's samples are not in the exposition"
        fi
        sleep "$SETTLE"
        alive "$pid" || die "$name exited: $(tail -n 3 "$DIR/$name.out")"
        rss+=("$(proc_kib VmRSS "$pid")")
        anon+=("$(proc_kib RssAnon "$pid")")
        ssl=$(maps "$pid" 'libssl\|libcrypto')
        curl=$(maps "$pid" libcurl)
        stop_proc "$pid"
        [ "$name" != config-http ] && [ "$name" != metrics-scrape ] || stop_proc "$web"
    done
    r=$(printf '%s\n' "${rss[@]}" | median)
    a=$(printf '%s\n' "${anon[@]}" | median)
    printf '| %s | %.1f | %.1f | %s | %s |\n' "$name" "$(echo "$r / 1024" | bc -l)" \
        "$(echo "$a / 1024" | bc -l)" "$ssl" "$curl"
done
