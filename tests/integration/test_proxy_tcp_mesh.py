# SPDX-License-Identifier: Apache-2.0
"""TCP over mesh mTLS between two sidecars, and PERMISSIVE on opaque connections.

Outbound: an application's non-HTTP connection reaches the client side's sidecar (a listener of
protocol tcp, or auto with bytes that are not HTTP), whose cluster is `tls: {mode: mesh}`: the
relay originates mTLS with the workload's certificate and the mesh's ALPN, checks the server's
SPIFFE identity, and relays through the TLS session to the server side's STRICT tcp listener,
which terminates it and relays to a TCP server. Bytes are compared both ways on small and large
transfers, a half-close crosses both sidecars, a slow reader stays bounded, an
AuthorizationPolicy on the caller's principal admits one workload and refuses another, and a
server whose identity the cluster does not accept (subject_alt_names, trust domain) is refused:
closed, counted in sidecar_upstream_tls_handshakes_total and in the access log.

PERMISSIVE: a listener of protocol tcp and an auto listener's opaque_ports read the first bytes
for a ClientHello offering the mesh's ALPN and terminate it; plaintext (HTTP included, which an
opaque port does not parse) and an application's own TLS go on as bytes; a server-first protocol
is released by the detection timeout."""
import hashlib
import os
import socket
import ssl
import threading
import time

from conftest import free_port, memory_env
from proxy_util import metric, proxy_config
from test_proxy_tcp import TcpServer, firehose, greeter, read_slowly, recv_until, tcp_lines
from tls_util import make_leaf, pki, tls_context  # noqa: F401 (fixture)

CLIENT = "cluster.local/ns/default/sa/client"  # client.pem
CLIENT2 = "cluster.local/ns/prod/sa/api"  # client2.pem
SERVER = "cluster.local/ns/default/sa/server"  # server.pem


def identity(pki, name, **extra):
    return {"cert": str(pki / f"{name}.pem"), "key": str(pki / f"{name}.key"),
            "ca": str(pki / "ca.pem"), **extra}


def echo(conn):
    """Echoes every byte back, then ends its side after the client's FIN."""
    while True:
        b = conn.recv(1 << 20)
        if not b:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(b)


def pattern(n):
    """<n> bytes that are not all alike, the same on both ends."""
    blk = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    return (blk * (n // len(blk) + 1))[:n]


def digest_to_eof(s):
    """Reads <s> to its end: (bytes read, their SHA-256)."""
    h, got = hashlib.sha256(), 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            return got, h
        h.update(b)
        got += len(b)


def sink_then_source(back):
    """Reads to the client's FIN, answers with the count and SHA-256 of what came, then <back>
    bytes of pattern(), then ends: the half-close must cross both sidecars with the answer still
    flowing the other way."""

    def handle(conn):
        got, h = digest_to_eof(conn)
        conn.sendall(b"%d %s\n" % (got, h.hexdigest().encode()))
        conn.sendall(pattern(back))
    return TcpServer(handle)


def inbound(sidecar_run, pki, app_port, mtls="strict", policy=True, env=None, listeners=(),
            clusters=(), port=None, **lopts):
    """The server side: an inbound listener of protocol tcp under <mtls> with the identity
    server.pem relaying to <app_port>; with <policy>, only the principal of client.pem may
    connect."""
    port = port or free_port()
    listener = {"name": "inbound", "address": f"127.0.0.1:{port}", "direction": "inbound",
                "protocol": "tcp", "mtls": mtls, "tcp_cluster": "app", **lopts}
    sc = sidecar_run("proxy", env=env, config=proxy_config(
        [listener, *listeners],
        [{"name": "app", "endpoints": [f"127.0.0.1:{app_port}"]}, *clusters],
        identity=identity(pki, "server"), access_log="stdout",
        authorization=[{"name": "only-client", "action": "ALLOW",
                        "rules": [{"from": [{"source": {"principals": [CLIENT]}}]}]}]
        if policy else []))
    return sc, port


def outbound(sidecar_run, pki, inbound_port, who="client", protocol="tcp", tls=None, env=None,
             **ident):
    """The client side: an outbound listener of <protocol> whose TCP cluster is the inbound one
    over mesh mTLS, with the identity <who>.pem."""
    port = free_port()
    listener = {"name": "outbound", "address": f"127.0.0.1:{port}", "direction": "outbound",
                "protocol": protocol, "protocol_detection_timeout": "500ms",
                "tcp_cluster": "peer"}
    if protocol != "tcp":
        listener["routes"] = [{"name": "r", "cluster": "peer"}]
    sc = sidecar_run("proxy", env=env, config=proxy_config(
        [listener],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{inbound_port}"],
          "tls": {"mode": "mesh", **(tls or {})}}],
        identity=identity(pki, who, **ident), access_log="stdout"))
    return sc, port


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def uhs(sc, result):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_upstream_tls_handshakes_total",
                  cluster="peer", result=result) or 0


