# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: CORS (docs/cors.md). A real nginx upstream (which sets an Access-Control-Allow-
Origin and a Vary of its own, to see what the proxy replaces and merges); curl sends the
preflights and actual requests a browser would, over HTTP/1.1 and HTTP/2 (h2c with prior
knowledge). The native `cors` blocks on a listener and on routes; Envoy's cors filter with
Envoy's CORS sandbox configuration (per-filter CorsPolicy on the virtual host and routes) and
with the deprecated `cors` fields, merged field by field as Envoy reads them; Istio's documented
VirtualService corsPolicy and the deprecated allowOrigin; preflights answered before
authorization; refusals with their position and path at --check."""
import json
import subprocess

import pytest
from config_peers import Nginx, nginx_http
from conftest import free_port
from proxy_util import access_lines, metric, proxy_config
from test_proxy_envoy import bootstrap, static_cluster
from test_proxy_istio import own, service_entry, stream

CORS_FILTER = {"name": "envoy.filters.http.cors", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"


@pytest.fixture
def nginx(tmp_path):
    """nginx answering every method with 200 "from nginx", its own CORS header and Vary."""
    port = free_port()
    app = Nginx(tmp_path / "nginx", port=port)
    app.conf.write_text(nginx_http(app.root, f"""server {{
        listen 127.0.0.1:{port};
        location / {{
            add_header Access-Control-Allow-Origin https://nginx.example always;
            add_header Vary Accept-Encoding always;
            return 200 "from nginx";
        }}
    }}"""))
    app.start()
    yield app
    app.stop()


def curl(port, path, *extra, h2=False):
    """curl against the proxy: (status, [(name lower-cased, value)], body)."""
    cmd = ["curl", "-s", "-D", "-", "-o", "-", f"http://127.0.0.1:{port}{path}", *extra]
    if h2:
        cmd.insert(1, "--http2-prior-knowledge")
    out = subprocess.run(cmd, capture_output=True, timeout=20, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.append((k.strip().lower(), v.strip()))
    return int(lines[0].split()[1]), hdrs, body


def values(hdrs, name):
    return [v for k, v in hdrs if k == name]


def counts(sc, route, listener="web"):
    """The route's CORS counters: {"valid": n, "invalid": n, "answered": n, "forwarded": n}."""
    m = sc.get("/metrics")[1].decode()
    out = {r: metric(m, "sidecar_cors_origin_total", listener=listener, route=route, result=r)
           for r in ("valid", "invalid")}
    out.update({r: metric(m, "sidecar_cors_preflight_total", listener=listener, route=route,
                          result=r) for r in ("answered", "forwarded")})
    return out


def preflight(port, path, origin, method="PUT", headers=None, h2=False, extra=()):
    args = ["-X", "OPTIONS", "-H", f"Origin: {origin}",
            "-H", f"Access-Control-Request-Method: {method}", *extra]
    if headers:
        args += ["-H", f"Access-Control-Request-Headers: {headers}"]
    return curl(port, path, *args, h2=h2)


def actual(port, path, origin, h2=False):
    return curl(port, path, "-H", f"Origin: {origin}", h2=h2)


