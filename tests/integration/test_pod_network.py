# SPDX-License-Identifier: Apache-2.0
"""`sidecar pod run` with the pod network (spec.hostNetwork: false / --pod-network): the runner
creates the pod's network namespace and a veth pair, the manifest's init container runs
`sidecar iptables`, the proxy runs as uid 1337 (securityContext), and the app's traffic goes
through the proxy both ways, as in a cluster.

The runner itself runs inside a "node" namespace the test creates (entered with nsenter), so the
veth pair and its addresses live there, never in the host's namespace; the pod's namespace is
named by the test. The outside service is an HTTP server in the node namespace, reached by the
pod at the runner's end of the veth pair. Witnesses: the proxy's access log (its container log
under the pod directory), the headers the app and the server saw, /proc of the container
processes, and `ip` listings after the runner exits."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, wait_until
from iptables_util import APP, Netns, need_netns, sh

PY = "/usr/bin/python3"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

PROXY_CONFIG = """\
admin: 127.0.0.1:15000
access_log: stdout
retries: 0
listeners:
  - name: inbound
    address: "[::]:15006"
    protocol: auto
    routes:
      - { name: app-8080, match: { destination_ports: ["8080"] }, cluster: inbound-passthrough }
      - { name: app, cluster: inbound-passthrough }
    tcp_cluster: inbound-passthrough
  - name: outbound
    address: 127.0.0.1:15001
    protocol: auto
    routes:   # by the port the app addressed (its original destination)
      - { name: to-8081, match: { destination_ports: ["8081"] }, cluster: passthrough }
      - { name: passthrough, cluster: passthrough }
    tcp_cluster: passthrough
  - name: outbound6
    address: "[::1]:15001"
    protocol: auto
    routes: [{ name: passthrough, cluster: passthrough }]
    tcp_cluster: passthrough
clusters:
  - name: inbound-passthrough
    type: original_dst
    upstream_bind_address: [127.0.0.6, "::6"]
  - name: passthrough
    type: original_dst
"""


def manifest(d, backend="auto", host_network="false", app_cmd=None, restart="Always"):
    app_cmd = app_cmd or [PY, str(APP), "8080"]
    hn = f"  hostNetwork: {host_network}\n" if host_network is not None else ""
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
{hn}  restartPolicy: {restart}
  terminationGracePeriodSeconds: 5
  initContainers:
    - name: sidecar-iptables
      command: [{BIN}, iptables, --backend, {backend}, --proxy-uid, "1337", --proxy-gid, "1337"]
    - name: proxy
      restartPolicy: Always
      command: [{BIN}, proxy, -c, {d}/proxy.yaml, --drain-timeout, 1s]
      securityContext: {{ runAsUser: 1337, runAsGroup: 1337 }}
  containers:
    - name: app
      command: {json.dumps(app_cmd)}
      # exec probes run in the pod's namespace; httpGet probes go to the pod's address
      startupProbe:
        exec: {{ command: [/bin/sh, -c, "grep -q eth0: /proc/net/dev"] }}
        periodSeconds: 0.2
      readinessProbe:
        httpGet: {{ path: /probe, port: 8080 }}
        periodSeconds: 0.2
      securityContext:
        runAsUser: 1000
        runAsGroup: 1000
        allowPrivilegeEscalation: false
        capabilities: {{ drop: [ALL] }}
"""


