# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: TCP health checks (a cluster's `health_check.tcp`, and Envoy's
tcp_health_check mapped onto it). Peers: small TCP servers that answer HTTP requests with their
name and a health probe ("PING") with the bytes they are told to; a port that is closed, then
opened. An endpoint leaves load balancing when it refuses connections or answers the wrong bytes,
and comes back when it answers again."""
import base64
import json
import socket
import subprocess
import threading

import pytest

from conftest import free_port
from proxy_util import metric, proxy_config, wait_for
from test_proxy_cluster import log_events
from test_proxy_envoy_chains import HCM, ROUTER, cluster, sa


class Peer:
    """Answers "PING..." with self.pong (then closes) and anything else as HTTP/1.1 with its
    name. Can be stopped (the port refuses connections) and started again on the same port."""

    def __init__(self, name, port=None):
        self.name, self.pong, self.pings = name, b"PONG\r\n", 0
        self.port = port or free_port()
        self.sock = None
        self.start()

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self._serve, args=(self.sock,), daemon=True).start()

    def stop(self):
        self.sock.close()

    def _serve(self, lsock):
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            conn.settimeout(5)
            data = conn.recv(4096)
            if data.startswith(b"PING"):
                self.pings += 1
                conn.sendall(self.pong)
                return
            while b"\r\n\r\n" not in data:
                more = conn.recv(4096)
                if not more:
                    return
                data += more
            body = self.name.encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def peers():
    made = []

    def make(name, port=None):
        p = Peer(name, port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def names(port, n=8):
    out = set()
    for _ in range(n):
        r = subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/"],
                           capture_output=True, timeout=10)
        out.add(r.stdout.decode() if r.returncode == 0 else f"error {r.returncode}")
    return out


def unhealthy(sc, name="c"):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_upstream_endpoints_unhealthy",
                  cluster=name)


def native(port, endpoints, tcp, **more):
    hc = {"tcp": tcp, "interval": "100ms", "timeout": "1s", "unhealthy_threshold": 2,
          "healthy_threshold": 2, **more}
    c = {"name": "c", "endpoints": endpoints, "health_check": hc,
         "outlier_detection": {"consecutive_5xx": 0}}
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}",
                          "routes": [{"name": "r", "cluster": "c",
                                      "retry_policy": {"num_retries": 0}}]}], [c])


def test_connect_only_port_closes_and_opens(sidecar_run, peers):
    a, b = peers("A"), peers("B")
    port = free_port()
    sc = sidecar_run("proxy", config=native(port, [f"127.0.0.1:{a.port}",
                                                   f"127.0.0.1:{b.port}"], {}))
    assert names(port) == {"A", "B"}
    b.stop()
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    ev = log_events(sc, "endpoint out of load balancing")[0]
    assert ev["endpoint"] == f"127.0.0.1:{b.port}" and "refused" in ev["reason"].lower(), ev
    assert names(port) == {"A"}
    assert a.pings == 0  # connect only: nothing written
    b.start()
    assert wait_for(lambda: unhealthy(sc) == 0, timeout=10)
    assert names(port) == {"A", "B"}


def test_send_and_receive_blocks(sidecar_run, peers):
    a, b = peers("A"), peers("B")
    port = free_port()
    tcp = {"send": b"PING\r\n".hex(), "receive": [b"PO".hex(), b"NG".hex()]}
    sc = sidecar_run("proxy", config=native(port, [f"127.0.0.1:{a.port}",
                                                   f"127.0.0.1:{b.port}"], tcp))
    assert wait_for(lambda: a.pings >= 2 and b.pings >= 2, timeout=10)
    assert names(port) == {"A", "B"}
    b.pong = b"NGPO\r\n"  # the blocks out of order: wrong
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    ev = log_events(sc, "endpoint out of load balancing")[0]
    assert ev["endpoint"] == f"127.0.0.1:{b.port}", ev
    assert ev["reason"] == "connection closed before the expected reply", ev
    assert names(port) == {"A"}
    b.pong = b"xPOxxNGx"  # in order, not adjacent: passes (Envoy's fuzzy match)
    assert wait_for(lambda: unhealthy(sc) == 0, timeout=10)
    assert names(port) == {"A", "B"}


def test_silent_peer_fails_on_the_deadline(sidecar_run, peers):
    """A peer that takes the connection (the kernel's backlog) and never answers: the check
    fails when its timeout passes, with the reason "timeout"."""
    a = peers("A")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accepted: connects succeed, nothing is ever read or written
    try:
        port = free_port()
        tcp = {"send": b"PING\r\n".hex(), "receive": [b"PONG".hex()]}
        sc = sidecar_run("proxy", config=native(port, [f"127.0.0.1:{a.port}",
                                                       f"127.0.0.1:{silent.getsockname()[1]}"],
                                                tcp, timeout="200ms"))
        assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
        ev = log_events(sc, "endpoint out of load balancing")[0]
        assert ev["endpoint"] == f"127.0.0.1:{silent.getsockname()[1]}", ev
        assert ev["reason"] == "timeout", ev
        assert names(port) == {"A"}
    finally:
        silent.close()


def test_native_refusals(run_cli, tmp_path):
    for tcp, msg in (({"send": "50494"}, "health_check tcp send is not hex"),
                     ({"receive": ["zz"]}, "health_check tcp receive[0] is not hex")):
        path = tmp_path / "c.yaml"
        path.write_text(native(1, ["127.0.0.1:2"], tcp))
        p = run_cli("proxy", "-c", str(path), "--check")
        assert p.returncode != 0 and msg in p.stderr, p.stderr
    path.write_text(native(1, ["127.0.0.1:2"], {}, path="/"))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0 and "more than one of path (HTTP), grpc and tcp" in p.stderr


def envoy(port, a, b, tcp):
    c = cluster("c", a.port)
    c["load_assignment"]["endpoints"][0]["lb_endpoints"].append(
        {"endpoint": {"address": sa(b.port)}})
    c["health_checks"] = [{"timeout": "1s", "interval": "0.1s", "unhealthy_threshold": 2,
                           "healthy_threshold": 2, "tcp_health_check": tcp}]
    hcm = {"@type": HCM, "stat_prefix": "h", "route_config": {"virtual_hosts": [
        {"name": "a", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                    "route": {"cluster": "c"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER}}]}
    return json.dumps({"static_resources": {"listeners": [{"name": "l", "address": sa(port),
                                                          "filter_chains": [{"filters": [
                                                              {"name": "hcm",
                                                               "typed_config": hcm}]}]}],
                                            "clusters": [c]}})


def test_envoy_tcp_health_check(sidecar_run, run_cli, tmp_path, peers):
    a, b = peers("A"), peers("B")
    port = free_port()
    tcp = {"send": {"text": b"PING\r\n".hex().upper()},
           "receive": [{"binary": base64.b64encode(b"PONG").decode()}]}
    cfg = envoy(port, a, b, tcp)
    path = tmp_path / "e.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    assert out["clusters"][0]["health_check"]["tcp"] == {"send": "50494E470D0A",
                                                         "receive": ["504f4e47"]}
    sc = sidecar_run("proxy", config=cfg)
    assert wait_for(lambda: a.pings >= 2 and b.pings >= 2, timeout=10)
    b.pong = b"PANG\r\n"
    assert wait_for(lambda: unhealthy(sc) == 1, timeout=10)
    assert names(port) == {"A"}


@pytest.mark.parametrize("tcp,msg,where", [
    ({"send": {"text": "5"}}, "text is not hex", "health_checks[0].tcp_health_check.send"),
    ({"receive": [{"binary": "!!"}]}, "binary is not base64",
     "health_checks[0].tcp_health_check.receive[0]"),
    ({"receive": [{"text": ""}]}, "an empty block to expect",
     "health_checks[0].tcp_health_check.receive[0]"),
    ({"send": {"text": "50", "binary": "UA=="}}, "a Payload has one of text and binary",
     "health_checks[0].tcp_health_check.send"),
], ids=["odd_hex", "bad_base64", "empty_block", "both"])
def test_envoy_refusals(run_cli, tmp_path, peers, tcp, msg, where):
    a = peers("A")
    path = tmp_path / "e.json"
    path.write_text(envoy(1, a, a, tcp))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr and f"{path}:1:" in p.stderr, p.stderr
    assert "static_resources.clusters[0]." + where in p.stderr, p.stderr
