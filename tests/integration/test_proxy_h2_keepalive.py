# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: downstream HTTP/2 connection management and interim responses. PING keepalive of
client connections (`http2.keepalive_interval` / `keepalive_timeout`: a client that answers keeps
its connection, one that stops answering gets GOAWAY and is closed), per-stream idle timeouts that
spare streams making progress in one direction only, and 1xx for HTTP/2 clients: Expect:
100-continue answered with a 100 HEADERS frame, 103 Early Hints from the upstream passed on ahead
of the final head. Clients: the Python h2 library, raw frames, and curl."""
import json
import socket
import threading
import time

import h2.events

from conftest import free_port
from proxy_util import FakeUpstream, access_lines, metric, proxy_config, respond
from test_proxy_h2 import H2, PREFACE, curl, frame, h2_listener, metrics


def sidecar(sidecar_run, upstream, http2=None, **extra):
    port = free_port()
    lst = h2_listener(port)
    if http2:
        lst["http2"] = http2
    sc = sidecar_run("proxy", config=proxy_config(
        [lst], [{"name": "app", "endpoints": [upstream]}], **extra))
    return sc, port


class PingCounter(H2):
    """The h2 library answers PINGs by itself; this counts them."""

    def __init__(self, port):
        super().__init__(port)
        self.pings = 0
        self.informational = {}

    def on_event(self, ev, ack):
        if isinstance(ev, h2.events.PingReceived):
            self.pings += 1
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self.informational.setdefault(ev.stream_id, []).append(dict(ev.headers))
        super().on_event(ev, ack)


def slow_answer(up, conn, req):
    time.sleep(3)
    return respond(conn, 200, b"late")


# ---- PING keepalive ----

def test_keepalive_ping_answered_keeps_the_connection(sidecar_run):
    up = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"ok"))
    try:
        sc, port = sidecar(sidecar_run, up.addr,
                           {"keepalive_interval": "200ms", "keepalive_timeout": "300ms"})
        c = PingCounter(port)
        c.pump(lambda: c.pings >= 5, timeout=5)  # quiet for 1 s: a PING every 200 ms, answered
        assert not c.closed and c.goaway is None
        st = c.wait(c.request("/after-pings"))
        assert st["headers"][":status"] == "200" and bytes(st["data"]) == b"ok"
        text = metrics(sc)
        assert metric(text, "sidecar_http2_goaway_total", listener="h2",
                      reason="ping_timeout") == 0
        assert metric(text, "sidecar_http2_connections_total", listener="h2") == 1
        c.close()
    finally:
        up.close()


def test_keepalive_off_by_default_sends_no_ping(sidecar_run):
    up = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"ok"))
    try:
        sc, port = sidecar(sidecar_run, up.addr)
        c = PingCounter(port)
        deadline = time.monotonic() + 1.0
        c.pump(lambda: time.monotonic() > deadline, timeout=3)
        assert c.pings == 0 and not c.closed
        c.close()
    finally:
        up.close()


def read_frames(sock, until, timeout):
    """Raw server frames until <until(frames)> or EOF: returns (frames, closed)."""
    sock.settimeout(0.2)
    buf, frames, deadline = b"", [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return frames, True
        if not d:
            return frames, True
        buf += d
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big"), buf[9:9 + n]))
            buf = buf[9 + n:]
        if until(frames):
            return frames, False
    return frames, False


def test_keepalive_unanswered_ping_closes_with_goaway(sidecar_run):
    up = FakeUpstream(slow_answer)
    try:
        sc, port = sidecar(sidecar_run, up.addr,
                           {"keepalive_interval": "200ms", "keepalive_timeout": "300ms"})
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        # A request on stream 1 (GET / with :authority t), then silence: no SETTINGS ACK, no
        # PING ACK, nothing.
        s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 5, 1, b"\x82\x84\x86\x41\x01t"))
        t0 = time.monotonic()
        frames, closed = read_frames(s, lambda f: False, timeout=5)
        took = time.monotonic() - t0
        types = [f[0] for f in frames]
        assert 6 in types, f"no PING among {types}"
        ping = types.index(6)
        assert not frames[ping][1] & 1, "a PING, not an ACK"
        assert 7 in types[ping:], f"no GOAWAY after the PING: {types}"
        ga = frames[types.index(7)]
        assert int.from_bytes(ga[3][4:8], "big") == 0 and ga[3][8:] == b"keepalive timeout"
        assert closed, "the connection is closed after the GOAWAY"
        assert took < 2.5, f"closed after {took:.2f}s (interval 0.2 s + timeout 0.3 s)"
        s.close()
        text = metrics(sc)
        assert metric(text, "sidecar_http2_goaway_total", listener="h2",
                      reason="ping_timeout") == 1
        line = access_lines(sc, 1)[0]
        assert line["protocol"] == "HTTP/2" and "DC" in line["flags"], line
    finally:
        up.close()


def test_keepalive_timeout_extended_by_other_frames(sidecar_run):
    """A client that never ACKs but keeps sending frames (here WINDOW_UPDATEs) is alive, as
    Envoy counts it."""
    up = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"ok"))
    try:
        sc, port = sidecar(sidecar_run, up.addr,
                           {"keepalive_interval": "200ms", "keepalive_timeout": "300ms"})
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PREFACE + frame(4, 0, 0, b""))
        closed = False
        for _ in range(10):  # 1.5 s, five times the timeout
            s.sendall(frame(8, 0, 0, (1).to_bytes(4, "big")))
            frames, closed = read_frames(s, lambda f: False, timeout=0.15)
            assert not closed and 7 not in [f[0] for f in frames]
        s.close()
        assert metric(metrics(sc), "sidecar_http2_goaway_total", listener="h2",
                      reason="ping_timeout") == 0
    finally:
        up.close()


# ---- per-stream idle timeouts and long-lived streams ----

def drip_download(up, conn, req):
    if req.target == "/drip":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(8):  # 2.4 s, each gap shorter than stream_idle_timeout
            time.sleep(0.3)
            conn.sendall(b"2\r\n%02d\r\n" % i)
        conn.sendall(b"0\r\n\r\n")
        return True
    if req.target == "/upload":
        return respond(conn, 200, json.dumps({"got": len(req.body)}).encode())
    # /stuck: the head, then nothing in either direction for longer than the idle timeout.
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    time.sleep(2.5)
    conn.sendall(b"defghij")
    return True


def test_stream_idle_timeout_spares_streams_progressing_one_way(sidecar_run):
    up = FakeUpstream(drip_download)
    try:
        sc, port = sidecar(sidecar_run, up.addr, stream_idle_timeout="1s", timeout="30s")
        c = H2(port)
        down = c.request("/drip")
        upl = c.request("/upload", method="POST", headers=[("content-length", "8")], end=False)
        results = {}

        def upload():
            # The request body trickles in; the upstream stays silent until it has all of it.
            for i in range(8):
                time.sleep(0.3)
                results.setdefault("sent", []).append(i)

        t = threading.Thread(target=upload)
        t.start()
        deadline = time.monotonic() + 10
        sent = 0
        while not (c.done(down) and c.done(upl)):
            assert time.monotonic() < deadline
            n = len(results.get("sent", []))
            while sent < n:
                c.conn.send_data(upl, b"u", end_stream=sent == 7)
                sent += 1
            c.flush()
            try:
                c.sock.settimeout(0.05)
                d = c.sock.recv(1 << 16)
                for ev in c.conn.receive_data(d):
                    c.on_event(ev, True)
                c.flush()
            except socket.timeout:
                pass
        t.join()
        assert c.streams[down]["reset"] is None and c.streams[upl]["reset"] is None
        assert bytes(c.streams[down]["data"]) == b"".join(b"%02d" % i for i in range(8))
        assert json.loads(bytes(c.streams[upl]["data"])) == {"got": 8}
        # A stream with nothing moving either way for the idle timeout is ended.
        stuck = c.wait(c.request("/stuck"), timeout=5)
        assert stuck["headers"][":status"] == "200" and stuck["reset"] is not None
        assert bytes(stuck["data"]) == b"abc"
        flags = {l["path"]: l["flags"] for l in access_lines(sc, 3)}
        assert flags["/drip"] == "-" and flags["/upload"] == "-" and "SI" in flags["/stuck"]
        c.close()
    finally:
        up.close()


# ---- 1xx for HTTP/2 clients ----

def early_hints(up, conn, req):
    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
                 b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n")
    time.sleep(0.1)
    return respond(conn, 200, json.dumps({"expect": req.header("expect"),
                                          "body": req.body.decode()}).encode())


def test_103_early_hints_reach_http2_clients_as_headers(sidecar_run):
    up = FakeUpstream(early_hints)
    try:
        sc, port = sidecar(sidecar_run, up.addr)
        c = PingCounter(port)
        st = c.wait(c.request("/page"))
        assert st["headers"][":status"] == "200"
        (hints,) = c.informational[1]
        assert hints[":status"] == "103" and hints["link"] == "</s.css>; rel=preload"
        assert "x-hop" not in hints and "connection" not in hints  # hop-by-hop, as for HTTP/1
        c.close()
        rc, out, err = curl("-v", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/page")
        assert rc == 0, err
        text = err.decode()
        assert "< HTTP/2 103" in text and "< link: </s.css>; rel=preload" in text
        assert "< HTTP/2 200" in text and text.index("HTTP/2 103") < text.index("HTTP/2 200")
    finally:
        up.close()


def test_expect_100_continue_over_http2(sidecar_run, tmp_path):
    up = FakeUpstream(early_hints)
    try:
        sc, port = sidecar(sidecar_run, up.addr)
        c = PingCounter(port)
        sid = c.request("/upload", method="POST",
                        headers=[("expect", "100-continue"), ("content-length", "5")], end=False)
        # The 100 comes before the client sends any of its body.
        c.pump(lambda: sid in c.informational, timeout=5)
        assert c.informational[sid][0][":status"] == "100"
        c.conn.send_data(sid, b"hello", end_stream=True)
        c.flush()
        st = c.wait(sid)
        assert st["headers"][":status"] == "200"
        got = json.loads(bytes(st["data"]))
        assert got == {"expect": None, "body": "hello"}, "Expect is answered, not forwarded"
        # The upstream's own 103 still follows the proxy's 100.
        assert [h[":status"] for h in c.informational[sid]] == ["100", "103"]
        c.close()
        body = tmp_path / "body"
        body.write_bytes(b"x" * 2048)
        rc, out, err = curl("-v", "--http2-prior-knowledge", "-H", "Expect: 100-continue",
                            "--data-binary", f"@{body}", f"http://127.0.0.1:{port}/curl")
        assert rc == 0, err
        assert "< HTTP/2 100" in err.decode()
        assert json.loads(out)["body"] == "x" * 2048
    finally:
        up.close()


def test_expect_100_continue_refused_locally_gets_the_final_status(sidecar_run):
    """A request answered by the proxy itself (no route) gets its 404, never a 100 first."""
    up = FakeUpstream(early_hints)
    try:
        port = free_port()
        lst = h2_listener(port)
        lst["routes"] = [{"name": "r", "match": {"prefix": "/only"}, "cluster": "app"}]
        sidecar_run("proxy", config=proxy_config([lst], [{"name": "app",
                                                           "endpoints": [up.addr]}]))
        c = PingCounter(port)
        sid = c.request("/elsewhere", method="POST",
                        headers=[("expect", "100-continue"), ("content-length", "5")], end=False)
        st = c.wait(sid)
        assert st["headers"][":status"] == "404" and sid not in c.informational
        c.close()
        assert up.connections == 0
    finally:
        up.close()
