# SPDX-License-Identifier: Apache-2.0
"""Distributed tracing: the real sidecar in front of a real upstream (nginx, which echoes the trace
headers it received), exporting spans to fake collectors written from the OTLP/HTTP and Zipkin v2
APIs (fake_otlp.py). Covered: a SERVER span per request with the OpenTelemetry HTTP attributes and
the proxy's own, in OTLP protobuf, OTLP JSON and Zipkin; W3C traceparent/tracestate and B3 single
and multi headers read (trace id kept, parent set) and written; two chained sidecars producing a
parent CLIENT span and a child SERVER span of one trace; sampling at 10% over 10,000 requests
within statistical bounds, parent-based and forced decisions; a collector that is down, slow,
answers 503 or rejects part of a batch, with every span counted by what became of it and requests
no slower; reload changing the sampling rate; gRPC status from the response."""
import json
import math
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, http_get
from config_peers import Nginx, nginx_http
from fake_otlp import FakeOTLP, FakeZipkin
from metrics_util import env_without_proxies, mapped_libs
from proxy_util import Client, metric, proxy_config, wait_for
from tls_util import curl, pki  # noqa: F401 - pki is a fixture

ECHO = ("tp=$http_traceparent|ts=$http_tracestate|b3=$http_b3|tid=$http_x_b3_traceid|"
        "sid=$http_x_b3_spanid|pid=$http_x_b3_parentspanid|sampled=$http_x_b3_sampled|"
        "flags=$http_x_b3_flags")


@pytest.fixture
def nginx(tmp_path):
    root = tmp_path / "nginx"
    port = free_port()
    conf = nginx_http(root, f"""server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{ECHO}"; }}
        location /fail {{ return 503 "down"; }}
        location /grpc {{
            add_header grpc-status 5 always;
            add_header grpc-message "not found" always;
            default_type application/grpc;
            return 200 "";
        }}
    }}""")
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    n = Nginx(root, conf, port=port).start()
    yield n
    n.stop()


@pytest.fixture
def otlp(tmp_path):
    c = FakeOTLP(tmp_path)
    yield c
    c.close()


@pytest.fixture
def zipkin(tmp_path):
    c = FakeZipkin(tmp_path)
    yield c
    c.close()


def echoed(body):
    return dict(kv.split("=", 1) for kv in body.decode().split("|"))


def config(port, up_port, tracing, direction="inbound", name="in", **extra):
    return proxy_config(
        [{"name": name, "address": f"127.0.0.1:{port}", "direction": direction,
          "routes": [{"name": "api", "match": {"prefix": "/"}, "cluster": "app"}]}],
        [{"name": "app", "endpoints": [f"127.0.0.1:{up_port}"]}],
        tracing=tracing, access_log="off", **extra)


def tracing(collector, provider="otlp_http", **kw):
    t = {"provider": provider, "endpoint": collector.url, "sampling": 100,
         "batch_interval": "50ms"}
    t.update(kw)
    return t


def spans_metric(sc, result):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_tracing_spans_total", result=result) or 0


def request(port, path="/", headers=()):
    c = Client(port)
    try:
        return c.request(path=path, headers=list(headers))
    finally:
        c.close()


TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("provider", ["otlp_http", "otlp_json"])
def test_otlp_span_attributes_and_w3c(sidecar_run, nginx, otlp, provider):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, provider, propagation=["w3c", "b3multi"])),
                     env={"POD_NAME": "reviews-v1-abc", "POD_NAMESPACE": "shop"})
    r = request(port, "/items?id=7", headers=[("traceparent", TP), ("tracestate", "rojo=00f067aa0ba902b7"),
                                              ("User-Agent", "tester/1.0"),
                                              ("X-Request-Id", "req-42")])
    assert r.status == 200
    up = echoed(r.body)
    # The upstream sees the same trace with this hop's span as its parent, flags kept.
    assert up["tp"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and up["tp"].endswith("-01")
    ours = up["tp"].split("-")[2]
    assert ours != "00f067aa0ba902b7"
    assert up["ts"] == "rojo=00f067aa0ba902b7", "tracestate passes through"
    # b3multi as asked, with the same ids.
    assert up["tid"] == "4bf92f3577b34da6a3ce929d0e0e4736" and up["sid"] == ours
    assert up["pid"] == "00f067aa0ba902b7" and up["sampled"] == "1"
    (s,) = otlp.wait_spans(1)
    assert otlp.requests[0][1] == ("application/x-protobuf" if provider == "otlp_http"
                                   else "application/json")
    assert s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert s["parent_id"] == "00f067aa0ba902b7"
    assert s["span_id"] == ours
    assert s["kind"] == "SERVER"
    assert s["name"] == "GET /"
    assert s["trace_state"] == "rojo=00f067aa0ba902b7"
    assert s["end"] > s["start"] > (time.time() - 60) * 1e9
    a = s["attrs"]
    assert a["http.request.method"] == "GET"
    assert a["network.protocol.version"] == "1.1"
    assert a["url.path"] == "/items" and a["url.query"] == "id=7"
    assert a["url.scheme"] == "http"
    assert a["http.response.status_code"] == 200
    assert a["server.address"] == "test"
    assert a["network.peer.address"] == "127.0.0.1" and a["network.peer.port"] > 0
    assert a["user_agent.original"] == "tester/1.0"
    assert a["http.route"] == "/"
    assert a["http.request.header.x-request-id"] == "req-42"
    assert a["sidecar.listener"] == "in" and a["sidecar.route"] == "api"
    assert a["sidecar.cluster"] == "app"
    assert a["sidecar.upstream.endpoint"] == f"127.0.0.1:{nginx.port}"
    assert a["sidecar.upstream.duration_us"] >= 0
    assert not s["error"]
    res = s["resource"]
    assert res["service.name"] == "reviews-v1-abc"
    assert res["k8s.pod.name"] == "reviews-v1-abc"
    assert res["k8s.namespace.name"] == "shop" and res["service.namespace"] == "shop"
    assert s["scope"] == "sidecar"
    assert wait_for(lambda: spans_metric(sc, "exported") == 1)
    assert spans_metric(sc, "sampled") == 1
    assert not otlp.errors


def test_connection_attributes_follow_host_and_connection(sidecar_run, nginx, otlp):
    """server.* and network.peer.* are encoded once per connection and reused for its next spans:
    a keep-alive connection that changes its Host gets the new server.address and server.port,
    and the next connection (which may take over the first one's memory) its own peer port."""
    port = free_port()
    sidecar_run("proxy", config=config(port, nginx.port, tracing(otlp)))
    want = []
    for hosts in (["a.example:8080", "a.example:8080", "b.example", "a.example:8080"],
                  ["c.example:81"]):
        c = Client(port)
        try:
            peer = c.sock.getsockname()[1]
            for h in hosts:
                c.send(f"GET /h HTTP/1.1\r\nHost: {h}\r\n\r\n".encode())
                assert c.read_response().status == 200
                name, _, p = h.partition(":")
                want.append((peer, name, int(p or 80)))
        finally:
            c.close()
    spans = otlp.wait_spans(5)
    got = [(s["attrs"]["network.peer.port"], s["attrs"]["server.address"],
            s["attrs"]["server.port"]) for s in spans]
    assert got == want
    assert all(s["attrs"]["network.peer.address"] == "127.0.0.1" for s in spans)


@pytest.mark.parametrize("provider", ["otlp_http", "zipkin"])
def test_keepalive_spans_carry_the_first_ones_attributes(sidecar_run, nginx, otlp, zipkin,
                                                          provider):
    """The later requests of a keep-alive connection are recorded from what the connection keeps
    (its own attributes and its last request's method and path, and its route's and endpoint's):
    their spans carry the same attributes as its first one, and a 503 among them (recorded the
    general way, as an error) does too; a request of another path, method or with a query gets
    its own."""
    coll = otlp if provider == "otlp_http" else zipkin
    port = free_port()
    sidecar_run("proxy", config=config(port, nginx.port, tracing(coll, provider)))
    reqs = [("GET", "/items/a"), ("GET", "/items/a"), ("GET", "/fail"), ("GET", "/fail"),
            ("GET", "/items/a?q=1"), ("GET", "/items/a?q=1"), ("HEAD", "/items/a"),
            ("GET", "/items/a"), ("GET", "/items/b"), ("GET", "/items/b")]
    c = Client(port)
    try:
        for i, (method, path) in enumerate(reqs):
            r = c.request(method=method, path=path,
                          headers=[("X-Request-Id", f"req-{i}"), ("User-Agent", "ka/1")])
            assert r.status == (503 if path == "/fail" else 200)
    finally:
        c.close()
    spans = sorted(coll.wait_spans(len(reqs)),
                   key=lambda s: int(s["attrs"]["http.request.header.x-request-id"][4:]))
    varying = {"url.path", "url.query", "http.request.method", "http.request.header.x-request-id",
               "sidecar.upstream.duration_us", "http.response.status_code", "error.type",
               "sidecar.retries", "sidecar.response_flags", "error"}
    same = [{k: v for k, v in s["attrs"].items() if k not in varying} for s in spans]
    assert {"url.scheme", "sidecar.listener", "network.protocol.version",
            "server.address", "server.port", "network.peer.address", "network.peer.port",
            "user_agent.original", "http.route", "sidecar.route", "sidecar.cluster",
            "sidecar.upstream.endpoint"} <= set(same[0])
    for i, s in enumerate(spans):
        a = s["attrs"]
        method, target = reqs[i]
        path, _, query = target.partition("?")
        fail = path == "/fail"
        assert same[i] == same[0]
        assert s["name"] == f"{method} /"
        assert a["http.request.method"] == method
        assert a["url.path"] == path
        assert a.get("url.query") == (query or None)
        assert a["http.request.header.x-request-id"] == f"req-{i}"
        if provider == "otlp_http":
            assert a["http.response.status_code"] == (503 if fail else 200)
            assert a["sidecar.upstream.duration_us"] >= 0
        assert ("error.type" in a) == fail and bool(s["error"]) == fail


def test_new_trace_error_status_and_grpc(sidecar_run, nginx, otlp):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port, tracing(otlp)))
    r = request(port, "/")
    up = echoed(r.body)
    tid = up["tp"].split("-")[1]
    assert len(tid) == 32 and up["tp"].endswith("-01")
    assert up["tid"] == up["b3"] == "", "OTLP's default propagation is W3C only"
    assert request(port, "/fail").status == 503
    assert request(port, "/grpc").status == 200
    spans = {s["attrs"]["url.path"]: s for s in otlp.wait_spans(3)}
    assert spans["/"]["trace_id"] == tid and spans["/"]["parent_id"] is None
    f = spans["/fail"]
    assert f["error"] and f["attrs"]["error.type"] == "503"
    g = spans["/grpc"]
    assert g["attrs"]["rpc.grpc.status_code"] == 5 and g["attrs"]["rpc.system"] == "grpc"
    assert not g["error"]
    sc.stop()


