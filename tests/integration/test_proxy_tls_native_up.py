# SPDX-License-Identifier: Apache-2.0
"""The native TLS 1.3 record layer on upstream connections (cluster `tls.record_layer`, default
native): once the server's session tickets are in, the proxy seals and opens the connection's
records itself and frees OpenSSL's state. Real peers: nginx and HAProxy serving TLS (bodies both
ways compared byte for byte, pooled reuse, resumption from the kept tickets), `openssl s_server`
sending KeyUpdate with and without update_requested in the middle of a response, two sidecars over
mesh mTLS, and nghttpd over TLS with ALPN h2. sidecar_upstream_tls_record_layer_total says which
layer carried each connection."""
import hashlib
import http.client
import os
import subprocess
import threading
import time

import pytest
from conftest import free_port
from config_peers import Nginx, nginx_http
from proxy_util import FakeUpstream, metric, proxy_config, respond, wait_for
from test_proxy_h2_upstream import nghttpd  # noqa: F401
from test_proxy_tls import metrics, mesh_pair
from tls_util import pki  # noqa: F401

BIG = 12 << 20


def up_layer(sc, name, cluster="up"):
    return metric(metrics(sc), "sidecar_upstream_tls_record_layer_total", cluster=cluster,
                  layer=name) or 0


def cluster_cfg(port, endpoint, tls, **cluster):
    return proxy_config(
        [{"name": "l", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "up", "retry_policy": {"num_retries": 0}}]}],
        [{"name": "up", "endpoints": [endpoint], "tls": tls, **cluster}])


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    data = os.urandom(BIG)
    (d / "big.bin").write_bytes(data)
    return d, data


