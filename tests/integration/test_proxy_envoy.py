# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy -c envoy.yaml: an Envoy v3 bootstrap runs as it is. The sidecar tutorials'
envoy.yaml (listener -> http_connection_manager -> route to local_app -> STATIC cluster) serves a
real nginx; the same bootstrap as JSON; virtual hosts by domain in Envoy's order of precedence;
matches, weighted clusters, retries, timeouts and header mutations against fake upstreams;
outlier detection and TLS on both sides; --check --print shows the derived configuration; every
field without an equivalent is refused with its position and Envoy path, and statistics-only
fields are accepted with a note."""
import http.client
import json

import pytest

from config_peers import Nginx, nginx_conf
from conftest import free_port
from proxy_util import (Client, FakeUpstream, curl_head, echo_handler, flaky_upstream, get,
                        metric, respond, wait_for)
from tls_util import curl, pki  # noqa: F401 (fixture)

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# The sidecar tutorials' envoy.yaml, as written (only the two ports are chosen by the test).
TUTORIAL = """\
static_resources:
  listeners:
  - name: listener_0
    address:
      socket_address: { address: 127.0.0.1, port_value: LISTEN_PORT }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          route_config:
            name: local_route
            virtual_hosts:
            - name: local_service
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: local_app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: local_app
    connect_timeout: 0.25s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: local_app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: APP_PORT }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
"""


def sa(addr):
    host, port = addr.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def bootstrap(port, virtual_hosts, clusters, hcm_extra=None, listener_extra=None, **top):
    """An Envoy bootstrap (as a dict) with one listener on <port>."""
    hcm = {"@type": HCM, "stat_prefix": "ingress", "route_config": {
        "name": "local", "virtual_hosts": virtual_hosts},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}]}
    hcm.update(hcm_extra or {})
    listener = {"name": "l", "address": sa(f"127.0.0.1:{port}"), "filter_chains": [
        {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": hcm}]}]}
    listener.update(listener_extra or {})
    return {"static_resources": {"listeners": [listener], "clusters": clusters}, **top}


def static_cluster(name, *addrs, **extra):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": sa(a)}} for a in addrs]}]}, **extra}


def get_host(port, host, path="/"):
    """GET with the Host header <host> (http.client sends no Host of its own then)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def named(name, status=200):
    return FakeUpstream(lambda up, conn, req: respond(conn, status, name.encode()))


def test_tutorial_envoy_yaml_serves_a_real_nginx(sidecar_run, run_cli, tmp_path):
    app = Nginx(tmp_path / "nginx", port=free_port())
    app.conf.write_text(nginx_conf(app.root, app.port, "hello from the app"))
    app.start()
    try:
        port = free_port()
        text = TUTORIAL.replace("LISTEN_PORT", str(port)).replace("APP_PORT", str(app.port))
        sc = sidecar_run("proxy", config=text)
        r = get(port, "/anything")
        assert r.status == 200 and r.body == b"hello from the app"
        # Envoy's defaults where ours differ are written out, and the derived config is shown.
        p = run_cli("proxy", "-c", str(sc.config_path), "--check", "--print")
        assert p.returncode == 0, p.stderr
        derived = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
        assert derived["admin"] == "127.0.0.1:9901"
        route = derived["listeners"][0]["routes"][0]
        assert route["cluster"] == "local_app" and route["timeout"] == "15s"
        assert route["retry_policy"] == {"num_retries": "0"}
        assert derived["clusters"][0] == {"name": "local_app", "connect_timeout": "250ms",
                                          "endpoints": [f"127.0.0.1:{app.port}"]}
        assert "stat_prefix is accepted and has no effect here" in p.stderr
        assert ":11:11: static_resources.listeners[0].filter_chains[0].filters[0]" \
               ".typed_config: stat_prefix" in p.stderr
        # The derived configuration runs as our own format, unchanged in behaviour.
        own = tmp_path / "own.json"
        own.write_text(p.stdout[:p.stdout.rindex("}") + 1])
        assert run_cli("proxy", "-c", str(own), "--check").returncode == 0
        metrics = sc.get("/metrics")[1].decode()
        assert metric(metrics, "sidecar_requests_total", listener="listener_0",
                      cluster="local_app", code="200") == 1
    finally:
        app.stop()


