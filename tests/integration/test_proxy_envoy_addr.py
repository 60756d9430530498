# SPDX-License-Identifier: Apache-2.0
"""Filter chains chosen by address (Envoy's filter_chain_match prefix_ranges,
source_prefix_ranges, source_type, source_ports) and the native tcp_routes conditions they map
onto, on loopback: the client binds 127.0.0.2 or a fixed port as its source, and connects to
127.0.0.1, 127.0.0.2, 127.0.0.5 or 127.0.0.6 of a listener on 0.0.0.0 (its destination address);
IPv6 on ::1. Each upstream names itself, so the test sees which chain took the connection."""
import json
import socket

import pytest

from conftest import free_port
from test_proxy_envoy_chains import bootstrap, cluster, sa, tcp_chain
from test_proxy_tcp import TcpServer

T = "type.googleapis.com/envoy.extensions."


def namer(name):
    def handler(conn):
        conn.sendall(name.encode() + b"\n")
    return handler


def who(port, dst="127.0.0.1", src=None, sport=0, fam=socket.AF_INET):
    s = socket.socket(fam)
    s.settimeout(5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if src or sport:
        s.bind((src or ("::1" if fam == socket.AF_INET6 else "127.0.0.1"), sport))
    s.connect((dst, port))
    buf = b""
    while not buf.endswith(b"\n"):
        b = s.recv(100)
        if not b:
            break
        buf += b
    s.close()
    return buf.decode().strip()


def cidr(a, n):
    return {"address_prefix": a, "prefix_len": n}


@pytest.fixture
def servers():
    made = {}

    def get(name):
        if name not in made:
            made[name] = TcpServer(namer(name))
        return made[name]
    yield get
    for s in made.values():
        s.stopped = True
        s.sock.close()


def test_envoy_address_matches(sidecar_run, run_cli, tmp_path, servers):
    """Destination prefixes win by length (a /32 over a /30 of the same chain file), then the
    source conditions; what none takes goes to the default chain."""
    port, sport = free_port(), free_port()
    chains = [
        tcp_chain("wide", name="wide", prefix_ranges=[cidr("127.0.0.4", 30)]),
        tcp_chain("narrow", name="narrow",
                  prefix_ranges=[cidr("127.0.0.5", 32), cidr("127.0.0.2", 32)]),
        tcp_chain("from2", name="from2", source_prefix_ranges=[cidr("127.0.0.2", 32)]),
        tcp_chain("sport", name="sport", source_ports=[sport]),
        tcp_chain("external", name="external", source_type="EXTERNAL"),
    ]
    names = ["wide", "narrow", "from2", "sport", "external", "default"]
    clusters = [cluster(n, servers(n).port) for n in names]
    listener_cfg = json.loads(bootstrap(port, chains, clusters, default=tcp_chain("default")))
    listener_cfg["static_resources"]["listeners"][0]["address"] = sa(port, "0.0.0.0")
    cfg = json.dumps(listener_cfg)
    path = tmp_path / "addr.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    (lst,) = out["listeners"]
    assert lst["protocol"] == "tcp"
    rs = [(r["name"], r.get("destination_prefix_ranges"), r.get("source_prefix_ranges"),
           r.get("source_ports"), r.get("source_type")) for r in lst["tcp_routes"]]
    assert rs == [("narrow", ["127.0.0.5/32", "127.0.0.2/32"], None, None, None),
                  ("wide", ["127.0.0.4/30"], None, None, None),
                  ("external", None, None, None, "external"),
                  ("from2", None, ["127.0.0.2/32"], None, None),
                  ("sport", None, None, [str(sport)], None),
                  ("default_filter_chain", None, None, None, None)]
    sidecar_run("proxy", config=cfg)
    assert who(port, "127.0.0.5") == "narrow"
    assert who(port, "127.0.0.2") == "narrow"
    assert who(port, "127.0.0.6") == "wide"
    assert who(port, "127.0.0.4", src="127.0.0.2") == "wide"  # destination first
    assert who(port, "127.0.0.1", src="127.0.0.2") == "from2"
    assert who(port, "127.0.0.1", sport=sport) == "sport"
    assert who(port, "127.0.0.1") == "default"  # loopback is local, never external
    assert who(port, "127.0.0.3", src="127.0.0.3") == "default"


def test_envoy_source_type_local_and_ipv6(sidecar_run, servers):
    """SAME_IP_OR_LOOPBACK takes loopback clients; IPv6 prefixes match IPv6 connections."""
    port = free_port()
    chains = [
        tcp_chain("v6", name="v6", prefix_ranges=[cidr("::1", 128)]),
        tcp_chain("other6", name="other6", source_prefix_ranges=[cidr("fd00::", 8)]),
        tcp_chain("local", name="local", source_type="SAME_IP_OR_LOOPBACK"),
    ]
    names = ["v6", "other6", "local", "default"]
    cfg = json.loads(bootstrap(port, chains, [cluster(n, servers(n).port) for n in names],
                               default=tcp_chain("default")))
    cfg["static_resources"]["listeners"][0]["address"] = sa(port, "::")
    sidecar_run("proxy", config=json.dumps(cfg))
    assert who(port, "::1", fam=socket.AF_INET6) == "v6"
    assert who(port, "127.0.0.1") == "local"


def test_native_address_routes(sidecar_run, servers):
    port, sport = free_port(), free_port()
    names = ["dst", "src", "sport", "ext", "rest"]
    for n in names:
        servers(n)
    cl = "\n".join(f"  - {{name: {n}, endpoints: ['127.0.0.1:{servers(n).port}']}}"
                   for n in names)
    cfg = f"""
listeners:
  - name: t
    address: 0.0.0.0:{port}
    protocol: tcp
    tcp_routes:
      - {{name: dst, destination_prefix_ranges: [127.0.0.8/29, "::2"], cluster: dst}}
      - {{name: src, source_prefix_ranges: [127.0.0.2], cluster: src}}
      - {{name: sport, source_ports: ["{sport}"], cluster: sport}}
      - {{name: ext, source_type: external, cluster: ext}}
    tcp_cluster: rest
clusters:
{cl}
"""
    sidecar_run("proxy", config=cfg)
    assert who(port, "127.0.0.9") == "dst"
    assert who(port, "127.0.0.1", src="127.0.0.2") == "src"
    assert who(port, "127.0.0.1", sport=sport) == "sport"
    assert who(port, "127.0.0.1") == "rest"


def test_native_bad_cidr_refused(run_cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  - name: t\n    address: 127.0.0.1:1\n    protocol: tcp\n"
                    "    tcp_routes:\n      - {source_prefix_ranges: [10.0.0.0/33], "
                    "cluster: c}\nclusters:\n  - {name: c, endpoints: ['127.0.0.1:2']}\n")
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert f"{path}:6:" in p.stderr and "10.0.0.0/33" in p.stderr, p.stderr


REFUSALS = [
    ("plain_next_to_hcm", "a plaintext chain with address matches next to the",
     "filter_chains[0]"),
    ("bad_prefix", "address_prefix \"10.0.0\" is not an IP address",
     "filter_chains[0].filter_chain_match.prefix_ranges[0]"),
    ("bad_len", "prefix_len 33 is not 0 to 32",
     "filter_chains[0].filter_chain_match.source_prefix_ranges[0]"),
    ("bad_type", "source_type LOCAL is not ANY", "filter_chains[0]"),
    ("both_sources", "direct_source_prefix_ranges next to source_prefix_ranges",
     "filter_chains[0]"),
    ("suffix", "address_suffix is not supported", "filter_chains[0]"),
]


def refusal(kind):
    from test_proxy_envoy_chains import hcm_chain
    hr = [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]
    chains = [tcp_chain("app", server_names=["a.test"]), hcm_chain(hr)]
    m = chains[0]["filter_chain_match"]
    if kind == "plain_next_to_hcm":
        chains[0]["filter_chain_match"] = {"source_prefix_ranges": [cidr("10.0.0.0", 8)]}
    elif kind == "bad_prefix":
        m["prefix_ranges"] = [cidr("10.0.0", 8)]
    elif kind == "bad_len":
        m["source_prefix_ranges"] = [cidr("10.0.0.0", 33)]
    elif kind == "bad_type":
        m["source_type"] = "LOCAL"
    elif kind == "both_sources":
        m["source_prefix_ranges"] = [cidr("10.0.0.0", 8)]
        m["direct_source_prefix_ranges"] = [cidr("10.0.0.0", 8)]
    elif kind == "suffix":
        m["address_suffix"] = "1"
    return bootstrap(15006, chains, [cluster("app", 1)])


@pytest.mark.parametrize("kind,msg,where", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_position_and_path(run_cli, tmp_path, kind, msg, where):
    path = tmp_path / "envoy.json"
    path.write_text(refusal(kind))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
    assert f"{path}:1:" in p.stderr, p.stderr
    assert "static_resources.listeners[0]." + where in p.stderr, p.stderr


def test_envoy_prefix_ranges_on_original_destination():
    """Interception (network namespaces, `sidecar iptables`): an outbound listener with
    use_original_dst takes the app's connections, and prefix_ranges match the address the app
    was going to, IPv4 and IPv6, the longest prefix first; what no chain takes goes to its
    original destination."""
    from iptables_util import APP_UID, POD4, SERVER4, SERVER6, SERVER_ALT4, Pod, need_netns
    need_netns()
    assert POD4

    def static(name, host, port):
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": sa(port, host)}}]}]}}

    def listener(name, host, chains):
        return {"name": name, "address": sa(15001, host), "use_original_dst": True,
                "listener_filters": [{"name": "envoy.filters.listener.original_dst"}],
                "filter_chains": chains, "default_filter_chain": tcp_chain("passthrough")}

    cfg = {"admin": {"address": sa(15000)}, "static_resources": {
        "listeners": [
            listener("outbound", "127.0.0.1", [
                tcp_chain("net", name="net", destination_port=9000,
                          prefix_ranges=[cidr("10.213.0.0", 16)]),
                tcp_chain("server", name="server", destination_port=9000,
                          prefix_ranges=[cidr(SERVER4, 32)])]),
            listener("outbound6", "::1", [
                tcp_chain("server6", name="server6", destination_port=9000,
                          prefix_ranges=[cidr(SERVER6, 128)])]),
        ],
        "clusters": [static("server", SERVER4, 8081), static("net", SERVER4, 9999),
                     static("server6", SERVER6, 8081),
                     {"name": "passthrough", "type": "ORIGINAL_DST", "connect_timeout": "1s",
                      "lb_policy": "CLUSTER_PROVIDED"}]}}
    pod = Pod(config=json.dumps(cfg))
    try:
        r = pod.iptables("--backend", "iptables", "--ipv6", "true")
        assert "interception in place and verified" in r.stderr
        # nothing listens on 9000: only the chains make these answer
        a = pod.get("pod", f"http://{SERVER4}:9000/a", uid=APP_UID)
        assert a["port"] == 8081 and a["local"] == SERVER4  # the /32 over the /16
        a = pod.get("pod", f"http://{SERVER_ALT4}:9000/b", uid=APP_UID)
        assert a["port"] == 9999  # the /16
        a = pod.get("pod", f"http://[{SERVER6}]:9000/c", uid=APP_UID)
        assert a["port"] == 8081 and a["local"] == SERVER6
        a = pod.get("pod", f"http://{SERVER4}:8081/d", uid=APP_UID)
        assert a["port"] == 8081 and a["path"] == "/d"  # another port: the original destination
    finally:
        pod.close()
