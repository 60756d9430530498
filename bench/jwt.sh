#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a JWT costs the proxy: microseconds per first-seen token (one signature verification) and
# per cached token, through the proxy's own code (bench/jwt_verify.c), for RS256 (RSA 2048), ES256
# and EdDSA keys made by openssl with tokens made by PyJWT, beside `openssl speed` for the same
# verification. Usage: bench/jwt.sh BUILD_DIR [OUT_DIR]   (a release build with bench_jwt_verify)
set -euo pipefail
BUILD=${1:?usage: bench/jwt.sh BUILD_DIR [OUT_DIR]}
OUT=${2:-}
BIN=$BUILD/bench_jwt_verify
[ -x "$BIN" ] || { echo "no $BIN (ninja -C $BUILD bench_jwt_verify)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/sidecar-jwt.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

row() { # name genpkey-args alg speed-args speed-field-label
    local name=$1 alg=$3 speed=$4
    # shellcheck disable=SC2086
    openssl genpkey $2 -out "$TMP/$name.key" 2>/dev/null
    /usr/bin/python3 - "$TMP/$name.key" "$TMP/$name.jwks" "$TMP/$name.tok" "$alg" <<'PY'
import json, sys, time
import jwt
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
alg = sys.argv[4]
conv = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
k = json.loads(conv.to_jwk(key.public_key()))
k["kid"] = "b"
json.dump({"keys": [k]}, open(sys.argv[2], "w"))
now = int(time.time())
open(sys.argv[3], "w").write(jwt.encode(
    {"iss": "https://bench", "sub": "client", "aud": "bench", "iat": now, "exp": now + 3600},
    key, algorithm=alg, headers={"kid": "b"}))
PY
    local res first cached ops
    res=$("$BIN" "$TMP/$name.jwks" "$TMP/$name.tok" https://bench 2000)
    first=$(awk '/^first_seen_us/ { print $2 }' <<<"$res")
    cached=$(awk '/^cached_us/ { print $2 }' <<<"$res")
    # shellcheck disable=SC2086
    ops=$(openssl speed -seconds 2 $speed 2>/dev/null | awk -v f="$5" '$0 ~ f { v = $NF } END { print v }')
    local us
    us=$(awk -v o="$ops" 'BEGIN { if (o > 0) printf "%.2f", 1e6 / o; else print "?" }')
    echo "| $alg ($name) | $first | $cached | $us |"
}

{
    echo "JWT authentication in the proxy's code (bench/jwt_verify.c), one core, microseconds:"
    echo
    echo "| algorithm (key) | first-seen token | cached token | \`openssl speed\` verify alone |"
    echo "| --- | ---: | ---: | ---: |"
    row rsa2048 "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" RS256 rsa2048 "^rsa 2048"
    row p256 "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" ES256 ecdsap256 "256 bits ecdsa"
    row ed25519 "-algorithm ED25519" EdDSA ed25519 "253 bits EdDSA"
} | tee ${OUT:+"$OUT/jwt.md"}
