# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: the HTTP/1.1 data path. Header rules, bodies both ways (Content-Length and
chunked with trailers), keep-alive and pooling, pipelining, HTTP/1.0 clients, local errors,
routing and the quick-start flags, against a fake upstream and raw-socket / curl clients."""
import json
import re
import socket
import subprocess
import time

import pytest

from conftest import free_port
from proxy_util import (Client, FakeUpstream, access_lines, echo, get, metric,  # noqa: F401
                        proxy_config, respond)

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def quick(sidecar_run, upstream, *extra):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", upstream, *extra])
    return sc, port


def test_proxy_quick_start_curl(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    out = subprocess.run(["curl", "-sS", "-i", f"http://127.0.0.1:{port}/hello?x=1"],
                         capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    head, body = out.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nVia: 1.1 sidecar" in head
    assert json.loads(body)["target"] == "/hello?x=1"
    line = access_lines(sc)[-1]
    assert line["status"] == 200 and line["method"] == "GET" and line["path"] == "/hello?x=1"
    assert line["route"] == "default" and line["cluster"] == "upstream"
    assert line["endpoint"] == echo.addr and line["flags"] == "-"
    assert UUID4.match(line["request_id"])


def test_proxy_forwarding_headers(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    r = get(port, "/h", headers=[
        ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
        ("Via", "1.1 edge"), ("X-Forwarded-Proto", "https"),
        ("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Upgrade", "h2c"),
        ("Trailer", "X-T"), ("X-Keep", "yes"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("X-Request-Id", "my-request-1"),
    ])
    assert r.status == 200
    got = r.json()
    names = [k.lower() for k, _ in got["headers"]]
    h = {k.lower(): v for k, v in got["headers"]}
    for hop in ("connection", "keep-alive", "proxy-connection", "te", "upgrade", "trailer",
                "x-drop-me"):
        assert hop not in names, hop
    assert h["x-keep"] == "yes"
    assert names.count("x-forwarded-for") == 1
    assert h["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    assert h["via"] == "1.1 edge, 1.1 sidecar"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-request-id"] == "my-request-1"
    tp = h["traceparent"].split("-")
    assert tp[0] == "00" and tp[1] == "0af7651916cd43dd8448eb211c80319c" and tp[3] == "01"
    assert len(tp[2]) == 16 and tp[2] != "b7ad6b7169203331"
    assert access_lines(sc)[-1]["request_id"] == "my-request-1"


def test_proxy_generates_ids_and_trace(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    seen = set()
    for _ in range(3):
        h = {k.lower(): v for k, v in get(port, "/").json()["headers"]}
        assert UUID4.match(h["x-request-id"])
        seen.add(h["x-request-id"])
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", h["traceparent"])
        assert h["x-forwarded-for"] == "127.0.0.1"
        assert h["via"] == "1.1 sidecar"
    assert len(seen) == 3
    # an invalid traceparent is replaced, not forwarded
    h = {k.lower(): v for k, v in get(port, "/", headers=[("traceparent", "garbage")])
         .json()["headers"]}
    assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", h["traceparent"])


def test_proxy_request_bodies(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    r = c.request("POST", "/p", body=b"x" * 100000)
    assert r.status == 200 and r.json()["body_len"] == 100000
    c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
    r = c.read_response()
    got = r.json()
    assert got["body_head"] == "hello world"
    assert "X-Trailer: yes" in got["trailers"]
    assert ["Transfer-Encoding", "chunked"] in got["headers"]
    c.close()


def test_proxy_chunked_response_with_trailers(sidecar_run):
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                     b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n")
        return True

    up = FakeUpstream(handler)
    sc, port = quick(sidecar_run, up.addr)
    c = Client(port)
    r = c.request()
    assert r.status == 200 and r.body == b"abcdefg" and b"X-Sum: 7" in r.trailers
    assert r.header("transfer-encoding") == "chunked"
    # HTTP/1.0 clients get the body without chunked framing, and the connection closes.
    c2 = Client(port)
    c2.send(b"GET / HTTP/1.0\r\n\r\n")
    r2 = c2.read_response()
    assert r2.status == 200 and r2.body == b"abcdefg"
    assert r2.header("transfer-encoding") is None and r2.header("connection") == "close"
    c.close()
    c2.close()
    up.close()


def test_proxy_keepalive_and_pool(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    for i in range(20):
        assert c.request(path=f"/{i}").status == 200
    c.close()
    for i in range(5):
        assert get(port, "/again").status == 200
    assert echo.connections == 1, "the upstream connection is pooled and reused"


def test_proxy_pipelining(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(5)) +
           b"POST /p5 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" +
           b"GET /p6 HTTP/1.1\r\nHost: t\r\n\r\n")
    for i in range(7):
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == f"/p{i}"
    c.close()


def test_proxy_pipelining_then_half_close(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
           b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    for p in ("/a", "/b", "/c"):
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == p
    assert c.closed_by_peer()
    c.close()


def test_proxy_start_fails_on_busy_port(run_cli):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    out = run_cli("proxy", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0")
    assert out.returncode == 1
    assert "address already in use" in out.stderr
    busy.close()


def test_proxy_max_connections(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr, "--max-connections", "2")
    a, b = Client(port), Client(port)
    assert a.request().status == 200 and b.request().status == 200
    c = Client(port)
    assert c.closed_by_peer(), "the third connection is refused"
    a.close()
    time.sleep(0.2)
    d = Client(port)
    assert d.request().status == 200
    b.close()
    d.close()


def test_proxy_http10(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(b"GET /a HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.header("connection") == "close"
    assert c.closed_by_peer()
    h = {k.lower(): v for k, v in r.json()["headers"]}
    assert h["via"] == "1.0 sidecar" and "host" in h
    c = Client(port)
    c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.header("connection").lower() == "keep-alive"
    c.send(b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.read_response().json()["target"] == "/c"
    c.close()


def test_proxy_head_and_204(sidecar_run):
    def handler(up, conn, req):
        if req.target == "/204":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        return True

    up = FakeUpstream(handler)
    sc, port = quick(sidecar_run, up.addr)
    c = Client(port)
    r = c.request("HEAD", "/")
    assert r.status == 200 and r.header("content-length") == "1000"
    assert c.request(path="/204").status == 204
    assert c.request("HEAD", "/").status == 200
    c.close()
    up.close()


def test_local_reply_to_head_has_no_body(sidecar_run):
    """A 502 the proxy writes itself answers HEAD with its head only (Content-Length as for GET):
    a body there would be read as the start of the next response on the connection."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()  # nothing listens there: every request gets the proxy's own 502
    sc, port = quick(sidecar_run, addr)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    raw = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        raw += d
    s.close()
    first, rest = raw.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 502") and b"Content-Length: " in first
    assert int(re.search(rb"Content-Length: (\d+)", first).group(1)) > 0
    assert rest.startswith(b"HTTP/1.1 502"), rest[:80]


