# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: gRPC calls end to end with Python grpcio (Debian's python3-grpcio) as the real
client and server, through generic handlers with bytes in and out (no generated code): unary,
server-streaming, client-streaming and bidirectional calls, deadlines (the client's grpc-timeout
and the route's timeout as its cap), every status code with details, metadata and trailers,
messages of 4 MiB and more, a server that dies mid-stream, retries on gRPC statuses, HTTP errors
of an HTTP/1 upstream mapped to gRPC statuses, and gRPC through two sidecars over mesh mTLS."""
import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures

import grpc
import pytest
from conftest import free_port
from proxy_util import FakeUpstream, access_lines, metric, metrics, proxy_config, respond
from test_proxy_envoy import bootstrap, static_cluster
from test_proxy_istio import own, service_entry, stream
from tls_util import pki  # noqa: F401

SVC = "test.Svc"
BIG = 64 * 1024 * 1024
OPTS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]


class Server:
    """A grpcio server on 127.0.0.1 with the test service's generic handlers; it records what
    each call saw (its metadata and time remaining) and how many calls each method got."""

    def __init__(self, fail_first=0, fail_code=grpc.StatusCode.UNAVAILABLE):
        self.calls = {}
        self.seen = []
        self.fail_first = fail_first
        self.fail_code = fail_code
        self.lock = threading.Lock()
        h = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
            "Status": grpc.unary_unary_rpc_method_handler(self.status),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "StreamThenFail": grpc.unary_stream_rpc_method_handler(self.stream_then_fail),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTS)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, h),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"
        self.server.start()

    def _record(self, name, ctx):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.seen.append((name, dict(ctx.invocation_metadata()), ctx.time_remaining()))
            return self.calls[name]

    def unary(self, req, ctx):
        self._record("Unary", ctx)
        md = dict(ctx.invocation_metadata())
        ctx.send_initial_metadata((("x-initial", "hello"),))
        ctx.set_trailing_metadata((("x-trailing", md.get("x-echo", "none")),
                                   ("x-bin-bin", b"\x00\x01\xfe\xff")))
        return b"echo:" + req

    def flaky(self, req, ctx):
        n = self._record("Flaky", ctx)
        if n <= self.fail_first:
            ctx.abort(self.fail_code, f"try {n} fails")
        return b"ok after %d" % n

    def status(self, req, ctx):
        self._record("Status", ctx)
        code = [c for c in grpc.StatusCode if c.value[0] == int(req)][0]
        if code == grpc.StatusCode.OK:
            return b"fine"
        ctx.abort(code, f"details for {code.name}: ünïcödé % done")

    def sleep(self, req, ctx):
        self._record("Sleep", ctx)
        end = time.monotonic() + float(req)
        while time.monotonic() < end and ctx.is_active():
            time.sleep(0.01)
        return b"slept"

    def server_stream(self, req, ctx):
        self._record("ServerStream", ctx)
        n, size = (int(x) for x in req.split(b","))
        for i in range(n):
            yield bytes([i % 251]) * size

    def stream_then_fail(self, req, ctx):
        self._record("StreamThenFail", ctx)
        yield b"first"
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "after one message")

    def client_stream(self, it, ctx):
        self._record("ClientStream", ctx)
        h, n, total = hashlib.sha256(), 0, 0
        for m in it:
            h.update(m)
            n += 1
            total += len(m)
        return b"%d,%d," % (n, total) + h.hexdigest().encode()

    def bidi(self, it, ctx):
        self._record("Bidi", ctx)
        for m in it:
            yield m[::-1]

    def stop(self):
        self.server.stop(0).wait()


@pytest.fixture
def server():
    started = []

    def start(**kw):
        s = Server(**kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def http1_app(sidecar_run):
    """An HTTP/1 upstream (FakeUpstream: it answers what a test scripts, which no gRPC server
    would) behind a proxy whose route is <route>; returns (upstream, proxy port, sidecar)."""
    ups = []

    def start(handler, route=None):
        up = FakeUpstream(handler)
        ups.append(up)
        port = free_port()
        sc = sidecar_run("proxy", config=proxy(port, up.addr, protocol="http1", route=route))
        return up, port, sc

    yield start
    for u in ups:
        u.close()


RETRY_UNAVAILABLE = {"retry_policy": {"retry_on": ["unavailable"], "num_retries": 2,
                                      "base_interval": "10ms"}}


def proxy(port, endpoint, protocol="http2", route=None, **extra):
    r = {"name": "r", "cluster": "app"}
    r.update(route or {})
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "routes": [r]}],
                        [{"name": "app", "endpoints": [endpoint], "protocol": protocol}], **extra)


def channel(port):
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTS)


def unary(ch, method, req=b"", **kw):
    return ch.unary_unary(f"/{SVC}/{method}")(req, **kw)


def grpc_lines(sc, n):
    lines = access_lines(sc, n)
    return [l for l in lines if "grpc_status" in l]


def test_unary_and_streaming_calls_with_metadata(sidecar_run, server):
    """The four kinds of call through the proxy, metadata both ways and trailers (binary ones
    too) passed through; the access log carries grpc_status and the messages each way, and the
    metrics count them."""
    s = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, s.addr))
    with channel(port) as ch:
        resp, call = ch.unary_unary(f"/{SVC}/Unary").with_call(
            b"ping", metadata=(("x-echo", "from-client"),), timeout=10)
        assert resp == b"echo:ping"
        assert ("x-initial", "hello") in call.initial_metadata()
        tm = dict(call.trailing_metadata())
        assert tm["x-trailing"] == "from-client" and tm["x-bin-bin"] == b"\x00\x01\xfe\xff"
        assert s.seen[-1][1]["x-echo"] == "from-client"

        got = list(ch.unary_stream(f"/{SVC}/ServerStream")(b"25,1000", timeout=10))
        assert len(got) == 25 and got[3] == bytes([3]) * 1000

        msgs = [bytes([i]) * (i * 100 + 1) for i in range(40)]
        out = ch.stream_unary(f"/{SVC}/ClientStream")(iter(msgs), timeout=10)
        want = hashlib.sha256(b"".join(msgs)).hexdigest()
        assert out == f"40,{sum(map(len, msgs))},{want}".encode()

        # Bidirectional: each answer arrives before the next request is sent.
        q, answers = [], []
        ev = threading.Event()

        def reqs():
            for i in range(10):
                q.append(b"msg-%d" % i)
                yield q[-1]
                assert ev.wait(5)
                ev.clear()

        for a in ch.stream_stream(f"/{SVC}/Bidi")(reqs(), timeout=10):
            answers.append(a)
            ev.set()
        assert answers == [m[::-1] for m in q]

    lines = grpc_lines(sc, 4)
    assert len(lines) == 4, access_lines(sc, 4)
    by_path = {l["path"]: l for l in lines}
    for path, req, resp in [(f"/{SVC}/Unary", 1, 1), (f"/{SVC}/ServerStream", 1, 25),
                            (f"/{SVC}/ClientStream", 40, 1), (f"/{SVC}/Bidi", 10, 10)]:
        l = by_path[path]
        assert l["protocol"] == "HTTP/2" and l["status"] == 200 and l["grpc_status"] == 0, l
        assert (l["grpc_request_messages"], l["grpc_response_messages"]) == (req, resp), l
    m = metrics(sc)
    assert metric(m, "sidecar_grpc_responses_total", listener="l", cluster="app",
                  grpc_code="OK") == 4
    assert metric(m, "sidecar_grpc_request_messages_total", listener="l", cluster="app") == 52
    assert metric(m, "sidecar_grpc_response_messages_total", listener="l", cluster="app") == 37


def test_every_status_code_with_details(sidecar_run, server):
    """Each of gRPC's 17 codes, with non-ASCII details, reaches the client as the server sent it,
    and is counted by name."""
    s = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, s.addr))
    with channel(port) as ch:
        for code in grpc.StatusCode:
            if code == grpc.StatusCode.OK:
                assert unary(ch, "Status", b"0", timeout=10) == b"fine"
                continue
            with pytest.raises(grpc.RpcError) as e:
                unary(ch, "Status", str(code.value[0]).encode(), timeout=10)
            assert e.value.code() == code
            assert e.value.details() == f"details for {code.name}: ünïcödé % done"
    lines = grpc_lines(sc, 17)
    assert sorted(l["grpc_status"] for l in lines) == list(range(17))
    m = metrics(sc)
    for code in grpc.StatusCode:
        assert metric(m, "sidecar_grpc_responses_total", cluster="app",
                      grpc_code=code.name) == 1, code


def test_messages_of_4_mib_and_more(sidecar_run, server):
    """Large messages both ways, unary and streamed, arrive byte for byte (flow control moves
    them through the proxy's bounded buffers)."""
    s = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, s.addr))
    with channel(port) as ch:
        for size in (4 * 1024 * 1024, 9 * 1024 * 1024 + 7):
            body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert unary(ch, "Unary", body, timeout=60) == b"echo:" + body
        got = list(ch.unary_stream(f"/{SVC}/ServerStream")(b"3,5242880", timeout=60))
        assert [len(g) for g in got] == [5242880] * 3 and got[2] == bytes([2]) * 5242880
        msgs = [bytes([i]) * (4 * 1024 * 1024 + i) for i in range(3)]
        out = ch.stream_unary(f"/{SVC}/ClientStream")(iter(msgs), timeout=60)
        assert out.startswith(b"3,%d," % sum(map(len, msgs)))
    lines = grpc_lines(sc, 4)
    assert [l["grpc_status"] for l in lines] == [0, 0, 0, 0]
    assert lines[2]["grpc_response_messages"] == 3 and lines[3]["grpc_request_messages"] == 3
    assert lines[0]["bytes_in"] > 4 * 1024 * 1024


