#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The quickstart: the demo app on 127.0.0.1:8080 with `sidecar proxy` in front of it on :15006.
# Usage: examples/quickstart/run.sh [path/to/sidecar]
# DEMO_ONESHOT=1 runs the sample requests and exits (the integration suite does that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SIDECAR=${1:-$here/../../build/sidecar}
APP_PORT=${APP_PORT:-8080}
PROXY_PORT=${PROXY_PORT:-15006}
ADMIN_PORT=${ADMIN_PORT:-15000}
workdir=$(mktemp -d /tmp/sidecar-quickstart.XXXXXX)

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_http() { # url pid
    for _ in $(seq 1 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "quickstart: the process behind $1 exited; logs in $workdir" >&2
            exit 1
        fi
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "quickstart: $1 did not come up; logs in $workdir" >&2
    exit 1
}

for port in "$APP_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "quickstart: port $port is already in use (set APP_PORT, PROXY_PORT, ADMIN_PORT)" >&2
        exit 1
    fi
done

LISTEN=127.0.0.1:$APP_PORT LOG_FILE=$workdir/app.log /usr/bin/python3 "$here/app.py" \
    2>"$workdir/app.err" &
pids+=($!)
wait_http "http://127.0.0.1:$APP_PORT/" "${pids[0]}"

"$SIDECAR" proxy --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$APP_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --retries 2 --timeout 5s 2>"$workdir/proxy.log" \
    >"$workdir/access.log" &
pids+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/ready" "${pids[1]}"

show() { # description, command...
    echo
    echo "# $1"
    echo "\$ ${*:2}"
    "${@:2}" || true
}

cat <<MSG
sidecar quickstart is running (files in $workdir):
  demo app          http://127.0.0.1:$APP_PORT/         (logs: $workdir/app.log)
  sidecar proxy     http://127.0.0.1:$PROXY_PORT/        (access log: $workdir/access.log)
  proxy admin       http://127.0.0.1:$ADMIN_PORT/metrics  /ready  /config
MSG
show "through the proxy" curl -sS "http://127.0.0.1:$PROXY_PORT/"
show "a flaky endpoint: the proxy retries the 503" curl -sS "http://127.0.0.1:$PROXY_PORT/flaky"
metrics() { curl -sS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^sidecar_(requests|upstream_rq_retry)_total'; }
show "the proxy's metrics" metrics
show "the access log" tail -n 3 "$workdir/access.log"

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
    exit 0
fi
echo
echo "Try: curl -v http://127.0.0.1:$PROXY_PORT/slow?ms=200 ; press Ctrl-C to stop."
wait "${pids[1]}"
