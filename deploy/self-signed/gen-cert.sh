#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Makes a CA and a serving certificate for the webhook's Service with openssl, and the kustomize
# patch that puts the CA into the MutatingWebhookConfiguration's caBundle. Writes ca.crt, tls.crt,
# tls.key and ca-bundle.yaml next to this script (tls.key and ca.key stay on this machine: do not
# commit them).
set -eu
cd "$(dirname "$0")"
svc=sidecar-webhook.sidecar-system.svc
days=${DAYS:-365}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=sidecar-webhook-ca" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$svc" \
    -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\n' "$svc" "$svc" \
    >tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile tls.ext -out tls.crt 2>/dev/null
rm -f tls.csr tls.ext ca.srl
bundle=$(base64 -w0 <ca.crt)
cat >ca-bundle.yaml <<PATCH
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: $bundle
- op: add
  path: /webhooks/1/clientConfig/caBundle
  value: $bundle
PATCH
echo "wrote $(pwd)/tls.crt, tls.key, ca.crt and ca-bundle.yaml"
