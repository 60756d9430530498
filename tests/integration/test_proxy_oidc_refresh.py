# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: the OpenID Connect login's session renewal, provider logout, client
authentication, Cookie fields and per-listener logins, against fake_oidc (RFC 6749 6 refresh_token grant with rotation, OpenID Connect
Core 12 refreshed ID tokens, RP-Initiated Logout 1.0, RFC 6749 2.3.1 Basic encoding) and the echo
upstream. A session whose tokens are near expiry is renewed on its next request (the request
waits, then goes upstream with the renewed identity, and its response carries the new cookie); a
refused refresh sends a browser to log in again and an API call gets 401; the provider down keeps
the session. Sign-out ends the provider's session when asked to."""
import base64
import socket
import time
from urllib.parse import parse_qs, quote_plus, urlparse

import requests

from conftest import free_port
from fake_oidc import FakeOIDC
from proxy_util import echo, get, metric, proxy_config, wait_for  # noqa: F401
from test_proxy_oidc import HTML, idp, login, rsa_keys, upstream_headers  # noqa: F401
from test_proxy_oidc import wait_discovered


def start(sidecar_run, echo, idp, tmp_path, **oidc):  # noqa: F811
    port = free_port()
    secret = tmp_path / "client_secret"
    secret.write_text(idp.client_secret + "\n")
    cfg = {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret_file": str(secret),
           "cookie_secure": False, "discovery_refresh": "10s",
           "scopes": "openid email profile offline_access", **oidc}
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}], oidc=cfg))
    wait_discovered(port)
    return sc, port