def test_mtls_principal_https_and_app_label(sidecar_run, nginx, otlp, pki):  # noqa: F811
    """The peer's mTLS identity lands on the span; service.name comes from the app label."""
    port = free_port()
    cfg = json.loads(config(port, nginx.port, tracing(otlp)))
    cfg["listeners"][0]["tls"] = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                                  "client_ca": str(pki / "ca.pem"), "client_cert": "require"}
    cfg["listeners"][0]["mtls"] = "strict"
    cfg["workload"] = {"namespace": "shop", "labels": {"app": "reviews", "version": "v1"}}
    sc = sidecar_run("proxy", config=json.dumps(cfg))
    rc, body, code = curl(f"https://localhost:{port}/secure", "--cacert", str(pki / "ca.pem"),
                          "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"))
    assert rc == 0 and code == 200
    (s,) = otlp.wait_spans(1)
    assert s["attrs"]["sidecar.peer.principal"] == "cluster.local/ns/default/sa/client"
    assert s["attrs"]["url.scheme"] == "https"
    assert s["attrs"]["server.address"] == "localhost"
    assert s["attrs"]["server.port"] == port
    assert s["resource"]["service.name"] == "reviews"
    assert s["resource"]["k8s.namespace.name"] == "shop"
    sc.stop()


def test_b3_single_and_multi_in_and_out(sidecar_run, nginx, otlp):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, "otlp_json", propagation=["b3"])))
    # B3 single header in, with a 64-bit trace id: kept (left-padded), parent set.
    r = request(port, "/", headers=[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-1")])
    up = echoed(r.body)
    assert up["tp"] == "" and up["tid"] == "", "only the single b3 header is written"
    tid, sid, state, pid = up["b3"].split("-")
    assert tid == "0000000000000000a3ce929d0e0e4736" and state == "1"
    assert pid == "e457b5a2e4d86bd1"
    # B3 multi in.
    r = request(port, "/m", headers=[("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
                                     ("X-B3-SpanId", "05e3ac9a4f6e3b90"),
                                     ("X-B3-Sampled", "1")])
    m = echoed(r.body)["b3"].split("-")
    assert m[0] == "80f198ee56343ba864fe8b2a57d3eff7" and m[3] == "05e3ac9a4f6e3b90"
    spans = {s["attrs"]["url.path"]: s for s in otlp.wait_spans(2)}
    assert spans["/"]["trace_id"] == tid and spans["/"]["parent_id"] == "e457b5a2e4d86bd1"
    assert spans["/"]["span_id"] == sid
    assert spans["/m"]["parent_id"] == "05e3ac9a4f6e3b90"
    # Debug (x-b3-flags: 1) is kept as debug downstream.
    r = request(port, "/d", headers=[("X-B3-Flags", "1")])
    assert echoed(r.body)["b3"].split("-")[2] == "d"
    sc.stop()


def test_zipkin_export(sidecar_run, nginx, zipkin):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(zipkin, "zipkin", service_name="reviews",
                                                    compression="gzip")))
    r = request(port, "/", headers=[("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
                                    ("X-B3-SpanId", "05e3ac9a4f6e3b90"), ("X-B3-Sampled", "1")])
    assert r.status == 200
    up = echoed(r.body)
    assert up["tp"] == "", "Zipkin's default propagation is B3 multi only"
    assert up["tid"] == "80f198ee56343ba864fe8b2a57d3eff7" and up["pid"] == "05e3ac9a4f6e3b90"
    assert request(port, "/fail").status == 503
    spans = {s["attrs"]["url.path"]: s for s in zipkin.wait_spans(2)}
    s = spans["/"]
    assert s["trace_id"] == "80f198ee56343ba864fe8b2a57d3eff7"
    assert s["parent_id"] == "05e3ac9a4f6e3b90" and s["kind"] == "SERVER"
    assert s["resource"]["service.name"] == "reviews"
    assert s["attrs"]["http.response.status_code"] == "200"
    assert s["remote"]["ipv4"] == "127.0.0.1"
    assert spans["/fail"]["error"]
    assert all(enc == "gzip" for _, _, enc in zipkin.requests)
    assert wait_for(lambda: spans_metric(sc, "exported") == 2)
    sc.stop()


def test_two_sidecars_parent_and_child(sidecar_run, nginx, otlp):
    """app -> outbound sidecar (CLIENT span) -> inbound sidecar (SERVER span) -> nginx."""
    inb, outb = free_port(), free_port()
    server = sidecar_run("proxy", config=config(inb, nginx.port, tracing(otlp)),
                         env={"POD_NAME": "backend"})
    client = sidecar_run("proxy", config=config(outb, inb, tracing(otlp), direction="outbound",
                                                name="out"), env={"POD_NAME": "frontend"})
    r = request(outb, "/chain")
    assert r.status == 200
    up = echoed(r.body)
    spans = otlp.wait_spans(2)
    by_kind = {s["kind"]: s for s in spans}
    c, s = by_kind["CLIENT"], by_kind["SERVER"]
    assert c["trace_id"] == s["trace_id"] == up["tp"].split("-")[1]
    assert c["parent_id"] is None, "the outbound sidecar started the trace"
    assert s["parent_id"] == c["span_id"], "the inbound span is the child of the outbound one"
    assert up["tp"].split("-")[2] == s["span_id"], "the app sees the inbound span as parent"
    assert c["resource"]["service.name"] == "frontend"
    assert s["resource"]["service.name"] == "backend"
    assert c["start"] <= s["start"] and s["end"] <= c["end"] + 1_000_000
    server.stop()
    client.stop()


def keepalive(port, n, path="/", headers=()):
    """Sends <n> requests on one connection; returns their statuses."""
    c = Client(port)
    out = []
    try:
        for _ in range(n):
            out.append(c.request(path=path, headers=list(headers)).status)
    finally:
        c.close()
    return out


def test_sampling_rate_parent_and_forced(sidecar_run, nginx, otlp):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, sampling=10, max_queue_size=20000,
                                                    max_batch_size=1000)))
    n = 10000
    assert set(keepalive(port, n)) == {200}
    sampled = spans_metric(sc, "sampled")
    # Binomial(10000, 0.1): mean 1000, sd 30; five standard deviations either side.
    assert abs(sampled - 1000) < 5 * math.sqrt(n * 0.1 * 0.9), sampled
    assert wait_for(lambda: spans_metric(sc, "exported") == sampled, timeout=15)
    assert len(otlp.wait_spans(int(sampled))) == sampled
    # A sampled parent is kept, an unsampled one is not, whatever the rate.
    before = spans_metric(sc, "sampled")
    keepalive(port, 50, headers=[("traceparent", TP)])
    keepalive(port, 50, headers=[("traceparent", TP[:-2] + "00")])
    keepalive(port, 50, headers=[("X-B3-Sampled", "0")])
    assert spans_metric(sc, "sampled") == before + 50
    # Forced: x-client-trace-id (the default force_header) and B3 debug.
    keepalive(port, 20, headers=[("x-client-trace-id", "abc")])
    keepalive(port, 20, headers=[("b3", "d")])
    assert spans_metric(sc, "sampled") == before + 90
    sc.stop()


