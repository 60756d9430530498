# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: what a hop of each protocol says about itself and keeps for the next. Via names
the version of the message received on the hop it describes, in both directions and for the four
combinations of HTTP/1.1 and HTTP/2 clients and upstreams (RFC 9110 section 7.6.3); `te:
trailers` reaches HTTP/2 upstreams from HTTP/1.1 and HTTP/2 clients, other TE values do not (RFC
9113 section 8.2.2); a listener that serves HTTP/2 only (`http2.only`, Envoy's codec_type HTTP2)
answers HTTP/1 with 505. Real peers: curl (HTTP/1.1, --http2-prior-knowledge), nghttp, nghttpd
and the Python h2 library, next to scripted HTTP/1 and HTTP/2 upstreams that record what they
received."""
import socket
import subprocess

import pytest
from conftest import free_port
from h2_upstream import H2Upstream
from proxy_util import FakeUpstream, echo, proxy_config, respond  # noqa: F401
from test_proxy_h2 import H2, curl

NGHTTP = "/usr/bin/nghttp"


def listener(port, **extra):
    lst = {"name": "l", "address": f"127.0.0.1:{port}",
           "routes": [{"name": "r", "match": {"prefix": "/"}, "cluster": "app"}]}
    lst.update(extra)
    return lst


def run(sidecar_run, endpoint, protocol="http1", **lextra):
    port = free_port()
    c = {"name": "app", "endpoints": [endpoint], "protocol": protocol}
    sc = sidecar_run("proxy", config=proxy_config([listener(port, **lextra)], [c]))
    return sc, port


def heads(out):
    """The header fields of the last response head in curl's -D output, lowercased."""
    blocks = [b for b in out.decode("latin-1").split("\r\n\r\n") if b.startswith("HTTP/")]
    lines = blocks[-1].split("\r\n")
    h = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        h.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], h


def curl_head(port, path, *args):
    rc, out, err = curl("-s", "-D", "-", "-o", "/dev/null", *args, f"http://127.0.0.1:{port}{path}")
    assert rc == 0, err
    return heads(out)


@pytest.fixture
def h2up():
    ups = []

    def start(**kw):
        u = H2Upstream(**kw)
        ups.append(u)
        return u

    yield start
    for u in ups:
        u.close()


# ---- Via, both directions, four combinations ----

def test_via_http1_client_http1_upstream(sidecar_run, echo):
    _, port = run(sidecar_run, echo.addr)
    status, h = curl_head(port, "/a", "--http1.1")
    assert status.startswith("HTTP/1.1 200")
    assert h["via"] == ["1.1 sidecar"], "the response came over HTTP/1.1"
    seen = {k.lower(): v for k, v in echo.requests[-1].headers}
    assert seen["via"] == "1.1 sidecar", "the request came over HTTP/1.1"


def http10_answer(up, conn, req):
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nVia: 1.1 origin-lb\r\n\r\nok")
    return False


def test_via_names_an_http10_upstream_response_as_1_0(sidecar_run):
    up = FakeUpstream(http10_answer)
    try:
        _, port = run(sidecar_run, up.addr)
        _, h = curl_head(port, "/", "--http1.1")
        assert h["via"] == ["1.1 origin-lb, 1.0 sidecar"]
        _, h = curl_head(port, "/", "--http2-prior-knowledge")
        assert h["via"] == ["1.1 origin-lb, 1.0 sidecar"]
    finally:
        up.close()


def test_via_http1_client_http2_upstream(sidecar_run, h2up):
    up = h2up()
    _, port = run(sidecar_run, up.addr, protocol="http2")
    status, h = curl_head(port, "/echo", "--http1.1", "-H", "Via: 1.1 edge")
    assert status.startswith("HTTP/1.1 200")
    assert h["via"] == ["2 sidecar"], "the response came over HTTP/2"
    assert up.requests[-1].header("via") == "1.1 edge, 1.1 sidecar"


