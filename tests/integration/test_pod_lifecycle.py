# SPDX-License-Identifier: Apache-2.0
"""`sidecar pod run`: the Kubernetes lifecycle rules (native-sidecars.md), asserted from timestamps
the containers write: start order, shutdown order, Job completion, restart policies, startup and
liveness probes with back-off, the grace period and SIGKILL, preStop hooks, process groups."""
import signal
import time

import pytest

from conftest import wait_until
from pod_util import (Pod, pod, ev, first, manifest, pid_alive, read_events, service, sh,
                      wait_events)

FAST = {"periodSeconds": 0.1, "timeoutSeconds": 1}


def test_start_and_stop_order(pod, tmp_path):
    e = tmp_path / "events"
    flag = tmp_path / "side1-ready"
    p = pod(manifest(
        init=[
            sh("init1", f"sleep 0.1; {ev(e, 'done-init1')}"),
            sh("side1", service(e, "side1", f"sleep 0.3; touch {flag};"),
               restartPolicy="Always",
               startupProbe={"exec": {"command": ["test", "-f", str(flag)]}, **FAST,
                             "failureThreshold": 50}),
            sh("init2", ev(e, "done-init2")),
            # a sidecar counts as started once it runs: the probe only waits for its event
            sh("side2", service(e, "side2", f"touch {flag}2;"), restartPolicy="Always",
               startupProbe={"exec": {"command": ["test", "-f", f"{flag}2"]}, **FAST,
                             "failureThreshold": 50}),
        ],
        containers=[sh("app1", service(e, "app1")), sh("app2", service(e, "app2"))]))
    p.wait_ready()
    wait_events(e, "start-app1", "start-app2")
    assert p.stop() == 0
    order = [n for n, _ in read_events(e)]
    assert order[:4] == ["done-init1", "start-side1", "done-init2", "start-side2"], order
    assert sorted(order[4:6]) == ["start-app1", "start-app2"], order
    # init2 starts only after side1's startup probe passed, which needs side1's flag file
    assert first(e, "done-init2") - first(e, "start-side1") >= 0.3
    # apps stop first; then the sidecars, in reverse order, each after the previous
    assert sorted(order[6:8]) == ["stop-app1", "stop-app2"], order
    assert order[8:] == ["stop-side2", "stop-side1"], order
    assert '"msg":"pod stopped"' in p.output()


def test_job_completion_stops_sidecars_with_app_exit_code(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(
        restart="Never",
        init=[sh("side", service(e, "side"), restartPolicy="Always")],
        containers=[sh("job", f"{ev(e, 'start-job')}; sleep 0.3; {ev(e, 'end-job')}; exit 7")]))
    assert p.wait_exit() == 7
    assert first(e, "stop-side") >= first(e, "end-job")


def test_job_success_onfailure(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(
        restart="OnFailure",
        init=[sh("side", service(e, "side"), restartPolicy="Always")],
        containers=[sh("a", "sleep 0.2; exit 0"), sh("b", "sleep 0.4; exit 0")]))
    assert p.wait_exit() == 0
    assert first(e, "stop-side") > 0


def test_failing_init_container_with_never_fails_the_pod(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(
        restart="Never",
        init=[sh("side", service(e, "side"), restartPolicy="Always"),
              sh("setup", f"{ev(e, 'setup')}; exit 4")],
        containers=[sh("app", ev(e, "start-app"))]))
    assert p.wait_exit() == 4
    names = [n for n, _ in read_events(e)]
    assert names.count("setup") == 1
    assert "start-app" not in names
    assert "stop-side" in names
    assert "init container failed and restartPolicy is Never" in p.output()


