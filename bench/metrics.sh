#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of `sidecar metrics` on 100,000 series: the time one scrape of our endpoint takes
# (collect + parse + merge + static labels + render; --cache 0s so every scrape does all of it)
# and the sidecar's peak RSS, for the series read from a textfile (no network) and scraped from a
# target (a static file server), side by side with Prometheus's own parser on the same input
# (`promtool check metrics`, which parses and lints). Prints a Markdown section on stdout; raw
# figures and logs go to bench/out/<time>-metrics/. A measurement, not a test.
#
# Usage: bench/metrics.sh BUILD_DIR      Environment: BENCH_SERIES (100000), BENCH_ROUNDS (20)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] && [ -x "$1/sidecar" ] || die "usage: bench/metrics.sh BUILD_DIR (with sidecar built)"
BIN=$(cd "$1" && pwd)/sidecar
SERIES=${BENCH_SERIES:-100000}
ROUNDS=${BENCH_ROUNDS:-20}
OUT=${BENCH_OUT:-$BENCH_DIR/out}/$(date -u +%Y%m%dT%H%M%SZ)-metrics
mkdir -p "$OUT/tf" "$OUT/www"
CPU=$(($(nproc) > 1 ? 1 : 0))

log "writing $SERIES series"
python3 - "$SERIES" "$OUT/tf/big.prom" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("# HELP bench_requests_total Requests by handler.\n# TYPE bench_requests_total counter\n")
    for i in range(n):
        f.write(f'bench_requests_total{{handler="/api/v1/h{i % 500}",code="{200 + i % 5}",'
                f'instance_id="i-{i}"}} {i * 3}\n')
EOF
cp "$OUT/tf/big.prom" "$OUT/www/metrics"
BYTES=$(stat -c %s "$OUT/tf/big.prom")

# time_scrapes URL: prints the median and the minimum milliseconds of ROUNDS scrapes.
time_scrapes() {
    local url=$1 i
    for i in $(seq "$ROUNDS"); do
        curl -s -o /dev/null -w '%{time_total}\n' "$url"
    done | sort -n | awk '{ v[NR] = $1 * 1000 } END { printf "%.1f %.1f\n", v[int((NR + 1) / 2)], v[1] }'
}

wait_http() {
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "no answer from $1"
}

run_case() {
    local name=$1 port admin
    shift
    port=$(free_port)
    admin=$(free_port)
    spawn "$OUT/$name.log" "$CPU" "$BIN" metrics --admin "127.0.0.1:$admin" \
        --listen "127.0.0.1:$port" --cache 0s "$@"
    local pid=$SPAWNED_PID
    wait_http "http://127.0.0.1:$admin/ready"
    curl -s -o "$OUT/$name.out" "http://127.0.0.1:$port/metrics" # warm-up
    read -r med min < <(time_scrapes "http://127.0.0.1:$port/metrics")
    local rss
    rss=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")
    local gz
    gz=$(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total}' \
        "http://127.0.0.1:$port/metrics" | awk '{ printf "%.1f", $1 * 1000 }')
    stop_proc "$pid"
    echo "| sidecar metrics, $name | $med | $min | $gz | $((rss / 1024)) |"
}

log "textfile case"
ROW_TF=$(run_case textfile --textfile-dir "$OUT/tf" -c /dev/null)
WWW_PORT=$(free_port)
spawn "$OUT/www.log" 0 python3 -m http.server --bind 127.0.0.1 --directory "$OUT/www" "$WWW_PORT"
wait_http "http://127.0.0.1:$WWW_PORT/metrics"
log "scrape case"
ROW_SCRAPE=$(run_case "scrape target" --scrape "http://127.0.0.1:$WWW_PORT/metrics" \
    --scrape-timeout 30s --label pod=bench-0)

log "promtool"
PROMTOOL_MS=$(for _ in $(seq 5); do
    /usr/bin/time -f '%e %M' promtool check metrics <"$OUT/tf/big.prom" 2>&1 >/dev/null |
        tail -1
done | sort -n | awk 'NR == 3 { printf "%.0f %d\n", $1 * 1000, $2 / 1024 }')
read -r PT_MS PT_RSS <<<"$PROMTOOL_MS"

cat <<EOF
## metrics: $SERIES series ($((BYTES / 1024)) KiB of text 0.0.4)

Time for one scrape of our endpoint with \`--cache 0s\` (collect, parse, merge, label, render),
$ROUNDS rounds, measured by curl on the same host; the sidecar pinned to CPU $CPU. Peak RSS is
VmHWM after all rounds. promtool parses and lints the same file (median of 5 runs, including its
start-up).

| what | median ms | best ms | gzip ms | peak RSS MiB |
|------|-----------|---------|---------|--------------|
$ROW_TF
$ROW_SCRAPE
| promtool check metrics (same input) | $PT_MS | | | $PT_RSS |
EOF
