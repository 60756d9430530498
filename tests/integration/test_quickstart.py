# SPDX-License-Identifier: Apache-2.0
"""`make demo` runs examples/quickstart/run.sh: it must come up, proxy, retry and stop cleanly."""
import os
import subprocess

from conftest import BIN, ROOT, free_port


def test_quickstart_runs_end_to_end():
    env = dict(os.environ, DEMO_ONESHOT="1", APP_PORT=str(free_port()),
               PROXY_PORT=str(free_port()), ADMIN_PORT=str(free_port()))
    r = subprocess.run([str(ROOT / "examples/quickstart/run.sh"), BIN], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "hello from the demo app (request id " in out
    assert "request id none" not in out, "the proxy adds X-Request-Id"
    assert "flaky: ok" in out, "the proxy retried the 503"
    assert 'sidecar_upstream_rq_retry_total{cluster="upstream"} 1' in out
    assert '"status":200' in out, "the access log shows the requests"
