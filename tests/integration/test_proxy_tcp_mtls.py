# SPDX-License-Identifier: Apache-2.0
"""Mesh mTLS (STRICT) on an intercepted inbound listener of protocol auto: every connection must
be TLS with a client certificate of the mesh, and the protocol inside is detected on the decrypted
bytes. Two sidecars in a chain (the client side's mesh cluster to the server side's inbound auto
listener) carry HTTP with the caller's principal seen by an AuthorizationPolicy and XFCC; a raw
TCP protocol inside the mTLS session (Python's ssl with the mesh client certificate) is relayed
through the TLS transport with the peer identity in the TCP authorization and the access log;
plaintext, a TLS client without a certificate and one from another CA are refused and counted;
a slow reader stays bounded. Under PERMISSIVE the mesh's TLS (told by its ALPN) is terminated the
same way, plaintext is accepted and an application's own TLS passes through by SNI."""
import json
import socket
import ssl

import pytest

from conftest import free_port, memory_env
from proxy_util import get, metric, proxy_config
from test_proxy_tcp import TcpServer, firehose, read_slowly, recv_until, tcp_lines, tls_server
from test_proxy_tls import echo  # noqa: F401 (fixture)
from tls_util import make_leaf, pki, tls_context  # noqa: F401 (fixture)

CLIENT = "cluster.local/ns/default/sa/client"  # client.pem; client2.pem is .../ns/prod/sa/api


def line_echo(conn):
    """A client-first binary protocol: echoes every chunk back with a prefix."""
    while True:
        b = conn.recv(65536)
        if not b:
            return
        conn.sendall(b"echo:" + b)


def identity(pki, name):
    return {"cert": str(pki / f"{name}.pem"), "key": str(pki / f"{name}.key"),
            "ca": str(pki / "ca.pem")}


def strict_inbound(sidecar_run, pki, http_app, tcp_app, env=None, clusters=(), policy=True,
                   **lopts):
    """The server side: an inbound auto listener under STRICT with the identity server.pem, HTTP
    routes to <http_app>, everything else relayed to <tcp_app>, and a policy that admits only the
    principal of client.pem (for HTTP and for relayed TCP alike)."""
    port = free_port()
    listener = {"name": "inbound", "address": f"127.0.0.1:{port}", "direction": "inbound",
                "protocol": "auto", "mtls": "strict", "protocol_detection_timeout": "500ms",
                "tcp_cluster": "tcpapp", "routes": [{"name": "r", "cluster": "app"}], **lopts}
    sc = sidecar_run("proxy", env=env, config=proxy_config(
        [listener],
        [{"name": "app", "endpoints": [http_app]},
         {"name": "tcpapp", "endpoints": [f"127.0.0.1:{tcp_app}"]}, *clusters],
        identity=identity(pki, "server"), access_log="stdout",
        authorization=[{"name": "only-client", "action": "ALLOW",
                        "rules": [{"from": [{"source": {"principals": [CLIENT]}}]}]}]
        if policy else []))
    return sc, port


def outbound(sidecar_run, pki, inbound_port, who):
    """The client side: an outbound HTTP listener whose cluster is the inbound one over mesh
    mTLS, with the identity <who>.pem."""
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{port}", "direction": "outbound",
          "routes": [{"name": "r", "cluster": "peer", "retry_policy": {"num_retries": 0}}]}],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{inbound_port}"], "tls": {"mode": "mesh"}}],
        identity=identity(pki, who)))
    return port


def mesh_socket(pki, port, who="client", alpn=None):
    """A TLS connection with a mesh certificate, as another sidecar would make."""
    ctx = tls_context(pki / "ca.pem", pki / f"{who}.pem", pki / f"{who}.key")
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def hs(sc, result):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_tls_handshakes_total",
                  listener="inbound", result=result) or 0


def _lines(sc):
    return [json.loads(x) for x in sc.logs().splitlines() if x.startswith("{")]


def test_http_inside_strict_mtls_with_principal(sidecar_run, pki, echo):
    tcp = TcpServer(line_echo)
    sc_in, inbound = strict_inbound(sidecar_run, pki, echo.addr, tcp.port)
    allowed = outbound(sidecar_run, pki, inbound, "client")
    denied = outbound(sidecar_run, pki, inbound, "client2")
    for i in range(3):
        r = get(allowed, path=f"/x{i}")
        assert r.status == 200, r.body
        body = r.body.decode()
        assert f"/x{i}" in body and f"URI=spiffe://{CLIENT}" in body  # XFCC set by the inbound
    r = get(denied, path="/y")
    assert r.status == 403 and b"RBAC" in r.body
    assert hs(sc_in, "ok") >= 2
    lines = [x for x in _lines(sc_in) if "detection" not in x]
    assert any(x.get("peer_principal") == CLIENT and x.get("path", "").startswith("/x")
               for x in lines), lines
    assert tcp.peers == []  # nothing was relayed as TCP
    tcp.close()