@pytest.mark.parametrize("raw,status,reason", [
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, b""),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, b""),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431, b""),
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, b""),
    (b"GET / HTTP/1.1\r\nHost: t\r\n bad-fold\r\n\r\n", 400, b""),
])
def test_proxy_bad_requests(sidecar_run, echo, raw, status, reason):
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(raw)
    r = c.read_response()
    assert r.status == status
    assert len(r.body) > 1, "the reason is in the body"
    assert r.header("connection") == "close"
    c.close()
    assert echo.requests == []


def test_proxy_upstream_refused_502(sidecar_run):
    port = free_port()
    sc, lport = quick(sidecar_run, f"127.0.0.1:{port}", "--retries", "2")
    t = time.monotonic()
    r = get(lport, "/")
    assert r.status == 502
    assert time.monotonic() - t < 5
    line = access_lines(sc)[-1]
    assert "UF" in line["flags"] and "URX" in line["flags"] and line["retries"] == 2


def test_proxy_no_endpoint_503_and_no_route_404(sidecar_run, echo):
    port = free_port()
    cfg = proxy_config(
        [{"name": "main", "address": f"127.0.0.1:{port}",
          "routes": [{"match": {"prefix": "/empty"}, "cluster": "none"},
                     {"match": {"prefix": "/api", "methods": ["GET"]}, "cluster": "app"}]}],
        [{"name": "none", "endpoints": []}, {"name": "app", "endpoints": [echo.addr]}])
    sc = sidecar_run("proxy", config=cfg)
    assert get(port, "/empty/x").status == 503
    assert get(port, "/api/x").status == 200
    r = get(port, "/other")
    assert r.status == 404 and b"no route" in r.body
    assert get(port, "/api/x", method="DELETE").status == 404
    flags = [l["flags"] for l in access_lines(sc, 4)]
    assert "UH" in flags[0] and "NR" in flags[2]


