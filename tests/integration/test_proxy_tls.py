# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy with TLS: termination (curl, openssl s_client, Python's ssl), every handshake
failure counted by its reason, PERMISSIVE serving TLS and plaintext on one port, SNI choosing
among certificates, resumption with tickets, certificate rotation by an atomic symlink swap under
load with zero failed requests, a broken replacement keeping the old pair, X-Forwarded-Client-Cert
sanitised and set, origination to a real nginx (verification, SNI, mutual TLS), and two sidecars
in a chain over mesh mTLS with the caller's SPIFFE ID at the far end."""
import json
import os
import subprocess
import threading
import time

import pytest
from config_peers import Nginx, nginx_http
from conftest import free_port, memory_env
from proxy_util import FakeUpstream, access_lines, echo_handler, get, metric, proxy_config, wait_for
from tls_util import (TLSClient, curl, https_up, make_leaf, peer_serial, pki, s_client,  # noqa: F401
                      serial_of, tls_context)


@pytest.fixture
def echo():
    up = FakeUpstream(echo_handler)
    yield up
    up.close()


def headers_seen(body):
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def metrics(sc):
    return sc.get("/metrics")[1].decode()


def hs(sc, listener, result):
    return metric(metrics(sc), "sidecar_tls_handshakes_total", listener=listener,
                  result=result) or 0


def tls_listener(port, upstream, tls, **extra):
    lst = {"name": "web", "address": f"127.0.0.1:{port}", "tls": tls,
           "routes": [{"name": "r", "cluster": "app"}]}
    lst.update(extra)
    return proxy_config([lst], [{"name": "app", "endpoints": [upstream]}])


# ---- termination ----

def test_tls_quick_start_curl_and_python(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr,
                               "--tls-cert", str(pki / "server.pem"),
                               "--tls-key", str(pki / "server.key")])
    rc, body, code = curl(f"https://localhost:{port}/hello", "--cacert", str(pki / "ca.pem"))
    assert rc == 0 and code == 200
    h = headers_seen(body)
    assert h["x-forwarded-proto"] == "https"
    assert "x-forwarded-client-cert" not in h
    c = TLSClient(port, tls_context(pki / "ca.pem"))
    for i in range(3):  # keep-alive over one TLS connection
        status, _, b = c.request(f"/k{i}")
        assert status == 200 and json.loads(b)["target"] == f"/k{i}"
    c.close()
    line = access_lines(sc, 4)[0]
    assert line["tls_version"] in ("TLSv1.3", "TLSv1.2")
    assert line["peer_principal"] == ""
    assert hs(sc, "listen", "ok") >= 2
    # Plaintext on a TLS-only port is refused and counted.
    rc, _, _ = curl(f"http://127.0.0.1:{port}/")
    assert rc != 0
    assert wait_for(lambda: hs(sc, "listen", "not_tls") >= 1)


@pytest.mark.parametrize("name", ["rsa", "ed25519"])
def test_tls_key_types(sidecar_run, echo, pki, name):
    port = free_port()
    sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(pki / f"{name}.pem"), "key": str(pki / f"{name}.key")}))
    rc, _, code = curl(f"https://localhost:{port}/", "--cacert", str(pki / "ca.pem"))
    assert rc == 0 and code == 200


def test_tls_versions_and_alpn(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
        "alpn": ["http/1.1"]}))
    rc, out = s_client(port, "-tls1_2", "-alpn", "h2,http/1.1", "-CAfile", str(pki / "ca.pem"),
                       "-servername", "localhost")
    assert rc == 0 and "Protocol  : TLSv1.2" in out.replace("Protocol :", "Protocol  :")
    assert "ALPN protocol: http/1.1" in out
    rc, out = s_client(port, "-tls1_3", "-CAfile", str(pki / "ca.pem"))
    assert rc == 0 and "TLSv1.3" in out
    # TLS 1.0 and 1.1 are refused (the client's own security level lowered to offer them).
    rc, out = s_client(port, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0
    rc, out = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0
    assert wait_for(lambda: hs(sc, "web", "protocol_version") >= 2)


def test_tls_listener_without_http2_never_selects_h2(sidecar_run, echo, pki):
    # Envoy's usual `alpn_protocols: [h2, http/1.1]` on an HTTP listener whose HTTP/2 is turned
    # off: h2 is left out of what the server selects (with a warning), so clients that offer it
    # fall back to HTTP/1.1 instead of receiving HTTP/1 bytes on an h2 connection.
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
        "alpn": ["h2", "http/1.1"]}, http2={"enabled": False}))
    rc, out = s_client(port, "-alpn", "h2,http/1.1", "-CAfile", str(pki / "ca.pem"),
                       "-servername", "localhost")
    assert rc == 0 and "ALPN protocol: http/1.1" in out
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--cacert",
                        str(pki / "ca.pem"), "-w", "\n%{http_code} %{http_version}",
                        f"https://localhost:{port}/h2"], capture_output=True, timeout=15)
    assert p.returncode == 0, p.stderr
    assert p.stdout.rsplit(b"\n", 1)[1] == b"200 1.1"
    assert json.loads(p.stdout.rsplit(b"\n", 1)[0])["target"] == "/h2"
    assert "h2" in sc.logs() and "not offered" in sc.logs()


