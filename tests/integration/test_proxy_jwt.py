# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: RequestAuthentication (JWT) against tokens made with PyJWT and keys made with
openssl. A valid token passes with its identity (request principal iss/sub, claims usable in
`when`) and is not forwarded unless asked; the payload and claims go upstream in headers the
client cannot spoof; a missing token passes without identity unless an ALLOW policy requires
request_principals; an expired token, a wrong issuer or audience, `alg: none`, an HS256 token
signed with the RSA public key (key confusion) and a tampered payload are answered 401 with
WWW-Authenticate; RS256/RS512/PS256/ES256/ES384/EdDSA keys each verify their algorithm only; a
JWKS server (fake_jwks, written in the test) goes down and comes back: the last good keys keep
validating, and a rotated key's unknown kid triggers a refetch."""
import base64
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import free_port
from proxy_util import (access_lines, echo, get, metric,  # noqa: F401
                        proxy_config, wait_for)

ISS = "https://issuer.example"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Private keys made by the openssl CLI, by name."""
    d = tmp_path_factory.mktemp("jwtkeys")
    spec = {
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa2": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ec256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ed": ["-algorithm", "ED25519"],
    }
    out = {}
    for name, args in spec.items():
        path = d / f"{name}.pem"
        subprocess.run(["openssl", "genpkey", *args, "-out", str(path)], check=True,
                       capture_output=True)
        out[name] = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return out


def jwk(key, kid, alg=None):
    pub = key.public_key()
    name = type(pub).__name__
    if "RSA" in name:
        d = json.loads(RSAAlgorithm.to_jwk(pub))
    elif "Ed25519" in name:
        d = json.loads(OKPAlgorithm.to_jwk(pub))
    else:
        d = json.loads(ECAlgorithm.to_jwk(pub))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    return d


def token(key, alg="RS256", kid="k1", **claims):
    now = int(time.time())
    body = {"iss": ISS, "sub": "alice", "aud": "shop", "iat": now, "exp": now + 600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def bearer(t):
    return [("Authorization", f"Bearer {t}")]


def inbound(port):
    return {"name": "in", "address": f"127.0.0.1:{port}",
            "routes": [{"name": "r", "cluster": "app"}]}


def b64(d):
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_jwt_inline_and_policies(sidecar_run, echo, keys):
    port = free_port()
    jwks = json.dumps({"keys": [jwk(keys["rsa"], "k1")]})
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        request_authentication=[{"name": "jwt", "jwt_rules": [{
            "issuer": ISS, "audiences": ["shop", "other"], "jwks": jwks,
            "output_payload_to_header": "x-jwt-payload",
            "output_claim_to_headers": [{"header": "x-user", "claim": "sub"},
                                        {"header": "x-team", "claim": "org.team"}]}]}],
        authorization=[
            {"name": "need-token", "rules": [
                {"from": [{"source": {"request_principals": ["*"]}}],
                 "to": [{"operation": {"paths": ["/api/*"]}}]},
                {"to": [{"operation": {"not_paths": ["/api/*"]}}]}]},
            {"name": "admins", "action": "DENY", "rules": [
                {"to": [{"operation": {"paths": ["/api/admin*"]}}],
                 "when": [{"key": "request.auth.claims[groups]", "not_values": ["admin"]}]}]},
            {"name": "bob-out", "action": "DENY", "rules": [
                {"from": [{"source": {"request_principals": [f"{ISS}/bob"]}}]}]}]))
    good = token(keys["rsa"], groups=["dev"], org={"team": "pay"})
    r = get(port, "/api/x", headers=bearer(good) + [("X-User", "mallory"),
                                                    ("x-jwt-payload", "forged")])
    assert r.status == 200
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert "authorization" not in seen, "the token is not forwarded by default"
    assert seen["x-user"] == "alice" and seen["x-team"] == "pay"
    assert seen["x-jwt-payload"] == good.split(".")[1]
    assert [k for k, _ in r.json()["headers"]].count("x-user") + \
        [k for k, _ in r.json()["headers"]].count("X-User") == 1
    # The same token again: from the cache.
    assert get(port, "/api/x", headers=bearer(good)).status == 200
    # No token: no identity; the policy that needs one says no, the rest passes.
    assert get(port, "/api/x").status == 403
    assert get(port, "/public").status == 200
    # Claims in `when` and request principals.
    assert get(port, "/api/admin", headers=bearer(good)).status == 403
    admin = token(keys["rsa"], groups=["admin", "dev"])
    assert get(port, "/api/admin", headers=bearer(admin)).status == 200
    assert get(port, "/api/x", headers=bearer(token(keys["rsa"], sub="bob"))).status == 403
    # Invalid tokens: 401 with WWW-Authenticate, whatever the path.
    now = int(time.time())
    bad = {
        "expired": token(keys["rsa"], exp=now - 120),
        "not yet": token(keys["rsa"], nbf=now + 600),
        "issuer": token(keys["rsa"], iss="https://evil.example"),
        "audience": token(keys["rsa"], aud="elsewhere"),
        "kid": token(keys["rsa"], kid="nope"),
        "other key": token(keys["rsa2"]),
        "alg none": jwt.encode({"iss": ISS, "sub": "alice", "aud": "shop", "exp": now + 600},
                               None, algorithm="none"),
        "tampered": good.split(".")[0] + "." + b64({"iss": ISS, "sub": "root", "aud": "shop",
                                                   "exp": now + 600}) + "." + good.split(".")[2],
        "garbage": "a.b.c",
        "two parts": "abc.def",
    }
    # Key confusion: HS256 with the RSA public key's PEM as the HMAC secret.
    pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    hdr = b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    pl = b64({"iss": ISS, "sub": "alice", "aud": "shop", "exp": now + 600})
    import hmac, hashlib  # noqa: E401 - only here
    sig = base64.urlsafe_b64encode(hmac.new(pem, f"{hdr}.{pl}".encode(), hashlib.sha256)
                                   .digest()).rstrip(b"=").decode()
    bad["key confusion"] = f"{hdr}.{pl}.{sig}"
    for what, t in bad.items():
        r = get(port, "/public", headers=bearer(t))
        assert r.status == 401, what
        assert r.header("WWW-Authenticate").startswith("Bearer ") and \
            'error="invalid_token"' in r.header("WWW-Authenticate"), what
    # Within the clock skew (60 s) an expired token still passes.
    assert get(port, "/public", headers=bearer(token(keys["rsa"], exp=now - 20))).status == 200
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_jwt_authn_total", result="invalid") == len(bad)
    assert metric(m, "sidecar_jwt_authn_total", result="cached") >= 1
    assert metric(m, "sidecar_jwt_authn_total", result="missing") == 2
    assert not [q for q in echo.requests if q.target == "/public" and
                any(k.lower() == "authorization" for k, _ in q.headers)]
    lines = access_lines(sc, 8)
    assert any(ln["status"] == 401 for ln in lines)


def test_jwt_request_principal_in_access_log(sidecar_run, echo, keys):
    """The verified identity <iss>/<sub> is logged as request_principal, on the first request and
    on cache hits, JSON-escaped; a request without a token logs none."""
    port = free_port()
    jwks = json.dumps({"keys": [jwk(keys["rsa"], "k1")]})
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        request_authentication=[{"name": "jwt", "jwt_rules": [{"issuer": ISS, "jwks": jwks}]}]))
    alice = token(keys["rsa"])
    odd = token(keys["rsa"], sub='a "quoted" \\ sub')
    for path, hdrs in [("/one", bearer(alice)), ("/two", bearer(alice)), ("/none", []),
                       ("/odd", bearer(odd))]:
        assert get(port, path, headers=hdrs).status == 200
    lines = {ln["path"]: ln for ln in access_lines(sc, 4)}
    assert lines["/one"]["request_principal"] == f"{ISS}/alice"
    assert lines["/two"]["request_principal"] == f"{ISS}/alice"
    assert "request_principal" not in lines["/none"]
    assert lines["/odd"]["request_principal"] == f'{ISS}/a "quoted" \\ sub'


@pytest.mark.parametrize("name,alg", [("rsa", "RS256"), ("rsa", "RS512"), ("rsa", "PS256"),
                                      ("ec256", "ES256"), ("ec384", "ES384"), ("ed", "EdDSA")])
def test_jwt_algorithms_follow_the_key(sidecar_run, echo, keys, name, alg):
    port = free_port()
    jwks = json.dumps({"keys": [jwk(keys[name], "k1")]})
    sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        request_authentication=[{"name": "jwt", "jwt_rules": [{"issuer": ISS, "jwks": jwks}]}]))
    assert get(port, "/", headers=bearer(token(keys[name], alg=alg))).status == 200
    # The same key under another family's algorithm, or a key of another type: refused.
    others = {"RS256": ("ec256", "ES256"), "RS512": ("ed", "EdDSA"), "PS256": ("ec384", "ES384"),
              "ES256": ("ec384", "ES384"), "ES384": ("ec256", "ES256"), "EdDSA": ("rsa", "RS256")}
    on, oa = others[alg]
    assert get(port, "/", headers=bearer(token(keys[on], alg=oa))).status == 401


def test_jwt_locations_and_forwarding(sidecar_run, echo, keys):
    port = free_port()
    jwks = json.dumps({"keys": [jwk(keys["ec256"], "k1", alg="ES256")]})
    sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        request_authentication=[{"name": "jwt", "jwt_rules": [{
            "issuer": ISS, "jwks": jwks, "forward_original_token": True,
            "from_headers": [{"name": "x-token"}], "from_params": ["tok"],
            "from_cookies": ["session"]}]}],
        authorization=[{"name": "need", "rules": [
            {"from": [{"source": {"request_principals": [f"{ISS}/alice"]}}]}]}]))
    t = token(keys["ec256"], alg="ES256")
    r = get(port, "/", headers=[("x-token", t)])
    assert r.status == 200
    assert dict((k.lower(), v) for k, v in r.json()["headers"])["x-token"] == t
    assert get(port, f"/?a=1&tok={t}").status == 200
    assert get(port, "/", headers=[("Cookie", f"a=b; session={t}")]).status == 200
    # Authorization: Bearer is not a location of this rule: no identity.
    assert get(port, "/", headers=bearer(t)).status == 403


class FakeJWKS:
    """fake_jwks: serves a JWKS document at /jwks.json the test can change, fail or stop."""

    def __init__(self, doc):
        self.doc = doc
        self.fail = False
        self.hits = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.hits += 1
                if outer.fail or self.path != "/jwks.json":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(outer.doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/jwks.json"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_jwt_jwks_uri_down_keeps_last_good_and_rotates(sidecar_run, echo, keys):
    fake = FakeJWKS({"keys": [jwk(keys["rsa"], "k1")]})
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [inbound(port)], [{"name": "app", "endpoints": [echo.addr]}],
        jwks_refresh_interval="1s", jwt_cache_entries=0,
        request_authentication=[{"name": "jwt", "jwt_rules": [
            {"issuer": ISS, "jwks_uri": fake.url}]}]))
    assert wait_for(lambda: get(port, "/", headers=bearer(token(keys["rsa"]))).status == 200)
    # The JWKS server fails: refreshes fail, the last good keys keep validating (new tokens too:
    # the cache is off, every request verifies).
    fake.fail = True
    hits = fake.hits
    assert wait_for(lambda: fake.hits >= hits + 2, timeout=20)
    for _ in range(3):
        assert get(port, "/", headers=bearer(token(keys["rsa"]))).status == 200
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_jwks_fetches_total", uri=fake.url, result="failure") >= 1
    # It comes back with a rotated key: a token naming the new kid triggers a fetch.
    fake.doc = {"keys": [jwk(keys["rsa"], "k1"), jwk(keys["ec256"], "k2")]}
    fake.fail = False
    assert wait_for(lambda: get(port, "/", headers=bearer(
        token(keys["ec256"], alg="ES256", kid="k2"))).status == 200, timeout=20)
    assert get(port, "/", headers=bearer(token(keys["rsa"]))).status == 200
    fake.close()


def test_jwt_config_errors(run_cli, tmp_path):
    bad = [
        {"request_authentication": [{"name": "a", "jwt_rules": [{"issuer": ISS}]}]},
        {"request_authentication": [{"name": "a", "jwt_rules": [
            {"issuer": ISS, "jwks": '{"keys": []}'}]}]},
        {"request_authentication": [{"name": "a", "jwt_rules": [
            {"issuer": ISS, "jwks_uri": "ftp://x/jwks"}]}]},
        {"request_authentication": [{"name": "a", "jwt_rules": [
            {"issuer": ISS, "jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}]}]},
    ]
    for i, doc in enumerate(bad):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(json.dumps(doc) + "\n")
        r = run_cli("proxy", "-c", str(p), "--check")
        assert r.returncode != 0 and "request_authentication" in r.stderr, (doc, r.stderr)
