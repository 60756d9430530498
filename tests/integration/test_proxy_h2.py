# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: downstream HTTP/2. h2c with prior knowledge and h2 by ALPN, from curl, nghttp,
h2load and the Python h2 library, to nginx and scripted HTTP/1 upstreams: bodies both ways, trailers
both ways, local and gRPC trailers-only replies, flow control with a slow reader, client resets
reaching the upstream, drain with GOAWAY, and hostile frames (bad preface, Rapid Reset,
CONTINUATION floods, oversized header lists, streams beyond the limit)."""
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from config_peers import USER, Nginx
from conftest import free_port, wait_until
from h2_upstream import H2Upstream
from proxy_util import (FakeUpstream, access_lines, echo, metric, proxy_config,  # noqa: F401
                        respond)
from tls_util import pki, s_client  # noqa: F401  (pki is a fixture)

BIG = 1 << 20


# ---- peers ----

@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    """nginx as the HTTP/1.1 upstream: static files, one of them 4 MiB."""
    root = tmp_path_factory.mktemp("nginx-h2")
    www = root / "www"
    www.mkdir()
    (www / "small.txt").write_bytes(b"hello from nginx\n")
    (www / "big.bin").write_bytes(os.urandom(4 * BIG))
    port = free_port()
    conf = f"""{USER}worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""
    ng = Nginx(root, conf, port=port).start()
    ng.www = www
    yield ng
    ng.stop()


def body_echo(up, conn, req):
    """Answers with the request body as received, and how it was framed."""
    framing = "chunked" if "chunked" in (req.header("transfer-encoding") or "") else "length"
    return respond(conn, 200, req.body, [("X-Framing", framing),
                                         ("X-Trailers", req.trailers.decode().strip() or "-")])


def h2_listener(port, cluster="app", **extra):
    lst = {"name": "h2", "address": f"127.0.0.1:{port}",
           "routes": [{"name": "r", "match": {"prefix": "/"}, "cluster": cluster}]}
    lst.update(extra)
    return lst


def start(sidecar_run, upstream, **extra):
    port = free_port()
    routes = extra.pop("routes", None)
    lst = h2_listener(port, **extra)
    if routes is not None:
        lst["routes"] = routes
    sc = sidecar_run("proxy", config=proxy_config([lst], [{"name": "app", "endpoints": [upstream]}]))
    return sc, port


def metrics(sc):
    return sc.get("/metrics")[1].decode()


def curl(*args, timeout=30):
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True,
                       timeout=timeout + 5)
    return p.returncode, p.stdout, p.stderr


# ---- a small HTTP/2 client on the h2 library ----

