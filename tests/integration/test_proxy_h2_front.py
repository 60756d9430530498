# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: what a hop of each protocol says about itself and keeps for the next. Via names
the version of the message received on the hop it describes, in both directions and for the four
combinations of HTTP/1.1 and HTTP/2 clients and upstreams (RFC 9110 section 7.6.3); `te:
trailers` reaches HTTP/2 upstreams from HTTP/1.1 and HTTP/2 clients, other TE values do not (RFC
9113 section 8.2.2); a listener that serves HTTP/2 only (`http2.only`, Envoy's codec_type HTTP2)
answers HTTP/1 with 505. Real peers: curl (HTTP/1.1, --http2-prior-knowledge), nghttp, nghttpd
and the Python h2 library, next to scripted HTTP/1 and HTTP/2 upstreams that record what they
received."""
import json
import socket
import subprocess

import pytest
from conftest import free_port
from proxy_util import FakeUpstream, echo, proxy_config  # noqa: F401
from test_proxy_envoy import bootstrap, static_cluster
from test_proxy_h2 import H2, curl
from test_proxy_h2_upstream import h2up  # noqa: F401  (a fixture)
from tls_util import pki, s_client  # noqa: F401  (pki is a fixture)

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


# ---- Via, both directions, four combinations ----

@pytest.mark.parametrize("flag,status_line,request_via", [
    ("--http1.1", "HTTP/1.1 200", "1.1 sidecar"),
    ("--http2-prior-knowledge", "HTTP/2 200", "2 sidecar"),
])
def test_via_http1_upstream(sidecar_run, echo, flag, status_line, request_via):
    _, port = run(sidecar_run, echo.addr)
    status, h = curl_head(port, "/a", flag)
    assert status.startswith(status_line)
    assert h["via"] == ["1.1 sidecar"], "the response came over HTTP/1.1"
    seen = {k.lower(): v for k, v in echo.requests[-1].headers}
    assert seen["via"] == request_via, "the request's own version"


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


def test_http2_only_over_tls_offers_h2_alone(sidecar_run, echo, pki):  # noqa: F811
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")}
    _, port = run(sidecar_run, echo.addr, http2={"only": True}, tls=tls)
    rc, out = s_client(port, "-alpn", "h2,http/1.1", "-CAfile", str(pki / "ca.pem"),
                       "-servername", "localhost")
    assert rc == 0 and "ALPN protocol: h2" in out
    rc, out = s_client(port, "-alpn", "http/1.1", "-CAfile", str(pki / "ca.pem"),
                       "-servername", "localhost")
    assert "No ALPN negotiated" in out, "http/1.1 is not offered"
    rc, body, err = curl("--http2", "--cacert", str(pki / "ca.pem"), "-w", "\n%{http_version}",
                         f"https://localhost:{port}/")
    assert rc == 0 and body.endswith(b"\n2"), err
    rc, body, err = curl("--http1.1", "--cacert", str(pki / "ca.pem"), "-w", "\n%{http_code}",
                         f"https://localhost:{port}/")
    assert body.endswith(b"\n505"), (rc, body, err)


def test_http2_only_needs_http2_enabled(run_cli, echo, tmp_path):
    port = free_port()
    p = tmp_path / "c.yaml"
    p.write_text(proxy_config([listener(port, http2={"only": True, "enabled": False})],
                              [{"name": "app", "endpoints": [echo.addr]}]))
    r = run_cli("proxy", "-c", str(p), "--check")
    assert r.returncode != 0
    assert "http2.only needs http2.enabled" in r.stderr


# ---- Envoy: the connection manager's codec and HTTP/2 settings ----

def envoy_doc(port, up_addr, **hcm):
    vhs = [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]
    return bootstrap(port, vhs, [static_cluster("app", up_addr)], hcm_extra=hcm)


def printed_listener(run_cli, path):
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout[:p.stdout.rindex("}") + 1])["listeners"][0]


def nghttp_settings(port):
    p = subprocess.run([NGHTTP, "-v", f"http://127.0.0.1:{port}/"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    recv = p.stdout.split("recv SETTINGS frame", 1)[1].split("send SETTINGS frame", 1)[0]
    return {ln.split("(")[0].strip(" [;"): int(ln.rsplit(":", 1)[1].rstrip("]"))
            for ln in recv.splitlines() if "SETTINGS_" in ln}, p.stdout


def test_envoy_codec_http2_and_http2_protocol_options(sidecar_run, run_cli, echo):
    port = free_port()
    doc = envoy_doc(port, echo.addr, codec_type="HTTP2", max_request_headers_kb=32,
                    http2_protocol_options={
                        "max_concurrent_streams": 7, "initial_stream_window_size": 131072,
                        "initial_connection_window_size": 2097152, "hpack_table_size": 4096,
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}},
                    common_http_protocol_options={"max_headers_count": 100})
    sc = sidecar_run("proxy", config=json.dumps(doc))
    assert printed_listener(run_cli, sc.config_path)["http2"] == {
        "max_concurrent_streams": "7", "initial_stream_window_size": "131072",
        "initial_connection_window_size": "2097152", "keepalive_interval": "30s",
        "keepalive_timeout": "5s", "only": "true", "max_header_list_size": "32KiB"}
    settings, out = nghttp_settings(port)
    assert settings["SETTINGS_MAX_CONCURRENT_STREAMS"] == 7, out
    assert settings["SETTINGS_INITIAL_WINDOW_SIZE"] == 131072, out
    assert settings["SETTINGS_MAX_HEADER_LIST_SIZE"] == 32768, out
    # The connection window: a WINDOW_UPDATE on stream 0 opens it from 65535 to 2 MiB.
    assert "window_size_increment=2031617" in out, out
    status, h = curl_head(port, "/", "--http2-prior-knowledge")
    assert status.startswith("HTTP/2 200") and h["via"] == ["1.1 sidecar"]
    status, _ = curl_head(port, "/", "--http1.1")
    assert status.startswith("HTTP/1.1 505"), "codec_type HTTP2 refuses HTTP/1"


def test_envoy_codec_http1_refuses_h2c(sidecar_run, run_cli, echo):
    port = free_port()
    sc = sidecar_run("proxy", config=json.dumps(envoy_doc(port, echo.addr, codec_type="HTTP1")))
    assert printed_listener(run_cli, sc.config_path)["http2"] == {"enabled": "false"}
    status, _ = curl_head(port, "/", "--http1.1")
    assert status.startswith("HTTP/1.1 200")
    rc, out, _ = curl("-s", "-D", "-", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/")
    assert rc != 0 or b"HTTP/2 200" not in out, "no HTTP/2 on an HTTP1 listener"
    # AUTO serves both, as the proxy's own listeners do.
    port2 = free_port()
    sc = sidecar_run("proxy", config=json.dumps(envoy_doc(port2, echo.addr, codec_type="AUTO")))
    assert "http2" not in printed_listener(run_cli, sc.config_path)
    assert curl_head(port2, "/", "--http2-prior-knowledge")[0].startswith("HTTP/2 200")
    assert curl_head(port2, "/", "--http1.1")[0].startswith("HTTP/1.1 200")


HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


@pytest.mark.parametrize("hcm,want", [
    ({"codec_type": "HTTP3"}, f"{HCM_PATH}: codec_type HTTP3 is not supported (AUTO, HTTP1, "
                              "HTTP2)"),
    ({"http2_protocol_options": {"allow_connect": True}},
     f"{HCM_PATH}.http2_protocol_options: allow_connect: extended CONNECT (RFC 8441) is not "
     "supported"),
    ({"http2_protocol_options": {"custom_settings_parameters": [{"identifier": 9, "value": 1}]}},
     f"{HCM_PATH}.http2_protocol_options: custom_settings_parameters is not supported"),
    ({"common_http_protocol_options": {"max_headers_count": 0}},
     f"{HCM_PATH}: max_headers_count 0 is not between 1 and 1024"),
    ({"common_http_protocol_options": {"max_headers_count": 2000}},
     f"{HCM_PATH}: max_headers_count 2000 is not between 1 and 1024"),
    ({"max_request_headers_kb": 4096}, f"{HCM_PATH}: max_request_headers_kb 4096 is not between"),
])
def test_envoy_unmapped_http2_fields_are_refused_with_their_path(run_cli, tmp_path, hcm, want):
    f = tmp_path / "envoy.json"
    f.write_text(json.dumps(envoy_doc(free_port(), "127.0.0.1:1", **hcm), indent=2))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1, p.stdout
    assert want in p.stderr, p.stderr