def hs(sc, result):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_tls_handshakes_total",
                  listener="inbound", result=result) or 0


def closed(s):
    """Whether the peer ended the connection (an orderly close or a reset)."""
    try:
        return s.recv(100) == b""
    except ConnectionError:
        return True


def test_outbound_tcp_over_mesh_mtls(sidecar_run, pki):
    app = TcpServer(echo)
    sc_in, in_port = inbound(sidecar_run, pki, app.port)
    for protocol in ("tcp", "auto"):
        sc_out, out_port = outbound(sidecar_run, pki, in_port, protocol=protocol)
        s = connect(out_port)
        s.sendall(b"\x00\x01binary hello")  # not HTTP: an auto listener relays it too
        assert recv_until(s, b"hello") == b"\x00\x01binary hello"
        s.sendall(b"\x02more")
        assert recv_until(s, b"more") == b"\x02more"
        s.shutdown(socket.SHUT_WR)
        assert closed(s)
        s.close()
        (line,) = tcp_lines(sc_out)
        assert line["cluster"] == "peer" and line["flags"] == "-", line
        assert line["detection"] == ("listener" if protocol == "tcp" else "bytes")
        assert line["upstream_principal"] == SERVER and line["upstream_tls_failure"] == ""
        assert line["bytes_received"] == line["bytes_sent"] == 19
        assert uhs(sc_out, "ok") == 1
    lines = tcp_lines(sc_in, at_least=2)
    assert [x["peer_principal"] for x in lines] == [CLIENT, CLIENT], lines
    assert all(x["flags"] == "-" and x["bytes_received"] == 19 for x in lines)
    assert hs(sc_in, "ok") == 2
    assert len(app.peers) == 2
    app.close()


def test_relay_offers_the_mesh_alpn_and_the_workload_certificate(sidecar_run, pki):
    # A mesh server of another make (Python's ssl: mutual TLS with the trust bundle) sees what
    # the relay offers: the workload's certificate and the mesh's ALPN only, even for a cluster
    # that offers h2 on its HTTP connections (protocol auto).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    ctx.load_verify_locations(str(pki / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2", "http/1.1", "istio-peer-exchange", "istio"])

    def handle(conn):
        with ctx.wrap_socket(conn, server_side=True) as t:
            uris = [v for k, v in t.getpeercert().get("subjectAltName", ()) if k == "URI"]
            t.recv(100)
            t.sendall(("%s %s\n" % (t.selected_alpn_protocol(), ",".join(uris))).encode())
    srv = TcpServer(handle)
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{port}", "direction": "outbound",
          "protocol": "tcp", "tcp_cluster": "peer"}],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{srv.port}"], "protocol": "auto",
          "tls": {"mode": "mesh"}}],
        identity=identity(pki, "client")))
    s = connect(port)
    s.sendall(b"hi")
    assert recv_until(s, b"\n") == f"istio-peer-exchange spiffe://{CLIENT}\n".encode()
    s.close()
    srv.close()


def test_large_transfers_and_half_close(sidecar_run, pki):
    # both ways at once through an echo, then a half-close with the answer after it
    app = TcpServer(echo)
    sc_in, in_port = inbound(sidecar_run, pki, app.port, policy=False)
    _, out_port = outbound(sidecar_run, pki, in_port)
    n = 24 << 20
    data = os.urandom(1 << 20) * (n >> 20)
    s = connect(out_port)
    threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                     daemon=True).start()
    got, h = digest_to_eof(s)
    s.close()
    assert got == n and h.digest() == hashlib.sha256(data).digest()
    app.close()

    back = 20 << 20
    srv = sink_then_source(back)
    sc_in, in_port = inbound(sidecar_run, pki, srv.port, policy=False)
    sc_out, out_port = outbound(sidecar_run, pki, in_port)
    s = connect(out_port)
    s.sendall(data[: 8 << 20])
    s.shutdown(socket.SHUT_WR)  # the app's FIN: close_notify and FIN to the server side
    head = recv_until(s, b"\n")
    line_end = head.index(b"\n") + 1
    assert head[:line_end] == b"%d %s\n" % (8 << 20,
                                            hashlib.sha256(data[: 8 << 20]).hexdigest().encode())
    rest = bytearray(head[line_end:])
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        rest += b
    s.close()
    assert len(rest) == back and bytes(rest) == pattern(back)
    (line,) = tcp_lines(sc_out)
    assert line["bytes_received"] == 8 << 20 and line["bytes_sent"] == line_end + back
    assert line["flags"] == "-"
    srv.close()


