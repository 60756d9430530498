# SPDX-License-Identifier: Apache-2.0
"""fake_oidc: a fake OpenID Connect provider for the tests, written from OpenID Connect Core 1.0
(authorization code flow, 3.1) and Discovery 1.0 (4), with RFC 7636 (PKCE) and RFC 6749 (client
authentication, 2.3.1).

- GET /.well-known/openid-configuration: the discovery document (issuer = the base URL).
- GET /jwks: the public keys.
- GET /authorize: "logs in" the test user self.user (no page) and redirects to redirect_uri with
  code and state; checks response_type=code, the client id, scope openid, and that a S256
  code_challenge is present.
- POST /token: checks grant_type, client authentication (Basic or form), the code (once only:
  a replayed code is refused with invalid_grant), the redirect_uri sent with the authorize
  request, and the PKCE verifier; answers an ID token signed with the current key (PyJWT).

Knobs the tests turn: user claims, `down` (every endpoint 503), `id_token_overrides` (claims
replaced in the next ID tokens: a wrong aud, nonce, exp), `sign_with` (another key).
"""
import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from jwt.algorithms import RSAAlgorithm


class FakeOIDC:
    def __init__(self, key, kid="k1", client_id="app", client_secret="s3cret"):
        self.key = key
        self.kid = kid
        self.sign_with = None  # (key, kid) to sign with instead: a key the JWKS does not hold
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = {"sub": "u-1", "email": "alice@example.com", "email_verified": True,
                     "preferred_username": "alice", "groups": ["dev", "ops"]}
        self.id_token_overrides = {}
        self.down = False
        self.codes = {}
        self.used = set()
        self.token_requests = []
        self.hits = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send(self, status, body=b"", ctype="application/json", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server's name
                outer.hits += 1
                if outer.down:
                    return self.send(503)
                u = urlparse(self.path)
                if u.path == "/.well-known/openid-configuration":
                    return self.send(200, json.dumps(outer.discovery()).encode())
                if u.path == "/jwks":
                    return self.send(200, json.dumps(outer.jwks()).encode())
                if u.path == "/authorize":
                    return outer.authorize(self, parse_qs(u.query))
                return self.send(404)

            def do_POST(self):  # noqa: N802
                outer.hits += 1
                if outer.down:
                    return self.send(503)
                n = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(n).decode())
                if urlparse(self.path).path != "/token":
                    return self.send(404)
                status, doc = outer.token(self.headers.get("Authorization"), form)
                return self.send(status, json.dumps(doc).encode(),
                                 headers=[("Cache-Control", "no-store")])

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.issuer = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()

    def discovery(self):
        i = self.issuer
        return {"issuer": i, "authorization_endpoint": f"{i}/authorize",
                "token_endpoint": f"{i}/token", "jwks_uri": f"{i}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"]}

    def jwks(self):
        d = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        d["kid"] = self.kid
        return {"keys": [d]}

    def authorize(self, h, q):
        one = {k: v[0] for k, v in q.items()}
        if one.get("response_type") != "code" or one.get("client_id") != self.client_id or \
                "openid" not in one.get("scope", "").split() or \
                one.get("code_challenge_method") != "S256" or not one.get("code_challenge") or \
                not one.get("redirect_uri") or not one.get("state"):
            return h.send(400, b'{"error":"invalid_request"}')
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"redirect_uri": one["redirect_uri"], "nonce": one.get("nonce"),
                            "challenge": one["code_challenge"], "issued": time.time()}
        loc = one["redirect_uri"] + "?" + urlencode({"code": code, "state": one["state"]})
        h.send(302, b"", headers=[("Location", loc)])

    def token(self, authz, form):
        self.token_requests.append(form)
        one = {k: v[0] for k, v in form.items()}
        cid, sec = one.get("client_id"), one.get("client_secret")
        if authz and authz.startswith("Basic "):
            cid, _, sec = base64.b64decode(authz[6:]).decode().partition(":")
        if cid != self.client_id or sec != self.client_secret:
            return 401, {"error": "invalid_client"}
        if one.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        code = one.get("code")
        c = self.codes.get(code)
        if not c or code in self.used or time.time() - c["issued"] > 60:
            return 400, {"error": "invalid_grant"}
        self.used.add(code)
        if one.get("redirect_uri") != c["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        v = one.get("code_verifier", "")
        ch = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
        if ch != c["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": c["nonce"], **self.user}
        claims.update(self.id_token_overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key, kid = self.sign_with or (self.key, self.kid)
        alg = "RS256" if "RSA" in type(key).__name__ else "ES256"
        idt = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        return 200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                     "expires_in": 300, "id_token": idt}
