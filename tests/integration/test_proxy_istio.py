# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy -c istio.yaml: Istio's own resources as the proxy's configuration.
PeerAuthentication documents (security.istio.io v1beta1 and v1) next to the proxy's own document
set the mTLS mode (STRICT refuses plaintext; portLevelMtls by dialled port); a VirtualService 90/10
canary over DestinationRule subsets of ServiceEntry endpoints, measured over 1,000 requests;
retries, timeouts, faults and rewrites from the VirtualService against failing upstreams;
outlier detection from the DestinationRule; a host with only a DestinationRule and ServiceEntry
still routes; and everything without an equivalent is refused with its position."""
import http.client
import json
import time
from types import SimpleNamespace

import pytest

from conftest import free_port, http_get
from proxy_util import (FakeUpstream, curl_head, echo_handler, flaky_upstream, get, metric,
                        named, wait_for)
from tls_util import curl, pki  # noqa: F401 (fixture)


def request(port, host, path="/", n=1):
    """<n> GETs with Host <host> on one keep-alive connection; returns [(status, body)]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    out = []
    try:
        for _ in range(n):
            c.request("GET", path, headers={"Host": host})
            r = c.getresponse()
            out.append((r.status, r.read()))
    finally:
        c.close()
    return out


def own(port, **extra):
    """The proxy's own document: an outbound listener on <port> (the Istio routes go first)."""
    return json.dumps({"listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                                      "direction": "outbound", "routes": []}],
                       "workload": {"namespace": "shop"}, "access_log": "off", **extra})


def service_entry(name, port, endpoints):
    """A ServiceEntry for <name> whose endpoints are (upstream, labels) pairs."""
    eps = "".join(f"""
  - address: 127.0.0.1
    ports: {{http: {u.port}}}
    labels: {json.dumps(lbl)}""" for u, lbl in endpoints)
    return f"""apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: shop
spec:
  hosts: [{name}.shop.svc.cluster.local]
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:{eps}
"""