def test_slow_reader_over_mesh_mtls_bounded(sidecar_run, pki):
    total = 96 << 20
    sent = {"n": 0}
    srv = firehose(total, sent, client_first=True)
    env = memory_env()
    _, in_port = inbound(sidecar_run, pki, srv.port, policy=False, env=env)
    sc_out, out_port = outbound(sidecar_run, pki, in_port, env=env)
    s = connect(out_port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"\x00go")
    read_slowly(sc_out, s, sent, total, 32 << 20)
    srv.close()


def test_authorization_on_the_callers_principal(sidecar_run, pki):
    app = TcpServer(echo)
    sc_in, in_port = inbound(sidecar_run, pki, app.port)
    _, allowed = outbound(sidecar_run, pki, in_port, who="client")
    sc_denied, denied = outbound(sidecar_run, pki, in_port, who="client2")
    s = connect(denied)
    s.sendall(b"\x00\x01let me in")
    assert closed(s)
    s.close()
    s = connect(allowed)
    s.sendall(b"\x00\x01let me in")
    assert recv_until(s, b"in") == b"\x00\x01let me in"
    s.close()
    lines = tcp_lines(sc_in, at_least=2)
    by = {x["peer_principal"]: x for x in lines}
    assert by[CLIENT2]["flags"] == "RBAC" and by[CLIENT2]["upstream"] == ""
    assert by[CLIENT]["flags"] == "-"
    assert len(app.peers) == 1
    # the denied side's handshake succeeded: the refusal is the inbound's, after it
    assert uhs(sc_denied, "ok") == 1
    app.close()


def test_server_identity_the_cluster_refuses(sidecar_run, pki):
    received = []

    def record(conn):
        while True:
            b = conn.recv(65536)
            if not b:
                return
            received.append(b)
    app = TcpServer(record)
    _, in_port = inbound(sidecar_run, pki, app.port, policy=False)
    # a SPIFFE ID the server does not present, and a trust domain it is not in
    wrong_san, p1 = outbound(sidecar_run, pki, in_port, tls={
        "subject_alt_names": ["spiffe://cluster.local/ns/default/sa/not-the-server"]})
    wrong_td, p2 = outbound(sidecar_run, pki, in_port, trust_domain="example.org")
    for sc, port in ((wrong_san, p1), (wrong_td, p2)):
        s = connect(port)
        s.sendall(b"\x00\x01secret")
        assert closed(s)
        s.close()
        (line,) = tcp_lines(sc)
        assert line["flags"] == "UF" and line["upstream_tls_failure"] == "bad_san", line
        assert line["upstream_principal"] == "" and line["bytes_sent"] == 0
        assert uhs(sc, "bad_san") == 1 and uhs(sc, "ok") == 0
    # Not a byte reached the server. (With the wrong trust domain the handshake itself succeeds,
    # so the server side may have connected to the app before the client side closed.)
    assert received == []
    app.close()


def test_connect_timeout_covers_the_handshake(sidecar_run, pki):
    # a server that takes the connection and never answers the ClientHello: the cluster's connect
    # timeout ends it (flag UF, counted as a connect timeout)
    silent = TcpServer(lambda conn: conn.recv(65536) and time.sleep(5))
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{port}", "direction": "outbound",
          "protocol": "tcp", "tcp_cluster": "peer"}],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{silent.port}"], "connect_timeout": "300ms",
          "tls": {"mode": "mesh"}}],
        identity=identity(pki, "client"), access_log="stdout"))
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(b"\x00\x01waiting")
    assert closed(s)
    assert 0.2 < time.monotonic() - t0 < 3
    s.close()
    (line,) = tcp_lines(sc)
    assert line["flags"] == "UF" and line["bytes_sent"] == 0, line
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_upstream_rq_timeout_total", cluster="peer") == 1
    silent.close()


