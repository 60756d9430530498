# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: the data path's edges. The effective /config, Expect: 100-continue answered by
the proxy, absolute-form targets, half-close through tunnels, pooled original_dst connections, and
an access log that never blocks the worker."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, free_port, http_get, wait_until
from proxy_util import (Client, FakeUpstream, access_lines, echo, echo_handler, get,  # noqa: F401
                        metric, proxy_config, wait_for)


def config_json(sc):
    status, body, _ = sc.get("/config")
    assert status == 200
    return json.loads(body)


def test_proxy_config_shows_flag_listener_and_cluster(sidecar_run, echo):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr,
                               "--timeout", "7s", "--retries", "2"])
    j = config_json(sc)
    assert [l["name"] for l in j["listeners"]] == ["listen"]
    lsn = j["listeners"][0]
    assert lsn["address"] == f"127.0.0.1:{port}"
    route = lsn["routes"][0]
    assert route["name"] == "default" and route["cluster"] == "upstream"
    assert route["timeout"] == "7s"
    assert route["retry_policy"]["num_retries"] == 2
    assert route["retry_policy"]["retry_on"] == ["connect-failure", "reset", "gateway-error"]
    assert [c["name"] for c in j["clusters"]] == ["upstream"]
    cl = j["clusters"][0]
    assert cl["endpoints"] == [echo.addr] and cl["type"] == "static"
    assert cl["connect_timeout"] == "1s" and cl["max_idle"] == 64
    assert get(port, "/").status == 200


def test_proxy_config_file_routes_inherit_top_level(sidecar_run, echo):
    port = free_port()
    cfg = proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"match": {"prefix": "/a"}, "cluster": "app", "timeout": "3s"},
                     {"cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr], "connect_timeout": "300ms"},
         {"name": "dst", "type": "original_dst"}],
        timeout="9s", connect_timeout="2s", retries=0)
    sc = sidecar_run("proxy", config=cfg)
    j = config_json(sc)
    assert [l["name"] for l in j["listeners"]] == ["in"]  # no synthesised listener
    routes = j["listeners"][0]["routes"]
    assert [r["name"] for r in routes] == ["route1", "route2"]
    assert routes[0]["timeout"] == "3s" and routes[1]["timeout"] == "9s"
    assert routes[1]["retry_policy"]["num_retries"] == 0
    cl = {c["name"]: c for c in j["clusters"]}
    assert set(cl) == {"app", "dst"}
    assert cl["app"]["connect_timeout"] == "300ms" and cl["dst"]["connect_timeout"] == "2s"
    assert cl["dst"]["type"] == "original_dst"


def quick(sidecar_run, upstream, *extra):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", upstream, *extra])
    return sc, port


