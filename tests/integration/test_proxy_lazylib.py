# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: libraries loaded at run time. nghttp2 is loaded by the first HTTP/2 connection: a
proxy serving HTTP/1 only never maps it (its resident memory stays small), the first h2c
connection maps it, and a library that cannot be loaded refuses HTTP/2 connections with a logged
reason while HTTP/1 keeps working, and refuses a cluster that must speak HTTP/2 at start-up.
PCRE2 is loaded by the first regular expression: a proxy whose routes hold none never maps it."""
import socket
import subprocess

from conftest import free_port
from proxy_util import echo, proxy_config  # noqa: F401  (echo is a fixture)


def mapped(sc, lib="libnghttp2.so"):
    with open(f"/proc/{sc.proc.pid}/maps") as f:
        return lib in f.read()


def curl(*args):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        "--max-time", "10", *args], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout


def test_nghttp2_not_mapped_until_the_first_http2_connection(sidecar_run, echo):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr])
    assert not mapped(sc)
    assert curl(f"http://127.0.0.1:{port}/h1") == (0, "200 1.1")
    assert not mapped(sc), "an HTTP/1 request loaded nghttp2"
    assert curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/h2") == (0, "200 2")
    assert mapped(sc)
    assert curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/h2") == (0, "200 2")


def broken_lib(tmp_path):
    d = tmp_path / "lib"
    d.mkdir()
    (d / "libnghttp2.so.14").write_bytes(b"not a library")
    return {"LD_LIBRARY_PATH": str(d)}


def test_missing_nghttp2_refuses_http2_connections_only(sidecar_run, echo, tmp_path):
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr],
                     env=broken_lib(tmp_path))
    rc, out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/h2")
    assert rc != 0 and out.startswith("000"), (rc, out)
    # Refused again (not a crash), with the reason logged once.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert s.recv(100) == b""
    assert curl(f"http://127.0.0.1:{port}/h1") == (0, "200 1.1")
    assert sc.proc.poll() is None
    logs = sc.logs()
    assert logs.count("HTTP/2 needs libnghttp2.so.14, which cannot be loaded") == 1, logs
    assert "not a library" in logs or "invalid ELF header" in logs or "too short" in logs, logs


def test_missing_nghttp2_refuses_an_http2_cluster(run_cli, echo, tmp_path):
    port = free_port()
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"match": {"prefix": "/"}, "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr], "protocol": "http2"}]))
    r = run_cli("proxy", "--admin", f"127.0.0.1:{free_port()}", "-c", str(cfg),
                env=broken_lib(tmp_path), timeout=20)
    assert r.returncode != 0
    assert "cluster app: protocol http2: HTTP/2 needs nghttp2 (libnghttp2.so.14)" in r.stderr, \
        r.stderr


def test_pcre2_mapped_only_with_a_regex_route(sidecar_run, echo):
    port = free_port()
    plain = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", echo.addr])
    assert curl(f"http://127.0.0.1:{port}/a") == (0, "200 1.1")
    assert not mapped(plain, "libpcre2-8.so")
    port = free_port()
    regex = sidecar_run("proxy", config=proxy_config(
        [{"name": "in", "address": f"127.0.0.1:{port}",
          "routes": [{"match": {"regex": "/v[0-9]+/.*"}, "cluster": "app"}]}],
        [{"name": "app", "endpoints": [echo.addr]}]))
    assert mapped(regex, "libpcre2-8.so")
    assert curl(f"http://127.0.0.1:{port}/v2/x") == (0, "200 1.1")
    assert curl(f"http://127.0.0.1:{port}/x") == (0, "404 1.1")
