# SPDX-License-Identifier: Apache-2.0
"""The proxy's side of transparent interception, in the three namespaces of iptables_util (client,
pod, server) with `sidecar iptables` applied (each backend) and the proxy running as uid 1337:

- inbound: the client's connections to the pod's address reach apps that listen only on the pod's
  address, through the inbound listener (protocol auto) and an original_dst cluster that connects
  from 127.0.0.6, which the rules let through (the app sees 127.0.0.6 as its peer);
- inbound TCP: a server-first protocol on a port declared opaque greets at once, and one that is
  not declared is released by the detection timeout;
- outbound TCP: the app's connection to a server-first protocol on the server goes through the
  outbound listener to its original destination.

Witnesses: the peers' answers (the peer address they saw) and the proxy's access log."""
import json
import time
import uuid
from pathlib import Path

import pytest

from iptables_util import (APP_UID, CLIENT4, CLIENT6, PY, POD4, POD6, SERVER4, SERVER6, Pod,
                           need_netns)

HERE = Path(__file__).resolve().parent
PEERS = HERE / "intercept_peers.py"

CONFIG = """\
admin: 127.0.0.1:15000
access_log: stdout
retries: 0
listeners:
  - name: inbound
    address: "[::]:15006"
    protocol: auto
    protocol_detection_timeout: 600ms
    opaque_ports: ["8084"]
    routes: [{ name: app, cluster: inbound-passthrough }]
    tcp_cluster: inbound-passthrough
  - name: outbound
    address: 127.0.0.1:15001
    protocol: auto
    protocol_detection_timeout: 600ms
    routes: [{ name: passthrough, cluster: passthrough }]
  - name: outbound6
    address: "[::1]:15001"
    protocol: auto
    opaque_ports: ["9998"]
    routes: [{ name: passthrough, cluster: passthrough }]
clusters:
  - name: inbound-passthrough
    type: original_dst
    upstream_bind_address: [127.0.0.6, "::6"]
  - name: passthrough
    type: original_dst
"""


def start_peers(ns):
    # Apps bound to the pod's address only: loopback cannot reach them, 127.0.0.6 can.
    ns.start("pod", PY, PEERS, "http", POD4, 8083, uid=APP_UID)
    ns.start("pod", PY, PEERS, "greet", POD4, 8084, uid=APP_UID)
    ns.start("pod", PY, PEERS, "greet", POD4, 8085, uid=APP_UID)
    ns.start("server", PY, PEERS, "greet", SERVER4, 9998)
    ns.start("server", PY, PEERS, "greet", SERVER6, 9998)
    ns.start("pod", PY, PEERS, "http", POD6, 8083, uid=APP_UID)
    # The app's answers to ::6 route back through loopback because `sidecar iptables --ipv6
    # true` adds ::6/128 to lo (not the test).


@pytest.fixture(scope="module", params=["iptables", "nft"])
def pod(request):
    need_netns()
    p = Pod(config=CONFIG, setup=start_peers)
    try:
        r = p.iptables("--backend", request.param, "--ipv6", "true")
        assert "interception in place and verified" in r.stderr
        yield p
    finally:
        p.close()


def wait_line(pod, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        found = pod.log_json(lambda x: "detection" in x and pred(x))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def peer_client(pod, role, host, port, line=None, uid=None):
    args = [PY, PEERS, "client", host, port] + ([line] if line else [])
    r = pod.ns.run(role, *args, uid=uid, check=False, timeout=20)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_inbound_http_from_127_0_0_6_to_app_on_pod_address(pod):
    p = f"/t-{uuid.uuid4().hex[:12]}"
    a = pod.get("client", f"http://{POD4}:8083{p}")
    # The app listens on the pod's address only; the proxy reached it from the passthrough source.
    assert a["peer"] == "127.0.0.6" and a["local"] == POD4 and a["port"] == 8083
    assert a["headers"].get("via") == "1.1 sidecar"
    (line,) = pod.log_lines(p)
    assert line["listener"] == "inbound" and line["cluster"] == "inbound-passthrough"
    assert line["endpoint"] == f"{POD4}:8083"
    assert line["peer"].removeprefix("::ffff:") == CLIENT4


def test_inbound_opaque_port_greets_at_once(pod):
    g = peer_client(pod, "client", POD4, 8084, "HELO c")
    assert g["greeting"] == "220 hello 127.0.0.6\r\n"
    assert g["answer"] == "250 HELO c\r\n"
    assert g["seconds"] < 0.5
    lines = wait_line(pod, lambda x: x["original_dst"] == f"{POD4}:8084")
    assert lines and lines[0]["detection"] == "port" and lines[0]["listener"] == "inbound"
    assert lines[0]["upstream"] == f"{POD4}:8084"


def test_inbound_server_first_released_by_detection_timeout(pod):
    g = peer_client(pod, "client", POD4, 8085, "HELO d")
    assert g["greeting"] == "220 hello 127.0.0.6\r\n" and g["answer"] == "250 HELO d\r\n"
    assert g["seconds"] >= 0.5
    lines = wait_line(pod, lambda x: x["original_dst"] == f"{POD4}:8085")
    assert lines and lines[0]["detection"] == "timeout" and lines[0]["protocol"] == "tcp"


def test_outbound_tcp_to_original_destination(pod):
    g = peer_client(pod, "pod", SERVER4, 9998, "HELO app", uid=APP_UID)
    # The server saw the pod's address: the proxy (uid 1337) connected out without looping.
    assert g["greeting"] == "220 hello 10.213.2.1\r\n" and g["answer"] == "250 HELO app\r\n"
    lines = wait_line(pod, lambda x: x["original_dst"] == f"{SERVER4}:9998")
    assert len(lines) == 1
    line = lines[0]
    assert line["listener"] == "outbound" and line["upstream"] == f"{SERVER4}:9998"
    assert line["detection"] == "timeout" and line["flags"] == "-"
    assert line["bytes_received"] == len("HELO app\r\n")
    assert line["bytes_sent"] == len(g["greeting"]) + len(g["answer"])


def test_inbound_http_ipv6_from_6(pod):
    p = f"/t-{uuid.uuid4().hex[:12]}"
    a = pod.get("client", f"http://[{POD6}]:8083{p}")
    assert a["peer"] == "::6" and a["local"] == POD6 and a["port"] == 8083
    (line,) = pod.log_lines(p)
    assert line["listener"] == "inbound" and line["endpoint"] == f"[{POD6}]:8083"
    assert line["peer"] == CLIENT6


def test_outbound_tcp_ipv6_opaque_port(pod):
    g = peer_client(pod, "pod", SERVER6, 9998, "HELO six", uid=APP_UID)
    assert g["greeting"] == "220 hello fd00:213:2::1\r\n" and g["answer"] == "250 HELO six\r\n"
    assert g["seconds"] < 0.5
    lines = wait_line(pod, lambda x: x["original_dst"] == f"[{SERVER6}]:9998")
    assert len(lines) == 1 and lines[0]["listener"] == "outbound6"
    assert lines[0]["detection"] == "port" and lines[0]["upstream"] == f"[{SERVER6}]:9998"