class H2:
    """One HTTP/2 connection with prior knowledge: requests in, events out."""

    def __init__(self, port, settings=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.streams = {}  # id -> dict(headers, data, trailers, ended, reset)
        self.goaway = None
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def request_nosend(self, path):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"headers": None, "data": bytearray(), "trailers": None,
                             "ended": False, "reset": None}
        self.conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                     (":authority", "test")], end_stream=True)
        return sid

    def request(self, path, method="GET", headers=(), body=None, end=True, trailers=None):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method), (":path", path), (":scheme", "http"),
             (":authority", "test")] + list(headers)
        self.streams[sid] = {"headers": None, "data": bytearray(), "trailers": None,
                             "ended": False, "reset": None}
        self.conn.send_headers(sid, h, end_stream=end and body is None and trailers is None)
        if body is not None:
            self.send_body(sid, body, end=end and trailers is None)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends <body> as the windows allow, reading WINDOW_UPDATEs while they are closed."""
        off = 0
        while off < len(body):
            n = min(len(body) - off, self.conn.local_flow_control_window(sid),
                    self.conn.max_outbound_frame_size)
            if n == 0:
                self.flush()
                self.sock.settimeout(10)
                d = self.sock.recv(1 << 20)
                assert d, "closed while sending a body"
                for ev in self.conn.receive_data(d):
                    self.on_event(ev, True)
                continue
            self.conn.send_data(sid, body[off:off + n])
            off += n
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def pump(self, until, timeout=10, ack=True):
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                pending = {k: (v["headers"] and v["headers"].get(":status"), len(v["data"]),
                               v["reset"]) for k, v in self.streams.items() if not self.done(k)}
                raise AssertionError(f"timed out; streams not done {pending} goaway {self.goaway}")
            try:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                d = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            if not d:
                self.closed = True
                return
            for ev in self.conn.receive_data(d):
                self.on_event(ev, ack)
            self.flush()

    def on_event(self, ev, ack):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived) and st is not None:
            st["headers"] = dict(ev.headers)
            if ev.stream_ended:
                st["ended"] = True
        elif isinstance(ev, h2.events.DataReceived) and st is not None:
            st["data"] += ev.data
            if ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived) and st is not None:
            st["trailers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded) and st is not None:
            st["ended"] = True
        elif isinstance(ev, h2.events.StreamReset) and st is not None:
            st["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def done(self, sid):
        st = self.streams[sid]
        return st["ended"] or st["reset"] is not None

    def wait(self, sid, timeout=10):
        self.pump(lambda: self.done(sid) or self.closed, timeout)
        return self.streams[sid]

    def close(self):
        self.sock.close()


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(
        ">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def read_until_closed(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return data, True
            data += d
    except ConnectionResetError:
        return data, True  # closed with our bytes unread: the kernel resets
    except socket.timeout:
        return data, False


def goaway_code(data):
    """The error code of the first GOAWAY frame in raw server bytes, or None."""
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7:
            return int.from_bytes(data[i + 9 + 4:i + 9 + 8], "big")
        i += 9 + n
    return None


# ---- h2c with prior knowledge ----

def test_h2c_curl_gets_nginx_files_and_posts_bodies(sidecar_run, nginx, tmp_path):
    sc, port = start(sidecar_run, f"127.0.0.1:{nginx.port}")
    out = tmp_path / "big.out"
    rc, meta, err = curl("--http2-prior-knowledge", "-o", str(out), "-w",
                         "%{http_code} %{http_version}", f"http://127.0.0.1:{port}/big.bin")
    assert rc == 0, err
    assert meta == b"200 2"
    assert out.read_bytes() == (nginx.www / "big.bin").read_bytes()
    assert metric(metrics(sc), "sidecar_http2_streams_total", listener="h2") == 1
    rc, body, err = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/nope")
    assert rc == 0 and b"404" in body  # nginx's own 404 page, passed through
    lines = access_lines(sc, 2)
    assert {l["protocol"] for l in lines} == {"HTTP/2"}
    assert [l["status"] for l in lines] == [200, 404]


def test_http2_both_sides_to_nginx_over_h2c(sidecar_run, nginx, tmp_path):
    """An HTTP/2 client and an HTTP/2 upstream (cluster protocol http2: nginx's h2c listener):
    the downstream codec and the upstream one meet in the exchange: small responses on many
    streams, and large ones (4 MiB and 12 MiB, far past every window on both sides) byte for
    byte, where the client's pace must reach the upstream's window updates and back."""
    root = tmp_path / "ng2"
    port2 = free_port()
    conf = f"""{USER}worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port2} http2;
        root {nginx.www};
    }}
}}
"""
    ng2 = Nginx(root, conf, port=port2)
    try:
        ng2.start(ready=lambda: socket.create_connection(("127.0.0.1", port2),
                                                         timeout=1).close() is None)
        port = free_port()
        sc = sidecar_run("proxy", config=proxy_config(
            [h2_listener(port)],
            [{"name": "app", "endpoints": [f"127.0.0.1:{port2}"], "protocol": "http2"}]))
        c = H2(port)
        sids = [c.request("/small.txt") for _ in range(20)]
        c.pump(lambda: all(c.done(s) for s in sids))
        assert all(bytes(c.streams[s]["data"]) == b"hello from nginx\n" for s in sids)
        c.close()
        assert {l["protocol"] for l in access_lines(sc, 21)} == {"HTTP/2"}
        (nginx.www / "big12.bin").write_bytes(os.urandom(12 * BIG))
        for name in ("big.bin", "big12.bin"):
            want = (nginx.www / name).read_bytes()
            out = tmp_path / f"{name}.out"
            rc, meta, err = curl("--http2-prior-knowledge", "-o", str(out), "-w",
                                 "%{http_code} %{http_version}", f"http://127.0.0.1:{port}/{name}")
            assert rc == 0, err
            assert meta == b"200 2"
            got = out.read_bytes()
            assert len(got) == len(want)
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest()
        assert [l["status"] for l in access_lines(sc, 23)[-2:]] == [200, 200]
    finally:
        ng2.stop()


def test_http2_both_sides_large_upload_echoed(sidecar_run, tmp_path):
    """A 4 MiB POST from an HTTP/2 client to an HTTP/2 upstream (the h2 library's upstream,
    which echoes it): both request windows are refilled only as the body moves on, and the echo
    comes back through both response windows. Checked by size and hash at both ends."""
    up = H2Upstream()
    try:
        port = free_port()
        sidecar_run("proxy", config=proxy_config(
            [h2_listener(port)],
            [{"name": "app", "endpoints": [up.addr], "protocol": "http2"}],
            max_request_body="64MiB"))
        data = os.urandom(4 * BIG)
        src = tmp_path / "post.bin"
        src.write_bytes(data)
        rc, body, err = curl("--http2-prior-knowledge", "--data-binary", f"@{src}",
                             f"http://127.0.0.1:{port}/echo")
        assert rc == 0, err
        assert len(body) == len(data)
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        assert len(up.requests[-1].body) == len(data)
        assert hashlib.sha256(up.requests[-1].body).digest() == hashlib.sha256(data).digest()
    finally:
        up.close()


def test_h2c_request_bodies_with_and_without_length(sidecar_run):
    up = FakeUpstream(body_echo)
    try:
        sc, port = start(sidecar_run, up.addr)
        data = os.urandom(3 * BIG + 17)
        src = sc.log_path.parent / "post.bin"
        src.write_bytes(data)
        rc, body, err = curl("--http2-prior-knowledge", "--data-binary", f"@{src}",
                             f"http://127.0.0.1:{port}/post")
        assert rc == 0, err
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        # No content-length: re-framed chunked for the HTTP/1 upstream, same bytes.
        c = H2(port)
        sid = c.request("/nolen", method="POST", body=data[:200000])
        st = c.wait(sid)
        assert st["headers"][":status"] == "200"
        assert st["headers"]["x-framing"] == "chunked"
        assert bytes(st["data"]) == data[:200000]
        c.close()
        seen = up.requests[-1] if up.requests else None
        assert seen is None or seen.header("via") in (None, "2 sidecar")
    finally:
        up.close()


def test_h2c_upstream_sees_via_2_and_forwarded_headers(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr)
    rc, body, err = curl("--http2-prior-knowledge", "-H", "x-custom: 1",
                         f"http://127.0.0.1:{port}/p?q=1")
    assert rc == 0, err
    j = json.loads(body)
    h = {k.lower(): v for k, v in j["headers"]}
    assert j["target"] == "/p?q=1"
    assert h["via"] == "2 sidecar"
    assert h["host"] == f"127.0.0.1:{port}"
    assert h["x-custom"] == "1" and h["x-forwarded-proto"] == "http"
    assert "connection" not in h


def test_h2c_nghttp_and_h2load_1000_streams_on_one_connection(sidecar_run, nginx):
    sc, port = start(sidecar_run, f"127.0.0.1:{nginx.port}")
    p = subprocess.run(["nghttp", "-n", "-s", f"http://127.0.0.1:{port}/small.txt",
                        f"http://127.0.0.1:{port}/big.bin", f"http://127.0.0.1:{port}/x"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["h2load", "-n", "1000", "-c", "1", "-m", "100",
                        f"http://127.0.0.1:{port}/small.txt"], capture_output=True, timeout=120)
    out = p.stdout.decode()
    assert "1000 succeeded" in out and "1000 2xx" in out, out
    assert len([l for l in access_lines(sc, 1003) if l["protocol"] == "HTTP/2"]) >= 1003


def test_http1_still_served_next_to_h2c(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr)
    rc, body, err = curl("-w", "\n%{http_version}", f"http://127.0.0.1:{port}/one")
    assert rc == 0 and body.endswith(b"\n1.1")


def test_h2c_detected_on_auto_listener_goes_to_routes(sidecar_run, echo):
    """protocol: auto (intercepted traffic): h2c prior knowledge is detected and served by the
    listener's routes, as an HTTP/1 request line is."""
    sc, port = start(sidecar_run, echo.addr, protocol="auto")
    rc, body, err = curl("--http2-prior-knowledge", "-w", "\n%{http_version}",
                         f"http://127.0.0.1:{port}/auto")
    assert rc == 0, err
    j, ver = body.rsplit(b"\n", 1)
    assert ver == b"2" and json.loads(j)["target"] == "/auto"
    assert access_lines(sc, 1)[0]["protocol"] == "HTTP/2"


