# SPDX-License-Identifier: Apache-2.0
"""Resident memory of `sidecar proxy` with a full span queue: the proxy traces every request
(sampling 100) to a collector that accepts connections and never answers (a listening socket
nobody accepts on), so spans pile up until max_queue_size and the oldest are dropped. Prints
VmRSS after start-up, after N requests with tracing off, and after N requests with the queue
full, for the default max_queue_size (2048) and a larger one. The upstream is a small Python
server; only the proxy's memory is read (/proc/PID/status).
Usage: python3 bench/trace_rss.py SIDECAR_BINARY [REQUESTS]"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Up(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        # One write: headers and body apart would wait on delayed ACKs (40 ms a request).
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(binary, n, tracing):
    up = ThreadingHTTPServer(("127.0.0.1", 0), Up)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(1024)  # never accepted: exports hang until their timeout
    port, admin = free_port(), free_port()
    cfg = {"listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                          "routes": [{"name": "r", "cluster": "app"}]}],
           "clusters": [{"name": "app", "endpoints": [f"127.0.0.1:{up.server_address[1]}"]}],
           "access_log": "off"}
    if tracing:
        cfg["tracing"] = dict(tracing, endpoint=f"http://127.0.0.1:{stall.getsockname()[1]}/v1/traces")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(cfg, f)
    p = subprocess.Popen([binary, "proxy", "-c", f.name, "--admin", f"127.0.0.1:{admin}",
                          "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        start = rss_kib(p.pid)
        for i in range(n):
            if i % 1000 == 0:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/")
            c.getresponse().read()
        time.sleep(0.5)
        return start, rss_kib(p.pid)
    finally:
        p.terminate()
        p.wait()
        os.unlink(f.name)
        up.shutdown()
        stall.close()


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    print(f"{n} requests (1,000 per keep-alive connection) through `sidecar proxy` (one worker); VmRSS in KiB")
    print("| case | after start | after the requests |")
    print("| --- | ---: | ---: |")
    for name, tracing in [("tracing off", None),
                          ("100% sampled, collector stalled, max_queue_size 2048 (default)",
                           {"provider": "otlp_http", "sampling": 100}),
                          ("100% sampled, collector stalled, max_queue_size 500",
                           {"provider": "otlp_http", "sampling": 100, "max_queue_size": 500})]:
        a, b = run(binary, n, tracing)
        print(f"| {name} | {a} | {b} |")


main()
