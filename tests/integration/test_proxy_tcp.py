# SPDX-License-Identifier: Apache-2.0
"""The proxy's TCP side on loopback: protocol detection (HTTP/1 to the routes, everything else
relayed), a server-first protocol released by the detection timeout or by opaque_ports, TLS
passed through by SNI to two upstreams that present their own certificates (openssl s_client and
curl check them), half-close, backpressure from a slow reader with bounded memory, the idle
timeout, the access log line and the sidecar_tcp_* metrics, and config errors. The relay to an
intercepted connection's original destination and the inbound passthrough from 127.0.0.6 are in
test_intercept_netns.py (they need iptables in a namespace)."""
import json
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import free_port, http_get, wait_until
from proxy_util import FakeUpstream, access_lines, echo_handler, metric, proxy_config, vm_hwm_kib
from tls_util import make_leaf, pki  # noqa: F401 (fixture)


class TcpServer:
    """A threaded TCP server on 127.0.0.1 running <handler(conn)> per connection."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.peers = []
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.peers.append(addr)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()


def greeter(conn):
    """A server-first protocol (as SMTP or MySQL): greets, then echoes lines until EOF."""
    conn.sendall(b"220 greeter ready\r\n")
    f = conn.makefile("rb")
    for line in f:
        conn.sendall(b"250 " + line)


def echo_after_eof(conn):
    """Reads everything until the client's FIN, then answers with its length and the bytes."""
    data = b""
    while True:
        b = conn.recv(65536)
        if not b:
            break
        data += b
    conn.sendall(b"%d:" % len(data) + data)


def tcp_proxy(sidecar_run, port, cluster_port, **lopts):
    listener = {"name": "tcp", "address": f"127.0.0.1:{port}", "protocol": "auto",
                "tcp_cluster": "backend", **lopts}
    cfg = proxy_config([listener], [{"name": "backend", "endpoints": [f"127.0.0.1:{cluster_port}"]}],
                       access_log="stdout")
    return sidecar_run("proxy", config=cfg)


def tcp_lines(sc, at_least=1, timeout=5):
    """The TCP access-log lines (those with a "detection" field)."""
    deadline = time.monotonic() + timeout
    while True:
        out = []
        for line in sc.logs().splitlines():
            if line.startswith("{") and '"detection"' in line:
                out.append(json.loads(line))
        if len(out) >= at_least or time.monotonic() > deadline:
            return out
        time.sleep(0.02)


def recv_until(s, sep, limit=1 << 20):
    buf = b""
    while sep not in buf:
        b = s.recv(65536)
        if not b:
            break
        buf += b
        assert len(buf) < limit
    return buf


def test_server_first_released_by_detection_timeout(sidecar_run):
    srv = TcpServer(greeter)
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, srv.port, protocol_detection_timeout="300ms")
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    t0 = time.monotonic()
    greeting = recv_until(s, b"\r\n")
    waited = time.monotonic() - t0
    assert greeting == b"220 greeter ready\r\n"
    assert waited >= 0.25, "the relay must wait for the client's first bytes until the timeout"
    s.sendall(b"HELO x\r\n")
    assert recv_until(s, b"\r\n") == b"250 HELO x\r\n"
    s.close()
    (line,) = tcp_lines(sc)
    assert line["protocol"] == "tcp" and line["detection"] == "timeout"
    assert line["cluster"] == "backend" and line["upstream"] == f"127.0.0.1:{srv.port}"
    assert line["bytes_received"] == 8 and line["bytes_sent"] == len(greeting) + 12
    assert line["flags"] == "-"
    srv.close()


def test_opaque_port_skips_detection(sidecar_run):
    srv = TcpServer(greeter)
    port = free_port()
    # Not redirected, so the destination port is the listener's own.
    sc = tcp_proxy(sidecar_run, port, srv.port, protocol_detection_timeout="10s",
                   opaque_ports=[str(port)])
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(3)
    assert recv_until(s, b"\r\n") == b"220 greeter ready\r\n"
    s.close()
    (line,) = tcp_lines(sc)
    assert line["detection"] == "port" and line["protocol"] == "tcp"


