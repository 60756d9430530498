# SPDX-License-Identifier: Apache-2.0
"""The admin server every role runs: endpoints, strict HTTP/1 parsing, drain and reload.

The proxy role hosts it here, with its data path pointed at ports nothing listens on; these tests
only talk to the admin port.
"""
import json
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port, http_get, wait_until


def proxy_args():
    return ["--listen", f"127.0.0.1:{free_port()}", "--upstream", f"127.0.0.1:{free_port()}"]


@pytest.fixture
def sidecar(sidecar_run):
    return sidecar_run("proxy", proxy_args())


def raw(port, data, timeout=5):
    """Sends raw bytes to the admin port and returns everything it answers until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_healthz_and_ready(sidecar):
    assert sidecar.get("/healthz")[:2] == (200, b"ok\n")
    assert sidecar.get("/ready")[:2] == (200, b"ready\n")


def test_metrics_pass_promtool(sidecar, tmp_path):
    status, body, headers = sidecar.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'sidecar_build_info{version="' in text
    assert "process_resident_memory_bytes" in text
    assert "# TYPE sidecar_reloads_total counter" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is required"
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_config_is_json_with_common_and_role_options(sidecar):
    status, body, headers = sidecar.get("/config")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    cfg = json.loads(body)
    assert cfg["admin"] == f"127.0.0.1:{sidecar.admin_port}"
    assert cfg["log_format"] == "json"
    assert cfg["drain_timeout"] == "25s"


def test_unknown_path_and_wrong_method(sidecar):
    status, body, _ = sidecar.get("/nope")
    assert status == 404
    status, body, headers = sidecar.get("/quitquitquit")
    assert status == 405
    assert b"POST" in body
    status, _, _ = sidecar.get("/healthz", method="POST", data=b"")
    assert status == 405


def test_head_answers_the_get_head_without_a_body(sidecar):
    # Pipelined after the HEAD, the GET's response must be the next thing on the wire: a body
    # after the HEAD response would be read as a broken status line.
    out = raw(
        sidecar.admin_port,
        b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    head, rest = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 3" in head
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b"\r\n\r\nok\n")
    status, body, headers = sidecar.get("/quitquitquit", method="HEAD")
    assert status == 405 and body == b""
    status, body, headers = sidecar.get("/nope", method="OPTIONS")
    assert status == 404


def test_keep_alive_and_pipelining(sidecar):
    req = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    out = raw(sidecar.admin_port, req * 3 + b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 4
    assert out.endswith(b"ready\n")


SMUGGLING = [
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    (b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    (b"POST /reload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\nHost: a\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHo(st: a\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET  /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
]


@pytest.mark.parametrize("request_bytes,status", SMUGGLING,
                         ids=[f"{i}-{st}" for i, (_, st) in enumerate(SMUGGLING)])
def test_malformed_requests_get_a_status_and_a_reason(sidecar, request_bytes, status):
    out = raw(sidecar.admin_port, request_bytes)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert b"Connection: close" in head
    assert len(body.strip()) > 3, "the reason is in the body"


def test_chunked_body_with_invalid_size_is_rejected(sidecar):
    out = raw(sidecar.admin_port, b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert out.startswith(b"HTTP/1.1 4"), out


def test_bodies_chunked_or_after_100_continue(sidecar, tmp_path):
    """curl's chunked upload and its Expect: 100-continue both reach a handler; a body over the
    1 MiB cap is refused with 413 before it is sent."""
    url = f"http://127.0.0.1:{sidecar.admin_port}/reload"
    out = subprocess.run(["curl", "-sS", "-i", "-H", "Transfer-Encoding: chunked",
                          "--data-binary", "", url], capture_output=True, timeout=20)
    assert out.stdout.startswith(b"HTTP/1.1 200 "), out.stdout + out.stderr
    out = subprocess.run(["curl", "-sS", "-i", "-H", "Expect: 100-continue",
                          "--data-binary", "x", url], capture_output=True, timeout=20)
    assert out.stdout.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), out.stdout
    big = tmp_path / "big"
    big.write_bytes(b"b" * (2 << 20))
    out = subprocess.run(["curl", "-sS", "-i", "-H", "Expect: 100-continue",
                          "--data-binary", f"@{big}", url], capture_output=True, timeout=20)
    assert out.stdout.startswith(b"HTTP/1.1 413 "), out.stdout[:200]
    assert b"too large" in out.stdout
    assert sidecar.get("/healthz")[0] == 200


def test_sigterm_exits_zero(sidecar):
    assert sidecar.stop(signal.SIGTERM) == 0
    assert '"msg":"draining"' in sidecar.logs()


def test_quitquitquit_drains_and_exits_zero(sidecar):
    status, body, _ = sidecar.get("/quitquitquit", method="POST", data=b"")
    assert (status, body) == (200, b"draining\n")
    sidecar.proc.wait(timeout=30)
    assert sidecar.proc.returncode == 0
    sidecar.stop()


def test_ready_goes_503_while_draining(sidecar_run, tmp_path):
    # A held-open admin connection does not keep the process alive, but the drain is observable
    # through the log before exit.
    sc = sidecar_run("proxy", proxy_args())
    sc.proc.send_signal(signal.SIGTERM)
    sc.proc.wait(timeout=30)
    assert sc.proc.returncode == 0
    logs = sc.logs()
    assert logs.index('"msg":"draining"') < logs.index('"msg":"stopped"')
    sc.stop()


def test_reload_rejects_bad_config_and_keeps_old(sidecar_run, tmp_path):
    port = free_port()
    sc = sidecar_run("proxy", proxy_args(), config="log_level: info\n")
    sc.config_path.write_text("log_level: loud\n")
    status, body, _ = sc.get("/reload", method="POST", data=b"")
    assert status == 400, body
    assert b"loud" in body and b"previous configuration keeps running" in body
    assert sc.get("/ready")[0] == 200
    assert json.loads(sc.get("/config")[1])["log_level"] == "info"
    sc.config_path.write_text("log_level: debug\n")
    sc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: json.loads(sc.get("/config")[1])["log_level"] == "debug", what="reload")
    status, body, _ = sc.get("/metrics")
    assert b'sidecar_reloads_total{result="failure"} 1' in body
    assert b'sidecar_reloads_total{result="success"} 1' in body
    del port


def test_admin_port_in_use_fails_clearly(sidecar_run, sidecar, run_cli):
    r = run_cli("proxy", *proxy_args(), "--admin", f"127.0.0.1:{sidecar.admin_port}", timeout=20)
    assert r.returncode == 1
    assert "cannot listen" in r.stderr, r.stderr