@pytest.mark.parametrize("policy", ["OnFailure", "Always"])
def test_failing_init_container_is_restarted(pod, tmp_path, policy):
    e = tmp_path / "events"
    count = tmp_path / "count"
    # fails twice, then succeeds
    script = (f"{ev(e, 'setup')}; n=$(cat {count} 2>/dev/null || echo 0); "
              f"echo $((n+1)) > {count}; [ $n -ge 2 ]")
    p = pod(manifest(restart=policy, init=[sh("setup", script)],
                     containers=[sh("app", service(e, "app"))]))
    p.wait_ready()
    wait_events(e, "start-app")
    names = [n for n, _ in read_events(e)]
    assert names == ["setup", "setup", "setup", "start-app"], names
    setups = [t for n, t in read_events(e) if n == "setup"]
    # back-off: 200 ms, then 400 ms
    assert setups[1] - setups[0] >= 0.18
    assert setups[2] - setups[1] >= 0.38
    assert p.container("setup")["restarts"] == 2
    assert p.stop() == 0


def test_sidecar_whose_startup_probe_never_passes_holds_the_app(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(
        init=[sh("side", service(e, "side"), restartPolicy="Always",
                 startupProbe={"tcpSocket": {"port": "1"}, "failureThreshold": 2, **FAST})],
        containers=[sh("app", service(e, "app"))]))
    time.sleep(2)
    assert p.proc.poll() is None
    assert p.get("/ready")[0] == 503
    names = [n for n, _ in read_events(e)]
    assert "start-app" not in names
    assert names.count("start-side") >= 2, names  # restarted after each failed startup
    out = p.output()
    assert "startup probe failed: restarting the container" in out
    assert "connect" in out  # the reason names what failed
    st = p.status()
    assert st["phase"] == "Pending"
    assert p.stop() == 0


def test_liveness_failures_restart_with_backoff(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(containers=[
        sh("app", service(e, "app"),
           livenessProbe={"exec": {"command": ["false"]}, "failureThreshold": 1,
                          "initialDelaySeconds": 0.2, **FAST})]),
        backoff="300ms")

    def starts():
        return [t for n, t in read_events(e) if n == "start-app"]

    deadline = time.monotonic() + 10
    while len(starts()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    s = starts()
    assert len(s) >= 4, p.output()
    gaps = [b - a for a, b in zip(s, s[1:])]
    # each gap is the probe time plus the back-off: 300 ms, 600 ms, 1200 ms
    assert gaps[0] >= 0.3
    assert gaps[1] - gaps[0] >= 0.2, gaps
    assert gaps[2] - gaps[1] >= 0.4, gaps
    assert "liveness probe failed: restarting the container" in p.output()
    assert p.container("app")["restarts"] >= 3
    metrics = p.get("/metrics")[1].decode()
    assert 'sidecar_pod_container_restarts_total{container="app",type="app"}' in metrics
    assert p.stop() == 0


def test_grace_period_expiry_sigkills_a_container_ignoring_sigterm(pod, tmp_path):
    e = tmp_path / "events"
    pidfile = tmp_path / "child.pid"
    # the shell ignores SIGTERM; its child (a sleep in the same process group) must die too
    p = pod(manifest(grace=1, containers=[
        sh("stubborn", f"trap '{ev(e, 'term')}' TERM; sleep 1000 & echo $! > {pidfile}; "
                       f"{ev(e, 'start')}; while true; do wait; done")]))
    p.wait_ready()
    time.sleep(0.2)
    child = int(pidfile.read_text())
    t0 = time.monotonic()
    assert p.stop() == 0
    took = time.monotonic() - t0
    assert 0.9 <= took < 5, took
    assert "grace period expired: sending SIGKILL" in p.output()
    assert not pid_alive(child)


def test_sidecars_share_the_grace_period(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(grace=1,
                     init=[sh("side", "trap '' TERM; while true; do sleep 0.05; done",
                              restartPolicy="Always")],
                     containers=[sh("app", "trap '' TERM; while true; do sleep 0.05; done")]))
    p.wait_ready()
    t0 = time.monotonic()
    assert p.stop() == 0
    took = time.monotonic() - t0
    # 1 s for the app; the sidecar gets SIGTERM then SIGKILL shortly after (2 s at most)
    assert 0.9 <= took < 4.5, took


def test_prestop_hooks_run_before_sigterm(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(
        init=[sh("side", service(e, "side"), restartPolicy="Always",
                 lifecycle={"preStop": {"exec": {"command": ["sh", "-c",
                                                             ev(e, "prestop-side")]}}})],
        containers=[sh("app", service(e, "app"), lifecycle={
            "postStart": {"exec": {"command": ["sh", "-c", ev(e, "poststart-app")]}},
            "preStop": {"exec": {"command": ["sh", "-c",
                                             f"sleep 0.2; {ev(e, 'prestop-app')}"]}}})]))
    p.wait_ready()
    wait_events(e, "start-side", "start-app", "poststart-app")
    assert p.stop() == 0
    order = [n for n, _ in read_events(e)]
    i = order.index
    assert i("prestop-app") < i("stop-app") < i("prestop-side") < i("stop-side"), order


def test_readiness_probe_gates_ready(pod, tmp_path):
    flag = tmp_path / "ready"
    p = pod(manifest(containers=[
        sh("app", "while true; do sleep 0.05; done",
           readinessProbe={"exec": {"command": ["test", "-f", str(flag)]}, **FAST})]))
    time.sleep(0.8)
    assert p.get("/ready")[0] == 503
    assert p.container("app")["ready"] is False
    flag.write_text("")
    p.wait_ready()
    assert p.container("app")["ready"] is True
    assert p.stop() == 0


def test_http_get_probe(pod, tmp_path):
    from conftest import free_port
    port = free_port()
    p = pod(manifest(containers=[
        {"name": "web", "command": ["python3", "-m", "http.server", str(port), "--bind",
                                    "127.0.0.1"],
         "workingDir": str(tmp_path),
         "ports": [{"name": "http", "containerPort": port}],
         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, **FAST},
         "startupProbe": {"httpGet": {"path": "/", "port": port}, **FAST,
                          "failureThreshold": 50}}]))
    p.wait_ready()
    assert p.container("web")["started"] is True
    assert p.stop() == 0