def test_tcp_inside_strict_mtls_relayed_with_identity(sidecar_run, pki, echo):
    tcp = TcpServer(line_echo)
    sc_in, inbound = strict_inbound(sidecar_run, pki, echo.addr, tcp.port)
    s = mesh_socket(pki, inbound)
    s.sendall(b"\x00\x01binary hello")
    assert recv_until(s, b"hello") == b"echo:\x00\x01binary hello"
    s.sendall(b"\x02more")
    assert recv_until(s, b"more") == b"echo:\x02more"
    s.close()
    # the same bytes from another workload of the mesh: the TCP policy sees its principal
    s = mesh_socket(pki, inbound, "client2")
    s.sendall(b"\x00\x01binary hello")
    with _closed():
        assert s.recv(100) == b""
    s.close()
    lines = tcp_lines(sc_in, at_least=2)
    ok = [x for x in lines if x["peer_principal"] == CLIENT]
    bad = [x for x in lines if x["peer_principal"] == "cluster.local/ns/prod/sa/api"]
    assert ok and ok[0]["protocol"] == "tcp" and ok[0]["flags"] == "-"
    assert ok[0]["bytes_received"] == len(b"\x00\x01binary hello\x02more")
    assert ok[0]["bytes_sent"] == len(b"echo:\x00\x01binary helloecho:\x02more")
    assert ok[0]["cluster"] == "tcpapp" and ok[0]["tls_failure"] == ""
    assert bad and bad[0]["flags"] == "RBAC" and bad[0]["upstream"] == ""
    assert len(tcp.peers) == 1
    tcp.close()


class _closed:
    """Accepts an orderly close or a reset as the end of a refused connection."""

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        return et is not None and issubclass(et, (ConnectionError, ssl.SSLError, socket.timeout))


def test_strict_refuses_plaintext_and_non_mesh_tls(sidecar_run, pki, echo):
    tcp = TcpServer(line_echo)
    sc_in, inbound = strict_inbound(sidecar_run, pki, echo.addr, tcp.port)
    # plaintext HTTP, and plaintext bytes of another protocol: closed at once, nothing relayed
    for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x01binary hello"):
        s = socket.create_connection(("127.0.0.1", inbound), timeout=5)
        s.sendall(data)
        with _closed():
            assert s.recv(100) == b""
        s.close()
    # TLS without a client certificate, and with one from another CA
    for ctx in (tls_context(pki / "ca.pem"),
                tls_context(pki / "ca.pem", pki / "other.pem", pki / "other.key")):
        raw = socket.create_connection(("127.0.0.1", inbound), timeout=5)
        with _closed():
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"\x00\x01binary hello")
            assert s.recv(100) == b""
        raw.close()
    assert hs(sc_in, "not_tls") == 2
    assert hs(sc_in, "no_client_cert") == 1
    assert hs(sc_in, "unknown_ca") == 1
    assert tcp.peers == []
    failures = sorted((x["tls_failure"], x["protocol"]) for x in tcp_lines(sc_in, at_least=4))
    assert failures == [("no_client_cert", "tls"), ("not_tls", "http/1.1"), ("not_tls", "tcp"),
                        ("unknown_ca", "tls")]
    tcp.close()


def test_slow_reader_inside_mtls_bounded(sidecar_run, pki, echo):
    total = 96 << 20
    sent = {"n": 0}
    srv = firehose(total, sent, client_first=True)
    env = memory_env()
    sc_in, inbound = strict_inbound(sidecar_run, pki, echo.addr, srv.port, env=env)
    s = mesh_socket(pki, inbound)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(20)
    s.sendall(b"\x00go")
    read_slowly(sc_in, s, sent, total, 32 << 20)
    srv.close()


def test_permissive_terminates_mesh_tls_passes_the_rest(sidecar_run, pki, echo, tmp_path):
    # PERMISSIVE: a ClientHello offering the mesh's ALPN (what mesh clusters send) is terminated
    # as under STRICT; plaintext goes on as without mTLS; an application's own TLS (no mesh ALPN)
    # passes through untouched, by SNI, to a server presenting its own certificate.
    tcp = TcpServer(line_echo)
    app_cert, app_key = make_leaf(pki, "app", "DNS:app.example.test", out=tmp_path)
    tls_app = tls_server(str(app_cert), str(app_key), "tls-app")
    sc_in, inbound = strict_inbound(
        sidecar_run, pki, echo.addr, tcp.port, mtls="permissive",
        tcp_routes=[{"server_names": ["app.example.test"], "cluster": "tlsapp"}],
        clusters=[{"name": "tlsapp", "endpoints": [f"127.0.0.1:{tls_app.port}"]}],
        policy=False)
    # mesh HTTP through the outbound sidecar: terminated, the principal in XFCC and the log
    out = outbound(sidecar_run, pki, inbound, "client")
    r = get(out, path="/mesh")
    assert r.status == 200 and f"URI=spiffe://{CLIENT}".encode() in r.body
    # mesh TCP with the mesh ALPN: terminated and relayed
    s = mesh_socket(pki, inbound, alpn=["istio-peer-exchange", "istio"])
    s.sendall(b"\x00\x01mesh tcp")
    assert recv_until(s, b"tcp") == b"echo:\x00\x01mesh tcp"
    s.close()
    # plaintext HTTP and plaintext TCP: accepted as they are
    r = get(inbound, path="/plain")
    assert r.status == 200 and b"x-forwarded-client-cert" not in r.body.lower()
    s = socket.create_connection(("127.0.0.1", inbound), timeout=5)
    s.sendall(b"\x00\x01plain tcp")
    assert recv_until(s, b"tcp") == b"echo:\x00\x01plain tcp"
    s.close()
    # the application's own TLS: passed through, its certificate seen by the client
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", inbound), timeout=5)
    t = ctx.wrap_socket(raw, server_hostname="app.example.test")
    t.sendall(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
    assert recv_until(t, b"tls-app").endswith(b"tls-app")
    t.close()
    lines = tcp_lines(sc_in, at_least=3)
    by = {(x["protocol"], x["peer_principal"]) for x in lines}
    assert ("tcp", CLIENT) in by and ("tcp", "") in by and ("tls", "") in by, lines
    assert [x for x in lines if x["protocol"] == "tls"][0]["sni"] == "app.example.test"
    assert hs(sc_in, "ok") == 2  # the two mesh connections only
    tcp.close()
    tls_app.close()