NATIVE_CORS = {
    "allow_origins": [{"exact": "https://app.example"}, {"suffix": ".shop.example"},
                      {"regex": "https://v[0-9]+\\.preview\\.example"},
                      {"prefix": "HTTPS://CASE", "ignore_case": True}],
    "allow_methods": "GET, PUT",
    "allow_headers": "*",
    "expose_headers": "x-request-id, x-version",
    "max_age": "24h",
    "allow_credentials": True,
    "allow_private_network_access": True,
}


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_native_policy_preflights_and_actual_requests(sidecar_run, nginx, h2):
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "web", "address": f"127.0.0.1:{port}", "http2": {"enabled": True},
          "cors": NATIVE_CORS,
          "routes": [
              {"name": "strict", "match": {"prefix": "/strict"}, "cluster": "app",
               "cors": {"allow_origins": [{"exact": "https://strict.example"}],
                        "forward_not_matching_preflights": False}},
              {"name": "open", "match": {"prefix": "/open"}, "cluster": "app",
               "cors": {"allow_origins": [{"exact": "*"}]}},
              {"name": "main", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [f"127.0.0.1:{nginx.port}"]}],
        access_log="stdout"))
    # A preflight from an allowed origin: answered by the proxy, nginx never sees it.
    st, hd, body = preflight(port, "/api", "https://app.example", headers="x-a, content-type",
                             h2=h2, extra=["-H", "Access-Control-Request-Private-Network: true"])
    assert st == 200 and body == b"" and not values(hd, "server")
    assert values(hd, "access-control-allow-origin") == ["https://app.example"]
    assert values(hd, "access-control-allow-credentials") == ["true"]
    assert values(hd, "access-control-allow-methods") == ["GET, PUT"]
    assert values(hd, "access-control-allow-headers") == ["x-a, content-type"]  # "*": echoed
    assert values(hd, "access-control-max-age") == ["86400"]
    assert values(hd, "access-control-allow-private-network") == ["true"]
    assert values(hd, "vary") == ["Origin, Access-Control-Request-Headers"]
    # Suffix, regex and case-insensitive prefix origins.
    for origin in ("https://eu.shop.example", "https://v12.preview.example",
                   "https://case-test.example"):
        st, hd, _ = preflight(port, "/api", origin, h2=h2)
        assert values(hd, "access-control-allow-origin") == [origin], origin
    # An actual request from an allowed origin: nginx's answer with the policy's headers, its
    # own Access-Control-Allow-Origin replaced, Vary: Origin added next to its Vary.
    st, hd, body = actual(port, "/api", "https://eu.shop.example", h2=h2)
    assert st == 200 and body == b"from nginx"
    assert values(hd, "access-control-allow-origin") == ["https://eu.shop.example"]
    assert values(hd, "access-control-allow-credentials") == ["true"]
    assert values(hd, "access-control-expose-headers") == ["x-request-id, x-version"]
    assert sorted(values(hd, "vary")) == ["Accept-Encoding", "Origin"]
    # An origin not allowed: no CORS headers of the policy (nginx's stays), Vary all the same.
    st, hd, body = actual(port, "/api", "https://evil.example", h2=h2)
    assert st == 200 and values(hd, "access-control-allow-origin") == ["https://nginx.example"]
    assert not values(hd, "access-control-allow-credentials")
    assert "Origin" in values(hd, "vary")
    # Its preflight goes upstream (forward_not_matching_preflights defaults to true).
    st, hd, body = preflight(port, "/api", "https://evil.example", h2=h2)
    assert st == 200 and body == b"from nginx"
    # The route's own policy replaces the listener's: it answers a foreign preflight itself,
    # without Access-Control-Allow-Origin (forward_not_matching_preflights: false).
    st, hd, body = preflight(port, "/strict", "https://evil.example", h2=h2)
    assert st == 200 and body == b"" and not values(hd, "access-control-allow-origin")
    st, hd, _ = preflight(port, "/strict", "https://app.example", h2=h2)
    assert not values(hd, "access-control-allow-origin")
    assert not values(hd, "access-control-allow-credentials")  # not the listener's
    # exact "*" allows every origin; the origin is echoed (as Envoy does).
    st, hd, _ = actual(port, "/open", "https://anything.example", h2=h2)
    assert values(hd, "access-control-allow-origin") == ["https://anything.example"]
    # A request without Origin is not a CORS request: no headers but Vary.
    st, hd, _ = curl(port, "/api", h2=h2)
    assert st == 200 and values(hd, "access-control-allow-origin") == ["https://nginx.example"]
    assert "Origin" in values(hd, "vary")
    assert counts(sc, "main") == {"valid": 5, "invalid": 2, "answered": 4, "forwarded": 1}
    assert counts(sc, "strict") == {"valid": 0, "invalid": 2, "answered": 2, "forwarded": 0}
    lines = access_lines(sc, at_least=11)
    answered = [x for x in lines if x["method"] == "OPTIONS"]
    assert answered[0]["status"] == 200 and answered[0]["flags"] == "CORS"
    assert [x["flags"] for x in answered].count("CORS") == 6


