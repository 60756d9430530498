# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: HTTP/1.1 clients to HTTP/2 upstreams (cluster `protocol: http2 | auto`). Real
peers: nghttpd (plaintext with prior knowledge and TLS), nginx with an http2 TLS listener, and an
upstream written with the Python h2 library (h2_upstream.py) for trailers, GOAWAY, RST_STREAM,
slow readers and stream limits. Bodies are compared byte for byte both ways."""
import hashlib
import json
import socket
import struct
import subprocess
import threading
import time

import pytest
from config_peers import Nginx, nginx_http
from conftest import free_port
from h2_upstream import H2Upstream, pattern
from proxy_util import Client, access_lines, get, metric, proxy_config, wait_for
from test_proxy_envoy import bootstrap, static_cluster
from test_proxy_istio import own, request, service_entry, stream
from tls_util import https_up, pki  # noqa: F401

NGHTTPD = "/usr/sbin/nghttpd"


def config(port, endpoint, cluster=None, route=None, **extra):
    c = {"name": "up", "endpoints": [endpoint], "protocol": "http2"}
    c.update(cluster or {})
    r = {"name": "r", "cluster": "up"}
    r.update(route or {})
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "routes": [r]}], [c],
                        **extra)


@pytest.fixture
def nghttpd(tmp_path):
    started = []

    def start(tls=None):
        www = tmp_path / f"www{len(started)}"
        www.mkdir()
        (www / "index.html").write_bytes(b"hello from nghttpd\n")
        (www / "big.bin").write_bytes(pattern(1_500_000))
        port = free_port()
        args = [NGHTTPD, "-d", str(www)]
        if tls:
            args += [str(port), str(tls[0]), str(tls[1])]
        else:
            args += ["--no-tls", str(port)]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(p)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_for(up)
        return port

    yield start
    for p in started:
        p.terminate()
        p.wait(timeout=5)


@pytest.fixture
def h2up():
    started = []

    def start(**kw):
        u = H2Upstream(**kw)
        started.append(u)
        return u

    yield start
    for u in started:
        u.close()


def metrics(sc):
    return sc.get("/metrics")[1].decode()


def test_nghttpd_plaintext_prior_knowledge(sidecar_run, nghttpd):
    up = nghttpd()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, f"127.0.0.1:{up}"))
    r = get(port, "/index.html")
    assert r.status == 200 and r.body == b"hello from nghttpd\n"
    assert r.header("server").startswith("nghttpd"), "the answer came from nghttpd over HTTP/2"
    assert r.header("via") == "2 sidecar", "the response came over HTTP/2"
    big = get(port, "/big.bin")
    assert big.status == 200 and big.body == pattern(1_500_000)
    assert get(port, "/missing").status == 404
    head = Client(port).request(method="HEAD", path="/big.bin")
    assert head.status == 200 and head.body == b""
    line = access_lines(sc, 4)[-1]
    assert line["protocol"] == "HTTP/1.1" and line["flags"] == "-"
    # One HTTP/2 connection carried all of them.
    assert metric(metrics(sc), "sidecar_upstream_cx_active", cluster="up") == 1


def test_nghttpd_tls_alpn_h2(sidecar_run, nghttpd, pki):
    up = nghttpd(tls=(pki / "server.key", pki / "server.pem"))
    for proto in ("http2", "auto"):
        port = free_port()
        sc = sidecar_run("proxy", config=config(
            port, f"localhost:{up}", {"protocol": proto, "tls": {"ca": str(pki / "ca.pem")}}))
        big = get(port, "/big.bin")
        assert big.status == 200 and big.body == pattern(1_500_000), proto
        assert metric(metrics(sc), "sidecar_upstream_tls_handshakes_total", cluster="up",
                      result="ok") == 1
        sc.stop()


@pytest.fixture
def nginx_h2(tmp_path, pki):
    started = []

    def start(http2=True):
        port = free_port()
        root = tmp_path / f"nginx{port}"
        (root / "tmp").mkdir(parents=True)
        n = Nginx(root, nginx_http(root, f"""server {{
            listen 127.0.0.1:{port} ssl{' http2' if http2 else ''};
            ssl_certificate {pki / 'server.pem'};
            ssl_certificate_key {pki / 'server.key'};
            location / {{ return 200 "protocol=$server_protocol len=$content_length"; }}
        }}"""), port=port)
        started.append(n.start(ready=lambda: https_up(port)))
        return n

    yield start
    for n in started:
        n.stop()


def test_nginx_http2_listener_over_tls(sidecar_run, nginx_h2, pki):
    n = nginx_h2()
    port = free_port()
    sidecar_run("proxy", config=config(port, f"localhost:{n.port}",
                                       {"protocol": "auto", "tls": {"ca": str(pki / "ca.pem")}}))
    r = get(port, "/")
    assert r.status == 200 and r.body == b"protocol=HTTP/2.0 len="
    r = get(port, "/", method="POST", body=b"x" * 1000)
    assert r.status == 200 and r.body == b"protocol=HTTP/2.0 len=1000"
    # auto against a server without h2: ALPN picks http/1.1 and the request goes as HTTP/1.1.
    n1 = nginx_h2(http2=False)
    port1 = free_port()
    sidecar_run("proxy", config=config(port1, f"localhost:{n1.port}",
                                       {"protocol": "auto", "tls": {"ca": str(pki / "ca.pem")}}))
    r = get(port1, "/")
    assert r.status == 200 and r.body == b"protocol=HTTP/1.1 len="


def test_bodies_both_ways_byte_for_byte(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sidecar_run("proxy", config=config(port, up.addr, max_request_body="64MiB"))
    body = pattern(3_000_000)
    # Content-Length upload, echoed with Content-Length.
    r = get(port, "/echo", method="POST", body=body)
    assert r.status == 200 and r.body == body
    assert up.requests[-1].body == body
    assert up.requests[-1].header("content-length") == str(len(body))
    # Chunked upload, echoed without Content-Length: chunked to the client.
    c = Client(port)
    head = b"POST /stream HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 70000]), body[i:i + 70000])
                      for i in range(0, len(body), 70000))
    c.send(head + chunks + b"0\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == body
    assert r.header("transfer-encoding") == "chunked"
    assert up.requests[-1].body == body and up.requests[-1].header("content-length") is None
    # Chunked upload with trailers: they reach the upstream as HTTP/2 trailers.
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == b"hello"
    assert up.requests[-1].trailers == [("x-sum", "42")]
    # A large download without Content-Length.
    r = c.request(path="/bytes/5000000")
    assert r.status == 200 and r.body == pattern(5_000_000)
    c.close()
    assert up.connections == 1, "one HTTP/2 connection carried every request"


def test_trailers_become_chunked_trailers(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sidecar_run("proxy", config=config(port, up.addr))
    r = get(port, "/trailers", headers=[("TE", "trailers")])
    assert r.status == 200 and r.body == b"message one;message two"
    assert r.header("content-type") == "application/grpc"
    tr = r.trailers.decode()
    assert "grpc-status: 0\r\n" in tr and "grpc-message: all good\r\n" in tr
    assert f"x-checksum: {hashlib.sha256(r.body).hexdigest()}" in tr
    # A trailers-only gRPC answer: its fields are the head of an empty response.
    r = get(port, "/grpc-unavailable")
    assert r.status == 200 and r.body == b""
    assert r.header("grpc-status") == "14" and r.header("grpc-message") == "try later"


def test_refused_stream_and_goaway_are_retried(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr,
                                            route={"retry_policy": {"num_retries": 0}}))
    r = get(port, "/refuse")
    assert r.status == 200 and r.body == b"after refusal"
    assert [q.header(":path") for q in up.requests] == ["/refuse", "/refuse"]
    # GOAWAY naming a last stream below this one: not processed, sent again on a new
    # connection without a retry configured (a request whose body could not be kept for a replay,
    # a POST without retry_non_idempotent, is answered 502 instead).
    r = get(port, "/goaway", headers=[("X-Check", "1")])
    assert r.status == 200 and r.body == b"after goaway"
    assert up.requests[-1].header("x-check") == "1" and up.requests[-1].conn == 2
    assert up.connections == 2
    line = access_lines(sc, 2)[-1]
    assert line["status"] == 200
    text = metrics(sc)
    # The stream GOAWAY left unprocessed counts as refused too.
    for event, n in (("refused", 2), ("goaway", 1)):
        assert metric(text, "sidecar_upstream_http2_events_total", cluster="up",
                      event=event) == n, event


def test_reset_and_death_mid_body_truncate(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr))
    for path in ("/reset-mid", "/die-mid"):
        c = Client(port)
        c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = b""
        c.sock.settimeout(5)
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            data += d
        assert data.startswith(b"HTTP/1.1 200 ") and b"partial" in data
        assert not data.endswith(b"0\r\n\r\n"), "never a silently complete message"
        c.close()
        assert "UC" in access_lines(sc)[-1]["flags"]
    # The proxy goes on: a fresh connection for the next request.
    assert get(port, "/").body == b"hello over h2\n"
    assert metric(metrics(sc), "sidecar_upstream_http2_events_total", cluster="up",
                  event="reset") == 1


def test_5xx_retried_on_streams(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sidecar_run("proxy", config=config(port, up.addr, route={
        "retry_policy": {"retry_on": ["5xx"], "num_retries": 2}}))
    r = get(port, "/status/503")
    assert r.status == 503
    assert len(up.requests) == 3 and {q.conn for q in up.requests} == {1}


def concurrent_gets(port, paths):
    out = [None] * len(paths)

    def one(i):
        out[i] = get(port, paths[i])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_streams_share_a_connection_up_to_the_limits(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sidecar_run("proxy", config=config(port, up.addr))
    assert get(port, "/").status == 200
    rs = concurrent_gets(port, ["/sleep"] * 4)
    assert all(r.status == 200 and r.body == b"slept" for r in rs)
    assert up.connections == 1, "four overlapping streams on the one connection"
    # The server allows one stream at a time: a second connection opens.
    up1 = h2up(max_streams=1)
    port1 = free_port()
    sidecar_run("proxy", config=config(port1, up1.addr))
    assert get(port1, "/").status == 200
    rs = concurrent_gets(port1, ["/sleep"] * 2)
    assert all(r.status == 200 for r in rs)
    assert up1.connections == 2
    assert {r.header("x-conn") for r in rs} == {"1", "2"}
    # Our own max_concurrent_streams: 1 does the same.
    up2 = h2up()
    port2 = free_port()
    sidecar_run("proxy", config=config(port2, up2.addr,
                                       {"http2": {"max_concurrent_streams": 1}}))
    assert get(port2, "/").status == 200
    rs = concurrent_gets(port2, ["/sleep"] * 2)
    assert all(r.status == 200 for r in rs) and up2.connections == 2


def test_burst_waits_for_connecting_connection(sidecar_run, h2up):
    """200 requests at once from cold: the tries that find no connected connection wait for the
    one connecting instead of each opening its own, and connections left idle stay pooled."""
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr))
    for _ in range(2):
        p = subprocess.run(["h2load", "-n", "1000", "-c", "20", "-m", "10",
                            f"http://127.0.0.1:{port}/"], capture_output=True, timeout=120)
        out = p.stdout.decode()
        assert "1000 succeeded" in out and "1000 2xx" in out, out
    # 200 streams in flight fit two connections of 100 (max_concurrent_streams); before tries
    # waited for a connecting connection a burst opened one per try.
    assert 1 <= up.connections <= 3, up.connections
    assert metric(metrics(sc), "sidecar_upstream_cx_active", cluster="up") == up.connections


def test_slow_reader_never_stalls_other_streams(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr))
    assert get(port, "/").status == 200
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"GET /bytes/12000000 HTTP/1.1\r\nHost: test\r\n\r\n")
    time.sleep(0.5)  # the slow client reads nothing: its stream's window closes
    # Had the stalled stream held the connection's window, this would never be answered.
    r = get(port, "/echo", method="POST", body=b"quick")
    assert r.status == 200 and r.body == b"quick"
    assert r.header("x-conn") == "1", "on the same connection as the stalled stream"
    # Bounded: the proxy holds about a window of the 12 MB, not the body.
    rss = int([x for x in open(f"/proc/{sc.proc.pid}/status").read().splitlines()
               if x.startswith("VmRSS")][0].split()[1])
    assert rss < 40 * 1024
    # Then the slow client reads it all, intact.
    slow.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += slow.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    body = bytearray()
    buf = rest
    while True:
        while b"\r\n" not in buf:
            buf += slow.recv(65536)
        line, buf = buf.split(b"\r\n", 1)
        n = int(line, 16)
        while len(buf) < n + 2:
            buf += slow.recv(1 << 20)
        body += buf[:n]
        buf = buf[n + 2:]
        if n == 0:
            break
    slow.close()
    assert bytes(body) == pattern(12_000_000)


def test_client_abort_and_upstream_death_with_streams_open(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr))
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sendall(b"GET /sleep HTTP/1.1\r\nHost: test\r\n\r\n")
        time.sleep(0.05)
        c.close()  # a reset: the stream is reset; the connection stays for others
    assert get(port, "/").body == b"hello over h2\n"
    assert up.connections == 1
    assert wait_for(lambda: sum("DC" in line["flags"] for line in access_lines(sc, 4)) == 3)
    # The upstream goes away while streams are open: they fail (502), the next ones reconnect.
    rs = []
    t = threading.Thread(target=lambda: rs.append(get(port, "/sleep")))
    t.start()
    time.sleep(0.2)
    up.close()
    t.join()
    assert rs[0].status in (200, 502, 503)
    up2 = h2up()
    port2 = free_port()
    sidecar_run("proxy", config=config(port2, up2.addr))
    assert get(port2, "/").status == 200


def test_keepalive_ping_and_idle_timeout(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr, {
        "idle_timeout": "1s", "http2": {"keepalive_interval": "200ms",
                                        "keepalive_timeout": "1s"}}))
    assert get(port, "/").status == 200
    assert metric(metrics(sc), "sidecar_upstream_cx_active", cluster="up") == 1
    # The upstream answers PINGs; the idle connection closes after idle_timeout.
    assert wait_for(lambda: metric(metrics(sc), "sidecar_upstream_cx_active", cluster="up") == 0,
                    timeout=5)
    assert get(port, "/").status == 200 and up.connections == 2


def test_unanswered_ping_closes_the_connection(sidecar_run, h2up):
    up = h2up(read_delay=3.0)  # reads (and answers PINGs) only every 3 s
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr, {
        "http2": {"keepalive_interval": "200ms", "keepalive_timeout": "300ms"}}))
    rs = []
    t = threading.Thread(target=lambda: rs.append(get(port, "/")))
    t.start()
    t.join()
    assert rs[0].status in (200, 502)
    assert wait_for(lambda: "PING timeout" in sc.logs() or metric(
        metrics(sc), "sidecar_upstream_cx_active", cluster="up") == 0, timeout=8)


def test_config_protocol_refused_when_unknown(run_cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(free_port(), "127.0.0.1:1", {"protocol": "spdy"}))
    r = run_cli("proxy", "--config", str(cfg), "--check")
    assert r.returncode != 0 and "protocol" in (r.stdout + r.stderr)


def test_envoy_cluster_http2_protocol_options(sidecar_run, run_cli, h2up):
    up = h2up(max_streams=1)
    port = free_port()
    po = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {
            "max_concurrent_streams": 50, "initial_stream_window_size": 131072,
            "connection_keepalive": {"interval": "30s", "timeout": "5s"}}}}}
    doc = bootstrap(port, [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}],
        [static_cluster("app", up.addr, typed_extension_protocol_options=po)])
    sc = sidecar_run("proxy", config=json.dumps(doc))
    r = get(port, "/echo", method="POST", body=b"through envoy's config")
    assert r.status == 200 and r.body == b"through envoy's config"
    assert up.requests[-1].header(":scheme") == "http"
    p = run_cli("proxy", "-c", str(sc.config_path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout[:p.stdout.rindex("}") + 1])["clusters"][0]
    assert c["protocol"] == "http2"
    assert c["http2"] == {"max_concurrent_streams": "50", "initial_stream_window_size": "131072",
                          "keepalive_interval": "30s", "keepalive_timeout": "5s"}
    # The older cluster field means the same; use_downstream_protocol_config is refused.
    doc["static_resources"]["clusters"] = [static_cluster("app", up.addr,
                                                          http2_protocol_options={})]
    f = sc.config_path.parent / "old.json"
    f.write_text(json.dumps(doc))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0 and '"protocol": "http2"' in p.stdout, p.stderr
    po["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].pop("explicit_http_config")
    po["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "use_downstream_protocol_config"] = {}
    doc["static_resources"]["clusters"] = [static_cluster("app", up.addr,
                                                          typed_extension_protocol_options=po)]
    f.write_text(json.dumps(doc))
    p = run_cli("proxy", "-c", str(f), "--check")
    assert p.returncode == 1 and "use_downstream_protocol_config" in p.stderr


def test_istio_h2_upgrade_policy(sidecar_run, h2up):
    up = h2up()
    port = free_port()
    dr = """apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE, http2MaxRequests: 100, maxConcurrentStreams: 1}
