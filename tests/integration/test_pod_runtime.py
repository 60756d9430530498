# SPDX-License-Identifier: Apache-2.0
"""`sidecar pod run`: what a running pod produces: CRI log files per container and restart, the
terminal prefix, `sidecar pod status` through the control socket, /pod, /metrics, the environment
($(VAR) expansion, fieldRef, configMap directories) and volumes bind-mounted at their mountPath."""
import json
import os
import re
import shutil
import tempfile
import signal
import subprocess
import time

import pytest

from conftest import BIN
from pod_util import Pod, manifest, pod, sh  # noqa: F401 (pod is a fixture)

CRI = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")


def test_cri_log_files(pod, tmp_path):
    long = 20000
    p = pod(manifest(restart="OnFailure", containers=[sh(
        "app", f"echo out; echo err >&2; python3 -c 'print(\"x\" * {long})'; printf tail; "
               f"[ -f {tmp_path}/again ] && exit 0; touch {tmp_path}/again; exit 1")]))
    assert p.wait_exit() == 0
    logs = p.dir / "logs" / "app"
    assert sorted(os.listdir(logs)) == ["0.log", "1.log"]
    lines = (logs / "0.log").read_text().splitlines()
    parsed = [CRI.match(line) for line in lines]
    assert all(parsed), lines[:3]
    fields = [(m.group(1), m.group(2), m.group(3)) for m in parsed]
    assert fields[0] == ("stdout", "F", "out")
    assert ("stderr", "F", "err") in fields
    parts = [f for f in fields if f[2].startswith("x")]
    assert [f[1] for f in parts] == ["P", "F"], [(f[0], f[1], len(f[2])) for f in parts]
    assert sum(len(f[2]) for f in parts) == long
    assert fields[-1] == ("stdout", "F", "tail")
    # the terminal copy, prefixed with the container name
    assert "app | out" in p.output()


