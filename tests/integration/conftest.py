# SPDX-License-Identifier: Apache-2.0
"""Fixtures that start the real sidecar binary on free loopback ports.

`sidecar_run(role, args=..., config=...)` writes an inline YAML config (if given), starts the
binary, waits until its admin /ready answers 200 (or /healthz, when wait="healthz"), and on
teardown sends SIGTERM and asserts a clean exit 0 within the drain timeout. Every process a test
starts is stopped by PID. SIDECAR_BIN selects the binary (make test sets it; the ASan run points
it at the sanitizer build).
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SIDECAR_BIN", str(ROOT / "build" / "sidecar"))


_GIVEN_PORTS = set()


def free_port():
    """Returns a TCP port on 127.0.0.1 that was free a moment ago and that this session has not
    handed out before: the kernel may offer the same port to two calls in a row, and a test that
    asks for two ports must get two."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise RuntimeError("no fresh free port on 127.0.0.1")


def http_get(url, timeout=5, method="GET", data=None, headers=None):
    """Returns (status, body bytes, headers) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def memory_env():
    """The environment of a sidecar whose memory a test bounds: under ASan, a small quarantine
    (ASan keeps freed blocks in a quarantine of up to 256 MiB, so a process that frees and
    reallocates buffers as it goes grows RSS by itself). None otherwise."""
    if not os.environ.get("SIDECAR_SANITIZED"):
        return None
    return {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


class Sidecar:
    """One running sidecar process."""

    def __init__(self, role, args, tmp_path, config=None, admin_port=None, env=None):
        self.role = role
        self.admin_port = admin_port or free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.config_path = None
        cmd = [BIN, role, "--admin", f"127.0.0.1:{self.admin_port}", "--log-format", "json"]
        if config is not None:
            self.config_path = tmp_path / f"{role}-{self.admin_port}.yaml"
            self.config_path.write_text(config)
            cmd += ["-c", str(self.config_path)]
        cmd += list(args)
        self.cmd = cmd
        self.log_path = tmp_path / f"{role}-{self.admin_port}.log"
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=e)

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path, **kw):
        return http_get(self.admin + path, **kw)

    def wait_ready(self, endpoint="/ready", timeout=15):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited with {self.proc.returncode}:\n{self.logs()}")
            return self.get(endpoint, timeout=1)[0] == 200

        try:
            wait_until(ok, timeout=timeout, what=f"{self.role} {endpoint}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- sidecar log ---\n{self.logs()}") from None
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the process and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sidecar did not exit within {timeout}s:\n{self.logs()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def sidecar_run(tmp_path):
    """Starts sidecars; each is stopped with SIGTERM at teardown and must exit 0."""
    started = []

    def run(role, args=(), config=None, wait="/ready", env=None, admin_port=None):
        sc = Sidecar(role, args, tmp_path, config=config, admin_port=admin_port, env=env)
        started.append(sc)
        if wait:
            sc.wait_ready(wait)
        return sc

    yield run
    failures = []
    for sc in started:
        if sc.proc.returncode is not None and sc.log.closed:
            continue  # the test stopped it and checked the result itself
        code = sc.stop()
        if code != 0:
            failures.append(f"{sc.cmd} exited {code}:\n{sc.logs()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def run_cli():
    """Runs the binary to completion: returns CompletedProcess with text output."""

    def run(*args, timeout=30, env=None):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, env=e)

    return run
