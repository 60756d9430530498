#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the benchmarks in bench/ and writes bench/RESULTS.md. Each benchmark is a section: "http1"
# runs the HTTP/1 parser benchmark ($BUILD/bench_http1, built by `make bench`) when it is built,
# "proxy" runs bench/proxy.sh (sidecar proxy against nginx, HAProxy and Caddy), "callgrind" runs
# bench/callgrind.sh (the proxy's instructions per request: access log and policy off and on), "logs" runs
# bench/logs.sh (sidecar logs against rsyslog and syslog-ng), "logs_outputs" runs
# bench/logs_outputs.sh (the file output against the HTTP, Loki and Elasticsearch outputs and
# syslog-ng's http() to a counting HTTP sink), "metrics" runs bench/metrics.sh
# (100,000 series against promtool), "k8s" runs bench/k8s.py (webhook latency, image size, the
# injected sidecars' memory), "tls" runs bench/tls.sh (the proxy terminating TLS against nginx and
# HAProxy, and two sidecars over mTLS against plaintext), "intercept" runs bench/intercept.sh
# (interception cost, the TCP relay against HAProxy in mode tcp), "h2" runs bench/h2.sh (HTTP/2
# and gRPC against nginx and HAProxy), "idle" runs bench/idle_rss.sh (every role's idle RSS).
# RESULTS.md gets a
# header saying when, on what machine and with which command, then the sections; a section not
# run this time keeps its previous text, so `bench/run.sh BUILD proxy` replaces only the proxy's.
# Raw figures and logs go to bench/out/<time>/ (ignored by git). Benchmarks are measurements, not
# tests: nothing here passes or fails on a figure.
#
# Usage: bench/run.sh BUILD_DIR [http1] [proxy] [callgrind] [logs] [logs_outputs] [metrics] [k8s] [tls] [intercept]
#        [h2] [idle]
# (`make bench` runs bench/run.sh <build>, every section)
# Environment: BENCH_QUICK=1 (a smoke run of about a minute), BENCH_SECONDS, BENCH_ROUNDS and the
# others listed in bench/proxy.sh and bench/tls.sh; BENCH_OUT (default bench/out); BENCH_RESULTS
# (default bench/RESULTS.md).
# shellcheck disable=SC2317 # functions called by name: start_$TARGET, section_$s, traps
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[ $# -ge 1 ] ||
    die "usage: bench/run.sh BUILD_DIR [http1] [proxy] [callgrind] [logs] [logs_outputs] [metrics] [k8s] [tls] [intercept] [h2] [idle]"
[ -d "$1" ] || die "no build directory $1"
BUILD=$(cd "$1" && pwd)
shift
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(http1 proxy callgrind logs logs_outputs metrics k8s tls intercept h2 idle)
ALL_SECTIONS=(http1 proxy callgrind logs logs_outputs metrics k8s tls intercept h2 idle)
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/RESULTS.md}
OUT=${BENCH_OUT:-$BENCH_DIR/out}/$(date -u +%Y%m%dT%H%M%SZ)
CPU=$(($(nproc) > 1 ? 1 : 0)) # for bench_http1: the CPU the proxy benchmark gives the proxy
mkdir -p "$OUT"

# The command that reproduces this run: the bench settings from the environment, then the call.
command_line() {
    local v words=() vars
    vars=$(compgen -e | grep -E '^(BENCH_|SIDECAR_ARGS$)' | grep -vE '^BENCH_(OUT|RESULTS)$') ||
        true
    for v in $vars; do
        words+=("$v=$(printf '%q' "${!v}")")
    done
    echo "${words[*]:+${words[*]} }bench/run.sh $BUILD ${SECTIONS[*]}"
}

machine() {
    local cpu mem os
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    os=$(. /etc/os-release && echo "$PRETTY_NAME")
    echo "$(nproc) x $cpu, $mem RAM, $os, Linux $(uname -r)," \
        "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
}

