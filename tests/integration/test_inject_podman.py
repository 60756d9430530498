# SPDX-License-Identifier: Apache-2.0
"""The image under podman (where podman works on the machine): `make image`'s archive loads, and
`podman kube play` runs a pod injected by `sidecar inject` in classic mode (an app with the proxy,
logs and metrics sidecars sharing its log volume). Inside the pod's own network namespace a
request through the proxy reaches the app, the metrics sidecar serves the app's metrics, and the
app's log lines are shipped by the logs sidecar.

podman runs with a fixture-local configuration (runc, cgroupfs, no default ulimits, vfs storage
under the test's directory), never the system's. podman 4 lacks what some injected fields need,
so the fixture says so in the manifest it plays: no downwardAPI volumes (mesh config
`podinfo: false`), no ports without a bridge network, and env fieldRefs other than metadata.name
dropped (the kubelet resolves them on a cluster)."""
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

from conftest import BIN, ROOT, wait_until
from inject_util import inject

PODMAN = shutil.which("podman")
pytestmark = pytest.mark.skipif(not PODMAN or os.geteuid() != 0,
                                reason="podman (run as root) is not available on this machine")

UNRESOLVED_BY_PODMAN4 = {"POD_NAMESPACE", "POD_IP", "SERVICE_ACCOUNT"}

# The app: serves /www on 127.0.0.1:8080 (its /metrics too) and writes a JSON log line every
# 0.2 s to /var/log/app/app.log.
APP = """echo 'app_up 1' > /www/metrics
echo hello > /www/index.html
i=0
while true; do i=$((i+1)); echo "{\\"msg\\":\\"line $i\\"}" >> /var/log/app/app.log; sleep 0.2; done &
exec httpd -f -p 127.0.0.1:8080 -h /www
"""


def load_image_module():
    spec = importlib.util.spec_from_file_location("image", ROOT / "scripts" / "image.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def podman(tmp_path):
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    # podman refuses a runroot path longer than 50 characters: a short one of our own.
    runroot = tempfile.mkdtemp(prefix="sc-podman.", dir="/tmp")
    base = [PODMAN, "--root", str(tmp_path / "storage"), "--runroot", runroot,
            "--storage-driver", "vfs"]

    def run(*args, check=True, timeout=180):
        r = subprocess.run(base + list(args), capture_output=True, text=True, env=env,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"podman {' '.join(args)}:\n{r.stdout}{r.stderr}"
        return r

    yield run
    run("pod", "rm", "-f", "-t", "0", "demo", check=False)
    run("rm", "-a", "-f", check=False)
    shutil.rmtree(tmp_path / "storage", ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)


def app_image(tmp_path, image):
    """A tiny app image: busybox (httpd, sh, wget) built like ours, from Debian's static busybox."""
    root = tmp_path / "approot"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "httpd", "sleep", "echo", "wget", "cat"):
        os.symlink("busybox", root / "bin" / applet)
    for d in ("tmp", "var/log/app", "www"):
        (root / d).mkdir(parents=True)
    (root / "app.sh").write_text(APP)
    out = tmp_path / "app.tar"
    image.write_archive(str(out), image.layer_tar(root), "demo-app:1", "1",
                        entrypoint=("/bin/sh",), user="0:0")
    return out


def test_injected_pod_runs_under_podman(podman, tmp_path):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed (scripts/deps.sh)")
    image = load_image_module()
    sidecar_tar = tmp_path / "sidecar-image.tar"
    r = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "image.py"), BIN,
                        str(sidecar_tar), "--tag", "sidecar:test"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Loaded image: localhost/sidecar:test" in podman("load", "-i", str(sidecar_tar)).stdout
    podman("load", "-i", str(app_image(tmp_path, image)))

    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("image: localhost/sidecar:test\nidentity: none\nrewrite_probes: false\n"
                    "podinfo: false\n")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "demo", "annotations": {"sidecar.dev/roles": "proxy,logs,metrics",
                                                        "prometheus.io/port": "8080"}},
           "spec": {"containers": [{"name": "app", "image": "localhost/demo-app:1",
                                    "command": ["/bin/sh", "/app.sh"]}]}}
    out = inject("-f", "-", "--mesh-config", mesh, "--native-sidecars=false", "--cni",
                 stdin=yaml.safe_dump(pod)).stdout
    played = yaml.safe_load(out)
    names = [c["name"] for c in played["spec"]["containers"]]
    assert names == ["sidecar-proxy", "app", "sidecar-logs", "sidecar-metrics"]
    for c in played["spec"]["containers"]:
        c["env"] = [e for e in c.get("env", []) if e["name"] not in UNRESOLVED_BY_PODMAN4]
    manifest = tmp_path / "played.json"  # JSON is YAML to kube play
    manifest.write_text(json.dumps(played))
    podman("kube", "play", "--network", "none", str(manifest))

    def through_proxy():
        r = podman("exec", "demo-app", "wget", "-qO-", "http://127.0.0.1:15006/index.html",
                   check=False)
        return r.returncode == 0 and r.stdout == "hello\n"

    wait_until(through_proxy, timeout=60, interval=0.5, what="a request through the proxy")
    assert "/index.html" in podman("logs", "demo-sidecar-proxy").stdout
    r = podman("exec", "demo-app", "wget", "-qO-", "http://127.0.0.1:9090/metrics", check=False)
    assert r.returncode == 0 and "app_up" in r.stdout, r.stdout + r.stderr

    def shipped():
        return '"line 3"' in podman("logs", "demo-sidecar-logs").stdout.replace('\\"', '"')

    wait_until(shipped, timeout=60, interval=0.5, what="app log lines shipped by the logs sidecar")
    # The sidecars run as the image's user 1337 with a read-only root file system.
    top = podman("top", "demo-sidecar-logs", "user", "args").stdout
    assert "1337" in top or "sidecar" in top, top