def test_client_deadline_enforced_through_the_proxy(sidecar_run, server):
    """The client's deadline travels as grpc-timeout: the server sees no more time than the
    client gave, and the call ends at the deadline with DEADLINE_EXCEEDED."""
    s = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, s.addr))
    with channel(port) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=0.8)
        took = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert took < 3
        assert unary(ch, "Sleep", b"0.1", timeout=10) == b"slept"
    name, md, left = s.seen[0]
    assert left is not None and 0 < left <= 0.8, s.seen
    assert "grpc-timeout" not in md  # grpcio reads it, never shows it as metadata
    # Three deadlines end at the same moment: the proxy's own answer (UT), the client's cancel
    # (DC) or the server's DEADLINE_EXCEEDED, passed on; whichever was first, the call ends.
    line = grpc_lines(sc, 2)[0]
    assert line["flags"] in ("UT", "DC", "-"), line
    if line["flags"] != "DC":
        assert line["grpc_status"] == 4, line


def test_grpc_timeout_capped_by_route_timeout(sidecar_run, server):
    """A client deadline longer than the route's timeout is cut to it: the server is told the
    shorter one (and ends the call then); a call with a shorter deadline of its own keeps it."""
    s = server()
    port = free_port()
    sidecar_run("proxy", config=proxy(port, s.addr, route={"timeout": "700ms"}))
    with channel(port) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=30)
        took = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.6 < took < 3, took
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.3 < s.seen[0][2] <= 0.705, s.seen  # milliseconds, rounded up
    assert s.seen[1][2] <= 0.305, s.seen


