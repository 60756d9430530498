# SPDX-License-Identifier: Apache-2.0
"""Helpers for the `sidecar logs` tests: configs, writers, fake backends.

FakeBackend is the threaded HTTP server under the fakes of real backends (fake_loki.py,
fake_elasticsearch.py), with injected latency and failures per request; FakeHTTPSink records
raw request bodies.
"""
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import wait_until


def logs_config(paths, outputs, **kw):
    """Returns YAML for the logs role: <paths> globs, <outputs> a list of dicts, extra keys."""
    out = {"paths": list(paths), "outputs": outputs, "poll_interval": "50ms",
           "refresh_interval": "100ms", "rotate_wait": "500ms"}
    out.update(kw)
    return json.dumps(out)  # JSON is YAML


def file_output(path, **kw):
    o = {"type": "file", "path": str(path), "format": "raw", "batch_wait": "50ms"}
    o.update(kw)
    return o


def read_lines(path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return data.split(b"\n")[:-1]


def wait_lines(path, n, timeout=60):
    have = [0]

    def enough():
        have[0] = len(read_lines(path))
        return have[0] >= n

    try:
        wait_until(enough, timeout=timeout, what=f"{n} lines in {path}")
    except AssertionError as e:
        # The count at the deadline, not at the start of the wait.
        raise AssertionError(f"{e} (have {have[0]})") from None
    return read_lines(path)


def metric(sc, name, labels=None):
    """Returns the value of one series from the sidecar's /metrics (0 when absent)."""
    status, body, _ = sc.get("/metrics")
    assert status == 200
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in body.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Writer(threading.Thread):
    """Appends numbered lines to a file as fast as it can, optionally rotating it."""

    def __init__(self, path, n, prefix="line", rotate_every=0, rotate="rename", size=60,
                 pause_every=0, rotate_pause=0.0):
        super().__init__(daemon=True)
        self.path, self.n, self.prefix = path, n, prefix
        self.rotate_every, self.rotate, self.size = rotate_every, rotate, size
        self.pause_every = pause_every
        self.rotate_pause = rotate_pause
        self.rotations = 0

    def line(self, i):
        base = f"{self.prefix}-{i:08d} "
        return (base + "x" * max(0, self.size - len(base))).encode()

    def run(self):
        f = open(self.path, "ab")
        for i in range(self.n):
            f.write(self.line(i) + b"\n")
            if self.pause_every and i % self.pause_every == 0:
                f.flush()
                time.sleep(0.001)
            if self.rotate_every and i and i % self.rotate_every == 0:
                f.close()
                self.rotations += 1
                if self.rotate == "rename":
                    self.path.rename(self.path.with_name(self.path.name + f".{self.rotations}"))
                f = open(self.path, "ab")
                time.sleep(self.rotate_pause)
        f.close()

    def expected(self):
        return [self.line(i) for i in range(self.n)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeBackend:
    """A threaded HTTP server on a free loopback port; subclasses implement handle()."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.fail_status = None  # answer every request with this status while set
        self.delay = 0.0  # seconds each accepted request waits before its answer
        # inject(n, body) -> (delay_s, status or None, headers): per request (n counts POSTs
        # from 0), a delay before the answer and, with a status, a failure answered instead.
        self.inject = None
        self.posts = 0
        self.active = 0  # requests being handled now, and the most at once
        self.max_active = 0
        backend = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status, ctype, out, *extra = backend.dispatch(self.path, dict(self.headers),
                                                              body)
                try:
                    self.send_response(status)
                    for k, v in (extra[0] if extra else {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a drain cut short): nothing to answer

            def do_GET(self):
                status, ctype, out = backend.query(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = _Server(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def dispatch(self, path, headers, body):
        if self.fail_status:
            return self.fail_status, "text/plain", b"told to fail\n"
        with self.lock:
            n = self.posts
            self.posts += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            delay, status, hdrs = self.inject(n, body) if self.inject else (0, None, {})
            time.sleep(delay + self.delay)
            if status:
                return status, "text/plain", b"injected failure\n", hdrs
            with self.lock:
                self.requests.append((path, headers, body))
            return self.handle(path, headers, body)
        finally:
            with self.lock:
                self.active -= 1

    def handle(self, path, headers, body):
        return 200, "text/plain", b"ok\n"

    def query(self, path):
        return 404, "text/plain", b"not found\n"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeHTTPSink(FakeBackend):
    """Records every POST body (after gzip decoding) in order."""

    def bodies(self):
        with self.lock:
            return [b for _, _, b in self.requests]


@pytest.fixture
def backend():
    """Makes fake backends (backend(FakeLoki), ...) and closes them after the test."""
    made = []

    def make(cls, *a):
        b = cls(*a)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