def test_tls_config_refuses_old_versions_and_bad_files(run_cli, pki, tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(tls_listener(free_port(), "127.0.0.1:1", {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
        "min_version": "1.1"}))
    r = run_cli("proxy", "--check", "-c", str(cfg))
    assert r.returncode != 0 and "1.2" in r.stderr
    port = free_port()
    cfg.write_text(tls_listener(port, "127.0.0.1:1", {
        "cert": str(pki / "server.pem"), "key": str(pki / "client.key")}))
    r = run_cli("proxy", "-c", str(cfg), "--admin", f"127.0.0.1:{free_port()}", timeout=20)
    assert r.returncode != 0 and "key" in r.stderr.lower()


def test_openssl_loaded_only_with_tls(sidecar_run, run_cli, echo, pki, tmp_path):
    """OpenSSL is opened at run time: a proxy without TLS does not map it, one with TLS does, and
    a TLS listener whose library cannot be loaded is refused with the loader's reason."""
    def mapped(sc):
        return "libssl.so" in (open(f"/proc/{sc.proc.pid}/maps").read())

    plain = sidecar_run("proxy", ["--listen", f"127.0.0.1:{free_port()}", "--upstream", echo.addr])
    assert not mapped(plain)
    port = free_port()
    tls = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr,
                                "--tls-cert", str(pki / "server.pem"),
                                "--tls-key", str(pki / "server.key")])
    assert mapped(tls)
    broken = tmp_path / "lib"
    broken.mkdir()
    (broken / "libssl.so.3").write_bytes(b"not a library")
    r = run_cli("proxy", "--admin", f"127.0.0.1:{free_port()}", "--listen",
                f"127.0.0.1:{free_port()}", "--upstream", echo.addr,
                "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                env={"LD_LIBRARY_PATH": str(broken)}, timeout=20)
    assert r.returncode != 0
    assert "TLS needs OpenSSL 3" in r.stderr and "libssl.so.3" in r.stderr


def quick_start_on_copies(sidecar_run, echo, pki, tmp_path):
    """A proxy started with --tls-cert/--tls-key on copies of the server pair (the test rewrites
    them); returns (sidecar, port, cert path, key path)."""
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_bytes((pki / "server.pem").read_bytes())
    key.write_bytes((pki / "server.key").read_bytes())
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr,
                               "--tls-cert", str(cert), "--tls-key", str(key)])
    return sc, port, cert, key


def test_openssl_errors_named_though_strings_load_late(sidecar_run, run_cli, echo, pki,
                                                      tmp_path):
    """OpenSSL runs without its error strings until an error is described: refusals at start and
    at a reload still name OpenSSL's reason."""
    def start(cert, key):
        return run_cli("proxy", "--admin", f"127.0.0.1:{free_port()}", "--listen",
                       f"127.0.0.1:{free_port()}", "--upstream", echo.addr, "--tls-cert",
                       str(cert), "--tls-key", str(key), timeout=20)
    r = start(pki / "server.pem", pki / "server.pem")  # a certificate where the key should be
    assert r.returncode != 0 and "bad PEM or not a private key (unsupported)" in r.stderr
    r = start(pki / "notpem.pem", pki / "server.key")
    assert r.returncode != 0 and "bad PEM (no start line)" in r.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n")
    r = start(pki / "server.pem", garbage)
    assert r.returncode != 0 and "(nested asn1 error)" in r.stderr

    sc, port, _, key = quick_start_on_copies(sidecar_run, echo, pki, tmp_path)
    ca = pki / "ca.pem"
    assert curl(f"https://localhost:{port}/", "--cacert", str(ca))[2] == 200
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n")
    assert wait_for(lambda: "nested asn1 error" in sc.logs(), timeout=10)
    assert curl(f"https://localhost:{port}/", "--cacert", str(ca))[2] == 200


