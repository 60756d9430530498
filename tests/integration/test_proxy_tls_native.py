# SPDX-License-Identifier: Apache-2.0
"""The native TLS 1.3 record layer (listener `tls.record_layer`, default native): after the
handshake the proxy seals and opens records itself and frees OpenSSL's per-connection state. Real
peers: curl (HTTP/1.1 and h2), Python's ssl, openssl s_client (KeyUpdate with and without
update_requested, resumption with -sess_out/-sess_in), 100 MiB each way with flat memory, mutual
TLS with XFCC, and a client that puts garbage, a corrupted record or an oversized record on the
wire after the handshake (Python's ssl.SSLObject over a plain socket): each gets the right alert,
under the connection's keys, and the close. TLS 1.2 and `record_layer: openssl` stay on OpenSSL."""
import socket
import ssl
import subprocess
import time

import pytest
from conftest import free_port
from proxy_util import FakeUpstream, access_lines, echo_handler, metric
from test_proxy_tls import (headers_seen, metrics, mtls_listener, relay_100mib_each_way,
                            tls_listener)
from tls_util import TLSClient, curl, pki, s_client, tls_context  # noqa: F401


@pytest.fixture
def echo():
    up = FakeUpstream(echo_handler)
    yield up
    up.close()


def layer(sc, name, listener="web"):
    return metric(metrics(sc), "sidecar_tls_record_layer_total", listener=listener,
                  layer=name) or 0


def server_tls(pki, **extra):
    return {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"), **extra}


class RawTLS:
    """A TLS 1.3 client through ssl.SSLObject over a plain socket, so that a test can also put
    bytes of its own choosing on the wire after the handshake."""

    def __init__(self, port, ca):
        ctx = tls_context(ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        # an EOF without close_notify must show as an error, not as a clean end
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.inc.write(self.sock.recv(65536))
        self.flush()

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def sealed(self, data):
        """The records carrying <data>, not sent."""
        self.obj.write(data)
        return self.out.read()

    def read_to_end(self):
        """Reads until the server closes; returns (plaintext, the exception that ended it, None
        for a clean close_notify)."""
        while True:
            d = self.sock.recv(65536)
            if not d:
                break
            self.inc.write(d)
        self.inc.write_eof()
        got = b""
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as e:
                return got, e
            if not chunk:
                return got, None
            got += chunk

    def close(self):
        self.sock.close()


def test_native_curl_python_h2_and_tls12(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(
        pki, alpn=["h2", "http/1.1"])))
    ca = str(pki / "ca.pem")
    # curl: two requests on one kept-alive connection, then HTTP/2
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", ca, "-o", "/dev/null", "-o",
                        "/dev/null",
                        "-w", "%{http_code} %{num_connects}\n", "--http1.1",
                        f"https://localhost:{port}/a", f"https://localhost:{port}/b"],
                       capture_output=True, timeout=15)
    assert p.returncode == 0 and p.stdout.decode().split("\n")[:2] == ["200 1", "200 0"]
    rc, body, code = curl(f"https://localhost:{port}/h2", "--cacert", ca, "--http2")
    assert rc == 0 and code == 200
    # Python: many requests on one connection
    c = TLSClient(port, tls_context(pki / "ca.pem"))
    for i in range(50):
        status, _, b = c.request(f"/k{i}", body=b"q" * (i * 997))
        assert status == 200
    c.close()
    assert layer(sc, "native") == 3 and layer(sc, "openssl") == 0
    lines = access_lines(sc, 53)
    assert {ln["tls_version"] for ln in lines} == {"TLSv1.3"}
    # TLS 1.2 stays on OpenSSL
    rc, _, code = curl(f"https://localhost:{port}/t12", "--cacert", ca, "--tls-max", "1.2")
    assert rc == 0 and code == 200
    assert layer(sc, "openssl") == 1


def test_openssl_record_layer_option(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(
        pki, record_layer="openssl")))
    rc, _, code = curl(f"https://localhost:{port}/", "--cacert", str(pki / "ca.pem"))
    assert rc == 0 and code == 200
    assert layer(sc, "openssl") == 1 and layer(sc, "native") == 0


