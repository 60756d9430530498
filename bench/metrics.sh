#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of `sidecar metrics` on 100,000 series: the time one scrape of our endpoint takes
# (collect + parse + merge + static labels + render; --cache 0s so every scrape does all of it)
# and the sidecar's peak RSS, for the series read from a textfile (no network) and scraped from a
# target (a static file server), side by side with Prometheus's own parser on the same input
# (`promtool check metrics`, which parses and lints), with the ratios to it and the spread of every
# figure. Prints a Markdown section on stdout; raw figures and logs go to
# $BENCH_OUT/<time>-metrics/ (default bench/out). A measurement, not a test. bench/run.sh runs it
# as its "metrics" section.
#
# Usage: bench/metrics.sh BUILD_DIR      Environment: BENCH_SERIES (100000), BENCH_ROUNDS (20;
# BENCH_QUICK=1: 5), BENCH_PROMTOOL_RUNS (5; BENCH_QUICK=1: 3)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] || die "usage: bench/metrics.sh SIDECAR_BINARY_OR_BUILD_DIR"
BIN=$(sidecar_bin "$1")
SERIES=${BENCH_SERIES:-100000}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-5}
    PT_RUNS=${BENCH_PROMTOOL_RUNS:-3}
else
    ROUNDS=${BENCH_ROUNDS:-20}
    PT_RUNS=${BENCH_PROMTOOL_RUNS:-5}
fi
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
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# spread: reads numbers, one a line; prints "median min max".
spread() {
    sort -n | awk '{ v[NR] = $1 } END { printf "%.1f %.1f %.1f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# time_scrapes URL: prints the median, minimum and maximum milliseconds of ROUNDS scrapes.
time_scrapes() {
    local url=$1
    for _ in $(seq "$ROUNDS"); do
        curl -s -o /dev/null -w '%{time_total}\n' "$url" | awk '{ print $1 * 1000 }'
    done | spread
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
    read -r med min max < <(time_scrapes "http://127.0.0.1:$port/metrics")
    local rss
    rss=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")
    local gz
    gz=$(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total}' \
        "http://127.0.0.1:$port/metrics" | awk '{ printf "%.1f", $1 * 1000 }')
    stop_proc "$pid"
    echo "$med $min $max $gz $((rss / 1024))" >"$OUT/$name.figures"
}

# row NAME LABEL: the table row of a case, with its ratios to promtool's median time and RSS.
row() {
    local med min max gz rss
    read -r med min max gz rss <"$OUT/$1.figures"
    awk -v l="$2" -v med="$med" -v min="$min" -v max="$max" -v gz="$gz" -v rss="$rss" \
        -v ptm="$PT_MS" -v ptr="$PT_RSS" 'BEGIN {
        printf "| %s | %s | %s-%s | %s | %s | %.2fx | %.2fx |\n", l, med, min, max, gz, rss,
            med / ptm, rss / ptr }'
}

log "textfile case"
run_case textfile --textfile-dir "$OUT/tf" -c /dev/null
WWW_PORT=$(free_port)
spawn "$OUT/www.log" 0 python3 -m http.server --bind 127.0.0.1 --directory "$OUT/www" "$WWW_PORT"
wait_http "http://127.0.0.1:$WWW_PORT/metrics"
log "scrape case"
run_case scrape --scrape "http://127.0.0.1:$WWW_PORT/metrics" --scrape-timeout 30s \
    --label pod=bench-0

log "promtool"
for _ in $(seq "$PT_RUNS"); do
    # promtool exits 3 on lint warnings (counter help, naming): still a full parse.
    /usr/bin/time -f '%e %M' promtool check metrics <"$OUT/tf/big.prom" 2>&1 >/dev/null |
        tail -1
done >"$OUT/promtool.figures"
read -r PT_MS PT_MIN PT_MAX < <(awk '{ print $1 * 1000 }' "$OUT/promtool.figures" | spread)
read -r PT_RSS _ _ < <(awk '{ print $2 / 1024 }' "$OUT/promtool.figures" | spread)
PT_RSS=${PT_RSS%.*}
ROW_TF=$(row textfile "sidecar metrics, textfile")
ROW_SCRAPE=$(row scrape "sidecar metrics, scrape target")

cat <<EOF
### $SERIES series ($((BYTES / 1024)) KiB of text 0.0.4)

Time for one scrape of our endpoint with \`--cache 0s\` (collect, parse, merge, label, render),
$ROUNDS rounds, measured by curl on the same host; the sidecar pinned to CPU $CPU. Peak RSS is
VmHWM after all rounds. promtool parses and lints the same file ($PT_RUNS runs, including its
start-up). Ratios: the sidecar's median time and peak RSS over promtool's (below 1: we are
cheaper). Load average at the start: $LOAD (the machine is shared: wall-clock times are noisy,
the spread says how much).

| what | median ms | min-max ms | gzip ms | peak RSS MiB | time vs promtool | RSS vs promtool |
|------|-----------|------------|---------|--------------|------------------|-----------------|
$ROW_TF
$ROW_SCRAPE
| promtool check metrics (same input) | $PT_MS | $PT_MIN-$PT_MAX | | $PT_RSS | 1x | 1x |
EOF