def test_json_bootstrap(sidecar_run, echo_up):
    port = free_port()
    cfg = bootstrap(port, [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}],
        [static_cluster("app", echo_up.addr)])
    sidecar_run("proxy", config=json.dumps(cfg, indent=2))
    r = get(port, "/json")
    assert r.status == 200 and json.loads(r.body)["target"] == "/json"


@pytest.fixture
def echo_up():
    up = FakeUpstream(echo_handler)
    yield up
    up.close()


def test_virtual_hosts_in_envoy_precedence(sidecar_run):
    exact, suffix, prefix, anyh = named("exact"), named("suffix"), named("prefix"), named("any")
    port = free_port()
    vhs = [{"name": "any", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "any"}}]},
           {"name": "prefix", "domains": ["api.*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "prefix"}}]},
           {"name": "suffix", "domains": ["*.example.com"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "suffix"}}]},
           {"name": "exact", "domains": ["api.example.com", "www.example.com:8080"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "exact"}}]}]
    clusters = [static_cluster(n, u.addr) for n, u in
                (("exact", exact), ("suffix", suffix), ("prefix", prefix), ("any", anyh))]
    sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, clusters)))
    for host, want in (("api.example.com", b"exact"), ("API.example.com:80", b"exact"),
                       ("www.example.com:8080", b"exact"), ("www.example.com", b"suffix"),
                       ("shop.example.com", b"suffix"), ("api.other.org", b"prefix"),
                       ("other.org", b"any")):
        assert get_host(port, host) == (200, want), host
    for u in (exact, suffix, prefix, anyh):
        u.close()


def test_route_matches_weights_and_header_mutations(sidecar_run, echo_up):
    a, b = named("a"), named("b")
    port = free_port()
    vhs = [{"name": "v", "domains": ["*"],
            "request_headers_to_add": [{"header": {"key": "x-vhost", "value": "yes"}}],
            "routes": [
                {"match": {"path": "/exact"}, "route": {"cluster": "a"}},
                {"match": {"safe_regex": {"google_re2": {}, "regex": "/re/[0-9]+"}},
                 "route": {"cluster": "b"}},
                {"match": {"prefix": "/h", "headers": [
                    {"name": "x-canary", "string_match": {"exact": "1"}}]},
                 "route": {"cluster": "b"}},
                {"match": {"prefix": "/split"}, "route": {"weighted_clusters": {"clusters": [
                    {"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}}},
                {"match": {"prefix": "/old/"},
                 "route": {"cluster": "echo", "prefix_rewrite": "/new/",
                           "host_rewrite_literal": "app.internal"},
                 "request_headers_to_add": [
                     {"header": {"key": "x-set", "value": "1"}, "append": False}],
                 "request_headers_to_remove": ["x-drop"],
                 "response_headers_to_add": [{"header": {"key": "x-resp", "value": "r"}}]},
                {"match": {"prefix": "/"}, "route": {"cluster": "echo"}}]}]
    clusters = [static_cluster("a", a.addr), static_cluster("b", b.addr),
                static_cluster("echo", echo_up.addr)]
    sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, clusters)))
    assert get(port, "/exact").body == b"a"
    assert get(port, "/re/42").body == b"b"
    assert get(port, "/h", headers=[("x-canary", "1")]).body == b"b"
    assert get(port, "/h").status == 200 and b"target" in get(port, "/h").body
    c = Client(port)
    seen = {c.request(path="/split").body for _ in range(60)}
    c.close()
    assert seen == {b"a", b"b"}
    r = get(port, "/old/x", headers=[("x-drop", "1"), ("x-set", "0")])
    body = json.loads(r.body)
    hdrs = {k.lower(): v for k, v in body["headers"]}
    assert body["target"] == "/new/x"
    assert hdrs["host"] == "app.internal"
    assert hdrs["x-set"] == "1" and hdrs["x-vhost"] == "yes" and "x-drop" not in hdrs
    assert r.header("x-resp") == "r"
    for u in (a, b):
        u.close()


def test_retry_policy_and_timeout(sidecar_run):
    up, calls = flaky_upstream()
    port = free_port()
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"path": "/slow"}, "route": {"cluster": "up", "timeout": "0.3s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "up", "retry_policy": {
            "retry_on": "5xx", "num_retries": 3,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.02s"}}}}]}]
    sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, [static_cluster("up", up.addr)])))
    r = get(port, "/retry")
    assert r.status == 200 and len(calls) == 3
    r = get(port, "/slow")
    assert r.status == 504
    up.close()


