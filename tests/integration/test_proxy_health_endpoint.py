# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: routes that answer health checks (`health_endpoint`), and Envoy's
envoy.filters.http.health_check filter mapped onto them. Peers: small TCP/HTTP servers (the
tcp-health tests' Peer) behind a cluster with TCP health checks, stopped to take the cluster
below its healthy share; curl for the checks; a request held open across POST /drain to see the
draining answer."""
import json
import socket
import subprocess

import pytest

from conftest import free_port, http_get
from proxy_util import metric, proxy_config, wait_for
from test_proxy_envoy_chains import HCM, ROUTER, cluster, sa
from test_proxy_tcp_health import Peer, peers  # noqa: F401 (fixture)

T_HC = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"


def curl(port, path="/healthz", *extra):
    r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *extra,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.decode().rpartition("\n")
    return int(code), body


def unhealthy(sc):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_upstream_endpoints_unhealthy",
                  cluster="app")


def held_request(port, path="/healthz"):
    """A request whose head is not finished yet: the connection is busy, not idle."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
    return s


def finish(s):
    s.sendall(b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(4096)
        if not b:
            break
        buf += b
    s.close()
    return buf.split(b"\r\n")[0].decode()


def envoy(port, a, b, hc):
    c = cluster("app", a.port)
    c["load_assignment"]["endpoints"][0]["lb_endpoints"].append(
        {"endpoint": {"address": sa(b.port)}})
    c["health_checks"] = [{"timeout": "1s", "interval": "0.1s", "unhealthy_threshold": 1,
                           "healthy_threshold": 1, "tcp_health_check": {}}]
    tc = {"@type": HCM, "stat_prefix": "h", "route_config": {"virtual_hosts": [
        {"name": "a", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                    "route": {"cluster": "app"}}]}]},
          "access_log": [{"name": "envoy.access_loggers.stdout"}],
          "http_filters": [{"name": "envoy.filters.http.health_check",
                            "typed_config": {"@type": T_HC, **hc}},
                           {"name": "envoy.filters.http.router",
                            "typed_config": {"@type": ROUTER}}]}
    return json.dumps({"static_resources": {
        "listeners": [{"name": "l", "address": sa(port),
                       "filter_chains": [{"filters": [{"name": "hcm", "typed_config": tc}]}]}],
        "clusters": [c]}})


def test_envoy_health_filter_answers_from_cluster_health_and_drain(sidecar_run, run_cli,
                                                                    tmp_path, peers):  # noqa
    a, b = peers("A"), peers("B")
    port = free_port()
    hc = {"pass_through_mode": False,
          "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
          "cluster_min_healthy_percentages": {"app": {"value": 50}}}
    cfg = envoy(port, a, b, hc)
    path = tmp_path / "e.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    first = out["listeners"][0]["routes"][0]
    assert first["match"] == {"path": "/healthz"}
    assert first["health_endpoint"] == {"pass_through": "false",
                                        "min_healthy": [{"cluster": "app", "percent": "50"}]}
    sc = sidecar_run("proxy", config=cfg)
    assert curl(port) == (200, "")
    assert curl(port, "/other")[0] == 200  # the app
    b.stop()  # 1 of 2 healthy: 50%, enough
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    assert curl(port) == (200, "")
    a.stop()  # 0 of 2
    assert wait_for(lambda: unhealthy(sc) == 2, timeout=10)
    assert curl(port) == (503, "")
    a.start()
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    assert curl(port) == (200, "")
    lines = [json.loads(x) for x in sc.logs().splitlines() if x.startswith("{")]
    assert any(x.get("path") == "/healthz" and x.get("status") == 503 and
               "LH" in x.get("flags", "") for x in lines)
    # draining: the health check fails at once
    s = held_request(port)
    assert http_get(sc.admin + "/drain", method="POST")[0] == 200
    assert finish(s) == "HTTP/1.1 503 Service Unavailable"