def test_proxy_absolute_form_replaces_host(sidecar_run, echo):
    """RFC 9112 section 3.2.2: the Host of an absolute-form request is the target's authority
    (userinfo dropped), and the request goes upstream in origin form."""
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(b"GET http://api.example:8080/abs?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
    got = c.read_response().json()
    hosts = [v for k, v in got["headers"] if k.lower() == "host"]
    assert got["target"] == "/abs?q=1" and hosts == ["api.example:8080"]
    c.send(b"GET http://user:pw@api.example HTTP/1.1\r\nHost: api.example\r\n\r\n")
    got = c.read_response().json()
    hosts = [v for k, v in got["headers"] if k.lower() == "host"]
    assert got["target"] == "/" and hosts == ["api.example"]
    # a query but no path: the query is kept, after the path "/" (RFC 9112 section 3.2.1)
    c.send(b"GET http://api.example:8080?q=1&r=%2F HTTP/1.1\r\nHost: api.example\r\n\r\n")
    got = c.read_response().json()
    hosts = [v for k, v in got["headers"] if k.lower() == "host"]
    assert got["target"] == "/?q=1&r=%2F" and hosts == ["api.example:8080"]
    # origin form keeps the client's Host as sent
    c.send(b"GET /o HTTP/1.1\r\nHost: kept.example\r\n\r\n")
    got = c.read_response().json()
    assert [v for k, v in got["headers"] if k.lower() == "host"] == ["kept.example"]
    c.close()
    # the access log shows what went upstream: no userinfo (a password) and no authority
    paths = [line["path"] for line in access_lines(sc, at_least=4)]
    assert paths == ["/abs?q=1", "/", "/?q=1&r=%2F", "/o"]


def test_proxy_names_outside_the_safe_set_are_refused_at_load(run_cli, tmp_path, echo):
    """Listener, route, cluster and endpoint names go into JSON access-log lines unescaped, so
    the loader refuses characters outside a safe set, at the value's file:line:col."""
    cfg = tmp_path / "p.yaml"

    def check(listener="in", route="default", cluster="app", endpoint="127.0.0.1:9"):
        cfg.write_text("listeners:\n"
                       f"  - name: '{listener}'\n"
                       "    address: 127.0.0.1:1\n"
                       f"    routes: [{{ name: '{route}', cluster: '{cluster}' }}]\n"
                       "clusters:\n"
                       f"  - name: '{cluster}'\n"
                       f"    endpoints: ['{endpoint}']\n")
        out = run_cli("proxy", "-c", str(cfg), "--check")
        return out.returncode, out.stderr + out.stdout

    assert check()[0] == 0
    assert check(listener="in-1.a_b:c/D", route="r/1", cluster="app.v2:x")[0] == 0
    rc, msg = check(listener='in"x')
    assert rc != 0 and f"{cfg}:2:11: name" in msg and "character 3" in msg, msg
    rc, msg = check(route="a b")
    assert rc != 0 and f"{cfg}:4:" in msg and "character 2" in msg, msg
    rc, msg = check(cluster="app\\x")
    assert rc != 0 and (f"{cfg}:4:" in msg or f"{cfg}:6:" in msg), msg
    rc, msg = check(endpoint="x{y:9")
    assert rc != 0 and f"{cfg}:7:" in msg and "endpoint" in msg, msg
    rc, msg = check(listener="x" * 129)
    assert rc != 0 and "1 to 128 bytes" in msg, msg


def test_proxy_original_dst_destination_is_checked_before_it_names_the_endpoint(sidecar_run,
                                                                               echo):
    """The destination of an original_dst request names the endpoint in the access log: userinfo
    and query are left out, and an authority with characters no endpoint may have is a 400."""
    port = free_port()
    cfg = json.dumps({
        "listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                       "routes": [{"name": "r", "cluster": "dst"}]}],
        "clusters": [{"name": "dst", "type": "original_dst"}]})
    sc = sidecar_run("proxy", config=cfg)
    c = Client(port)
    c.send(f"GET http://user:secret@{echo.addr}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    r = c.read_response()
    assert r.status == 200 and r.json()["target"] == "/?q=1"
    c.send(b'GET http://a"b\\c/ HTTP/1.1\r\nHost: x\r\n\r\n')
    assert c.read_response().status == 400
    c.close()
    lines = access_lines(sc, at_least=2)
    assert [l["status"] for l in lines] == [200, 400], "both lines are valid JSON"
    assert lines[0]["endpoint"] == echo.addr, "no userinfo, no query"


def read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        assert d, "closed before a head"
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def test_proxy_answers_expect_continue(sidecar_run, echo):
    """The client waits for 100 before sending its body; the upstream never sends one (it waits
    for the body): the proxy's own 100 Continue lets the request make progress, and the Expect
    header is not forwarded."""
    sc, port = quick(sidecar_run, echo.addr)
    c = Client(port)
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    head, rest = read_head(c.sock)
    assert head == b"HTTP/1.1 100 Continue\r\n\r\n" and rest == b""
    c.send(b"hello")
    r = c.read_response()
    assert r.status == 200
    got = r.json()
    assert got["body_head"] == "hello"
    assert not [k for k, _ in got["headers"] if k.lower() == "expect"]
    c.close()


def test_proxy_expect_continue_sent_once(sidecar_run):
    """An upstream that sends 100 Continue anyway: the client still sees exactly one."""
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    up = FakeUpstream(handler)
    try:
        sc, port = quick(sidecar_run, up.addr)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 3\r\n\r\n")
        head, rest = read_head(s)
        assert head.startswith(b"HTTP/1.1 100 ")
        s.sendall(b"abc")
        heads = []
        buf = rest
        while True:
            head, buf = read_head(s, buf)
            heads.append(head)
            if not head.startswith(b"HTTP/1.1 1"):
                break
        assert [h.split(b" ")[1] for h in heads] == [b"103", b"200"]
        assert b"Link: </s>" in heads[0]
        s.close()
    finally:
        up.close()


def test_proxy_expect_continue_local_reply_and_http10(sidecar_run, echo):
    """A request refused locally gets its final status and no 100; HTTP/1.0 gets no 1xx."""
    sc, port = quick(sidecar_run, echo.addr, "--max-request-body", "10")
    c = Client(port)
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n")
    head, _ = read_head(c.sock)
    assert head.startswith(b"HTTP/1.1 413 ")
    c.close()
    # HTTP/1.0 has no interim responses: the body is sent right away and answered once
    c = Client(port)
    c.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
    head, _ = read_head(c.sock)
    assert head.startswith(b"HTTP/1.1 200 ")
    c.close()


def recv_all(sock):
    out = b""
    while True:
        d = sock.recv(65536)
        if not d:
            return out
        out += d


def test_proxy_tunnel_client_half_close(sidecar_run):
    """CONNECT: the client sends its request and a FIN; the upstream reads to that FIN, then
    answers and closes. The answer must still reach the client."""
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        got = recv_all(conn)
        conn.sendall(b"got %d bytes" % len(got))
        return False

    up = FakeUpstream(handler)
    try:
        sc, port = quick(sidecar_run, up.addr)
        c = Client(port)
        c.send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
        head, rest = read_head(c.sock)
        assert head.startswith(b"HTTP/1.1 200")
        c.send(b"x" * 100000)
        c.sock.shutdown(socket.SHUT_WR)
        assert rest + recv_all(c.sock) == b"got 100000 bytes"
        c.close()
    finally:
        up.close()


def test_proxy_tunnel_upstream_half_close(sidecar_run):
    """WebSocket upgrade: the upstream says goodbye and sends its FIN but keeps reading. The
    client sees the bytes then EOF, and what it sends afterwards still reaches the upstream."""
    after = []

    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\nbye")
        conn.shutdown(socket.SHUT_WR)
        after.append(recv_all(conn))
        return False

    up = FakeUpstream(handler)
    try:
        sc, port = quick(sidecar_run, up.addr)
        c = Client(port)
        c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        head, rest = read_head(c.sock)
        assert head.startswith(b"HTTP/1.1 101")
        assert rest + recv_all(c.sock) == b"bye"
        c.send(b"late words")
        c.sock.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: after, timeout=10)
        assert after == [b"late words"]
        c.close()
    finally:
        up.close()


def test_proxy_tunnel_half_close_bounded_by_idle_timer(sidecar_run):
    """A half-closed tunnel whose other side never finishes is cut by stream_idle_timeout."""
    def handler(up, conn, req):
        conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        recv_all(conn)  # reads to the FIN, never answers nor closes
        time.sleep(30)
        return False

    up = FakeUpstream(handler)
    try:
        port = free_port()
        cfg = proxy_config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "routes": [{"cluster": "app"}]}],
            [{"name": "app", "endpoints": [up.addr]}], stream_idle_timeout="300ms")
        sc = sidecar_run("proxy", config=cfg)
        c = Client(port, timeout=20)
        c.send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
        head, _ = read_head(c.sock)
        assert head.startswith(b"HTTP/1.1 200")
        c.sock.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        assert recv_all(c.sock) == b""
        assert time.monotonic() - t0 < 15
        line = access_lines(sc)[-1]
        assert "SI" in line["flags"]
        c.close()
    finally:
        up.close()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_proxy_original_dst_connections_are_pooled(sidecar_run):
    """Requests to the same original destination, even from different client connections, reuse
    one upstream connection; another destination gets its own."""
    a, b = FakeUpstream(echo_handler), FakeUpstream(echo_handler)
    try:
        port = free_port()
        cfg = proxy_config(
            [{"name": "outbound", "address": f"127.0.0.1:{port}",
              "routes": [{"cluster": "dst"}]}],
            [{"name": "dst", "type": "original_dst", "max_idle": 4}])
        sc = sidecar_run("proxy", config=cfg)
        for i in range(4):
            c = Client(port)
            for up in (a, b):
                c.send(f"GET /r{i} HTTP/1.1\r\nHost: {up.addr}\r\n\r\n".encode())
                r = c.read_response()
                assert r.status == 200 and r.json()["target"] == f"/r{i}"
            c.close()
        # absolute form names the same destination: still the same pooled connection
        c = Client(port)
        c.send(f"GET http://{a.addr}/abs HTTP/1.1\r\nHost: {a.addr}\r\n\r\n".encode())
        assert c.read_response().status == 200
        c.close()
        assert a.connections == 1 and b.connections == 1
        assert len(a.requests) == 5 and len(b.requests) == 4
        line = access_lines(sc, 9)[-1]
        assert line["endpoint"] == a.addr and line["cluster"] == "dst"
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_proxy_original_dst_ipv6_listener(sidecar_run, echo):
    """An original_dst listener on IPv6: the IPv6 original-destination lookup finds no
    interception here, so the request's Host decides."""
    port = free_port()
    cfg = proxy_config(
        [{"name": "outbound", "address": f"[::1]:{port}", "routes": [{"cluster": "dst"}]}],
        [{"name": "dst", "type": "original_dst"}])
    sc = sidecar_run("proxy", config=cfg)
    for _ in range(3):
        s = socket.create_connection(("::1", port), timeout=10)
        s.sendall(f"GET /six HTTP/1.1\r\nHost: {echo.addr}\r\nConnection: close\r\n\r\n".encode())
        data = recv_all(s)
        s.close()
        assert data.startswith(b"HTTP/1.1 200") and b'"target": "/six"' in data
    assert echo.connections == 1


