# SPDX-License-Identifier: Apache-2.0
"""Helpers for the `sidecar logs` tests: configs, writers, fake backends.

The fakes follow the documented APIs of the real systems, since neither Loki nor Elasticsearch
can run here: FakeLoki implements POST /loki/api/v1/push (JSON, and protobuf + snappy decoded
from Loki's push.proto with python3-protobuf) and rejects what Loki rejects; FakeElasticsearch
implements POST /_bulk with per-item results; FakeHTTPSink records raw request bodies.
"""
import gzip
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import http_get, wait_until


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
                status, ctype, out = backend.dispatch(self.path, dict(self.headers), body)
                try:
                    self.send_response(status)
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
            self.requests.append((path, headers, body))
        if self.delay:
            time.sleep(self.delay)
        return self.handle(path, headers, body)

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


# Loki's push.proto (pkg/push/push.proto). google.protobuf.Timestamp is declared locally with its
# exact wire layout, since Debian's protoc ships without the well-known .proto files.
LOKI_PROTO = """
syntax = "proto3";
package logproto;
message Timestamp { int64 seconds = 1; int32 nanos = 2; }
message PushRequest { repeated StreamAdapter streams = 1; }
message StreamAdapter {
  string labels = 1;
  repeated EntryAdapter entries = 2;
  uint64 hash = 3;
}
message EntryAdapter {
  Timestamp timestamp = 1;
  string line = 2;
}
"""

_LABELS_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prom_labels(s):
    """Parses {a="x", b="y"} as Loki does; raises ValueError when malformed."""
    s = s.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise ValueError(f"labels not in braces: {s!r}")
    inner, out, pos = s[1:-1], {}, 0
    while pos < len(inner):
        m = _LABELS_RE.match(inner, pos)
        if not m:
            raise ValueError(f"malformed labels: {s!r}")
        out[m.group(1)] = m.group(2).encode().decode("unicode_escape")
        pos = m.end()
    if not out:
        raise ValueError("no labels")
    return out


class FakeLoki(FakeBackend):
    """Loki's push API: POST /loki/api/v1/push with application/json or application/x-protobuf
    (snappy). Rejects malformed pushes and entries older than the newest of their stream with 400
    (Loki's behaviour with unordered_writes off), answers 429 while `throttle` is set, and serves
    GET /loki/api/v1/query_range over what it stored."""

    def __init__(self, pb_module=None):
        super().__init__()
        self.pb = pb_module
        self.streams = {}  # frozenset(labels) -> [(ts_ns, line)]
        self.throttle = 0  # answer this many pushes with 429
        self.rejected = []

    def entries(self):
        with self.lock:
            return [e for v in self.streams.values() for e in v]

    def query(self, path):
        """GET /loki/api/v1/query_range?query={...}&limit=N: every stored stream whose labels
        include the selector's equality matchers, in Loki's response shape (newest first)."""
        from urllib.parse import parse_qs, urlparse
        u = urlparse(path)
        if u.path != "/loki/api/v1/query_range":
            return 404, "text/plain", b"404 page not found\n"
        q = parse_qs(u.query)
        try:
            sel = parse_prom_labels(q["query"][0])
        except (KeyError, ValueError) as e:
            return 400, "text/plain", f"parse error: {e}\n".encode()
        limit = int(q.get("limit", ["100"])[0])
        result = []
        with self.lock:
            for key, vals in self.streams.items():
                labels = dict(key)
                if all(labels.get(k) == v for k, v in sel.items()):
                    newest = sorted(vals, key=lambda e: -e[0])[:limit]
                    result.append({"stream": labels,
                                   "values": [[str(ts), line] for ts, line in newest]})
        body = {"status": "success", "data": {"resultType": "streams", "result": result}}
        return 200, "application/json", json.dumps(body).encode()

    def lines(self):
        return [line for _, line in self.entries()]

    def handle(self, path, headers, body):
        if path != "/loki/api/v1/push":
            return 404, "text/plain", b"404 page not found\n"
        with self.lock:
            if self.throttle:
                self.throttle -= 1
                return 429, "text/plain", b"Ingestion rate limit exceeded\n"
        ctype = headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/x-protobuf"):
                import snappy
                req = self.pb.PushRequest()
                req.ParseFromString(snappy.uncompress(body))
                streams = []
                for s in req.streams:
                    labels = parse_prom_labels(s.labels)
                    vals = [(e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line)
                            for e in s.entries]
                    streams.append((labels, vals))
            elif ctype.startswith("application/json"):
                doc = json.loads(body)
                streams = []
                for s in doc["streams"]:
                    labels = s["stream"]
                    if not isinstance(labels, dict) or not labels:
                        raise ValueError("stream labels must be a non-empty object")
                    vals = []
                    for v in s["values"]:
                        if not isinstance(v[0], str) or not isinstance(v[1], str):
                            raise ValueError("values must be [\"<ns>\", \"<line>\"]")
                        vals.append((int(v[0]), v[1]))
                    streams.append((labels, vals))
            else:
                return 415, "text/plain", b"unsupported content type\n"
        except Exception as e:  # noqa: BLE001 - malformed push
            self.rejected.append(str(e))
            return 400, "text/plain", f"error parsing push request: {e}\n".encode()
        with self.lock:
            for labels, vals in streams:
                key = frozenset(labels.items())
                have = self.streams.setdefault(key, [])
                for ts, line in vals:
                    if have and ts < have[-1][0]:
                        self.rejected.append("out of order")
                        return 400, "text/plain", (
                            f"entry with timestamp {ts} ignored, reason: 'entry out of order' "
                            f"for stream: {dict(labels)}\n").encode()
                    have.append((ts, line))
        return 204, "text/plain", b""


class FakeElasticsearch(FakeBackend):
    """Elasticsearch's POST /_bulk: NDJSON action/source pairs, answers 200 with errors and a
    status per item. `fail_items(pred)` marks documents that fail with the status pred returns."""

    def __init__(self):
        super().__init__()
        self.docs = []
        self.item_status = lambda doc, attempt: 201
        self.attempts = {}

    def handle(self, path, headers, body):
        if not path.startswith("/_bulk"):
            return 404, "application/json", b'{"error":"no handler"}'
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        else:
            return 400, "application/json", \
                b'{"error":{"type":"illegal_argument_exception","reason":"The bulk request must '\
                b'be terminated by a newline [\\n]"},"status":400}'
        items, errors = [], False
        for i in range(0, len(lines), 2):
            action = json.loads(lines[i])
            (op, meta), = action.items()
            doc = json.loads(lines[i + 1])
            key = doc.get("message")
            with self.lock:
                self.attempts[key] = self.attempts.get(key, 0) + 1
                st = self.item_status(doc, self.attempts[key])
            item = {"_index": meta["_index"], "status": st}
            if st < 300:
                with self.lock:
                    self.docs.append((meta["_index"], doc))
                item["result"] = "created"
            else:
                errors = True
                item["error"] = ({"type": "mapper_parsing_exception", "reason": "failed to parse"}
                                 if st == 400 else
                                 {"type": "es_rejected_execution_exception", "reason": "queue full"})
            items.append({op: item})
        out = json.dumps({"took": 1, "errors": errors, "items": items}).encode()
        return 200, "application/json", out


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
