# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: gRPC-Web (listener `grpc_web: true`, Envoy's grpc_web filter). A real grpcio
server upstream (grpcio_peers.py) over HTTP/2; gRPC-Web clients written here: raw HTTP/1.1 (what
a browser sends) and HTTP/2 (the h2 library), hand-framed, binary and -text. Each answer is
compared byte for byte with the same call made directly to the server in gRPC: the messages, then
the trailers as the gRPC-Web trailer frame."""
import base64
import json
import socket
import struct

import grpc
import h2.events
import pytest
from conftest import free_port
from grpcio_peers import GrpcServer
from proxy_util import parse_head, proxy_config, read_exact, read_until
from test_proxy_envoy import bootstrap, static_cluster
from test_proxy_h2 import H2

WEB = "application/grpc-web+proto"
TEXT = "application/grpc-web-text+proto"


def msg(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def trailer_frame(trailers):
    body = b"".join(f"{k}:{v}\r\n".encode() for k, v in trailers)
    return b"\x80" + struct.pack(">I", len(body)) + body


class H2Ordered(H2):
    """The tests' HTTP/2 client, keeping trailers in the order they came."""

    def on_event(self, ev, ack):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.TrailersReceived) and st is not None:
            st["trailer_list"] = list(ev.headers)
        super().on_event(ev, ack)


def grpc_direct(port, path, payload, md=()):
    """The call made to the server directly in gRPC: (headers, body, ordered trailers)."""
    c = H2Ordered(port)
    sid = c.request(path, method="POST", body=msg(payload), headers=[
        ("content-type", "application/grpc"), ("te", "trailers")] + list(md))
    st = c.wait(sid)
    c.close()
    return st["headers"], bytes(st["data"]), st.get("trailer_list")


def expected_web(port, path, payload, md=()):
    _, data, trailers = grpc_direct(port, path, payload, md)
    assert trailers, "the server answered with trailers"
    return data + trailer_frame(trailers)


