# SPDX-License-Identifier: Apache-2.0
"""Istio's MeshConfig (the `mesh` text, as a document of its own) beyond tracing: defaultConfig's
terminationDrainDuration and concurrency, outboundTrafficPolicy (the default a Sidecar
overrides), defaultHttpRetryPolicy (routes without `retries`), accessLogFile and
accessLogEncoding, connectTimeout, protocolDetectionTimeout, pathNormalization, rootNamespace;
each checked against Python upstreams or in the derived configuration, and what has no
equivalent refused with its position and field path."""
import json
import os
import time

import pytest

from conftest import free_port
from proxy_util import FakeUpstream, echo_handler, flaky_upstream, respond
from test_proxy_istio import own, request, service_entry, stream

VS_NO_RETRIES = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - match: [{uri: {prefix: /own}}]
    retries: {attempts: 0}
    route: [{destination: {host: orders}}]
  - route: [{destination: {host: orders}}]
"""


def derived(run_cli, tmp_path, *docs, env=None):
    f = tmp_path / "istio.yaml"
    f.write_text(stream(*docs))
    p = run_cli("proxy", "-c", str(f), "--check", "--print", env=env or {"POD_NAMESPACE": "shop"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout[:p.stdout.rindex("}") + 1]), p.stderr


def test_default_http_retry_policy_for_routes_without_retries(sidecar_run):
    """Two 503s then 200: the mesh default (3 attempts on 503) retries through them on a route
    without `retries`; a route with its own `retries: {attempts: 0}` does not retry."""
    up, calls = flaky_upstream(failures=2)
    port = free_port()
    mesh = "defaultHttpRetryPolicy:\n  attempts: 3\n  retryOn: 503\n"
    sidecar_run("proxy", config=stream(own(port), mesh,
                                       service_entry("orders", 9080, [(up, {})]), VS_NO_RETRIES))
    assert request(port, "orders", "/a") == [(200, b"ok")]
    assert calls == ["/a", "/a", "/a"]
    up.close()
    up2, calls2 = flaky_upstream(failures=1)
    port2 = free_port()
    sidecar_run("proxy", config=stream(own(port2), mesh,
                                       service_entry("orders", 9080, [(up2, {})]), VS_NO_RETRIES))
    assert request(port2, "orders", "/own")[0][0] == 503
    assert calls2 == ["/own"]
    up2.close()


def test_access_log_file_and_path_normalization(sidecar_run):
    """accessLogFile "" turns the access log off; /dev/stdout keeps it (JSON lines);
    pathNormalization MERGE_SLASHES merges slashes before routing and upstream."""
    echo = FakeUpstream(echo_handler)
    for file, logged in (('""', False), ("/dev/stdout", True)):
        port = free_port()
        doc = json.dumps({"listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                                         "direction": "outbound", "routes": []}],
                          "workload": {"namespace": "shop"}})
        sc = sidecar_run("proxy", config=stream(
            doc, f"accessLogFile: {file}\npathNormalization: {{normalization: MERGE_SLASHES}}\n",
            service_entry("orders", 9080, [(echo, {})])))
        st, body = request(port, "orders", "//x//y")[0]
        assert st == 200 and json.loads(body)["target"] == "/x/y", body
        time.sleep(0.2)
        lines = [ln for ln in sc.logs().splitlines() if '"path"' in ln and ln.startswith("{")]
        assert bool(lines) == logged, sc.logs()
        if logged:
            assert json.loads(lines[-1])["path"] == "/x/y"
    echo.close()


def test_concurrency_and_termination_drain(sidecar_run):
    """concurrency: 3 runs three workers (threads); terminationDrainDuration is the drain."""
    app = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"app"))
    port = free_port()
    sc = sidecar_run("proxy", config=stream(
        own(port), "defaultConfig:\n  concurrency: 3\n  terminationDrainDuration: 7s\n",
        service_entry("orders", 9080, [(app, {})])))
    assert request(port, "orders") == [(200, b"app")]
    cfg = json.loads(sc.get("/config")[1])
    assert (cfg["workers"], cfg["drain_timeout"]) == (3, "7s"), cfg
    names = [open(f"/proc/{sc.proc.pid}/task/{t}/comm").read().strip()
             for t in os.listdir(f"/proc/{sc.proc.pid}/task")]
    with_one = len(names)
    app.close()
    port1 = free_port()
    sc1 = sidecar_run("proxy", config=stream(own(port1), "defaultConfig: {concurrency: 1}\n"))
    assert with_one - len(os.listdir(f"/proc/{sc1.proc.pid}/task")) == 2


def test_outbound_traffic_policy_and_sidecar_override(run_cli, tmp_path):
    """REGISTRY_ONLY mesh-wide drops the written-out outbound listener's original-destination
    route; a Sidecar's own ALLOW_ANY overrides it."""
    up = FakeUpstream(echo_handler)
    se = service_entry("orders", 9080, [(up, {})])
    d, _ = derived(run_cli, tmp_path, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", se)
    assert [r["name"] for r in d["listeners"][1]["routes"]] == ["orders.shop.svc.cluster.local"]
    sidecar = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
               "metadata: {name: default, namespace: shop}\n"
               "spec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n")
    d, _ = derived(run_cli, tmp_path, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", se,
                   sidecar)
    assert d["listeners"][1]["routes"][-1] == {"name": "outbound", "cluster": "outbound"}
    up.close()