def test_local_answers_carry_the_headers_and_shadow_mode_counts_only(sidecar_run, run_cli,
                                                                     tmp_path):
    port, dead = free_port(), free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "web", "address": f"127.0.0.1:{port}", "http2": {"enabled": True},
          "grpc_web": True,
          "routes": [
              {"name": "shadow", "match": {"prefix": "/shadow"}, "cluster": "down",
               "cors": {"allow_origins": [{"exact": "https://app.example"}],
                        "filter_enabled": 0, "shadow_enabled": 100}},
              {"name": "down", "cluster": "down",
               "cors": {"allow_origins": [{"exact": "https://app.example"}],
                        "expose_headers": "x-a"}}]}],
        [{"name": "down", "endpoints": [f"127.0.0.1:{dead}"]}], access_log="off"))
    # The proxy's own 502 (nothing listens upstream) carries the CORS headers: the browser can
    # read it.
    for h2 in (False, True):
        st, hd, _ = actual(port, "/x", "https://app.example", h2=h2)
        assert st == 502
        assert values(hd, "access-control-allow-origin") == ["https://app.example"]
        assert values(hd, "access-control-expose-headers") == ["x-a"]
        assert values(hd, "vary") == ["Origin"]
    # A gRPC-Web call's trailers-only answer too (the browser reads grpc-status through it).
    for h2 in (False, True):
        st, hd, _ = curl(port, "/pkg.Svc/Call", "-X", "POST", "-H", "Origin: https://app.example",
                         "-H", "Content-Type: application/grpc-web+proto", "--data-binary",
                         "@/dev/null", h2=h2)
        assert st == 200 and values(hd, "grpc-status") == ["14"]
        assert values(hd, "access-control-allow-origin") == ["https://app.example"]
    # Shadow mode: the origin is checked and counted, nothing is answered or added.
    st, hd, _ = preflight(port, "/shadow", "https://app.example")
    assert st == 502 and not values(hd, "access-control-allow-origin")
    actual(port, "/shadow", "https://evil.example")
    assert counts(sc, "shadow") == {"valid": 1, "invalid": 1, "answered": 0, "forwarded": 0}


def test_preflights_the_route_answers_go_before_authorization(sidecar_run, nginx):
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}", "direction": "inbound",
          "cors": {"allow_origins": [{"exact": "https://app.example"}],
                   "allow_methods": "GET"},
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [f"127.0.0.1:{nginx.port}"]}],
        authorization=[{"name": "public-only", "action": "ALLOW",
                        "rules": [{"to": [{"operation": {"paths": ["/public*"]}}]}]}]))
    # A browser's preflight carries no credentials: the policy answers it before the check.
    st, hd, body = preflight(port, "/private", "https://app.example", method="GET")
    assert st == 200 and values(hd, "access-control-allow-origin") == ["https://app.example"]
    # The request itself is authorised as ever, and a preflight that would be forwarded too.
    st, hd, _ = actual(port, "/private", "https://app.example")
    assert st == 403 and values(hd, "access-control-allow-origin") == []
    st, _, _ = preflight(port, "/private", "https://evil.example", method="GET")
    assert st == 403
    st, hd, body = actual(port, "/public", "https://app.example")
    assert st == 200 and body == b"from nginx"
    assert values(hd, "access-control-allow-origin") == ["https://app.example"]


