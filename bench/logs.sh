#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of `sidecar logs` side by side with rsyslog (imfile -> omfile) and syslog-ng (file()
# source -> file() destination) on the same input: N JSON lines (~200 bytes, a realistic mix) in
# one file, which each shipper reads from its head and writes to a local file sink, in two
# workloads: "raw" (lines shipped as they are) and "json" (each line parsed as JSON and written
# as JSON: sidecar's json parser, rsyslog's mmjsonparse, syslog-ng's json-parser + format-json).
# Every shipper runs in the foreground with its own config and state in the output directory
# (never as a system service), pinned to one CPU, started fresh for every run, and stopped by PID.
# Per run: lines/s (wall, from start until the sink holds N lines), CPU seconds per million lines
# (utime + stime of all its threads) and peak RSS. Rounds rotate the order of the shippers so
# drift on the machine hits all alike; the report gives medians with min-max spreads and the
# ratios to sidecar. A peer that is not installed is reported as such. A measurement, not a test.
#
# Usage: bench/logs.sh SIDECAR_BINARY_OR_BUILD_DIR [OUT_DIR]
#   writes OUT_DIR/logs.md (the RESULTS.md section) and prints it; raw figures in OUT_DIR/logs/.
# Environment: BENCH_LINES (1000000), BENCH_ROUNDS (3), BENCH_QUICK=1 (200000 lines, 1 round),
# BENCH_SYSLOG_NG_ROOT (where scripts/deps.sh unpacks syslog-ng-core: /opt/sidecar-bench/syslog-ng).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] || die "usage: bench/logs.sh SIDECAR_BINARY_OR_BUILD_DIR [OUT_DIR]"
BIN=$(sidecar_bin "$1")
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
logs_bench_setup logs "${2:-}"

log "logs: writing $LINES JSON lines"
logs_input "$LINES" "$OUT/in/app.log"
BYTES=$(stat -c %s "$OUT/in/app.log")

# The peers' commands, or empty when not installed.
RSYSLOGD=$(command -v rsyslogd || true)

# config SHIPPER WORKLOAD DIR: writes the shipper's config for the workload into DIR.
config() {
    local who=$1 wl=$2 d=$3
    case $who in
    sidecar)
        local parser=none format=raw
        [ "$wl" = json ] && parser=json format=ndjson
        cat >"$d/sidecar.yaml" <<EOF
paths: ["$OUT/in/*.log"]
parser: $parser
outputs: [{type: file, path: "$d/sink.log", format: $format, batch_wait: 100ms}]
EOF
        ;;
    rsyslog)
        local parse="" tpl='%msg%\n'
        if [ "$wl" = json ]; then
            parse='action(type="mmjsonparse" cookie="")'
            tpl='%$!%\n'
        fi
        cat >"$d/rsyslog.conf" <<EOF
global(workDirectory="$d")
module(load="imfile")
module(load="mmjsonparse")
input(type="imfile" File="$OUT/in/app.log" Tag="app" ruleset="r" addMetadata="off")
template(name="out" type="string" string="$tpl")
ruleset(name="r") { $parse action(type="omfile" file="$d/sink.log" template="out") }
EOF
        ;;
    syslog-ng)
        # shellcheck disable=SC2016 # syslog-ng template syntax, not shell
        local parser="" log_parser="" tpl='${MSG}\n'
        if [ "$wl" = json ]; then
            parser='parser p { json-parser(prefix("j.")); };'
            log_parser='parser(p);'
            # shellcheck disable=SC2016
            tpl='$(format-json --key j.* --shift 2)\n'
        fi
        cat >"$d/syslog-ng.conf" <<EOF
@version: 3.38
options { stats_freq(0); };
source s { file("$OUT/in/app.log" flags(no-parse) follow-freq(0.1)); };
$parser
destination d { file("$d/sink.log" template("$tpl")); };
log { source(s); $log_parser destination(d); };
EOF
        ;;
    esac
}