def auto_to_routes(sidecar_run, up):
    """A proxy with one auto listener whose HTTP goes to routes for <up>: (sidecar, port)."""
    port = free_port()
    listener = {"name": "auto", "address": f"127.0.0.1:{port}", "protocol": "auto",
                "routes": [{"name": "web", "cluster": "web"}], "tcp_cluster": "web"}
    cfg = proxy_config([listener], [{"name": "web", "endpoints": [f"127.0.0.1:{up.port}"]}],
                       access_log="stdout")
    return sidecar_run("proxy", config=cfg), port


def test_http_detected_goes_to_routes(sidecar_run):
    up = FakeUpstream(echo_handler)
    sc, port = auto_to_routes(sidecar_run, up)
    # Pipelined requests in the first segment: detection reads them all and hands them over.
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n"
              b"Connection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    assert data.count(b"HTTP/1.1 200") == 2
    assert [r.target for r in up.requests] == ["/one", "/two"]
    assert all(r.header("via") for r in up.requests)
    status, body, _ = http_get(sc.admin + "/metrics")
    assert metric(body.decode(), "sidecar_requests_total", listener="auto", route="web",
                  code="200") == 2
    assert not tcp_lines(sc, timeout=0.2)
    up.close()


def test_http_detected_keeps_the_client_address(sidecar_run):
    # The relay reads the client's address once and hands it over with the connection: the HTTP
    # path's X-Forwarded-For and access log carry the real peer (a source other than 127.0.0.1).
    up = FakeUpstream(echo_handler)
    sc, port = auto_to_routes(sidecar_run, up)
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.7", 0))
    s.settimeout(5)
    s.sendall(b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    s.close()
    (req,) = up.requests
    assert req.header("x-forwarded-for") == "127.0.0.7"
    (line,) = access_lines(sc)
    assert line["peer"] == "127.0.0.7"
    up.close()


def test_h2c_preface_relayed_as_tcp_when_http2_is_off(sidecar_run):
    # With HTTP/2 on (the default) the HTTP/2 codec serves h2c on auto listeners
    # (test_proxy_h2.py::test_h2c_detected_on_auto_listener_goes_to_routes).
    srv = TcpServer(echo_after_eof)
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, srv.port, http2={"enabled": False})
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(preface)
    s.shutdown(socket.SHUT_WR)
    assert recv_until(s, b"\x00" * 5 + b"\x04" + b"\x00" * 4) == b"%d:" % len(preface) + preface
    s.close()
    (line,) = tcp_lines(sc)
    assert line["protocol"] == "h2c" and line["detection"] == "bytes"


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_half_close_both_ways(sidecar_run, splice):
    srv = TcpServer(echo_after_eof)
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, srv.port, protocol="tcp", tcp_splice=splice)
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one buffer
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)  # the server answers only after it sees our FIN
    got = b""
    while True:
        b = s.recv(1 << 20)
        if not b:
            break  # and its FIN reaches us after its last byte
        got += b
    assert got == b"%d:" % len(payload) + payload
    s.close()
    (line,) = tcp_lines(sc)
    assert line["bytes_received"] == len(payload) and line["bytes_sent"] == len(got)
    assert line["detection"] == "listener"
    status, body, _ = http_get(sc.admin + "/metrics")
    text = body.decode()
    assert metric(text, "sidecar_tcp_connections_total", listener="tcp") == 1
    assert metric(text, "sidecar_tcp_connections_active", listener="tcp") == 0
    assert metric(text, "sidecar_tcp_bytes_total", listener="tcp", direction="received") == \
        len(payload)
    assert metric(text, "sidecar_tcp_bytes_total", listener="tcp", direction="sent") == len(got)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_slow_reader_backpressure_bounded_memory(sidecar_run, splice):
    total = 256 << 20
    sent = {"n": 0}
    srv = firehose(total, sent)
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, srv.port, protocol="tcp", tcp_splice=splice)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(10)
    read_slowly(sc, s, sent, total, 64 << 20)
    srv.close()


def firehose(total, sent, client_first=False):
    """A server that writes <total> bytes as fast as it may (after the client's first bytes when
    <client_first>), counting them in sent["n"]."""

    def handle(conn):
        if client_first:
            conn.recv(100)
        chunk = b"x" * (1 << 20)
        conn.settimeout(30)
        while sent["n"] < total:
            conn.sendall(chunk)
            sent["n"] += len(chunk)
    return TcpServer(handle)


