# SPDX-License-Identifier: Apache-2.0
"""Helpers for the proxy tests: a scriptable fake upstream and raw-socket HTTP/1.1 clients.

FakeUpstream is a named fake (no real peer can misbehave on cue): a threaded TCP server that parses
each request itself (Content-Length or chunked, trailers kept raw) and hands it to a handler, which
writes whatever bytes it likes: proper responses, half a body, a reset, a stall.
"""
import json
import re
import socket
import subprocess
import struct
import threading
import time

import pytest


class Request:
    def __init__(self, method, target, version, headers, body, trailers, raw_head):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.trailers = trailers
        self.raw_head = raw_head

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]


def read_until(sock, buf, sep):
    while sep not in buf:
        d = sock.recv(65536)
        if not d:
            raise EOFError("closed")
        buf += d
    i = buf.index(sep) + len(sep)
    return buf[:i], buf[i:]


def read_exact(sock, buf, n):
    while len(buf) < n:
        d = sock.recv(max(65536, n - len(buf)))
        if not d:
            raise EOFError("closed")
        buf += d
    return buf[:n], buf[n:]


def read_chunked(sock, buf, sink=None):
    """Returns (body, trailers raw, rest). With sink, data is passed to it instead of kept."""
    body = bytearray()
    while True:
        line, buf = read_until(sock, buf, b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            trailers = b""
            while True:
                line, buf = read_until(sock, buf, b"\r\n")
                if line == b"\r\n":
                    return bytes(body), trailers, buf
                trailers += line
        while size > 0:
            if not buf:
                buf = sock.recv(1 << 20)
                if not buf:
                    raise EOFError("closed in chunk")
            take = buf[:size]
            buf = buf[size:]
            size -= len(take)
            if sink:
                sink(take)
            else:
                body += take
        _, buf = read_exact(sock, buf, 2)


def parse_head(raw):
    lines = raw[:-4].decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers = []
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return first, headers


class FakeUpstream:
    """handler(up, conn, req) -> True to keep the connection for another request."""

    def __init__(self, handler, discard_body=False):
        self.handler = handler
        self.discard_body = discard_body
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.requests = []
        self.connections = 0
        self.body_bytes = 0
        self.lock = threading.Lock()
        self.stopped = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _count(self, data):
        self.body_bytes += len(data)

    def _serve(self, c):
        buf = b""
        try:
            while True:
                raw, buf = read_until(c, buf, b"\r\n\r\n")
                (method, target, version), headers = parse_head(raw)
                h = {k.lower(): v for k, v in headers}
                body, trailers = b"", b""
                if "chunked" in h.get("transfer-encoding", ""):
                    body, trailers, buf = read_chunked(
                        c, buf, self._count if self.discard_body else None)
                elif "content-length" in h:
                    n = int(h["content-length"])
                    if self.discard_body:
                        while n > 0:
                            if not buf:
                                buf = c.recv(1 << 20)
                                if not buf:
                                    raise EOFError
                            take = min(n, len(buf))
                            self.body_bytes += take
                            buf = buf[take:]
                            n -= take
                    else:
                        body, buf = read_exact(c, buf, n)
                req = Request(method, target, version, headers, body, trailers, raw)
                with self.lock:
                    self.requests.append(req)
                if not self.handler(self, c, req):
                    break
        except (EOFError, OSError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.stopped = True
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def respond(conn, status=200, body=b"ok", headers=(), reason="OK"):
    h = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    for k, v in headers:
        h += f"{k}: {v}\r\n"
    conn.sendall(h.encode() + b"\r\n" + body)
    return True


def named(name, status=200):
    """A FakeUpstream answering every request with <status> and its <name> as the body."""
    return FakeUpstream(lambda up, conn, req: respond(conn, status, name.encode()))


@pytest.fixture
def echo():
    """A FakeUpstream answering with echo_handler, closed after the test."""
    up = FakeUpstream(echo_handler)
    yield up
    up.close()


def echo_handler(up, conn, req):
    """Answers with a JSON description of the request as received."""
    body = json.dumps({
        "method": req.method, "target": req.target, "headers": req.headers,
        "body_len": len(req.body), "body_head": req.body[:64].decode("latin-1"),
        "trailers": req.trailers.decode("latin-1"),
    }).encode()
    return respond(conn, 200, body, [("Content-Type", "application/json")])


class Response:
    def __init__(self, status, headers, body, trailers=b"", raw_head=b""):
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.raw_head = raw_head

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[0] if vals else None

    def json(self):
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client connection: exact bytes out, responses parsed strictly."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_response(self, head_request=False):
        while True:
            raw, self.buf = read_until(self.sock, self.buf, b"\r\n\r\n")
            (version, status, *_), headers = parse_head(raw)
            status = int(status)
            if 100 <= status < 200 and status != 101:
                continue
            break
        h = {k.lower(): v for k, v in headers}
        body, trailers = b"", b""
        if head_request or status in (101, 204, 304):
            pass
        elif "chunked" in h.get("transfer-encoding", ""):
            body, trailers, self.buf = read_chunked(self.sock, self.buf)
        elif "content-length" in h:
            body, self.buf = read_exact(self.sock, self.buf, int(h["content-length"]))
        else:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                self.buf += d
            body, self.buf = self.buf, b""
        return Response(status, headers, body, trailers, raw)

    def request(self, method="GET", path="/", headers=(), body=None, version="1.1"):
        h = f"{method} {path} HTTP/{version}\r\nHost: test\r\n"
        for k, v in headers:
            h += f"{k}: {v}\r\n"
        if body is not None:
            h += f"Content-Length: {len(body)}\r\n"
        self.send(h.encode() + b"\r\n" + (body or b""))
        return self.read_response(head_request=(method == "HEAD"))

    def closed_by_peer(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def get(port, path="/", **kw):
    c = Client(port)
    try:
        return c.request(path=path, **kw)
    finally:
        c.close()


def metrics(sc):
    """The text of <sc>'s /metrics (its admin port)."""
    return sc.get("/metrics")[1].decode()


def metric(text, name, **labels):
    """Returns the value of the series <name>{labels...} in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            return float(m.group(4))
    return None


def access_lines(sc, at_least=1, timeout=5):
    """The JSON access-log lines so far, waiting until there are <at_least> (the line is written
    right after the response, so a client may see the response first)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = _access_lines(sc)
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def _access_lines(sc):
    out = []
    for line in sc.logs().splitlines():
        if line.startswith("{") and '"request_id"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def ws_frame(payload, opcode=1, mask=True):
    b = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        b += bytes([mbit | n])
    else:
        b += bytes([mbit | 126]) + struct.pack("!H", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        b += key + bytes(p ^ key[i % 4] for i, p in enumerate(payload))
    else:
        b += payload
    return b


def proxy_config(listeners, clusters, **extra):
    """Builds a YAML config from plain Python structures (JSON is valid YAML)."""
    return json.dumps({"listeners": listeners, "clusters": clusters, **extra}) + "\n"


def wait_for(pred, timeout=10, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def flaky_upstream(failures=2, slow_path="/slow", delay=2.0):
    """A fake upstream that answers 503 to its first <failures> requests and 200 after, and holds
    requests for <slow_path> <delay> seconds; returns (upstream, list of targets seen)."""
    calls = []

    def handler(up, conn, req):
        calls.append(req.target)
        if req.target == slow_path:
            time.sleep(delay)
            return respond(conn, 200, b"late")
        return respond(conn, 503 if len(calls) <= failures else 200, b"ok")

    return FakeUpstream(handler), calls


def curl_head(port, path, *extra, host=None):
    """Runs curl against the proxy; returns (status, headers dict lower-cased, body)."""
    cmd = ["curl", "-s", "-D", "-", "-o", "-", f"http://127.0.0.1:{port}{path}", *extra]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, timeout=20, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body
