#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of `sidecar logs`: N JSON lines (~200 bytes, a realistic mix) are written to a file,
# then each shipper reads the file from its head and writes every line to a local file sink; we
# measure lines per second (wall), CPU seconds per million lines and peak RSS. Side by side, when
# installed: rsyslog (imfile -> omfile) and syslog-ng (file() source -> file() destination); a
# peer that is not installed is reported as such. Prints a Markdown section on stdout; raw
# figures and logs go to bench/out/<time>-logs/. A measurement, not a test.
#
# Usage: bench/logs.sh BUILD_DIR        Environment: BENCH_LINES (1000000)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] && [ -x "$1/sidecar" ] || die "usage: bench/logs.sh BUILD_DIR (with sidecar built)"
BIN=$(cd "$1" && pwd)/sidecar
LINES=${BENCH_LINES:-1000000}
OUT=${BENCH_OUT:-$BENCH_DIR/out}/$(date -u +%Y%m%dT%H%M%SZ)-logs
mkdir -p "$OUT/in"
CPU=$(($(nproc) > 1 ? 1 : 0))

log "writing $LINES JSON lines"
python3 - "$LINES" "$OUT/in/app.log" <<'EOF'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
lv = ["info", "info", "info", "warn", "error", "debug"]
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"ts": "2026-11-23T05:00:%02d.%06dZ" % (i % 60, i % 1000000),
                            "level": lv[i % len(lv)], "msg": "request handled %d" % i,
                            "path": "/api/v1/items/%d" % (i % 977), "status": 200 + i % 3,
                            "duration_ms": i % 250, "user": "u%d" % (i % 100),
                            "trace": "%016x" % (i * 2654435761)}) + "\n")
EOF
BYTES=$(stat -c %s "$OUT/in/app.log")

# measure NAME SINK CMD...: runs CMD pinned to one CPU until SINK holds LINES lines; prints
# "NAME seconds cpu_seconds peak_rss_kib".
measure() {
    local name=$1 sink=$2 start end pid ticks hwm n
    shift 2
    rm -f "$sink"
    start=$(date +%s.%N)
    spawn "$OUT/$name.log" "$CPU" "$@"
    pid=$SPAWNED_PID
    n=0
    for _ in $(seq 6000); do
        n=$( { wc -l <"$sink"; } 2>/dev/null || echo 0)
        [ "$n" -ge "$LINES" ] && break
        alive "$pid" || break
        sleep 0.05
    done
    end=$(date +%s.%N)
    ticks=$(cpu_ticks "$pid")
    hwm=$(proc_kib VmHWM "$pid")
    stop_proc "$pid"
    [ "$n" -ge "$LINES" ] || log "$name: only $n of $LINES lines arrived"
    echo "$name $(echo "$end - $start" | bc) $(echo "scale=3; $ticks / $(getconf CLK_TCK)" | bc) $hwm $n"
}

results=()
for parser in none json; do
    cat >"$OUT/sidecar-$parser.yaml" <<EOF
paths: ["$OUT/in/*.log"]
parser: $parser
outputs: [{type: file, path: "$OUT/sink-sidecar.log", format: ndjson}]
EOF
    results+=("$(measure "sidecar-$parser" "$OUT/sink-sidecar.log" "$BIN" logs \
        --admin "127.0.0.1:$(free_port)" -c "$OUT/sidecar-$parser.yaml")")
done

if command -v rsyslogd >/dev/null; then
    cat >"$OUT/rsyslog.conf" <<EOF
global(workDirectory="$OUT")
module(load="imfile")
input(type="imfile" File="$OUT/in/app.log" Tag="app" ruleset="r")
template(name="raw" type="string" string="%msg%\n")
ruleset(name="r") { action(type="omfile" file="$OUT/sink-rsyslog.log" template="raw") }
EOF
    results+=("$(measure rsyslog "$OUT/sink-rsyslog.log" rsyslogd -n -f "$OUT/rsyslog.conf" \
        -i "$OUT/rsyslog.pid")")
else
    results+=("rsyslog not-installed")
fi

if command -v syslog-ng >/dev/null; then
    cat >"$OUT/syslog-ng.conf" <<EOF
@version: current
options { stats(freq(0)); };
source s { file("$OUT/in/app.log" flags(no-parse) follow-freq(0.1)); };
destination d { file("$OUT/sink-syslog-ng.log" template("\${MSG}\n")); };
log { source(s); destination(d); };
EOF
    results+=("$(measure syslog-ng "$OUT/sink-syslog-ng.log" syslog-ng -F -f \
        "$OUT/syslog-ng.conf" --persist-file="$OUT/sng.persist" --pidfile="$OUT/sng.pid" \
        --control="$OUT/sng.ctl")")
else
    results+=("syslog-ng not-installed")
fi

printf '%s\n' "${results[@]}" >"$OUT/raw.txt"
echo "## logs: file to file, $LINES JSON lines ($((BYTES / LINES)) bytes each on average)"
echo
echo "| shipper | lines/s | CPU s per 1M lines | peak RSS (MiB) | lines received |"
echo "| --- | ---: | ---: | ---: | ---: |"
for r in "${results[@]}"; do
    read -r name secs cpu hwm n <<<"$r"
    if [ "$secs" = not-installed ]; then
        echo "| $name | not installed | | | |"
        continue
    fi
    echo "| $name | $(echo "$n / $secs" | bc) | $(echo "scale=2; $cpu * 1000000 / $LINES" | bc) |" \
        "$(echo "scale=1; $hwm / 1024" | bc) | $n |"
done
echo
echo "Target (issue 6): >= 1,000,000 lines/s per core, the lowest CPU per line, RSS <= 16 MiB."
