# SPDX-License-Identifier: Apache-2.0
"""The Pod examples of the classic sidecar patterns (examples/pods/), run with `sidecar pod run`:
app + log shipper sharing an emptyDir, app + proxy, app + config fetcher and refresher."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, ROOT, free_port, http_get, wait_until

EXAMPLES = ROOT / "examples" / "pods"


def run(tmp_path, name, env=None, wait=True, timeout=60):
    e = dict(os.environ, SIDECAR=BIN, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    e.update(env or {})
    admin = free_port()
    cmd = [BIN, "pod", "run", str(EXAMPLES / name), "--pod-dir", str(tmp_path / "pod"),
           "--admin", f"127.0.0.1:{admin}"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
    if not wait:
        return p, admin
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_valid(run_cli, name):
    r = run_cli("pod", "check", str(EXAMPLES / name))
    assert r.returncode == 0, r.stderr


def test_log_shipper_ships_every_line(tmp_path):
    code, out = run(tmp_path, "log-shipper.yaml",
                    env={"LINES": "500", "LOGS_ADMIN_PORT": str(free_port())})
    assert code == 0, out
    assert "wrote 500 lines" in out
    shipped = (tmp_path / "pod" / "volumes" / "logs" / "shipped.jsonl").read_text().splitlines()
    assert len(shipped) == 500
    assert json.loads(shipped[-1])["n"] == 500


def test_config_fetcher_and_refresher(tmp_path):
    code, out = run(tmp_path, "config-refresher.yaml", env={"APP_SECONDS": "0.2"})
    assert code == 0, out
    assert 'app sees: {"greeting": "hello from a ConfigMap"}' in out


def test_proxy_in_front_of_the_app(tmp_path):
    ports = {"APP_PORT": str(free_port()), "PROXY_PORT": str(free_port()),
             "ADMIN_PORT": str(free_port())}
    p, admin = run(tmp_path, "proxy.yaml", env=ports, wait=False)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready", timeout=1)[0] == 200,
                   timeout=20, what="pod ready")
        status, body, _ = http_get(f"http://127.0.0.1:{ports['PROXY_PORT']}/", timeout=5)
        assert status == 200
        assert b"Directory listing" in body
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
