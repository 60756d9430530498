#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tls.sh's idle RSS step alone, and where that memory is: `sidecar proxy` started as tls.sh starts
# it (quick-start TLS flags, one worker, no access log, pinned to CPU 1), one HTTPS request through
# it to a plain nginx upstream (tls.sh's readiness check), then VmRSS, RssAnon and RssFile one
# second later; the same without TLS. ROUNDS fresh starts of each, alternating; prints every
# round, the medians, and the resident KiB per mapping (library and permissions, from
# /proc/PID/smaps) of the last TLS round next to the last plain one. Writes nothing else.
#
#   bench/tls_idle_rss.sh SIDECAR_OR_BUILD_DIR [ROUNDS]     (ROUNDS: 5)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

SIDECAR=$(sidecar_bin "${1:?usage: tls_idle_rss.sh SIDECAR_OR_BUILD_DIR [ROUNDS]}")
ROUNDS=${2:-5}
CPU=1
[ "$(nproc)" -ge 2 ] || CPU=0
DIR=$(mktemp -d /tmp/sidecar-tls-idle.XXXXXX)
chmod 755 "$DIR" # nginx workers run as nobody
trap 'stop_all; rm -rf "$DIR"' EXIT
trap 'exit 1' INT TERM

sh "$BENCH_DIR/../tests/certs.sh" "$DIR/pki" >/dev/null 2>&1 || die "tests/certs.sh failed"
PKI=$DIR/pki
mkdir -p "$DIR/up/tmp"
UP_PORT=$(free_port)
sed -e "s#@DIR@#$DIR/up#g" -e "s#@PORT@#$UP_PORT#g" "$BENCH_DIR/peers/nginx-upstream.conf" \
    >"$DIR/up/nginx.conf"
spawn "$DIR/up/out.log" 0 nginx -e "$DIR/up/error.log" -p "$DIR/up/" -c "$DIR/up/nginx.conf"
wait_http "$UP_PORT" "$SPAWNED_PID" "$DIR/up/out.log" || die "the upstream nginx did not start"

# measure MODE ROUND: one start; prints "MODE ROUND VmRSS RssAnon RssFile" (KiB), keeps smaps.
measure() {
    local mode=$1 port pid args
    port=$(free_port)
    args=(proxy --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" --workers 1
        --admin "127.0.0.1:$(free_port)" --access-log off)
    [ "$mode" = tls ] && args+=(--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key")
    spawn "$DIR/$mode.log" "$CPU" "$SIDECAR" "${args[@]}"
    pid=$SPAWNED_PID
    if [ "$mode" = tls ]; then
        wait_url "$pid" "$DIR/$mode.log" "https://localhost:$port/" --cacert "$PKI/ca.pem" \
            --resolve "localhost:$port:127.0.0.1" || die "the TLS proxy did not answer"
    else
        wait_http "$port" "$pid" "$DIR/$mode.log" || die "the plain proxy did not answer"
    fi
    sleep 1
    echo "$mode $2 $(proc_kib VmRSS "$pid") $(proc_kib RssAnon "$pid") $(proc_kib RssFile "$pid")"
    cp "/proc/$pid/smaps" "$DIR/smaps.$mode"
    stop_proc "$pid"
}

for r in $(seq "$ROUNDS"); do
    measure tls "$r"
    measure plain "$r"
done | tee "$DIR/rounds.txt"
echo
echo "median KiB (VmRSS RssAnon RssFile):"
for mode in tls plain; do
    echo "$mode $(for col in 3 4 5; do
        awk -v m="$mode" -v c="$col" '$1 == m { print $c }' "$DIR/rounds.txt" | sort -n |
            awk '{ v[NR] = $1 } END { printf "%d ", v[int((NR + 1) / 2)] }'
    done)"
done
echo
echo "resident KiB per mapping, last round (tls, plain):"
for mode in tls plain; do
    awk '/^[0-9a-f]+-[0-9a-f]+ / { n = split($6, p, "/"); key = (NF >= 6 ? p[n] : "[anon]") " " $2 }
         $1 == "Rss:" { rss[key] += $2 } END { for (k in rss) print k, rss[k] }' \
        "$DIR/smaps.$mode" | sort >"$DIR/map.$mode"
done
join -a 1 -a 2 -e 0 -o 0,1.2,2.2 <(awk '{ print $1 "_" $2, $3 }' "$DIR/map.tls") \
    <(awk '{ print $1 "_" $2, $3 }' "$DIR/map.plain") | sort -k2,2nr |
    awk '$2 + $3 > 0 { printf "%-34s %6d %6d\n", $1, $2, $3 }'