def test_via_http2_client_http1_upstream(sidecar_run, echo):
    _, port = run(sidecar_run, echo.addr)
    status, h = curl_head(port, "/a", "--http2-prior-knowledge")
    assert status.startswith("HTTP/2 200")
    assert h["via"] == ["1.1 sidecar"], "the response came over HTTP/1.1"
    seen = {k.lower(): v for k, v in echo.requests[-1].headers}
    assert seen["via"] == "2 sidecar", "the request came over HTTP/2"


def test_via_http2_client_http2_upstream(sidecar_run, h2up):
    up = h2up()
    _, port = run(sidecar_run, up.addr, protocol="http2")
    status, h = curl_head(port, "/echo", "--http2-prior-knowledge")
    assert status.startswith("HTTP/2 200")
    assert h["via"] == ["2 sidecar"]
    assert up.requests[-1].header("via") == "2 sidecar"
    # nghttp sees the same field on its own connection.
    p = subprocess.run([NGHTTP, "-v", f"http://127.0.0.1:{port}/echo"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "via: 2 sidecar" in p.stdout


# ---- te: trailers ----

def test_te_trailers_from_http2_client_reaches_http2_upstream(sidecar_run, h2up):
    up = h2up()
    _, port = run(sidecar_run, up.addr, protocol="http2")
    c = H2(port)
    sid = c.request("/trailers", method="POST", headers=[("te", "trailers"),
                                                          ("content-type", "text/plain")],
                    body=b"x")
    c.pump(lambda: c.streams[sid]["ended"])
    assert c.streams[sid]["headers"][":status"] == "200"
    assert c.streams[sid]["trailers"]["grpc-status"] == "0"
    c.close()
    assert up.requests[-1].header("te") == "trailers", "not a gRPC call, te: trailers kept"
    # Without te, none is invented for a plain request.
    rc, _, err = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/echo")
    assert rc == 0, err
    assert up.requests[-1].header("te") is None


def test_te_from_http1_client_keeps_only_trailers_toward_http2(sidecar_run, h2up, echo):
    up = h2up()
    _, port = run(sidecar_run, up.addr, protocol="http2")
    rc, out, err = curl("--http1.1", "-H", "TE: gzip, trailers", "-H", "Connection: TE",
                        "-D", "-", f"http://127.0.0.1:{port}/trailers")
    assert rc == 0, err
    assert up.requests[-1].header("te") == "trailers", "every TE value but trailers removed"
    rc, _, err = curl("--http1.1", "-H", "TE: gzip", "-H", "Connection: TE",
                      f"http://127.0.0.1:{port}/echo")
    assert rc == 0, err
    assert up.requests[-1].header("te") is None
    # An HTTP/1.1 upstream gets no TE at all (hop-by-hop, RFC 9110 section 10.1.4).
    _, port1 = run(sidecar_run, echo.addr)
    rc, _, err = curl("--http1.1", "-H", "TE: trailers", "-H", "Connection: TE",
                      f"http://127.0.0.1:{port1}/")
    assert rc == 0, err
    assert "te" not in {k.lower() for k, _ in echo.requests[-1].headers}


# ---- HTTP/2 only (codec_type HTTP2) ----

def test_http2_only_listener_answers_http1_with_505(sidecar_run, echo):
    _, port = run(sidecar_run, echo.addr, http2={"only": True})
    status, _ = curl_head(port, "/", "--http1.1")
    assert status.startswith("HTTP/1.1 505")
    rc, out, err = curl("--http1.1", f"http://127.0.0.1:{port}/")
    assert b"HTTP/2 only" in out
    status, _ = curl_head(port, "/", "--http2-prior-knowledge")
    assert status.startswith("HTTP/2 200")
    # The connection is closed after the 505: nothing else is read from it.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.count(b"HTTP/1.1 505") == 1


def test_http2_only_needs_http2_enabled(run_cli, echo, tmp_path):
    port = free_port()
    p = tmp_path / "c.yaml"
    p.write_text(proxy_config([listener(port, http2={"only": True, "enabled": False})],
                              [{"name": "app", "endpoints": [echo.addr]}]))
    r = run_cli("proxy", "-c", str(p), "--check")
    assert r.returncode != 0
    assert "http2.only needs http2.enabled" in r.stderr
