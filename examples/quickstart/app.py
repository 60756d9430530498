#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The quickstart's demo application: a tiny HTTP service.

GET /            a greeting with the request id the proxy assigned
GET /slow?ms=N   answers after N milliseconds
GET /flaky       fails with 503 every other request (to watch retries)
GET /metrics     its own Prometheus metrics
Every request is logged as one JSON line to $LOG_FILE (default: stdout).
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
COUNTS = {}
FLAKY = [0]
LOG = open(os.environ["LOG_FILE"], "a", buffering=1) if os.environ.get("LOG_FILE") else sys.stdout


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body, ctype="text/plain; charset=utf-8"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with LOCK:
            COUNTS[status] = COUNTS.get(status, 0) + 1
        LOG.write(json.dumps({"ts": time.time(), "level": "info", "method": self.command,
                              "path": self.path, "status": status,
                              "request_id": self.headers.get("X-Request-Id")}) + "\n")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            rid = self.headers.get("X-Request-Id", "none")
            self.reply(200, f"hello from the demo app (request id {rid})\n")
        elif url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["500"])[0])
            time.sleep(ms / 1000)
            self.reply(200, f"slept {ms} ms\n")
        elif url.path == "/flaky":
            with LOCK:
                FLAKY[0] += 1
                fail = FLAKY[0] % 2 == 1
            self.reply(503 if fail else 200, "flaky: failed\n" if fail else "flaky: ok\n")
        elif url.path == "/metrics":
            with LOCK:
                lines = ["# HELP demo_requests_total Requests answered by status.",
                         "# TYPE demo_requests_total counter"]
                lines += [f'demo_requests_total{{code="{c}"}} {n}' for c, n in sorted(COUNTS.items())]
            self.reply(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
        else:
            self.reply(404, "not found\n")

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    host, port = os.environ.get("LISTEN", "127.0.0.1:8080").rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
