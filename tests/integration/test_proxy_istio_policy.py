# SPDX-License-Identifier: Apache-2.0
"""DestinationRule policies per subset and per port, as Istio applies them: one cluster per host,
port and subset; a subset's trafficPolicy overrides the rule's field group by field group
(loadBalancer, connectionPool, outlierDetection, tls); trafficPolicy.portLevelSettings replace
the rule's groups for that port as a whole (a group they omit takes its default); a subset's own
portLevelSettings replace the subset's. Checked against Python HTTP upstreams behind the proxy
(connections counted, failing endpoints ejected), in the derived configuration, and in the
refusals with their position and field path."""
import http.client
import json

import pytest

from conftest import free_port
from proxy_util import FakeUpstream, echo_handler, metric, wait_for
from test_proxy_istio import named, own, stream

HOST = "reviews.shop.svc.cluster.local"


def se(ports, endpoints):
    """ServiceEntry reviews with <ports> [(number, name)] and <endpoints> [({name: upstream},
    labels)]."""
    ps = "".join(f"\n  - {{number: {n}, name: {nm}, protocol: HTTP}}" for n, nm in ports)
    eps = "".join(
        f"\n  - address: 127.0.0.1\n    ports: {json.dumps({k: u.port for k, u in m.items()})}"
        f"\n    labels: {json.dumps(lbl)}" for m, lbl in endpoints)
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [{HOST}]
  ports:{ps}
  resolution: STATIC
  endpoints:{eps}
"""


def get_as(port, path, headers, n):
    """<n> GETs of <path> with <headers> on one keep-alive connection; returns the bodies."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    out = []
    try:
        for _ in range(n):
            c.request("GET", path, headers={"Host": "reviews", **headers})
            r = c.getresponse()
            out.append(r.read())
    finally:
        c.close()
    return out


def test_subset_policy_overrides_one_group_and_inherits_the_rest(sidecar_run):
    """Istio's request-routing task (end-user: jason goes to v2) with a DestinationRule whose
    top-level connectionPool opens a connection per request and whose subset v2 adds outlier
    detection: v2 ejects its failing endpoint after one 5xx and still opens a connection per
    request (the group it does not set is the rule's); v1 keeps both of its endpoints."""
    good1, bad1 = named("good1"), named("bad1", 500)
    good2, bad2 = named("good2"), named("bad2", 500)
    port = free_port()
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection:
        consecutive5xxErrors: 1
        interval: 1s
        baseEjectionTime: 30s
        maxEjectionPercent: 100
"""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    sc = sidecar_run("proxy", config=stream(
        own(port), se([(9080, "http")], [({"http": good1}, {"version": "v1"}),
                                          ({"http": bad1}, {"version": "v1"}),
                                          ({"http": good2}, {"version": "v2"}),
                                          ({"http": bad2}, {"version": "v2"})]), dr, vs))
    v2 = get_as(port, "/", {"end-user": "jason"}, 20)
    assert set(v2) <= {b"good2", b"bad2"} and v2.count(b"bad2") == 1, v2
    v1 = get_as(port, "/", {}, 20)
    assert set(v1) == {b"good1", b"bad1"} and v1.count(b"bad1") >= 5, v1
    # maxRequestsPerConnection: 1 from the top level holds in the subset too.
    assert good2.connections >= 18 and good1.connections >= 5
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_outlier_ejections_total", cluster=f"{HOST}:9080/v2") == 1
    assert metric(text, "sidecar_requests_total", route="reviews.0", cluster=f"{HOST}:9080/v2",
                  code="200") == 19
    for u in (good1, bad1, good2, bad2):
        u.close()


def test_port_level_settings_replace_the_top_level_for_their_port(sidecar_run):
    """The rule opens a connection per request; its entry for port 9090 sets only the load
    balancer, so on 9090 the connection pool is the default one (kept-alive connections), as
    Istio documents: port-level settings do not inherit the rule's."""
    a, b = named("a"), named("b")
    port = free_port()
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: LEAST_REQUEST}
"""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews, port: {number: 9090}}}]
"""
    sidecar_run("proxy", config=stream(
        own(port), se([(9080, "http"), (9090, "admin")], [({"http": a, "admin": b}, {})]),
        dr, vs))
    assert get_as(port, "/a", {}, 10) == [b"a"] * 10
    assert get_as(port, "/b", {}, 10) == [b"b"] * 10
    assert a.connections >= 9, a.connections
    assert b.connections <= 2, b.connections
    a.close()
    b.close()


def derived(run_cli, tmp_path, *docs):
    f = tmp_path / "istio.yaml"
    f.write_text(stream(*docs))
    p = run_cli("proxy", "-c", str(f), "--check", "--print", env={"POD_NAMESPACE": "shop"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout[:p.stdout.rindex("}") + 1])


PRECEDENCE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 7}
      portLevelSettings:
      - port: {number: 9090}
        connectionPool: {tcp: {maxConnections: 5}}
"""

PRECEDENCE_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews, port: {number: 9080}, subset: v1}}]
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews, port: {number: 9090}}}]
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: reviews, port: {number: 9080}, subset: v2}}]
  - route: [{destination: {host: reviews, port: {number: 9090}, subset: v2}}]
"""


