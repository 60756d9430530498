# SPDX-License-Identifier: Apache-2.0
"""`sidecar secrets` against FakeVault (tests/integration/fake_vault.py, written from Vault's
documented API; Vault itself cannot run here): token, AppRole and Kubernetes auth, KV v1/v2,
the Vault Agent injector annotations of the seed's example, dynamic-secret leases renewed and
re-fetched with short TTLs, token renewal, redaction and file modes."""
import os
import stat
import time

import pytest

from config_peers import make_cert, metric
from conftest import wait_until
from fake_vault import FakeVault


@pytest.fixture
def vault():
    v = FakeVault()
    yield v
    v.stop()


def test_token_auth_kv_v1_v2_mode_and_redaction(sidecar_run, vault, tmp_path):
    vault.kv1["secret/app"] = {"api_key": "k-123"}
    vault.kv2["kv/db"] = {"username": "app", "password": "hunter2"}
    out = tmp_path / "secrets"
    out.mkdir()
    cfg = f"""
dest_dir: {out}
token: root-token
secrets:
  - name: api
    path: secret/app
  - name: db.env
    template: |
      {{{{- with secret "kv/data/db" -}}}}
      DB_USER={{{{ .Data.data.username }}}}
      DB_PASS={{{{ .Data.data.password | quote }}}}
      {{{{ end -}}}}
"""
    sc = sidecar_run("secrets", config=cfg,
                     env={"VAULT_ADDR": vault.addr, "VAULT_NAMESPACE": "team-a"})
    assert (out / "api").read_text() == "api_key: k-123\n"
    assert (out / "db.env").read_text() == 'DB_USER=app\nDB_PASS="hunter2"\n'
    for name in ("api", "db.env"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600
    assert vault.count("GET", "/v1/auth/token/lookup-self") == 1
    assert set(vault.namespace_seen) == {"team-a"}
    cfg_dump = sc.get("/config")[1].decode()
    assert "root-token" not in cfg_dump
    assert '"token": "<redacted>"' in cfg_dump
    assert "hunter2" not in sc.logs() and "root-token" not in sc.logs()


def test_seed_annotation_example_renders_export_lines(sidecar_run, vault, tmp_path):
    """The seed's annotated pod: Kubernetes auth with the role from the annotations, the
    database secret, and the template that writes `export DB_USER="..."` lines."""
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOi.fake.jwt\n")
    vault.k8s_roles["my-app"] = "eyJhbGciOi.fake.jwt"
    ann = tmp_path / "annotations"
    ann.write_text(
        'vault.hashicorp.com/agent-inject="true"\n'
        'vault.hashicorp.com/role="my-app"\n'
        'vault.hashicorp.com/agent-inject-secret-db-creds="database/creds/my-role"\n'
        'vault.hashicorp.com/agent-inject-template-db-creds="{{- with secret '
        '\\"database/creds/my-role\\" -}}\\nexport DB_USER=\\"{{ .Data.username }}\\"\\n'
        'export DB_PASS=\\"{{ .Data.password }}\\"\\n{{- end }}\\n"\n')
    out = tmp_path / "vault-secrets"
    out.mkdir()
    sidecar_run("secrets", ["--annotations-file", str(ann), "--jwt-path", str(jwt),
                            "--dest-dir", str(out)], env={"VAULT_ADDR": vault.addr})
    text = (out / "db-creds").read_text()
    assert text == 'export DB_USER="v-app-2"\nexport DB_PASS="pw-2"\n', text
    assert vault.count("POST", "/v1/auth/kubernetes/login") == 1


def test_lease_renewal_and_refetch_with_short_ttls(sidecar_run, tmp_path):
    """Leases of 3 s renewed at 2/3 (2 s); the max TTL of 5 s caps renewal, so the secret is
    read again before it expires, the file re-rendered and the reload command run."""
    vault = FakeVault(token_ttl=3, lease_ttl=3, lease_max_ttl=5)
    try:
        vault.approles["role-1"] = "secret-1"
        sid = tmp_path / "secret_id"
        sid.write_text("secret-1\n")
        out = tmp_path / "s"
        out.mkdir()
        reloads = tmp_path / "reloads"
        cfg = f"""
vault_addr: {vault.addr}
role_id: role-1
secret_id_file: {sid}
dest_dir: {out}
reload_command: ["/bin/sh", "-c", "echo x >> {reloads}"]
reload_debounce: 10ms
secrets:
  - name: db
    template: '{{{{ with secret "database/creds/app" }}}}{{{{ .Data.username }}}}{{{{ end }}}}'
"""
        sc = sidecar_run("secrets", config=cfg)
        first = (out / "db").read_text()
        assert first.startswith("v-app-")
        expiry = metric(sc, "sidecar_secrets_lease_expiry_timestamp_seconds",
                        {"path": "database/creds/app"})
        assert expiry and abs(expiry - (time.time() + 3)) < 2
        wait_until(lambda: vault.count("PUT", "/v1/sys/leases/renew") >= 1, timeout=5,
                   what="lease renewed")
        wait_until(lambda: (out / "db").read_text() != first, timeout=10,
                   what="secret re-read before expiry")
        assert vault.count("GET", "/v1/database/creds/app") >= 2
        wait_until(lambda: reloads.exists() and reloads.read_text().count("x") >= 2, timeout=5,
                   what="reload after the new credentials")
        wait_until(lambda: vault.count("POST", "/v1/auth/token/renew-self") >= 1, timeout=5,
                   what="token renewed")
        assert vault.count("POST", "/v1/auth/approle/login") == 1
        assert metric(sc, "sidecar_secrets_renew_total", {"result": "success"}) >= 2
    finally:
        vault.stop()


def test_vault_outage_keeps_the_file_and_recovers(sidecar_run, vault, tmp_path):
    vault.kv1["secret/x"] = {"v": "1"}
    out = tmp_path / "o"
    out.mkdir()
    sc = sidecar_run("secrets", ["--dest-dir", str(out), "--refresh", "200ms",
                                 "--retry-backoff", "50ms", "--max-backoff", "200ms"],
                     config="secrets:\n  - name: x\n    path: secret/x\n",
                     env={"VAULT_ADDR": vault.addr, "VAULT_TOKEN": "root-token"})
    assert (out / "x").read_text() == "v: 1\n"
    vault.down = True
    wait_until(lambda: (metric(sc, "sidecar_secrets_fetch_total", {"result": "error"}) or 0) >= 2,
               timeout=5, what="errors")
    assert (out / "x").read_text() == "v: 1\n"
    vault.kv1["secret/x"] = {"v": "2"}
    vault.down = False
    wait_until(lambda: (out / "x").read_text() == "v: 2\n", timeout=5, what="recovered")


def test_once_fails_without_vault(run_cli, tmp_path):
    from conftest import free_port
    r = run_cli("secrets", "--admin", "127.0.0.1:0", "--once", "--retries", "1",
                "--retry-backoff", "50ms", "--dest-dir", str(tmp_path),
                "--vault-addr", f"http://127.0.0.1:{free_port()}", "-c", "/dev/null",
                env={"VAULT_TOKEN": "t", "SIDECAR_VAULT_ANNOTATIONS":
                     'vault.hashicorp.com/agent-inject-secret-a="secret/a"'})
    assert r.returncode == 1, r.stderr
    assert "secrets failed; the init step fails" in r.stderr


def test_vault_tls_with_vault_cacert(sidecar_run, tmp_path):
    """An https Vault whose certificate only VAULT_CACERT vouches for: with it the secret is
    read; the system store alone refuses the connection."""
    cert, key = make_cert(tmp_path, "vault", cn="fake-vault")
    v = FakeVault(tls=(str(cert), str(key)))
    try:
        v.kv1["secret/tls"] = {"ok": "yes"}
        out = tmp_path / "o"
        out.mkdir()
        cfg = "secrets:\n  - name: t\n    path: secret/tls\n"
        env = {"VAULT_ADDR": v.addr, "VAULT_TOKEN": "root-token"}
        bad = sidecar_run("secrets", ["--dest-dir", str(out), "--retry-backoff", "50ms"],
                          config=cfg, env=env, wait="/healthz")
        wait_until(lambda: "reason" in bad.logs() and "authentication failed" in bad.logs(),
                   timeout=5, what="TLS refused without the CA")
        assert not (out / "t").exists()
        assert bad.stop() == 0
        sidecar_run("secrets", ["--dest-dir", str(out)], config=cfg,
                    env=dict(env, VAULT_CACERT=str(cert)))
        assert (out / "t").read_text() == "ok: yes\n"
    finally:
        v.stop()


def test_reload_applies_templates_and_keeps_unchanged_secrets(sidecar_run, vault, tmp_path):
    """POST /reload and SIGHUP re-read the config: a changed template re-renders from the secret
    already read (no new read, no new login), a new file reads only its own path, a malformed
    config is refused with file:line:col and the old one keeps running, and new credentials log
    in again and read everything afresh."""
    import re
    import signal
    vault.kv1["secret/a"] = {"v": "a1"}
    vault.kv1["secret/b"] = {"v": "b1"}
    vault.tokens["other-token"] = {"ttl": 3600, "renewable": True, "policies": ["app"]}
    out = tmp_path / "o"
    out.mkdir()
    reloads_b = tmp_path / "reloads-b"
    base = f"vault_addr: {vault.addr}\ndest_dir: {out}\nrefresh: 1h\n"
    one = base + "token: root-token\nsecrets:\n  - name: a\n    path: secret/a\n"
    sc = sidecar_run("secrets", config=one)
    assert (out / "a").read_text() == "v: a1\n"
    assert vault.count("GET", "/v1/secret/a") == 1

    two = base + f"""token: root-token
secrets:
  - name: a
    template: 'A={{{{ with secret "secret/a" }}}}{{{{ .Data.v }}}}{{{{ end }}}}'
  - name: b
    path: secret/b
    reload_command: ["/bin/sh", "-c", "echo b >> {reloads_b}"]
    reload_debounce: 10ms
"""
    sc.config_path.write_text(two)
    status, body, _ = sc.get("/reload", method="POST")
    assert status == 200, body
    wait_until(lambda: (out / "a").read_text() == "A=a1", timeout=5, what="a re-rendered")
    wait_until(lambda: (out / "b").exists() and (out / "b").read_text() == "v: b1\n", timeout=5,
               what="b written")
    wait_until(lambda: reloads_b.exists(), timeout=5, what="b's own reload action")
    assert vault.count("GET", "/v1/secret/a") == 1  # the secret already read was reused
    assert vault.count("GET", "/v1/secret/b") == 1
    assert vault.count("GET", "/v1/auth/token/lookup-self") == 1
    assert stat.S_IMODE(os.stat(out / "b").st_mode) == 0o600

    # Malformed: refused with the position, the running config stays.
    sc.config_path.write_text(two + "  - name: c\n    path: [unclosed\n")
    status, body, _ = sc.get("/reload", method="POST")
    assert status == 400, body
    assert re.search(r"\.yaml:\d+:\d+: ", body.decode()), body
    sc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: sc.logs().count("reload rejected; the previous configuration keeps "
                                       "running") >= 2, timeout=5, what="SIGHUP refused too")
    assert '"name": "b"' in sc.get("/config")[1].decode()
    assert sc.get("/ready")[0] == 200

    # New credentials: logged in again, everything read afresh with the new token.
    vault.kv1["secret/a"] = {"v": "a2"}
    sc.config_path.write_text(two.replace("token: root-token", "token: other-token"))
    sc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (out / "a").read_text() == "A=a2", timeout=5, what="re-read after re-auth")
    assert vault.count("GET", "/v1/auth/token/lookup-self") == 2
    with vault.lock:
        tokens = [t for m, p, t in vault.requests if p == "/v1/secret/a"]
    assert tokens == ["root-token", "other-token"]
    assert "other-token" not in sc.logs() and "other-token" not in sc.get("/config")[1].decode()