def test_quick_start_watches_files_and_caches_sessions(sidecar_run, echo, pki, tmp_path):
    """--tls-cert/--tls-key get the tls options' defaults, as a configured listener does: the
    files are watched (a new pair is served, a broken one refused) and sessions are cached for
    clients without tickets."""
    sc, port, cert, key = quick_start_on_copies(sidecar_run, echo, pki, tmp_path)
    ca = pki / "ca.pem"
    assert peer_serial(port, ca) == serial_of(pki / "server.pem")
    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    rc, out = s_client(port, "-tls1_2", "-no_ticket", "-CAfile", str(ca), "-sess_out", str(sess),
                       data=req)
    assert rc == 0
    rc, out = s_client(port, "-tls1_2", "-no_ticket", "-CAfile", str(ca), "-sess_in", str(sess),
                       data=req)
    assert rc == 0 and "Reused" in out, out
    key.write_bytes((pki / "rsa.key").read_bytes())
    cert.write_bytes((pki / "rsa.pem").read_bytes())
    assert wait_for(lambda: peer_serial(port, ca) == serial_of(pki / "rsa.pem"), timeout=10)
    assert "TLS certificates reloaded" in sc.logs()


def test_tls_sni_chooses_among_certificates(sidecar_run, echo, pki):
    port = free_port()
    sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
        "certificates": [{"cert": str(pki / "rsa.pem"), "key": str(pki / "rsa.key")},
                         {"cert": str(pki / "wild.pem"), "key": str(pki / "wild.key")}]}))
    ca = pki / "ca.pem"
    assert peer_serial(port, ca, "rsa.test") == serial_of(pki / "rsa.pem")
    assert peer_serial(port, ca, "a.wild.test") == serial_of(pki / "wild.pem")
    assert peer_serial(port, ca, "unknown.test") == serial_of(pki / "server.pem")
    rc, _, code = curl(f"https://rsa.test:{port}/", "--cacert", str(ca), "--resolve",
                       f"rsa.test:{port}:127.0.0.1")
    assert rc == 0 and code == 200
    # A Host that another of the listener's certificates names: 421, the client must reconnect.
    rc, body, code = curl(f"https://rsa.test:{port}/", "--cacert", str(ca), "--resolve",
                          f"rsa.test:{port}:127.0.0.1", "-H", "Host: a.wild.test")
    assert rc == 0 and code == 421 and b"misdirected" in body
    # A Host no certificate names is not misdirected (the route decides).
    rc, _, code = curl(f"https://rsa.test:{port}/", "--cacert", str(ca), "--resolve",
                       f"rsa.test:{port}:127.0.0.1", "-H", "Host: elsewhere.test")
    assert rc == 0 and code == 200


