# SPDX-License-Identifier: Apache-2.0
"""Consistent-hash load balancing (lb_policy ring_hash / maglev with hash_policy), natively, from
an Envoy bootstrap (RING_HASH, MAGLEV, route hash_policy) and from an Istio DestinationRule
(consistentHash): each key always reaches the same endpoint, keys spread over the endpoints, and
when an endpoint goes away only its keys move. Real upstreams on loopback, requests by curl over
HTTP/1.1 and h2c."""
import json
import subprocess

import pytest

from conftest import free_port
from proxy_util import named, proxy_config

T = "type.googleapis.com/envoy.extensions."


@pytest.fixture
def four():
    ups = [named(f"e{i}") for i in range(4)]
    yield ups
    for u in ups:
        u.close()


def get(port, path="/", *extra):
    r = subprocess.run(["curl", "-sS", *extra, f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def mapping(port, keys, how, *extra):
    out = {}
    for k in keys:
        if how == "header":
            args = ["-H", f"x-user: {k}"]
            path = "/"
        elif how == "cookie":
            args = ["-H", f"Cookie: a=1; session={k}"]
            path = "/"
        else:
            args = []
            path = f"/?tenant={k}&x=1"
        out[k] = get(port, path, *args, *extra)
    return out


def native(port, ups, hash_policy, lb="ring_hash"):
    return proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "app", "hash_policy": hash_policy}]}],
        [{"name": "app", "lb_policy": lb, "endpoints": [u.addr for u in ups]}])


@pytest.mark.parametrize("how,policy", [("header", [{"header": "x-user"}]),
                                        ("cookie", [{"cookie": "session"}]),
                                        ("query", [{"query_parameter": "tenant"}])])
def test_native_consistent_hash(sidecar_run, four, how, policy):
    port = free_port()
    sidecar_run("proxy", config=native(port, four, policy))
    keys = [f"user{i}" for i in range(40)]
    first = mapping(port, keys, how)
    assert mapping(port, keys, how) == first  # the same key, the same endpoint
    assert mapping(port, keys, how, "--http2-prior-knowledge") == first
    assert len(set(first.values())) >= 3, first  # 40 keys over 4 endpoints
    # without the key: round robin over all four
    assert len({get(port) for _ in range(8)}) == 4


def test_an_endpoint_removed_moves_only_its_keys(sidecar_run, four):
    keys = [f"user{i}" for i in range(60)]
    p1, p2 = free_port(), free_port()
    sidecar_run("proxy", config=native(p1, four, [{"header": "x-user"}], lb="maglev"))
    sidecar_run("proxy", config=native(p2, four[:3], [{"header": "x-user"}], lb="maglev"))
    a, b = mapping(p1, keys, "header"), mapping(p2, keys, "header")
    for k in keys:
        if a[k] != "e3":
            assert b[k] == a[k], (k, a[k], b[k])
    assert any(v == "e3" for v in a.values())


def test_source_ip_and_terminal(sidecar_run, four):
    port = free_port()
    sidecar_run("proxy", config=native(port, four, [{"header": "x-user", "terminal": True},
                                                    {"source_ip": True}]))
    # every request comes from 127.0.0.1: without x-user, one endpoint for all
    assert len({get(port) for _ in range(8)}) == 1


def test_refusals(run_cli, tmp_path):
    cases = [
        ({"cluster": "app", "hash_policy": [{"header": "a", "cookie": "b"}]},
         {"lb_policy": "ring_hash"}, "one of header, cookie, query_parameter and source_ip"),
        ({"cluster": "app"}, {"hash_policy": [{"header": "a"}]},
         "hash_policy needs lb_policy ring_hash or maglev"),
    ]
    for route, cl, want in cases:
        f = tmp_path / "c.yaml"
        f.write_text(proxy_config([{"name": "in", "address": "127.0.0.1:1", "routes": [route]}],
                                  [{"name": "app", "endpoints": ["127.0.0.1:2"], **cl}]))
        p = run_cli("proxy", "-c", str(f), "--check")
        assert p.returncode != 0 and want in p.stderr, p.stderr


def sa(port):
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


@pytest.mark.parametrize("lb", ["RING_HASH", "MAGLEV"])
def test_envoy_ring_hash_and_maglev(sidecar_run, four, lb):
    port = free_port()
    boot = {"static_resources": {"listeners": [{"name": "l", "address": sa(port), "filter_chains": [
        {"filters": [{"name": "hcm", "typed_config": {
            "@type": T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "h", "route_config": {"virtual_hosts": [{
                "name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
                    "cluster": "app", "hash_policy": [
                        {"header": {"header_name": "x-user"}, "terminal": True},
                        {"connection_properties": {"source_ip": True}}]}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": T + "filters.http.router.v3.Router"}}]}}]}]}],
        "clusters": [{"name": "app", "type": "STATIC", "lb_policy": lb,
                      "ring_hash_lb_config": {"minimum_ring_size": 1024},
                      "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [
                          {"endpoint": {"address": sa(u.port)}} for u in four]}]}}]}}
    sidecar_run("proxy", config=json.dumps(boot))
    keys = [f"u{i}" for i in range(40)]
    first = mapping(port, keys, "header")
    assert mapping(port, keys, "header") == first and len(set(first.values())) >= 3


def test_istio_consistent_hash(sidecar_run, four):
    port = free_port()
    eps = "".join(f"\n  - {{address: 127.0.0.1, ports: {{http: {u.port}}}}}" for u in four)
    docs = "\n---\n".join([
        json.dumps({"listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                                   "direction": "outbound", "routes": []}],
                    "workload": {"namespace": "shop"}, "access_log": "off"}),
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart.shop.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:{eps}
""", """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: session}, maglev: {tableSize: 65537}}
"""])
    sidecar_run("proxy", config=docs)
    keys = [f"s{i}" for i in range(40)]
    first = mapping(port, keys, "cookie", "-H", "Host: cart")
    assert mapping(port, keys, "cookie", "-H", "Host: cart") == first
    assert len(set(first.values())) >= 3, first
