#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian package that building, testing, the demo and (with "bench") the benchmarks
# need. Idempotent: when everything is present it only runs dpkg-query and exits.
#   scripts/deps.sh          build + test + demo
#   scripts/deps.sh bench    the above plus the peers bench/ compares against
set -eu

PKGS="
build-essential meson ninja-build pkg-config clang libclang-rt-14-dev clang-format
libuv1-dev libyaml-dev libjansson-dev libssl-dev libpcre2-dev libnghttp2-dev
libcurl4-openssl-dev zlib1g-dev libzstd-dev libsnappy-dev libprotobuf-c-dev protobuf-c-compiler
libsqlite3-dev
libcmocka-dev libhttp-parser-dev
python3 python3-pytest python3-requests python3-protobuf python3-snappy protobuf-compiler
python3-yaml python3-jsonpatch python3-jwt python3-cryptography python3-h2 python3-grpcio
nghttp2-client nghttp2-server nodejs podman runc skopeo busybox-static catatonit
curl openssl prometheus prometheus-pushgateway etcd-server nginx-light haproxy iproute2 procps
iptables nftables util-linux
"
BENCH_PKGS="wrk caddy nginx-light strace linux-perf valgrind"
# bench/intercept.sh: TCP relay throughput against HAProxy in mode tcp.
BENCH_PKGS="$BENCH_PKGS iperf3"
# bench/logs.sh: rsyslog, and the libraries of syslog-ng-core, which conflicts with rsyslog (both
# provide system-log-daemon) and is unpacked below instead of installed.
BENCH_PKGS="$BENCH_PKGS rsyslog libivykis0 libnet1 libwrap0 libjson-c5 libpcre3 libglib2.0-0"
SYSLOG_NG_ROOT=/opt/sidecar-bench/syslog-ng

[ "${1:-}" = bench ] && PKGS="$PKGS $BENCH_PKGS"
# kubectl (for `kubectl kustomize deploy/`): Debian's kubernetes-client, unless one is installed.
command -v kubectl >/dev/null || PKGS="$PKGS kubernetes-client"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# syslog-ng for bench/logs.sh: the Debian packages' files (the core, and the http() destination
# of syslog-ng-mod-http) under $SYSLOG_NG_ROOT, run from there in the foreground by the benchmark
# (never a service; nothing under /etc or /usr changes).
if [ "${1:-}" = bench ] && ! command -v syslog-ng >/dev/null &&
    { [ ! -x "$SYSLOG_NG_ROOT/usr/sbin/syslog-ng" ] ||
        ! ls "$SYSLOG_NG_ROOT"/usr/lib/syslog-ng/3.*/libhttp.so >/dev/null 2>&1; }; then
    sudo_="" && [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    tmp=$(mktemp -d)
    (cd "$tmp" && { apt-get download -qq syslog-ng-core syslog-ng-mod-http 2>/dev/null ||
        { $sudo_ apt-get update -qq &&
            apt-get download -qq syslog-ng-core syslog-ng-mod-http; }; })
    $sudo_ mkdir -p "$SYSLOG_NG_ROOT"
    for deb in "$tmp"/*.deb; do
        $sudo_ dpkg-deb -x "$deb" "$SYSLOG_NG_ROOT"
    done
    rm -rf "$tmp"
fi
# The schema validator of the Kubernetes tests (kubernetes-models), into tests/node/node_modules
# from the lock file; only when it is missing.
NODE_DIR="$(dirname "$0")/../tests/node"
node_deps() {
    if [ ! -d "$NODE_DIR/node_modules/kubernetes-models" ] && command -v npm >/dev/null; then
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
if [ -z "$missing" ]; then
    node_deps
    exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Packages whose services would start on install (nginx, prometheus, rsyslog) are only used as
# binaries started by tests and benchmarks; policy-rc.d keeps their system services from starting.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
node_deps