def test_unsampled_requests_propagate_without_spans(sidecar_run, nginx, otlp):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port, tracing(otlp, sampling=0)))
    up = echoed(request(port, "/").body)
    assert up["tp"].endswith("-00")
    up = echoed(request(port, "/", headers=[("traceparent", TP)]).body)
    assert up["tp"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and up["tp"].endswith("-01")
    assert wait_for(lambda: spans_metric(sc, "exported") == 1)
    assert spans_metric(sc, "sampled") == 1
    sc.stop()


def test_reload_changes_sampling(sidecar_run, nginx, otlp):
    port = free_port()
    # One worker: it adopts the new snapshot before /reload answers (a second worker would take
    # it on its own loop a moment later).
    sc = sidecar_run("proxy", config=config(port, nginx.port, tracing(otlp, sampling=0),
                                            workers=1))
    keepalive(port, 100)
    assert spans_metric(sc, "sampled") == 0
    sc.config_path.write_text(config(port, nginx.port, tracing(otlp, sampling=100), workers=1))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    keepalive(port, 100)
    assert spans_metric(sc, "sampled") == 100
    assert len(otlp.wait_spans(100)) == 100
    sc.stop()


def timed(port, n):
    """Latencies of <n> requests on one connection, seconds."""
    c = Client(port)
    out = []
    try:
        for _ in range(n):
            t = time.monotonic()
            assert c.request(path="/").status == 200
            out.append(time.monotonic() - t)
    finally:
        c.close()
    return out


def test_slow_collector_drops_and_never_slows_requests(sidecar_run, nginx, otlp):
    port = free_port()
    otlp.delay = 3.0  # every export stalls 3 s
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, max_queue_size=20, max_batch_size=10,
                                                    timeout="10s")))
    lat = timed(port, 500)
    # The exporter holds one batch in flight and a 20-span queue: the rest are dropped and
    # counted, none is waited for. Requests stay far under the collector's stall.
    assert max(lat) < 1.0, max(lat)
    assert spans_metric(sc, "sampled") == 500
    assert spans_metric(sc, "dropped_queue_full") >= 500 - 20 - 10 * 2
    # The exporter reports the workers' drops on its next tick (rate-limited), not at once.
    assert wait_for(lambda: 'spans dropped' in sc.logs(), timeout=10)
    otlp.delay = 0
    assert wait_for(lambda: spans_metric(sc, "exported") + spans_metric(sc, "dropped_queue_full")
                    == 500, timeout=20)
    sc.stop()


