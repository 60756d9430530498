# SPDX-License-Identifier: Apache-2.0
"""`sidecar config` against real nginx: an nginx serving static files with ETag as the http
source (304s cost nothing; an outage keeps the last good file), and an nginx app whose config is
rewritten, validated with `nginx -t`, and reloaded by SIGHUP through its pid file."""
import json
import re
import time

import pytest

from config_peers import Nginx, make_cert, metric, nginx_conf, nginx_static_conf, write_atomic
from conftest import free_port, wait_until


@pytest.fixture
def static_server(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    root = tmp_path / "ngx-static"
    port = free_port()
    ngx = Nginx(root, port=port)
    ngx.conf.parent.mkdir(parents=True, exist_ok=True)
    ngx.conf.write_text(nginx_static_conf(root, port, docroot))
    (root / "tmp").mkdir(exist_ok=True)
    ngx.docroot = docroot
    yield ngx
    ngx.stop()


def test_http_etag_304_outage_and_recovery(sidecar_run, static_server, tmp_path):
    ngx = static_server
    write_atomic(ngx.docroot / "app.json", json.dumps({"v": 1}))
    ngx.start()
    dest = tmp_path / "app.json"
    url = f"http://127.0.0.1:{ngx.port}/app.json"
    sc = sidecar_run("config", ["--source", url, "--dest", str(dest), "--interval", "100ms",
                                "--retry-backoff", "50ms", "--max-backoff", "200ms",
                                "--validate", "json"])
    assert json.loads(dest.read_text()) == {"v": 1}
    labels = {"source": "app.json", "result": "not_modified"}
    wait_until(lambda: (metric(sc, "sidecar_config_fetch_total", labels) or 0) >= 3, timeout=5,
               what="304s")
    log = (ngx.root / "logs/access.log").read_text()
    assert re.search(r'"GET /app.json HTTP/1.1" 304 0 ', log), log
    # A change is fetched in full again (nginx's ETag is mtime-size and mtime has one-second
    # granularity, so the new version differs in size).
    write_atomic(ngx.docroot / "app.json", json.dumps({"v": 22}))
    wait_until(lambda: json.loads(dest.read_text()) == {"v": 22}, timeout=5, what="v2")

    # Outage: the last good file stays, errors are counted, /ready stays up.
    ngx.stop()
    err = {"source": "app.json", "result": "error"}
    wait_until(lambda: (metric(sc, "sidecar_config_fetch_total", err) or 0) >= 3, timeout=5,
               what="fetch errors")
    assert json.loads(dest.read_text()) == {"v": 22}
    assert sc.get("/ready")[0] == 200
    # Recovery with new content.
    write_atomic(ngx.docroot / "app.json", json.dumps({"v": 333}))
    ngx.start()
    wait_until(lambda: json.loads(dest.read_text()) == {"v": 333}, timeout=5, what="recovery")
    last = metric(sc, "sidecar_config_last_success_timestamp_seconds", {"source": "app.json"})
    assert last and last > 1e9


def test_http_source_not_ready_until_first_write(sidecar_run, static_server, tmp_path):
    ngx = static_server
    dest = tmp_path / "late.json"
    sc = sidecar_run("config", ["--source", f"http://127.0.0.1:{ngx.port}/late.json",
                                "--dest", str(dest), "--interval", "100ms",
                                "--retry-backoff", "50ms", "--max-backoff", "100ms"], wait=None)
    sc.wait_ready("/healthz")
    assert sc.get("/ready")[0] == 503
    write_atomic(ngx.docroot / "late.json", "{}")
    ngx.start()
    sc.wait_ready("/ready", timeout=5)
    assert dest.read_text() == "{}"


def test_nginx_app_validated_and_reloaded_by_signal(sidecar_run, tmp_path):
    """nginx is the app: its nginx.conf is rendered by the sidecar, checked with `nginx -t`
    before each swap, and nginx reloads on SIGHUP through its pid file."""
    app_root = tmp_path / "app"
    app_root.mkdir()
    (app_root / "tmp").mkdir()
    (app_root / "logs").mkdir()
    port = free_port()
    src = tmp_path / "source.conf"
    dest = app_root / "nginx.conf"
    write_atomic(src, nginx_conf(app_root, port, "v1"))
    vroot = tmp_path / "validate"
    vroot.mkdir()
    cfg = f"""
interval: 1h
reload_pid_file: {app_root}/nginx.pid
reload_debounce: 50ms
validate: ["/usr/sbin/nginx", "-t", "-q", "-p", "{vroot}", "-e", "{vroot}/error.log",
           "-c", "{{{{file}}}}"]
sources:
  - name: nginx
    url: file://{src}
    dest: {dest}
"""
    sc = sidecar_run("config", config=cfg)
    app = Nginx(app_root, port=port, conf_path=dest).start()
    try:
        assert app.get("/")[1] == b"v1"
        ok = {"result": "success"}
        # The first write also asks for a reload (the app may be running an older file).
        time.sleep(0.3)
        base = metric(sc, "sidecar_config_reload_total", ok) or 0
        write_atomic(src, nginx_conf(app_root, port, "v2"))
        wait_until(lambda: app.get("/")[1] == b"v2", timeout=10, what="nginx reloaded v2")
        assert metric(sc, "sidecar_config_reload_total", ok) == base + 1

        # A config nginx -t rejects: not written, counted, nginx keeps serving v2.
        write_atomic(src, nginx_conf(app_root, port, "v3").replace("listen", "listen_typo"))
        inv = {"source": "nginx", "result": "invalid"}
        wait_until(lambda: metric(sc, "sidecar_config_fetch_total", inv) == 1, timeout=10,
                   what="validation failure counted")
        assert '"v2"' in dest.read_text()
        assert "listen_typo" not in dest.read_text()
        # nginx's old worker may still accept a connection or two while it winds down.
        wait_until(lambda: app.get("/")[1] == b"v2", timeout=10, what="nginx serving v2")
        assert "validation failed; the old file stays" in sc.logs()
        assert metric(sc, "sidecar_config_reload_total", ok) == base + 1
        assert sorted(p.name for p in app_root.iterdir()) == ["logs", "nginx.conf", "nginx.pid",
                                                              "tmp"]

        # Fixed again: written and reloaded.
        write_atomic(src, nginx_conf(app_root, port, "v4"))
        wait_until(lambda: app.get("/")[1] == b"v4", timeout=10, what="nginx reloaded v4")
        assert metric(sc, "sidecar_config_reload_total", ok) == base + 2
    finally:
        app.stop()


def test_reload_by_http_request_with_retries(sidecar_run, tmp_path):
    """The seed's `curl -X POST http://localhost:8080/reload`: the first attempts get 503, the
    reload succeeds on a retry."""
    import http.server
    import threading

    hits = []

    class App(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(503 if len(hits) < 3 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        src = tmp_path / "s"
        src.write_text("a")
        dest = tmp_path / "d"
        sc = sidecar_run("config", ["--source", f"file://{src}", "--dest", str(dest),
                                    "--interval", "1h", "--reload-debounce", "10ms",
                                    "--reload-url",
                                    f"http://127.0.0.1:{srv.server_address[1]}/reload",
                                    "--reload-expect-status", "200"])
        # The first write happens before the app could read it: it reloads too.
        write_atomic(src, "b")
        wait_until(lambda: metric(sc, "sidecar_config_reload_total", {"result": "success"}) >= 1,
                   timeout=10, what="reload after retries")
        assert len(hits) >= 3 and set(hits) == {"/reload"}
        assert metric(sc, "sidecar_config_reload_total", {"result": "failure"}) == 0
        assert "reload failed; retrying" in sc.logs()
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def tls_server(tmp_path):
    """nginx serving static files over https with a self-signed certificate made in tmp_path."""
    docroot = tmp_path / "www-tls"
    docroot.mkdir()
    root = tmp_path / "ngx-tls"
    port = free_port()
    cert, key = make_cert(tmp_path, "server")
    ngx = Nginx(root, port=port)
    ngx.conf.parent.mkdir(parents=True, exist_ok=True)
    ngx.conf.write_text(nginx_static_conf(root, port, docroot, cert, key))
    (root / "tmp").mkdir(exist_ok=True)
    ngx.docroot = docroot
    ngx.cert = cert
    ngx.url = f"https://127.0.0.1:{port}"
    yield ngx
    ngx.stop()


def test_https_source_verified_by_ca_file(sidecar_run, tls_server, tmp_path):
    """An https source whose certificate only the configured CA file vouches for: fetched,
    written, then answered 304 over TLS; a per-source ca_file and the top-level one both work."""
    ngx = tls_server
    write_atomic(ngx.docroot / "app.json", json.dumps({"tls": 1}))
    ngx.start()
    dest = tmp_path / "app.json"
    sc = sidecar_run("config", ["--source", f"{ngx.url}/app.json", "--dest", str(dest),
                                "--ca-file", str(ngx.cert), "--interval", "100ms",
                                "--validate", "json"])
    assert json.loads(dest.read_text()) == {"tls": 1}
    nm = {"source": "app.json", "result": "not_modified"}
    wait_until(lambda: (metric(sc, "sidecar_config_fetch_total", nm) or 0) >= 2, timeout=10,
               what="304s over https")
    write_atomic(ngx.docroot / "app.json", json.dumps({"tls": 22}))
    wait_until(lambda: json.loads(dest.read_text()) == {"tls": 22}, timeout=10, what="update")

    dest2 = tmp_path / "per-source.json"
    sidecar_run("config", config=f"""
interval: 1h
sources:
  - url: {ngx.url}/app.json
    dest: {dest2}
    ca_file: {ngx.cert}
""")
    assert json.loads(dest2.read_text()) == {"tls": 22}


def test_https_source_untrusted_certificate_fails_clearly(run_cli, sidecar_run, tls_server,
                                                          tmp_path):
    """Without the CA file (the system store does not know the self-signed certificate), or with
    another CA, the fetch fails with curl's verification message: --once fails the init step and
    the long-running role stays unready, keeping no file."""
    ngx = tls_server
    write_atomic(ngx.docroot / "app.json", "{}")
    ngx.start()
    dest = tmp_path / "out.json"
    r = run_cli("config", "--admin", "127.0.0.1:0", "--once", "--retries", "0",
                "--source", f"{ngx.url}/app.json", "--dest", str(dest))
    assert r.returncode == 1, r.stderr
    assert "required source failed" in r.stderr
    assert "SSL certificate problem: self-signed certificate" in r.stderr, r.stderr
    assert not dest.exists()

    other, _ = make_cert(tmp_path, "other")
    sc = sidecar_run("config", ["--source", f"{ngx.url}/app.json", "--dest", str(dest),
                                "--ca-file", str(other), "--retry-backoff", "50ms",
                                "--max-backoff", "100ms"], wait="/healthz")
    wait_until(lambda: "SSL certificate problem" in sc.logs(), timeout=10,
               what="verification failure logged")
    assert "source fetch failed; the last good file stays" in sc.logs()
    assert sc.get("/ready")[0] == 503
    assert not dest.exists()


def test_plain_http_source_without_libcurl(sidecar_run, static_server, tmp_path):
    """A plain http:// source goes through the HTTP/1.1 client of net/ (the host name resolved):
    libcurl and OpenSSL are never loaded. Credentials are libcurl's, which is then loaded."""
    ngx = static_server
    write_atomic(ngx.docroot / "app.json", json.dumps({"v": 1}))
    ngx.start()
    dest = tmp_path / "app.json"
    sc = sidecar_run("config", ["--source", f"http://localhost:{ngx.port}/app.json?x=1",
                                "--dest", str(dest), "--interval", "100ms",
                                "--validate", "json"])
    assert json.loads(dest.read_text()) == {"v": 1}
    labels = {"source": "app.json", "result": "not_modified"}
    wait_until(lambda: (metric(sc, "sidecar_config_fetch_total", labels) or 0) >= 2, timeout=5,
               what="304s")
    maps = open(f"/proc/{sc.proc.pid}/maps").read()
    assert "libcurl" not in maps and "libssl" not in maps
    log = (ngx.root / "logs/access.log").read_text()
    assert re.search(r'"GET /app.json\?x=1 HTTP/1.1" 304 0 ', log), log

    cfg = tmp_path / "auth.yaml"
    dest2 = tmp_path / "auth.json"
    cfg.write_text(f"""
sources:
  - url: http://127.0.0.1:{ngx.port}/app.json
    dest: {dest2}
    basic_user: reader
    basic_password: secret
""")
    sc2 = sidecar_run("config", config=cfg.read_text())
    wait_until(lambda: dest2.exists(), timeout=5, what="the basic-auth fetch")
    assert json.loads(dest2.read_text()) == {"v": 1}
    assert "libcurl" in open(f"/proc/{sc2.proc.pid}/maps").read()
