#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per log line of `sidecar logs`, counted by callgrind: repeatable on a loaded machine
# where lines/s are not, so it compares builds (before/after a change). For each workload the
# role runs under valgrind --tool=callgrind with one file output; once it is ready the counters are
# zeroed (callgrind_control -z), a fixed file of CG_LINES lines is dropped into the watched
# directory, and when the sink holds every line the counters are dumped (callgrind_control -d):
# the instructions of the whole process in that window (tailing, parsing, encoding, writing,
# positions, idle timers), divided by the lines. The input is generated from a fixed seed, so two
# runs read the same bytes. Workloads:
#   json   JSON lines (quotes, backslashes, tabs and UTF-8 in the messages), parser json, ndjson out
#   raw    plain text lines with UTF-8, parser none, raw out
#
# Usage: bench/logs_callgrind.sh SIDECAR OUT_DIR [WORKLOAD...]   (SIDECAR: binary or build dir).
# Writes OUT_DIR/logs_callgrind.md (a table) and prints it. Environment: CG_LINES [40000].
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 2 ] || die "usage: bench/logs_callgrind.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR [WORKLOAD...]"
SIDECAR=$1
[ -d "$SIDECAR" ] && SIDECAR=$SIDECAR/sidecar
[ -x "$SIDECAR" ] || die "no sidecar binary at $SIDECAR"
OUT=$2
shift 2
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(json raw)
LINES=${CG_LINES:-40000}
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
TMP=$(mktemp -d /tmp/sidecar-logs-callgrind.XXXXXX)
mkdir -p "$OUT"
trap 'stop_all; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# gen WORKLOAD FILE: writes the fixed input.
gen() {
    python3 - "$1" "$2" "$LINES" <<'EOF'
import json, random, sys
wl, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(7)
words = ["alpha", "beta", "gamma", "req", "GET", "/api/v1/items", "ok", "user=42", "latency",
         "\u00e9t\u00e9", "\u65e5\u672c", "tab\there", "quote\"d", "back\\slash"]
with open(path, "w", encoding="utf-8") as f:
    for i in range(n):
        msg = " ".join(rnd.choice(words) for _ in range(rnd.randint(4, 14)))
        if wl == "json":
            rec = {"ts": "2026-12-07T02:00:00.%06dZ" % i,
                   "level": rnd.choice(["info", "warn", "error"]), "msg": msg, "n": i,
                   "ok": i % 3 == 0}
            if i % 5 == 0:
                rec["lat"] = i / 7.0
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            f.write("2026-12-07 02:00:00 INFO request %d %s\n" % (i, msg))
EOF
}

# wait_ready PORT PID OUT: waits (60 s at most, valgrind starts slowly) for the admin's /ready.
wait_ready() {
    local port=$1 pid=$2 out=$3
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { tail -n 5 "$out" >&2; return 1; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/ready")" = 200 ] &&
            return 0
        sleep 0.1
    done
    tail -n 5 "$out" >&2
    return 1
}

# measure WORKLOAD: one `sidecar logs` under callgrind; prints the instructions per line.
measure() {
    local wl=$1 dir=$TMP/$1 port pid f ir parser=none format=raw
    mkdir -p "$dir/in"
    [ "$wl" = json ] && parser=json format=ndjson
    gen "$wl" "$dir/app.log"
    cat >"$dir/logs.yaml" <<EOF
paths: ["$dir/in/*.log"]
db: $dir/positions.db
parser: $parser
outputs: [{type: file, path: "$dir/sink.log", format: $format, batch_wait: 100ms}]
EOF
    port=$(free_port)
    spawn "$dir/out.log" 0-"$(($(nproc) - 1))" valgrind --tool=callgrind \
        --callgrind-out-file="$dir/cg.out.%p" "$SIDECAR" logs --admin "127.0.0.1:$port" \
        -c "$dir/logs.yaml"
    pid=$SPAWNED_PID
    wait_ready "$port" "$pid" "$dir/out.log" || die "$wl: sidecar logs did not start"
    callgrind_control -z "$pid" >/dev/null 2>&1
    touch "$dir/zeroed"
    sleep 1 # the dump's time stamp must follow the mark's
    mv "$dir/app.log" "$dir/in/app.log"
    for _ in $(seq 1200); do
        [ -f "$dir/sink.log" ] && [ "$(wc -l <"$dir/sink.log")" -ge "$LINES" ] && break
        sleep 0.5
    done
    [ "$(wc -l <"$dir/sink.log")" -ge "$LINES" ] || die "$wl: the sink did not receive every line"
    callgrind_control -d "$pid" >/dev/null 2>&1
    f=$(find "$dir" -name 'cg.out.*' -newer "$dir/zeroed" | sort | tail -n 1)
    [ -n "$f" ] || die "$wl: no callgrind dump"
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    stop_proc "$pid"
    cp "$f" "$OUT/logs_callgrind.$wl.out"
    md5sum <"$dir/sink.log" | cut -d' ' -f1 >"$OUT/logs_callgrind.$wl.sink.md5"
    echo $((ir / LINES))
}

declare -A per
for w in "${WORKLOADS[@]}"; do
    log "logs callgrind: $w, $LINES lines"
    per[$w]=$(measure "$w")
done

declare -A what=(
    [json]="JSON lines, parser json, ndjson file output"
    [raw]="text lines, parser none, raw file output"
)
{
    echo "\`sidecar logs\` ($("$SIDECAR" --version 2>&1 | head -n 1)), one file in, one file out;"
    echo "$LINES lines dropped into a watched directory after start-up; user-space instructions of"
    echo "the whole process until the sink holds every line (callgrind Ir), idle timers included."
    echo "Counts, not times: they compare builds. The sink's MD5 is in OUT_DIR/*.sink.md5."
    echo
    echo "| workload | instructions per line |"
    echo "| --- | ---: |"
    for w in "${WORKLOADS[@]}"; do
        echo "| ${what[$w]} | ${per[$w]} |"
    done
} | tee "$OUT/logs_callgrind.md"
