# SPDX-License-Identifier: Apache-2.0
"""Peers for the interception tests, run inside the test's network namespaces:

    intercept_peers.py http HOST PORT      the iptables_app.py HTTP app, bound to HOST only
    intercept_peers.py greet HOST PORT     a server-first protocol (as SMTP): greets with the
                                           peer address it saw, then echoes lines ("250 ...")
    intercept_peers.py client HOST PORT [LINE]
                                           connects, reads the greeting without sending first,
                                           sends LINE and reads the answer; prints JSON with the
                                           greeting, the answer and the seconds the greeting took
"""
import json
import socket
import socketserver
import sys
import threading
import time

from iptables_app import DualStack, Handler, plain


def serve_greeter(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)

    def handle(c, addr):
        with c:
            c.sendall(f"220 hello {plain(addr[0])}\r\n".encode())
            for line in c.makefile("rb"):
                c.sendall(b"250 " + line)

    while True:
        c, addr = s.accept()
        threading.Thread(target=handle, args=(c, addr), daemon=True).start()


def client(host, port, line=None):
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    greeting = f.readline().decode()
    took = time.monotonic() - t0
    answer = ""
    if line:
        s.sendall(line.encode() + b"\r\n")
        answer = f.readline().decode()
    s.close()
    print(json.dumps({"greeting": greeting, "answer": answer, "seconds": took}))


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "http":
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET

        class One(DualStack):
            address_family = fam

            def server_bind(self):
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = "app", self.server_address[1]

        One((host, port), Handler).serve_forever()
    elif mode == "greet":
        serve_greeter(host, port)
    else:
        client(host, port, sys.argv[4] if len(sys.argv) > 4 else None)


if __name__ == "__main__":
    main()
