# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: CUSTOM AuthorizationPolicies and the ext_authz HTTP contract, against
fake_oauth2_proxy (written here after oauth2-proxy's /oauth2/auth: 202 with X-Auth-Request-User
and -Email for a session cookie, 401 without). Requests a CUSTOM policy does not select never
reach the authorizer; a 2xx lets the request go upstream with the authorizer's named headers
replacing any the client sent; a 401 or a 302 to a login page goes back to the client with its
headers and body, and nothing reaches the application; a request body waits for the check and
arrives whole; an authorizer too slow or down denies (status_on_error) unless fail_open."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port
from proxy_util import Client, access_lines, echo, get, metric, proxy_config  # noqa: F401


class FakeOAuth2Proxy:
    """fake_oauth2_proxy: /oauth2/auth... answers 202 (cookie _oauth2_proxy=<user>) or 401;
    /oauth2/auth/app/login answers 302 to a login page; /oauth2/auth/app/slow sleeps."""

    def __init__(self):
        self.seen = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                outer.seen.append((self.command, self.path, dict(self.headers)))
                if not self.path.startswith("/oauth2/auth"):
                    return self.reply(404, {})
                if self.path.startswith("/oauth2/auth/app/slow"):
                    time.sleep(1.5)
                if self.path.startswith("/oauth2/auth/app/login"):
                    return self.reply(302, {"Location": "https://login.example/start?rd=/app",
                                            "Set-Cookie": "csrf=1; Path=/"}, b"go log in")
                cookie = self.headers.get("Cookie", "")
                user = [c.split("=", 1)[1] for c in cookie.split("; ")
                        if c.startswith("_oauth2_proxy=")]
                if user:
                    return self.reply(202, {"X-Auth-Request-User": user[0],
                                            "X-Auth-Request-Email": f"{user[0]}@example.com",
                                            "X-Internal": "not for upstream"})
                return self.reply(401, {"WWW-Authenticate": 'Bearer realm="oauth2"'},
                                  b"Unauthorized")

            def reply(self, status, headers, body=b""):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = handle_any

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def provider(port, **extra):
    return {"name": "oauth2", "service": "127.0.0.1", "port": port,
            "path_prefix": "/oauth2/auth", "timeout": "500ms",
            "include_request_headers_in_check": ["cookie"],
            "headers_to_upstream_on_allow": ["x-auth-request-user", "x-auth-request-email"],
            **extra}


def custom(paths):
    return [{"name": "ext", "action": "CUSTOM", "provider": "oauth2",
             "rules": [{"to": [{"operation": {"paths": paths}}]}]}]