def test_proxy_access_log_never_blocks_the_worker(tmp_path, echo):
    """stdout is a pipe nobody reads: requests are still answered, lines that do not fit the
    bounded buffer are dropped and counted, and every line that does come out is whole."""
    port, admin = free_port(), free_port()
    err = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen(
        [BIN, "proxy", "--admin", f"127.0.0.1:{admin}", "--listen", f"127.0.0.1:{port}",
         "--upstream", echo.addr], stdout=subprocess.PIPE, stderr=err)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready", timeout=1)[0] == 200,
                   timeout=15, what="ready")
        c = Client(port, timeout=30)
        n = 2000
        for i in range(0, n, 50):
            c.send(b"".join(f"GET /r{i + k} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
                            for k in range(50)))
            for _ in range(50):
                assert c.read_response().status == 200
        c.close()
        text = http_get(f"http://127.0.0.1:{admin}/metrics")[1].decode()
        dropped = metric(text, "sidecar_access_log_dropped_total")
        assert dropped and dropped > 0
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()  # the reader catches up; the proxy then exits
        assert proc.wait(timeout=30) == 0
        lines = out.decode().splitlines()
        assert out.endswith(b"\n")
        assert 0 < len(lines) < n
        paths = [json.loads(l)["path"] for l in lines]
        assert paths[0] == "/r0"
        assert len(lines) + dropped == n
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (proc(5))."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_proxy_busy_poll_spins_after_traffic_and_stops_when_idle(sidecar_run, echo):
    """busy_poll keeps a worker polling, not sleeping, for that long after each read, and no
    longer: an idle proxy costs nothing. It is reloadable, shown in /config, and a drain while the
    worker spins still exits 0."""
    port = free_port()
    cfg = lambda bp: proxy_config(  # noqa: E731
        [{"name": "in", "address": f"127.0.0.1:{port}", "routes": [{"cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}], busy_poll=bp)
    sc = sidecar_run("proxy", config=cfg("400ms"))
    assert config_json(sc)["busy_poll"] == "400ms"
    tick = 1 / os.sysconf("SC_CLK_TCK")
    pid = sc.proc.pid

    def cpu_over(seconds):
        before = cpu_ticks(pid)
        time.sleep(seconds)
        return (cpu_ticks(pid) - before) * tick

    time.sleep(0.6)  # the admin reads of start-up are not proxy reads, but let them settle
    assert cpu_over(0.5) < 0.1, "an idle worker does not spin"
    assert get(port, "/").status == 200
    spun = cpu_over(0.6)
    assert spun >= 0.1, f"the worker polled busily after the request ({spun:.2f} s of CPU)"
    assert cpu_over(0.5) < 0.1, "and stopped once busy_poll had passed with no read"

    sc.config_path.write_text(cfg("0s"))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert config_json(sc)["busy_poll"] == "0"
    assert get(port, "/").status == 200
    assert cpu_over(0.5) < 0.1, "busy_poll 0s: the worker sleeps between events"

    sc.config_path.write_text(cfg("1s"))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert get(port, "/").status == 200
    assert sc.stop() == 0, sc.logs()