def test_native_key_update_both_ways(sidecar_run, echo, pki):
    """s_client's `k` sends KeyUpdate(update_not_requested), `K` KeyUpdate(update_requested),
    which the proxy answers with its own KeyUpdate before its next record."""
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(pki)))
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                          "localhost", "-CAfile", str(pki / "ca.pem"), "-msg"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        steps = [b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", b"k\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"K\n", b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n", b"K\n",
                 b"GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        for s in steps:
            p.stdin.write(s)
            p.stdin.flush()
            time.sleep(0.4)
        out, _ = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    text = out.decode(errors="replace")
    assert text.count("HTTP/1.1 200") == 4, text
    assert text.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate") == 3, text
    # answered once per update_requested
    assert text.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate") == 2, text
    # our close_notify, sealed under the updated key
    assert "<<< TLS 1.3, Alert [length 0002], warning close_notify" in text, text
    assert layer(sc, "native") == 1


def test_native_resumption(sidecar_run, echo, pki, tmp_path):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(pki)))
    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    rc, out = s_client(port, "-tls1_3", "-CAfile", str(pki / "ca.pem"), "-sess_out", str(sess),
                       data=req)
    assert rc == 0 and "HTTP/1.1 200" in out
    for _ in range(2):  # a ticket is good once; each resumption brings the next one
        rc, out = s_client(port, "-tls1_3", "-CAfile", str(pki / "ca.pem"), "-sess_in", str(sess),
                           "-sess_out", str(sess), data=req)
        assert rc == 0 and "Reused, TLSv1.3" in out and "HTTP/1.1 200" in out, out
    assert layer(sc, "native") == 3
    line = access_lines(sc, 3)[-1]
    assert line["tls_version"] == "TLSv1.3"


def test_native_each_cipher_suite(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(pki)))
    suites = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    for cs in suites:
        body = b"b" * 40000  # several records each way
        req = (b"POST /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 40000\r\n"
               b"\r\n" + body)
        rc, out = s_client(port, "-ciphersuites", cs, "-CAfile", str(pki / "ca.pem"), data=req)
        assert rc == 0 and f"Cipher is {cs}" in out and "HTTP/1.1 200" in out, out
        assert '"body_len": 40000' in out
    assert layer(sc, "native") == 3


def test_native_mtls_identity_kept(sidecar_run, echo, pki):
    """The peer certificate, SPIFFE ID and our own certificate outlive the freed SSL object."""
    port = free_port()
    sc = sidecar_run("proxy", config=mtls_listener(port, echo.addr, pki))
    c = TLSClient(port, tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key"))
    for i in range(3):
        status, _, body = c.request(f"/m{i}")
        assert status == 200
        xfcc = headers_seen(body)["x-forwarded-client-cert"]
        assert "URI=spiffe://cluster.local/ns/default/sa/client" in xfcc and "Hash=" in xfcc
        assert "By=spiffe://cluster.local/ns/default/sa/server" in xfcc
    c.close()
    assert access_lines(sc, 3)[-1]["peer_principal"] == "cluster.local/ns/default/sa/client"
    assert layer(sc, "native") == 1


def test_native_100mib_each_way_flat_rss(sidecar_run, pki):
    sc = relay_100mib_each_way(
        sidecar_run, lambda port, up: tls_listener(port, up, server_tls(pki)),
        tls_context(pki / "ca.pem"))
    assert layer(sc, "native") == 1


@pytest.mark.parametrize("what,alert", [
    ("garbage", "unexpected message"),
    ("corrupt", "bad record mac"),
    ("oversized", "record overflow"),
])
def test_native_bad_records_get_an_alert_and_the_close(sidecar_run, echo, pki, what, alert):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(pki)))
    c = RawTLS(port, pki / "ca.pem")
    # a good request first, so the connection is known to work under the native layer
    c.obj.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    c.flush()
    got = b""
    while b"\r\n\r\n" not in got:
        c.inc.write(c.sock.recv(65536))
        try:
            got += c.obj.read(65536)
        except ssl.SSLWantReadError:
            pass
    assert got.startswith(b"HTTP/1.1 200")
    if what == "garbage":
        bad = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # plaintext after the handshake
    elif what == "corrupt":
        rec = bytearray(c.sealed(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n"))
        rec[12] ^= 0x01
        bad = bytes(rec)
    else:
        bad = b"\x17\x03\x03\x41\x01" + b"\x00" * 64  # 2^14 + 257 bytes announced
    c.sock.sendall(bad)
    _, err = c.read_to_end()
    c.close()
    assert isinstance(err, ssl.SSLError) and alert in str(err).lower().replace("_", " "), err
    assert layer(sc, "native") == 1
    # the request in the bad record never reached the upstream
    assert all(ln["path"] != "/bad" for ln in access_lines(sc, 1))


def test_native_close_notify_on_our_close(sidecar_run, echo, pki):
    port = free_port()
    sidecar_run("proxy", config=tls_listener(port, echo.addr, server_tls(pki)))
    c = RawTLS(port, pki / "ca.pem")
    c.obj.write(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    c.flush()
    got, err = c.read_to_end()
    c.close()
    assert got.startswith(b"HTTP/1.1 200")
    assert err is None, err  # a clean close_notify, not a bare EOF