"""
    sidecar_run("proxy", config=stream(own(port), service_entry("reviews", 9080, [(up, {})]), dr))
    assert request(port, "reviews", "/echo") == [(200, b"")]
    rs = []
    ts = [threading.Thread(target=lambda: rs.extend(request(port, "reviews", "/sleep")))
          for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert rs == [(200, b"slept")] * 2
    assert up.connections == 2, "maxConcurrentStreams: 1 opens a second HTTP/2 connection"
    assert {q.header(":authority") for q in up.requests} == {"reviews"}


def test_complete_response_outlives_its_connection(sidecar_run, h2up):
    """The server sends a whole 6 MB response (the windows allow it), then GOAWAY and closes;
    the client, which had not read yet, still gets every byte."""
    up = h2up()
    port = free_port()
    sc = sidecar_run("proxy", config=config(port, up.addr, {"http2": {
        "initial_stream_window_size": "16MiB", "initial_connection_window_size": "16MiB"}}))
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"GET /bytes-close/6000000 HTTP/1.1\r\nHost: test\r\n\r\n")
    time.sleep(1.0)  # the server has sent everything and closed
    c = Client.__new__(Client)
    c.sock, c.buf = slow, b""
    slow.settimeout(10)
    r = c.read_response()
    assert r.status == 200 and r.body == pattern(6_000_000)
    assert access_lines(sc)[-1]["flags"] == "-"
    slow.close()
    assert get(port, "/").status == 200 and up.connections == 2