def envoy_sandbox(port, up_port):
    """Envoy's CORS sandbox backend configuration (typed_per_filter_config on the virtual host,
    routes that disable or restrict it), pointed at the test's nginx."""
    vh_policy = {"@type": POLICY,
                 "allow_origin_string_match": [{"safe_regex": {"regex": "\\*"}}],
                 "allow_methods": "GET",
                 "filter_enabled": {"default_value": {"numerator": 100,
                                                      "denominator": "HUNDRED"},
                                    "runtime_key": "cors.www.enabled"},
                 "shadow_enabled": {"default_value": {"numerator": 0,
                                                      "denominator": "HUNDRED"},
                                    "runtime_key": "cors.www.shadow_enabled"}}
    routes = [
        {"match": {"prefix": "/cors/open"}, "route": {"cluster": "backend_service"}},
        {"match": {"prefix": "/cors/disabled"}, "route": {"cluster": "backend_service"},
         "typed_per_filter_config": {"envoy.filters.http.cors": {
             "@type": POLICY, "filter_enabled": {"default_value": {
                 "numerator": 0, "denominator": "HUNDRED"}}}}},
        {"match": {"prefix": "/cors/restricted"}, "route": {"cluster": "backend_service"},
         "typed_per_filter_config": {"envoy.filters.http.cors": {
             "@type": POLICY,
             "allow_origin_string_match": [{"safe_regex": {"regex": ".*\\.envoyproxy\\.io"}}],
             "allow_methods": "GET"}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "backend_service"}}]
    return bootstrap(port, [{"name": "www", "domains": ["*"],
                             "typed_per_filter_config": {"envoy.filters.http.cors": vh_policy},
                             "routes": routes}],
                     [static_cluster("backend_service", f"127.0.0.1:{up_port}")],
                     hcm_extra={"codec_type": "AUTO", "http_filters": [CORS_FILTER, ROUTER]})


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_envoy_cors_sandbox(sidecar_run, run_cli, nginx, h2):
    port = free_port()
    sc = sidecar_run("proxy", config=json.dumps(envoy_sandbox(port, nginx.port), indent=1))
    for origin in ("https://www.envoyproxy.io", "https://example.com"):
        # open: any origin (a matcher that matches "*")
        st, hd, body = preflight(port, "/cors/open", origin, method="GET", h2=h2)
        assert st == 200 and body == b""
        assert values(hd, "access-control-allow-origin") == [origin]
        assert values(hd, "access-control-allow-methods") == ["GET"]
        # disabled: filter_enabled 0% on the route; nginx answers as it would without a proxy
        st, hd, body = preflight(port, "/cors/disabled", origin, method="GET", h2=h2)
        assert body == b"from nginx"
        assert values(hd, "access-control-allow-origin") == ["https://nginx.example"]
        # restricted: only *.envoyproxy.io
        st, hd, body = actual(port, "/cors/restricted", origin, h2=h2)
        want = origin if origin.endswith("envoyproxy.io") else "https://nginx.example"
        assert values(hd, "access-control-allow-origin") == [want]
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_cors_origin_total", listener="l", result="invalid") is not None
    # --check notes the runtime keys once each, and --print shows the merged policies.
    p = run_cli("proxy", "-c", str(sc.config_path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("runtime_key is accepted and has no effect here") == 2, p.stderr
    routes = json.loads(p.stdout[:p.stdout.rindex("}") + 1])["listeners"][0]["routes"]
    assert routes[1]["cors"]["filter_enabled"] == "0"
    assert routes[2]["cors"]["allow_origins"] == [{"regex": ".*\\.envoyproxy\\.io"}]
    assert routes[3]["cors"]["allow_origins"] == [{"regex": "\\*"}]


def test_envoy_deprecated_cors_fields_merge_field_by_field(sidecar_run, nginx):
    port = free_port()
    vh = {"name": "vh", "domains": ["*"],
          "cors": {"allow_origin_string_match": [{"exact": "https://app.example"}],
                   "allow_methods": "GET, POST", "max_age": "600",
                   "allow_credentials": True},
          "routes": [
              {"match": {"prefix": "/own"}, "route": {
                  "cluster": "app", "cors": {
                      "allow_origin_string_match": [{"prefix": "https://own."}],
                      "expose_headers": "x-own"}}},
              {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}
    cfg = bootstrap(port, [vh], [static_cluster("app", f"127.0.0.1:{nginx.port}")],
                    hcm_extra={"http_filters": [CORS_FILTER, ROUTER]})
    sidecar_run("proxy", config=json.dumps(cfg))
    # /own: the route's origins and expose_headers, the virtual host's methods, max_age and
    # credentials (Envoy reads each field from the route first).
    st, hd, _ = preflight(port, "/own", "https://own.example", method="POST")
    assert values(hd, "access-control-allow-origin") == ["https://own.example"]
    assert values(hd, "access-control-allow-methods") == ["GET, POST"]
    assert values(hd, "access-control-max-age") == ["600"]
    assert values(hd, "access-control-allow-credentials") == ["true"]
    st, hd, _ = actual(port, "/own", "https://app.example")
    assert values(hd, "access-control-allow-origin") == ["https://nginx.example"]
    st, hd, _ = actual(port, "/own", "https://own.example")
    assert values(hd, "access-control-expose-headers") == ["x-own"]
    st, hd, _ = actual(port, "/other", "https://app.example")
    assert values(hd, "access-control-allow-origin") == ["https://app.example"]
    assert not values(hd, "access-control-expose-headers")


ISTIO_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings-route
  namespace: shop
spec:
  hosts:
  - ratings.shop.svc.cluster.local
  http:
  - route:
    - destination:
        host: ratings.shop.svc.cluster.local
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      allowMethods:
      - POST
      - GET
      allowCredentials: false
      allowHeaders:
      - X-Foo-Bar
      maxAge: "24h"
"""


class NginxUp:
    """What service_entry needs of an upstream: its port."""

    def __init__(self, port):
        self.port = port


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_istio_documented_cors_policy(sidecar_run, run_cli, tmp_path, nginx, h2):
    port = free_port()
    out = json.loads(own(port))
    out["listeners"][0]["http2"] = {"enabled": True}
    sidecar_run("proxy", config=stream(json.dumps(out), service_entry(
        "ratings", 9080, [(NginxUp(nginx.port), {"app": "ratings"})]), ISTIO_VS))
    host = ["-H", "Host: ratings.shop.svc.cluster.local"]
    st, hd, body = preflight(port, "/", "https://example.com", method="POST", h2=h2, extra=host,
                             headers="X-Foo-Bar")
    assert st == 200 and body == b""
    assert values(hd, "access-control-allow-origin") == ["https://example.com"]
    assert values(hd, "access-control-allow-methods") == ["POST,GET"]
    assert values(hd, "access-control-allow-headers") == ["X-Foo-Bar"]
    assert values(hd, "access-control-max-age") == ["86400"]
    assert not values(hd, "access-control-allow-credentials")
    st, hd, body = curl(port, "/", "-H", "Origin: https://example.com", *host, h2=h2)
    assert body == b"from nginx"
    assert values(hd, "access-control-allow-origin") == ["https://example.com"]
    # Not allowed: the preflight goes on to the service (unmatchedPreflights FORWARD, default).
    st, hd, body = preflight(port, "/", "https://other.example", h2=h2, extra=host)
    assert body == b"from nginx"


def test_istio_deprecated_allow_origin_and_ignore(run_cli, tmp_path):
    vs = ISTIO_VS.replace("      allowOrigins:\n      - exact: https://example.com\n",
                          "      allowOrigin:\n      - https://a.example\n      - \"*\"\n"
                          "      unmatchedPreflights: IGNORE\n")
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), service_entry(
        "ratings", 9080, [(NginxUp(free_port()), {"app": "ratings"})]), vs))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0, p.stderr
    routes = json.loads(p.stdout[:p.stdout.rindex("}") + 1])["listeners"][0]["routes"]
    cors = [r["cors"] for r in routes if "cors" in r][0]
    assert cors["allow_origins"] == [{"exact": "https://a.example"}, {"exact": "*"}]
    assert cors["forward_not_matching_preflights"] == "false"
    assert cors["max_age"] == "24h"


def envoy_refusal(port, mutate):
    cfg = envoy_sandbox(port, 9)
    mutate(cfg)
    return json.dumps(cfg, indent=1)


HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
VH = lambda c: c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][  # noqa
    "typed_config"]["route_config"]["virtual_hosts"][0]
HCM = lambda c: c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][  # noqa
    "typed_config"]


def fault_first(c):
    HCM(c)["http_filters"].insert(0, {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}})


ENVOY_REFUSALS = [
    (lambda c: VH(c)["typed_per_filter_config"]["envoy.filters.http.cors"].update(
        allow_origin_string_match=[{"safe_regex": {"regex": "("}}]),
     HCM_PATH + ".route_config.virtual_hosts[0].typed_per_filter_config.envoy.filters.http.cors"
     ".allow_origin_string_match[0]: "),
    (lambda c: VH(c)["typed_per_filter_config"]["envoy.filters.http.cors"].update(
        allow_origin_string_match=[{"contains": "x", "exact": "y"}]),
     "allow_origin_string_match[0]: one of exact, prefix, suffix, contains, safe_regex"),
    (lambda c: VH(c)["typed_per_filter_config"]["envoy.filters.http.cors"].update(
        allow_origin=["https://x"]),
     HCM_PATH + ".route_config.virtual_hosts[0].typed_per_filter_config.envoy.filters.http.cors"
     ": allow_origin is not supported"),
    (lambda c: VH(c)["typed_per_filter_config"]["envoy.filters.http.cors"].update(
        max_age="1d"), "max_age must be a number of seconds"),
    (lambda c: VH(c)["typed_per_filter_config"]["envoy.filters.http.cors"].update(
        {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig"}),
     "FilterConfig is not supported here"),
    (lambda c: VH(c)["typed_per_filter_config"].update(
        {"envoy.filters.http.ext_authz": {"disabled": True}}),
     HCM_PATH + ".route_config.virtual_hosts[0].typed_per_filter_config"
     ".envoy.filters.http.ext_authz: per-route configuration of envoy.filters.http.ext_authz "
     "is not supported"),
    (fault_first, HCM_PATH + ".http_filters[1]: the cors filter must come before "
                             "envoy.filters.http.fault"),
    (lambda c: HCM(c)["http_filters"].insert(0, CORS_FILTER), "one cors filter only"),
    (lambda c: HCM(c)["http_filters"][0]["typed_config"].update(x=1),
     HCM_PATH + ".http_filters[0].typed_config: x is not supported"),
]


@pytest.mark.parametrize("mutate,want", ENVOY_REFUSALS)
def test_envoy_refusals_name_the_field(run_cli, tmp_path, mutate, want):
    f = tmp_path / "envoy.json"
    f.write_text(envoy_refusal(free_port(), mutate))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr


def test_envoy_policy_without_the_filter_is_noted(run_cli, tmp_path):
    cfg = envoy_sandbox(free_port(), 9)
    HCM(cfg)["http_filters"] = [ROUTER]
    f = tmp_path / "envoy.json"
    f.write_text(json.dumps(cfg, indent=1))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0, p.stderr
    assert "this CORS policy has no effect: the connection manager has no " \
           "envoy.filters.http.cors filter (as in Envoy)" in p.stderr
    assert '"cors": {' not in p.stdout


ISTIO_REFUSALS = [
    ("      allowCredentials: false\n", "      allowCredentials: false\n      foo: 1\n",
     "VirtualService/ratings-route.spec.http[0].corsPolicy: foo is not supported"),
    ("- exact: https://example.com", "- exact: https://example.com\n        prefix: https://",
     "VirtualService/ratings-route.spec.http[0].corsPolicy.allowOrigins[0]: one of exact, "
     "prefix and regex"),
    ("- exact: https://example.com", "- regex: \"(\"",
     "VirtualService/ratings-route.spec.http[0].corsPolicy.allowOrigins[0]"),
    ("      maxAge: \"24h\"\n", "      maxAge: \"24h\"\n      unmatchedPreflights: DROP\n",
     "unmatchedPreflights DROP is not one of FORWARD, IGNORE"),
    ("- exact: https://example.com", "- suffix: .example.com",
     "VirtualService/ratings-route.spec.http[0].corsPolicy.allowOrigins[0]: suffix is not "
     "supported"),
]


@pytest.mark.parametrize("old,new,want", ISTIO_REFUSALS)
def test_istio_refusals_name_the_field(run_cli, tmp_path, old, new, want):
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), service_entry(
        "ratings", 9080, [(NginxUp(free_port()), {"app": "ratings"})]),
        ISTIO_VS.replace(old, new)))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr


NATIVE_REFUSALS = [
    ({"allow_origins": [{"exact": "a", "prefix": "b"}]},
     "allow_origins[0]: use one of exact, prefix, suffix, contains and regex"),
    ({"allow_origins": [{"regex": "("}]}, "allow_origins[0]: regex \"(\""),
    ({"allow_origins": [{"regex": "a", "ignore_case": True}]},
     "allow_origins[0]: ignore_case does not apply to regex"),
    ({"max_age": "forever"}, "max_age \"forever\" is not a duration"),
    ({"allow_methods": "GET\u0001"}, "allow_methods holds a control character"),
    ({"filter_enabled": 150}, "150 is out of range [0, 100]"),
    ({"allow_origin": []}, "allow_origin"),
]


@pytest.mark.parametrize("cors,want", NATIVE_REFUSALS)
def test_native_refusals(run_cli, tmp_path, cors, want):
    f = tmp_path / "p.yaml"
    f.write_text(proxy_config([{"name": "web", "address": f"127.0.0.1:{free_port()}",
                                "routes": [{"name": "r", "cluster": "app", "cors": cors}]}],
                              [{"name": "app", "endpoints": ["127.0.0.1:9"]}]))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:1:"), p.stderr  # at the block
