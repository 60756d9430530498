# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: gRPC calls from HTTP/1.1 clients, as Envoy takes them. A hand-written HTTP/1.1
client sends length-prefixed messages in a chunked body (content-type application/grpc, TE:
trailers) to a real grpcio server behind an HTTP/2 cluster, and reads the answer's messages and
its trailers from the chunked response; grpc-timeout is the call's deadline, the proxy's own
answers and an upstream's HTTP errors are gRPC statuses in the head (trailers-only), and a
deadline that passes while the answer streams ends the chunked body with grpc-status in its
trailers."""
import hashlib
import socket
import struct
import time
import urllib.parse

import grpc
import pytest
from conftest import free_port
from proxy_util import (access_lines, metric, metrics, parse_head, read_chunked, read_exact,
                        read_until)
from test_proxy_grpc import SVC, http1_app, proxy, server, slow_stream  # noqa: F401


def frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def unframe(body):
    out = []
    while body:
        n = struct.unpack(">I", body[1:5])[0]
        out.append(body[5:5 + n])
        body = body[5 + n:]
    return out


def fields(raw):
    """Header or trailer lines as a dict of lowercased names (the last value wins)."""
    d = {}
    for ln in raw.decode("latin-1").split("\r\n"):
        if ":" in ln:
            k, v = ln.split(":", 1)
            d[k.strip().lower()] = v.strip()
    return d


class Answer:
    def __init__(self, status, headers, messages, trailers):
        self.status, self.headers, self.messages, self.trailers = (status, headers, messages,
                                                                   trailers)

    def grpc_status(self):
        """grpc-status from the trailers, or from the head of a trailers-only answer."""
        v = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if v is None else int(v)

    def grpc_message(self):
        v = self.trailers.get("grpc-message", self.headers.get("grpc-message"))
        return None if v is None else urllib.parse.unquote(v)


def call(port, method, messages, metadata=(), trailers=None, sock=None, timeout=20):
    """One gRPC call over HTTP/1.1: the request chunked, one chunk per message (the client's own
    trailers after the last chunk when given). Returns the Answer and the open socket."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = (f"POST /{SVC}/{method} HTTP/1.1\r\nHost: grpc.test\r\n"
            "Content-Type: application/grpc\r\nTE: trailers\r\n"
            "Transfer-Encoding: chunked\r\n")
    for k, v in metadata:
        head += f"{k}: {v}\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(frame(m)), frame(m)) for m in messages)
    t = b"".join(f"{k}: {v}\r\n".encode() for k, v in (trailers or ()))
    s.sendall(head.encode() + b"\r\n" + body + b"0\r\n" + t + b"\r\n")
    return read_answer(s), s


def read_answer(s):
    raw, buf = read_until(s, b"", b"\r\n\r\n")
    (version, status, _), hdrs = parse_head(raw)
    h = {k.lower(): v for k, v in hdrs}
    assert version == "HTTP/1.1"
    trailers = b""
    if "chunked" in h.get("transfer-encoding", ""):
        body, trailers, buf = read_chunked(s, buf)
    else:
        body, buf = read_exact(s, buf, int(h.get("content-length", "0")))
    return Answer(int(status), h, unframe(body), fields(trailers))


def test_unary_and_client_streaming_calls_over_http1(sidecar_run, server):
    srv = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, srv.addr))
    a, s = call(port, "Unary", [b"hi"], metadata=[("x-echo", "meta")])
    assert a.status == 200 and a.headers["content-type"] == "application/grpc"
    assert a.headers["x-initial"] == "hello", "initial metadata in the head"
    assert a.messages == [b"echo:hi"]
    assert a.grpc_status() == 0 and a.trailers["x-trailing"] == "meta", "trailers end to end"
    assert a.headers["via"] == "2 sidecar"
    # The same connection carries the next call: client streaming, with trailers of its own.
    msgs = [bytes([i]) * (1000 * i + 1) for i in range(5)]
    a, s = call(port, "ClientStream", msgs, trailers=[("x-client-trailer", "t")], sock=s)
    s.close()
    h = hashlib.sha256(b"".join(msgs)).hexdigest()
    assert a.grpc_status() == 0
    assert a.messages == [b"5,%d,%s" % (sum(map(len, msgs)), h.encode())]
    name, md, _ = srv.seen[-1]
    assert name == "ClientStream" and md.get("x-client-trailer") is None
    lines = [ln for ln in access_lines(sc, 2) if "grpc_status" in ln]
    assert lines[-1]["protocol"] == "HTTP/1.1" and lines[-1]["grpc_status"] == 0
    assert lines[-1]["grpc_request_messages"] == 5 and lines[-1]["grpc_response_messages"] == 1
    assert metric(metrics(sc), "sidecar_grpc_responses_total", cluster="app", grpc_code="OK") == 2


