# SPDX-License-Identifier: Apache-2.0
"""FakeVault: a small in-process stand-in for HashiCorp Vault, written from Vault's documented
HTTP API because Vault cannot run on these machines. It implements only what `sidecar secrets`
uses: token lookup-self and renew-self, AppRole and Kubernetes login, KV v1 and KV v2 reads,
dynamic database credentials with leases, and /sys/leases/renew, with TTLs short enough to test.
Every request is recorded for assertions."""
import itertools
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeVault:
    def __init__(self, token_ttl=3600, lease_ttl=3600, lease_max_ttl=36000, tls=None):
        self.tokens = {"root-token": {"ttl": token_ttl, "renewable": True, "policies": ["root"]}}
        self.approles = {}  # role_id -> secret_id
        self.k8s_roles = {}  # role -> expected jwt
        self.kv1 = {}  # "secret/foo" -> dict
        self.kv2 = {}  # "kv/foo" (mount/path) -> dict
        self.token_ttl = token_ttl
        self.lease_ttl = lease_ttl
        self.lease_max_ttl = lease_max_ttl
        self.leases = {}  # lease_id -> {"created", "expires"}
        self.namespace_seen = []
        self.requests = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.down = False
        fv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, obj=None):
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else {}
                with fv.lock:
                    fv.requests.append((method, self.path, self.headers.get("X-Vault-Token")))
                    if self.headers.get("X-Vault-Namespace"):
                        fv.namespace_seen.append(self.headers.get("X-Vault-Namespace"))
                    if fv.down:
                        return self._send(503, {"errors": ["Vault is sealed"]})
                    code, obj = fv.route(method, self.path, body, self.headers)
                self._send(code, obj)

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def do_PUT(self):  # noqa: N802
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.addr = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, method, path):
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def _new_token(self):
        tok = f"s.token{next(self.counter)}"
        self.tokens[tok] = {"ttl": self.token_ttl, "renewable": True, "policies": ["app"]}
        return {"auth": {"client_token": tok, "lease_duration": self.token_ttl,
                         "renewable": True, "policies": ["app"]}}

    def route(self, method, path, body, headers):
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        p = path[4:]
        if method == "POST" and p == "auth/approle/login":
            if self.approles.get(body.get("role_id")) == body.get("secret_id"):
                return 200, self._new_token()
            return 400, {"errors": ["invalid role or secret ID"]}
        if method == "POST" and p.startswith("auth/") and p.endswith("/login"):
            role = body.get("role")
            if role in self.k8s_roles and self.k8s_roles[role] == body.get("jwt"):
                return 200, self._new_token()
            return 403, {"errors": ["permission denied"]}
        tok = headers.get("X-Vault-Token")
        if tok not in self.tokens:
            return 403, {"errors": ["permission denied"]}
        if method == "GET" and p == "auth/token/lookup-self":
            t = self.tokens[tok]
            return 200, {"data": {"ttl": t["ttl"], "renewable": t["renewable"],
                                  "policies": t["policies"]}}
        if method in ("POST", "PUT") and p == "auth/token/renew-self":
            t = self.tokens[tok]
            return 200, {"auth": {"client_token": tok, "lease_duration": t["ttl"],
                                  "renewable": True, "policies": t["policies"]}}
        if method in ("POST", "PUT") and p == "sys/leases/renew":
            lease = self.leases.get(body.get("lease_id"))
            now = time.monotonic()
            if not lease or lease["expires"] < now:
                return 400, {"errors": ["lease not found or lease is not renewable"]}
            left_max = lease["created"] + self.lease_max_ttl - now
            ttl = int(min(body.get("increment") or self.lease_ttl, left_max))
            lease["expires"] = now + ttl
            return 200, {"lease_id": body["lease_id"], "renewable": True, "lease_duration": ttl}
        if method == "GET" and p.startswith("database/creds/"):
            n = next(self.counter)
            lid = f"{p}/lease{n}"
            now = time.monotonic()
            self.leases[lid] = {"created": now, "expires": now + self.lease_ttl}
            return 200, {"lease_id": lid, "renewable": True, "lease_duration": self.lease_ttl,
                         "data": {"username": f"v-app-{n}", "password": f"pw-{n}"}}
        if method == "GET" and p in self.kv1:
            return 200, {"lease_id": "", "renewable": False, "lease_duration": 2764800,
                         "data": self.kv1[p]}
        mount, _, rest = p.partition("/data/")
        if method == "GET" and rest and f"{mount}/{rest}" in self.kv2:
            return 200, {"lease_id": "", "renewable": False, "lease_duration": 0,
                         "data": {"data": self.kv2[f"{mount}/{rest}"],
                                  "metadata": {"version": 1}}}
        return 404, {"errors": []}