def test_precedence_in_the_derived_configuration(run_cli, tmp_path):
    """Each host, port and subset with a policy of its own is a cluster of its own, holding the
    subset's endpoints; a subset without one is selected in the host's cluster."""
    up1, up2, up3, up4 = (named(n) for n in ("1", "2", "3", "4"))
    d = derived(run_cli, tmp_path, own(free_port()),
                se([(9080, "http"), (9090, "admin")],
                   [({"http": up1, "admin": up2}, {"version": "v1"}),
                    ({"http": up3, "admin": up4}, {"version": "v2"})]),
                PRECEDENCE, PRECEDENCE_VS)
    cl = {c["name"]: c for c in d["clusters"]}
    top = cl[f"{HOST}:9080"]
    assert (top["lb_policy"], top["circuit_breakers"], top["outlier_detection"]["consecutive_5xx"],
            [s["name"] for s in top["subsets"]]) == \
        ("round_robin", {"max_connections": "10"}, "3", ["v1", "v2"])
    # Port 9090: the port entry's load balancer, and the defaults for what it omits.
    p9090 = cl[f"{HOST}:9090"]
    assert p9090["lb_policy"] == "least_request"
    assert "circuit_breakers" not in p9090 and "outlier_detection" not in p9090
    # Subset v2 on 9080: its outlier detection, the rule's load balancer and connection pool.
    v2 = cl[f"{HOST}:9080/v2"]
    assert (v2["lb_policy"], v2["circuit_breakers"], v2["outlier_detection"]["consecutive_5xx"]) \
        == ("round_robin", {"max_connections": "10"}, "7")
    assert [e["address"] for e in v2["labeled_endpoints"]] == [up3.addr]
    assert "subsets" not in v2
    # Subset v2 on 9090: its own port entry replaces all four groups.
    v2p = cl[f"{HOST}:9090/v2"]
    assert v2p["circuit_breakers"] == {"max_connections": "5"}
    assert "lb_policy" not in v2p and "outlier_detection" not in v2p
    assert [e["address"] for e in v2p["labeled_endpoints"]] == [up4.addr]
    routes = d["listeners"][0]["routes"]
    assert [(r["cluster"], r.get("subset")) for r in routes[:4]] == [
        (f"{HOST}:9080", "v1"), (f"{HOST}:9090", None), (f"{HOST}:9080/v2", None),
        (f"{HOST}:9090/v2", None)]
    for u in (up1, up2, up3, up4):
        u.close()


def test_mirror_to_a_subset(sidecar_run):
    """mirror.subset: the shadow copy goes to the subset's endpoints only."""
    primary = named("primary")
    v1, v2 = FakeUpstream(echo_handler), FakeUpstream(echo_handler)
    port = free_port()
    docs = stream(own(port), se([(9080, "http")], [({"http": primary}, {"version": "main"}),
                                                    ({"http": v1}, {"version": "v1"}),
                                                    ({"http": v2}, {"version": "v2"})]),
                  """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: main, labels: {version: main}}
  - {name: v2, labels: {version: v2}}
""", """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: main}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100}
""")
    sidecar_run("proxy", config=docs)
    assert get_as(port, "/m", {}, 6) == [b"primary"] * 6
    assert wait_for(lambda: len(v2.requests) == 6)
    assert v1.requests == []
    for u in (primary, v1, v2):
        u.close()


REFUSALS = [
    ("    portLevelSettings:\n    - loadBalancer: {simple: ROUND_ROBIN}\n",
     "DestinationRule/reviews.spec.trafficPolicy.portLevelSettings[0]: port.number is required"),
    ("    portLevelSettings:\n    - port: {number: 70000}\n",
     "DestinationRule/reviews.spec.trafficPolicy.portLevelSettings[0]: port.number must be a "
     "port"),
    ("    portLevelSettings:\n    - port: {number: 9191}\n      loadBalancer: {simple: "
     "PASSTHROUGH}\n",
     "DestinationRule/reviews.spec.trafficPolicy.portLevelSettings[0]: loadBalancer.simple "
     "PASSTHROUGH is not one of UNSPECIFIED, ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM"),
    ("    portLevelSettings:\n    - port: {number: 9191}\n      proxyProtocol: {}\n",
     "DestinationRule/reviews.spec.trafficPolicy.portLevelSettings[0]: proxyProtocol is not "
     "supported"),
]


@pytest.mark.parametrize("extra,want", REFUSALS)
def test_refusals_name_the_policy(run_cli, tmp_path, extra, want):
    """A port entry no route uses is still checked."""
    up = named("x")
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), se([(9080, "http")], [({"http": up}, {"v": "1"})]),
                        PRECEDENCE.replace("    portLevelSettings:\n    - port: {number: 9090}\n"
                                           "      loadBalancer: {simple: LEAST_REQUEST}\n",
                                           extra)))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr
    up.close()


def test_refusal_in_a_subset_policy_no_route_uses(run_cli, tmp_path):
    up = named("x")
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), se([(9080, "http")], [({"http": up}, {"v": "1"})]),
                        PRECEDENCE.replace("consecutive5xxErrors: 7}", "consecutive5xxErrors: 7, "
                                           "splitExternalLocalOriginErrors: true}")))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert "DestinationRule/reviews.spec.subsets[1].trafficPolicy: " \
        "splitExternalLocalOriginErrors is not supported" in p.stderr, p.stderr
    up.close()
