# SPDX-License-Identifier: Apache-2.0
"""fake_oidc: a fake OpenID Connect provider for the tests, written from OpenID Connect Core 1.0
(authorization code flow, 3.1; refreshing, 12) and Discovery 1.0 (4), with RFC 7636 (PKCE), RFC 6749
(client authentication, 2.3.1; the refresh_token grant, 6) and OpenID Connect RP-Initiated Logout
1.0.

- GET /.well-known/openid-configuration: the discovery document (issuer = the base URL).
- GET /jwks: the public keys.
- GET /authorize: "logs in" the test user self.user (no page) and redirects to redirect_uri with
  code and state; checks response_type=code, the client id, scope openid, and that a S256
  code_challenge is present.
- POST /token: checks client authentication (Basic with the id and secret form-urlencoded
  before base64, RFC 6749 2.3.1 and appendix B; or the form), then by grant_type:
  authorization_code: the code (once only: a replayed code is refused with invalid_grant), the
  redirect_uri sent with the authorize request, and the PKCE verifier; answers an access token
  and an ID token signed with the current key (PyJWT), and a refresh token when the scope asked
  for offline_access or `always_refresh` is set. refresh_token (RFC 6749 6): the refresh token
  must be one issued to this client and not revoked or already rotated (invalid_grant
  otherwise); answers a new access token, a new refresh token (the old one then refused:
  `rotate`), and an ID token of the same iss, sub and aud without nonce (Core 12.2) unless
  `refresh_id_token` is off.
- GET /logout (listed as end_session_endpoint when `end_session` is set): RP-Initiated Logout
  1.0 section 2: an id_token_hint must be an ID token this provider issued to the client
  (signature checked, expiry not), client_id must be its audience, post_logout_redirect_uri
  must be registered (`post_logout_uris`); then 302 to it with state, or a page.

Knobs the tests turn: user claims, `down` (every endpoint 503), `id_token_overrides` (claims
replaced in the next ID tokens: a wrong aud, nonce, exp), `sign_with` (another key),
`token_ttl` (ID and access token lifetime), `refresh_overrides` (claims of refreshed ID tokens),
`revoke_all()` (every refresh token refused), `token_delay` (seconds the token endpoint waits),
`refresh_token_size`.
"""
import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlencode, urlparse

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


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
        self.posts = 0
        self.token_delay = 0
        self.refresh_token_size = 43
        self.token_ttl = 300
        self.always_refresh = False
        self.rotate = True
        self.refresh_id_token = True
        self.refresh_overrides = {}
        self.refresh_tokens = {}  # token -> {"sub":..., "live": bool}
        self.refresh_requests = []
        self.token_auth = []  # the Authorization header of every token request
        self.end_session = False
        self.post_logout_uris = []
        self.logouts = []
        self.issued_id_tokens = []
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
                if u.path == "/logout" and outer.end_session:
                    return outer.logout(self, parse_qs(u.query))
                return self.send(404)

            def do_POST(self):  # noqa: N802
                outer.hits += 1
                outer.posts += 1
                if outer.down:
                    return self.send(503)
                time.sleep(outer.token_delay)
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
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"],
                **({"end_session_endpoint": f"{i}/logout"} if self.end_session else {})}

    def jwks(self):
        pub = self.key.public_key()
        rsa = "RSA" in type(pub).__name__
        d = json.loads((RSAAlgorithm if rsa else ECAlgorithm).to_jwk(pub))
        d["kid"] = self.kid
        d["use"] = "sig"
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
                            "challenge": one["code_challenge"], "issued": time.time(),
                            "scope": one["scope"].split()}
        loc = one["redirect_uri"] + "?" + urlencode({"code": code, "state": one["state"]})
        h.send(302, b"", headers=[("Location", loc)])

    def id_token(self, claims):
        key, kid = self.sign_with or (self.key, self.kid)
        alg = "RS256" if "RSA" in type(key).__name__ else "ES256"
        idt = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        self.issued_id_tokens.append(idt)
        return idt

    def new_refresh_token(self, sub):
        rt = secrets.token_urlsafe(self.refresh_token_size)[:self.refresh_token_size]
        self.refresh_tokens[rt] = {"sub": sub, "live": True}
        return rt

    def revoke_all(self):
        for v in self.refresh_tokens.values():
            v["live"] = False

    def token(self, authz, form):
        self.token_requests.append(form)
        self.token_auth.append(authz)
        one = {k: v[0] for k, v in form.items()}
        cid, sec = one.get("client_id"), one.get("client_secret")
        if authz and authz.startswith("Basic "):
            # RFC 6749 2.3.1: both are form-urlencoded, then joined by ':' and base64-encoded
            u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
            cid, sec = unquote_plus(u), unquote_plus(p)
        if cid != self.client_id or sec != self.client_secret:
            return 401, {"error": "invalid_client"}
        if one.get("grant_type") == "refresh_token":
            return self.refresh(one)
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
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now,
                  "exp": now + self.token_ttl, "nonce": c["nonce"], **self.user}
        claims.update(self.id_token_overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        doc = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
               "expires_in": self.token_ttl, "id_token": self.id_token(claims)}
        if "offline_access" in c["scope"] or self.always_refresh:
            doc["refresh_token"] = self.new_refresh_token(self.user["sub"])
        return 200, doc

    def refresh(self, one):
        self.refresh_requests.append(one)
        rt = self.refresh_tokens.get(one.get("refresh_token", ""))
        if not rt or not rt["live"]:
            return 400, {"error": "invalid_grant", "error_description": "refresh token"}
        now = int(time.time())
        doc = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
               "expires_in": self.token_ttl}
        if self.rotate:
            rt["live"] = False
            doc["refresh_token"] = self.new_refresh_token(rt["sub"])
        if self.refresh_id_token:
            claims = {"iss": self.issuer, "aud": self.client_id, "iat": now,
                      "exp": now + self.token_ttl, **self.user, "sub": rt["sub"]}
            claims.update(self.refresh_overrides)
            doc["id_token"] = self.id_token({k: v for k, v in claims.items() if v is not None})
        return 200, doc

    def logout(self, h, q):
        one = {k: v[0] for k, v in q.items()}
        self.logouts.append(one)
        hint = one.get("id_token_hint")
        if hint:
            try:
                claims = jwt.decode(hint, self.key.public_key(), algorithms=["RS256", "ES256"],
                                    audience=self.client_id, issuer=self.issuer,
                                    options={"verify_exp": False})
            except jwt.InvalidTokenError:
                return h.send(400, b'{"error":"invalid_request"}')
            if one.get("client_id") and one["client_id"] != claims["aud"]:
                return h.send(400, b'{"error":"invalid_request"}')
        target = one.get("post_logout_redirect_uri")
        if target is None:
            return h.send(200, b"signed out", ctype="text/plain")
        if target not in self.post_logout_uris:
            return h.send(400, b'{"error":"invalid_request","error_description":"uri"}')
        if "state" in one:
            target += ("&" if "?" in target else "?") + urlencode({"state": one["state"]})
        return h.send(302, b"", headers=[("Location", target)])