def h1_web(port, path, body, ctype=WEB, md=()):
    """A browser-like HTTP/1.1 gRPC-Web call: (status, headers dict, body, chunk sizes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST {path} HTTP/1.1\r\nHost: web.test\r\nContent-Type: {ctype}\r\n"
            f"X-Grpc-Web: 1\r\nAccept: {ctype}\r\nContent-Length: {len(body)}\r\n")
    head += "".join(f"{k}: {v}\r\n" for k, v in md)
    s.sendall(head.encode() + b"\r\n" + body)
    raw, rest = read_until(s, b"", b"\r\n\r\n")
    first, headers = parse_head(raw)
    status = int(first[1])
    hd = {k.lower(): v for k, v in headers}
    sizes = []
    if hd.get("transfer-encoding") == "chunked":
        data = b""
        while True:
            line, rest = read_until(s, rest, b"\r\n")
            n = int(line.split(b";")[0], 16)
            if n == 0:
                end, rest = read_until(s, rest, b"\r\n")
                assert end == b"\r\n", "no HTTP trailers: they are in the body"
                break
            sizes.append(n)
            chunk, rest = read_exact(s, rest, n + 2)
            data += chunk[:n]
    else:
        n = int(hd.get("content-length", "0"))
        data, rest = read_exact(s, rest, n)
    s.close()
    return status, hd, data, sizes



def h2_web(port, path, body, ctype=WEB, md=()):
    c = H2Ordered(port)
    sid = c.request(path, method="POST", body=body, headers=[
        ("content-type", ctype), ("x-grpc-web", "1")] + list(md))
    st = c.wait(sid)
    c.close()
    return st


@pytest.fixture
def server():
    s = GrpcServer("A")
    yield s
    s.close()


def web_config(port, up, grpc_web=True, **cluster):
    c = {"name": "g", "endpoints": [up], "protocol": "http2"}
    c.update(cluster)
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "grpc_web": grpc_web,
                          "routes": [{"name": "r", "cluster": "g"}]}], [c])


def test_grpc_web_binary_and_text_over_http1_and_http2(sidecar_run, server):
    port = free_port()
    sidecar_run("proxy", config=web_config(port, server.addr))
    md = [("x-req", "abc")]
    want = expected_web(server.port, "/test.Echo/Unary", b"hello web", md)
    assert want.startswith(msg(b"bew olleh"))
    assert b"x-trailer:t-abc\r\n" in want and b"grpc-status:0\r\n" in want

    status, hd, body, _ = h1_web(port, "/test.Echo/Unary", msg(b"hello web"), md=md)
    assert status == 200 and hd["content-type"] == WEB and hd["x-server"] == "A"
    assert "content-length" not in hd and "grpc-status" not in hd
    assert body == want

    status, hd, body, sizes = h1_web(port, "/test.Echo/Unary",
                                     base64.b64encode(msg(b"hello web")), ctype=TEXT, md=md)
    assert status == 200 and hd["content-type"] == TEXT
    assert all(n % 4 == 0 for n in sizes), sizes
    assert base64.b64decode(body) == want

    st = h2_web(port, "/test.Echo/Unary", msg(b"hello web"), md=md)
    assert st["headers"][":status"] == "200" and st["headers"]["content-type"] == WEB
    assert st["trailers"] is None, "HTTP/2 clients get the trailers in the body too"
    assert bytes(st["data"]) == want

    st = h2_web(port, "/test.Echo/Unary", base64.b64encode(msg(b"hello web")), ctype=TEXT, md=md)
    assert st["headers"]["content-type"] == TEXT
    assert base64.b64decode(bytes(st["data"])) == want

    # Each message padded on its own (as browser clients send them) is accepted.
    two = base64.b64encode(msg(b"hello web")[:4]) + base64.b64encode(msg(b"hello web")[4:])
    status, _, body, _ = h1_web(port, "/test.Echo/Unary", two, ctype="application/grpc-web-text",
                                md=md)
    assert status == 200 and base64.b64decode(body) == want


def test_grpc_web_server_streaming(sidecar_run, server):
    port = free_port()
    sidecar_run("proxy", config=web_config(port, server.addr))
    want = expected_web(server.port, "/test.Echo/Stream", b"40:5000")
    assert len(want) > 40 * 5005 and b"x-count:40\r\n" in want
    status, hd, body, _ = h1_web(port, "/test.Echo/Stream", msg(b"40:5000"))
    assert status == 200 and body == want
    status, hd, body, sizes = h1_web(port, "/test.Echo/Stream",
                                     base64.b64encode(msg(b"40:5000")), ctype=TEXT)
    assert status == 200 and base64.b64decode(body) == want
    assert len(sizes) > 5 and all(n % 4 == 0 for n in sizes), "streamed in aligned pieces"
    st = h2_web(port, "/test.Echo/Stream", base64.b64encode(msg(b"40:5000")), ctype=TEXT)
    assert base64.b64decode(bytes(st["data"])) == want


def test_grpc_web_error_status_and_trailers_only(sidecar_run, server):
    port = free_port()
    sidecar_run("proxy", config=web_config(port, server.addr))
    want = expected_web(server.port, "/test.Echo/Unary", b"fail:7")
    assert b"grpc-status:7\r\n" in want and b"x-trailer:failed\r\n" in want
    status, hd, body, _ = h1_web(port, "/test.Echo/Unary", msg(b"fail:7"))
    assert status == 200 and body == want
    status, hd, body, _ = h1_web(port, "/test.Echo/Unary", base64.b64encode(msg(b"fail:7")),
                                 ctype=TEXT)
    assert base64.b64decode(body) == want

    # A trailers-only answer (an unknown method) keeps its status in the headers, as gRPC-Web
    # allows, with the gRPC-Web content type.
    h, data, tr = grpc_direct(server.port, "/test.Echo/Nope", b"x")
    assert h["grpc-status"] == "12" and data == b"" and tr is None
    status, hd, body, _ = h1_web(port, "/test.Echo/Nope", msg(b"x"))
    assert status == 200 and hd["grpc-status"] == "12" and hd["content-type"] == WEB
    assert body == b""


def test_grpc_web_malformed_text_body_is_refused(sidecar_run, server):
    port = free_port()
    sc = sidecar_run("proxy", config=web_config(port, server.addr))
    for bad, why in ((b"AAAA*AAA", "malformed grpc-web-text"),
                     (b"AAAAAAVoZWxsbw", "ends inside a base64 quantum"),
                     (b"A=AA", "malformed grpc-web-text")):
        status, hd, body, _ = h1_web(port, "/test.Echo/Unary", bad, ctype=TEXT)
        # the proxy's 400, answered as gRPC-Web: INTERNAL with the reason
        assert status == 200 and hd["grpc-status"] == "13" and why in hd["grpc-message"], hd
    lines = [json.loads(x) for x in sc.logs().splitlines() if x.startswith('{"time"')]
    assert lines and all(x["status"] == 400 and "DPE" in x["flags"] for x in lines)
    assert server.calls == 0


def test_grpc_web_off_and_plain_grpc_unchanged(sidecar_run, server):
    """Without grpc_web the request passes as it is (the server refuses grpc-web); with it, plain
    gRPC clients on the same listener are not affected."""
    port = free_port()
    sidecar_run("proxy", config=web_config(port, server.addr, grpc_web=False))
    status, hd, body, _ = h1_web(port, "/test.Echo/Unary", msg(b"hi"))
    assert hd.get("content-type") != WEB
    port2 = free_port()
    sidecar_run("proxy", config=web_config(port2, server.addr))
    with grpc.insecure_channel(f"127.0.0.1:{port2}") as ch:
        resp, call = ch.unary_unary("/test.Echo/Unary").with_call(b"plain", timeout=5)
    assert resp == b"nialp"
    assert dict(call.trailing_metadata())["x-trailer"] == "t-none"


def test_envoy_grpc_web_filter(sidecar_run, server, run_cli, tmp_path):
    port = free_port()
    cl = static_cluster("app", server.addr, http2_protocol_options={})
    vhs = [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    b = bootstrap(port, vhs, [cl])
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {
        "name": "envoy.filters.http.grpc_web", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}})
    sidecar_run("proxy", config=json.dumps(b))
    want = expected_web(server.port, "/test.Echo/Unary", b"envoy")
    status, hd, body, _ = h1_web(port, "/test.Echo/Unary", base64.b64encode(msg(b"envoy")),
                                 ctype=TEXT)
    assert status == 200 and hd["content-type"] == TEXT and base64.b64decode(body) == want


def test_grpc_web_large_messages_both_ways(sidecar_run, server):
    """A 3 MiB message each way, -text over HTTP/1.1 and binary over HTTP/2: streamed through the
    stream's windows and capped buffers, byte for byte."""
    port = free_port()
    sidecar_run("proxy", config=web_config(port, server.addr))
    payload = bytes(range(256)) * (3 * 4096)
    want = expected_web(server.port, "/test.Echo/Unary", payload)
    assert want.startswith(msg(payload[::-1]))
    status, hd, body, sizes = h1_web(port, "/test.Echo/Unary", base64.b64encode(msg(payload)),
                                     ctype=TEXT)
    assert status == 200 and base64.b64decode(body) == want
    assert all(n % 4 == 0 for n in sizes)
    st = h2_web(port, "/test.Echo/Unary", msg(payload))
    assert bytes(st["data"]) == want


