# SPDX-License-Identifier: Apache-2.0
"""FakeOTLP and FakeZipkin: stand-ins for a trace collector, written from the documented APIs
because no collector runs on these machines.

FakeOTLP is an OTLP/HTTP receiver (OpenTelemetry protocol specification, "OTLP/HTTP"): POST
/v1/traces with Content-Type application/x-protobuf (an ExportTraceServiceRequest) or
application/json (its JSON mapping: hex ids, lowerCamelCase names, 64-bit integers as strings or
numbers), optionally Content-Encoding gzip; it answers 200 with an ExportTraceServiceResponse in
the request's encoding. Protobuf bodies are decoded twice: with python3-protobuf against the
project's .proto files (compiled here by protoc), and by a wire-format walker that checks the field
numbers and wire types the specification gives, so a wrong number in the .proto files cannot hide.

FakeZipkin is a Zipkin v2 receiver (zipkin-api's zipkin2-api.yaml): POST /api/v2/spans with a JSON
list of spans, answered 202; it checks the span shape the API describes (hex ids of the documented
lengths, microsecond timestamps, kind, localEndpoint, string tags).

Both normalise spans into dicts (trace_id, span_id, parent_id as hex; name; kind as "SERVER" or
"CLIENT"; attrs; events; error) and can misbehave on cue: answer a status (with Retry-After), stall
each request, or reject part of a batch (OTLP partial success)."""
import gzip
import importlib
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "roles" / "proxy" / "proto"

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def compile_protos(out_dir):
    """Compiles the project's .proto files to Python modules in <out_dir>; returns the request and
    response classes of the trace service."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["protoc", f"--proto_path={PROTO_DIR}", f"--python_out={out_dir}",
                    *sorted(str(p) for p in PROTO_DIR.glob("*.proto"))], check=True)
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    mod = importlib.import_module("otlp_trace_service_pb2")
    return mod.ExportTraceServiceRequest, mod.ExportTraceServiceResponse


# ---- the wire-format walker: field numbers and wire types from the OTLP specification ----

def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _fields(b):
    """Yields (field number, wire type, value) of one message."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise AssertionError(f"wire type {wt} of field {num}")
        yield num, wt, v


# message -> {field: (wire type, sub-message name or None)}, from the specification's .proto.
SPEC = {
    "ExportTraceServiceRequest": {1: (2, "ResourceSpans")},
    "ResourceSpans": {1: (2, "Resource"), 2: (2, "ScopeSpans"), 3: (2, None)},
    "Resource": {1: (2, "KeyValue"), 2: (0, None)},
    "ScopeSpans": {1: (2, "InstrumentationScope"), 2: (2, "Span"), 3: (2, None)},
    "InstrumentationScope": {1: (2, None), 2: (2, None), 3: (2, "KeyValue"), 4: (0, None)},
    "Span": {1: (2, None), 2: (2, None), 3: (2, None), 4: (2, None), 5: (2, None), 6: (0, None),
             7: (1, None), 8: (1, None), 9: (2, "KeyValue"), 10: (0, None), 11: (2, "Event"),
             12: (0, None), 13: (2, None), 14: (0, None), 15: (2, "Status"), 16: (5, None)},
    "Event": {1: (1, None), 2: (2, None), 3: (2, "KeyValue"), 4: (0, None)},
    "Status": {2: (2, None), 3: (0, None)},
    "KeyValue": {1: (2, None), 2: (2, "AnyValue")},
    "AnyValue": {1: (2, None), 2: (0, None), 3: (0, None), 4: (1, None), 5: (2, None),
                 6: (2, None), 7: (2, None)},
}


def check_wire(body, msg="ExportTraceServiceRequest"):
    """Walks <body> as <msg>: every field must be one the specification declares, with its wire
    type; trace ids are 16 bytes, span ids 8."""
    spec = SPEC[msg]
    for num, wt, v in _fields(body):
        assert num in spec, f"{msg} has no field {num}"
        want_wt, sub = spec[num]
        assert wt == want_wt, f"{msg}.{num}: wire type {wt}, the specification says {want_wt}"
        if msg == "Span" and num == 1:
            assert len(v) == 16, "trace_id is 16 bytes"
        if msg == "Span" and num in (2, 4):
            assert len(v) == 8, "span ids are 8 bytes"
        if sub:
            check_wire(v, sub)


# ---- normalised spans ----

