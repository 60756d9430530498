#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Generates the test PKI into DIR with the openssl CLI (unit and integration tests share it):
#   ca.pem/ca.key            root CA (ECDSA P-256), trust domain cluster.local
#   int.pem/int.key          intermediate CA signed by the root; leaves below are signed by it and
#                            their .pem files carry the intermediate after the leaf
#   server.{pem,key}         ECDSA P-256: DNS localhost, server.test; IP 127.0.0.1;
#                            URI spiffe://cluster.local/ns/default/sa/server
#   rsa.{pem,key}            RSA 2048: DNS rsa.test, localhost
#   ed25519.{pem,key}        Ed25519: DNS ed.test, localhost
#   wild.{pem,key}           ECDSA: DNS *.wild.test
#   client.{pem,key}         ECDSA client certificate: URI spiffe://cluster.local/ns/default/sa/client
#   client2.{pem,key}        ECDSA client certificate: URI spiffe://cluster.local/ns/prod/sa/api
#   two_uris.{pem,key}       two URI SANs (not an identity)
#   expired.{pem,key}        DNS localhost, valid 2020-01-01 to 2020-01-02
#   expiring.{pem,key}       DNS localhost, valid 2020-01-01 to two days from now (less than 10%
#                            of its lifetime left)
#   other_ca.{pem,key}       another root CA; other.{pem,key} a leaf it signed (DNS localhost,
#                            URI spiffe://other.local/ns/x/sa/y)
#   notpem.pem               not PEM at all
# Usage: tests/certs.sh DIR   (DIR is created; existing files are overwritten)
set -eu
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME CN: a self-signed root
ca() {
    ec "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 3650 -subj "/O=sidecar test/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME KEYTYPE ISSUER SAN [EKU]: a leaf signed by ISSUER, chain appended when ISSUER is int
leaf() {
    name=$1 kt=$2 issuer=$3 san=$4 eku=${5:-serverAuth,clientAuth}
    case $kt in
    ec) ec "$name.key" ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" 2>/dev/null ;;
    ed25519) openssl genpkey -algorithm ED25519 -out "$name.key" 2>/dev/null ;;
    esac
    openssl req -new -key "$name.key" -out "$name.csr" -subj "/O=sidecar test/CN=$name" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature%s\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$([ "$kt" = rsa ] && echo ,keyEncipherment)" "$eku" "$san" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
        -days 825 -out "$name.pem" -extfile "$name.ext" 2>/dev/null
    [ "$issuer" = int ] && cat int.pem >>"$name.pem"
    rm -f "$name.csr" "$name.ext"
}

ca ca "sidecar test root"
ec int.key
openssl req -new -key int.key -out int.csr -subj "/O=sidecar test/CN=sidecar test intermediate" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >int.ext
openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -out int.pem \
    -extfile int.ext 2>/dev/null
rm -f int.csr int.ext

leaf server ec int "DNS:localhost,DNS:server.test,IP:127.0.0.1,URI:spiffe://cluster.local/ns/default/sa/server"
leaf rsa rsa int "DNS:rsa.test,DNS:localhost"
leaf ed25519 ed25519 int "DNS:ed.test,DNS:localhost"
leaf wild ec int "DNS:*.wild.test"
leaf client ec int "URI:spiffe://cluster.local/ns/default/sa/client" clientAuth
leaf client2 ec int "URI:spiffe://cluster.local/ns/prod/sa/api" clientAuth
leaf two_uris ec int "URI:spiffe://cluster.local/ns/a/sa/b,URI:spiffe://cluster.local/ns/c/sa/d"

# The expired leaf: `openssl ca` is the CLI's way to set explicit validity dates.
ec expired.key
openssl req -new -key expired.key -out expired.csr -subj "/O=sidecar test/CN=expired" 2>/dev/null
mkdir -p ca.db
: >ca.db/index.txt
printf '1000\n' >ca.db/serial
cat >ca.db/ca.cnf <<EOF
[ca]
default_ca = test
[test]
dir = ca.db
database = ca.db/index.txt
serial = ca.db/serial
new_certs_dir = ca.db
certificate = int.pem
private_key = int.key
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[any]
organizationName = optional
commonName = supplied
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
EOF
openssl ca -batch -config ca.db/ca.cnf -in expired.csr -out expired.leaf \
    -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
cat expired.leaf int.pem >expired.pem
ec expiring.key
openssl req -new -key expiring.key -out expiring.csr -subj "/O=sidecar test/CN=expiring" 2>/dev/null
openssl ca -batch -config ca.db/ca.cnf -in expiring.csr -out expiring.leaf \
    -startdate 20200101000000Z -enddate "$(date -u -d '+2 days' +%Y%m%d%H%M%SZ)" -notext 2>/dev/null
cat expiring.leaf int.pem >expiring.pem
rm -rf expired.csr expired.leaf expiring.csr expiring.leaf ca.db

ca other_ca "other test root"
leaf other ec other_ca "DNS:localhost,IP:127.0.0.1,URI:spiffe://other.local/ns/x/sa/y"

printf 'this is not a certificate\n' >notpem.pem
rm -f ./*.srl