def test_grpc_timeout_max_and_offset(sidecar_run, server, http1_app):
    """The route's `grpc.timeout_max` caps a call's grpc-timeout instead of its timeout (none
    here), and `grpc.timeout_offset` takes time off it so the proxy's deadline comes first."""
    s = server()
    port = free_port()
    sidecar_run("proxy", config=proxy(port, s.addr, route={
        "timeout": "0s", "grpc": {"timeout_max": "600ms"}}))
    with channel(port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=30)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert unary(ch, "Sleep", b"0.1", timeout=30) == b"slept"
    assert 0.4 < s.seen[0][2] <= 0.605, s.seen
    held = []
    up, port2, sc = http1_app(lambda u, c, r: held.append(r) or True,
                              {"grpc": {"timeout_offset": "2s"}})
    with channel(port2) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Unary", b"x", timeout=3)
        took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert e.value.details() == "gRPC deadline exceeded"  # the proxy's, before the client's
    assert took < 2.5, took
    # 3 s less the 2 s offset; grpcio rounds the timeout it sends up to a few significant digits
    # (3009m was seen), so the bound allows that much above 1000.
    assert int(held[0].header("grpc-timeout")[:-1]) <= 1050
    assert grpc_lines(sc, 1)[0]["flags"] == "UT"


