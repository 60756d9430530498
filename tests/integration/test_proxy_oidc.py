# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: OpenID Connect login in front of the app, against fake_oidc (a provider written
from OpenID Connect Core and Discovery, tokens signed by PyJWT with keys made by openssl) and the
echo upstream. A cookie-keeping client (requests.Session) walks the whole flow: redirect with PKCE,
callback, code exchange, ID token checks, session cookie; identity reaches the app in
X-Auth-Request-* headers (the client's copies dropped) and the proxy's cookies never do. Refused:
wrong state, replayed code, wrong nonce / audience / issuer, expired ID token, a signature by a key
the JWKS does not hold, a tampered cookie, users outside allowed_emails/domains/groups. Skip paths
match the normalised path only; sign-out redirects only to local paths; the provider down keeps
sessions working and answers new logins 502."""
import subprocess
import time
from urllib.parse import parse_qs, quote, urlparse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from conftest import free_port
from fake_oidc import FakeOIDC
from proxy_util import echo, get, metric, proxy_config, wait_for  # noqa: F401

HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("oidckeys")
    out = []
    for i in range(2):
        path = d / f"rsa{i}.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(path)], check=True,
                       capture_output=True)
        out.append(serialization.load_pem_private_key(path.read_bytes(), password=None))
    return out


@pytest.fixture
def idp(rsa_keys):
    f = FakeOIDC(rsa_keys[0])
    yield f
    f.close()


def start(sidecar_run, echo, idp, tmp_path, extra=None, **oidc):  # noqa: F811
    port = free_port()
    secret = tmp_path / "client_secret"
    secret.write_text("s3cret\n")
    cfg = {"issuer": idp.issuer, "client_id": "app", "client_secret_file": str(secret),
           "cookie_secure": False, "discovery_refresh": "10s", **oidc}
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}], oidc=cfg, **(extra or {})))
    return sc, port


def login(port, path="/app?x=1", check=True):
    """Walks the flow with a cookie jar; returns (session, last response)."""
    s = requests.Session()
    r = s.get(f"http://127.0.0.1:{port}{path}", headers=HTML, timeout=10)
    if check:
        assert r.status_code == 200, r.text
    return s, r


def upstream_headers(r):
    return {k.lower(): v for k, v in r.json()["headers"]}


def wait_discovered(port):
    assert wait_for(lambda: get(port, "/", headers=[("Accept", "text/html")]).status == 302,
                    timeout=15)


def test_oidc_login_round_trip(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    wait_discovered(port)
    # The redirect: the provider's endpoint, PKCE S256, state and nonce, a pre-login cookie.
    r = get(port, "/app?x=1", headers=[("Accept", "text/html")])
    assert r.status == 302
    loc = urlparse(r.header("Location"))
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{idp.issuer}/authorize"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["scope"] == "openid email profile" and q["client_id"] == "app"
    assert q["redirect_uri"] == "http://test/oauth2/callback"  # the request's Host
    assert q["state"] and q["nonce"] and q["state"] != q["nonce"]
    pre = r.header("Set-Cookie")
    assert pre.startswith("_sidecar_oidc_csrf=") and "HttpOnly" in pre and "SameSite=Lax" in pre
    # An API call without a session: 401, no redirect.
    assert get(port, "/api", headers=[("Accept", "application/json")]).status == 401
    assert get(port, "/api", headers=[("Accept", "text/html"),
                                      ("X-Requested-With", "XMLHttpRequest")]).status == 401
    # The whole flow with a cookie jar ends at the original URL with the identity upstream.
    s, r = login(port)
    assert r.json()["target"] == "/app?x=1"
    assert len(r.history) == 3  # to the provider, back to the callback, to the app
    cookie = s.cookies.get("_sidecar_oidc")
    assert cookie and len(cookie) < 1024, len(cookie or "")
    assert "_sidecar_oidc_csrf" not in s.cookies  # cleared by the callback
    assert metric(sc.get("/metrics")[1].decode(), "sidecar_oidc_sessions_active") == 1
    # The code was exchanged with Basic client authentication and the PKCE verifier.
    form = idp.token_requests[-1]
    assert "client_secret" not in form and len(form["code_verifier"][0]) == 43
    # Identity headers, the client's forged copies dropped, the proxy's cookie removed, others
    # kept.
    r = s.get(f"http://127.0.0.1:{port}/page", headers={
        "X-Auth-Request-User": "mallory", "X-Auth-Request-Email": "m@evil",
        "X-Auth-Request-Groups": "admin"}, cookies={"theme": "dark"}, timeout=10)
    h = upstream_headers(r)
    assert h["x-auth-request-user"] == "u-1"
    assert h["x-auth-request-email"] == "alice@example.com"
    assert h["x-auth-request-groups"] == "dev,ops"
    assert h["x-auth-request-preferred-username"] == "alice"
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-auth-request-user"] == ["u-1"]
    assert "_sidecar_oidc" not in h.get("cookie", "") and "theme=dark" in h.get("cookie", "")
    assert "authorization" not in h
    # oauth2-proxy's /oauth2/auth: 202 with the identity, 401 without a session.
    r = s.get(f"http://127.0.0.1:{port}/oauth2/auth", timeout=10)
    assert r.status_code == 202 and r.headers["X-Auth-Request-Email"] == "alice@example.com"
    assert get(port, "/oauth2/auth").status == 401
    # Sign-out clears the cookie; a foreign rd is replaced by /.
    r = s.get(f"http://127.0.0.1:{port}/oauth2/sign_out?rd=//evil.example/x",
              allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert "_sidecar_oidc=;" in r.headers["Set-Cookie"] and "Max-Age=0" in r.headers["Set-Cookie"]
    assert s.get(f"http://127.0.0.1:{port}/api", timeout=10).status_code == 401
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_sessions_active") == 0
    assert metric(m, "sidecar_oidc_logins_total", result="success") == 1
    assert metric(m, "sidecar_oidc_sessions_total", reason="valid") >= 2
    assert metric(m, "sidecar_oidc_discovery_fetches_total", issuer=idp.issuer,
                  result="success") >= 1


def callback_url(port, s, path="/"):
    """Starts a login with <s> and returns the callback URL the provider redirects to."""
    r = s.get(f"http://127.0.0.1:{port}{path}", headers=HTML, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    r = s.get(r.headers["Location"], allow_redirects=False, timeout=10)
    assert r.status_code == 302
    return r.headers["Location"]


def test_oidc_callback_refusals(sidecar_run, echo, idp, tmp_path, rsa_keys):  # noqa: F811
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    wait_discovered(port)
    # A state that is not this browser's.
    s = requests.Session()
    cb = callback_url(port, s)
    u = urlparse(cb)
    q = parse_qs(u.query)
    bad = f"{cb.split('?')[0]}?code={q['code'][0]}&state=forged"
    assert s.get(bad, allow_redirects=False, timeout=10).status_code == 403
    # No pre-login cookie at all (another browser).
    assert requests.get(cb, allow_redirects=False, timeout=10).status_code == 403
    # A code used twice: the provider refuses the second exchange.
    s = requests.Session()
    cb = callback_url(port, s)
    jar = dict(s.cookies)
    r = s.get(cb, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    r = requests.get(cb, cookies=jar, allow_redirects=False, timeout=10)
    assert r.status_code == 403
    # ID tokens the provider signs wrongly.
    for override in [{"nonce": "other"}, {"aud": "another-client"},
                     {"aud": ["app", "x"]},  # several audiences without azp
                     {"azp": "x"}, {"iss": "https://evil.example"},
                     {"exp": int(time.time()) - 3600}, {"sub": None},
                     {"preferred_username": "x\r\nX-Injected: 1"}]:
        idp.id_token_overrides = override
        s = requests.Session()
        r = s.get(callback_url(port, s), allow_redirects=False, timeout=10)
        assert r.status_code == 403, override
        assert "_sidecar_oidc" not in s.cookies, override
    idp.id_token_overrides = {}
    idp.sign_with = (rsa_keys[1], "k1")
    s = requests.Session()
    assert s.get(callback_url(port, s), allow_redirects=False, timeout=10).status_code == 403
    idp.sign_with = None
    # A tampered session cookie is no session.
    s, _ = login(port)
    c = s.cookies.get("_sidecar_oidc")
    flipped = c[:20] + ("A" if c[20] != "A" else "B") + c[21:]
    r = requests.get(f"http://127.0.0.1:{port}/api", cookies={"_sidecar_oidc": flipped},
                     timeout=10)
    assert r.status_code == 401
    # The pre-login cookie is not a session (its own associated name).
    s2 = requests.Session()
    s2.get(f"http://127.0.0.1:{port}/", headers=HTML, allow_redirects=False, timeout=10)
    pre = s2.cookies.get("_sidecar_oidc_csrf")
    assert requests.get(f"http://127.0.0.1:{port}/api", cookies={"_sidecar_oidc": pre},
                        timeout=10).status_code == 401
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_logins_total", result="state") >= 2
    assert metric(m, "sidecar_oidc_logins_total", result="token") >= 1
    assert metric(m, "sidecar_oidc_logins_total", result="id_token") >= 8
    assert metric(m, "sidecar_oidc_sessions_total", reason="invalid") >= 2


@pytest.mark.parametrize("policy,user,ok", [
    ({"allowed_emails": ["alice@example.com"]}, {}, True),
    ({"allowed_emails": ["bob@example.com"]}, {}, False),
    ({"allowed_domains": ["example.com"]}, {}, True),
    ({"allowed_domains": ["example.org"]}, {}, False),
    ({"allowed_domains": ["example.com"]}, {"email_verified": False}, False),
    ({"allowed_groups": ["ops"]}, {}, True),
    ({"allowed_groups": ["admin"]}, {}, False),
    ({"allowed_groups": ["admin"], "groups_claim": "roles"}, {"roles": "admin"}, True),
])
def test_oidc_allowed_users(sidecar_run, echo, idp, tmp_path, policy, user, ok):  # noqa: F811
    idp.user.update(user)
    sc, port = start(sidecar_run, echo, idp, tmp_path, **policy)
    wait_discovered(port)
    s, r = login(port, check=False)
    assert (r.status_code == 200) == ok, r.text
    if not ok:
        assert r.status_code == 403
        m = sc.get("/metrics")[1].decode()
        assert metric(m, "sidecar_oidc_logins_total", result="denied") == 1


def test_oidc_skip_paths_and_redirect_targets(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    sc, port = start(sidecar_run, echo, idp, tmp_path, skip=["/healthz", "/public/*"])
    wait_discovered(port)
    assert get(port, "/healthz").status == 200
    assert get(port, "/public/a.css").status == 200
    assert get(port, "//public/./a.css").status == 200  # normalised first
    # A query naming a skip path skips nothing; neither do look-alike paths.
    for p in ["/private?x=/healthz", "/private?/public/x", "/healthz2", "/publicx",
              "/public/../private", "/%2e%2e/private"]:
        st = get(port, p).status
        assert st in (401, 400), (p, st)
    # Forged identity headers are dropped on skipped paths too.
    r = get(port, "/healthz", headers=[("X-Auth-Request-User", "mallory")])
    assert "x-auth-request-user" not in upstream_headers(r)
    # Sign-out redirect targets: only paths of this origin.
    for rd, want in [("/after", "/after"), ("//evil.example", "/"), ("/\\evil.example", "/"),
                     ("https://evil.example/", "/"), ("/%09/evil.example", "/%09/evil.example"),
                     ("javascript:alert(1)", "/"), ("/\t/evil.example", "/")]:
        r = get(port, "/oauth2/sign_out?rd=" + quote(rd, safe=""))
        assert r.status == 302 and r.header("Location") == want, (rd, r.header("Location"))
    # A login started from a target keeps it as a local path.
    s, r = login(port, "/deep/path?a=b&c=d")
    assert r.json()["target"] == "/deep/path?a=b&c=d"


def test_oidc_identity_for_authorization_policies(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    sc, port = start(sidecar_run, echo, idp, tmp_path, extra={"authorization": [
        {"name": "admins", "action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/admin*"]}}],
             "when": [{"key": "request.auth.claims[groups]", "not_values": ["admin"]}]}]},
        {"name": "who", "rules": [
            {"from": [{"source": {"request_principals": [f"{idp.issuer}/u-1"]}}]},
            {"to": [{"operation": {"paths": ["/oauth2/*"]}}]}]}]})
    wait_discovered(port)
    s, _ = login(port, "/")
    assert s.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 200
    assert s.get(f"http://127.0.0.1:{port}/admin", timeout=10).status_code == 403
    idp.user.update(sub="u-2", groups=["admin"])
    s2, _ = login(port, "/oauth2/x", check=False)
    # Another user: in the admin group but not the allowed principal.
    assert s2.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 403
    idp.user.update(sub="u-1")
    s3, r = login(port, "/admin")
    assert r.json()["target"] == "/admin"


def test_oidc_provider_down(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    wait_discovered(port)
    s, _ = login(port)
    idp.down = True
    hits = idp.hits
    assert wait_for(lambda: idp.hits > hits, timeout=20)  # a refresh failed
    # The session keeps working; a new login still starts (the last good document) and its
    # callback fails with 502.
    assert s.get(f"http://127.0.0.1:{port}/x", timeout=10).status_code == 200
    s2 = requests.Session()
    r = s2.get(f"http://127.0.0.1:{port}/", headers=HTML, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    idp.down = False
    cb = s2.get(r.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    idp.down = True
    r = s2.get(cb, allow_redirects=False, timeout=10)
    assert r.status_code == 502 and b"try again" in r.content
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_discovery_fetches_total", issuer=idp.issuer,
                  result="failure") >= 1
    assert metric(m, "sidecar_oidc_logins_total", result="provider") == 1


def test_oidc_provider_down_from_the_start(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    idp.down = True
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    r = get(port, "/", headers=[("Accept", "text/html")])
    assert r.status == 502 and b"identity provider is unavailable" in r.body
    idp.down = False
    wait_discovered(port)  # the retry finds it


def test_oidc_client_secret_post_and_key_rotation(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    k1.write_text("11" * 32 + "\n")
    k2.write_bytes(b"B" * 32)
    sc, port = start(sidecar_run, echo, idp, tmp_path, token_auth_method="client_secret_post",
                     cookie_secret_file=str(k1))
    wait_discovered(port)
    s, _ = login(port)
    assert idp.token_requests[-1]["client_secret"] == ["s3cret"]
    cookie = s.cookies.get("_sidecar_oidc")
    sc.stop()
    # The key rotates: a session sealed with the previous key is still accepted...
    sc, port2 = start(sidecar_run, echo, idp, tmp_path, cookie_secret_file=str(k2),
                      cookie_secret_previous_file=str(k1))
    wait_discovered(port2)
    r = requests.get(f"http://127.0.0.1:{port2}/x", cookies={"_sidecar_oidc": cookie},
                     timeout=10)
    assert r.status_code == 200 and upstream_headers(r)["x-auth-request-user"] == "u-1"
    sc.stop()
    # ...and not once the previous key is gone.
    sc, port3 = start(sidecar_run, echo, idp, tmp_path, cookie_secret_file=str(k2))
    wait_discovered(port3)
    r = requests.get(f"http://127.0.0.1:{port3}/x", cookies={"_sidecar_oidc": cookie},
                     timeout=10)
    assert r.status_code == 401


def test_oidc_config_errors(run_cli, tmp_path):
    bad = [
        ({"issuer": "ftp://x", "client_id": "a", "client_secret": "b"}, "issuer"),
        ({"issuer": "https://x", "client_secret": "b"}, "client_id"),
        ({"issuer": "https://x", "client_id": "a"}, "client_secret"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "redirect_path": "//cb"}, "redirect_path"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "redirect_url": "https://app.example/cb"}, "redirect_url"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b", "scopes": "email"},
         "openid"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "cookie_name": "a b"}, "cookie_name"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "skip": ["healthz"]}, "skip"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "cookie_secret_file": str(tmp_path / "missing")}, "key"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "post_logout_redirect_url": "/bye"}, "post_logout_redirect_url"),
        ({"issuer": "https://x", "client_id": "a", "client_secret": "b",
          "refresh_before": "25h"}, "out of range"),
    ]
    for oidc, word in bad:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(proxy_config([], [], oidc=oidc))
        r = run_cli("proxy", "-c", str(cfg), "--check")
        assert r.returncode != 0 and word in (r.stderr + r.stdout), (oidc, r.stderr)


def test_oidc_es256_provider(sidecar_run, echo, tmp_path):  # noqa: F811
    """A provider signing its ID tokens with ES256 (a P-256 key made by openssl): the login round
    trip, and an ID token signed by another P-256 key is refused."""
    keys = []
    for i in range(2):
        path = tmp_path / f"ec{i}.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(path)], check=True,
                       capture_output=True)
        keys.append(serialization.load_pem_private_key(path.read_bytes(), password=None))
    idp = FakeOIDC(keys[0], kid="ec1")
    try:
        assert idp.jwks()["keys"][0]["kty"] == "EC"
        sc, port = start(sidecar_run, echo, idp, tmp_path)
        wait_discovered(port)
        s, r = login(port, "/es?y=2")
        assert r.json()["target"] == "/es?y=2"
        assert jwt.get_unverified_header(idp.issued_id_tokens[-1])["alg"] == "ES256"
        assert upstream_headers(r)["x-auth-request-email"] == "alice@example.com"
        # The same key id, another key: the signature check fails and no session is made.
        idp.sign_with = (keys[1], "ec1")
        s2 = requests.Session()
        r = s2.get(callback_url(port, s2), allow_redirects=False, timeout=10)
        assert r.status_code == 403, r.status_code
        assert "_sidecar_oidc" not in s2.cookies
        m = sc.get("/metrics")[1].decode()
        assert metric(m, "sidecar_oidc_logins_total", result="success") == 1
        assert metric(m, "sidecar_oidc_logins_total", result="id_token") >= 1
    finally:
        idp.close()
