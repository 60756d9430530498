# SPDX-License-Identifier: Apache-2.0
"""Helpers for the `sidecar iptables` tests: network namespaces the test creates and removes by
name, never the host's tables.

Topology (addresses from ranges the test owns, inside its own namespaces only):

    client  eth0 10.213.1.1  fd00:213:1::1
       |
    pod     eth0 10.213.1.2  fd00:213:1::2     (the app on 8080 and 8082, the proxy as uid 1337)
            eth1 10.213.2.1  fd00:213:2::1
       |
    server  eth0 10.213.2.2  fd00:213:2::2     (an HTTP server on 8081 and 9999)
                 10.213.3.1  fd00:213:3::1     (a second address, for excluded-CIDR checks)

Veth pairs are created directly inside the namespaces (`ip -n`), so nothing is added to the
host's links either.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, wait_until

HERE = Path(__file__).resolve().parent
APP = HERE / "iptables_app.py"
PY = sys.executable
APP_UID = 1000
PROXY_UID = 1337
# Absolute paths: a test may run a command with a PATH that hides the tools on purpose.
IP = shutil.which("ip") or "/usr/sbin/ip"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

POD4, POD6 = "10.213.1.2", "fd00:213:1::2"
CLIENT4, CLIENT6 = "10.213.1.1", "fd00:213:1::1"
SERVER4, SERVER6 = "10.213.2.2", "fd00:213:2::2"
SERVER_ALT4, SERVER_ALT6 = "10.213.3.1", "fd00:213:3::1"


def need_netns():
    """Skips the test when namespaces, iptables or nft cannot be used here."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and iptables need root")
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "nft", "setpriv", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (scripts/deps.sh)")


def sh(*cmd, check=True, timeout=30, env=None, input=None):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=env, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