def test_fault_and_local_ratelimit_filters(sidecar_run, echo_up):
    """envoy.filters.http.fault aborts its share of every route's requests; local_ratelimit is the
    listener's token bucket: max_tokens at once, then 429."""
    port = free_port()
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    fault = {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 418, "percentage": {"numerator": 500000,
                                                     "denominator": "MILLION"}}}}
    rl = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
                 "LocalRateLimit",
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": 40, "tokens_per_fill": 1, "fill_interval": "3600s"},
        "filter_enabled": {"runtime_key": "rl_enabled",
                           "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"runtime_key": "rl_enforced",
                            "default_value": {"numerator": 100, "denominator": "HUNDRED"}}}}
    cfg = bootstrap(port, vhs, [static_cluster("app", echo_up.addr)])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    hcm["http_filters"][:0] = [rl, fault]
    sidecar_run("proxy", config=json.dumps(cfg))
    c = Client(port)
    codes = [c.request(path="/").status for _ in range(60)]
    c.close()
    assert codes[40:] == [429] * 20
    served = codes[:40]
    assert set(served) == {200, 418} and 8 <= served.count(418) <= 32, codes


def test_outlier_detection_ejects_the_failing_endpoint(sidecar_run):
    good, bad = named("good"), named("bad", status=500)
    port = free_port()
    cl = static_cluster("app", good.addr, bad.addr, outlier_detection={
        "consecutive_5xx": 1, "base_ejection_time": "30s", "max_ejection_percent": 100})
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    sc = sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, [cl])))
    bodies = [get(port, "/").body for _ in range(20)]
    assert bodies.count(b"bad") == 1, bodies
    assert metric(sc.get("/metrics")[1].decode(), "sidecar_outlier_ejections_total",
                  cluster="app") == 1
    good.close()
    bad.close()


def test_http_health_check_takes_a_failing_endpoint_out(sidecar_run):
    def app(name, healthy):
        def handler(up, conn, req):
            if req.target == "/healthz":
                return respond(conn, 200 if healthy else 503, b"")
            return respond(conn, 200, name.encode())
        return FakeUpstream(handler)

    good, sick = app("good", True), app("sick", False)
    port = free_port()
    cl = static_cluster("app", good.addr, sick.addr, health_checks=[{
        "timeout": "1s", "interval": "0.05s", "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz",
                              "expected_statuses": [{"start": 200, "end": 300}]}}])
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, [cl])))
    assert wait_for(lambda: any(r.target == "/healthz" for r in sick.requests))
    assert wait_for(lambda: {get(port, "/").body for _ in range(10)} == {b"good"})
    good.close()
    sick.close()