def read_slowly(sc, s, sent, total, stall_max):
    """Reads one byte from <s>, then nothing for a while: the upstream must stall (sent["n"] stops
    below <stall_max>) with the proxy's peak RSS flat; then reads all <total> bytes."""
    got = len(s.recv(1))
    base = vm_hwm_kib(sc.proc.pid)
    time.sleep(1.0)  # not reading: the proxy must stop reading the upstream, not buffer
    stalled = sent["n"]
    time.sleep(0.5)
    assert sent["n"] == stalled, "the upstream kept writing while the client read nothing"
    assert stalled < stall_max
    assert vm_hwm_kib(sc.proc.pid) - base < 8 * 1024
    while got < total:  # now read it all: the flow resumes
        b = s.recv(1 << 20)
        assert b
        got += len(b)
    assert got == total
    s.close()
    assert vm_hwm_kib(sc.proc.pid) - base < 8 * 1024


def test_idle_timeout_closes_with_flag(sidecar_run):
    srv = TcpServer(greeter)
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, srv.port, protocol="tcp", tcp_idle_timeout="300ms")
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    recv_until(s, b"\r\n")
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed by the proxy
    assert 0.2 < time.monotonic() - t0 < 3
    (line,) = tcp_lines(sc)
    assert line["flags"] == "SI"


def test_upstream_refused_is_logged_uf(sidecar_run):
    port = free_port()
    sc = tcp_proxy(sidecar_run, port, free_port(), protocol="tcp")
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    assert s.recv(10) == b""
    (line,) = tcp_lines(sc)
    assert line["flags"] == "UF"