def test_extauthz_oauth2_proxy_contract(sidecar_run, echo):
    fake = FakeOAuth2Proxy()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}", "routes": [{"name": "r",
                                                                      "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}],
        extension_providers=[provider(fake.port)],
        authorization=custom(["/app/*"]) + [{"name": "no-admin", "action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/app/admin"]}}]}]}]))
    # Not selected by the CUSTOM policy: no check at all.
    assert get(port, "/public").status == 200
    assert fake.seen == []
    # No session: oauth2-proxy's 401 reaches the client, the application sees nothing.
    r = get(port, "/app/x")
    assert r.status == 401 and r.body == b"Unauthorized"
    assert r.header("WWW-Authenticate") == 'Bearer realm="oauth2"'
    assert not [q for q in echo.requests if q.target.startswith("/app")]
    # A session: allowed, identity headers upstream (the client's own spelling dropped).
    r = get(port, "/app/x?y=1", headers=[("Cookie", "_oauth2_proxy=alice; other=1"),
                                         ("X-Auth-Request-User", "mallory")])
    assert r.status == 200
    seen = r.json()
    assert seen["target"] == "/app/x?y=1"
    users = [v for k, v in seen["headers"] if k.lower() == "x-auth-request-user"]
    assert users == ["alice"]
    assert ("x-auth-request-email", "alice@example.com") in \
        [(k.lower(), v) for k, v in seen["headers"]]
    assert not [k for k, _ in seen["headers"] if k.lower() == "x-internal"]
    method, path, headers = fake.seen[-1]
    assert method == "GET" and path == "/oauth2/auth/app/x?y=1"
    assert headers.get("Cookie") == "_oauth2_proxy=alice; other=1"
    # The check runs on the normalised path.
    r = get(port, "/public/../app/%78", headers=[("Cookie", "_oauth2_proxy=bob")])
    assert r.status == 200 and fake.seen[-1][1] == "/oauth2/auth/app/x"
    # A redirect to a login page goes back with its Location and cookie.
    r = get(port, "/app/login")
    assert r.status == 302
    assert r.header("Location") == "https://login.example/start?rd=/app"
    assert r.header("Set-Cookie") == "csrf=1; Path=/"
    # A request body waits for the check and arrives whole.
    c = Client(port)
    body = b"x" * 100000
    r = c.request("POST", "/app/upload", headers=[("Cookie", "_oauth2_proxy=alice")],
                  body=body)
    assert r.status == 200 and r.json()["body_len"] == len(body)
    # Keep-alive after a check: the next request on the same connection.
    r = c.request("GET", "/app/again", headers=[("Cookie", "_oauth2_proxy=alice")])
    assert r.status == 200
    c.close()
    # The authorizer's verdict comes first; when it allows, DENY policies still apply.
    assert get(port, "/app/admin").status == 401
    assert get(port, "/app/admin", headers=[("Cookie", "_oauth2_proxy=alice")]).status == 403
    # Too slow: denied (fail closed) with status_on_error.
    r = get(port, "/app/slow", headers=[("Cookie", "_oauth2_proxy=alice")])
    assert r.status == 403
    lines = access_lines(sc, 11)
    assert any(ln["flags"] == "UAEX" and ln["status"] == 403 for ln in lines)
    assert any(ln["flags"] == "UAEX" and ln["status"] == 401 for ln in lines)
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_ext_authz_total", provider="oauth2", result="allowed") == 5
    assert metric(m, "sidecar_ext_authz_total", provider="oauth2", result="denied") == 3
    assert metric(m, "sidecar_ext_authz_total", provider="oauth2", result="error") == 1
    fake.close()


def test_extauthz_down_fails_closed_or_open(sidecar_run, echo):
    dead = free_port()  # nothing listens there
    closed, open_ = free_port(), free_port()
    for port, extra in ((closed, {}), (open_, {"fail_open": True, "status_on_error": 503})):
        sidecar_run("proxy", config=proxy_config(
            [{"name": "in", "address": f"127.0.0.1:{port}",
              "routes": [{"name": "r", "cluster": "app"}]}],
            [{"name": "app", "endpoints": [echo.addr]}],
            extension_providers=[provider(dead, **extra)], authorization=custom(["*"])))
    assert get(closed, "/x").status == 403
    assert get(open_, "/x").status == 200


def test_extauthz_client_gone_while_checking(sidecar_run, echo):
    fake = FakeOAuth2Proxy()
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}", "routes": [{"name": "r",
                                                                      "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}],
        extension_providers=[provider(fake.port, timeout="3s")], authorization=custom(["/app/*"]),
        stream_idle_timeout="500ms"))
    for _ in range(3):
        c = Client(port)
        c.send(b"GET /app/slow HTTP/1.1\r\nHost: a\r\nCookie: _oauth2_proxy=x\r\n\r\n")
        time.sleep(0.1)
        c.close()  # gone while the check runs: it is cancelled with the exchange
    # A check outlived by the exchange (the stream idle timeout answers first) is cancelled.
    r = get(port, "/app/slow", headers=[("Cookie", "_oauth2_proxy=x")])
    assert r.status == 504
    time.sleep(2)
    assert get(port, "/public").status == 200
    assert json.loads(get(port, "/public").body)["target"] == "/public"
    assert sc.proc.poll() is None
    fake.close()
