#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The quickstart as a pod: `sidecar pod run examples/quickstart/pod.yaml` runs the demo app with
# the proxy, the log shipper and the metrics sidecar as native sidecars, with Kubernetes' lifecycle rules.
# Usage: examples/quickstart/run.sh [path/to/sidecar]
# DEMO_ONESHOT=1 runs the sample requests and exits (the integration suite does that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SIDECAR=$(realpath "${1:-$here/../../build/sidecar}")
export SIDECAR QUICKSTART=$here
export APP_PORT=${APP_PORT:-8080} PROXY_PORT=${PROXY_PORT:-15006} ADMIN_PORT=${ADMIN_PORT:-15000}
export LOGS_ADMIN_PORT=${LOGS_ADMIN_PORT:-15020} POD_ADMIN_PORT=${POD_ADMIN_PORT:-15030}
export METRICS_PORT=${METRICS_PORT:-9090} METRICS_ADMIN_PORT=${METRICS_ADMIN_PORT:-15021}
workdir=$(mktemp -d /tmp/sidecar-pod-quickstart.XXXXXX)

for port in "$APP_PORT" "$PROXY_PORT" "$ADMIN_PORT" "$LOGS_ADMIN_PORT" "$POD_ADMIN_PORT" \
    "$METRICS_PORT" "$METRICS_ADMIN_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "quickstart: port $port is already in use (set APP_PORT, PROXY_PORT, ADMIN_PORT," \
            "LOGS_ADMIN_PORT, POD_ADMIN_PORT, METRICS_PORT, METRICS_ADMIN_PORT)" >&2
        exit 1
    fi
done

"$SIDECAR" pod run "$here/pod.yaml" --pod-dir "$workdir" --admin "127.0.0.1:$POD_ADMIN_PORT" \
    2>"$workdir/pod.log" &
pod=$!
stop() {
    kill -TERM "$pod" 2>/dev/null || true
    wait "$pod"
}
trap 'stop; exit 0' INT TERM

ready=0
for _ in $(seq 1 300); do
    if ! kill -0 "$pod" 2>/dev/null; then
        echo "quickstart: the pod exited; see $workdir/pod.log" >&2
        exit 1
    fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$POD_ADMIN_PORT/ready" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    echo "quickstart: the pod did not become ready; see $workdir/pod.log" >&2
    "$SIDECAR" pod status --pod-dir "$workdir" >&2 || true
    stop
    exit 1
fi

show() { # description, command...
    echo
    echo "# $1"
    echo "\$ ${*:2}"
    "${@:2}" || true
}

cat <<MSG

sidecar quickstart pod is running (pod directory $workdir):
  demo app          http://127.0.0.1:$APP_PORT/
  sidecar proxy     http://127.0.0.1:$PROXY_PORT/        admin http://127.0.0.1:$ADMIN_PORT/metrics
  sidecar logs      admin http://127.0.0.1:$LOGS_ADMIN_PORT/metrics
  sidecar metrics   http://127.0.0.1:$METRICS_PORT/metrics (the app's metrics, labelled)
  the pod runner    http://127.0.0.1:$POD_ADMIN_PORT/pod  /metrics  /ready
  container logs    $workdir/logs/<container>/<restart>.log (CRI format)
MSG
show "through the proxy" curl -sS "http://127.0.0.1:$PROXY_PORT/"
show "a flaky endpoint: the proxy retries the 503" curl -sS "http://127.0.0.1:$PROXY_PORT/flaky"
metrics() { curl -sS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^sidecar_(requests|upstream_rq_retry)_total'; }
show "the proxy's metrics" metrics
app_metrics() { curl -sS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^demo_requests_total'; }
show "the app's metrics, through the metrics sidecar" app_metrics
show "the pod's containers" "$SIDECAR" pod status --pod-dir "$workdir"
sleep 1.5
shipped() { grep -F '"path":"/flaky"' "$workdir/volumes/logs/shipped/app.jsonl"; }
show "the app's log lines, shipped by the log sidecar" shipped

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
    stop
    exit $?
fi
echo
echo "Try: curl -v http://127.0.0.1:$PROXY_PORT/slow?ms=200 ; press Ctrl-C to stop the pod."
wait "$pod"