def test_plain_http_collector_without_libcurl(sidecar_run, nginx, otlp):
    """A plain http:// collector is sent to by the proxy's own HTTP/1.1 client: spans are exported
    and acknowledged (gzip and a configured header included) while libcurl is never mapped into
    the process; an https:// collector is reached through libcurl, loaded when tracing starts."""
    port = free_port()
    sc = sidecar_run("proxy", env=env_without_proxies(), config=config(
        port, nginx.port, tracing(otlp, compression="gzip", max_batch_size=4,
                                  headers={"x-api-key": "k1"})))
    keepalive(port, 9)
    spans = otlp.wait_spans(9)
    assert len(spans) == 9 and all(s["attrs"]["http.response.status_code"] == 200 for s in spans)
    assert all(enc == "gzip" for _, _, enc in otlp.requests)
    assert all(h["x-api-key"] == "k1" and h["content-type"] == "application/x-protobuf"
               and h["host"] == otlp.url.split("/")[2] for h in otlp.headers)
    assert wait_for(lambda: spans_metric(sc, "exported") == 9)
    assert "libcurl" not in mapped_libs(sc.proc.pid)
    sc.stop()

    dead = free_port()
    t = {"provider": "otlp_http", "endpoint": f"https://127.0.0.1:{dead}/v1/traces",
         "sampling": 100, "batch_interval": "50ms", "max_retries": 0}
    sc = sidecar_run("proxy", env=env_without_proxies(), config=config(port, nginx.port, t))
    assert request(port, "/").status == 200
    assert wait_for(lambda: spans_metric(sc, "dropped_export_failed") == 1, timeout=15)
    assert "libcurl" in mapped_libs(sc.proc.pid)
    sc.stop()


