# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: gRPC health checks (a cluster's `health_check.grpc`). Real peers: grpcio servers
(grpcio_peers.py) serving grpc.health.v1.Health/Check, flipped between SERVING and NOT_SERVING,
and a grpcio client calling through the proxy; the endpoint leaves the pool and comes back."""
import http.server
import json
import threading

import grpc
import pytest
from grpcio_peers import NOT_SERVING, SERVING, GrpcServer
from conftest import free_port
from proxy_util import metric, proxy_config, wait_for
from test_proxy_cluster import log_events
from test_proxy_envoy import bootstrap, static_cluster
from tls_util import pki  # noqa: F401


def config(port, endpoints, hc, cluster_extra=None):
    c = {"name": "g", "endpoints": endpoints, "protocol": "http2", "health_check": hc,
         "outlier_detection": {"consecutive_5xx": 0}}
    c.update(cluster_extra or {})
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}",
                          "routes": [{"name": "r", "cluster": "g",
                                      "retry_policy": {"num_retries": 0}}]}], [c])


@pytest.fixture
def servers():
    started = []

    def start(*a, **kw):
        s = GrpcServer(*a, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def unary(port, payload=b"hello"):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        resp, c = call.with_call(payload, timeout=5)
        return resp, dict(c.initial_metadata())["x-server"]


def unhealthy(sc):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_upstream_endpoints_unhealthy",
                  cluster="g")


def test_grpc_health_check_takes_endpoint_out_and_back(sidecar_run, servers):
    a, b = servers("A"), servers("B")
    for s in (a, b):
        s.status["echo"] = SERVING
    port = free_port()
    hc = {"grpc": {"service": "echo", "authority": "echo.internal"}, "interval": "100ms",
          "timeout": "2s", "unhealthy_threshold": 2, "healthy_threshold": 2}
    sc = sidecar_run("proxy", config=config(port, [a.addr, b.addr], hc))
    assert wait_for(lambda: a.checks and b.checks, timeout=10)
    service, md = a.checks[0]
    assert service == "echo"
    assert md["user-agent"].startswith("sidecar-health-check")
    assert {unary(port)[1] for _ in range(6)} == {"A", "B"}

    a.status["echo"] = NOT_SERVING
    assert wait_for(lambda: log_events(sc, "endpoint out of load balancing"), timeout=15)
    ev = log_events(sc, "endpoint out of load balancing")[0]
    assert ev["endpoint"] == a.addr and ev["reason"] == "status NOT_SERVING"
    assert unhealthy(sc) == 1
    calls = a.calls
    for _ in range(8):
        assert unary(port) == (b"olleh", "B")
    assert a.calls == calls, "no call went to the NOT_SERVING endpoint"

    # A service the server does not know: grpc-status NOT_FOUND, logged with its message.
    del b.status["echo"]
    assert wait_for(lambda: len(log_events(sc, "endpoint out of load balancing")) == 2,
                    timeout=15)
    ev = log_events(sc, "endpoint out of load balancing")[1]
    assert ev["endpoint"] == b.addr and ev["reason"] == "grpc-status 5: unknown service"
    with pytest.raises(grpc.RpcError) as e:
        unary(port)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    a.status["echo"] = SERVING
    assert wait_for(lambda: log_events(sc, "endpoint back in load balancing"), timeout=15)
    assert log_events(sc, "endpoint back in load balancing")[0]["endpoint"] == a.addr
    for _ in range(4):
        assert unary(port) == (b"olleh", "A")
    b.status["echo"] = SERVING
    assert wait_for(lambda: len(log_events(sc, "endpoint back in load balancing")) == 2,
                    timeout=15)
    assert {unary(port)[1] for _ in range(8)} == {"A", "B"}
    assert unhealthy(sc) == 0


def test_grpc_health_check_whole_server_and_down_endpoint(sidecar_run, servers):
    """An empty grpc block checks the server as a whole (service ""); a closed port, an HTTP/1
    server (Python's http.server) and a server that stops fail their checks."""
    a = servers("A")
    dead = free_port()
    h1 = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=h1.serve_forever, daemon=True).start()
    h1.addr = f"127.0.0.1:{h1.server_address[1]}"
    port = free_port()
    hc = {"grpc": {}, "interval": "100ms", "timeout": "500ms", "unhealthy_threshold": 1,
          "healthy_threshold": 1}
    sc = sidecar_run("proxy", config=config(port, [a.addr, f"127.0.0.1:{dead}", h1.addr], hc))
    assert wait_for(lambda: len(log_events(sc, "endpoint out of load balancing")) == 2,
                    timeout=15)
    out = {e["endpoint"]: e["reason"] for e in log_events(sc, "endpoint out of load balancing")}
    assert set(out) == {f"127.0.0.1:{dead}", h1.addr}, out
    assert wait_for(lambda: a.checks) and a.checks[0][0] == ""
    for _ in range(4):
        assert unary(port)[1] == "A"
    a.close()
    assert wait_for(lambda: len(log_events(sc, "endpoint out of load balancing")) == 3,
                    timeout=15)
    h1.shutdown()
    h1.server_close()