def test_proxy_answers_deadline_exceeded_for_a_silent_upstream(http1_app):
    """An upstream that never answers (here HTTP/1, which knows nothing of grpc-timeout): the
    proxy ends the call at the capped deadline with DEADLINE_EXCEEDED, trailers-only, and the
    upstream was told the time left in a grpc-timeout it can parse."""
    held = []
    up, port, sc = http1_app(lambda u, c, r: held.append(r) or True, {"timeout": "700ms"})
    with channel(port) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Unary", b"x", timeout=30)
        took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert e.value.details() == "gRPC deadline exceeded"
    assert 0.6 < took < 3, took
    v = held[0].header("grpc-timeout")
    assert len(v) == 9 and v[-1] == "m" and 600 < int(v[:-1]) <= 700, v
    line = grpc_lines(sc, 1)[0]
    assert line["grpc_status"] == 4 and line["flags"] == "UT" and line["status"] == 504
    assert metric(metrics(sc), "sidecar_grpc_responses_total", cluster="app",
                  grpc_code="DEADLINE_EXCEEDED") == 1
    assert metric(metrics(sc), "sidecar_upstream_rq_timeout_total", cluster="app") == 1


def slow_stream(cut_mid_message):
    """An HTTP/1 upstream streaming a message every 100 ms and ignoring grpc-timeout; with
    <cut_mid_message>, the fourth message stops after half its bytes (and the upstream stalls)."""
    def handler(u, c, r):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(100):
            m = b"\x00\x00\x00\x00\x04m%03d" % i
            if cut_mid_message and i == 3:
                m = m[:6]
            try:
                c.sendall(b"%x\r\n%s\r\n" % (len(m), m))
            except OSError:
                return False
            time.sleep(5 if cut_mid_message and i == 3 else 0.1)
        return False
    return handler