def test_collector_down_counts_failed_exports(sidecar_run, nginx):
    port = free_port()
    dead = free_port()  # nothing listens there
    t = {"provider": "otlp_http", "endpoint": f"http://127.0.0.1:{dead}/v1/traces",
         "sampling": 100, "batch_interval": "50ms", "max_retries": 2,
         "initial_backoff": "20ms", "max_backoff": "50ms"}
    sc = sidecar_run("proxy", config=config(port, nginx.port, t))
    lat = timed(port, 50)
    assert max(lat) < 1.0
    assert wait_for(lambda: spans_metric(sc, "dropped_export_failed") == 50, timeout=15)
    assert spans_metric(sc, "exported") == 0
    text = sc.get("/metrics")[1].decode()
    # Three tries per batch (two retries), each observed.
    assert metric(text, "sidecar_tracing_export_duration_seconds_count") >= 3
    sc.stop()


def test_503_with_retry_after_is_retried(sidecar_run, nginx, otlp):
    port = free_port()
    otlp.status, otlp.retry_after = 503, 1
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, max_retries=5,
                                                    initial_backoff="10ms")))
    assert request(port, "/").status == 200
    assert wait_for(lambda: len(otlp.requests) >= 1)
    t0 = time.monotonic()
    otlp.status = None
    otlp.wait_spans(1, timeout=10)
    # The retry waited for Retry-After (1 s) rather than the 10 ms backoff.
    assert len(otlp.requests) == 2
    assert wait_for(lambda: spans_metric(sc, "exported") == 1)
    assert spans_metric(sc, "dropped_export_failed") == 0
    del t0
    sc.stop()


def test_partial_success_counts_rejected(sidecar_run, nginx, otlp):
    port = free_port()
    otlp.reject = 2
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, max_batch_size=5,
                                                    batch_interval="10s")))
    keepalive(port, 5)  # one full batch
    assert wait_for(lambda: spans_metric(sc, "exported") == 3)
    assert spans_metric(sc, "dropped_export_failed") == 2
    sc.stop()


def test_bad_tracing_config_refused(run_cli, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("tracing:\n  provider: otlp_http\n  sampling: 150\n")
    r = run_cli("proxy", "--check", "-c", str(p))
    assert r.returncode != 0 and "bad.yaml:3:" in r.stderr + r.stdout
    p.write_text("tracing:\n  provider: jaeger\n")
    r = run_cli("proxy", "--check", "-c", str(p))
    assert r.returncode != 0 and "bad.yaml:2:" in r.stderr + r.stdout
    p.write_text("tracing:\n  endpoint: ftp://x\n")
    r = run_cli("proxy", "--check", "-c", str(p))
    assert r.returncode != 0


def test_shutdown_flushes_queued_spans(sidecar_run, nginx, otlp):
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, nginx.port,
                                            tracing(otlp, batch_interval="1h")))
    keepalive(port, 7)
    assert spans_metric(sc, "sampled") == 7
    assert sc.stop() == 0
    assert len(otlp.wait_spans(7, timeout=2)) == 7


def test_http2_request_span(sidecar_run, nginx, otlp):
    """An HTTP/2 client's request (h2c with prior knowledge, curl) has its span, with protocol
    version 2, and the upstream gets the trace context over HTTP/1."""
    port = free_port()
    sidecar_run("proxy", config=config(port, nginx.port, tracing(otlp)))
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                          "%{http_code} %{http_version}", "-H", f"traceparent: {TP}",
                          f"http://127.0.0.1:{port}/h2?x=1"],
                         capture_output=True, text=True, timeout=20).stdout
    assert out == "200 2", out
    (s,) = otlp.wait_spans(1)
    assert s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    a = s["attrs"]
    assert a["network.protocol.version"] == "2"
    assert a["url.path"] == "/h2" and a["http.response.status_code"] == 200