def tls_server(cert, key, name):
    """A TLS server presenting <cert>, answering each connection's line with <name>."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])

    def handle(conn):
        with ctx.wrap_socket(conn, server_side=True) as t:
            req = t.recv(4096)
            t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (len(name), name.encode()) if req.startswith(b"GET") else b"")
    return TcpServer(handle)


def test_tls_passthrough_by_sni(sidecar_run, pki, tmp_path):  # noqa: F811
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.example.test", out=tmp_path)
    b_cert, b_key = make_leaf(pki, "b", "DNS:b.example.test,DNS:*.wild.test", out=tmp_path)
    a, b = tls_server(str(a_cert), str(a_key), "A"), tls_server(str(b_cert), str(b_key), "B")
    plain = TcpServer(greeter)
    port = free_port()
    listener = {"name": "egress", "address": f"127.0.0.1:{port}", "protocol": "auto",
                "tcp_routes": [
                    {"name": "to-a", "server_names": ["a.example.test"], "cluster": "a"},
                    {"name": "to-b", "server_names": ["b.example.test", "*.wild.test"],
                     "cluster": "b"},
                    {"name": "h2-only", "server_names": ["alpn.example.test"],
                     "application_protocols": ["h2"], "cluster": "a"}],
                "tcp_cluster": "plain"}
    clusters = [{"name": "a", "endpoints": [f"127.0.0.1:{a.port}"]},
                {"name": "b", "endpoints": [f"127.0.0.1:{b.port}"]},
                {"name": "plain", "endpoints": [f"127.0.0.1:{plain.port}"]}]
    sc = sidecar_run("proxy", config=proxy_config([listener], clusters, access_log="stdout"))
    ca = pki / "ca.pem"
    for sni, want in (("a.example.test", "CN=a"), ("b.example.test", "CN=b"),
                      ("x.wild.test", "CN=b")):
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", sni, "-CAfile", str(ca), "-verify_return_error",
                            "-brief"], input=b"", capture_output=True, timeout=10)
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 0, out
        assert want in out.replace(" = ", "="), out
    # curl verifies the upstream's own certificate end to end (the proxy holds no key).
    for host, body in (("a.example.test", b"A"), ("b.example.test", b"B")):
        r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(ca), "--resolve",
                            f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"],
                           capture_output=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert r.stdout == body
    # ALPN narrows a route: without h2 offered the route does not match, so the fallback
    # cluster (a plain greeter, which is no TLS server) gets the bytes.
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "alpn.example.test", "-alpn", "http/1.1", "-brief"], input=b"",
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "alpn.example.test", "-alpn", "h2", "-CAfile", str(ca), "-brief"],
                       input=b"", capture_output=True, timeout=10)
    assert p.returncode == 0 and "CN=a" in (p.stdout + p.stderr).decode().replace(" = ", "=")
    lines = tcp_lines(sc, at_least=8)
    by_sni = {}
    for line in lines:
        by_sni.setdefault(line["sni"], []).append(line)
    assert all(x["route"] == "to-a" and x["protocol"] == "tls" for x in by_sni["a.example.test"])
    assert all(x["route"] == "to-b" for x in by_sni["x.wild.test"])
    assert {x["route"] for x in by_sni["alpn.example.test"]} == {"", "h2-only"}
    for s in (a, b, plain):
        s.close()


def test_config_errors(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners:\n"
        "  - name: l\n"
        "    address: 127.0.0.1:1\n"
        "    protocol: auto\n"
        "    tcp_routes:\n"
        "      - { server_names: [\"a..b c\"], cluster: x }\n"
        "clusters:\n"
        "  - { name: x, endpoints: [127.0.0.1:2] }\n")
    r = run_cli("proxy", "--check", "-c", str(bad))
    assert r.returncode != 0
    assert "bad.yaml:6:" in r.stderr and "server name pattern" in r.stderr
    bad.write_text(
        "listeners:\n"
        "  - { name: l, address: 127.0.0.1:1, protocol: tcp, tcp_cluster: nope }\n"
        "clusters:\n"
        "  - { name: x, endpoints: [127.0.0.1:2], upstream_bind_address: [127.0.0.6, \"::6\"] }\n")
    r = run_cli("proxy", "--check", "-c", str(bad))
    assert r.returncode != 0 and 'unknown cluster "nope"' in r.stderr
    bad.write_text(
        "listeners:\n"
        "  - { name: l, address: 127.0.0.1:1, opaque_ports: [\"70000\"] }\n")
    r = run_cli("proxy", "--check", "-c", str(bad))
    assert r.returncode != 0 and "bad.yaml:2:" in r.stderr and "not a port" in r.stderr
    bad.write_text(
        "clusters:\n"
        "  - { name: x, endpoints: [127.0.0.1:2], upstream_bind_address: [127.0.0.6, 127.0.0.7] }\n")
    r = run_cli("proxy", "--check", "-c", str(bad))
    assert r.returncode != 0 and "one IPv4" in r.stderr


def test_inbound_tcp_authorization(sidecar_run):
    # On an inbound listener, relayed connections are judged by the workload's authorization
    # policies on what a connection has, with Istio's TCP rules: a DENY rule's HTTP-only fields
    # are ignored (its port still applies), an ALLOW rule with HTTP-only fields never matches. A
    # denied connection is closed before any upstream connection, logged with flag RBAC.
    srv = TcpServer(greeter)
    ok, denied, unlisted = free_port(), free_port(), free_port()
    listeners = [{"name": name, "address": f"127.0.0.1:{port}", "protocol": "tcp",
                  "tcp_cluster": "backend", "direction": "inbound"}
                 for name, port in (("in-ok", ok), ("in-deny", denied), ("in-unlisted", unlisted))]
    policies = [
        {"name": "deny-get", "action": "DENY",
         "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": [str(denied)]}}]}]},
        {"name": "allow-http", "action": "ALLOW",
         "rules": [{"to": [{"operation": {"paths": ["/x"], "ports": [str(unlisted)]}}]}]},
        {"name": "allow-ports", "action": "ALLOW",
         "rules": [{"to": [{"operation": {"ports": [str(ok), str(denied)]}}]}]}]
    cfg = proxy_config(listeners, [{"name": "backend", "endpoints": [f"127.0.0.1:{srv.port}"]}],
                       access_log="stdout", authorization=policies)
    sc = sidecar_run("proxy", config=cfg)
    s = socket.create_connection(("127.0.0.1", ok))
    s.settimeout(5)
    assert recv_until(s, b"\r\n") == b"220 greeter ready\r\n"
    s.close()
    for port in (denied, unlisted):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        assert s.recv(100) == b""
        s.close()
    lines = {x["listener"]: x for x in tcp_lines(sc, at_least=3)}
    assert lines["in-ok"]["flags"] == "-"
    assert lines["in-deny"]["flags"] == "RBAC" and lines["in-deny"]["upstream"] == ""
    assert lines["in-unlisted"]["flags"] == "RBAC"
    assert len(srv.peers) == 1
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_authz_decisions_total", policy="deny-get", action="DENY",
                  result="denied") == 1
    srv.close()