def test_grpc_web_local_replies_are_trailers_only(sidecar_run):
    """The proxy's own answers to gRPC-Web requests are gRPC-Web trailers-only answers, as Envoy
    sends them (its grpc_web filter turns its gRPC local replies into gRPC-Web ones): no endpoint
    is UNAVAILABLE (14), no route UNIMPLEMENTED (12)."""
    port, dead = free_port(), free_port()
    cfg = proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "grpc_web": True,
                         "routes": [{"name": "r", "match": {"prefix": "/test."},
                                     "cluster": "g"}]}],
                       [{"name": "g", "endpoints": [f"127.0.0.1:{dead}"], "protocol": "http2"}])
    sidecar_run("proxy", config=cfg)
    for ctype, path, code in ((WEB, "/test.Echo/Unary", "14"), (TEXT, "/test.Echo/Unary", "14"),
                              (WEB, "/other.Svc/M", "12")):
        status, hd, body, _ = h1_web(port, path, msg(b"x") if ctype == WEB else
                                     base64.b64encode(msg(b"x")), ctype=ctype)
        assert status == 200 and hd["content-type"] == ctype and hd["grpc-status"] == code, hd
        assert hd["content-length"] == "0" and body == b"" and hd.get("grpc-message")
        st = h2_web(port, path, msg(b"x"), ctype=ctype)
        h = st["headers"]
        assert h[":status"] == "200" and h["content-type"] == ctype and h["grpc-status"] == code
        assert st["ended"] and bytes(st["data"]) == b""
    # Not a gRPC-Web request: the plain answer.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 404")
    s.close()