def test_tls_resumption(sidecar_run, echo, pki, tmp_path):
    port = free_port()
    sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key")}))
    sess = tmp_path / "sess.pem"
    for proto in ("-tls1_2", "-tls1_3"):
        rc, out = s_client(port, proto, "-CAfile", str(pki / "ca.pem"), "-sess_out", str(sess),
                           data=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert rc == 0
        rc, out = s_client(port, proto, "-CAfile", str(pki / "ca.pem"), "-sess_in", str(sess),
                           data=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert rc == 0 and "Reused" in out, out


# ---- mutual TLS and handshake failures ----

def mtls_listener(port, upstream, pki, mode="strict", **extra):
    return tls_listener(port, upstream, {
        "cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
        "client_ca": str(pki / "ca.pem"), "client_cert": "require"}, mtls=mode, **extra)


def test_mtls_failures_by_reason(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=mtls_listener(port, echo.addr, pki))
    ca = str(pki / "ca.pem")
    url = f"https://localhost:{port}/"
    rc, body, code = curl(url, "--cacert", ca, "--cert", str(pki / "client.pem"), "--key",
                          str(pki / "client.key"))
    assert rc == 0 and code == 200
    h = headers_seen(body)
    xfcc = h["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/default/sa/client" in xfcc
    assert "Hash=" in xfcc and 'Subject="' in xfcc
    assert "By=spiffe://cluster.local/ns/default/sa/server" in xfcc
    line = access_lines(sc, 1)[-1]
    assert line["peer_principal"] == "cluster.local/ns/default/sa/client"
    # No client certificate, one from another CA, an expired one.
    assert curl(url, "--cacert", ca)[0] != 0
    assert curl(url, "--cacert", ca, "--cert", str(pki / "other.pem"), "--key",
                str(pki / "other.key"))[0] != 0
    assert curl(url, "--cacert", ca, "--cert", str(pki / "expired.pem"), "--key",
                str(pki / "expired.key"))[0] != 0
    assert wait_for(lambda: hs(sc, "web", "no_client_cert") >= 1)
    assert wait_for(lambda: hs(sc, "web", "unknown_ca") >= 1)
    assert wait_for(lambda: hs(sc, "web", "expired") >= 1)
    # Plaintext under STRICT.
    r = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
                       capture_output=True)
    assert r.returncode != 0
    assert wait_for(lambda: hs(sc, "web", "not_tls") >= 1)


def test_xfcc_sanitised(sidecar_run, echo, pki):
    port = free_port()
    sidecar_run("proxy", config=mtls_listener(port, echo.addr, pki))
    ctx = tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    c = TLSClient(port, ctx)
    _, _, body = c.request(headers=[("X-Forwarded-Client-Cert", "URI=spiffe://evil/ns/x/sa/y")])
    xfcc = headers_seen(body)["x-forwarded-client-cert"]
    assert "evil" not in xfcc and "sa/client" in xfcc
    c.close()
    # A plaintext listener never passes a client's XFCC on either.
    port2 = free_port()
    sidecar_run("proxy", ["--listen", f"127.0.0.1:{port2}", "--upstream", echo.addr])
    r = get(port2, headers=[("X-Forwarded-Client-Cert", "URI=spiffe://evil/ns/x/sa/y")])
    assert "x-forwarded-client-cert" not in headers_seen(r.body)


def test_xfcc_append_forward(sidecar_run, echo, pki):
    port = free_port()
    sidecar_run("proxy", config=mtls_listener(port, echo.addr, pki,
                                             forward_client_cert="append_forward"))
    c = TLSClient(port, tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key"))
    _, _, body = c.request(headers=[("X-Forwarded-Client-Cert", "By=a;URI=spiffe://up/ns/a/sa/b")])
    xfcc = headers_seen(body)["x-forwarded-client-cert"]
    assert xfcc.startswith("By=a;URI=spiffe://up/ns/a/sa/b,") and "sa/client" in xfcc
    c.close()


def test_permissive_serves_tls_and_plaintext(sidecar_run, echo, pki):
    port = free_port()
    sc = sidecar_run("proxy", config=mtls_listener(port, echo.addr, pki, mode="permissive"))
    assert get(port).status == 200
    rc, body, code = curl(f"https://localhost:{port}/", "--cacert", str(pki / "ca.pem"),
                          "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"))
    assert rc == 0 and code == 200
    assert "sa/client" in headers_seen(body)["x-forwarded-client-cert"]
    lines = access_lines(sc, 2)
    assert "tls_version" not in lines[0] and lines[1]["tls_version"]


# ---- rotation ----

def test_rotation_under_load_symlink_swap(sidecar_run, echo, pki, tmp_path):
    """Kubernetes swaps a secret volume's ..data symlink atomically: during a load, no request
    fails and later handshakes present the new certificate."""
    vol = tmp_path / "vol"
    (vol / "v1").mkdir(parents=True)
    (vol / "v2").mkdir()
    for f in ("pem", "key"):
        (vol / "v1" / f"tls.{f}").write_bytes((pki / f"server.{f}").read_bytes())
    make_leaf(pki, "server_v2", "DNS:localhost,IP:127.0.0.1", out=vol / "v2")
    os.rename(vol / "v2" / "server_v2.pem", vol / "v2" / "tls.pem")
    os.rename(vol / "v2" / "server_v2.key", vol / "v2" / "tls.key")
    os.symlink("v1", vol / "..data")
    for f in ("pem", "key"):
        os.symlink(f"..data/tls.{f}", vol / f"tls.{f}")
    port = free_port()
    sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(vol / "tls.pem"), "key": str(vol / "tls.key"), "watch_interval": "200ms"}))
    ca = pki / "ca.pem"
    old = peer_serial(port, ca)
    assert old == serial_of(pki / "server.pem")
    failures, done, count = [], threading.Event(), [0]

    def load():
        while not done.is_set():
            try:
                c = TLSClient(port, tls_context(ca))  # a new handshake each time
                for _ in range(5):
                    status, _, _ = c.request()
                    if status != 200:
                        failures.append(status)
                    count[0] += 1
                c.close()
            except Exception as e:  # noqa: BLE001 - every failure is counted
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.symlink("v2", vol / "..data.tmp")
    os.rename(vol / "..data.tmp", vol / "..data")  # the atomic swap
    new = serial_of(vol / "v2" / "tls.pem")
    assert wait_for(lambda: peer_serial(port, ca) == new, timeout=10)
    time.sleep(0.5)
    done.set()
    for t in threads:
        t.join()
    assert failures == [] and count[0] > 50


