#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Holds N idle keep-alive HTTP/1.1 client connections open through a proxy, for bench/proxy.sh
and (over TLS) bench/tls.sh.

Opens the connections one after another (so no listen backlog overflows), sends one GET on each
and reads the whole response, then prints "ready OK FAILED" and keeps every connection open
until it is terminated. The caller reads the proxy's RSS while this sleeps. Loopback only.
With --tls each connection is a TLS one (SNI localhost, whatever version and group the server
picks, the certificate not verified: only the server's memory is measured), with a full
handshake each (no session is offered again).
Usage: idle_conns.py PORT N [--tls]
"""

import signal
import socket
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-conns\r\n\r\n"


def read_response(sock):
    """Reads one response: headers, then a Content-Length or chunked body. Returns True on 2xx."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status_ok = lines[0].split(b" ")[1].startswith(b"2")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"content-length" in headers:
        want = int(headers[b"content-length"])
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            body += chunk
    elif headers.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            body += chunk
    return status_ok


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    ctx = tls_context() if sys.argv[3:4] == ["--tls"] else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held, failed = [], 0
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname="localhost")
            sock.sendall(REQUEST)
            if read_response(sock):
                held.append(sock)
            else:
                failed += 1
                sock.close()
        except OSError:
            failed += 1
    print(f"ready {len(held)} {failed}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
