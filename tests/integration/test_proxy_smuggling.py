# SPDX-License-Identifier: Apache-2.0
"""Request smuggling: the real proxy in front of a real nginx, sent the ambiguous requests of the
public research (RFC 9112 sections 6 and 11.2, PortSwigger's CL.TE / TE.CL / TE.TE papers,
Http11Probe-style cases, the Envoy, HAProxy, nginx, Node and Go CVEs). Every one is answered by the
proxy with a 4xx and a reason, and nginx, which logs every request it sees, sees none of them, nor
the request hidden in the body. Header names spelling framing with '_' follow
headers_with_underscores (nginx is run with underscores_in_headers on, so it reads
"Transfer_Encoding" as $http_transfer_encoding, as CGI-style stacks do). Forbidden trailer fields
go to a recording upstream (a fake: nginx never hands trailers on): no complete request carrying
one ever reaches it."""
import subprocess
import time

import pytest

from config_peers import Nginx, nginx_http
from conftest import free_port
from proxy_util import Client, echo, metric  # noqa: F401 - echo is a fixture

SMUGGLED = b"GET /admin-smuggled HTTP/1.1\r\nHost: internal\r\n\r\n"

# name, raw request, the status the proxy answers (RFC 9112: 505 for an unsupported version).
CORPUS = [
    ("CL.TE", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("TE.CL", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", 400),
    ("TE.TE xchunked", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n"
                       b"Content-Length: 4\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE chunked then identity", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                    b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE space before colon", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n"
                                 b"Content-Length: 4\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE tab value", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"
                        b"0\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE obs-fold", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n"
                       b"Content-Length: 4\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE leading space line", b"POST /s HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n"
                                 b"\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE chunked twice", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked"
                            b"\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("TE.TE parameter", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"
                        b"0\r\n\r\n" + SMUGGLED, 400),
    ("TE in HTTP/1.0", b"POST /s HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Length: 4\r\n\r\n" + SMUGGLED, 400),
    ("duplicate CL", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                     b"Content-Length: 48\r\n\r\n" + SMUGGLED, 400),
    ("CL list", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 48\r\n\r\n" + SMUGGLED, 400),
    ("CL plus sign", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: +48\r\n\r\n" + SMUGGLED,
     400),
    ("CL hex", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0x30\r\n\r\n" + SMUGGLED, 400),
    ("CL negative", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" + SMUGGLED, 400),
    ("Connection: content-length", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\n"
                                   b"Connection: content-length\r\n\r\n" + SMUGGLED, 400),
    ("Connection: transfer-encoding", b"POST /s HTTP/1.1\r\nHost: a\r\n"
                                      b"Connection: keep-alive, Transfer-Encoding\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     400),
    ("Connection: host", b"GET /s HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n", 400),
    ("Connection: trailer", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            b"Connection: trailer\r\n\r\n0\r\n\r\n", 400),
    ("bare LF line ends", b"POST /s HTTP/1.1\nHost: a\nContent-Length: 48\n\n" + SMUGGLED, 400),
    ("bare LF in a field", b"POST /s HTTP/1.1\r\nHost: a\r\nX: 1\nContent-Length: 48\r\n\r\n" +
     SMUGGLED, 400),
    ("bare CR", b"POST /s HTTP/1.1\r\nHost: a\r\nX: 1\rContent-Length: 48\r\n\r\n" + SMUGGLED, 400),
    ("NUL in a value", b"GET /s HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("obs-fold", b"GET /s HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    ("two Hosts", b"GET /s HTTP/1.1\r\nHost: a\r\nHost: internal\r\n\r\n", 400),
    ("no Host", b"GET /s HTTP/1.1\r\nX: 1\r\n\r\n", 400),
    ("Host with userinfo", b"GET /s HTTP/1.1\r\nHost: a@internal\r\n\r\n", 400),
    ("space in target", b"GET /s HTTP/1.1 /admin HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("HTTP/0.9 request", b"GET /s\r\n\r\n", 400),
    ("HTTP/2.0 on an HTTP/1 line", b"GET /s HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("invalid name character", b"GET /s HTTP/1.1\r\nHost: a\r\nContent-Length\x01: 0\r\n\r\n",
     400),
    ("chunk size not hex", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n" + SMUGGLED, 400),
]

LOG_FORMAT = ('log_format smuggle \'$request_method $request_uri te="$http_transfer_encoding" '
              'cl="$http_content_length" x="$http_x_a"\';')


@pytest.fixture
def nginx(tmp_path):
    """A real nginx that logs every request it sees (and reads '_' names as '-')."""
    port = free_port()
    root = tmp_path / "nginx"
    n = Nginx(root, nginx_http(root, f"""server {{
        listen 127.0.0.1:{port};
        underscores_in_headers on;
        access_log {root}/logs/seen.log smuggle;
        location / {{ return 200 "app\\n"; }}
    }}""", LOG_FORMAT), port=port)
    n.start()
    yield n
    n.stop()


def seen(nginx):
    p = nginx.root / "logs/seen.log"
    return p.read_text().splitlines() if p.exists() else []


def proxy(sidecar_run, upstream, config=None):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", upstream,
                               "--access-log", "off"], config=config)
    return sc, port


def exchange(port, raw):
    """Sends <raw>, returns (status, reason body, whether the proxy closed the connection)."""
    c = Client(port)
    try:
        c.send(raw)
        r = c.read_response()
        return r.status, r.body, c.closed_by_peer(timeout=3)
    finally:
        c.close()


def test_smuggling_corpus_refused_before_nginx(sidecar_run, nginx):
    sc, port = proxy(sidecar_run, f"127.0.0.1:{nginx.port}")
    before = seen(nginx)  # the readiness probe of the fixture
    for name, raw, status in CORPUS:
        st, body, closed = exchange(port, raw)
        assert st == status, f"{name}: {st} {body!r}"
        assert body.strip(), f"{name}: no reason"
        assert closed, f"{name}: the connection stayed open after a refused head"
    # A well-formed request still passes, so nginx was reachable all along.
    c = Client(port)
    assert c.request("GET", "/fine").status == 200
    c.close()
    time.sleep(0.2)  # nginx writes its log line after the response
    lines = seen(nginx)[len(before):]
    assert [l.split()[1] for l in lines] == ["/fine"], lines


def test_refusal_reasons_name_the_problem(sidecar_run, nginx):
    sc, port = proxy(sidecar_run, f"127.0.0.1:{nginx.port}")
    want = {
        "CL.TE": b"both Content-Length and Transfer-Encoding",
        "duplicate CL": b"more than one Content-Length",
        "Connection: content-length": b"Connection names a framing or routing field",
        "obs-fold": b"obs-fold",
        "bare LF line ends": b"bare LF",
    }
    cases = {name: raw for name, raw, _ in CORPUS}
    for name, reason in want.items():
        st, body, _ = exchange(port, cases[name])
        assert st == 400 and reason in body, (name, body)


@pytest.mark.parametrize("mode", ["drop", "reject", "allow"])
def test_headers_with_underscores(sidecar_run, nginx, mode):
    sc, port = proxy(sidecar_run, f"127.0.0.1:{nginx.port}",
                     config=f"headers_with_underscores: {mode}\n")
    before = len(seen(nginx))
    raw = (b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n"
           b"X_A: 1\r\n\r\n0\r\n\r\n")
    st, body, _ = exchange(port, raw)
    time.sleep(0.2)
    lines = seen(nginx)[before:]
    text = sc.get("/metrics")[1].decode()
    if mode == "reject":
        assert st == 400 and b"underscore" in body
        assert lines == []
        assert metric(text, "sidecar_headers_with_underscores_total", action="rejected") == 1
    elif mode == "drop":
        # Forwarded with its Content-Length only: nginx never sees the '_' spellings.
        assert st == 200
        assert lines == ['POST /u te="-" cl="5" x="-"'], lines
        assert metric(text, "sidecar_headers_with_underscores_total", action="dropped") == 1
    else:
        # allow: what an upstream that maps '_' to '-' then reads (the reason drop is the default)
        assert st == 200
        assert lines == ['POST /u te="chunked" cl="5" x="1"'], lines


@pytest.mark.parametrize("mode", ["drop", "reject", "allow"])
def test_headers_with_underscores_over_http2(sidecar_run, nginx, mode):
    """The same rule for an HTTP/2 client (curl over h2c): HTTP/2 allows '_' in field names."""
    sc, port = proxy(sidecar_run, f"127.0.0.1:{nginx.port}",
                     config=f"headers_with_underscores: {mode}\n")
    before = len(seen(nginx))
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w",
                          "\n%{http_code} %{http_version}", "-H", "x_a: 1", "-H",
                          "transfer_encoding: chunked", f"http://127.0.0.1:{port}/u2"],
                         capture_output=True, text=True, timeout=20).stdout
    time.sleep(0.2)
    lines = seen(nginx)[before:]
    if mode == "reject":
        assert out.endswith("400 2") and "underscore" in out, out
        assert lines == []
    elif mode == "drop":
        assert out.endswith("200 2"), out
        assert lines == ['GET /u2 te="-" cl="-" x="-"'], lines
    else:
        assert out.endswith("200 2"), out
        assert lines == ['GET /u2 te="chunked" cl="-" x="1"'], lines


def test_underscore_headers_dropped_before_routing(sidecar_run, echo):
    """Dropped headers are gone for routing and policies too, not only upstream."""
    port = free_port()
    cfg = f"""listeners:
  - name: in
    address: 127.0.0.1:{port}
    routes:
      - {{ name: by-header, match: {{ headers: [{{ name: x_route, value: "1" }}] }}, cluster: app }}
clusters:
  - {{ name: app, endpoints: ["{echo.addr}"] }}
"""
    sc = sidecar_run("proxy", config=cfg)
    c = Client(port)
    r = c.request("GET", "/", headers=[("x_route", "1")])
    assert r.status == 404  # the route's header is gone: no route matches
    c.close()
    assert echo.requests == []


@pytest.mark.parametrize("trailer", [b"Content-Length: 48", b"Transfer-Encoding: chunked",
                                     b"Host: internal", b"Authorization: Bearer forged",
                                     b"cookie: session=admin"])
def test_forbidden_trailer_fields_never_reach_the_app(sidecar_run, echo, trailer):
    sc, port = proxy(sidecar_run, echo.addr)
    raw = (b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n\r\n")
    st, body, closed = exchange(port, raw)
    assert st == 400 and b"forbidden trailer field" in body, body
    assert closed
    time.sleep(0.2)
    assert echo.requests == [], [r.trailers for r in echo.requests]
    # A permitted trailer is forwarded as it came.
    c = Client(port)
    c.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n")
    r = c.read_response()
    c.close()
    assert r.status == 200 and r.json()["trailers"] == "X-Checksum: 1\r\n"