def downstream_tls(pki):
    """A transport_socket with a DownstreamTlsContext (server.pem) requiring client
    certificates of the test PKI."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(pki / "server.pem")},
                                  "private_key": {"filename": str(pki / "server.key")}}],
            "validation_context": {"trusted_ca": {"filename": str(pki / "ca.pem")}}}}}


def test_downstream_and_upstream_tls(sidecar_run, pki, echo_up):
    """A listener with a DownstreamTlsContext requiring client certificates, and a second
    sidecar whose cluster originates mutual TLS to it with an UpstreamTlsContext."""
    front, back = free_port(), free_port()
    down = {"transport_socket": downstream_tls(pki)}
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    cfg = bootstrap(back, vhs, [static_cluster("app", echo_up.addr)])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0].update(down)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filter_chain_match"] = {
        "transport_protocol": "tls"}
    sidecar_run("proxy", config=json.dumps(cfg))
    rc, _, code = curl(f"https://localhost:{back}/", "--cacert", str(pki / "ca.pem"))
    assert code != 200  # no client certificate
    up_tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext",
        "sni": "localhost",
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(pki / "client.pem")},
                                  "private_key": {"filename": str(pki / "client.key")}}],
            "validation_context": {"trusted_ca": {"filename": str(pki / "ca.pem")}}}}}
    cfg2 = bootstrap(front, vhs, [static_cluster("app", f"127.0.0.1:{back}",
                                                 transport_socket=up_tls)])
    sidecar_run("proxy", config=json.dumps(cfg2))
    r = get(front, "/through")
    assert r.status == 200 and json.loads(r.body)["target"] == "/through"


LUA = {"name": "envoy.filters.http.lua", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}


def refusal_cases(port):
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    app = [static_cluster("app", "127.0.0.1:1")]
    base = bootstrap(port, vhs, app)
    hcm_path = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
    cases = []
    c = json.loads(json.dumps(base))
    c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"].insert(0, LUA)
    cases.append((c, f"{hcm_path}.http_filters[0]: envoy.filters.http.lua is not supported"))
    c = json.loads(json.dumps(base))
    hc = c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hc["route_config"]
    hc["rds"] = {"route_config_name": "r"}
    cases.append((c, f"{hcm_path}: rds is not supported: write the route_config inline"))
    c = json.loads(json.dumps(base))
    c["static_resources"]["clusters"][0]["type"] = "EDS"
    cases.append((c, "static_resources.clusters[0]: type EDS is not one of STATIC, STRICT_DNS, "
                  "LOGICAL_DNS, ORIGINAL_DST"))
    c = json.loads(json.dumps(base))
    c["static_resources"]["clusters"][0]["lb_policy"] = "CLUSTER_PROVIDED"
    cases.append((c, "static_resources.clusters[0]: lb_policy CLUSTER_PROVIDED is not supported"))
    c = json.loads(json.dumps(base))
    hc = c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hc["route_config"]["virtual_hosts"][0]["routes"][0]["match"]["query_parameters"] = [
        {"name": "a", "string_match": {"contains": "b"}}]
    cases.append((c, f"{hcm_path}.route_config.virtual_hosts[0].routes[0].match"
                     ".query_parameters[0]: contains is not supported"))
    c = json.loads(json.dumps(base))
    c["static_resources"]["listeners"][0]["filter_chains"].append(
        c["static_resources"]["listeners"][0]["filter_chains"][0])
    cases.append((c, "static_resources.listeners[0].filter_chains[1]: its filter_chain_match is "
                     "static_resources.listeners[0].filter_chains[0]'s: the two chains would "
                     "take the same connections"))
    c = json.loads(json.dumps(base))
    c["dynamic_resources"] = {"ads_config": {}}
    cases.append((c, "dynamic_resources is not supported"))
    c = json.loads(json.dumps(base))
    c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0] = {
        "name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
                     "TcpProxy", "stat_prefix": "t", "cluster": "app", "max_connect_attempts": 3}}
    cases.append((c, "filters[0].typed_config: max_connect_attempts is not supported"))
    return cases


def test_unsupported_fields_are_refused_with_position_and_path(run_cli, tmp_path):
    for i, (cfg, want) in enumerate(refusal_cases(free_port())):
        f = tmp_path / f"envoy{i}.json"
        f.write_text(json.dumps(cfg, indent=2))
        p = run_cli("proxy", "-c", str(f), "--check")
        assert p.returncode == 1, (want, p.stdout)
        assert want in p.stderr, (want, p.stderr)
        # file:line:col points into the file, at the offending field.
        loc = p.stderr.split(str(f) + ":", 1)[1]
        line, col = int(loc.split(":")[0]), int(loc.split(":")[1])
        assert 1 <= line <= len(f.read_text().splitlines()) and col >= 1


def test_yaml_positions_and_notes(run_cli, tmp_path):
    f = tmp_path / "envoy.yaml"
    text = TUTORIAL.replace("LISTEN_PORT", "10000").replace("APP_PORT", "8080")
    f.write_text(text + "stats_sinks:\n- name: envoy.stat_sinks.statsd\n")
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 0, p.stderr
    assert f"{f}:40:1: stats_sinks is accepted and has no effect here" in p.stderr
    bad = text.replace("{ prefix: \"/\" }", "{ prefix: \"/\", grpc: {} }")
    f.write_text(bad)
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1
    assert (f"{f}:19:39: static_resources.listeners[0].filter_chains[0].filters[0]"
            ".typed_config.route_config.virtual_hosts[0].routes[0].match: grpc is not "
            "supported") in p.stderr
    # A value our tables reject is reported where the user wrote it.
    f.write_text(text.replace("name: local_app\n    connect", "name: \"local app\"\n    connect"))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1 and f"{f}:26:11: name \"local app\"" in p.stderr, p.stderr


def test_native_config_is_unchanged(run_cli, tmp_path):
    f = tmp_path / "own.yaml"
    f.write_text("listeners:\n- name: l\n  address: 127.0.0.1:1\n  routes: [{cluster: c}]\n"
                 "clusters:\n- name: c\n  endpoints: [127.0.0.1:2]\n  bogus: 1\n")
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1 and f"{f}:8:3: unknown key \"bogus\"" in p.stderr
    f.write_text("a: 1\n---\nb: 2\n")
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1 and "second document" in p.stderr


ANSWERS = """\
static_resources:
  listeners:
  - name: l
    address:
      socket_address: { address: 127.0.0.1, port_value: LISTEN_PORT }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: site
              domains: ["*"]
              routes:
              - match: { prefix: "/secure" }
                redirect: { https_redirect: true }
              - match: { prefix: "/old/" }
                redirect: { prefix_rewrite: "/new/", response_code: PERMANENT_REDIRECT }
              - match: { path: "/away" }
                redirect:
                  scheme_redirect: http
                  host_redirect: other.example
                  port_redirect: 9090
                  path_redirect: /landing
                  strip_query: true
                  response_code: FOUND
              - match: { path: "/see" }
                redirect: { path_redirect: "/r", response_code: SEE_OTHER }
              - match: { path: "/tmp" }
                redirect: { host_redirect: t.example, response_code: TEMPORARY_REDIRECT }
              - match: { path: "/healthz" }
                direct_response: { status: 200, body: { inline_string: "ok\\n" } }
              - match: { path: "/gone" }
                direct_response: { status: 410 }
              - match: { prefix: "/" }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: APP_PORT }