def test_proxy_route_matching(sidecar_run):
    ups = {}
    for name in ("a", "b", "c", "d", "e"):
        ups[name] = FakeUpstream(lambda up, conn, req, n=name: respond(conn, 200, n.encode()))
    port = free_port()
    routes = [
        {"name": "exact", "match": {"path": "/exact"}, "cluster": "a"},
        {"name": "re", "match": {"regex": "/users/[0-9]+"}, "cluster": "b"},
        {"name": "hdr", "match": {"prefix": "/", "headers": [{"name": "x-canary",
                                                               "value": "1"}]}, "cluster": "c"},
        {"name": "nohdr", "match": {"prefix": "/n", "headers": [{"name": "x-debug",
                                                                  "present": False}]},
         "cluster": "d"},
        {"name": "default", "cluster": "e"},
    ]
    clusters = [{"name": n, "endpoints": [u.addr]} for n, u in ups.items()]
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "routes": routes}], clusters))
    assert get(port, "/exact").body == b"a"
    assert get(port, "/exact/more").body == b"e"
    assert get(port, "/users/42").body == b"b"
    assert get(port, "/users/42/x").body == b"e", "the regex matches the whole path"
    assert get(port, "/users/42?q=1").body == b"b", "the query is not part of the path"
    assert get(port, "/x", headers=[("X-Canary", "1")]).body == b"c"
    assert get(port, "/x", headers=[("X-Canary", "2")]).body == b"e"
    assert get(port, "/n").body == b"d"
    assert get(port, "/n", headers=[("X-Debug", "1")]).body == b"e"
    routes_seen = [l["route"] for l in access_lines(sc, 9)]
    assert routes_seen[:3] == ["exact", "default", "re"]
    for u in ups.values():
        u.close()


def test_proxy_check_rejects_unknown_cluster(run_cli, tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(proxy_config(
        [{"name": "l", "address": "127.0.0.1:1", "routes": [{"cluster": "nope"}]}],
        [{"name": "app", "endpoints": ["127.0.0.1:2"]}]))
    out = run_cli("proxy", "-c", str(cfg), "--check")
    assert out.returncode == 1
    assert 'unknown cluster "nope"' in out.stderr
    cfg.write_text(proxy_config(
        [{"name": "l", "address": "127.0.0.1:1",
          "routes": [{"cluster": "app", "retry_policy": {"retry_on": ["sometimes"]}}]}],
        [{"name": "app", "endpoints": ["127.0.0.1:2"]}]))
    out = run_cli("proxy", "-c", str(cfg), "--check")
    assert out.returncode == 1 and 'unknown retry_on "sometimes"' in out.stderr
    cfg.write_text(proxy_config(
        [{"name": "l", "address": "127.0.0.1:1",
          "routes": [{"cluster": "app", "match": {"regex": "([a-"}}]}],
        [{"name": "app", "endpoints": ["127.0.0.1:2"]}]))
    out = run_cli("proxy", "-c", str(cfg), "--check")
    assert out.returncode == 1 and "regex" in out.stderr
    out = run_cli("proxy", "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--check")
    assert out.returncode == 0, out.stderr


def test_proxy_access_log_off(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr, "--access-log", "off")
    assert get(port, "/").status == 200
    assert access_lines(sc, at_least=0) == []


def test_proxy_metrics(sidecar_run, echo):
    port = free_port()
    dead = free_port()
    cfg = proxy_config(
        [{"name": "main", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "dead", "match": {"prefix": "/dead"}, "cluster": "dead",
                      "retry_policy": {"num_retries": 1, "base_interval": "1ms"}},
                     {"name": "app", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]},
         {"name": "dead", "endpoints": [f"127.0.0.1:{dead}"]}])
    sc = sidecar_run("proxy", config=cfg)
    c = Client(port)
    for _ in range(3):
        assert c.request(path="/x").status == 200
    assert c.request(path="/dead").status == 502
    status, text, _ = sc.get("/metrics")
    text = text.decode()
    assert metric(text, "sidecar_requests_total", listener="main", route="app", cluster="app",
                  code="200") == 3
    assert metric(text, "sidecar_requests_total", listener="main", route="dead", cluster="dead",
                  code="502") == 1
    assert metric(text, "sidecar_upstream_rq_retry_total", cluster="dead") == 1
    assert metric(text, "sidecar_downstream_cx_active", listener="main") == 1
    assert metric(text, "sidecar_upstream_cx_active", cluster="app") == 1
    assert metric(text, "sidecar_request_duration_seconds_count", listener="main") == 4
    assert metric(text, "sidecar_upstream_rq_timeout_total", cluster="app") == 0
    c.close()
    assert sc.get("/config")[0] == 200