def test_reload_during_a_write_in_flight(sidecar_run, vault, tmp_path):
    """A reload replaces a file whose validation is still running: that write finishes, then
    the new template renders to the same destination (never two writes at once; ASan checks the
    lifetime of the replaced file)."""
    vault.kv1["secret/w"] = {"v": "w1"}
    out = tmp_path / "o"
    out.mkdir()
    marker = tmp_path / "validating"
    cfg = f"""
vault_addr: {vault.addr}
token: root-token
dest_dir: {out}
refresh: 200ms
validate: ["/bin/sh", "-c", "touch {marker}; sleep 0.5"]
secrets:
  - name: w
    path: secret/w
"""
    sc = sidecar_run("secrets", config=cfg)
    assert (out / "w").read_text() == "v: w1\n"
    marker.unlink()
    vault.kv1["secret/w"] = {"v": "w2"}
    wait_until(lambda: marker.exists(), timeout=5, what="validation running")
    sc.config_path.write_text(cfg.replace("sleep 0.5", "true").replace(
        "    path: secret/w\n",
        "    template: 'W={{ with secret \"secret/w\" }}{{ .Data.v }}{{ end }}'\n"))
    assert sc.get("/reload", method="POST")[0] == 200
    wait_until(lambda: (out / "w").read_text() == "W=w2", timeout=10, what="new template")