class Node:
    """The node namespace with the outside server; runs `sidecar pod run` inside it."""

    def __init__(self):
        self.ns = Netns("node")
        self.node = self.ns["node"]
        self.netns = f"{self.ns.prefix}-pod"
        # a directory uid 1337 and 1000 can read (pytest's tmp_path is private to root)
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-podnet-"))
        os.chmod(self.dir, 0o755)
        (self.dir / "proxy.yaml").write_text(PROXY_CONFIG)
        os.chmod(self.dir / "proxy.yaml", 0o644)
        self.shared = self.dir / "shared"  # the app (uid 1000) writes here
        self.shared.mkdir(mode=0o777)
        os.chmod(self.shared, 0o777)
        self.runners = []
        self.ns.start("node", PY, APP, 8081, 8082)

    def run(self, text, *args, env=None, pre=()):
        """Starts the runner on manifest <text>; returns (process, output path, pod dir)."""
        n = len(self.runners)
        m = self.dir / f"pod{n}.yaml"
        m.write_text(text)
        pod_dir = self.dir / f"pod{n}"
        out = self.dir / f"run{n}.out"
        e = dict(os.environ if env is None else env)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        cmd = [NSENTER, f"--net=/run/netns/{self.node}", *pre, BIN, "pod", "run", str(m),
               "--pod-dir", str(pod_dir), "--netns", self.netns, "--no-color",
               "--restart-backoff-base", "200ms", *args]
        with open(out, "wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=e)
        self.runners.append(p)
        return p, out, pod_dir

    def curl(self, url, check=True):
        r = self.ns.run("node", "curl", "-sS", "-m", "5", url, check=False)
        if check:
            assert r.returncode == 0, f"curl {url}: {r.stderr}"
        return r

    def status(self):
        return json.loads(self.curl("http://127.0.0.1:15030/pod").stdout)

    def links(self):
        return sh("ip", "-n", self.node, "-o", "link").stdout

    def close(self):
        for p in self.runners:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.exists(f"/run/netns/{self.netns}"):
            for pid in sh("ip", "netns", "pids", self.netns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", self.netns, check=False)
        Path(f"/run/sidecar-pod/netns-{self.netns}").unlink(missing_ok=True)
        self.ns.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def node():
    need_netns()
    if not shutil.which("nsenter"):
        pytest.skip("nsenter is not installed")
    n = Node()
    yield n
    n.close()


def access_log(pod_dir):
    """The proxy's JSON access-log lines, from its CRI container logs."""
    out = []
    for f in sorted((pod_dir / "logs" / "proxy").glob("*.log")):
        for line in f.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[3].startswith("{"):
                try:
                    out.append(json.loads(parts[3]))
                except ValueError:
                    pass
    return out


def proc_status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.split()
    return fields


def wait_call(node, url, timeout=20):
    """Polls <url> until the app answers it (the proxy and the app have started)."""
    box = {}

    def ok():
        r = node.curl(url, check=False)
        if r.returncode == 0 and r.stdout.startswith("{"):
            box["answer"] = json.loads(r.stdout)
            return True
        return False

    wait_until(ok, timeout=timeout, interval=0.1, what=url)
    return box["answer"]


def assert_cleaned(node):
    assert not os.path.exists(f"/run/netns/{node.netns}")
    assert not os.path.exists(f"/run/sidecar-pod/netns-{node.netns}")
    assert node.netns not in sh("ip", "netns", "list").stdout
    links = node.links()
    assert "scp" not in links and "veth" not in links, links


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_app_traffic_goes_through_the_proxy_both_ways(node, backend):
    p, out, pod_dir = node.run(manifest(node.dir, backend), "--pod-ip6", "fd00:215::2/64",
                               "--host-ip6", "fd00:215::1")
    # inbound: the node calls the pod's address; the app then calls the outside server
    a = wait_call(node, "http://10.215.0.2:8080/call/10.215.0.1:8081/out")
    # the inbound proxy reached the app from the passthrough source, adding its headers
    assert a["peer"] == "127.0.0.6" and a["local"] == "10.215.0.2" and a["port"] == 8080
    assert a["headers"]["via"] == "1.1 sidecar"
    # the app's own outbound call went through the proxy to its original destination
    up = a["upstream"]
    assert up["status"] == 200 and up["body"]["path"] == "/out"
    assert up["body"]["headers"]["via"] == "1.1 sidecar"
    assert up["body"]["peer"] == "10.215.0.2"

    def lines():
        log = access_log(pod_dir)
        ins = [j for j in log if j.get("listener") == "inbound" and
               j.get("path") == "/call/10.215.0.1:8081/out"]
        outs = [j for j in log if j.get("listener") == "outbound" and j.get("path") == "/out"]
        return ins, outs

    wait_until(lambda: all(lines()), timeout=5, what="both access-log lines")
    ins, outs = lines()
    assert ins[0]["endpoint"] == "10.215.0.2:8080"
    # the inbound listener is dual-stack ([::]): an IPv4 client shows as its v4-mapped address
    assert ins[0]["peer"] in ("10.215.0.1", "::ffff:10.215.0.1")
    assert outs[0]["endpoint"] == "10.215.0.1:8081" and outs[0]["cluster"] == "passthrough"
    assert outs[0]["status"] == 200
    # HTTP routes matched on the original destination port, both ways
    assert ins[0]["route"] == "app-8080" and outs[0]["route"] == "to-8081"
    b = wait_call(node, "http://10.215.0.2:8080/call/10.215.0.1:8082/other")
    assert b["upstream"]["body"]["port"] == 8082
    wait_until(lambda: [j for j in access_log(pod_dir) if j.get("path") == "/other"], timeout=5,
               what="the access-log line of /other")
    other = [j for j in access_log(pod_dir) if j.get("path") == "/other"][0]
    assert other["route"] == "passthrough" and other["endpoint"] == "10.215.0.1:8082"

    # the readiness probe reached the app at the pod's address, through the inbound listener
    wait_until(lambda: node.ns.run("node", "curl", "-sf", "-m", "2", "http://127.0.0.1:15030/ready",
                                   check=False).returncode == 0 and
               [j for j in access_log(pod_dir) if j.get("path") == "/probe"], timeout=10,
               what="the app ready by its httpGet probe")
    probe = [j for j in access_log(pod_dir) if j.get("path") == "/probe"][0]
    assert probe["listener"] == "inbound" and probe["peer"].endswith("10.215.0.1")
    # IPv6 both ways: inbound from ::6 (which `sidecar iptables` put on lo), outbound to the
    # server's IPv6 address
    a6 = wait_call(node, "http://[fd00:215::2]:8080/call/[fd00:215::1]:8081/out6")
    assert a6["peer"] == "::6" and a6["local"] == "fd00:215::2"
    assert a6["upstream"]["body"]["peer"] == "fd00:215::2"
    assert a6["upstream"]["body"]["headers"]["via"] == "1.1 sidecar"
    wait_until(lambda: [j for j in access_log(pod_dir) if j.get("path") == "/out6"], timeout=5,
               what="the access-log line of /out6")
    out6 = [j for j in access_log(pod_dir) if j.get("path") == "/out6"][0]
    assert out6["listener"] == "outbound6" and out6["endpoint"] == "[fd00:215::1]:8081"
    st = node.status()
    assert st["podIPs"] == ["10.215.0.2", "fd00:215::2"]
    assert all(c["ready"] for c in st["containers"] if c["name"] != "sidecar-iptables")
    assert st["network"] == "pod" and st["podIP"] == "10.215.0.2" and st["netns"] == node.netns
    pids = {c["name"]: c["pid"] for c in st["containers"] if c["pid"]}
    # securityContext: the proxy as 1337, the app as 1000 with no capabilities and no_new_privs
    proxy = proc_status(pids["proxy"])
    assert proxy["Uid"][0] == "1337" and proxy["Gid"][0] == "1337"
    app = proc_status(pids["app"])
    assert app["Uid"][0] == "1000" and app["Gid"][0] == "1000"
    assert int(app["CapBnd"][0], 16) == 0 and app["NoNewPrivs"][0] == "1"
    # every container runs in the pod's namespace, not the node's
    pod_ns = os.stat(f"/run/netns/{node.netns}").st_ino
    for pid in pids.values():
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == pod_ns
    r = subprocess.run([BIN, "pod", "status", "--pod-dir", str(pod_dir)], capture_output=True,
                       text=True)
    assert f"network: pod 10.215.0.2 (ip netns exec {node.netns} ...)" in r.stdout, r.stdout
    # the runner's end of the veth pair is in the node's namespace, addressed
    assert "inet 10.215.0.1/30" in sh("ip", "-n", node.node, "-o", "-4", "addr").stdout

    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0, out.read_text()
    assert "pod network removed" in out.read_text()
    assert_cleaned(node)


def test_a_crashed_child_ends_a_job_pod_and_everything_is_removed(node):
    # restartPolicy Never: the app killed with SIGKILL finishes the pod; a daemonised
    # grandchild left in the namespace is killed by the teardown
    cmd = ["/bin/sh", "-c", f"setsid sleep 300 & echo $! > {node.shared}/orphan.pid; "
                            f"exec {PY} {APP} 8080"]
    p, out, pod_dir = node.run(manifest(node.dir, host_network=None, app_cmd=cmd,
                                        restart="Never"),
                               "--pod-network", "--pod-ip", "10.216.0.6/30", "--host-ip",
                               "10.216.0.5")
    a = wait_call(node, "http://10.216.0.6:8080/")
    assert a["peer"] == "127.0.0.6"
    orphan = int((node.shared / "orphan.pid").read_text())
    os.kill(orphan, 0)
    app_pid = {c["name"]: c["pid"] for c in node.status()["containers"]}["app"]
    os.kill(app_pid, signal.SIGKILL)
    assert p.wait(timeout=30) == 137, out.read_text()
    text = out.read_text()
    assert "killed processes left in the pod's network namespace" in text
    assert_cleaned(node)
    wait_until(lambda: not os.path.exists(f"/proc/{orphan}") or
               "Z" in Path(f"/proc/{orphan}/stat").read_text().split()[2],
               timeout=5, what="the orphan gone")


def test_a_namespace_left_by_a_killed_runner(node):
    p, out, _ = node.run(manifest(node.dir))
    wait_call(node, "http://10.215.0.2:8080/")
    p.kill()
    p.wait()
    # its containers still run in the namespace: a second runner refuses it
    assert os.path.exists(f"/run/netns/{node.netns}")
    p2, out2, _ = node.run(manifest(node.dir))
    assert p2.wait(timeout=30) != 0
    assert "processes run in it" in out2.read_text()
    for pid in sh("ip", "netns", "pids", node.netns).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: not sh("ip", "netns", "pids", node.netns).stdout.strip(), timeout=5,
               what="the old containers gone")
    # nothing runs in it any more: the next runner removes it and starts
    p3, out3, _ = node.run(manifest(node.dir))
    wait_call(node, "http://10.215.0.2:8080/")
    assert "removing a stale network namespace" in out3.read_text()
    p3.send_signal(signal.SIGTERM)
    assert p3.wait(timeout=30) == 0, out3.read_text()
    assert_cleaned(node)


def test_refusals_are_clear_and_leave_nothing(node):
    m = manifest(node.dir)
    # not root
    p, out, _ = node.run(m, pre=(SETPRIV, "--reuid=1000", "--regid=1000", "--clear-groups",
                                 "--inh-caps=-all"))
    assert p.wait(timeout=30) != 0
    assert "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)" in out.read_text()
    # no ip in PATH
    env = dict(os.environ, PATH="/nonexistent")
    p, out, _ = node.run(m, env=env)
    assert p.wait(timeout=30) != 0
    assert "needs the ip command (iproute2)" in out.read_text()
    # addresses that are not a pair of one network
    p, out, _ = node.run(m, "--pod-ip", "10.215.0.2/30", "--host-ip", "10.99.0.1")
    assert p.wait(timeout=30) != 0
    assert "must be two different addresses of one network" in out.read_text()
    p, out, _ = node.run(m, "--pod-ip6", "fd00:215::2/64", "--host-ip6", "fd00:216::1")
    assert p.wait(timeout=30) != 0
    assert "two different IPv6 addresses of one network" in out.read_text()
    # sidecar iptables on the host's network would rewrite this machine's rules
    before = sh("ip", "netns", "exec", node.node, "iptables-save").stdout
    p, out, _ = node.run(manifest(node.dir, host_network="true"))
    assert p.wait(timeout=30) != 0
    assert "would rewrite this machine's own rules" in out.read_text()
    p, out, _ = node.run(manifest(node.dir, host_network=None))  # the default: host network
    assert p.wait(timeout=30) != 0
    assert "would rewrite this machine's own rules" in out.read_text()
    assert sh("ip", "netns", "exec", node.node, "iptables-save").stdout == before
    assert_cleaned(node)
    # a namespace of that name the runner did not make is never deleted, even with nothing in it
    sh("ip", "netns", "add", node.netns)
    p, out, _ = node.run(m)
    assert p.wait(timeout=30) != 0
    assert "was not made by sidecar pod run: it is left alone" in out.read_text()
    assert os.path.exists(f"/run/netns/{node.netns}")


@pytest.mark.parametrize("snippet,message", [
    ("  hostNetwork: maybe\n", 'spec.hostNetwork: must be true or false, not "maybe"'),
    ("  securityContext: { runAsUser: -5 }\n", "runAsUser must be 0..2147483647"),
    ("  securityContext: { runAsNonRoot: true, runAsUser: 0 }\n",
     "runAsNonRoot is true but runAsUser is 0"),
    ("  securityContext: { capabilities: { add: [NET_ADMIN] } }\n", "unknown key"),
])
def test_manifest_checks(tmp_path, snippet, message):
    m = tmp_path / "pod.yaml"
    m.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n" + snippet +
                 "  containers:\n    - name: a\n      command: [/bin/true]\n")
    r = subprocess.run([BIN, "pod", "check", str(m)], capture_output=True, text=True)
    assert r.returncode == 1 and message in r.stderr, r.stderr