DR_SUBSETS = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"""

CANARY = """apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
"""


def stream(*docs):
    return "\n---\n".join(d.strip("\n") for d in docs) + "\n"


def test_canary_90_10_over_1000_requests(sidecar_run):
    v1, v2 = named("v1"), named("v2")
    port = free_port()
    sc = sidecar_run("proxy", config=stream(
        own(port), service_entry("reviews", 9080, [(v1, {"version": "v1"}),
                                                  (v2, {"version": "v2"})]),
        DR_SUBSETS, CANARY))
    n = 1000
    counts = {b"v1": 0, b"v2": 0}
    # Every short form of the host reaches the service, with or without a port.
    hosts = ["reviews", "reviews:9080", "reviews.shop", "reviews.shop.svc.cluster.local"]
    for i in range(4):
        for status, body in request(port, hosts[i], n=n // 4):
            assert status == 200
            counts[body] += 1
    assert counts[b"v1"] + counts[b"v2"] == n
    # Chi-square with one degree of freedom below 24 (p ~ 1e-6): 85/15 would give ~28.
    chi2 = (counts[b"v1"] - 900) ** 2 / 900 + (counts[b"v2"] - 100) ** 2 / 100
    assert chi2 < 24, counts
    text = sc.get("/metrics")[1].decode()
    cluster = "reviews.shop.svc.cluster.local:9080"
    assert metric(text, "sidecar_requests_total", route="reviews.0", cluster=cluster,
                  code="200") == n
    # Another Host is not this service: it falls through to the listener's own routes (none).
    assert request(port, "ratings")[0][0] == 404
    v1.close()
    v2.close()


def test_reload_shifts_the_canary(sidecar_run):
    """The same file, edited and reloaded (POST /reload), moves all traffic to v2; a broken edit
    is refused and the running configuration stays."""
    v1, v2 = named("v1"), named("v2")
    port = free_port()
    docs = [own(port), service_entry("reviews", 9080, [(v1, {"version": "v1"}),
                                                      (v2, {"version": "v2"})]), DR_SUBSETS]
    sc = sidecar_run("proxy", config=stream(*docs, CANARY))
    sc.config_path.write_text(stream(*docs, CANARY.replace("weight: 90", "weight: 0").replace(
        "weight: 10", "weight: 100")))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert {b for _, b in request(port, "reviews", n=50)} == {b"v2"}
    sc.config_path.write_text(stream(*docs, CANARY.replace("weight: 10", "weight: 11")))
    code, body, _ = http_get(sc.admin + "/reload", method="POST")
    assert code != 200 and b"route weights add up to 101" in body
    assert {b for _, b in request(port, "reviews", n=20)} == {b"v2"}
    v1.close()
    v2.close()


def test_retries_and_timeout_from_the_virtual_service(sidecar_run):
    up, calls = flaky_upstream()
    port = free_port()
    vs = """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match:
    - uri: {exact: /slow}
    route:
    - destination: {host: ratings}
    timeout: 0.3s
  - route:
    - destination: {host: ratings}
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: 5xx
"""
    sidecar_run("proxy", config=stream(own(port), service_entry("ratings", 9080, [(up, {})]), vs))
    assert request(port, "ratings", "/retry") == [(200, b"ok")]
    assert len(calls) == 3
    t = time.monotonic()
    assert request(port, "ratings", "/slow")[0][0] == 504
    assert time.monotonic() - t < 1.5
    up.close()


def test_fault_rewrite_and_headers(sidecar_run):
    echo = FakeUpstream(echo_handler)
    port = free_port()
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - match:
    - uri: {prefix: /broken}
    fault:
      abort: {httpStatus: 418, percentage: {value: 100}}
    route:
    - destination: {host: details}
  - match:
    - uri: {prefix: /v1/}
      headers:
        end-user: {exact: jason}
    rewrite: {uri: /api/, authority: details.internal}
    headers:
      request:
        set: {x-mesh: "on"}
        remove: [x-secret]
    route:
    - destination: {host: details}
"""
    sidecar_run("proxy", config=stream(own(port), service_entry("details", 9080, [(echo, {})]),
                                       vs))
    assert request(port, "details", "/broken")[0][0] == 418
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/items", headers={"Host": "details", "end-user": "jason",
                                           "x-secret": "s"})
    body = json.loads(c.getresponse().read())
    c.close()
    hdrs = {k.lower(): v for k, v in body["headers"]}
    assert body["target"] == "/api/items"
    assert hdrs["host"] == "details.internal" and hdrs["x-mesh"] == "on"
    assert "x-secret" not in hdrs
    # Without the header the match fails: no route.
    assert request(port, "details", "/v1/items")[0][0] == 404
    echo.close()


def test_outlier_detection_from_the_destination_rule(sidecar_run):
    good, bad = named("good"), named("bad", status=500)
    port = free_port()
    dr = """apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 1s}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1}
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"""
    sc = sidecar_run("proxy", config=stream(
        own(port), service_entry("reviews", 9080, [(good, {}), (bad, {})]), dr))
    bodies = [b for _, b in request(port, "reviews", n=20)]
    assert bodies.count(b"bad") == 1, bodies
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_outlier_ejections_total",
                  cluster="reviews.shop.svc.cluster.local:9080") == 1
    # maxRequestsPerConnection: 1: a new upstream connection for every request.
    assert good.connections >= 19
    good.close()
    bad.close()