def test_each_file_has_its_own_reload_action(sidecar_run, vault, tmp_path):
    """A secret with its own reload_* keys (or the injector's agent-inject-command-<name>
    annotation) runs its own action when its file changes; the others run the top-level one."""
    vault.kv1["secret/x"] = {"v": "x1"}
    vault.kv1["secret/y"] = {"v": "y1"}
    vault.kv1["secret/z"] = {"v": "z1"}
    out = tmp_path / "o"
    out.mkdir()
    rx, rz, top = tmp_path / "rx", tmp_path / "rz", tmp_path / "top"
    cfg = f"""
vault_addr: {vault.addr}
token: root-token
dest_dir: {out}
refresh: 200ms
reload_command: ["/bin/sh", "-c", "echo t >> {top}"]
reload_debounce: 10ms
secrets:
  - name: x
    path: secret/x
    reload_command: ["/bin/sh", "-c", "echo x >> {rx}"]
    reload_debounce: 10ms
  - name: y
    path: secret/y
"""
    ann = ('vault.hashicorp.com/agent-inject-secret-z="secret/z"\n'
           f'vault.hashicorp.com/agent-inject-command-z="echo z >> {rz}"\n')

    def count(p):
        return len(p.read_text().split()) if p.exists() else 0

    sidecar_run("secrets", config=cfg, env={"SIDECAR_VAULT_ANNOTATIONS": ann})
    wait_until(lambda: (count(rx), count(top), count(rz)) == (1, 1, 1), timeout=10,
               what="one run of each action after the first writes")
    vault.kv1["secret/x"] = {"v": "x2"}
    wait_until(lambda: count(rx) == 2, timeout=5, what="x's action")
    vault.kv1["secret/z"] = {"v": "z2"}
    wait_until(lambda: count(rz) == 2, timeout=5, what="z's annotation command")
    vault.kv1["secret/y"] = {"v": "y2"}
    wait_until(lambda: count(top) == 2, timeout=5, what="the top-level action for y")
    time.sleep(0.5)
    assert (count(rx), count(top), count(rz)) == (2, 2, 2)


