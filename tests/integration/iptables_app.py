# SPDX-License-Identifier: Apache-2.0
"""A plain HTTP app for the interception tests (the pod's application and the server behind it):
answers every GET with JSON naming the peer address it saw, the local address and port it was
reached on, and the request headers, so a test can tell a connection that came through the proxy
(peer 127.0.0.1, a Via header) from one that did not. Listens on every port given, IPv4 and IPv6.
GET /call/HOST:PORT/PATH makes the app itself call http://HOST:PORT/PATH (the pod's own outbound
request) and adds that answer as "upstream".

    iptables_app.py PORT [PORT...]
"""
import http.client
import json
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def plain(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        local = self.connection.getsockname()
        answer = {
            "peer": plain(self.client_address[0]),
            "local": plain(local[0]),
            "port": local[1],
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        if self.path.startswith("/call/"):
            hostport, _, path = self.path[6:].partition("/")
            host, _, port = hostport.rpartition(":")
            c = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
            c.request("GET", "/" + path)
            r = c.getresponse()
            answer["upstream"] = {"status": r.status, "body": json.loads(r.read() or b"null")}
            c.close()
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # TCPServer's bind, not HTTPServer's: that one looks up the host's FQDN, which can stall
        # in a namespace with no resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "app", self.server_address[1]


def main():
    servers = [DualStack(("::", int(p)), Handler) for p in sys.argv[1:]]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("listening", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