@pytest.mark.parametrize("cut", [False, True])
def test_deadline_passing_while_the_answer_streams(http1_app, cut):
    """The capped deadline passes while an upstream that ignores grpc-timeout streams: at a
    message boundary the client gets the messages so far and DEADLINE_EXCEEDED in trailers;
    in the middle of a message the stream is reset (never a truncated message)."""
    up, port, sc = http1_app(slow_stream(cut), {"timeout": "900ms"})
    got = []
    with channel(port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            for m in ch.unary_stream(f"/{SVC}/ServerStream")(b"", timeout=30):
                got.append(m)
    line = grpc_lines(sc, 1)[0]
    assert "UT" in line["flags"], line
    if not cut:
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert e.value.details() == "gRPC deadline exceeded"
        assert 1 <= len(got) <= 10 and got[0] == b"m000", got
        assert line["grpc_status"] == 4 and line["grpc_response_messages"] == len(got)
    else:
        assert e.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, e.value
        assert got == [b"m000", b"m001", b"m002"]
        assert line["grpc_status"] is None


SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from concurrent import futures
    import grpc

    def stream(req, ctx):
        for i in range(1000):
            yield b"m%d" % i
            time.sleep(0.02)

    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Svc", {"Forever": grpc.unary_stream_rpc_method_handler(stream)}),))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    print(port, flush=True)
    s.wait_for_termination()
""")


def test_server_dying_mid_stream(sidecar_run, server, tmp_path):
    """A server killed while it streams: the client has the messages sent so far and then an
    error (UNAVAILABLE or the reset as INTERNAL/UNKNOWN), never a clean end; the proxy stays up
    and serves the next call."""
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        up = int(p.stdout.readline())
        port = free_port()
        sc = sidecar_run("proxy", config=proxy(port, f"127.0.0.1:{up}"))
        got = []
        with channel(port) as ch:
            with pytest.raises(grpc.RpcError) as e:
                for m in ch.unary_stream(f"/{SVC}/Forever")(b"", timeout=30):
                    got.append(m)
                    if len(got) == 5:
                        p.send_signal(signal.SIGKILL)
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                      grpc.StatusCode.UNKNOWN), e.value
            assert got[:5] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    finally:
        p.kill()
        p.wait()
    line = access_lines(sc, 1)[0]
    assert "UC" in line["flags"] and line["grpc_status"] is None, line
    assert line["grpc_response_messages"] >= 5
    s = server()
    port2 = free_port()
    sidecar_run("proxy", config=proxy(port2, s.addr))
    assert sc.proc.poll() is None
    with channel(port2) as ch:
        assert unary(ch, "Unary", b"after", timeout=10) == b"echo:after"


def test_retries_on_unavailable(sidecar_run, server):
    """retry_on unavailable: a call the server fails twice with UNAVAILABLE succeeds on the third
    try; a status the route does not name is not retried; a status after a message has reached
    the client is not retried either (it cannot be taken back)."""
    s = server(fail_first=2)
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, s.addr, route={
        "retry_policy": {"retry_on": ["unavailable"], "num_retries": 3,
                         "base_interval": "10ms"}}))
    with channel(port) as ch:
        assert unary(ch, "Flaky", b"", timeout=10) == b"ok after 3"
        assert s.calls["Flaky"] == 3
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Status", b"13", timeout=10)
        assert e.value.code() == grpc.StatusCode.INTERNAL and s.calls["Status"] == 1
        got = []
        with pytest.raises(grpc.RpcError) as e:
            for m in ch.unary_stream(f"/{SVC}/StreamThenFail")(b"", timeout=10):
                got.append(m)
        assert got == [b"first"] and e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert s.calls["StreamThenFail"] == 1
    lines = grpc_lines(sc, 3)
    assert lines[0]["retries"] == 2 and lines[0]["grpc_status"] == 0
    assert lines[1]["retries"] == 0 and lines[1]["grpc_status"] == 13
    assert lines[2]["retries"] == 0 and lines[2]["grpc_status"] == 14
    assert metric(metrics(sc), "sidecar_upstream_rq_retry_total", cluster="app") == 2

    # Without the condition, UNAVAILABLE reaches the client at once.
    s2 = server(fail_first=1)
    port2 = free_port()
    sidecar_run("proxy", config=proxy(port2, s2.addr, route={
        "retry_policy": {"retry_on": ["5xx"], "num_retries": 3}}))
    with channel(port2) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Flaky", b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and s2.calls["Flaky"] == 1


@pytest.mark.parametrize("status,code", [
    (503, grpc.StatusCode.UNAVAILABLE), (502, grpc.StatusCode.UNAVAILABLE),
    (429, grpc.StatusCode.UNAVAILABLE), (404, grpc.StatusCode.UNIMPLEMENTED),
    (401, grpc.StatusCode.UNAUTHENTICATED), (403, grpc.StatusCode.PERMISSION_DENIED),
    (400, grpc.StatusCode.INTERNAL), (500, grpc.StatusCode.UNKNOWN)])
def test_http1_upstream_errors_map_to_grpc_statuses(http1_app, status, code):
    """An HTTP/1 upstream answering an HTTP error without grpc-status: the gRPC client gets the
    status gRPC's table gives, from the proxy, trailers-only."""
    up, port, sc = http1_app(lambda u, c, r: respond(c, status, b"<html>busy</html>",
                                                     [("Content-Type", "text/html")]))
    with channel(port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Unary", b"x", timeout=10)
    assert e.value.code() == code
    assert e.value.details() == f"upstream answered HTTP {status} without grpc-status"
    assert up.requests[0].header("content-type") == "application/grpc"
    line = grpc_lines(sc, 1)[0]
    assert line["status"] == status and line["grpc_status"] == code.value[0]


def test_http1_upstream_503_retried_as_unavailable(http1_app):
    """The mapped status is what retry_on matches: an HTTP/1 upstream's 503 is retried by
    `unavailable` and the next answer (a gRPC one with trailers) reaches the client."""
    seen = []

    def handler(u, c, r):
        seen.append(r.target)
        if len(seen) == 1:
            return respond(c, 503, b"busy")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n"
                  b"8\r\n\x00\x00\x00\x00\x03abc\r\n0\r\ngrpc-status: 0\r\n\r\n")
        return True

    up, port, sc = http1_app(handler, RETRY_UNAVAILABLE)
    with channel(port) as ch:
        assert unary(ch, "Unary", b"x", timeout=10) == b"abc"
    assert len(seen) == 2
    line = grpc_lines(sc, 1)[0]
    assert line["retries"] == 1 and line["grpc_status"] == 0
    assert (line["grpc_request_messages"], line["grpc_response_messages"]) == (1, 1)


def test_status_in_trailers_before_any_message_is_retried(http1_app):
    """UNAVAILABLE in trailers that follow the head with no message (the head and the trailers
    arriving apart, so the proxy waits for them before forwarding the head) is retried; the
    client sees only the answer of the try that succeeded."""
    seen = []

    def handler(u, c, r):
        seen.append(r.header("grpc-timeout"))
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.2)
        if len(seen) == 1:
            c.sendall(b"0\r\ngrpc-status: 14\r\ngrpc-message: warming up\r\n\r\n")
        else:
            c.sendall(b"9\r\n\x00\x00\x00\x00\x04done\r\n0\r\ngrpc-status: 0\r\n\r\n")
        return True

    up, port, sc = http1_app(handler, RETRY_UNAVAILABLE)
    with channel(port) as ch:
        assert unary(ch, "Unary", b"x", timeout=10) == b"done"
    assert len(seen) == 2
    # Each try is told what is left of the deadline, less on the second.
    assert int(seen[1][:-1]) < int(seen[0][:-1]) <= 11000, seen  # grpcio rounds it up
    line = grpc_lines(sc, 1)[0]
    assert line["retries"] == 1 and line["grpc_status"] == 0


