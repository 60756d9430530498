# SPDX-License-Identifier: Apache-2.0
"""A fake Loki, written from Loki's documented HTTP API (no Loki can run here): POST
/loki/api/v1/push with application/json, or application/x-protobuf (snappy-compressed
PushRequest of Loki's push.proto, decoded with python3-protobuf), answering 204; 400 for a
malformed push, and for an entry older than the newest of its stream: by more than an hour as
Loki does by default (unordered_writes, max_chunk_age 2h), or at all with unordered_writes off;
429 while `throttle` is set; GET /loki/api/v1/query_range over what it stored. Latency and
failures are injected through FakeBackend.inject.
"""
import bisect
import json
import re

from logs_util import FakeBackend


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
    (snappy). Rejects malformed pushes with 400, and entries older than the newest of their
    stream: by more than max_chunk_age/2 (one hour) with unordered_writes (Loki's default since
    2.4; a stream's entries are then kept sorted by time, as a query returns them), by any amount
    without. Answers 429 while `throttle` is set, and serves GET /loki/api/v1/query_range over
    what it stored."""

    OUT_OF_ORDER_WINDOW_NS = 3600 * 10**9  # max_chunk_age (2h by default) / 2

    def __init__(self, pb_module=None):
        super().__init__()
        self.pb = pb_module
        self.unordered_writes = True  # False: Loki (or a tenant) with unordered_writes off
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
                    newest = have[-1][0] if have else ts
                    if self.unordered_writes and ts < newest - self.OUT_OF_ORDER_WINDOW_NS:
                        self.rejected.append("too far behind")
                        return 400, "text/plain", (
                            f"entry with timestamp {ts} ignored, reason: 'entry too far behind' "
                            f"for stream: {dict(labels)}\n").encode()
                    if not self.unordered_writes and ts < newest:
                        self.rejected.append("out of order")
                        return 400, "text/plain", (
                            f"entry with timestamp {ts} ignored, reason: 'entry out of order' "
                            f"for stream: {dict(labels)}\n").encode()
                    if ts >= newest:
                        have.append((ts, line))
                    else:
                        bisect.insort(have, (ts, line), key=lambda e: e[0])
        return 204, "text/plain", b""
