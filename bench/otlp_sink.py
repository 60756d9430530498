# SPDX-License-Identifier: Apache-2.0
"""A local trace receiver for bench/callgrind.sh's tracing modes: answers every POST (OTLP/HTTP
/v1/traces) with 200 and an empty ExportTraceServiceResponse, and GET with the body bench/lib.sh's
wait_url waits for (readiness), so the
proxy's exporter pays its whole cost (encoding, sending, reading the answer) without a collector.
Usage: python3 bench/otlp_sink.py PORT"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _ok(self, ctype, body=b""):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._ok("application/x-protobuf")

    def do_GET(self):  # noqa: N802
        self._ok("text/plain", b"Hello, World!")


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
