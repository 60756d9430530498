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
#   http, loki, loki_json, elasticsearch   the json input, parser json, to that HTTP output
#          (ndjson; protobuf + snappy; JSON; _bulk; the rest their defaults) shipping to
#          bench_http_sink on loopback (bench/http_sink.c, built next to SIDECAR), which counts the
#          lines by their "level" key
#
# Usage: bench/logs_callgrind.sh SIDECAR OUT_DIR [WORKLOAD...]   (SIDECAR: binary or build dir).
# Writes OUT_DIR/logs_callgrind.md (a table) and prints it. Environment: CG_LINES [40000], CG_KEEP=1
# (keep the temporary directory with the configs and logs).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 2 ] || die "usage: bench/logs_callgrind.sh SIDECAR_BINARY_OR_BUILD_DIR OUT_DIR [WORKLOAD...]"
SIDECAR=$(sidecar_bin "$1")
OUT=$2
SINK=$(dirname "$SIDECAR")/bench_http_sink
shift 2
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(json raw)
LINES=${CG_LINES:-40000}
command -v valgrind >/dev/null || die "valgrind is not installed (scripts/deps.sh bench)"
TMP=$(mktemp -d /tmp/sidecar-logs-callgrind.XXXXXX)
mkdir -p "$OUT"
trap 'stop_all; [ -n "${CG_KEEP:-}" ] || rm -rf "$TMP"' EXIT
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

# arrived DIR SINK_PORT: prints how many lines the sink holds.
arrived() {
    if [ -n "$2" ]; then
        curl -s "http://127.0.0.1:$2/count" | cut -d' ' -f1
    else
        [ -f "$1/sink.log" ] && wc -l <"$1/sink.log" || echo 0
    fi
}

# measure WORKLOAD: one `sidecar logs` under callgrind; prints the instructions per line. Runs in
# a command substitution's subshell, whose spawned processes the parent does not know: stop them
# here whatever way it ends.
measure() {
    trap stop_all EXIT
    local wl=$1 dir=$TMP/$1 port pid f ir parser=none format=raw out sport="" spid="" n
    mkdir -p "$dir/in"
    out="{type: file, path: \"$dir/sink.log\", format: raw, batch_wait: 100ms}"
    case $wl in
    raw) gen raw "$dir/app.log" ;;
    json) out="{type: file, path: \"$dir/sink.log\", format: ndjson, batch_wait: 100ms}" ;;
    http | loki | loki_json | elasticsearch)
        [ -x "$SINK" ] || die "no $SINK (ninja -C BUILD_DIR bench_http_sink)"
        sport=$(free_port)
        spawn "$dir/sink.out" 0-"$(($(nproc) - 1))" "$SINK" "$sport" 0 level
        spid=$SPAWNED_PID
        local type=$wl extra=""
        case $wl in
        loki) extra=", loki_encoding: protobuf" ;;
        loki_json) type=loki extra=", loki_encoding: json" ;;
        esac
        out="{type: $type, url: \"http://127.0.0.1:$sport\", batch_wait: 100ms$extra}"
        ;;
    *) die "unknown workload $wl" ;;
    esac
    if [ "$wl" != raw ]; then
        parser=json
        gen json "$dir/app.log"
    fi
    cat >"$dir/logs.yaml" <<EOF
paths: ["$dir/in/*.log"]
db: $dir/positions.db
parser: $parser
outputs: [$out]
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
        n=$(arrived "$dir" "$sport")
        [ "${n:-0}" -ge "$LINES" ] && break
        sleep 0.5
    done
    [ "${n:-0}" -ge "$LINES" ] || die "$wl: the sink did not receive every line ($n)"
    callgrind_control -d "$pid" >/dev/null 2>&1
    f=$(find "$dir" -name 'cg.out.*' -newer "$dir/zeroed" | sort | tail -n 1)
    [ -n "$f" ] || die "$wl: no callgrind dump"
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    stop_proc "$pid"
    cp "$f" "$OUT/logs_callgrind.$wl.out"
    [ -z "$spid" ] || stop_proc "$spid"
    if [ -f "$dir/sink.log" ]; then
        md5sum <"$dir/sink.log" | cut -d' ' -f1 >"$OUT/logs_callgrind.$wl.sink.md5"
    fi
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
    [http]="JSON lines, parser json, http output (ndjson) to the counting sink"
    [loki]="JSON lines, parser json, loki output (protobuf + snappy) to the counting sink"
    [loki_json]="JSON lines, parser json, loki output (JSON) to the counting sink"
    [elasticsearch]="JSON lines, parser json, elasticsearch output (_bulk) to the counting sink"
)
{
    echo "\`sidecar logs\` ($("$SIDECAR" --version 2>&1 | head -n 1)), one file in, one output (a"
    echo "file, or an HTTP output to the counting sink, whose CPU is not counted);"
    echo "$LINES lines dropped into a watched directory after start-up; user-space instructions of"
    echo "the whole process until the sink holds every line (callgrind Ir), idle timers included."
    echo "Counts, not times: they compare builds. A file sink's MD5 is in OUT_DIR/*.sink.md5."
    echo
    echo "| workload | instructions per line |"
    echo "| --- | ---: |"
    for w in "${WORKLOADS[@]}"; do
        echo "| ${what[$w]} | ${per[$w]} |"
    done
} | tee "$OUT/logs_callgrind.md"
