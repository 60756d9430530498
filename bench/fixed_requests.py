#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sends exactly CONNS * PER keep-alive GETs through a proxy, one in flight per connection, for
bench/callgrind.sh: a fixed request count (wrk's runs are timed) makes instruction counts
comparable between builds. Expects the bench upstream's fixed body. Loopback only.
Usage: fixed_requests.py PORT CONNS PER   (prints the number of responses)
Environment: FR_HEADER, one more header line for every request ("Authorization: Bearer ...").
"""
import os
import selectors
import socket
import sys

BODY = b"Hello, World!"


def main():
    port, conns, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    extra = os.environ.get("FR_HEADER", "")
    extra = f"{extra}\r\n" if extra else ""
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    sel = selectors.DefaultSelector()
    left = {}
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.send(req)
        left[s] = [per, b""]
        sel.register(s, selectors.EVENT_READ)
    done = 0
    while left:
        for key, _ in sel.select(timeout=30):
            s = key.fileobj
            st = left[s]
            d = s.recv(65536)
            if not d:
                sys.exit(f"connection closed after {done} responses")
            st[1] += d
            while BODY in st[1]:
                st[1] = st[1][st[1].index(BODY) + len(BODY):]
                st[0] -= 1
                done += 1
                if st[0] > 0:
                    s.send(req)
                    continue
                sel.unregister(s)
                s.close()
                del left[s]
                break
    print(done)


if __name__ == "__main__":
    main()
