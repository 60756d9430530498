# SPDX-License-Identifier: Apache-2.0
"""Helpers for the pod runner tests: run `sidecar pod run` on a manifest written inline, with a
short restart back-off, and read the events the containers record.

Containers are small sh commands. `ev NAME` is a shell snippet that appends "NAME <epoch seconds>"
to the test's events file, so the tests assert the order of starts and stops from timestamps the
containers themselves wrote.
"""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, free_port, http_get, wait_until


def ev(events, name):
    """A shell command that records <name> with the current time into <events>."""
    return f'echo "{name} $(date +%s.%N)" >> {events}'


def read_events(events):
    """Returns [(name, time)] in file order."""
    try:
        lines = open(events).read().split("\n")
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        # a "stop" event written while SIGTERM hits the whole group may lose its `date`
        parts = line.strip().rsplit(" ", 1)
        if len(parts) == 2:
            try:
                out.append((parts[0], float(parts[1])))
            except ValueError:
                pass
    return out


def first(events, name):
    for n, t in read_events(events):
        if n == name:
            return t
    raise AssertionError(f"no event {name!r} in {read_events(events)}")


class Pod:
    """One `sidecar pod run` process."""

    def __init__(self, tmp_path, manifest, args=(), backoff="200ms"):
        self.tmp = tmp_path
        self.path = tmp_path / "pod.yaml"
        self.path.write_text(manifest)
        self.dir = tmp_path / "pod"
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.out_path = tmp_path / "pod.out"
        self.out = open(self.out_path, "wb")
        self.cmd = [BIN, "pod", "run", str(self.path), "--admin", f"127.0.0.1:{self.admin_port}",
                    "--pod-dir", str(self.dir), "--restart-backoff-base", backoff,
                    "--log-format", "json", *args]
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=subprocess.STDOUT, env=e)

    def output(self):
        if not self.out.closed:
            self.out.flush()
        return self.out_path.read_text(errors="replace")

    def log_lines(self):
        """The runner's own JSON log lines."""
        out = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def get(self, path):
        return http_get(self.admin + path, timeout=2)

    def status(self):
        return json.loads(self.get("/pod")[1])

    def container(self, name):
        for c in self.status()["containers"]:
            if c["name"] == name:
                return c
        raise KeyError(name)

    def wait_ready(self, timeout=15):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError(f"pod exited {self.proc.returncode}:\n{self.output()}")
            return self.get("/ready")[0] == 200

        try:
            wait_until(ok, timeout=timeout, what="pod /ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- pod output ---\n{self.output()}") from None

    def wait_exit(self, timeout=20):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pod did not exit within {timeout}s:\n{self.output()}")
        self.out.close()
        return self.proc.returncode

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def close(self):
        """Stops the runner at teardown: SIGTERM, then a second SIGTERM (which kills every
        container at once), and SIGKILL only as a last resort, which would orphan the
        containers (each has its own session)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if not self.out.closed:
            self.out.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def manifest(containers, init=(), restart="Always", grace=5, volumes=(), name="t", **spec):
    """A v1 Pod as JSON text (JSON is YAML), so shell commands need no YAML quoting."""
    s = {"restartPolicy": restart, "terminationGracePeriodSeconds": grace,
         "containers": list(containers)}
    if init:
        s["initContainers"] = list(init)
    if volumes:
        s["volumes"] = list(volumes)
    s.update(spec)
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s},
                      indent=1)


def sh(name, script, **kw):
    """A container running `sh -c script`."""
    c = {"name": name, "image": "busybox", "command": ["sh", "-c", script]}
    c.update(kw)
    return c


def service(events, name, extra=""):
    """A long-running container that records its start and, on SIGTERM, its stop."""
    return (f'trap \'{ev(events, "stop-" + name)}; exit 0\' TERM; {ev(events, "start-" + name)}; '
            f'{extra} while true; do sleep 0.05; done')


def wait_events(events, *names, timeout=10):
    """Waits until every one of <names> has been recorded."""
    wait_until(lambda: all(n in [e for e, _ in read_events(events)] for n in names),
               timeout=timeout, what=f"events {names}")


@pytest.fixture
def pod(tmp_path):
    """Starts pods from manifest text; each is closed at teardown. Test modules import it."""
    pods = []

    def start(text, **kw):
        p = Pod(tmp_path, text, **kw)
        pods.append(p)
        return p

    yield start
    for p in pods:
        p.close()