@pytest.mark.parametrize("version", ["security.istio.io/v1beta1", "security.istio.io/v1"])
def test_peer_authentication_strict_from_yaml(sidecar_run, pki, version):
    echo = FakeUpstream(echo_handler)
    port, other = free_port(), free_port()
    own_doc = json.dumps({
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                       "routes": [{"name": "r", "cluster": "app"}]},
                      {"name": "in2", "address": f"127.0.0.1:{other}",
                       "routes": [{"name": "r", "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [echo.addr]}],
        "identity": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                     "ca": str(pki / "ca.pem")},
        "workload": {"namespace": "shop", "labels": {"app": "cart"}}})
    pa = f"""apiVersion: {version}
kind: PeerAuthentication
metadata:
  name: cart
  namespace: shop
spec:
  selector:
    matchLabels:
      app: cart
  mtls:
    mode: STRICT
  portLevelMtls:
    {other}:
      mode: PERMISSIVE
"""
    sidecar_run("proxy", config=stream(own_doc, pa))
    # STRICT: plaintext is refused, mutual TLS with a mesh identity passes.
    with pytest.raises((OSError, EOFError)):
        get(port)
    rc, _, code = curl(f"https://localhost:{port}/", "--cacert", str(pki / "ca.pem"), "--cert",
                       str(pki / "client.pem"), "--key", str(pki / "client.key"))
    assert rc == 0 and code == 200
    # The port-level override makes the other port PERMISSIVE.
    assert get(other).status == 200
    echo.close()


SE_V1_V2 = service_entry("reviews", 9080, [(SimpleNamespace(port=1), {"version": "v1"}),
                                           (SimpleNamespace(port=2), {"version": "v2"})])

ANSWERS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: site}
spec:
  hosts: [site]
  http:
  - match:
    - uri: {prefix: /old}
    redirect: {uri: /new, authority: www.example.org}
  - match:
    - uri: {exact: /tls}
    redirect: {scheme: https, port: 8443, redirectCode: 302}
  - match:
    - uri: {exact: /gone}
    directResponse: {status: 410, body: {string: "bye\\n"}}
  - match:
    - uri: {exact: /nobody}
    directResponse: {status: 503}
  - route:
    - destination: {host: site}