def test_broken_replacement_keeps_the_old_pair(sidecar_run, echo, pki, tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_bytes((pki / "server.pem").read_bytes())
    key.write_bytes((pki / "server.key").read_bytes())
    port = free_port()
    sc = sidecar_run("proxy", config=tls_listener(port, echo.addr, {
        "cert": str(cert), "key": str(key), "watch_interval": "200ms"}))
    ca = pki / "ca.pem"
    serial = peer_serial(port, ca)
    # A key that does not match, then a file that is not PEM: both refused.
    key.write_bytes((pki / "client.key").read_bytes())
    assert wait_for(lambda: "tls" in sc.logs() and "reload" in sc.logs().lower(), timeout=10)
    time.sleep(0.5)
    assert peer_serial(port, ca) == serial
    cert.write_bytes(b"not a certificate\n")
    time.sleep(0.6)
    assert peer_serial(port, ca) == serial
    assert curl(f"https://localhost:{port}/", "--cacert", str(ca))[2] == 200


# ---- origination ----

def nginx_tls_conf(root, port, pki, verify_client=False):
    extra = f"""
        ssl_client_certificate {pki / 'ca.pem'};
        ssl_verify_client on;""" if verify_client else ""
    return nginx_http(root, f"""server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki / 'server.pem'};
        ssl_certificate_key {pki / 'server.key'};{extra}
        location / {{ return 200 "tls upstream sni=$ssl_server_name client=$ssl_client_s_dn"; }}
    }}""")


@pytest.fixture
def nginx_tls(tmp_path, pki):
    started = []

    def start(verify_client=False):
        port = free_port()
        root = tmp_path / f"nginx{port}"
        root.mkdir()
        (root / "tmp").mkdir()
        n = Nginx(root, nginx_tls_conf(root, port, pki, verify_client), port=port)
        started.append(n.start(ready=lambda: https_up(port)))
        return n

    yield start
    for n in started:
        n.stop()


def upstream_cfg(port, nginx_port, tls):
    return proxy_config(
        [{"name": "l", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "up", "retry_policy": {"num_retries": 0}}]}],
        [{"name": "up", "endpoints": [f"localhost:{nginx_port}"], "tls": tls}])


def test_origination_to_nginx(sidecar_run, nginx_tls, pki):
    n = nginx_tls()
    port = free_port()
    sc = sidecar_run("proxy", config=upstream_cfg(port, n.port, {"ca": str(pki / "ca.pem")}))
    r = get(port)
    assert r.status == 200 and b"sni=localhost" in r.body
    assert metric(metrics(sc), "sidecar_upstream_tls_handshakes_total", cluster="up",
                  result="ok") == 1
    # A name the certificate does not carry, and a CA that did not sign it: refused (502).
    port2 = free_port()
    sc2 = sidecar_run("proxy", config=upstream_cfg(port2, n.port, {
        "ca": str(pki / "ca.pem"), "subject_alt_names": ["other.test"]}))
    r = get(port2)
    assert r.status == 502 and b"bad_san" in r.body
    assert metric(metrics(sc2), "sidecar_upstream_tls_handshakes_total", cluster="up",
                  result="bad_san") >= 1
    port3 = free_port()
    sidecar_run("proxy", config=upstream_cfg(port3, n.port, {"ca": str(pki / "other_ca.pem")}))
    r = get(port3)
    assert r.status == 502 and b"unknown_ca" in r.body


