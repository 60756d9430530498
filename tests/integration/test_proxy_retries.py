# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: retries and their limits, and every timeout, against fake upstreams that fail on
purpose (503 twice then 200, reset before answering, stall past a deadline, stall mid-body)."""
import socket
import struct
import threading
import time

from conftest import free_port
from proxy_util import Client, FakeUpstream, access_lines, get, metric, proxy_config, respond


def flaky(failures, status=503):
    """An upstream that answers <status> <failures> times, then 200."""
    state = {"n": 0}

    def handler(up, conn, req):
        state["n"] += 1
        if state["n"] <= failures:
            return respond(conn, status, b"fail", reason="Unavailable")
        return respond(conn, 200, b"finally")

    return FakeUpstream(handler)


def one_route(port, clusters, route_extra=None, **extra):
    route = {"name": "r", "cluster": clusters[0]["name"]}
    route.update(route_extra or {})
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "routes": [route]}],
                        clusters, **extra)


def test_proxy_retry_503_twice_then_200(sidecar_run):
    up = flaky(2)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                               "--retries", "3"])
    r = get(port, "/")
    assert r.status == 200 and r.body == b"finally"
    assert len(up.requests) == 3
    line = access_lines(sc)[-1]
    assert line["retries"] == 2 and line["status"] == 200
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_upstream_rq_retry_total", cluster="upstream") == 2
    up.close()


def test_proxy_retry_limit_reached(sidecar_run):
    up = flaky(5)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                               "--retries", "1"])
    r = get(port, "/")
    assert r.status == 503 and r.body == b"fail", "the last upstream answer is passed on"
    assert len(up.requests) == 2
    up.close()


def test_proxy_post_not_retried_unless_allowed(sidecar_run):
    up = flaky(1)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                               "--retries", "2"])
    assert get(port, "/", method="POST", body=b"data").status == 503
    up.close()

    up2 = flaky(1)
    port2 = free_port()
    sidecar_run("proxy", config=one_route(
        port2, [{"name": "c", "endpoints": [up2.addr]}],
        {"retry_policy": {"num_retries": 2, "retry_non_idempotent": True}}))
    r = get(port2, "/", method="POST", body=b"payload")
    assert r.status == 200
    assert [q.body for q in up2.requests] == [b"payload", b"payload"], "the body is replayed"
    up2.close()


def test_proxy_retry_on_reset_uses_other_endpoint(sidecar_run):
    def reset(up, conn, req):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return False

    bad = FakeUpstream(reset)
    good = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"good"))
    port = free_port()
    sc = sidecar_run("proxy", config=one_route(
        port, [{"name": "c", "endpoints": [bad.addr, good.addr]}],
        {"retry_policy": {"num_retries": 1, "retry_on": ["reset"]}}))
    for _ in range(6):
        r = get(port, "/")
        assert r.status == 200 and r.body == b"good"
    assert len(bad.requests) >= 1, "round robin reached the bad endpoint"
    bad.close()
    good.close()


def test_proxy_reset_without_retries_is_502(sidecar_run):
    def reset(up, conn, req):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return False

    bad = FakeUpstream(reset)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", bad.addr,
                               "--retries", "0"])
    assert get(port, "/").status == 502
    assert "UC" in access_lines(sc)[-1]["flags"]
    bad.close()


def test_proxy_large_body_not_retried(sidecar_run):
    up = flaky(1)
    port = free_port()
    sidecar_run("proxy", config=one_route(
        port, [{"name": "c", "endpoints": [up.addr]}],
        {"retry_policy": {"num_retries": 2, "retry_non_idempotent": True}},
        retry_buffer="1KiB"))
    assert get(port, "/", method="PUT", body=b"z" * 500).status == 200
    assert get(port, "/", method="PUT", body=b"z" * 5000).status == 200  # 1st try passed
    up.close()
    up2 = flaky(1)
    port2 = free_port()
    sidecar_run("proxy", config=one_route(
        port2, [{"name": "c", "endpoints": [up2.addr]}],
        {"retry_policy": {"num_retries": 2}}, retry_buffer="1KiB"))
    assert get(port2, "/", method="PUT", body=b"z" * 5000).status == 503, \
        "beyond the retry buffer the request is not retried"
    up2.close()


def stall(seconds):
    def handler(up, conn, req):
        time.sleep(seconds)
        try:
            respond(conn, 200, b"late")
        except OSError:
            pass
        return False
    return handler


def test_proxy_route_timeout_504(sidecar_run):
    up = FakeUpstream(stall(3))
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                               "--timeout", "300ms", "--retries", "0"])
    t = time.monotonic()
    r = get(port, "/")
    took = time.monotonic() - t
    assert r.status == 504
    assert 0.25 < took < 2.5
    assert "UT" in access_lines(sc)[-1]["flags"]
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_upstream_rq_timeout_total", cluster="upstream") == 1
    up.close()


def test_proxy_per_try_timeout_then_retry(sidecar_run):
    state = {"n": 0}

    def handler(up, conn, req):
        state["n"] += 1
        if state["n"] == 1:
            time.sleep(2)
            return False
        return respond(conn, 200, b"second")

    up = FakeUpstream(handler)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                               "--per-try-timeout", "200ms", "--retries", "1", "--timeout", "5s"])
    t = time.monotonic()
    r = get(port, "/")
    assert r.status == 200 and r.body == b"second"
    assert time.monotonic() - t < 1.9
    up.close()


def test_proxy_connect_timeout(sidecar_run):
    # A listener whose accept queue is full never completes new handshakes.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(srv.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    port = free_port()
    addr = "%s:%d" % srv.getsockname()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", addr,
                               "--connect-timeout", "200ms", "--retries", "0"])
    t = time.monotonic()
    r = get(port, "/")
    took = time.monotonic() - t
    assert r.status in (502, 504)
    assert took < 3
    if r.status == 504:
        assert "UF" in access_lines(sc)[-1]["flags"]
    for s in fillers:
        s.close()
    srv.close()


def test_proxy_stream_idle_timeout_mid_body(sidecar_run):
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        time.sleep(3)
        return False

    up = FakeUpstream(handler)
    port = free_port()
    sc = sidecar_run("proxy", config=one_route(port, [{"name": "c", "endpoints": [up.addr]}],
                                               stream_idle_timeout="300ms"))
    c = Client(port)
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    t = time.monotonic()
    data = b""
    c.sock.settimeout(5)
    while True:
        d = c.sock.recv(1000)
        if not d:
            break
        data += d
    assert time.monotonic() - t < 2.5
    assert data.endswith(b"a" * 10) and len(data.split(b"\r\n\r\n", 1)[1]) == 10
    assert "SI" in access_lines(sc)[-1]["flags"]
    up.close()


def test_proxy_upstream_close_mid_body(sidecar_run):
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"b" * 100)
        return False

    up = FakeUpstream(handler)
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr])
    c = Client(port)
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    c.sock.settimeout(5)
    while True:
        d = c.sock.recv(4096)
        if not d:
            break
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1000" in head and body == b"b" * 100, \
        "the client sees a truncated body and a close, never a short complete message"
    line = access_lines(sc)[-1]
    assert "UC" in line["flags"] and line["status"] == 200
    up.close()


def test_proxy_downstream_idle_and_head_timeouts(sidecar_run):
    up = FakeUpstream(lambda up, conn, req: respond(conn))
    port = free_port()
    sc = sidecar_run("proxy", config=one_route(port, [{"name": "c", "endpoints": [up.addr]}],
                                               idle_timeout="300ms",
                                               request_headers_timeout="300ms"))
    c = Client(port)
    assert c.request().status == 200
    t = time.monotonic()
    assert c.closed_by_peer(timeout=3)
    assert time.monotonic() - t < 2.5
    c = Client(port)
    c.send(b"GET / HTTP/1.1\r\nHost:")
    r = c.read_response()
    assert r.status == 408
    up.close()


def test_proxy_retry_backoff_grows(sidecar_run):
    times = []

    def handler(up, conn, req):
        times.append(time.monotonic())
        return respond(conn, 503, b"no", reason="Unavailable")

    up = FakeUpstream(handler)
    port = free_port()
    sidecar_run("proxy", config=one_route(
        port, [{"name": "c", "endpoints": [up.addr]}],
        {"retry_policy": {"num_retries": 3, "base_interval": "100ms", "max_interval": "200ms"}}))
    assert get(port, "/").status == 503
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 3
    assert gaps[0] >= 0.045, gaps  # >= base/2
    assert all(g < 1.5 for g in gaps), gaps  # capped by max_interval
    up.close()