def test_reset_after_the_call_was_sent_is_not_retried_unless_idempotent(http1_app):
    """An upstream that takes the call and resets: a gRPC call is not idempotent, so `reset` does
    not replay it (the server may have acted on it) unless the route says it may."""
    seen = []

    def handler(u, c, r):
        seen.append(r.target)
        return False  # closes the connection without an answer

    retry = {"retry_on": ["reset", "unavailable"], "num_retries": 2, "base_interval": "10ms"}
    up, port, sc = http1_app(handler, {"retry_policy": retry})
    with channel(port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Unary", b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the proxy's 502
    assert len(seen) == 1
    up2, port2, sc2 = http1_app(handler, {"retry_policy": dict(retry, retry_non_idempotent=True)})
    with channel(port2) as ch:
        with pytest.raises(grpc.RpcError):
            unary(ch, "Unary", b"x", timeout=10)
    assert len(seen) == 4


def test_grpc_through_two_sidecars_over_mesh_mtls(sidecar_run, server, pki):  # noqa: F811
    """client -> outbound sidecar (h2c) -> HTTP/2 over mesh mTLS -> inbound sidecar (STRICT) ->
    server: every kind of call works, the inbound side logs the caller's SPIFFE identity, and
    statuses and deadlines cross both hops."""
    s = server()
    inbound, outbound = free_port(), free_port()
    sc_in = sidecar_run("proxy", config=proxy_config(
        [{"name": "inbound", "address": f"127.0.0.1:{inbound}", "mtls": "strict",
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [s.addr], "protocol": "http2"}],
        identity={"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                  "ca": str(pki / "ca.pem")}))
    sc_out = sidecar_run("proxy", config=proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{outbound}", "direction": "outbound",
          "routes": [{"name": "r", "cluster": "peer"}]}],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{inbound}"], "tls": {"mode": "mesh"},
          "protocol": "http2"}],
        identity={"cert": str(pki / "client.pem"), "key": str(pki / "client.key"),
                  "ca": str(pki / "ca.pem")}))
    with channel(outbound) as ch:
        assert unary(ch, "Unary", b"hi", timeout=10) == b"echo:hi"
        assert len(list(ch.unary_stream(f"/{SVC}/ServerStream")(b"10,70000", timeout=10))) == 10
        out = ch.stream_unary(f"/{SVC}/ClientStream")(iter([b"a" * 5000] * 7), timeout=10)
        assert out.startswith(b"7,35000,")
        assert list(ch.stream_stream(f"/{SVC}/Bidi")(iter([b"ab", b"cd"]), timeout=10)) == \
            [b"ba", b"dc"]
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Status", b"5", timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert s.seen[-1][2] <= 0.51  # rounded up to the millisecond at each hop
    lin = grpc_lines(sc_in, 6)
    assert all(l["protocol"] == "HTTP/2" for l in lin)
    assert lin[0]["peer_principal"] == "cluster.local/ns/default/sa/client"
    assert [l["grpc_status"] for l in lin[:5]] == [0, 0, 0, 0, 5]
    lout = grpc_lines(sc_out, 6)
    assert [l["grpc_status"] for l in lout[:5]] == [0, 0, 0, 0, 5]
    assert lout[1]["grpc_response_messages"] == 10
    assert metric(metrics(sc_out), "sidecar_upstream_tls_handshakes_total", cluster="peer",
                  result="ok") == 1


