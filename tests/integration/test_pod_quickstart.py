# SPDX-License-Identifier: Apache-2.0
"""examples/quickstart/run.sh: the quickstart as a pod (`sidecar pod run pod.yaml`): an init
container writes the app's config, the proxy, the log shipper and the metrics sidecar run as native
sidecars, requests go through the proxy, the app's log lines reach the shipper's output, its metrics
are served with the pod's label, and the pod stops cleanly."""
import os
import subprocess

from conftest import BIN, ROOT, free_port


def test_quickstart_pod_runs_end_to_end():
    env = dict(os.environ, DEMO_ONESHOT="1", APP_PORT=str(free_port()),
               PROXY_PORT=str(free_port()), ADMIN_PORT=str(free_port()),
               LOGS_ADMIN_PORT=str(free_port()), POD_ADMIN_PORT=str(free_port()),
               METRICS_PORT=str(free_port()), METRICS_ADMIN_PORT=str(free_port()))
    r = subprocess.run([str(ROOT / "examples/quickstart/run.sh"), BIN], env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "wrote /etc/demo/app.env for quickstart" in out
    assert "hello from the demo app (request id " in out
    assert "flaky: ok" in out, "the proxy retried the 503"
    assert 'sidecar_upstream_rq_retry_total{cluster="upstream"} 1' in out
    assert "pod quickstart  Running" in out
    assert '"path":"/flaky","status":200' in out, "the log sidecar shipped the app's lines"
    assert 'demo_requests_total{code="200",pod="quickstart"}' in out, "the metrics sidecar"