def test_timeouts_root_namespace_and_notes(run_cli, tmp_path):
    mesh = """connectTimeout: 3s
protocolDetectionTimeout: 250ms
rootNamespace: mesh-root
h2UpgradePolicy: DO_NOT_UPGRADE
ingressClass: istio
defaultConfig:
  drainDuration: 45s
  holdApplicationUntilProxyStarts: true
  proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}
  discoveryAddress: istiod.istio-system.svc:15012
"""
    port = free_port()
    lst = json.dumps({"listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                                     "direction": "outbound", "protocol": "auto",
                                     "routes": []}], "workload": {"namespace": "shop"}})
    d, err = derived(run_cli, tmp_path, lst, mesh)
    assert (d["connect_timeout"], d["mesh_root_namespace"]) == ("3s", "mesh-root")
    assert d["listeners"][0]["protocol_detection_timeout"] == "250ms"
    for note in ("drainDuration is Envoy's hot-restart drain",
                 "holdApplicationUntilProxyStarts orders the pod's start",
                 "proxyMetadata sets environment variables of Istio's agent",
                 "MeshConfig.defaultConfig: discoveryAddress is accepted and has no effect",
                 "MeshConfig: ingressClass is accepted and has no effect"):
        assert note in err, err


def test_enable_tracing_false(run_cli, tmp_path):
    mesh = """enableTracing: false
extensionProviders:
- name: otel
  opentelemetry: {service: collector.observability.svc.cluster.local, port: 4318,
                  http: {path: /v1/traces}}
defaultProviders: {tracing: [otel]}
"""
    d, err = derived(run_cli, tmp_path, own(free_port()), mesh)
    assert "tracing" not in d
    assert "enableTracing is false" in err
    d, _ = derived(run_cli, tmp_path, own(free_port()), mesh.replace("false", "true"))
    assert "tracing" in d


REFUSALS = [
    ("accessLogFormat: \"[%START_TIME%] %REQ(:METHOD)%\\n\"\n",
     "3:18: MeshConfig: accessLogFormat is not supported"),
    ("accessLogFile: /var/log/istio/access.log\n",
     "3:16: MeshConfig: accessLogFile /var/log/istio/access.log: the access log goes to "
     "/dev/stdout or nowhere"),
    ("inboundTrafficPolicy: {mode: PASSTHROUGH}\n",
     "MeshConfig: inboundTrafficPolicy.mode PASSTHROUGH is not supported"),
    ("h2UpgradePolicy: UPGRADE\n", "MeshConfig: h2UpgradePolicy UPGRADE mesh-wide is not "
     "supported"),
    ("outboundTrafficPolicy: {mode: SOMETIMES}\n",
     "outboundTrafficPolicy.mode SOMETIMES is not one of ALLOW_ANY, REGISTRY_ONLY"),
    ("connectTimeout: 3s\ntrustDomain: example.org\n", "MeshConfig: trustDomain is not supported"),
    ("defaultConfig: {concurrency: -1}\n", "MeshConfig.defaultConfig: concurrency must be 0 or "
     "more"),
    ("defaultConfig: {tracing: {zipkin: {address: z:9411}}}\n",
     "MeshConfig.defaultConfig: tracing is not supported"),
    ("defaultHttpRetryPolicy: {attempts: 2, retryOn: bogus}\n",
     "MeshConfig.defaultHttpRetryPolicy: retryOn bogus is not supported"),
    ("defaultConfig: {terminationDrainDuration: 5s}\n",
     "MeshConfig.defaultConfig: the proxy document sets drain_timeout too (line 1)"),
]


@pytest.mark.parametrize("mesh,want", REFUSALS)
def test_refusals(run_cli, tmp_path, mesh, want):
    f = tmp_path / "istio.yaml"
    up = FakeUpstream(echo_handler)
    f.write_text(stream(own(free_port(), drain_timeout="3s"), mesh,
                        service_entry("orders", 9080, [(up, {})]), VS_NO_RETRIES))
    p = run_cli("proxy", "-c", str(f), "--check")
    up.close()
    assert p.returncode == 1, p.stderr
    assert want in p.stderr, p.stderr
    assert p.stderr.startswith(f"sidecar proxy: {f}:"), p.stderr