# The commit measured, and whether the working tree had changes on top of it (read-only git).
tree_state() {
    local head
    head=$(git -C "$BENCH_DIR" rev-parse --short HEAD 2>/dev/null) || {
        echo "not a git checkout"
        return 0
    }
    if [ -n "$(git -C "$BENCH_DIR" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        echo "$head with uncommitted changes"
    else
        echo "$head"
    fi
}

# section_http1: the parser benchmark's own output, verbatim.
section_http1() {
    local bin=$BUILD/bench_http1
    echo "## HTTP/1 parser (bench/http1_parse.c)"
    echo
    if [ ! -x "$bin" ]; then
        echo "Not run: \`$bin\` is not built (\`make bench\` builds it)."
        return 0
    fi
    stamp
    echo "\`$bin\`, pinned to CPU $CPU:"
    echo
    echo '```'
    if ! timeout "${BENCH_HTTP1_TIMEOUT:-600}" taskset -c "$CPU" "$bin" 2>&1; then
        echo "(bench_http1 failed or timed out)"
    fi
    echo '```'
}

# section_proxy: bench/proxy.sh, then its report.
section_proxy() {
    echo "## Proxy: sidecar proxy against nginx, HAProxy and Caddy (bench/proxy.sh)"
    echo
    stamp
    if ! timeout "${BENCH_TIMEOUT:-3600}" "$BENCH_DIR/proxy.sh" "$BUILD/sidecar" "$OUT" >&2; then
        echo "bench/proxy.sh failed or timed out; its output is in $OUT."
    fi
    if [ -s "$OUT/proxy.md" ]; then
        cat "$OUT/proxy.md"
    fi
}

# section_callgrind: bench/callgrind.sh, every mode (access log off and on, policy on and off).
section_callgrind() {
    echo "## Proxy: instructions per request under callgrind (bench/callgrind.sh)"
    echo
    stamp
    if ! command -v valgrind >/dev/null; then
        echo "Not run: valgrind is not installed."
        return 0
    fi
    if ! "$BENCH_DIR/callgrind.sh" "$BUILD/sidecar" "$OUT/callgrind" >&2; then
        echo "bench/callgrind.sh failed; its output is in $OUT/callgrind."
    fi
    if [ -s "$OUT/callgrind/callgrind.md" ]; then
        cat "$OUT/callgrind/callgrind.md"
    fi
}

# section_logs: bench/logs.sh, then its report.
section_logs() {
    echo "## Logs: sidecar logs against rsyslog and syslog-ng (bench/logs.sh)"
    echo
    stamp
    if ! timeout "${BENCH_TIMEOUT:-3600}" "$BENCH_DIR/logs.sh" "$BUILD/sidecar" "$OUT" >&2; then
        echo "bench/logs.sh failed or timed out; its output is in $OUT."
    fi
    if [ -s "$OUT/logs.md" ]; then
        cat "$OUT/logs.md"
    fi
}

# section_logs_outputs: bench/logs_outputs.sh (the logs outputs to a counting HTTP sink).
section_logs_outputs() {
    script_section logs_outputs "Logs outputs: file against HTTP, Loki and Elasticsearch, and \
syslog-ng http()"
}

# section_k8s: bench/k8s.py (webhook latency, image size, the injected sidecars' memory).
section_k8s() {
    echo "## Kubernetes: webhook latency, image size, injected sidecars' memory (bench/k8s.py)"
    echo
    stamp
    if ! timeout "${BENCH_TIMEOUT:-3600}" /usr/bin/python3 "$BENCH_DIR/k8s.py" "$BUILD" "$OUT" \
        >"$OUT/k8s.md"; then
        echo "bench/k8s.py failed or timed out; its output is in $OUT."
    fi
    cat "$OUT/k8s.md"
}

# section_metrics: bench/metrics.sh, its report as the section.
section_metrics() {
    echo "## Metrics: sidecar metrics against promtool, 100,000 series (bench/metrics.sh)"
    echo
    stamp
    if ! BENCH_OUT="$OUT" timeout "${BENCH_TIMEOUT:-3600}" "$BENCH_DIR/metrics.sh" "$BUILD" \
        >"$OUT/metrics.md"; then
        echo "bench/metrics.sh failed or timed out; its output is in $OUT."
    fi
    cat "$OUT/metrics.md"
}

# script_section NAME TITLE: the section of bench/NAME.sh (run on $BUILD/sidecar, writing
# $OUT/NAME.md): TITLE, the stamp, then the script's report.
script_section() {
    echo "## $2 (bench/$1.sh)"
    echo
    stamp
    if ! timeout "${BENCH_TIMEOUT:-3600}" "$BENCH_DIR/$1.sh" "$BUILD/sidecar" "$OUT" >&2; then
        echo "bench/$1.sh failed or timed out; its output is in $OUT."
    fi
    if [ -s "$OUT/$1.md" ]; then
        cat "$OUT/$1.md"
    fi
}

# section_tls: bench/tls.sh, then its report.
section_tls() {
    script_section tls "TLS: sidecar proxy terminating TLS against nginx and HAProxy, and two \
sidecars over mTLS"
}

# section_intercept: bench/intercept.sh (interception cost, the TCP relay against HAProxy).
section_intercept() {
    script_section intercept "Interception: REDIRECT + original destination, and the TCP relay \
against HAProxy"
}

# section_h2: bench/h2.sh (HTTP/2 downstream and upstream, gRPC unary), then its report.
section_h2() {
    script_section h2 "HTTP/2: sidecar proxy against nginx and HAProxy"
}

# section_idle: bench/idle_rss.sh, every role's idle RSS (issue 21: <= 3 MiB each).
section_idle() {
    echo "## Idle RSS of every role (bench/idle_rss.sh)"
    echo
    stamp
    if ! "$BENCH_DIR/idle_rss.sh" "$BUILD"; then
        echo "bench/idle_rss.sh failed; its output is above in the run's log."
    fi
    echo
    echo "Each role started with the sources it uses (see bench/idle_rss.sh), RSS read 2 s after" \
        "start, the median of 3 starts. OpenSSL and libcurl are loaded only by what needs them:" \
        "TLS, and https or proxies (plain http:// config sources, Vault addresses, scrape" \
        "targets and push receivers use the built-in HTTP/1.1 client; config sources with" \
        "credentials use libcurl). metrics-scrape is read after one scrape of its plain-http" \
        "target. The secrets role's Vault is unreachable (http://127.0.0.1:1): it idles in its" \
        "retry backoff."
}

# The first line of every section: when, where and how it was measured (a section can be older
# than the file's header, as sections not run keep their text).
stamp() {
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) x $(awk -F': ' \
        '/^model name/ { print $2; exit }' /proc/cpuinfo) with \`$CMD\`."
    echo
}

# previous_section NAME: NAME's text in the current RESULTS.md, markers excluded.
previous_section() {
    [ -f "$RESULTS" ] || return 0
    awk -v b="<!-- begin $1 -->" -v e="<!-- end $1 -->" \
        '$0 == e { on = 0 } on { print } $0 == b { on = 1 }' "$RESULTS"
}

main() {
    local s
    CMD=$(command_line)
    log "benchmarks: ${SECTIONS[*]}; raw output in $OUT"
    for s in "${SECTIONS[@]}"; do
        case $s in
        http1 | proxy | callgrind | logs | logs_outputs | metrics | k8s | tls | intercept | h2 | idle)
            "section_$s" >"$OUT/section-$s.md"
            ;;
        *) die "unknown section $s (known: ${ALL_SECTIONS[*]})" ;;
        esac
    done
    {
        echo "# Benchmark results"
        echo
        echo "Written by \`bench/run.sh\` (\`make bench\`); bench/README.md says what each"
        echo "figure means. Benchmarks compare, they do not pass or fail a build."
        echo
        echo "Last run: $(date -u '+%Y-%m-%d %H:%M UTC'), sections: ${SECTIONS[*]}."
        echo "Machine: $(machine)."
        echo "Tree: $(tree_state)."
        echo "Command: \`$CMD\`"
        for s in "${ALL_SECTIONS[@]}"; do
            echo
            echo "<!-- begin $s -->"
            if [ -f "$OUT/section-$s.md" ]; then
                cat "$OUT/section-$s.md"
            else
                previous_section "$s"
            fi
            echo "<!-- end $s -->"
        done
    } >"$OUT/RESULTS.md"
    cp "$OUT/RESULTS.md" "$RESULTS"
    log "wrote $RESULTS"
}

# On one line: bash reads a script as it runs it, so an edit made meanwhile cannot run here.
main; exit