def _any(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def spans_from_proto(req):
    out = []
    for rs in req.resource_spans:
        res = {kv.key: _any(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent_id": s.parent_span_id.hex() or None, "name": s.name,
                    "kind": KINDS.get(s.kind, str(s.kind)), "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano, "trace_state": s.trace_state,
                    "attrs": {kv.key: _any(kv.value) for kv in s.attributes},
                    "events": [e.name for e in s.events], "error": s.status.code == 2,
                    "resource": res, "scope": ss.scope.name,
                })
    return out


def _json_any(v):
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"])  # a string or a number in the JSON mapping
    return None


HEX = re.compile(r"^[0-9a-f]+$")


def spans_from_json(doc):
    out = []
    for rs in doc["resourceSpans"]:
        res = {kv["key"]: _json_any(kv["value"]) for kv in rs["resource"]["attributes"]}
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                assert len(s["traceId"]) == 32 and HEX.match(s["traceId"]), s["traceId"]
                assert len(s["spanId"]) == 16 and HEX.match(s["spanId"]), s["spanId"]
                out.append({
                    "trace_id": s["traceId"], "span_id": s["spanId"],
                    "parent_id": s.get("parentSpanId") or None, "name": s["name"],
                    "kind": KINDS.get(s["kind"], str(s["kind"])),
                    "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                    "trace_state": s.get("traceState", ""),
                    "attrs": {kv["key"]: _json_any(kv["value"]) for kv in s.get("attributes", [])},
                    "events": [e["name"] for e in s.get("events", [])],
                    "error": s.get("status", {}).get("code") == 2,
                    "resource": res, "scope": ss["scope"]["name"],
                })
    return out


def spans_from_zipkin(doc):
    assert isinstance(doc, list)
    out = []
    for s in doc:
        assert len(s["traceId"]) in (16, 32) and HEX.match(s["traceId"]), s
        assert len(s["id"]) == 16 and HEX.match(s["id"]), s
        if "parentId" in s:
            assert len(s["parentId"]) == 16 and HEX.match(s["parentId"]), s
        assert s["kind"] in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER"), s
        assert isinstance(s["timestamp"], int) and isinstance(s["duration"], int), s
        assert s["duration"] >= 1
        assert all(isinstance(v, str) for v in s.get("tags", {}).values()), "tags are strings"
        tags = s.get("tags", {})
        out.append({
            "trace_id": s["traceId"], "span_id": s["id"], "parent_id": s.get("parentId"),
            "name": s["name"], "kind": s["kind"], "start": s["timestamp"] * 1000,
            "end": (s["timestamp"] + s["duration"]) * 1000, "attrs": tags,
            "events": [a["value"] for a in s.get("annotations", [])],
            "error": "error" in tags,
            "resource": {"service.name": s["localEndpoint"]["serviceName"]},
            "remote": s.get("remoteEndpoint"),
        })
    return out


class _Collector:
    """The HTTP server both fakes share: records spans, misbehaves on cue."""

    path = "/"

    def __init__(self, tmp_dir=None):
        self.spans = []
        self.requests = []  # (path, content-type, content-encoding)
        self.headers = []  # each request's header fields, {lower-case name: value}
        self.lock = threading.Lock()
        self.status = None  # answer this status instead of accepting
        self.retry_after = None
        self.delay = 0.0  # stall each request this long
        self.reject = 0  # OTLP partial success: reject this many spans per request
        self.errors = []
        c = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                if c.delay:
                    time.sleep(c.delay)
                ctype = self.headers.get("Content-Type", "")
                enc = self.headers.get("Content-Encoding", "")
                with c.lock:
                    c.requests.append((self.path, ctype, enc))
                    c.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status, retry_after = c.status, c.retry_after
                if status:
                    body = b"busy"
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                try:
                    if enc == "gzip":
                        raw = gzip.decompress(raw)
                    code, ctype_out, body = c.receive(self.path, ctype, raw)
                except Exception as e:  # noqa: BLE001 - recorded, answered 400 as a collector does
                    with c.lock:
                        c.errors.append(repr(e))
                    code, ctype_out, body = 400, "text/plain", repr(e).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype_out)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"

    def add(self, spans):
        with self.lock:
            self.spans.extend(spans)

    def wait_spans(self, n, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"{len(self.spans)} spans arrived, wanted {n}; errors {self.errors}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeOTLP(_Collector):
    path = "/v1/traces"

    def __init__(self, tmp_dir):
        self.Request, self.Response = compile_protos(Path(tmp_dir) / "otlp_pb2")
        super().__init__(tmp_dir)

    def receive(self, path, ctype, raw):
        assert path == "/v1/traces", path
        if ctype == "application/x-protobuf":
            check_wire(raw)
            req = self.Request()
            req.ParseFromString(raw)
            spans = spans_from_proto(req)
            resp = self.Response()
            if self.reject:
                resp.partial_success.rejected_spans = min(self.reject, len(spans))
                resp.partial_success.error_message = "rejected by the fake"
            out = resp.SerializeToString(), "application/x-protobuf"
        elif ctype == "application/json":
            spans = spans_from_json(json.loads(raw))
            obj = {}
            if self.reject:
                obj = {"partialSuccess": {"rejectedSpans": str(min(self.reject, len(spans))),
                                          "errorMessage": "rejected by the fake"}}
            out = json.dumps(obj).encode(), "application/json"
        else:
            return 415, "text/plain", b"unsupported content type"
        self.add(spans[self.reject:] if self.reject else spans)
        return 200, out[1], out[0]


class FakeZipkin(_Collector):
    path = "/api/v2/spans"

    def receive(self, path, ctype, raw):
        assert path == "/api/v2/spans", path
        assert ctype == "application/json", ctype
        self.add(spans_from_zipkin(json.loads(raw)))
        return 202, "text/plain", b""