"""

REFUSALS = [
    # (documents, expected message part)
    ([SE_V1_V2, DR_SUBSETS, CANARY.replace("weight: 10", "weight: 20")],
     "VirtualService/reviews.spec.http[0]: route weights add up to 110, not 100"),
    ([CANARY], "no DestinationRule defines subset v1 of reviews.shop.svc.cluster.local"),
    ([DR_SUBSETS, CANARY],
     "subset v1 of reviews.shop.svc.cluster.local selects no endpoint"),
    ([SE_V1_V2, DR_SUBSETS,
      CANARY.replace("  - route:", "  - match:\n    - queryParams: {a: {suffix: b}}\n    route:")],
     "VirtualService/reviews.spec.http[0].match[0]: suffix is not supported"),
    ([SE_V1_V2, DR_SUBSETS,
      CANARY.replace("  http:", "  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/33]}]\n"
                                "    route: [{destination: {host: reviews}}]\n  http:")],
     "VirtualService/reviews.spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/33\" is not "
     "an IP address or CIDR block"),
    ([CANARY.replace("  - route:", "  - redirect: {uri: /x, derivePort: FROM_REQUEST_PORT}\n"
                                   "    route:")],
     "VirtualService/reviews.spec.http[0]: exactly one of route, redirect and directResponse"),
    ([ANSWERS.replace("redirectCode: 302", "redirectCode: 305")],
     "VirtualService/site.spec.http[1].redirect: redirectCode 305 is not supported"),
    ([ANSWERS.replace("authority: www.example.org", "derivePort: FROM_REQUEST_PORT")],
     "VirtualService/site.spec.http[0].redirect: derivePort is not supported"),
    ([ANSWERS.replace("body: {string: \"bye\\n\"}", "body: {bytes: Ynll}")],
     "VirtualService/site.spec.http[2].directResponse.body: bytes is not supported"),
    (["apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: a}\n"
      "spec: {}\n"], "kind WasmPlugin is not supported"),
    (["apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n"
      "spec: {}\n"], "VirtualService networking.istio.io/v2 is not supported"),
    ([DR_SUBSETS.replace("  subsets:", "  trafficPolicy:\n    loadBalancer:\n"
                                       "      consistentHash: {httpCookie: {name: s, ttl: 1h}}\n"
                                       "  subsets:")],
     "DestinationRule/reviews.spec.trafficPolicy: ttl is not supported"),
    (["apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\n"
      "spec:\n  mtls: {mode: SOMETIMES}\n"], "invalid value \"SOMETIMES\""),
]


@pytest.mark.parametrize("docs,want", REFUSALS)
def test_refusals_name_the_field_and_its_position(run_cli, tmp_path, docs, want):
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), *docs))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr


def test_resources_alone_make_the_default_listeners(run_cli, tmp_path):
    """Without a document of the proxy's own, the default inbound and outbound listeners are
    written out, with the Istio routes first on the outbound one and its original-destination
    route last; notes name what has no effect here."""
    f = tmp_path / "istio.yaml"
    f.write_text(stream(service_entry("reviews", 9080, [(named("x"), {"version": "v1"})]),
                        DR_SUBSETS.replace("kind: DestinationRule",
                                           "kind: DestinationRule\nstatus: {}"),
                        CANARY.replace("weight: 90", "weight: 100").replace(
                            "    - destination:\n        host: reviews\n        subset: v2\n"
                            "      weight: 10\n", "")))
    p = run_cli("proxy", "-c", str(f), "--check", "--print", env={"POD_NAMESPACE": "shop"})
    assert p.returncode == 0, p.stderr
    derived = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    names = [(ls["name"], ls["address"]) for ls in derived["listeners"]]
    assert names == [("inbound", "0.0.0.0:15006"), ("outbound", "127.0.0.1:15001")]
    routes = derived["listeners"][1]["routes"]
    assert routes[0]["cluster"] == "reviews.shop.svc.cluster.local:9080"
    assert routes[0]["subset"] == "v1"
    assert routes[0]["match"]["authority"] == ["reviews.shop.svc.cluster.local",
                                               "reviews.shop.svc", "reviews.shop", "reviews"]
    assert routes[-1] == {"name": "outbound", "cluster": "outbound"}
    assert "status is accepted and has no effect here" in p.stderr


def test_match_port_becomes_destination_ports(run_cli, tmp_path):
    """HTTPMatchRequest.port: the port the client addressed (the original destination's under
    interception), as a native route's match.destination_ports."""
    f = tmp_path / "istio.yaml"
    vs = CANARY.replace("weight: 90", "weight: 100").replace(
        "    - destination:\n        host: reviews\n        subset: v2\n      weight: 10\n", "")
    vs = vs.replace("  - route:", "  - match:\n    - port: 9080\n    route:")
    f.write_text(stream(service_entry("reviews", 9080, [(named("x"), {"version": "v1"})]),
                        DR_SUBSETS, vs))
    p = run_cli("proxy", "-c", str(f), "--check", "--print", env={"POD_NAMESPACE": "shop"})
    assert p.returncode == 0, p.stderr
    derived = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    routes = derived["listeners"][1]["routes"]
    assert routes[0]["match"]["destination_ports"] == ["9080"]


