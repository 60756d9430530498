# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash disable=SC2034 # CLK_TCK, WRK, SPAWNED_PID are read by the callers
# Helpers shared by the bench/ scripts (sourced, not run): starting and stopping the processes a
# benchmark needs, free loopback ports, per-process figures from /proc, and running wrk.
# Invariant: every process started through `spawn` is stopped, with its descendants, by PID when
# the sourcing script exits (normally, on error, or on a signal); nothing else is ever signalled.

BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLK_TCK=$(getconf CLK_TCK)
SPAWNED=()     # PIDs started by spawn, in start order
SPAWNED_PID="" # the PID of the last spawn

log() {
    printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# sidecar_bin PATH: prints the absolute path of the sidecar binary PATH names (the binary itself,
# or a build directory holding it); dies when there is none. Use as BIN=$(sidecar_bin "$1") under
# set -e, which then stops the script too.
sidecar_bin() {
    local p=$1
    [ -d "$p" ] && p=$p/sidecar
    [ -f "$p" ] && [ -x "$p" ] || die "no sidecar binary at $p"
    realpath "$p"
}

# Prints a TCP port on 127.0.0.1 that nothing listens on, chosen below the kernel's ephemeral
# range so that outgoing connections (wrk, the proxies' upstream side) cannot take it meanwhile.
free_port() {
    python3 - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    port = random.randrange(min(20000, low - 2000), low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
    finally:
        s.close()
EOF
}

# spawn LOG CPU CMD...: starts CMD in the background pinned to CPU (taskset execs, so the PID is
# CMD's own), output to LOG; sets SPAWNED_PID and registers the PID for stop_all.
spawn() {
    local out=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$out" 2>&1 </dev/null &
    SPAWNED_PID=$!
    SPAWNED+=("$SPAWNED_PID")
}

# Prints PID and all its descendants, one per line.
proc_tree() {
    local pid=$1 child
    [ -d "/proc/$pid" ] || return 0
    echo "$pid"
    # shellcheck disable=SC2013 # the file holds space-separated PIDs
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        proc_tree "$child"
    done
}

# True while PID exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Stops PID and its descendants: SIGTERM to PID, up to 5 s to exit, then SIGKILL to whatever of
# the tree is left. Returns once they are gone.
stop_proc() {
    local pid=$1 tree p left=""
    forget "$pid"
    tree=$(proc_tree "$pid")
    if [ -n "$tree" ]; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do
        left=""
        for p in $tree; do
            alive "$p" && left="$left $p"
        done
        [ -z "$left" ] && break
        sleep 0.1
    done
    for p in $left; do
        kill -KILL "$p" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
}

# Drops PID from SPAWNED once it is stopped, so that a later stop_all never signals a process
# that has since been given the same PID.
forget() {
    local kept=() p
    for p in "${SPAWNED[@]}"; do
        [ "$p" = "$1" ] || kept+=("$p")
    done
    SPAWNED=("${kept[@]}")
}

# Stops everything spawn started, newest first. Installed as the EXIT trap by the scripts.
stop_all() {
    while [ ${#SPAWNED[@]} -gt 0 ]; do
        stop_proc "${SPAWNED[-1]}"
    done
}

# Prints the CPU time (user + system, all threads, in clock ticks) used so far by the PIDs given.
cpu_ticks() {
    local pid stat fields total=0
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# Prints the processes of PID's tree that have no children: the ones serving traffic (nginx's
# worker, not its master; the process itself for single-process servers).
proc_leaves() {
    local p
    for p in $(proc_tree "$1"); do
        [ -n "$(cat /proc/"$p"/task/*/children 2>/dev/null)" ] || echo "$p"
    done
}

# Prints the total proportional set size (Pss, KiB) of the PIDs: their memory with each shared
# page divided among the processes sharing it, so that master + worker are not counted twice.
proc_pss_kib() {
    local pid total=0 v
    for pid in "$@"; do
        v=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# proc_kib FIELD PID...: the largest value of a /proc/PID/status field (VmRSS, VmHWM) among the
# PIDs, in KiB.
proc_kib() {
    local field=$1 pid v max=0
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    done
    echo "$max"
}

# busy_pct SECONDS: how busy the whole machine is over SECONDS (percent of all CPUs), from
# /proc/stat. Measured while the benchmark's own processes are idle, it is the load of everything
# else: the noise under the figures.
busy_pct() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep "$1"
    b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y)
        for (i = 2; i <= 9 && i <= n; i++) { # user nice system idle iowait irq softirq steal
            total += y[i] - x[i]
            if (i == 5 || i == 6) idle += y[i] - x[i]
        }
        if (total > 0) printf "%.0f\n", 100 * (total - idle) / total
    }'
}

# Pins every thread of every PID given to CPU.
pin() {
    local cpu=$1 pid
    shift
    for pid in "$@"; do
        taskset -a -p -c "$cpu" "$pid" >/dev/null 2>&1 || true
    done
}

# bench_begin NAME: what every side-by-side section needs before its first run. One benchmark
# at a time (a lock in /tmp): two would measure each other. The raw figures go to $TSV
# ($OUT/NAME.tsv, through record) and $NOTES (through note), $META and $LOGS beside them; $TMP is a
# temp dir readable by servers running as nobody, removed at exit unless BENCH_KEEP=1, when every
# spawned process is stopped. The descriptor limit is raised, and IDLE_CONNS lowered to fit it.
bench_begin() {
    local name=$1
    exec 9>/tmp/sidecar-bench.lock
    flock -n 9 || die "another benchmark is running (lock /tmp/sidecar-bench.lock)"
    TSV=$OUT/$name.tsv
    NOTES=$OUT/$name-notes.tsv
    META=$OUT/$name-meta.txt
    LOGS=$OUT/$name-logs
    TMP=$(mktemp -d "/tmp/sidecar-bench-$name.XXXXXX")
    chmod 755 "$TMP" # nginx workers run as nobody
    mkdir -p "$OUT" "$LOGS"
    : >"$TSV"
    : >"$NOTES"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    ulimit -n "$(ulimit -Hn)"
    if [ "$(ulimit -n)" -lt $((IDLE_CONNS + 200)) ]; then
        IDLE_CONNS=$(($(ulimit -n) - 200))
        log "descriptor limit $(ulimit -n): holding $IDLE_CONNS idle connections"
    fi
}

bench_cleanup() {
    stop_all
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}

# record TARGET ROUND METRIC VALUE: one raw figure.
record() {
    printf '%s\t%s\t%s\t%s\n' "$@" >>"$TSV"
}

# note TARGET TEXT: something the report must say about TARGET.
note() {
    printf '%s\t%s\n' "$1" "$2" >>"$NOTES"
    log "$1: $2"
}

# wait_url PID LOG URL [CURL_ARG...]: waits up to 10 s until URL answers the upstream's body,
# failing early (with the log's tail) if PID exits.
wait_url() {
    local pid=$1 out=$2 url=$3 body
    shift 3
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited; last lines of $out:"
            tail -n 5 "$out" >&2 || true
            return 1
        fi
        body=$(curl -s --max-time 1 "$@" "$url" 2>/dev/null) || body=""
        [ "$body" = "Hello, World!" ] && return 0
        sleep 0.1
    done
    log "no answer on $url after 10 s; last lines of $out:"
    tail -n 5 "$out" >&2 || true
    return 1
}

# wait_http PORT PID LOG: wait_url for http://127.0.0.1:PORT/.
wait_http() {
    wait_url "$2" "$3" "http://127.0.0.1:$1/"
}

# wait_https_any PORT [TRIES]: waits until anything answers https on 127.0.0.1:PORT, whatever its
# certificate (TRIES tenths of a second, 100 by default; valgrind needs more), or dies.
wait_https_any() {
    for _ in $(seq "${2:-100}"); do
        curl -sk --max-time 2 "https://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "nothing answers https on 127.0.0.1:$1"
}

# run_wrk OUT CPU PORT CONNS SECONDS [PACE_MS]: one wrk run (one thread, keep-alive) pinned to
# CPU, to http://127.0.0.1:PORT/ (https with WRK_SCHEME=https), output kept in OUT; sets the
# associative array WRK from wrk.lua's summary line (requests, duration_us, connect_errors,
# read_errors, write_errors, timeouts, non2xx, p50_us, p90_us,
# p99_us, max_us). Returns 1 when wrk printed no summary. WRK_URL replaces the URL, WRK_ARGS
# adds arguments (headers), WRK_WRAP is a command wrk runs under (ip netns exec ..., setpriv ...).
declare -A WRK
WRK_WRAP=()
WRK_ARGS=()
run_wrk() {
    local out=$1 cpu=$2 port=$3 conns=$4 secs=$5 pace=${6:-} line kv
    BENCH_PACE_MS=$pace timeout $((secs + 30)) taskset -c "$cpu" "${WRK_WRAP[@]}" \
        wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$BENCH_LIB_DIR/wrk.lua" "${WRK_ARGS[@]}" \
        "${WRK_URL:-${WRK_SCHEME:-http}://127.0.0.1:$port/}" >"$out" 2>&1 || true
    line=$(grep '^BENCH ' "$out" | tail -n 1) || true
    WRK=()
    [ -n "$line" ] || return 1
    for kv in ${line#BENCH }; do
        WRK[${kv%%=*}]=${kv#*=}
    done
}

# pair_configs DIR PORT MTLS: the configs of bench/tls.sh's two-sidecar chain, DIR/in.yaml and
# DIR/out.yaml. "in" listens on a free port (set in PAIR_IN_PORT) in front of the upstream
# (UP_PORT); "out" listens on PORT (where wrk sends the app's plaintext requests) and forwards to
# "in". With MTLS=1: "in" is `mtls: strict` with the server identity, "out" a `tls: {mode: mesh}`
# cluster with the client identity (SPIFFE IDs in cluster.local, one trust bundle, from
# tests/certs.sh's files in PKI).
pair_configs() {
    local dir=$1 port=$2 mtls=$3 in_port in_extra="" out_tls="" id_in="" id_out=""
    in_port=$(free_port)
    PAIR_IN_PORT=$in_port
    if [ "$mtls" = 1 ]; then
        in_extra=', "mtls": "strict"'
        out_tls=', "tls": {"mode": "mesh"}'
        id_in=$(printf '"identity": {"cert": "%s", "key": "%s", "ca": "%s"},' \
            "$PKI/server.pem" "$PKI/server.key" "$PKI/ca.pem")
        id_out=$(printf '"identity": {"cert": "%s", "key": "%s", "ca": "%s"},' \
            "$PKI/client.pem" "$PKI/client.key" "$PKI/ca.pem")
    fi
    cat >"$dir/in.yaml" <<EOF
{"access_log": "off", "workers": 1, $id_in
 "listeners": [{"name": "inbound", "address": "127.0.0.1:$in_port"$in_extra,
                "routes": [{"name": "r", "cluster": "app"}]}],
 "clusters": [{"name": "app", "endpoints": ["127.0.0.1:$UP_PORT"]}]}
EOF
    cat >"$dir/out.yaml" <<EOF
{"access_log": "off", "workers": 1, $id_out
 "listeners": [{"name": "outbound", "address": "127.0.0.1:$port", "direction": "outbound",
                "routes": [{"name": "r", "cluster": "peer"}]}],
 "clusters": [{"name": "peer", "endpoints": ["127.0.0.1:$in_port"]$out_tls}]}
EOF
}

# pair_setup CPU: what the pair benchmarks share, in TMP: the test PKI (PKI, which pair_configs
# reads) and the bench's nginx upstream pinned to CPU (UP_PORT).
pair_setup() {
    PKI=$TMP/pki
    sh "$BENCH_LIB_DIR/../tests/certs.sh" "$PKI" >"$TMP/certs.log" 2>&1 ||
        die "tests/certs.sh failed: $(tail -n 3 "$TMP/certs.log")"
    chmod -R a+rX "$PKI"
    mkdir -p "$TMP/upstream/tmp"
    UP_PORT=$(free_port)
    sed -e "s#@DIR@#$TMP/upstream#g" -e "s#@PORT@#$UP_PORT#g" \
        "$BENCH_LIB_DIR/peers/nginx-upstream.conf" >"$TMP/upstream/nginx.conf"
    spawn "$TMP/upstream/out.log" "$1" nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream/" \
        -c "$TMP/upstream/nginx.conf"
    wait_http "$UP_PORT" "$SPAWNED_PID" "$TMP/upstream/out.log" || die "the upstream did not start"
}

# pair_openssl DIR: makes pair_configs' mTLS configs in DIR keep OpenSSL carrying the records of
# both hops (`tls.record_layer: openssl` on "out"'s cluster and on "in"'s listener, whose TLS is
# the identity's).
pair_openssl() {
    sed -i 's/"mode": "mesh"}/"mode": "mesh", "record_layer": "openssl"}/' "$1/out.yaml"
    sed -i 's/"mtls": "strict",/"mtls": "strict", "tls": {"record_layer": "openssl"},/' "$1/in.yaml"
}

# logs_input N PATH: writes the logs benchmarks' input, N JSON lines of about 200 bytes (a
# realistic mix of levels, paths, statuses and durations), each with "request handled <i>" once.
logs_input() {
    python3 - "$1" "$2" <<'EOF'
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
}

# logs_bench_setup NAME [TOP]: the logs benchmarks' common settings. Sets LINES and ROUNDS (from
# BENCH_LINES, BENCH_ROUNDS, BENCH_QUICK), TOP (the output directory) and OUT ($TOP/NAME, with
# in/ made), CPU (the shippers' CPU; the calling script moves itself to CPU 0), and syslog-ng's
# command: SYSLOG_NG (empty when not installed), SNG_ENV and SNG_MODS to run it from
# BENCH_SYSLOG_NG_ROOT (where scripts/deps.sh unpacks it: /opt/sidecar-bench/syslog-ng).
logs_bench_setup() {
    if [ "${BENCH_QUICK:-0}" = 1 ]; then
        LINES=${BENCH_LINES:-200000}
        ROUNDS=${BENCH_ROUNDS:-1}
    else
        LINES=${BENCH_LINES:-1000000}
        ROUNDS=${BENCH_ROUNDS:-3}
    fi
    TOP=${2:-${BENCH_OUT:-$BENCH_LIB_DIR/out}/$(date -u +%Y%m%dT%H%M%SZ)}
    OUT=$TOP/$1
    mkdir -p "$OUT/in"
    CPU=$(($(nproc) > 1 ? 1 : 0))
    # The script and what it runs to watch the sinks stay on CPU 0; shippers go to $CPU.
    [ "$CPU" = 1 ] && taskset -p -c 0 $$ >/dev/null
    SNG_ROOT=${BENCH_SYSLOG_NG_ROOT:-/opt/sidecar-bench/syslog-ng}
    SYSLOG_NG=$(command -v syslog-ng || true)
    SNG_ENV=()
    SNG_MODS=()
    if [ -z "$SYSLOG_NG" ] && [ -x "$SNG_ROOT/usr/sbin/syslog-ng" ]; then
        SYSLOG_NG=$SNG_ROOT/usr/sbin/syslog-ng
        SNG_ENV=(env "LD_LIBRARY_PATH=$SNG_ROOT/usr/lib/syslog-ng")
        SNG_MODS=("--module-path=$(echo "$SNG_ROOT"/usr/lib/syslog-ng/3.*)")
    fi
}
