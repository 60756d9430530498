# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy -c istio.yaml: Istio's AuthorizationPolicy and RequestAuthentication documents
as the proxy's configuration, against real peers. Two sidecars over mesh mTLS (certificates made
with openssl): an ALLOW policy lets only order-service's SPIFFE identity POST /api/v1/charge; a
DENY policy keeps /admin* from other namespaces; RequestAuthentication with a jwksUri served by
fake_jwks (test_proxy_jwt) and requestPrincipals ["*"] require a token signed by PyJWT; the
translation is the same as the native document (--check --print); fields without an equivalent
are refused with their file:line:col."""
import json

import pytest

from conftest import free_port
from proxy_util import FakeUpstream, echo_handler, get, metric, wait_for
from test_proxy_jwt import ISS, FakeJWKS, bearer, jwk, keys, token  # noqa: F401 - keys: fixture
from tls_util import make_leaf, pki  # noqa: F401 - pki is a fixture


def stream(*docs):
    return "\n---\n".join(d.strip("\n") for d in docs) + "\n"


def server_doc(port, upstream, pki, **extra):
    """The inbound sidecar's own document: STRICT mTLS in front of <upstream>."""
    return json.dumps({
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "mtls": "strict",
                       "routes": [{"name": "r", "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [upstream]}],
        "identity": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                     "ca": str(pki / "ca.pem")},
        "workload": {"namespace": "payments", "labels": {"app": "payment"}},
        "access_log": "off", **extra})


def client_sidecar(sidecar_run, pki, cert, server_port):
    """An outbound sidecar with identity <cert> whose cluster is the server over mesh mTLS."""
    port = free_port()
    sidecar_run("proxy", config=json.dumps({
        "listeners": [{"name": "out", "address": f"127.0.0.1:{port}", "direction": "outbound",
                       "routes": [{"name": "r", "cluster": "peer",
                                   "retry_policy": {"num_retries": 0}}]}],
        "clusters": [{"name": "peer", "endpoints": [f"127.0.0.1:{server_port}"],
                      "tls": {"mode": "mesh"}}],
        "identity": {"cert": str(cert[0]), "key": str(cert[1]), "ca": str(pki / "ca.pem")},
        "access_log": "off"}) + "\n")
    return port


CHARGE = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: charge
  namespace: payments
spec:
  selector:
    matchLabels:
      app: payment
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/order-service"]
    to:
    - operation:
        methods: ["POST"]
        paths: ["/api/v1/charge"]
  - from:
    - source:
        namespaces: ["payments"]
"""

DENY_ADMIN = """apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: admin-own-namespace
  namespace: payments
spec:
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: ["payments"]
    to:
    - operation:
        paths: ["/admin*"]
"""


def test_only_one_principal_may_charge_between_two_sidecars(sidecar_run, pki):
    echo = FakeUpstream(echo_handler)
    order = make_leaf(pki, "order", "URI:spiffe://cluster.local/ns/shop/sa/order-service")
    web = make_leaf(pki, "web", "URI:spiffe://cluster.local/ns/shop/sa/web")
    ops = make_leaf(pki, "ops", "URI:spiffe://cluster.local/ns/payments/sa/ops")
    port = free_port()
    sc = sidecar_run("proxy", config=stream(server_doc(port, echo.addr, pki), CHARGE,
                                            DENY_ADMIN))
    via_order = client_sidecar(sidecar_run, pki, order, port)
    via_web = client_sidecar(sidecar_run, pki, web, port)
    via_ops = client_sidecar(sidecar_run, pki, ops, port)

    def call(through, method, path):
        return get(through, path, method=method, body=b"{}" if method == "POST" else None).status

    assert call(via_order, "POST", "/api/v1/charge") == 200
    assert call(via_order, "GET", "/api/v1/charge") == 403
    assert call(via_order, "POST", "/api/v1/refund") == 403
    assert call(via_order, "POST", "/api/v1/%63harge") == 200  # normalised first
    assert call(via_web, "POST", "/api/v1/charge") == 403
    # The namespace's own workloads may do anything but nobody else reaches /admin*.
    assert call(via_ops, "GET", "/admin/users") == 200
    assert call(via_order, "POST", "/admin/users") == 403
    assert call(via_order, "POST", "/api/v1/../../admin") == 403
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_authz_decisions_total", policy="charge", action="ALLOW",
                  result="allowed") == 3
    assert metric(m, "sidecar_authz_decisions_total", policy="admin-own-namespace",
                  action="DENY", result="denied") == 2
    echo.close()


RA = """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: payments
spec:
  selector:
    matchLabels: {{app: payment}}
  jwtRules:
  - issuer: "{iss}"
    audiences: [shop]
    jwksUri: "{uri}"
    fromHeaders:
    - name: x-token
      prefix: "Token "
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-user
      claim: sub
"""

REQUIRE_TOKEN = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-token
  namespace: payments
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
  - to:
    - operation:
        paths: ["/healthz"]
"""


def test_request_authentication_requires_a_token(sidecar_run, keys):
    echo = FakeUpstream(echo_handler)
    fake = FakeJWKS({"keys": [jwk(keys["rsa"], "k1")]})
    port = free_port()
    own = json.dumps({"listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                                     "routes": [{"name": "r", "cluster": "app"}]}],
                      "clusters": [{"name": "app", "endpoints": [echo.addr]}],
                      "workload": {"namespace": "payments", "labels": {"app": "payment"}},
                      "access_log": "off"})
    sidecar_run("proxy", config=stream(own, RA.format(iss=ISS, uri=fake.url), REQUIRE_TOKEN))
    t = token(keys["rsa"])
    hdr = [("X-Token", f"Token {t}")]
    assert wait_for(lambda: get(port, "/api", headers=hdr).status == 200)
    r = get(port, "/api", headers=hdr)
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert seen["x-user"] == "alice" and seen["x-token"] == f"Token {t}"
    assert get(port, "/api").status == 403  # no token, no request principal
    assert get(port, "/healthz").status == 200
    # Authorization: Bearer is not this rule's location: no identity, denied.
    assert get(port, "/api", headers=bearer(t)).status == 403
    # A token from another issuer in the rule's header: 401.
    bad = token(keys["rsa"], iss="https://evil.example")
    assert get(port, "/api", headers=[("X-Token", f"Token {bad}")]).status == 401
    fake.close()
    echo.close()


def test_translation_equals_the_native_document(run_cli, tmp_path):
    f = tmp_path / "istio.yaml"
    f.write_text(stream(json.dumps({"workload": {"namespace": "payments"}}), CHARGE,
                        DENY_ADMIN.replace("  name: admin-own-namespace\n",
                                           "  name: admin-own-namespace\n  annotations:\n"
                                           "    istio.io/dry-run: \"true\"\n"
                                           "    owner: team-a\n"),
                        RA.format(iss=ISS, uri="http://127.0.0.1:1/jwks.json")))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0, p.stderr
    assert "metadata.annotations.owner has no effect here" in p.stderr
    text = p.stdout[:p.stdout.rindex("}") + 1]
    out = json.loads(text)
    assert out["authorization"] == [
        {"name": "charge", "namespace": "payments", "match_labels": {"app": "payment"},
         "action": "ALLOW", "rules": [
             {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/order-service"]}}],
              "to": [{"operation": {"methods": ["POST"], "paths": ["/api/v1/charge"]}}]},
             {"from": [{"source": {"namespaces": ["payments"]}}]}]},
        {"name": "admin-own-namespace", "namespace": "payments", "dry_run": "true",
         "action": "DENY", "rules": [
             {"from": [{"source": {"not_namespaces": ["payments"]}}],
              "to": [{"operation": {"paths": ["/admin*"]}}]}]}]
    assert out["request_authentication"] == [
        {"name": "jwt", "namespace": "payments", "match_labels": {"app": "payment"},
         "jwt_rules": [{"issuer": ISS, "audiences": ["shop"],
                        "jwks_uri": "http://127.0.0.1:1/jwks.json",
                        "forward_original_token": "true",
                        "from_headers": [{"name": "x-token", "prefix": "Token "}],
                        "output_claim_to_headers": [{"header": "x-user", "claim": "sub"}]}]}]
    # What --print wrote loads back as a native file.
    g = tmp_path / "native.json"
    g.write_text(text)
    assert run_cli("proxy", "-c", str(g), "--check").returncode == 0


AP = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n"
RA_TOP = ("apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\n"
          "metadata: {name: r}\nspec:\n")

REFUSALS = [
    (AP + "  targetRef: {kind: Gateway, name: gw}\n",
     ":5:3: AuthorizationPolicy/a.spec: targetRef is not supported"),
    (AP + "  targetRefs: [{kind: Service, name: s}]\n", "targetRefs is not supported"),
    (AP + "  rules:\n  - from:\n    - source:\n        serviceAccounts: [x]\n",
     ":8:9: AuthorizationPolicy/a.spec.rules[0].from[0].source: serviceAccounts is not "
     "supported (use principals)"),
    (AP + "  rules:\n  - to:\n    - operation:\n        queryParams: [x]\n",
     ":8:9: AuthorizationPolicy/a.spec.rules[0].to[0].operation: queryParams is not supported"),
    (AP + "  action: MAYBE\n", "invalid value \"MAYBE\""),
    (AP + "  action: CUSTOM\n  provider: {name: nowhere}\n", "nowhere"),
    (AP + "  rules:\n  - when:\n    - key: request.time\n      values: [x]\n", "request.time"),
    (AP + "  rules: {from: []}\n", ":5:10: AuthorizationPolicy/a.spec.rules: expected a list"),
    (RA_TOP + "  jwtRules:\n  - issuer: x\n    jwks: '{}'\n    spaceDelimitedClaims: [scope]\n",
     ":8:5: RequestAuthentication/r.spec.jwtRules[0]: spaceDelimitedClaims is not supported"),
    (RA_TOP + "  jwtRules:\n  - issuer: x\n    fromHeaders: [{name: a, suffix: b}]\n",
     "RequestAuthentication/r.spec.jwtRules[0].fromHeaders[0]: suffix is not supported"),
    (RA_TOP + "  jwtRules:\n  - issuer: x\n", "jwks"),
    ("apiVersion: security.istio.io/v2\nkind: RequestAuthentication\nmetadata: {name: r}\n"
     "spec: {}\n", "RequestAuthentication security.istio.io/v2 is not supported"),
]


@pytest.mark.parametrize("doc,want", REFUSALS)
def test_refusals_name_the_field_and_its_position(run_cli, tmp_path, doc, want):
    f = tmp_path / "istio.yaml"
    f.write_text(doc)
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr
