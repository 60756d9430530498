#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sends a fixed number of HTTPS requests, for bench/tls_callgrind.sh: CONNS connections one after
another, PER keep-alive requests on each (PER 1: a full TLS handshake per request; sessions are
never resumed), each response read whole (Content-Length) before the next request. Exits non-zero
on any failure. Loopback only.
Usage: tls_requests.py PORT CONNS PER CAFILE
"""

import socket
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def main():
    port, conns, per, cafile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    for _ in range(conns):
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        for _ in range(per):
            sock.sendall(REQUEST)
            if not read_response(sock):
                sys.exit("tls_requests: a request failed")
        sock.close()


if __name__ == "__main__":
    main()