def test_oidc_refresh_renews_the_session(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    idp.token_ttl = 30  # under refresh_before (1m): every request with the session renews it
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    # The login's own landing request already renews (its tokens are near expiry).
    s, r = login(port, "/")
    issued = list(idp.refresh_tokens)
    assert len(issued) == 2 and len(idp.refresh_requests) == 1
    assert idp.refresh_requests[0]["refresh_token"] == issued[0]
    assert r.headers["Set-Cookie"].startswith("_sidecar_oidc=")
    first = s.cookies.get("_sidecar_oidc")
    # The provider changed the user's email: the renewed session carries it upstream at once.
    idp.user["email"] = "alice@new.example"
    r = s.get(f"http://127.0.0.1:{port}/page", timeout=10)
    assert r.status_code == 200
    assert len(idp.refresh_requests) == 2
    form = idp.refresh_requests[1]
    # the rotated token, Basic client authentication (RFC 6749 6)
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == issued[1]
    assert "client_secret" not in form and idp.token_auth[-1].startswith("Basic ")
    h = upstream_headers(r)
    assert h["x-auth-request-email"] == "alice@new.example"
    assert h["x-auth-request-user"] == "u-1"
    assert "_sidecar_oidc" not in h.get("cookie", "")
    set_cookie = r.headers["Set-Cookie"]
    assert set_cookie.startswith("_sidecar_oidc=") and "HttpOnly" in set_cookie
    second = s.cookies.get("_sidecar_oidc")
    assert second and second != first
    # A POST waits for the refresh, then its body goes up.
    r = s.post(f"http://127.0.0.1:{port}/api", data=b"x" * 5000,
               headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert r.status_code == 200 and r.json()["body_len"] == 5000
    assert r.json()["method"] == "POST"
    assert len(idp.refresh_requests) == 3
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_refreshes_total", result="success") == 3
    assert metric(m, "sidecar_oidc_sessions_active") == 1  # renewed, still one session


def test_oidc_refresh_refused_logs_in_again(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    idp.token_ttl = 30
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    s, _ = login(port, "/")
    jar = dict(s.cookies)
    idp.revoke_all()
    # An API call: 401, the session cookie cleared.
    r = requests.get(f"http://127.0.0.1:{port}/api", cookies=jar, timeout=10)
    assert r.status_code == 401
    assert "_sidecar_oidc=;" in r.headers["Set-Cookie"]
    # A browser: sent to the provider again, the session cookie cleared.
    r = requests.get(f"http://127.0.0.1:{port}/page", cookies=jar, headers=HTML,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"].startswith(f"{idp.issuer}/authorize?")
    assert "_sidecar_oidc=;" in r.headers["Set-Cookie"]
    # ...and logging in again works.
    s, r = login(port, "/again")
    assert r.json()["target"] == "/again"
    # A refreshed ID token of another user is refused the same way (Core 12.2).
    idp.refresh_overrides = {"sub": "u-2"}
    r = s.get(f"http://127.0.0.1:{port}/api", timeout=10)
    assert r.status_code == 401
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_refreshes_total", result="refused") >= 2
    assert metric(m, "sidecar_oidc_sessions_active") == 0  # both sessions ended by the provider


def test_oidc_refresh_provider_down_keeps_the_session(sidecar_run, echo, idp,  # noqa: F811
                                                      tmp_path):
    idp.token_ttl = 30
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    s, _ = login(port, "/")
    idp.down = True
    r = s.get(f"http://127.0.0.1:{port}/page", timeout=10)
    assert r.status_code == 200 and upstream_headers(r)["x-auth-request-user"] == "u-1"
    assert "Set-Cookie" not in r.headers
    # Not tried again on every request: the next try waits.
    posts = idp.posts
    r = s.get(f"http://127.0.0.1:{port}/page2", timeout=10)
    assert r.status_code == 200 and idp.posts == posts == 3  # code, landing, failed refresh
    m = sc.get("/metrics")[1].decode()
    assert metric(m, "sidecar_oidc_refreshes_total", result="error") == 1


def test_oidc_no_refresh_without_token_or_need(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    # Tokens far from expiry: nothing refreshed.
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    s, _ = login(port, "/")
    assert s.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 200
    assert not idp.refresh_requests
    sc.stop()
    # No offline_access asked: no refresh token granted, none used; the session goes on.
    idp.token_ttl = 30
    sc, port = start(sidecar_run, echo, idp, tmp_path, scopes="openid email")
    s, _ = login(port, "/")
    assert s.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 200
    assert not idp.refresh_requests
    sc.stop()
    # use_refresh_token off: a granted refresh token is not kept.
    sc, port = start(sidecar_run, echo, idp, tmp_path, use_refresh_token=False)
    s, _ = login(port, "/")
    assert s.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 200
    assert not idp.refresh_requests


def test_oidc_sign_out_ends_the_provider_session(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    idp.end_session = True
    idp.post_logout_uris = ["http://127.0.0.1/bye", "https://app.example/signed-out"]
    # Not asked: a local redirect only.
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    s, _ = login(port, "/")
    r = s.get(f"http://127.0.0.1:{port}/oauth2/sign_out?rd=/bye", allow_redirects=False,
              timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/bye"
    sc.stop()
    # Asked: to the provider's end_session_endpoint with the session's ID token as the hint.
    sc, port = start(sidecar_run, echo, idp, tmp_path, end_provider_session=True)
    s, _ = login(port, "/")
    r = s.get(f"http://127.0.0.1:{port}/oauth2/sign_out?rd=/bye", allow_redirects=False,
              headers={"Host": "127.0.0.1"}, timeout=10)
    assert r.status_code == 302
    loc = urlparse(r.headers["Location"])
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{idp.issuer}/logout"
    assert q["client_id"] == "app" and q["id_token_hint"] == idp.issued_id_tokens[-1]
    assert q["post_logout_redirect_uri"] == "http://127.0.0.1/bye" and len(q["state"]) >= 32
    assert "_sidecar_oidc=;" in r.headers["Set-Cookie"]
    # The provider accepts it and comes back to the registered URI with the state.
    r2 = requests.get(r.headers["Location"], allow_redirects=False, timeout=10)
    assert r2.status_code == 302, r2.text
    assert r2.headers["Location"] == f"http://127.0.0.1/bye?state={q['state']}"
    assert idp.logouts[-1]["id_token_hint"] == q["id_token_hint"]
    # A foreign rd is not sent on; without a session no hint is sent.
    r = requests.get(f"http://127.0.0.1:{port}/oauth2/sign_out?rd=//evil.example",
                     allow_redirects=False, headers={"Host": "127.0.0.1"}, timeout=10)
    q = {k: v[0] for k, v in parse_qs(urlparse(r.headers["Location"]).query).items()}
    assert q["post_logout_redirect_uri"] == "http://127.0.0.1/" and "id_token_hint" not in q
    sc.stop()
    # A configured post_logout_redirect_url wins.
    sc, port = start(sidecar_run, echo, idp, tmp_path, end_provider_session=True,
                     post_logout_redirect_url="https://app.example/signed-out")
    s, _ = login(port, "/")
    r = s.get(f"http://127.0.0.1:{port}/oauth2/sign_out", allow_redirects=False, timeout=10)
    q = {k: v[0] for k, v in parse_qs(urlparse(r.headers["Location"]).query).items()}
    assert q["post_logout_redirect_uri"] == "https://app.example/signed-out"
    assert requests.get(r.headers["Location"], allow_redirects=False,
                        timeout=10).status_code == 302
    sc.stop()
    # A provider without an end_session_endpoint: the local redirect.
    idp.end_session = False
    sc, port = start(sidecar_run, echo, idp, tmp_path, end_provider_session=True)
    s, _ = login(port, "/")
    r = s.get(f"http://127.0.0.1:{port}/oauth2/sign_out?rd=/x", allow_redirects=False,
              timeout=10)
    assert r.headers["Location"] == "/x"


def test_oidc_client_secret_basic_is_form_encoded(sidecar_run, echo, rsa_keys,  # noqa: F811
                                                  tmp_path):
    # RFC 6749 2.3.1: id and secret form-urlencoded before "id:secret" is base64-encoded.
    f = FakeOIDC(rsa_keys[0], client_id="app:1 x", client_secret="s3:c r+t/%?&=\u00e9")
    try:
        sc, port = start(sidecar_run, echo, f, tmp_path)
        s, r = login(port, "/")
        assert upstream_headers(r)["x-auth-request-user"] == "u-1"
        want = base64.b64encode(f"{quote_plus('app:1 x')}:{quote_plus(f.client_secret)}"
                                .encode()).decode()
        assert f.token_auth[-1] == f"Basic {want}"
        assert "app%3A1+x:" in base64.b64decode(want).decode()
    finally:
        f.close()


def test_oidc_cookie_fields_upstream(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    # The proxy's cookies never go upstream, whatever the Cookie fields look like; a field of the
    # session cookie alone is dropped as it is, several fields are joined into one (RFC 6265 5.4).
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    s, _ = login(port, "/")
    v = s.cookies.get("_sidecar_oidc")
    cases = [
        ([f"_sidecar_oidc={v}"], None),
        ([f"_sidecar_oidc={v}; theme=dark"], "theme=dark"),
        ([f"a=1; _sidecar_oidc={v};b=2"], "a=1; b=2"),
        (["a=1", f"_sidecar_oidc={v}; _sidecar_oidc_csrf=x", "b=2"], "a=1; b=2"),
        (["_sidecar_oidc_csrf=x", f"_sidecar_oidc={v}"], None),
        ([f"_sidecar_oidc={v} ; c=3"], "c=3"),
    ]
    for fields, want in cases:
        r = get_fields(port, fields)
        assert r.status == 200, (fields, r.status)
        got = [val for k, val in r.json()["headers"] if k.lower() == "cookie"]
        assert got == ([want] if want else []), (fields, got)
        assert ["u-1"] == [val for k, val in r.json()["headers"]
                           if k.lower() == "x-auth-request-user"]
    # A value that is the session's plus more is not the session.
    r = get_fields(port, [f"_sidecar_oidc={v}x"])
    assert r.status == 401



def get_fields(port, cookie_fields):
    return get(port, "/c", headers=[("Cookie", c) for c in cookie_fields])


def test_oidc_refresh_client_gone_and_big_tokens(sidecar_run, echo, idp, tmp_path):  # noqa: F811
    idp.token_ttl = 30
    sc, port = start(sidecar_run, echo, idp, tmp_path, pass_authorization_header=True)
    s, r = login(port, "/")
    # With pass_authorization_header the renewed ID token goes upstream.
    assert upstream_headers(r)["authorization"] == f"Bearer {idp.issued_id_tokens[-1]}"
    # A client that leaves while its request waits for the token endpoint: the renewal still
    # completes (the rotated token is the provider's now) and the proxy carries on.
    idp.token_delay = 1.0
    old = s.cookies.get("_sidecar_oidc")
    raw = socket.create_connection(("127.0.0.1", port))
    raw.sendall(f"GET /gone HTTP/1.1\r\nHost: x\r\nCookie: _sidecar_oidc={old}\r\n\r\n"
                .encode())
    time.sleep(0.3)
    raw.close()
    assert wait_for(lambda: len(idp.refresh_requests) == 2, timeout=10)
    idp.token_delay = 0
    time.sleep(0.3)
    # The proxy carries on: a new login and its renewal work.
    s, r = login(port, "/back")
    assert r.json()["target"] == "/back" and len(idp.refresh_requests) == 3
    sc.stop()
    # A refresh token too big for the cookie is left out: the login works, nothing is renewed.
    idp.refresh_token_size = 3000
    sc, port = start(sidecar_run, echo, idp, tmp_path)
    n = len(idp.refresh_requests)
    s, r = login(port, "/")
    assert len(s.cookies.get("_sidecar_oidc")) < 3800
    assert s.get(f"http://127.0.0.1:{port}/page", timeout=10).status_code == 200
    assert len(idp.refresh_requests) == n
    assert "kept without its refresh token" in sc.logs()


def test_oidc_per_listener(sidecar_run, echo, rsa_keys, tmp_path, run_cli):  # noqa: F811
    # Three listeners: the top-level login, none (enabled: false), and one of another provider
    # under its own cookie name.
    a, b = FakeOIDC(rsa_keys[0]), FakeOIDC(rsa_keys[1], client_id="other", client_secret="x2")
    try:
        secret = tmp_path / "client_secret"
        secret.write_text("s3cret\n")
        pa, pn, pb = free_port(), free_port(), free_port()
        top = {"issuer": a.issuer, "client_id": "app", "client_secret_file": str(secret),
               "cookie_secure": False}
        own = {"issuer": b.issuer, "client_id": "other", "client_secret": "x2",
               "cookie_secure": False, "cookie_name": "_other"}
        route = [{"name": "r", "cluster": "app"}]
        sc = sidecar_run("proxy", config=proxy_config(
            [{"name": "a", "address": f"127.0.0.1:{pa}", "routes": route},
             {"name": "n", "address": f"127.0.0.1:{pn}", "routes": route,
              "oidc": {"enabled": False}},
             {"name": "b", "address": f"127.0.0.1:{pb}", "routes": route, "oidc": own}],
            [{"name": "app", "endpoints": [echo.addr]}], oidc=top))
        wait_discovered(pa)
        wait_discovered(pb)
        s, r = login(pa, "/")
        assert s.cookies.get("_sidecar_oidc") and a.token_requests and not b.token_requests
        # No login on n: a browser navigation goes straight to the app.
        r = get(pn, "/free", headers=[("Accept", "text/html")])
        assert r.status == 200 and r.json()["target"] == "/free"
        # b: its own provider, client and cookie.
        r = get(pb, "/api")
        assert r.status == 401
        s2, r = login(pb, "/b")
        assert r.json()["target"] == "/b" and s2.cookies.get("_other")
        assert b.token_requests and "_sidecar_oidc" not in s2.cookies
        assert upstream_headers(r)["x-auth-request-user"] == "u-1"
        # a's session is not b's.
        assert requests.get(f"http://127.0.0.1:{pb}/api", cookies={
            "_other": s.cookies.get("_sidecar_oidc")}, timeout=10).status_code == 401
    finally:
        a.close()
        b.close()
    # Two providers under one cookie name: refused at load.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(proxy_config(
        [{"name": "x", "address": "127.0.0.1:1", "routes": [],
          "oidc": {"issuer": "https://other.example", "client_id": "c", "client_secret": "s"}}],
        [], oidc={"issuer": "https://x.example", "client_id": "c", "client_secret": "s"}))
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode != 0 and "cookie_name" in r.stderr, r.stderr
    # A listener's login checked as the top-level one is.
    cfg.write_text(proxy_config(
        [{"name": "x", "address": "127.0.0.1:1", "routes": [],
          "oidc": {"issuer": "ftp://x", "client_id": "c", "client_secret": "s"}}], []))
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode != 0 and 'listener "x": oidc.issuer' in r.stderr, r.stderr