def test_h2c_disabled_listener_answers_preface_as_http1(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr, http2={"enabled": False})
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE)
    data, _ = read_until_closed(s)
    assert data.startswith(b"HTTP/1.1 505")
    s.close()


# ---- h2 by ALPN ----

def test_h2_by_alpn_over_tls(sidecar_run, echo, pki):  # noqa: F811
    port = free_port()
    lst = h2_listener(port, tls={"cert": str(pki / "server.pem"), "key": str(pki / "server.key")})
    sidecar_run("proxy", config=proxy_config([lst], [{"name": "app", "endpoints": [echo.addr]}]))
    rc, out = s_client(port, "-alpn", "h2,http/1.1", "-CAfile", str(pki / "ca.pem"),
                       "-servername", "localhost")
    assert rc == 0 and "ALPN protocol: h2" in out
    rc, body, err = curl("--http2", "--cacert", str(pki / "ca.pem"), "-w", "\n%{http_version}",
                         f"https://localhost:{port}/tls")
    assert rc == 0, err
    j, ver = body.rsplit(b"\n", 1)
    assert ver == b"2" and json.loads(j)["target"] == "/tls"
    h = {k.lower(): v for k, v in json.loads(j)["headers"]}
    assert h["x-forwarded-proto"] == "https" and h["via"] == "2 sidecar"
    rc, body, err = curl("--http1.1", "--cacert", str(pki / "ca.pem"), "-w", "\n%{http_version}",
                         f"https://localhost:{port}/tls")
    assert rc == 0 and body.endswith(b"\n1.1")