def envoy_h2(port, route, addr):
    """An Envoy bootstrap: one route, to cluster app at <addr> over HTTP/2."""
    cluster = static_cluster("app", addr, typed_extension_protocol_options={
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}})
    return bootstrap(port, [{"name": "v", "domains": ["*"], "routes": [route]}], [cluster])


def test_envoy_retry_on_grpc_statuses(sidecar_run, server):
    """An Envoy bootstrap's gRPC retry_on values are taken and act: UNAVAILABLE is retried."""
    s = server(fail_first=1)
    port = free_port()
    route = {"match": {"prefix": "/"}, "route": {
        "cluster": "app", "retry_policy": {
            "retry_on": "unavailable,cancelled,internal,deadline-exceeded,resource-exhausted",
            "num_retries": 2}}}
    cfg = envoy_h2(port, route, s.addr)
    sc = sidecar_run("proxy", config=json.dumps(cfg))
    with channel(port) as ch:
        assert unary(ch, "Flaky", b"", timeout=10) == b"ok after 2"
    assert s.calls["Flaky"] == 2
    assert metric(metrics(sc), "sidecar_upstream_rq_retry_total", cluster="app") == 1


def test_envoy_max_stream_duration_grpc_timeout_header_max(sidecar_run, server):
    """Envoy's max_stream_duration.grpc_timeout_header_max caps grpc-timeout (with the route
    timeout off, as the usual gRPC configuration has it); max_stream_duration itself is
    refused."""
    s = server()
    port = free_port()
    route = {"match": {"prefix": "/"}, "route": {
        "cluster": "app", "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0.5s"}}}
    cfg = envoy_h2(port, route, s.addr)
    sc = sidecar_run("proxy", config=json.dumps(cfg))
    with channel(port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "Sleep", b"5", timeout=30)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.3 < s.seen[0][2] <= 0.505, s.seen
    sc.stop()
    route["route"]["max_stream_duration"] = {"max_stream_duration": "10s"}
    sc = sidecar_run("proxy", config=json.dumps(cfg), wait=None)
    sc.proc.wait(timeout=10)
    out = sc.logs()
    assert sc.stop() == 1
    assert "route.max_stream_duration: max_stream_duration is not supported" in out, out


def test_istio_retry_on_grpc_statuses(sidecar_run, server):
    """Istio's retries.retryOn gRPC values, with h2UpgradePolicy UPGRADE to reach the gRPC
    server over HTTP/2: UNAVAILABLE is retried, up to the attempts."""
    s = server(fail_first=2)
    port = free_port()
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: shop}
spec:
  host: greeter
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
"""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: shop}
spec:
  hosts: [greeter]
  http:
  - route:
    - destination: {host: greeter}
    retries:
      attempts: 3
      retryOn: unavailable,cancelled
"""
    sidecar_run("proxy", config=stream(own(port), service_entry("greeter", 50051, [(s, {})]),
                                       dr, vs))
    opts = OPTS + [("grpc.default_authority", "greeter")]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        assert unary(ch, "Flaky", b"", timeout=10) == b"ok after 3"
    assert s.calls["Flaky"] == 3