class Netns:
    """Namespaces named <prefix>-<role>, removed by name when closed."""

    def __init__(self, *roles):
        self.prefix = f"sct{os.getpid()}x{int(time.monotonic() * 1000) % 100000}"
        self.names = {r: f"{self.prefix}-{r}" for r in roles}
        self.procs = []
        try:
            for name in self.names.values():
                sh("ip", "netns", "add", name)
                sh("ip", "-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def __getitem__(self, role):
        return self.names[role]

    def run(self, role, *cmd, uid=None, check=True, timeout=30, env=None, input=None):
        """Runs <cmd> in <role>'s namespace (as <uid> when given) to completion."""
        return sh(*self.argv(role, cmd, uid), check=check, timeout=timeout, env=env, input=input)

    def argv(self, role, cmd, uid=None):
        pre = [IP, "netns", "exec", self.names[role]]
        if uid is not None:
            pre += [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return pre + [str(c) for c in cmd]

    def start(self, role, *cmd, uid=None, stdout=None, stderr=None):
        """Starts a long-running process in <role>'s namespace; stopped by PID at close."""
        p = subprocess.Popen(self.argv(role, cmd, uid), stdout=stdout or subprocess.DEVNULL,
                             stderr=stderr or subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=30):
        """Sends SIGTERM to <p> and returns its exit code."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise AssertionError(f"{p.args} did not exit within {timeout}s")
        return p.returncode

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def build_topology(ns):
    """Links client-pod and pod-server and addresses them (see the module docstring)."""
    c, p, s = ns["client"], ns["pod"], ns["server"]
    sh("ip", "-n", p, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", c)
    sh("ip", "-n", p, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", s)
    for name, dev, v4, v6 in ((c, "eth0", "10.213.1.1/24", "fd00:213:1::1/64"),
                              (p, "eth0", "10.213.1.2/24", "fd00:213:1::2/64"),
                              (p, "eth1", "10.213.2.1/24", "fd00:213:2::1/64"),
                              (s, "eth0", "10.213.2.2/24", "fd00:213:2::2/64")):
        sh("ip", "-n", name, "addr", "add", v4, "dev", dev)
        sh("ip", "-n", name, "addr", "add", v6, "dev", dev, "nodad")
        sh("ip", "-n", name, "link", "set", dev, "up")
    sh("ip", "-n", s, "addr", "add", "10.213.3.1/32", "dev", "eth0")
    sh("ip", "-n", s, "addr", "add", "fd00:213:3::1/128", "dev", "eth0", "nodad")
    sh("ip", "-n", p, "route", "add", "10.213.3.0/24", "via", "10.213.2.2")
    sh("ip", "-n", p, "-6", "route", "add", "fd00:213:3::/64", "via", "fd00:213:2::2")


PROXY_CONFIG = """\
admin: 127.0.0.1:15000
access_log: stdout
retries: 0
listeners:
  - name: inbound
    address: "[::]:15006"
    routes: [{ name: app, cluster: app }]
  - name: outbound
    address: 127.0.0.1:15001
    routes: [{ name: passthrough, cluster: passthrough }]
  - name: outbound6
    address: "[::1]:15001"
    routes: [{ name: passthrough, cluster: passthrough }]
clusters:
  - name: app
    endpoints: [127.0.0.1:8080]
  - name: passthrough
    type: original_dst
"""


class Pod:
    """The three namespaces with the app, the server and the proxy running (rules not applied).
    <config>: the proxy's configuration; <setup(ns)>: starts more servers before the proxy."""

    def __init__(self, config=PROXY_CONFIG, setup=None):
        self.config, self.setup = config, setup
        self.ns = Netns("client", "pod", "server")
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        ns = self.ns
        build_topology(ns)
        # A directory uid 1337 can read (pytest's tmp_path is private to root).
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-ipt-"))
        os.chmod(self.dir, 0o755)
        cfg = self.dir / "proxy.yaml"
        cfg.write_text(self.config)
        os.chmod(cfg, 0o644)
        self.access_log = self.dir / "access.log"
        self.proxy_err = self.dir / "proxy.err"
        self._out = open(self.access_log, "wb")
        self._err = open(self.proxy_err, "wb")
        ns.start("server", PY, APP, 8081, 9999)
        ns.start("pod", PY, APP, 8080, 8082, uid=APP_UID)
        if self.setup:
            self.setup(ns)
        self.proxy = ns.start("pod", BIN, "proxy", "-c", cfg, "--log-format", "json",
                              uid=PROXY_UID, stdout=self._out, stderr=self._err)
        for role, url in (("server", "http://127.0.0.1:8081/"), ("server", "http://127.0.0.1:9999/"),
                          ("pod", "http://127.0.0.1:8080/"), ("pod", "http://127.0.0.1:8082/"),
                          ("pod", "http://127.0.0.1:15000/ready")):
            wait_until(lambda: ns.run(role, "curl", "-sf", "-m", "2", "-o", "/dev/null", url,
                                      check=False).returncode == 0, timeout=20, interval=0.1,
                       what=f"{url} in {role}")

    def iptables(self, *args, env=None, check=True):
        """Runs `sidecar iptables` as root in the pod's namespace."""
        return self.ns.run("pod", BIN, "iptables", *args, env=env, check=check)

    def get(self, role, url, uid=None, extra=()):
        """GETs <url> with curl from <role>'s namespace; returns the app's JSON answer."""
        r = self.ns.run(role, "curl", "-sS", "-m", "5", *extra, url, uid=uid, check=False)
        assert r.returncode == 0, f"curl {url} from {role}: {r.stderr}"
        return json.loads(r.stdout)

    def log_lines(self, path):
        """The proxy's access-log lines for requests to <path>."""
        return self.log_json(lambda j: j.get("path") == path)

    def log_json(self, pred):
        """The proxy's JSON access-log lines <pred> takes."""
        self._out.flush()
        out = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if pred(j):
                out.append(j)
        return out

    def close(self):
        code = None
        if getattr(self, "proxy", None) is not None:
            code = self.ns.stop(self.proxy)
        self.ns.close()
        for f in ("_out", "_err"):
            if hasattr(self, f):
                getattr(self, f).close()
        err = self.proxy_err.read_text(errors="replace") if hasattr(self, "proxy_err") else ""
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)
        assert code in (None, 0), f"proxy exited {code}:\n{err}"


def nat_snapshot(ns, role, counters=True):
    """Every table of both families as iptables-save prints them (its dated comments dropped) and
    the whole nftables ruleset; without <counters>, packet and byte counts are zeroed (re-applying
    the same rules resets them)."""
    out = {}
    for tool in ("iptables-save", "ip6tables-save"):
        text = ns.run(role, tool).stdout
        out[tool] = "\n".join(l for l in text.splitlines() if not l.startswith("#"))
    out["nft"] = ns.run(role, "nft", "list", "ruleset").stdout
    if not counters:
        for k, v in out.items():
            v = re.sub(r"\[\d+:\d+\]", "[0:0]", v)
            out[k] = re.sub(r"counter packets \d+ bytes \d+", "counter", v)
    return out