def test_grpc_health_check_over_tls(sidecar_run, servers, pki):
    a = servers("A", tls=(pki / "server.key", pki / "server.pem"))
    port = free_port()
    hc = {"grpc": {"service": ""}, "interval": "100ms", "timeout": "2s",
          "unhealthy_threshold": 1, "healthy_threshold": 1}
    sc = sidecar_run("proxy", config=config(
        port, [f"localhost:{a.port}"], hc, {"tls": {"ca": str(pki / "ca.pem")}}))
    assert wait_for(lambda: len(a.checks) >= 2, timeout=10)
    assert not log_events(sc, "endpoint out of load balancing")
    a.status[""] = NOT_SERVING
    assert wait_for(lambda: log_events(sc, "endpoint out of load balancing"), timeout=15)
    assert log_events(sc, "endpoint out of load balancing")[0]["reason"] == "status NOT_SERVING"


def test_grpc_health_check_config_errors(run_cli, tmp_path):
    cases = [
        ({"path": "/h", "grpc": {}}, "more than one of path (HTTP), grpc and tcp"),
        ({"grpc": {"service": "x" * 300}}, "grpc service longer than 256 bytes"),
        ({"grpc": {"authority": "a b"}}, "authority has a space"),
        ({"grpc": {"nope": 1}}, "nope"),
    ]
    for hc, want in cases:
        p = tmp_path / "c.yaml"
        p.write_text(config(free_port(), ["127.0.0.1:1"], hc))
        r = run_cli("proxy", "--check", "-c", str(p))
        assert r.returncode != 0 and want in r.stderr + r.stdout, (hc, r.stderr + r.stdout)


def test_envoy_grpc_health_check(sidecar_run, servers):
    a, b = servers("A"), servers("B")
    for s in (a, b):
        s.status["pkg.Svc"] = SERVING
    port = free_port()
    cl = static_cluster("app", a.addr, b.addr, health_checks=[{
        "timeout": "1s", "interval": "0.1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
        "grpc_health_check": {"service_name": "pkg.Svc", "authority": "svc.example"}}])
    cl["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    sc = sidecar_run("proxy", config=json.dumps(bootstrap(port, vhs, [cl])))
    assert wait_for(lambda: a.checks and b.checks, timeout=10)
    assert a.checks[0][0] == "pkg.Svc"
    b.status["pkg.Svc"] = NOT_SERVING
    assert wait_for(lambda: log_events(sc, "endpoint out of load balancing"), timeout=15)
    assert log_events(sc, "endpoint out of load balancing")[0]["endpoint"] == b.addr
    for _ in range(4):
        assert unary(port)[1] == "A"