# ---- local replies, gRPC, trailers ----

def test_local_replies_through_the_http2_sink(sidecar_run, echo):
    port = free_port()
    lst = {"name": "h2", "address": f"127.0.0.1:{port}",
           "routes": [{"name": "r", "match": {"prefix": "/app"}, "cluster": "app",
                       "rate_limit": {"requests_per_unit": 1, "unit": "minute",
                                      "headers": True}}]}
    sc = sidecar_run("proxy", config=proxy_config([lst], [{"name": "app",
                                                           "endpoints": [echo.addr]}]))
    c = H2(port)
    st = c.wait(c.request("/nothing-here"))
    assert st["headers"][":status"] == "404"
    assert bytes(st["data"]) == b"no route matched the request\n"
    assert st["headers"]["content-length"] == str(len(st["data"]))
    st = c.wait(c.request("/app/1"))
    assert st["headers"][":status"] == "200"
    st = c.wait(c.request("/app/2"))
    assert st["headers"][":status"] == "429"
    assert "retry-after" in st["headers"] and st["headers"]["x-ratelimit-remaining"] == "0"
    # gRPC clients get trailers-only answers: HTTP 200, the code in grpc-status.
    g = [("content-type", "application/grpc"), ("te", "trailers")]
    st = c.wait(c.request("/pkg.Svc/Method", method="POST", headers=g, body=b"\0\0\0\0\0"))
    assert st["headers"][":status"] == "200" and st["headers"]["grpc-status"] == "12"
    assert "no route" in st["headers"]["grpc-message"] and st["data"] == b""
    st = c.wait(c.request("/app/3", method="POST", headers=g, body=b"\0\0\0\0\0"))
    assert st["headers"]["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
    c.close()
    lines = access_lines(sc, 5)
    assert [l["status"] for l in lines] == [404, 200, 429, 404, 429]
    assert {l["protocol"] for l in lines} == {"HTTP/2"}


def test_authorization_denies_http2_requests_on_the_normalised_path(sidecar_run, echo):
    port = free_port()
    deny = [{"name": "deny-admin", "action": "DENY",
             "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}]
    sc = sidecar_run("proxy", config=proxy_config(
        [h2_listener(port)], [{"name": "app", "endpoints": [echo.addr]}], authorization=deny))
    c = H2(port)
    for path in ("/admin", "/public/../admin", "/%61dmin/x"):
        st = c.wait(c.request(path))
        assert st["headers"][":status"] == "403", path
        assert bytes(st["data"]) == b"RBAC: access denied\n"
    st = c.wait(c.request("/admin/x", method="POST", body=b"\0\0\0\0\0",
                          headers=[("content-type", "application/grpc")]))
    assert st["headers"][":status"] == "200" and st["headers"]["grpc-status"] == "7"
    st = c.wait(c.request("/public"))
    assert st["headers"][":status"] == "200"
    assert json.loads(bytes(st["data"]))["target"] == "/public"
    c.close()
    assert all("RBAC" in l["flags"] for l in access_lines(sc, 5)[:4])


def test_ext_authz_checks_http2_requests(sidecar_run, echo):
    """A CUSTOM policy's external authorizer sees an HTTP/2 request as its HTTP/1.1 rendition:
    its 401 goes back on the stream, its 2xx lets the request (and its body) go upstream with the
    identity headers."""
    from test_proxy_extauthz import FakeOAuth2Proxy, custom, provider
    fake = FakeOAuth2Proxy()
    try:
        port = free_port()
        sc = sidecar_run("proxy", config=proxy_config(
            [h2_listener(port)], [{"name": "app", "endpoints": [echo.addr]}],
            extension_providers=[provider(fake.port)], authorization=custom(["/app/*"])))
        c = H2(port)
        st = c.wait(c.request("/app/x"))
        assert st["headers"][":status"] == "401" and bytes(st["data"]) == b"Unauthorized"
        assert st["headers"]["www-authenticate"] == 'Bearer realm="oauth2"'
        st = c.wait(c.request("/app/up?q=1", method="POST", body=b"b" * 70000,
                              headers=[("cookie", "_oauth2_proxy=alice")]))
        assert st["headers"][":status"] == "200"
        seen = json.loads(bytes(st["data"]))
        assert seen["target"] == "/app/up?q=1" and seen["body_len"] == 70000
        assert ["alice"] == [v for k, v in seen["headers"] if k.lower() == "x-auth-request-user"]
        method, path, headers = fake.seen[-1]
        assert method == "POST" and path == "/oauth2/auth/app/up?q=1"
        assert {k.lower(): v for k, v in headers.items()}["cookie"] == "_oauth2_proxy=alice"
        c.close()
        assert [l["status"] for l in access_lines(sc, 2)] == [401, 200]
    finally:
        fake.close()


def test_jwt_on_http2_requests(sidecar_run, echo, tmp_path):
    """RequestAuthentication over HTTP/2: a valid token's claims go upstream (the token is not
    forwarded), an invalid one gets 401 with WWW-Authenticate on the stream, and gRPC clients get
    UNAUTHENTICATED."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from test_proxy_jwt import ISS, jwk
    kp = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(kp)], check=True, capture_output=True)
    key = serialization.load_pem_private_key(kp.read_bytes(), password=None)
    now = int(time.time())
    good = pyjwt.encode({"iss": ISS, "sub": "alice", "iat": now, "exp": now + 600}, key,
                        algorithm="ES256", headers={"kid": "k1"})
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [h2_listener(port)], [{"name": "app", "endpoints": [echo.addr]}],
        request_authentication=[{"name": "jwt", "jwt_rules": [{
            "issuer": ISS, "jwks": json.dumps({"keys": [jwk(key, "k1")]}),
            "output_claim_to_headers": [{"header": "x-user", "claim": "sub"}]}]}]))
    c = H2(port)
    st = c.wait(c.request("/a", headers=[("authorization", f"Bearer {good}")]))
    assert st["headers"][":status"] == "200"
    seen = {k.lower(): v for k, v in json.loads(bytes(st["data"]))["headers"]}
    assert seen["x-user"] == "alice" and "authorization" not in seen
    st = c.wait(c.request("/a", headers=[("authorization", "Bearer not.a.token")]))
    assert st["headers"][":status"] == "401"
    assert st["headers"]["www-authenticate"].startswith("Bearer realm=")
    st = c.wait(c.request("/pkg.S/M", method="POST", body=b"\0\0\0\0\0",
                          headers=[("authorization", "Bearer not.a.token"),
                                   ("content-type", "application/grpc")]))
    assert st["headers"][":status"] == "200" and st["headers"]["grpc-status"] == "16"
    c.close()


def test_request_trailers_reach_http1_upstream_as_chunked_trailers(sidecar_run):
    up = FakeUpstream(body_echo)
    try:
        sc, port = start(sidecar_run, up.addr)
        c = H2(port)
        sid = c.request("/t", method="POST", headers=[("te", "trailers")], body=b"payload",
                        trailers=[("x-checksum", "abc123")])
        st = c.wait(sid)
        assert st["headers"][":status"] == "200"
        assert bytes(st["data"]) == b"payload"
        assert st["headers"]["x-framing"] == "chunked"
        assert st["headers"]["x-trailers"].lower() == "x-checksum: abc123"
        c.close()
    finally:
        up.close()


def chunked_with_trailers(up, conn, req):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                 b"Transfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n"
                 b"grpc-message: fine\r\n\r\n")
    return True


def test_http1_chunked_trailers_become_http2_trailers(sidecar_run):
    up = FakeUpstream(chunked_with_trailers)
    try:
        sc, port = start(sidecar_run, up.addr)
        c = H2(port)
        st = c.wait(c.request("/x"))
        assert st["headers"][":status"] == "200"
        assert bytes(st["data"]) == b"hello world"
        assert st["trailers"] == {"grpc-status": "0", "grpc-message": "fine"}
        assert "transfer-encoding" not in st["headers"] and "trailer" not in st["headers"]
        c.close()
    finally:
        up.close()


# ---- flow control, resets, drain ----

def test_slow_reader_on_one_stream_does_not_stall_the_others(sidecar_run, nginx):
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [h2_listener(port)], [{"name": "app", "endpoints": [f"127.0.0.1:{nginx.port}"]}],
        stream_idle_timeout="1s"))
    c = H2(port)
    # The connection window is opened wide; stream 1's own window is never reopened.
    c.conn.increment_flow_control_window(1 << 30)
    c.flush()
    slow = c.request("/big.bin")
    c.pump(lambda: len(c.streams[slow]["data"]) >= 60000, ack=False)

    def ack_others(ev_sid):
        return ev_sid != slow

    others = [c.request("/small.txt") for _ in range(50)]
    deadline = time.monotonic() + 20
    while not all(c.done(s) for s in others):
        assert time.monotonic() < deadline, "other streams stalled"
        c.sock.settimeout(1)
        d = c.sock.recv(1 << 20)
        assert d
        for ev in c.conn.receive_data(d):
            c.on_event(ev, ack=ack_others(getattr(ev, "stream_id", 0)))
        c.flush()
    assert all(bytes(c.streams[s]["data"]) == b"hello from nginx\n" for s in others)
    assert not c.done(slow) and len(c.streams[slow]["data"]) <= 65535
    # The stalled stream is reset after stream_idle_timeout, and logged SI.
    c.pump(lambda: c.done(slow), timeout=10, ack=False)
    assert c.streams[slow]["reset"] == 2
    lines = [l for l in access_lines(sc, 51) if l["path"] == "/big.bin"]
    assert len(lines) == 1 and "SI" in lines[0]["flags"]
    c.close()


def slow_handler(up, conn, req):
    time.sleep(1.0)
    return respond(conn, 200, b"late")


def test_client_reset_and_close_reach_the_upstream(sidecar_run):
    up = FakeUpstream(slow_handler)
    try:
        sc, port = start(sidecar_run, up.addr)
        c = H2(port)
        sid = c.request("/reset-me")
        wait_until(lambda: up.connections >= 1, what="upstream connection")
        c.conn.reset_stream(sid)
        c.flush()
        a = c.request("/a")
        b = c.request("/b")
        wait_until(lambda: up.connections >= 3, what="three upstream connections")
        c.close()  # the connection goes with two streams open
        lines = access_lines(sc, 3)
        assert sorted(l["path"] for l in lines) == ["/a", "/b", "/reset-me"]
        assert all("DC" in l["flags"] for l in lines)
        assert a and b
        # The proxy goes on serving.
        c = H2(port)
        st = c.wait(c.request("/after"), timeout=5)
        assert st["headers"][":status"] == "200"
        c.close()
    finally:
        up.close()


def test_drain_sends_goaway_and_lets_streams_finish(sidecar_run):
    up = FakeUpstream(slow_handler)
    try:
        sc, port = start(sidecar_run, up.addr)
        p = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{port}/long"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(lambda: up.connections >= 1, what="upstream connection")
        sc.proc.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=20)[0].decode()
        assert p.returncode == 0, out
        assert "recv GOAWAY" in out and "error_code=NO_ERROR" in out
        assert ":status: 200" in out and out.rstrip().endswith("late") or "late" in out
        assert sc.proc.wait(timeout=10) == 0
    finally:
        up.close()


def half_body(up, conn, req):
    if req.target == "/slow":
        time.sleep(1.0)
        return respond(conn, 200, b"late")
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.2)
    conn.close()
    return False


def test_upstream_failure_mid_body_resets_the_stream_and_timeouts_answer(sidecar_run):
    up = FakeUpstream(half_body)
    try:
        port = free_port()
        lst = h2_listener(port)
        lst["routes"][0]["timeout"] = "300ms"
        sc = sidecar_run("proxy", config=proxy_config([lst], [{"name": "app",
                                                               "endpoints": [up.addr]}]))
        c = H2(port)
        st = c.wait(c.request("/cut"))
        assert st["headers"][":status"] == "200" and len(st["data"]) == 1000
        assert st["reset"] == 2  # INTERNAL_ERROR: never a silently short body
        st = c.wait(c.request("/slow"))
        assert st["headers"][":status"] == "504"
        st = c.wait(c.request("/slow", method="POST", body=b"\0\0\0\0\0",
                              headers=[("content-type", "application/grpc+proto")]))
        assert st["headers"][":status"] == "200" and st["headers"]["grpc-status"] == "4"
        c.close()
        lines = access_lines(sc, 3)
        assert "UC" in lines[0]["flags"]
        assert [l["status"] for l in lines[1:]] == [504, 504]
        assert all("UT" in l["flags"] for l in lines[1:])
    finally:
        up.close()


def churn_handler(up, conn, req):
    n = int(req.target.rsplit("/", 1)[1]) if req.target[-1].isdigit() else 0
    if n % 5 == 1:
        time.sleep(0.05)
    if n % 7 == 3:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"y" * 3000)
        conn.close()
        return False
    if n % 3 == 0:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"4000\r\n" + b"z" * 0x4000 + b"\r\n0\r\nx-t: 1\r\n\r\n")
        return True
    return respond(conn, 200, req.body or b"ok")


def test_streams_reset_and_connections_closed_at_every_stage(sidecar_run):
    """Lifetimes: streams reset before, during and after their upstream exchange, connections
    closed with streams open, upstreams failing mid-body; the proxy serves on and (under ASan)
    frees everything."""
    up = FakeUpstream(churn_handler)
    try:
        sc, port = start(sidecar_run, up.addr)
        for conn_i in range(6):
            c = H2(port)
            sids = []
            for i in range(30):
                n = conn_i * 30 + i
                if i % 4 == 0:
                    sid = c.request(f"/c/{n}", method="POST", body=os.urandom(20000))
                else:
                    sid = c.request(f"/c/{n}")
                sids.append(sid)
                if i % 6 == 5:
                    c.conn.reset_stream(sids[i - 2])
                    c.streams[sids[i - 2]]["reset"] = "ours"
                    c.flush()
            try:
                c.pump(lambda: sum(c.done(s) for s in sids) >= 10, timeout=10)
            except AssertionError:
                pass
            if conn_i % 2 == 0:
                c.close()  # streams still open
                continue
            c.pump(lambda: all(c.done(s) for s in sids) or c.closed, timeout=15)
            c.close()
        c = H2(port)
        st = c.wait(c.request("/final/2"))
        assert st["headers"][":status"] == "200"
        c.close()
        assert sc.proc.poll() is None
    finally:
        up.close()


# ---- limits and hostile peers ----

def test_bad_preface_closes_the_connection(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + b"\x00\x00\x04\x09\x00\x00\x00\x00\x00garbage!")  # not SETTINGS first
    data, closed = read_until_closed(s)
    assert closed
    assert goaway_code(data) == 1  # PROTOCOL_ERROR
    s.close()
    st = H2(port)
    assert st.wait(st.request("/ok"))["headers"][":status"] == "200"


def rapid_resets(c, n):
    for _ in range(n):
        c.conn.reset_stream(c.request_nosend("/r"))
    try:
        c.flush()
    except (BrokenPipeError, ConnectionResetError):
        c.closed = True


def test_rapid_reset_ends_in_goaway(sidecar_run, echo):
    # Within the bound (the default burst of 1000): the connection carries on.
    sc, port = start(sidecar_run, echo.addr)
    c = H2(port)
    rapid_resets(c, 100)
    st = c.wait(c.request("/after"))
    assert st["headers"][":status"] == "200" and c.goaway is None
    c.close()
    # Past it: GOAWAY and the connection closes (a reset of the unread rest may overtake the
    # GOAWAY on the client's side).
    sc, port = start(sidecar_run, echo.addr,
                     http2={"stream_reset_burst": 50, "stream_reset_rate": 1})
    c = H2(port)
    rapid_resets(c, 100)
    try:
        c.pump(lambda: c.goaway is not None or c.closed, timeout=10)
    except ConnectionResetError:
        c.closed = True
    # nghttp2's Rapid Reset bound answers with INTERNAL_ERROR
    assert c.closed or c.goaway.error_code in (2, 11)
    c.close()
    assert sc.proc.poll() is None
    wait_until(lambda: metric(metrics(sc), "sidecar_http2_goaway_total", listener="h2",
                              reason="rapid_reset") == 1, what="the rapid reset counted")


def test_continuation_flood_ends_in_goaway(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + frame(4, 0, 0, b""))
    # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    hpack = b"\x82\x84\x86\x41\x04test"  # :method GET, :path /, :scheme http, :authority test
    s.sendall(frame(1, 0x1, 1, hpack))
    for _ in range(50):
        try:
            s.sendall(frame(9, 0, 1, b"\x40\x01a\x01b"))
        except (BrokenPipeError, ConnectionResetError):
            break
    data, closed = read_until_closed(s)
    # The GOAWAY (PROTOCOL_ERROR) goes out before the close; a reset of the unread flood may
    # overtake it on the client's side.
    assert closed and goaway_code(data) in (None, 11)  # ENHANCE_YOUR_CALM
    s.close()
    assert sc.proc.poll() is None
    wait_until(lambda: metric(metrics(sc), "sidecar_http2_goaway_total", listener="h2",
                              reason="flood") == 1, what="the flood counted")


def test_oversized_header_list_is_answered_431(sidecar_run, echo):
    sc, port = start(sidecar_run, echo.addr, http2={"max_header_list_size": 8192})
    c = H2(port)
    st = c.wait(c.request("/big", headers=[("x-big", "a" * 6000), ("x-big2", "b" * 6000)]))
    assert st["headers"][":status"] == "431"
    st = c.wait(c.request("/fine"))
    assert st["headers"][":status"] == "200"
    c.close()


def test_streams_beyond_the_limit_are_refused(sidecar_run):
    up = FakeUpstream(slow_handler)
    try:
        sc, port = start(sidecar_run, up.addr, http2={"max_concurrent_streams": 3})
        c = H2(port)
        # The client has not read the server's SETTINGS yet, so it sends 6 at once.
        sids = [c.request(f"/s{i}") for i in range(6)]
        c.pump(lambda: all(c.done(s) for s in sids), timeout=15)
        ok = [s for s in sids if c.streams[s]["headers"] and
              c.streams[s]["headers"][":status"] == "200"]
        refused = [s for s in sids if c.streams[s]["reset"] == 7]  # REFUSED_STREAM
        assert len(ok) == 3 and len(refused) == 3
        c.close()
        m = metrics(sc)
        assert metric(m, "sidecar_http2_refused_streams_total", listener="h2") == 3
        assert metric(m, "sidecar_http2_streams_total", listener="h2") == 3
        assert metric(m, "sidecar_http2_connections_total", listener="h2") == 1
    finally:
        up.close()