def test_reload_keeps_a_pending_reload_action(sidecar_run, vault, tmp_path):
    """A secret changed and its file's reload action waits for its debounce when the config is
    reloaded: the app still gets its reload, once."""
    vault.kv1["secret/p"] = {"v": "1"}
    out = tmp_path / "o"
    out.mkdir()
    reloads = tmp_path / "reloads"
    cfg = f"""
vault_addr: {vault.addr}
token: root-token
dest_dir: {out}
refresh: 200ms
secrets:
  - name: p
    path: secret/p
    reload_command: ["/bin/sh", "-c", "echo x >> {reloads}"]
    reload_debounce: 3s
"""

    def count():
        return len(reloads.read_text().split()) if reloads.exists() else 0

    sc = sidecar_run("secrets", config=cfg)
    wait_until(lambda: count() == 1, timeout=15, what="the first write's reload")
    vault.kv1["secret/p"] = {"v": "2"}
    wait_until(lambda: (out / "p").read_text() == "v: 2\n", timeout=5, what="rotated")
    assert count() == 1
    assert sc.get("/reload", method="POST")[0] == 200
    wait_until(lambda: count() == 2, timeout=15, what="the owed reload")
    time.sleep(1.5)
    assert count() == 2


def test_plain_http_vault_without_libcurl(sidecar_run, vault, tmp_path):
    """A plain http:// Vault address (a host name, resolved) goes through the HTTP/1.1 client of
    net/: an AppRole login with a JSON body, the namespace header and a KV read work, and libcurl
    and OpenSSL are never loaded. With a proxy in the environment libcurl sends, and is loaded."""
    vault.approles["role-1"] = "secret-1"
    vault.kv1["secret/plain"] = {"k": "v"}
    port = vault.addr.rsplit(":", 1)[1]
    out = tmp_path / "o"
    out.mkdir()
    cfg = f"""
vault_addr: http://localhost:{port}/
role_id: role-1
secret_id: secret-1
dest_dir: {out}
secrets:
  - name: p
    path: secret/plain
"""
    sc = sidecar_run("secrets", config=cfg, env={"VAULT_NAMESPACE": "team-b"})
    assert (out / "p").read_text() == "k: v\n"
    assert vault.count("POST", "/v1/auth/approle/login") == 1
    assert set(vault.namespace_seen) == {"team-b"}
    maps = open(f"/proc/{sc.proc.pid}/maps").read()
    assert "libcurl" not in maps and "libssl" not in maps
    assert "secret-1" not in sc.logs()
    assert sc.stop() == 0

    # A proxy libcurl would honour (bypassed for this host by no_proxy): libcurl sends.
    out2 = tmp_path / "o2"
    out2.mkdir()
    sc2 = sidecar_run("secrets", config=cfg.replace(str(out), str(out2)),
                      env={"http_proxy": "http://127.0.0.1:9", "no_proxy": "localhost"})
    assert (out2 / "p").read_text() == "k: v\n"
    assert "libcurl" in open(f"/proc/{sc2.proc.pid}/maps").read()


def test_unresolvable_vault_host_fails_clearly_after_retries(run_cli, tmp_path):
    """A Vault host name that does not resolve: each attempt says so, retries with backoff, and
    --once gives up after the attempts allowed."""
    r = run_cli("secrets", "--admin", "127.0.0.1:0", "--once", "--retries", "2",
                "--retry-backoff", "50ms", "--dest-dir", str(tmp_path),
                "--vault-addr", "http://vault.invalid:8200", "-c", "/dev/null",
                env={"VAULT_TOKEN": "t", "SIDECAR_VAULT_ANNOTATIONS":
                     'vault.hashicorp.com/agent-inject-secret-a="secret/a"'})
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("cannot resolve vault.invalid") == 3, r.stderr
    assert r.stderr.count("Vault authentication failed; retrying") == 2, r.stderr
    assert "secrets failed; the init step fails" in r.stderr