def test_envoy_health_filter_pass_through(sidecar_run, peers):
    a, b = peers("A"), peers("A")
    port = free_port()
    hc = {"pass_through_mode": True, "cache_time": "5s",
          "headers": [{"name": ":path", "exact_match": "/healthz"},
                      {"name": "x-probe", "present_match": True}]}
    sc = sidecar_run("proxy", config=envoy(port, a, b, hc))
    assert curl(port, "/healthz", "-H", "x-probe: 1") == (200, "A")  # the app answers
    s = held_request(port)
    s.sendall(b"x-probe: 1\r\n")
    assert http_get(sc.admin + "/drain", method="POST")[0] == 200
    assert finish(s) == "HTTP/1.1 503 Service Unavailable"


def test_native_health_endpoint(sidecar_run, run_cli, tmp_path, peers):
    a = peers("A")
    port = free_port()
    cfg = proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "routes": [
        {"name": "hc", "match": {"path": "/ready"}, "health_endpoint": {
            "min_healthy": [{"cluster": "app", "percent": 100}]}},
        {"name": "app", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [f"127.0.0.1:{a.port}"],
          "health_check": {"tcp": {}, "interval": "100ms", "unhealthy_threshold": 1,
                           "healthy_threshold": 1}}])
    sc = sidecar_run("proxy", config=cfg)
    assert curl(port, "/ready") == (200, "")
    assert curl(port, "/ready?probe=1") == (200, "")  # the path, without its query
    assert curl(port, "/x") == (200, "A")
    a.stop()
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    assert curl(port, "/ready") == (503, "")
    for routes, msg in (
            ([{"health_endpoint": {"pass_through": True,
                                   "min_healthy": [{"cluster": "app", "percent": 5}]}}],
             "min_healthy applies to the answers the proxy gives"),
            ([{"health_endpoint": {"min_healthy": [{"cluster": "nope", "percent": 5}]}}],
             "unknown cluster \"nope\""),
            ([{"health_endpoint": {"min_healthy": [{"cluster": "app", "percent": 101}]}}],
             "percent is not 0 to 100"),
            ([{"health_endpoint": {}, "direct_response": {"status": 200}}],
             "use one of redirect, direct_response and health_endpoint")):
        path = tmp_path / "n.json"
        path.write_text(proxy_config([{"name": "l", "address": "127.0.0.1:1", "routes": routes}],
                                     [{"name": "app", "endpoints": ["127.0.0.1:2"]}]))
        p = run_cli("proxy", "-c", str(path), "--check")
        assert p.returncode != 0 and msg in p.stderr, p.stderr


@pytest.mark.parametrize("hc,msg,where", [
    ({"headers": [{"name": ":path", "exact_match": "/h"}]}, "pass_through_mode (true or false)",
     "http_filters[0].typed_config"),
    ({"pass_through_mode": False}, "headers are required", "http_filters[0].typed_config"),
    ({"pass_through_mode": False, "headers": [{"name": ":path", "safe_regex_match": {}}]},
     "safe_regex_match is not supported", "http_filters[0].typed_config.headers[0]"),
    ({"pass_through_mode": False, "headers": [{"name": ":method", "exact_match": "GET"}]},
     "a pseudo-header other than :path", "http_filters[0].typed_config.headers[0]"),
    ({"pass_through_mode": False, "headers": [{"name": ":path", "exact_match": "/h"}],
      "cluster_min_healthy_percentages": {"app": {"value": 150}}},
     "value is a percent from 0 to 100",
     "http_filters[0].typed_config.cluster_min_healthy_percentages.app"),
], ids=["no_mode", "no_headers", "regex", "pseudo", "percent"])
def test_envoy_refusals(run_cli, tmp_path, peers, hc, msg, where):
    a = peers("A")
    path = tmp_path / "e.json"
    path.write_text(envoy(1, a, a, hc))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr and f"{path}:1:" in p.stderr, p.stderr
    assert ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config." + where
            in p.stderr), p.stderr