def test_every_status_with_details_over_http1(sidecar_run, server):
    srv = server()
    port = free_port()
    sidecar_run("proxy", config=proxy(port, srv.addr))
    for code in (3, 5, 7, 13, 14, 16):
        a, s = call(port, "Status", [b"%d" % code])
        s.close()
        assert a.status == 200 and a.grpc_status() == code, (code, a.headers, a.trailers)
        name = [c for c in grpc.StatusCode if c.value[0] == code][0].name
        assert a.grpc_message() == f"details for {name}: ünïcödé % done"


def test_local_replies_are_trailers_only_grpc_in_the_head(sidecar_run, server):
    port = free_port()
    # No endpoint answers: UNAVAILABLE; a path no route takes: UNIMPLEMENTED.
    sc = sidecar_run("proxy", config=proxy(port, f"127.0.0.1:{free_port()}",
                                           route={"match": {"prefix": f"/{SVC}/"}}))
    a, s = call(port, "Unary", [b"x"])
    assert a.status == 200 and a.headers["content-length"] == "0" and a.messages == []
    assert a.headers["content-type"] == "application/grpc"
    assert a.grpc_status() == 14, a.headers
    s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST /other.Svc/M HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc+proto\r\n"
              b"Content-Length: 5\r\n\r\n\x00\x00\x00\x00\x00")
    a = read_answer(s)
    s.close()
    assert a.status == 200 and a.grpc_status() == 12 and a.grpc_message()
    line = access_lines(sc, 2)[-1]
    assert line["status"] == 404 and line["grpc_status"] == 12


def test_grpc_timeout_from_an_http1_client(sidecar_run, server):
    srv = server()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy(port, srv.addr))
    t0 = time.monotonic()
    a, s = call(port, "Sleep", [b"3"], metadata=[("grpc-timeout", "400m")])
    took = time.monotonic() - t0
    s.close()
    # The server was told the time left, so it and the proxy end the call at the same moment:
    # either answer is DEADLINE_EXCEEDED.
    assert a.status == 200 and a.grpc_status() == 4, (a.headers, a.trailers)
    assert a.grpc_message() in ("gRPC deadline exceeded", "Deadline Exceeded")
    assert took < 2.5, took
    _, _, remaining = srv.seen[-1]
    assert remaining is not None and remaining <= 0.45, "the server was told the time left"
    line = [ln for ln in access_lines(sc, 1) if "grpc_status" in ln][-1]
    assert line["grpc_status"] == 4


def test_proxy_deadline_for_a_silent_upstream_over_http1(http1_app):
    held = []
    _, port, sc = http1_app(lambda u, c, r: held.append(r) or True, {"timeout": "700ms"})
    a, s = call(port, "Unary", [b"x"], metadata=[("grpc-timeout", "30S")])
    s.close()
    assert a.status == 200 and a.headers["content-length"] == "0"
    assert a.grpc_status() == 4 and a.grpc_message() == "gRPC deadline exceeded"
    v = held[0].header("grpc-timeout")
    assert len(v) == 9 and v[-1] == "m" and 600 < int(v[:-1]) <= 700, v
    line = [ln for ln in access_lines(sc, 1) if "grpc_status" in ln][-1]
    assert line["status"] == 504 and line["flags"] == "UT" and line["grpc_status"] == 4


def test_http_error_of_the_upstream_maps_to_a_status(http1_app):
    _, port, sc = http1_app(lambda u, c, r: c.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy") or True)
    a, s = call(port, "Unary", [b"x"])
    s.close()
    assert a.status == 200 and a.grpc_status() == 14
    assert a.grpc_message() == "upstream answered HTTP 503 without grpc-status"


@pytest.mark.parametrize("cut", [False, True])
def test_deadline_while_the_answer_streams_over_http1(http1_app, cut):
    """At a message (and chunk) boundary the chunked body ends with DEADLINE_EXCEEDED in its
    trailers; in the middle of a message the connection closes without the last chunk."""
    _, port, sc = http1_app(slow_stream(cut), {"timeout": "900ms"})
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(f"POST /{SVC}/ServerStream HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n"
              "grpc-timeout: 30S\r\nContent-Length: 5\r\n\r\n".encode() + frame(b""))
    if not cut:
        a = read_answer(s)
        assert a.grpc_status() == 4 and a.grpc_message() == "gRPC deadline exceeded"
        assert 1 <= len(a.messages) <= 10 and a.messages[0] == b"m000", a.messages
        line = [ln for ln in access_lines(sc, 1) if "grpc_status" in ln][-1]
        assert line["grpc_status"] == 4 and line["grpc_response_messages"] == len(a.messages)
        assert "UT" in line["flags"]
    else:
        raw, buf = read_until(s, b"", b"\r\n\r\n")
        with pytest.raises(EOFError):
            read_chunked(s, buf)
        line = [ln for ln in access_lines(sc, 1) if "grpc_status" in ln][-1]
        assert line["grpc_status"] is None and "UT" in line["flags"]
    s.close()