@pytest.mark.parametrize("ctx,message", [
    ("{ capabilities: { add: [NOT_A_CAP] } }", 'unknown capability "NOT_A_CAP"'),
    ("{ capabilities: { add: [ALL] } }", "ALL is only for drop"),
    ("{ allowPrivilegeEscalation: perhaps }", "true or false"),
    ("{ readOnlyRootFilesystem: true }", "unknown key"),
])
def test_container_security_context_checks(tmp_path, ctx, message):
    m = tmp_path / "pod.yaml"
    m.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
                 f"    - name: a\n      command: [/bin/true]\n      securityContext: {ctx}\n")
    r = subprocess.run([BIN, "pod", "check", str(m)], capture_output=True, text=True)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert "spec.containers[0].securityContext" in r.stderr


def test_no_iptables_or_nft_fails_the_init_container_and_the_pod(node):
    # The pod's PATH has ip and setpriv but neither iptables nor nft: `sidecar iptables` says so,
    # the init container fails, the pod (restartPolicy Never) stops without its app ever
    # starting, and its network is removed.
    bin_dir = node.dir / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "setpriv"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = dict(os.environ, PATH=str(bin_dir))
    p, out, _ = node.run(manifest(node.dir, restart="Never"), env=env)
    assert p.wait(timeout=30) == 1, out.read_text()
    text = out.read_text()
    assert "neither iptables/ip6tables nor nft is installed" in text, text
    assert "container started container=app" not in text
    assert_cleaned(node)