def test_status_admin_and_metrics(pod, tmp_path):
    p = pod(manifest(name="stat",
                     init=[sh("side", "while true; do sleep 0.05; done", restartPolicy="Always")],
                     containers=[sh("app", "while true; do sleep 0.05; done")]))
    p.wait_ready()
    r = subprocess.run([BIN, "pod", "status", "--pod-dir", str(p.dir)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "pod stat  Running" in r.stdout
    assert re.search(r"side\s+sidecar\s+running\s+true\s+0\s+\d+", r.stdout), r.stdout
    assert re.search(r"app\s+app\s+running\s+true\s+0\s+\d+", r.stdout), r.stdout
    st = p.status()
    assert st["name"] == "stat" and st["phase"] == "Running"
    assert [c["name"] for c in st["containers"]] == ["side", "app"]
    m = p.get("/metrics")[1].decode()
    assert 'sidecar_pod_container_ready{container="app",type="app"} 1' in m
    assert 'sidecar_pod_container_running{container="side",type="sidecar"} 1' in m
    assert p.stop() == 0
    r = subprocess.run([BIN, "pod", "status", "--pod-dir", str(p.dir)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1


def test_environment(pod, tmp_path):
    cfg = tmp_path / "cfg"
    (cfg / "settings").mkdir(parents=True)
    (cfg / "settings" / "MODE").write_text("fast")
    (cfg / "creds").mkdir()
    (cfg / "creds" / "token").write_text("s3cret")
    (cfg / "extra.env").write_text("# an env file\nCOLOR=blue\n\nSIZE = 3\n")
    out = tmp_path / "env.txt"
    text = manifest(restart="Never", name="envpod", containers=[{
        "name": "app", "command": ["sh", "-c"],
        "args": [f"echo \"$GREETING|$(GREETING)|$LITERAL|$POD|$NS|$IP|$NODE|$MODE|$TOKEN|"
                 f"$LABEL|$X_COLOR|$X_SIZE\" > {out}"],
        "env": [
            {"name": "WHO", "value": "world"},
            {"name": "GREETING", "value": "hello $(WHO)"},
            # the manifest loader turns $$ into $ first, so Kubernetes' $$(X) is written $$$$(X)
            {"name": "LITERAL", "value": "$$$$(GREETING)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}},
                    {"configMapRef": {"name": "extra"}, "prefix": "X_"}]}])
    doc = json.loads(text)
    doc["metadata"]["labels"] = {"tier": "backend"}
    p = pod(json.dumps(doc), args=["--config-dir", str(cfg)])
    assert p.wait_exit() == 0
    import socket
    want = (f"hello world|hello world|$(GREETING)|envpod|default|127.0.0.1|{socket.gethostname()}|"
            f"fast|s3cret|backend|blue|3")
    assert out.read_text().strip() == want


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_volumes_bind_mounted_as_root(pod, tmp_path):
    cfg = tmp_path / "cfg"
    (cfg / "app-config").mkdir(parents=True)
    (cfg / "app-config" / "app.ini").write_text("x=1\n")
    mnt = f"/var/lib/sidecar-pod-test-{os.getpid()}"
    out = tmp_path / "seen"
    p = pod(manifest(
        restart="Never",
        volumes=[{"name": "shared", "emptyDir": {}},
                 {"name": "conf", "configMap": {"name": "app-config"}}],
        init=[sh("writer", f"echo hi > {mnt}/logs/a.log",
                 volumeMounts=[{"name": "shared", "mountPath": f"{mnt}/logs"}])],
        containers=[sh("reader", f"cat {mnt}/logs/a.log {mnt}/etc/app.ini > {out}; "
                                 f"touch {mnt}/etc/new 2>/dev/null && echo rw >> {out} || "
                                 f"echo ro >> {out}",
                       volumeMounts=[{"name": "shared", "mountPath": f"{mnt}/logs",
                                      "readOnly": True},
                                     {"name": "conf", "mountPath": f"{mnt}/etc",
                                      "readOnly": True}])]),
        args=["--config-dir", str(cfg)])
    try:
        assert p.wait_exit() == 0, p.output()
        assert out.read_text() == "hi\nx=1\nro\n"
        # the file lives in the pod directory; on the host the mountPath stays empty
        assert (p.dir / "volumes" / "shared" / "a.log").read_text() == "hi\n"
        assert not os.path.exists(f"{mnt}/logs/a.log")
    finally:
        subprocess.run(["rm", "-rf", mnt])


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts need root")
def test_memory_empty_dir_is_a_tmpfs_unmounted_at_the_end(pod, tmp_path):
    out = tmp_path / "df"
    p = pod(manifest(restart="Never", volumes=[
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
        containers=[sh("a", f"df -k /scratch | tail -1 > {out}",
                       volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])]))
    assert p.wait_exit() == 0, p.output()
    fields = out.read_text().split()
    assert fields[0] == "tmpfs" and int(fields[1]) == 8192, fields
    vol = str(p.dir / "volumes" / "scratch")
    assert vol not in open("/proc/self/mountinfo").read()


def test_sigint_stops_like_sigterm(pod, tmp_path):
    p = pod(manifest(containers=[sh("app", "while true; do sleep 0.05; done")]))
    p.wait_ready()
    assert p.stop(sig=signal.SIGINT) == 0


def test_no_log_lines_lost_at_shutdown(pod, tmp_path):
    """The app writes lines until the pod stops; the log sidecar gets SIGTERM only after the app
    has exited, so every line reaches its output."""
    if subprocess.run([BIN, "logs", "--help"], capture_output=True).returncode != 0:
        pytest.skip("this build has no logs role")
    shipped = tmp_path / "shipped.jsonl"
    p = pod(manifest(
        volumes=[{"name": "logs", "emptyDir": {}}],
        init=[{"name": "shipper", "restartPolicy": "Always", "command": [
            BIN, "logs", "--path", "/var/log/podtest/*.log", "--admin", "127.0.0.1:0",
            "--output", f"file={shipped}"],
            "volumeMounts": [{"name": "logs", "mountPath": "/var/log/podtest"}]}],
        grace=30,
        # up to 20000 lines, as fast as the shell goes, then a last one on SIGTERM
        containers=[sh("app", "i=0; trap 'echo last $i >> /var/log/podtest/app.log; exit 0' TERM; "
                              "while [ $i -lt 20000 ]; do i=$((i+1)); "
                              "echo line $i >> /var/log/podtest/app.log; done; "
                              "while true; do sleep 0.05; done",
                       volumeMounts=[{"name": "logs", "mountPath": "/var/log/podtest"}])]))
    p.wait_ready()
    time.sleep(1)
    assert p.stop() == 0
    written = (p.dir / "volumes" / "logs" / "app.log").read_text().splitlines()
    assert len(written) > 100
    got = shipped.read_text().splitlines()
    assert len(got) == len(written), (len(got), len(written))
    assert "last" in got[-1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="runs the pod as nobody through setpriv")
def test_volumes_without_root_rewrite_mount_paths():
    base = tempfile.mkdtemp(prefix="sidecar-pod-nonroot-")
    try:
        os.chmod(base, 0o777)
        path = os.path.join(base, "pod.yaml")
        with open(path, "w") as f:
            f.write(manifest(restart="Never", volumes=[{"name": "data", "emptyDir": {}}],
                             containers=[sh(
                                 "a", "echo hi > /var/lib/nr-test/x; cat /var/lib/nr-test/x; "
                                      "echo \"$SIDECAR_MOUNT_VAR_LIB_NR_TEST|$D|$(pwd)\"",
                                 env=[{"name": "D", "value": "/var/lib/nr-test/sub"}],
                                 workingDir="/var/lib/nr-test",
                                 volumeMounts=[{"name": "data",
                                                "mountPath": "/var/lib/nr-test"}])]))
        os.chmod(path, 0o644)
        pod_dir = os.path.join(base, "pod")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN,
                            "pod", "run", path, "--pod-dir", pod_dir, "--admin", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        vol = os.path.join(pod_dir, "volumes", "data")
        assert "a | hi" in r.stdout
        assert f"a | {vol}|{vol}/sub|{vol}" in r.stdout
        assert "not root: mountPath is rewritten into the pod directory" in r.stderr
        assert not os.path.exists("/var/lib/nr-test")
    finally:
        subprocess.run(["rm", "-rf", base])


def test_resource_limits_enforced_or_warned(pod, tmp_path):
    p = pod(manifest(restart="Never", containers=[
        sh("a", "true", resources={"limits": {"cpu": "500m", "memory": "64Mi"}})]))
    assert p.wait_exit() == 0
    out = p.output()
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers") and os.access("/sys/fs/cgroup",
                                                                           os.W_OK)
    if not v2:
        assert "resources.limits not enforced: cgroup v2 is not available" in out