def test_http_get_probe_headers_replace_host(pod, tmp_path):
    """httpHeaders naming Host replace the default one (as the kubelet does): the app, ready only
    for that virtual host, sees exactly one Host and the probe's User-Agent."""
    from conftest import free_port
    port = free_port()
    app = tmp_path / "vhost.py"
    app.write_text(
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        ok = (self.headers.get_all('Host') == ['probe.example'] and\n"
        "              self.headers.get_all('User-Agent') == ['sidecar-pod-probe'] and\n"
        "              self.headers.get('X-Probe') == '1')\n"
        "        self.send_response(200 if ok else 421)\n"
        "        self.send_header('Content-Length', '0')\n"
        "        self.end_headers()\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")
    p = pod(manifest(containers=[
        {"name": "web", "command": ["python3", str(app), str(port)],
         "readinessProbe": {"httpGet": {"path": "/", "port": port, "httpHeaders": [
             {"name": "Host", "value": "probe.example"}, {"name": "X-Probe", "value": "1"}]},
             **FAST}}]))
    p.wait_ready()
    assert p.container("web")["ready"] is True
    assert p.stop() == 0


def test_second_signal_kills_at_once(pod, tmp_path):
    pidfile = tmp_path / "pid"
    p = pod(manifest(grace=30, containers=[
        # $$ would need escaping twice (manifest loader, then Kubernetes): read the PID instead
        sh("stubborn", f"trap '' TERM; cut -d' ' -f4 /proc/self/stat > {pidfile}; "
                       "while true; do sleep 0.05; done")]))
    p.wait_ready()
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pid file")
    pid = int(pidfile.read_text())
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert p.proc.poll() is None  # still within the grace period
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    assert time.monotonic() - t0 < 3
    assert "stopping now: SIGKILL to every container" in p.output()
    assert not pid_alive(pid)


def test_prestop_sleep_is_bounded_by_the_grace_period(pod, tmp_path):
    e = tmp_path / "events"
    p = pod(manifest(grace=1, containers=[
        sh("app", service(e, "app"), lifecycle={"preStop": {"sleep": {"seconds": 100}}})]))
    p.wait_ready()
    wait_events(e, "start-app")
    t0 = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t0 < 4
    assert "stop-app" in [n for n, _ in read_events(e)]  # SIGTERM still came after the hook