def test_origination_mutual_to_nginx(sidecar_run, nginx_tls, pki):
    n = nginx_tls(verify_client=True)
    port = free_port()
    sidecar_run("proxy", config=upstream_cfg(port, n.port, {
        "ca": str(pki / "ca.pem"), "cert": str(pki / "client.pem"),
        "key": str(pki / "client.key")}))
    r = get(port)
    assert r.status == 200 and b"CN=client" in r.body
    # Without a certificate nginx answers 400 itself.
    port2 = free_port()
    sidecar_run("proxy", config=upstream_cfg(port2, n.port, {"ca": str(pki / "ca.pem")}))
    assert get(port2).status == 400


def test_origination_quick_flags(sidecar_run, nginx_tls, pki):
    n = nginx_tls()
    port = free_port()
    sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", f"localhost:{n.port}",
                          "--upstream-ca", str(pki / "ca.pem"), "--upstream-sni", "server.test"])
    r = get(port)
    assert r.status == 200 and b"sni=server.test" in r.body


# ---- two sidecars over mesh mTLS ----

def mesh_pair(sidecar_run, upstream, pki, trust_domain=None, both=False):
    """An inbound sidecar (STRICT, identity server.pem) in front of <upstream> and an outbound one
    (identity client.pem) whose cluster `peer` is the inbound one over mesh mTLS. Returns the
    inbound sidecar and the two ports (with <both>, the outbound sidecar too, last)."""
    inbound, outbound = free_port(), free_port()
    sc_in = sidecar_run("proxy", config=proxy_config(
        [{"name": "inbound", "address": f"127.0.0.1:{inbound}", "mtls": "strict",
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [upstream]}],
        identity={"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                  "ca": str(pki / "ca.pem")}))
    identity = {"cert": str(pki / "client.pem"), "key": str(pki / "client.key"),
                "ca": str(pki / "ca.pem")}
    if trust_domain:
        identity["trust_domain"] = trust_domain
    sc_out = sidecar_run("proxy", config=proxy_config(
        [{"name": "outbound", "address": f"127.0.0.1:{outbound}", "direction": "outbound",
          "routes": [{"name": "r", "cluster": "peer", "retry_policy": {"num_retries": 0}}]}],
        [{"name": "peer", "endpoints": [f"127.0.0.1:{inbound}"], "tls": {"mode": "mesh"}}],
        identity=identity))
    return (sc_in, inbound, outbound, sc_out) if both else (sc_in, inbound, outbound)


def test_two_sidecars_mesh_mtls_chain(sidecar_run, echo, pki):
    """app -> outbound sidecar -> mTLS -> inbound sidecar (STRICT) -> app: the far app sees the
    caller's SPIFFE ID in XFCC, and a caller without the mesh identity is refused."""
    sc_in, inbound, outbound = mesh_pair(sidecar_run, echo.addr, pki)
    for i in range(3):
        r = get(outbound, path=f"/x{i}")
        assert r.status == 200
        xfcc = headers_seen(r.body)["x-forwarded-client-cert"]
        assert "URI=spiffe://cluster.local/ns/default/sa/client" in xfcc
    line = access_lines(sc_in, 3)[-1]
    assert line["peer_principal"] == "cluster.local/ns/default/sa/client"
    # Plaintext straight to the inbound sidecar is refused under STRICT.
    with pytest.raises((OSError, EOFError)):
        get(inbound)


def test_mesh_cluster_checks_trust_domain(sidecar_run, echo, pki):
    """A mesh cluster refuses a server whose SPIFFE ID is in another trust domain."""
    _, _, outbound = mesh_pair(sidecar_run, echo.addr, pki, trust_domain="example.org")
    r = get(outbound)
    assert r.status == 502 and b"trust domain" in r.body


def relay_100mib_each_way(sidecar_run, listener, ctx):
    """Runs a sidecar with <listener> (a config taking the upstream's address) and sends 100 MiB
    up and 100 MiB down through one TLS connection of client context <ctx>; its peak RSS must
    stay flat. Returns the sidecar."""
    from proxy_util import respond, vm_hwm_kib

    def sink(up, conn, req):
        return respond(conn, 200, b"x" * (100 << 20) if req.target == "/down" else b"ok")

    up = FakeUpstream(sink, discard_body=True)
    try:
        port = free_port()
        sc = sidecar_run("proxy", config=listener(port, up.addr), env=memory_env())
        c = TLSClient(port, ctx, timeout=60)
        assert c.request("/warm")[0] == 200
        base = vm_hwm_kib(sc.proc.pid)
        status, _, _ = c.request("/up", body=b"y" * (100 << 20), method="POST")
        assert status == 200 and up.body_bytes == 100 << 20
        status, _, body = c.request("/down")
        assert status == 200 and body == b"x" * (100 << 20)
        c.close()
        grown = vm_hwm_kib(sc.proc.pid) - base
        assert grown < 8 * 1024, f"peak RSS grew {grown} KiB"
        return sc
    finally:
        up.close()


def test_mtls_100mib_each_way_flat_rss(sidecar_run, pki):
    """100 MiB up and 100 MiB down through one mTLS connection: memory stays flat."""
    relay_100mib_each_way(sidecar_run, lambda port, up: mtls_listener(port, up, pki),
                          tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key"))


# ---- PeerAuthentication ----

def mesh_inbound(port, upstream, pki, pas, labels=None):
    return proxy_config(
        [{"name": "inbound", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "app"}]}],
        [{"name": "app", "endpoints": [upstream]}],
        identity={"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                  "ca": str(pki / "ca.pem")},
        workload={"namespace": "shop", "labels": labels or {"app": "cart"}},
        peer_authentication=pas)


def mtls_get(port, pki):
    return curl(f"https://localhost:{port}/", "--cacert", str(pki / "ca.pem"), "--cert",
                str(pki / "client.pem"), "--key", str(pki / "client.key"))


def plain_ok(port):
    try:
        return get(port).status == 200
    except (OSError, EOFError):
        return False


@pytest.mark.parametrize("pas,labels,plain", [
    ([], None, True),  # no policy: PERMISSIVE, Istio's default
    ([{"name": "mesh", "namespace": "istio-system", "mode": "STRICT"}], None, False),
    ([{"name": "mesh", "namespace": "istio-system", "mode": "STRICT"},
      {"name": "ns", "namespace": "shop", "mode": "PERMISSIVE"}], None, True),
    ([{"name": "ns", "mode": "STRICT"},
      {"name": "w", "match_labels": {"app": "cart"}, "mode": "UNSET"}], None, False),
    ([{"name": "ns", "mode": "STRICT"},
      {"name": "w", "match_labels": {"app": "other"}, "mode": "PERMISSIVE"}], None, False),
    ([{"name": "ns", "mode": "PERMISSIVE"},
      {"name": "w", "match_labels": {"app": "cart"}, "mode": "STRICT"}], None, False),
])
def test_peer_authentication_modes(sidecar_run, echo, pki, pas, labels, plain):
    port = free_port()
    sidecar_run("proxy", config=mesh_inbound(port, echo.addr, pki, pas, labels))
    rc, body, code = mtls_get(port, pki)
    assert rc == 0 and code == 200
    assert plain_ok(port) == plain


def test_peer_authentication_port_level(sidecar_run, echo, pki):
    """A workload policy STRICT with its port DISABLE (the port the client dialled) serves
    plaintext there; the namespace's STRICT keeps another listener TLS-only."""
    port, other = free_port(), free_port()
    cfg = json.loads(mesh_inbound(port, echo.addr, pki, [
        {"name": "w", "match_labels": {"app": "cart"}, "mode": "STRICT",
         "port_level_mtls": [{"port": port, "mode": "DISABLE"}]}]))
    cfg["listeners"].append({"name": "other", "address": f"127.0.0.1:{other}",
                             "routes": [{"name": "r", "cluster": "app"}]})
    sidecar_run("proxy", config=json.dumps(cfg))
    assert plain_ok(port)
    assert not plain_ok(other)
    assert mtls_get(other, pki)[2] == 200


def test_peer_authentication_labels_file(sidecar_run, echo, pki, tmp_path):
    labels = tmp_path / "labels"
    labels.write_text('app="cart"\npod-template-hash="5d9f"\n')
    port = free_port()
    cfg = json.loads(mesh_inbound(port, echo.addr, pki, [
        {"name": "w", "match_labels": {"app": "cart"}, "mode": "STRICT"}]))
    cfg["workload"] = {"namespace": "shop", "labels_file": str(labels)}
    sidecar_run("proxy", config=json.dumps(cfg))
    assert not plain_ok(port)


def test_identity_dir_and_trust_domain_flags(sidecar_run, echo, pki, tmp_path):
    """--identity-dir reads tls.crt, tls.key and ca.crt (cert-manager's CSI driver layout) as the
    identity; --trust-domain sets the domain mesh clusters check."""
    d = tmp_path / "identity"
    d.mkdir()
    for src, dst in (("server.pem", "tls.crt"), ("server.key", "tls.key"), ("ca.pem", "ca.crt")):
        (d / dst).write_bytes((pki / src).read_bytes())
    port = free_port()
    sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr,
                          "--identity-dir", str(d), "--mtls", "strict",
                          "--trust-domain", "cluster.local"])
    rc, body, code = mtls_get(port, pki)
    assert rc == 0 and code == 200
    assert "sa/client" in headers_seen(body)["x-forwarded-client-cert"]
    assert not plain_ok(port)


def test_health_checks_use_the_cluster_tls(sidecar_run, nginx_tls, pki):
    """Active health checks of a cluster that originates TLS are made over that TLS (with its CA and
    SNI): nginx sees them on its TLS port and the endpoint stays in; a CA that did not sign the
    server's certificate fails every check and takes the endpoint out."""
    n = nginx_tls()
    hc = {"path": "/", "interval": "100ms", "timeout": "2s", "unhealthy_threshold": 1,
          "healthy_threshold": 1}

    def cfg(port, ca):
        return proxy_config(
            [{"name": "l", "address": f"127.0.0.1:{port}",
              "routes": [{"name": "r", "cluster": "up", "retry_policy": {"num_retries": 0}}]}],
            [{"name": "up", "endpoints": [f"localhost:{n.port}"], "tls": {"ca": str(ca)},
              "health_check": hc}])

    log = n.root / "logs/access.log"
    sc = sidecar_run("proxy", config=cfg(free_port(), pki / "ca.pem"))
    assert wait_for(lambda: log.exists() and sum(
        1 for ln in log.read_text().splitlines()
        if "sidecar-health-check" in ln and '" 200 ' in ln) >= 3, timeout=15)
    assert metric(metrics(sc), "sidecar_upstream_endpoints_unhealthy", cluster="up") == 0
    bad = sidecar_run("proxy", config=cfg(free_port(), pki / "other_ca.pem"))
    assert wait_for(lambda: metric(metrics(bad), "sidecar_upstream_endpoints_unhealthy",
                                   cluster="up") == 1, timeout=15)


def test_mirror_to_a_tls_shadow(sidecar_run, echo, nginx_tls, pki):
    """A mirror whose shadow cluster originates TLS sends its copies over that TLS: nginx logs them
    on its TLS port with the shadow Host, and the client's answers come from the main cluster."""
    n = nginx_tls()
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [{"name": "l", "address": f"127.0.0.1:{port}",
          "routes": [{"name": "r", "cluster": "app", "retry_policy": {"num_retries": 0},
                      "mirror": {"cluster": "shadow"}}]}],
        [{"name": "app", "endpoints": [echo.addr]},
         {"name": "shadow", "endpoints": [f"localhost:{n.port}"],
          "tls": {"ca": str(pki / "ca.pem")}}]))
    for i in range(3):
        r = get(port, f"/copy/{i}")
        assert r.status == 200 and b"tls upstream" not in r.body
    log = n.root / "logs/access.log"

    def copies():  # nginx answers plaintext on its TLS port with 400: only TLS copies get 200
        lines = log.read_text().splitlines() if log.exists() else []
        return sum(1 for ln in lines if "GET /copy/" in ln and '" 200 ' in ln)

    assert wait_for(lambda: copies() == 3, timeout=15)