def test_proxy_expect_continue(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr)
    out = subprocess.run(["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary",
                          "@-", f"http://127.0.0.1:{port}/up"], input=b"y" * 5000,
                         capture_output=True, timeout=15)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["body_len"] == 5000


def test_proxy_dns_endpoint_and_least_request(sidecar_run, echo):
    host = socket.gethostname()
    try:
        if socket.gethostbyname(host) != "127.0.0.1":
            pytest.skip("the host name does not resolve to 127.0.0.1")
    except OSError:
        pytest.skip("the host name does not resolve")
    port = free_port()
    cfg = proxy_config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "routes": [{"cluster": "app"}]}],
        [{"name": "app", "endpoints": [f"{host}:{echo.port}", echo.addr],
          "lb_policy": "least_request", "dns_refresh": "200ms"}])
    sc = sidecar_run("proxy", config=cfg)
    for _ in range(10):
        assert get(port, "/").status == 200


def test_proxy_original_dst_cluster(sidecar_run, echo):
    """An outbound listener forwards to each request's own destination: the absolute-form
    target's authority or the Host header (names resolved), as the default outbound listener on
    127.0.0.1:15001 does."""
    port = free_port()
    cfg = proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{port}", "routes": [{"cluster": "dst"}]}],
        [{"name": "dst", "type": "original_dst"}])
    sc = sidecar_run("proxy", config=cfg)
    c = Client(port)
    c.send(f"GET http://{echo.addr}/abs?q=1 HTTP/1.1\r\nHost: {echo.addr}\r\n\r\n".encode())
    r = c.read_response()
    assert r.status == 200 and r.json()["target"] == "/abs?q=1"
    c.send(f"GET /host HTTP/1.1\r\nHost: {echo.addr}\r\n\r\n".encode())
    assert c.read_response().json()["target"] == "/host"
    host = socket.gethostname()
    try:
        resolvable = socket.gethostbyname(host) == "127.0.0.1"
    except OSError:
        resolvable = False
    if resolvable:
        c.send(f"GET /named HTTP/1.1\r\nHost: {host}:{echo.port}\r\n\r\n".encode())
        assert c.read_response().json()["target"] == "/named"
    c.send(b"GET /nowhere HTTP/1.1\r\nHost: no-such-host.invalid:81\r\n\r\n")
    assert c.read_response().status == 503
    c.close()
    line = access_lines(sc, 3)[0]
    assert line["endpoint"] == echo.addr and line["cluster"] == "dst"


def test_proxy_max_request_body_413(sidecar_run, echo):
    sc, port = quick(sidecar_run, echo.addr, "--max-request-body", "1KiB")
    assert get(port, "/", method="POST", body=b"a" * 1000).status == 200
    r = get(port, "/", method="POST", body=b"a" * 2000)
    assert r.status == 413 and b"max_request_body" in r.body
    c = Client(port)
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
           b"400\r\n" + b"b" * 1024 + b"\r\n" + b"400\r\n" + b"b" * 1024 + b"\r\n0\r\n\r\n")
    r = c.read_response()
    assert r.status == 413  # the echo answers only after the whole body
    c.close()
    assert all(len(q.body) <= 1024 for q in echo.requests)