def start_nginx(root, www, pki, tls_port, plain_port):
    """nginx serving <www> over TLS (1.2 and 1.3) on <tls_port> and plaintext on <plain_port>, closing
    keep-alive connections idle for 1 s; / answers whether the session was resumed and how many
    requests its connection carried; /up reads the whole body (nginx buffers it before passing it
    to its own plaintext port) and drops it."""
    locs = """
        location = / { return 200 "reused=$ssl_session_reused requests=$connection_requests"; }
        location = /up { client_max_body_size 64m; proxy_pass http://127.0.0.1:%d/sink; }
        location = /sink { client_max_body_size 64m; return 200 "got"; }
        location / { root %s; }""" % (plain_port, www)
    servers = f"""server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {pki / 'server.pem'};
        ssl_certificate_key {pki / 'server.key'};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_timeout 1s;{locs}
    }}"""
    servers += f"""
    server {{ listen 127.0.0.1:{plain_port}; keepalive_timeout 1s;{locs} }}"""
    root.mkdir()
    (root / "tmp").mkdir()
    n = Nginx(root, nginx_http(root, servers), port=tls_port)
    n.proc = subprocess.Popen(
        ["/usr/sbin/nginx", "-p", str(root), "-e", str(root / "logs/error.log"), "-c",
         str(n.conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return n


def start_haproxy(root, pki, port, backend_port):
    """HAProxy terminating TLS 1.3 on <port> in front of a plaintext backend; / answers whether
    the session was resumed."""
    crt = root / "both.pem"
    crt.write_bytes((pki / "server.pem").read_bytes() + (pki / "server.key").read_bytes())
    conf = root / "haproxy.cfg"
    conf.write_text(f"""global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 1s
frontend f
    bind 127.0.0.1:{port} ssl crt {crt} ssl-min-ver TLSv1.3
    http-request return status 200 content-type text/plain lf-string "reused=%[ssl_fc_is_resumed]" if {{ path / }}
    default_backend b
backend b
    server s 127.0.0.1:{backend_port}
""")
    return subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def keep_alive_exchanges(port, data):
    """Through the sidecar on <port>, on one client connection: a small request, the big file
    (compared byte for byte), the big body up, and the small one again."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/")
    r = c.getresponse()
    first = r.read()
    assert r.status == 200, first
    c.request("GET", "/big.bin")
    r = c.getresponse()
    body = r.read()
    assert r.status == 200 and len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    c.request("POST", "/up", body=data, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"got"
    c.request("GET", "/")
    r = c.getresponse()
    again = r.read()
    assert r.status == 200
    c.close()
    return first, again


@pytest.mark.parametrize("peer", ["nginx", "haproxy"])
def test_native_upstream_to_nginx_and_haproxy(sidecar_run, pki, big, tmp_path, peer):
    """Bodies both ways through a native upstream connection; the pooled connection is reused
    while alive and replaced once the server closed it idle; the next connection resumes the
    session from the ticket OpenSSL kept before the takeover."""
    www, data = big
    tls_port = free_port()
    procs = []
    if peer == "nginx":
        n = start_nginx(tmp_path / "nginx", www, pki, tls_port, free_port())
        procs.append(n)
    else:
        plain = free_port()
        n = start_nginx(tmp_path / "nginx", www, pki, free_port(), plain_port=plain)
        procs.append(n)
        h = start_haproxy(tmp_path, pki, tls_port, plain)
    try:
        assert wait_for(lambda: listening(tls_port))
        port = free_port()
        sc = sidecar_run("proxy", config=cluster_cfg(port, f"localhost:{tls_port}",
                                                     {"ca": str(pki / "ca.pem")}))
        first, again = keep_alive_exchanges(port, data)
        if peer == "nginx":
            assert first == b"reused=. requests=1", first
            assert again == b"reused=. requests=4", again  # one pooled connection throughout
        else:
            assert first == b"reused=0", first
        # the server closes it idle after 1 s; the sidecar sees that and counts it
        assert wait_for(lambda: up_layer(sc, "native") == 1, timeout=10)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200
        assert body.startswith(b"reused=r" if peer == "nginx" else b"reused=1"), body
        c.close()
        assert wait_for(lambda: up_layer(sc, "native") == 2, timeout=10)
        assert up_layer(sc, "openssl") == 0
        assert metric(metrics(sc), "sidecar_upstream_tls_handshakes_total", cluster="up",
                      result="ok") == 2
    finally:
        if peer == "haproxy":
            h.terminate()
            h.wait(timeout=10)
        for p in procs:
            p.stop()


def test_openssl_record_layer_tls12_and_no_session_reuse(sidecar_run, pki, big, tmp_path):
    """`record_layer: openssl` and TLS 1.2 keep OpenSSL; without session reuse the takeover is at
    the end of the handshake and the tickets that follow are dropped by the native layer."""
    www, data = big
    tls_port = free_port()
    n = start_nginx(tmp_path / "nginx", www, pki, tls_port, free_port())
    try:
        assert wait_for(lambda: listening(tls_port))
        port, port2 = free_port(), free_port()
        sc = sidecar_run("proxy", config=cluster_cfg(port, f"localhost:{tls_port}", {
            "ca": str(pki / "ca.pem"), "record_layer": "openssl"}))
        sc2 = sidecar_run("proxy", config=cluster_cfg(port2, f"localhost:{tls_port}", {
            "ca": str(pki / "ca.pem"), "session_reuse": False}))
        port3 = free_port()
        sc3 = sidecar_run("proxy", config=cluster_cfg(port3, f"localhost:{tls_port}", {
            "ca": str(pki / "ca.pem"), "max_version": "TLSv1.2"}))
        keep_alive_exchanges(port, data)
        first, again = keep_alive_exchanges(port2, data)
        assert again == b"reused=. requests=4", again
        keep_alive_exchanges(port3, data)
        for s, layer in ((sc, "openssl"), (sc2, "native"), (sc3, "openssl")):
            assert wait_for(lambda: up_layer(s, layer) == 1, timeout=10), layer
            assert up_layer(s, "native" if layer == "openssl" else "openssl") == 0
    finally:
        n.stop()


class SServer:
    """`openssl s_server` as an HTTP/1.1 upstream typed by the test: what the sidecar sends shows
    on its output, and what the test writes to its input goes back; a line `k` or `K` alone sends
    KeyUpdate (K: update_requested)."""

    def __init__(self, pki, port):
        self.p = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-cert",
             str(pki / "server.pem"), "-cert_chain", str(pki / "server.pem"), "-key",
             str(pki / "server.key"), "-msg", "-ign_eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for chunk in iter(lambda: os.read(self.p.stdout.fileno(), 65536), b""):
            with self.lock:
                self.out += chunk

    def text(self):
        with self.lock:
            return self.out.decode(errors="replace")

    def send(self, b):
        self.p.stdin.write(b)
        self.p.stdin.flush()
        time.sleep(0.3)  # one read of s_server's input each

    def stop(self):
        self.p.kill()
        self.p.wait(timeout=5)


def test_native_upstream_key_update_both_ways(sidecar_run, pki):
    """s_server sends KeyUpdate in the middle of a response, first without then with
    update_requested: the sidecar opens the rest under the updated keys, answers the request with
    its own KeyUpdate, and its next request on the pooled connection goes out under its new key
    (s_server reads it)."""
    up = free_port()
    s = SServer(pki, up)
    try:
        assert wait_for(lambda: listening(up))
        port = free_port()
        sc = sidecar_run("proxy", config=cluster_cfg(port, f"localhost:{up}", {
            "ca": str(pki / "ca.pem")}))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        body = b"a" * 1000 + b"b" * 1000 + b"c" * 1000
        done = {}

        def get(path, key):
            c.request("GET", path)
            r = c.getresponse()
            done[key] = (r.status, r.read())

        t = threading.Thread(target=get, args=("/1", 1))
        t.start()
        assert wait_for(lambda: "GET /1 HTTP/1.1" in s.text())
        s.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:1000])
        s.send(b"k\n")
        s.send(body[1000:2000])
        s.send(b"K\n")
        s.send(body[2000:])
        t.join(timeout=10)
        assert done[1] == (200, body), done
        t = threading.Thread(target=get, args=("/2", 2))
        t.start()
        assert wait_for(lambda: "GET /2 HTTP/1.1" in s.text()), s.text()
        s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        t.join(timeout=10)
        assert done[2] == (200, b"ok")
        text = s.text()
        assert text.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate") == 2, text
        # answered once, for update_requested
        assert text.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate") == 1, text
        c.close()
    finally:
        s.stop()
    # s_server's end closes the connection: it was native
    assert wait_for(lambda: up_layer(sc, "native") == 1, timeout=10)


def test_native_mesh_pair_both_hops(sidecar_run, pki):
    """Two sidecars over mesh mTLS: the outbound's upstream connection and the inbound's
    downstream one are native; bodies both ways arrive byte for byte; XFCC still names the
    caller."""
    data = os.urandom(8 << 20)
    seen = {}

    def handler(up, conn, req):
        if req.target == "/down":
            return respond(conn, 200, data)
        seen["up"] = hashlib.sha256(req.body).hexdigest()
        seen["xfcc"] = req.header("x-forwarded-client-cert")
        return respond(conn, 200, b"ok")

    app = FakeUpstream(handler)
    try:
        sc_in, inbound, outbound, sc_out = mesh_pair(sidecar_run, app.addr, pki, both=True)
        c = http.client.HTTPConnection("127.0.0.1", outbound, timeout=60)
        c.request("GET", "/down")
        r = c.getresponse()
        got = r.read()
        assert r.status == 200 and got == data
        c.request("POST", "/up", body=data)
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"ok"
        assert "URI=spiffe://cluster.local/ns/default/sa/client" in seen["xfcc"]
        assert seen["up"] == hashlib.sha256(data).hexdigest()
        c.close()
        assert metric(metrics(sc_in), "sidecar_tls_record_layer_total", listener="inbound",
                      layer="native") == 1
        # the inbound's end closes the connection: the outbound counts it
        assert sc_in.stop() == 0
        assert wait_for(lambda: up_layer(sc_out, "native", cluster="peer") == 1, timeout=10)
        assert up_layer(sc_out, "openssl", cluster="peer") == 0
    finally:
        app.close()


def test_native_upstream_h2_over_tls(sidecar_run, nghttpd, pki):
    """ALPN h2 to nghttpd over TLS: HTTP/2 frames ride the native layer after the takeover."""
    up = nghttpd(tls=(pki / "server.key", pki / "server.pem"))
    port = free_port()
    sc = sidecar_run("proxy", config=cluster_cfg(port, f"localhost:{up}", {
        "ca": str(pki / "ca.pem")}, protocol="http2", idle_timeout="500ms"))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(3):
        c.request("GET", "/big.bin")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and len(body) == 1_500_000
    c.close()
    assert wait_for(lambda: up_layer(sc, "native") == 1, timeout=10)
    assert up_layer(sc, "openssl") == 0