"""


def test_redirect_and_direct_response_routes(sidecar_run, run_cli, tmp_path):
    app = named("app")
    port = free_port()
    text = ANSWERS.replace("LISTEN_PORT", str(port)).replace("APP_PORT", app.addr.split(":")[1])
    sidecar_run("proxy", config=text)
    st, h, _ = curl_head(port, "/secure/x?a=1", host="shop.example:8080")
    assert (st, h["location"]) == (301, "https://shop.example/secure/x?a=1")
    st, h, _ = curl_head(port, "/old/a?k=v", host="shop.example:8080")
    assert (st, h["location"]) == (308, "http://shop.example:8080/new/a?k=v")
    st, h, _ = curl_head(port, "/away?drop=me", host="shop.example")
    assert (st, h["location"]) == (302, "http://other.example:9090/landing")
    st, h, _ = curl_head(port, "/see?keep=1", host="shop.example")
    assert (st, h["location"]) == (303, "http://shop.example/r?keep=1")
    st, h, _ = curl_head(port, "/tmp", host="shop.example")
    assert (st, h["location"]) == (307, "http://t.example/tmp")
    st, h, body = curl_head(port, "/healthz")
    assert (st, body, h["content-type"]) == (200, b"ok\n", "text/plain; charset=utf-8")
    assert curl_head(port, "/gone")[::2] == (410, b"")
    assert curl_head(port, "/else")[::2] == (200, b"app")
    assert len(app.requests) == 1
    # Refusals, with the position of the field.
    for old, new, want in (
            ('redirect: { path_redirect: "/r", response_code: SEE_OTHER }',
             'redirect: { regex_rewrite: { substitution: x } }',
             "routes[3].redirect: regex_rewrite is not supported"),
            ('direct_response: { status: 410 }',
             'direct_response: { status: 410, body: { filename: /etc/motd } }',
             "routes[6].direct_response.body: filename is not supported"),
            ('redirect: { host_redirect: t.example, response_code: TEMPORARY_REDIRECT }',
             'redirect: { host_redirect: t.example, response_code: USE_PROXY }',
             "routes[4].redirect: response_code USE_PROXY is not a RedirectResponseCode"),
            ('direct_response: { status: 410 }',
             'direct_response: { status: 410 }\n                route: { cluster: app }',
             "routes[6]: exactly one of route, redirect and direct_response")):
        f = tmp_path / "bad.yaml"
        bad = text.replace(old, new)
        f.write_text(bad)
        # The refusal points at the line of the replaced route field (the route itself for the
        # last case, one line above).
        lines = bad.splitlines()
        line = lines.index(next(l for l in lines if new.split("\n")[0] in l)) + 1
        line -= "\n" in new
        p = run_cli("proxy", "-c", str(f), "--check")
        assert p.returncode == 1 and want in p.stderr, (want, p.stderr)
        assert f"{f}:{line}:" in p.stderr, (want, p.stderr)
    app.close()