def test_config_directory_like_a_mounted_configmap(sidecar_run, run_cli, tmp_path, pki):
    """-c DIR reads its *.yaml, *.yml and *.json files in name order as one stream (hidden
    entries, such as a ConfigMap's ..data, skipped); messages name the file and its own line."""
    echo = FakeUpstream(echo_handler)
    port = free_port()
    d = tmp_path / "conf"
    d.mkdir()
    (d / "..data").mkdir()
    (d / "..data" / "ignored.yaml").write_text("this: is not read\n")
    (d / "README").write_text("not a config\n")
    (d / "00-proxy.json").write_text(json.dumps({
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                       "routes": [{"name": "r", "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [echo.addr]}],
        "identity": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                     "ca": str(pki / "ca.pem")},
        "workload": {"namespace": "shop"}}))
    (d / "10-mtls.yaml").write_text("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                                    "metadata: {name: default, namespace: shop}\n"
                                    "spec:\n  mtls: {mode: STRICT}\n")
    sc = sidecar_run("proxy", args=["-c", str(d)])
    with pytest.raises((OSError, EOFError)):
        get(port)
    assert sc.proc.poll() is None
    # An error in the second file is reported in that file, at its own line.
    (d / "10-mtls.yaml").write_text("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                                    "metadata: {name: default, namespace: shop}\n"
                                    "spec:\n  mtls: {mode: STRICT, extra: 1}\n")
    p = run_cli("proxy", "-c", str(d), "--check")
    assert p.returncode == 1
    assert f"{d}/10-mtls.yaml:5:24: PeerAuthentication/default.spec.mtls: extra is not supported" \
        in p.stderr, p.stderr
    echo.close()


SIDECAR = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress:
  - hosts: ["./reviews", "istio-system/*"]
"""


def test_sidecar_egress_hosts(sidecar_run, run_cli, tmp_path):
    """A Sidecar's egress hosts limit the services the workload reaches: routes for other hosts
    are left out (404, no route); REGISTRY_ONLY drops the default outbound listener's
    original-destination route."""
    reviews, ratings = named("reviews"), named("ratings")
    port = free_port()
    sidecar_run("proxy", config=stream(
        own(port), SIDECAR, service_entry("reviews", 9080, [(reviews, {})]),
        service_entry("ratings", 9080, [(ratings, {})])))
    assert request(port, "reviews") == [(200, b"reviews")]
    assert request(port, "ratings")[0][0] == 404
    f = tmp_path / "alone.yaml"
    f.write_text(stream(SIDECAR, service_entry("ratings", 9080, [(ratings, {})])))
    p = run_cli("proxy", "-c", str(f), "--check", "--print", env={"POD_NAMESPACE": "shop"})
    assert p.returncode == 0, p.stderr
    derived = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    assert derived["listeners"][1]["name"] == "outbound"
    assert derived["listeners"][1]["routes"] == []
    reviews.close()
    ratings.close()


def test_mirror_from_the_virtual_service(sidecar_run):
    """mirror + mirrorPercentage: the shadow gets a copy of every request (Host with -shadow, as
    Istio does) and the client sees only the primary's answer."""
    primary = named("primary")
    shadow = FakeUpstream(echo_handler)
    port = free_port()
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: [orders]
  http:
  - route:
    - destination: {host: orders}
    mirror: {host: orders-shadow}
    mirrorPercentage: {value: 100}
"""
    sidecar_run("proxy", config=stream(own(port), service_entry("orders", 9080, [(primary, {})]),
                                       service_entry("orders-shadow", 9080, [(shadow, {})]), vs))
    assert request(port, "orders", "/o/1", n=5) == [(200, b"primary")] * 5
    assert wait_for(lambda: len(shadow.requests) == 5)
    assert {r.header("host") for r in shadow.requests} == {"orders-shadow"}
    assert {r.target for r in shadow.requests} == {"/o/1"}
    primary.close()
    shadow.close()


def test_redirect_and_direct_response(sidecar_run):
    app = named("app")
    port = free_port()
    sidecar_run("proxy", config=stream(own(port), service_entry("site", 9080, [(app, {})]),
                                       ANSWERS))
    st, h, _ = curl_head(port, "/old/page?q=1", host="site")
    assert (st, h["location"]) == (301, "http://www.example.org/new?q=1")
    st, h, _ = curl_head(port, "/tls", host="site:9080")
    assert (st, h["location"]) == (302, "https://site:8443/tls")
    st, h, body = curl_head(port, "/gone", host="site")
    assert (st, body, h["content-type"]) == (410, b"bye\n", "text/plain; charset=utf-8")
    assert curl_head(port, "/nobody", host="site")[::2] == (503, b"")
    assert curl_head(port, "/else", host="site")[::2] == (200, b"app")
    assert len(app.requests) == 1
    app.close()