def dual_app(cert, key):
    """The application behind a PERMISSIVE port: a TLS server of its own (answering "tls-app:"
    and the line) when the connection starts with a TLS record, else an echo with "echo:"."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def handle(conn):
        first = conn.recv(1, socket.MSG_PEEK)
        if first == b"\x16":
            with ctx.wrap_socket(conn, server_side=True) as t:
                t.sendall(b"tls-app:" + t.recv(4096))
            return
        while True:
            b = conn.recv(65536)
            if not b:
                return
            conn.sendall(b"echo:" + b)
    return TcpServer(handle)


def permissive_checks(sidecar_run, pki, tmp_path, opaque_port):
    """PERMISSIVE on a connection the listener does not parse: the mesh's TLS is terminated, the
    rest relayed as bytes. <opaque_port>: an auto listener whose port is in opaque_ports, else a
    listener of protocol tcp."""
    cert, key = make_leaf(pki, "app", "DNS:app.example.test", out=tmp_path)
    app = dual_app(str(cert), str(key))
    greet = TcpServer(greeter)
    port = free_port()
    lopts = {"port": port, "protocol_detection_timeout": "300ms"}
    if opaque_port:
        lopts.update(protocol="auto", opaque_ports=[str(port)],
                     routes=[{"name": "r", "cluster": "app"}])
    # a second listener for a server-first protocol under PERMISSIVE
    gport = free_port()
    glistener = {"name": "db", "address": f"127.0.0.1:{gport}", "direction": "inbound",
                 "protocol": "tcp", "mtls": "permissive", "protocol_detection_timeout": "300ms",
                 "tcp_cluster": "greeter"}
    sc_in, in_port = inbound(sidecar_run, pki, app.port, mtls="permissive", policy=False,
                             listeners=[glistener],
                             clusters=[{"name": "greeter",
                                        "endpoints": [f"127.0.0.1:{greet.port}"]}], **lopts)
    # mesh TCP from another sidecar: terminated, the app sees plaintext
    _, out_port = outbound(sidecar_run, pki, in_port)
    s = connect(out_port)
    s.sendall(b"\x00\x01mesh")
    assert recv_until(s, b"mesh") == b"echo:\x00\x01mesh"
    s.close()
    # plaintext, HTTP included (not parsed: the port is opaque)
    for data in (b"\x00\x01plain", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        s = connect(in_port)
        s.sendall(data)
        assert recv_until(s, data[-4:]) == b"echo:" + data
        s.close()
    # the application's own TLS: through untouched, the app's certificate verified by the client
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    t = ctx.wrap_socket(connect(in_port), server_hostname="app.example.test")
    t.sendall(b"own tls")
    assert recv_until(t, b"tls") == b"tls-app:own tls"
    t.close()
    # mesh TLS offered by a client that does not present a mesh certificate: terminated, and the
    # handshake fails (the mesh ALPN claims the mesh)
    raw = connect(in_port)
    ctx = tls_context(pki / "ca.pem")
    ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
    try:
        m = ctx.wrap_socket(raw, server_hostname="localhost")
        m.sendall(b"x")
        assert m.recv(100) == b""
    except (ssl.SSLError, ConnectionError):
        pass
    raw.close()
    # a server-first protocol: released after the detection timeout
    s = connect(gport)
    t0 = time.monotonic()
    assert recv_until(s, b"\r\n") == b"220 greeter ready\r\n"
    assert time.monotonic() - t0 >= 0.25
    s.close()
    lines = [x for x in tcp_lines(sc_in, at_least=6) if x["listener"] == "inbound"]
    how = "port" if opaque_port else "listener"
    relayed = [x for x in lines if not x["tls_failure"]]
    assert all(x["detection"] == how and x["protocol"] == "tcp" and x["flags"] == "-"
               for x in relayed), lines
    assert sorted(x["peer_principal"] for x in relayed) == ["", "", "", CLIENT]
    refused = [x for x in lines if x["tls_failure"]]
    assert len(refused) == 1 and refused[0]["tls_failure"] == "no_client_cert", refused
    assert hs(sc_in, "ok") == 1 and hs(sc_in, "no_client_cert") == 1
    assert len(app.peers) == 4
    app.close()
    greet.close()


def test_permissive_on_tcp_listener(sidecar_run, pki, tmp_path):
    permissive_checks(sidecar_run, pki, tmp_path, opaque_port=False)


def test_permissive_on_opaque_port(sidecar_run, pki, tmp_path):
    permissive_checks(sidecar_run, pki, tmp_path, opaque_port=True)