# run SHIPPER WORKLOAD ROUND: one fresh run; prints "SHIPPER WORKLOAD seconds cpu_s rss_kib n".
run() {
    local who=$1 wl=$2 r=$3 d start end pid ticks hwm n off size port
    d=$OUT/$who-$wl-$r
    rm -rf "$d"
    mkdir -p "$d"
    config "$who" "$wl" "$d"
    port=$(free_port) # before the clock starts: it runs python
    # The previous run's sink (about 200 MB) is written back now, not during this run: dirty-page
    # throttling would bill this shipper's writes for it (seen as double CPU per line in every
    # run but the first of a round).
    sync
    start=$(date +%s.%N)
    case $who in
    sidecar)
        spawn "$d/run.log" "$CPU" "$BIN" logs --admin "127.0.0.1:$port" -c "$d/sidecar.yaml"
        ;;
    rsyslog)
        spawn "$d/run.log" "$CPU" "$RSYSLOGD" -n -f "$d/rsyslog.conf" -i "$d/rsyslog.pid"
        ;;
    syslog-ng)
        spawn "$d/run.log" "$CPU" "${SNG_ENV[@]}" "$SYSLOG_NG" -F -f "$d/syslog-ng.conf" \
            "${SNG_MODS[@]}" --persist-file="$d/sng.persist" --pidfile="$d/sng.pid" \
            --control="$d/sng.ctl"
        ;;
    esac
    pid=$SPAWNED_PID
    n=0
    off=0
    for _ in $(seq 12000); do
        # Count the newlines of what was appended since the last look only: re-reading a sink
        # of 200 MB every 50 ms would cost more than the shippers being measured.
        size=$(stat -c %s "$d/sink.log" 2>/dev/null || echo 0)
        if [ "$size" -gt "$off" ]; then
            n=$((n + $(dd if="$d/sink.log" iflag=skip_bytes,count_bytes skip="$off" \
                count=$((size - off)) bs=1M 2>/dev/null | tr -cd '\n' | wc -c)))
            off=$size
        fi
        [ "$n" -ge "$LINES" ] && break
        alive "$pid" || break
        sleep 0.05
    done
    end=$(date +%s.%N)
    ticks=$(cpu_ticks "$pid")
    hwm=$(proc_kib VmHWM "$pid")
    stop_proc "$pid"
    rm -f "$d/sink.log" # counted already; 18 runs of 200 MB would fill the disk
    [ "$n" -ge "$LINES" ] || log "$who/$wl: only $n of $LINES lines arrived (see $d/run.log)"
    echo "$who $wl $(echo "$end - $start" | bc) $(echo "scale=3; $ticks / $CLK_TCK" | bc)" \
        "$hwm $n"
}

SHIPPERS=(sidecar)
MISSING=()
if [ -n "$RSYSLOGD" ]; then SHIPPERS+=(rsyslog); else MISSING+=(rsyslog); fi
if [ -n "$SYSLOG_NG" ]; then SHIPPERS+=(syslog-ng); else MISSING+=(syslog-ng); fi

: >"$OUT/raw.txt"
for r in $(seq "$ROUNDS"); do
    for wl in raw json; do
        # Rotate the order every round.
        k=$(((r - 1) % ${#SHIPPERS[@]}))
        order=("${SHIPPERS[@]:$k}" "${SHIPPERS[@]:0:$k}")
        for who in "${order[@]}"; do
            log "logs: round $r/$ROUNDS, $wl, $who"
            run "$who" "$wl" "$r" | tee -a "$OUT/raw.txt" >&2
        done
    done
done

python3 - "$OUT/raw.txt" "$LINES" "$BYTES" "$ROUNDS" "${MISSING[*]:-}" >"$TOP/logs.md" <<'EOF'
import statistics, sys
raw, lines, nbytes, rounds, missing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5].split()
runs = {}
for row in open(raw):
    who, wl, secs, cpu, rss, n = row.split()
    runs.setdefault((wl, who), []).append((float(secs), float(cpu), int(rss), int(n)))

def med(v):
    return statistics.median(v)

def fmt(v, d=0):
    return f"{v:,.{d}f}"

print(f"{lines:,} JSON lines of {nbytes // lines} bytes on average in one file, read from its "
      f"head and written to a file sink; each shipper pinned to one CPU, {rounds} round(s), "
      "order rotated every round. Figures are medians, [min-max] across rounds. Lines/s is wall "
      "time from start until the sink holds every line (start-up included); CPU is user + system "
      "time of all the shipper's threads per million lines.")
print()
for wl, title in (("raw", "raw: lines shipped as they are"),
                  ("json", "json: each line parsed as JSON and written as JSON")):
    print(f"### {title}")
    print()
    print("| shipper | lines/s | CPU s per 1M lines | peak RSS (MiB) | lines received | "
          "sidecar's speed-up | peer CPU / sidecar CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = runs.get((wl, "sidecar"))
    for who in ("sidecar", "rsyslog", "syslog-ng"):
        rs = runs.get((wl, who))
        if not rs:
            if who in missing:
                print(f"| {who} | not installed | | | | | |")
            continue
        lps = [n / s for s, _, _, n in rs]
        cpu = [c * 1e6 / lines for _, c, _, _ in rs]
        rss = [r / 1024 for _, _, r, _ in rs]
        got = min(n for *_, n in rs)
        ratio = cratio = ""
        if base and who != "sidecar":
            b_lps = med([n / s for s, _, _, n in base])
            b_cpu = med([c * 1e6 / lines for _, c, _, _ in base])
            ratio = f"{b_lps / med(lps):.2f}x"
            cratio = f"{med(cpu) / b_cpu:.2f}x" if b_cpu else ""
        print(f"| {who} | {fmt(med(lps))} [{fmt(min(lps))}-{fmt(max(lps))}] | "
              f"{med(cpu):.2f} [{min(cpu):.2f}-{max(cpu):.2f}] | {med(rss):.1f} | {got:,} | "
              f"{ratio} | {cratio} |")
    print()
print("Target (issue 6): >= 1,000,000 lines/s per core to a file/HTTP sink, the lowest CPU per "
      "line of all measured, RSS <= 16 MiB. Peers: rsyslog imfile -> omfile (json: mmjsonparse, "
      "`%$!%` template); syslog-ng file() -> file() (json: json-parser + format-json, which "
      "writes every value as a string). Configs and logs of every run are in the raw output "
      "directory.")
EOF
cat "$TOP/logs.md"
