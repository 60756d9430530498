# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy -c envoy.yaml: Envoy's authorization filters. envoy.filters.http.rbac over
mutual TLS (certificates made with openssl, curl as the client): only one SPIFFE principal may
POST /api/v1/charge; DENY policies with header matches and negated source addresses, shadow rules
counted as dry runs; envoy.filters.http.jwt_authn with PyJWT tokens: a rule that requires a
provider denies requests without its token, allow_missing lets them pass, invalid tokens are 401;
the connection manager's normalize_path, merge_slashes and path_with_escaped_slashes_action
decide what the upstream sees; what has no equivalent is refused with its position and path."""
import json

import jwt
import pytest

from conftest import free_port
from proxy_util import FakeUpstream, echo_handler, get, metric
from test_proxy_envoy import bootstrap, downstream_tls, static_cluster
from test_proxy_extauthz import FakeOAuth2Proxy
from test_proxy_jwt import ISS, bearer, jwk, keys, token  # noqa: F401 - keys: fixture
from tls_util import curl, make_leaf, pki  # noqa: F401 - pki is a fixture

T = "type.googleapis.com/envoy.extensions.filters.http."
RBAC = T + "rbac.v3.RBAC"
JWT = T + "jwt_authn.v3.JwtAuthentication"
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": T + "router.v3.Router"}}
VHS = [{"name": "v", "domains": ["*"], "routes": [
    {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


def envoy(port, upstream, filters, hcm_extra=None):
    cfg = bootstrap(port, VHS, [static_cluster("app", upstream)],
                    hcm_extra={"http_filters": filters + [ROUTER], **(hcm_extra or {})})
    return json.dumps(cfg, indent=1) + "\n"


def exact(s):
    return {"exact": s}


CHARGE_RBAC = {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC, "rules": {
    "action": "ALLOW", "policies": {
        "charge": {
            "permissions": [{"and_rules": {"rules": [
                {"header": {"name": ":method", "string_match": exact("POST")}},
                {"url_path": {"path": exact("/api/v1/charge")}}]}}],
            "principals": [{"authenticated": {"principal_name": exact(
                "spiffe://cluster.local/ns/shop/sa/order-service")}}]},
        "health": {
            "permissions": [{"url_path": {"path": {"prefix": "/healthz"}}}],
            "principals": [{"any": True}]}}}}}


def test_rbac_one_principal_may_charge_over_mtls(sidecar_run, pki):
    echo = FakeUpstream(echo_handler)
    port = free_port()
    cfg = json.loads(envoy(port, echo.addr, [CHARGE_RBAC]))
    chain = cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = downstream_tls(pki)
    chain["filter_chain_match"] = {"transport_protocol": "tls"}
    sc = sidecar_run("proxy", config=json.dumps(cfg))
    order = make_leaf(pki, "order", "URI:spiffe://cluster.local/ns/shop/sa/order-service")
    web = make_leaf(pki, "web", "URI:spiffe://cluster.local/ns/shop/sa/web")

    def call(cert, method, path):
        rc, _, code = curl(f"https://localhost:{port}{path}", "-X", method, "--cacert",
                           str(pki / "ca.pem"), "--cert", str(cert[0]), "--key", str(cert[1]))
        return code

    assert call(order, "POST", "/api/v1/charge") == 200
    assert call(order, "GET", "/api/v1/charge") == 403
    assert call(order, "POST", "/api/v1/refund") == 403
    assert call(web, "POST", "/api/v1/charge") == 403
    assert call(web, "GET", "/healthz") == 200
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_authz_decisions_total", policy="charge", action="ALLOW",
                  result="allowed") == 1
    echo.close()


def test_rbac_deny_header_not_id_and_shadow(sidecar_run):
    echo = FakeUpstream(echo_handler)
    port = free_port()
    deny = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": RBAC,
        "rules": {"action": "DENY", "policies": {
            "admin-from-outside": {
                "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
                "principals": [{"not_id": {"direct_remote_ip": {
                    "address_prefix": "10.0.0.0", "prefix_len": 8}}}]},
            "debug-header": {
                "permissions": [{"header": {"name": "x-debug", "present_match": True}},
                                {"destination_port": 1}],
                "principals": [{"any": True}]}}},
        "shadow_rules": {"action": "ALLOW", "policies": {
            "only-get": {"permissions": [{"header": {"name": ":method",
                                                     "exact_match": "GET"}}],
                         "principals": [{"any": True}]}}}}}
    sc = sidecar_run("proxy", config=envoy(port, echo.addr, [deny]))
    assert get(port, "/admin/x").status == 403
    assert get(port, "/x/../admin").status == 403  # normalised before the decision
    assert get(port, "/public").status == 200
    assert get(port, "/public", headers=[("X-Debug", "1")]).status == 403
    assert get(port, "/public", method="POST", body=b"x").status == 200  # shadow: not enforced
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_authz_decisions_total", policy="admin-from-outside",
                  action="DENY", result="denied") == 2
    # The shadow ALLOW set matches no POST: its (unenforced) default decision is a denial.
    assert metric(m, "sidecar_authz_decisions_total", policy="", action="ALLOW",
                  result="dry_run_denied") == 1
    echo.close()


def test_jwt_authn_requires_and_allow_missing(sidecar_run, keys):
    echo = FakeUpstream(echo_handler)
    port = free_port()
    f = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": JWT,
        "providers": {"shop": {
            "issuer": ISS, "audiences": ["shop"],
            "local_jwks": {"inline_string": json.dumps({"keys": [jwk(keys["rsa"], "k1")]})},
            "forward": True,
            "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}]}},
        "rules": [
            {"match": {"prefix": "/healthz"}},
            {"match": {"prefix": "/api"}, "requires": {"provider_name": "shop"}},
            {"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "shop"}, {"allow_missing": {}}]}}}]}}
    sidecar_run("proxy", config=envoy(port, echo.addr, [f]))
    good = token(keys["rsa"])
    r = get(port, "/api/x", headers=bearer(good))
    assert r.status == 200
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert seen["x-user"] == "alice" and seen["authorization"] == f"Bearer {good}"
    assert get(port, "/api/x").status == 403  # required: no token, no entry
    assert get(port, "/healthz").status == 200
    assert get(port, "/other").status == 200  # allow_missing
    bad = jwt.encode({"iss": ISS, "sub": "x", "aud": "shop"}, None, algorithm="none")
    assert get(port, "/other", headers=bearer(bad)).status == 401
    assert get(port, "/api/x", headers=bearer(token(keys["rsa"], aud="else"))).status == 401
    echo.close()


def test_ext_authz_http_service_against_fake_oauth2_proxy(sidecar_run):
    echo = FakeUpstream(echo_handler)
    fake = FakeOAuth2Proxy()
    port = free_port()
    f = {"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": T + "ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "http_service": {
            "server_uri": {"uri": "http://oauth2", "cluster": "oauth2", "timeout": "0.5s"},
            "path_prefix": "/oauth2/auth",
            "authorization_request": {"allowed_headers": {"patterns": [{"exact": "cookie"}]}},
            "authorization_response": {"allowed_upstream_headers": {"patterns": [
                {"exact": "x-auth-request-user"}]}}}}}
    cfg = json.loads(envoy(port, echo.addr, [f]))
    cfg["static_resources"]["clusters"].append(static_cluster("oauth2", f"127.0.0.1:{fake.port}"))
    sidecar_run("proxy", config=json.dumps(cfg))
    r = get(port, "/app/x")
    assert r.status == 401 and r.body == b"Unauthorized"
    assert not echo.requests
    r = get(port, "/app/x", headers=[("Cookie", "_oauth2_proxy=alice"),
                                     ("X-Auth-Request-User", "mallory")])
    assert r.status == 200
    users = [v for k, v in r.json()["headers"] if k.lower() == "x-auth-request-user"]
    assert users == ["alice"]
    assert fake.seen[-1][1] == "/oauth2/auth/app/x"
    fake.close()
    echo.close()


@pytest.mark.parametrize("opts,sent,seen", [
    ({"normalize_path": True, "merge_slashes": True,
      "path_with_escaped_slashes_action": "REJECT_REQUEST"}, "/a//b/../c", "/a/c"),
    ({"normalize_path": True, "merge_slashes": True,
      "path_with_escaped_slashes_action": "REJECT_REQUEST"}, "/a%2Fb", 400),
    ({"normalize_path": True}, "/a//b/./c", "/a//b/c"),
    ({"normalize_path": False, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
     "/a/%2f/../b", "/a/%2f/../b"),
    ({"normalize_path": True, "merge_slashes": True,
      "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"}, "/a%2F%2Fb", "/a/b"),
])
def test_path_options_of_the_connection_manager(sidecar_run, opts, sent, seen):
    echo = FakeUpstream(echo_handler)
    port = free_port()
    sidecar_run("proxy", config=envoy(port, echo.addr, [], opts))
    r = get(port, sent)
    if isinstance(seen, int):
        assert r.status == seen
    else:
        assert r.status == 200 and r.json()["target"] == seen
    echo.close()


def refusals():
    def rb(policy, action="ALLOW", **tc):
        return [{"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": RBAC, "rules": {"action": action, "policies": {"p": policy}}, **tc}}]
    anyone = [{"any": True}]
    allp = [{"any": True}]
    f0 = f"{HCM_PATH}.http_filters[0].typed_config"
    return [
        (rb({"permissions": allp, "principals": [{"authenticated": {"principal_name": {
            "safe_regex": {"regex": ".*"}}}}]}), None,
         f"{f0}.rules.policies.p.principals[0].authenticated.principal_name: safe_regex is not "
         "supported"),
        (rb({"permissions": [{"header": {"name": ":path", "exact_match": "/a"}}],
             "principals": anyone}), None, "header :path is not supported (use url_path"),
        (rb({"permissions": allp, "principals": [{"and_ids": {"ids": [
            {"authenticated": {"principal_name": exact("spiffe://a")}},
            {"authenticated": {"principal_name": exact("spiffe://b")}}]}}]}), None,
         "principals twice in one AND is not supported"),
        (rb({"permissions": allp, "principals": [{"remote_ip": {
            "address_prefix": "1.2.3.4", "prefix_len": 32}}]}), None,
         "remote_ip needs the connection manager's use_remote_address: true"),
        (rb({"permissions": allp, "principals": [{"authenticated": {"principal_name": exact(
            "CN=client")}}]}), None, "principal_name must match a SPIFFE ID"),
        (rb({"permissions": allp, "principals": [{"authenticated": {"principal_name": {
            "suffix": ".example.com"}}}]}, action="DENY"), None,
         "a suffix without '/' is not supported"),
        (rb({"permissions": allp, "principals": anyone}, action="MAYBE"), None,
         "action MAYBE is not one of ALLOW, DENY, LOG"),
        (rb({"permissions": allp, "principals": anyone, "condition": {}}), None,
         f"{f0}.rules.policies.p: condition is not supported"),
        (rb({"permissions": [{"not_rule": {"or_rules": {"rules": allp}}}],
             "principals": anyone}), None, "not_rule of or_rules is not supported"),
        ([{"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": JWT, "providers": {"p": {"issuer": "i", "local_jwks": {
                "inline_string": "{}"}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing_or_failed": {}}}]}}],
         None, "allow_missing_or_failed is not supported"),
        ([{"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": JWT, "providers": {"p": {"issuer": "i", "subjects": {}}}}}], None,
         f"{f0}.providers.p: subjects is not supported"),
        ([], {"merge_slashes": True}, "merge_slashes without normalize_path is not supported"),
        ([], {"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT"},
         "path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT is not one of "
         "IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_FORWARD"),
        ([{"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": T + "ext_authz.v3.ExtAuthz", "grpc_service": {}}}], None,
         f"{f0}: grpc_service is not supported"),
        ([{"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": T + "ext_authz.v3.ExtAuthz", "http_service": {"server_uri": {
                "uri": "http://x", "cluster": "nowhere", "timeout": "1s"}}}}], None,
         f"{f0}.http_service.server_uri: no cluster nowhere"),
    ]


@pytest.mark.parametrize("filters,hcm,want", refusals())
def test_refusals_name_the_field_and_its_position(run_cli, tmp_path, filters, hcm, want):
    f = tmp_path / "envoy.json"
    f.write_text(envoy(free_port(), "127.0.0.1:1", filters, hcm))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr


def test_rbac_on_two_listeners_is_refused(run_cli, tmp_path):
    cfg = json.loads(envoy(free_port(), "127.0.0.1:1", [CHARGE_RBAC]))
    ls = cfg["static_resources"]["listeners"]
    second = json.loads(json.dumps(ls[0]))
    second["name"] = "l2"
    second["address"]["socket_address"]["port_value"] = free_port()
    ls.append(second)
    f = tmp_path / "envoy.json"
    f.write_text(json.dumps(cfg, indent=1))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1 and "authorization filters on more than one listener" in p.stderr, \
        p.stderr


def test_print_shows_the_native_policies(run_cli, tmp_path):
    f = tmp_path / "envoy.json"
    f.write_text(envoy(free_port(), "127.0.0.1:1", [CHARGE_RBAC],
                       {"normalize_path": True, "merge_slashes": True}))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    assert out["path_normalization"] == "merge_slashes" and out["escaped_slashes"] == "keep"
    assert out["authorization"][0] == {
        "name": "charge", "action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/order-service"]}}],
            "to": [{"operation": {"methods": ["POST"], "paths": ["/api/v1/charge"]}}]}]}
