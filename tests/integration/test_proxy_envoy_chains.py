# SPDX-License-Identifier: Apache-2.0
"""Envoy listeners of several filter chains (filter_chain_match by destination port, server name,
transport protocol and ALPN, a default_filter_chain) and the tcp_proxy network filter, run against
real peers: nginx behind the http_connection_manager chain, TLS servers presenting their own
certificates behind tcp_proxy chains chosen by SNI (checked with openssl s_client and curl), and
plain TCP servers behind port-specific and default chains. Query-parameter matches and
regex_rewrite are checked natively and from an Envoy bootstrap over HTTP/1.1 and HTTP/2 (curl),
with nginx reporting the target it received. Combinations detection cannot express are refused
with their position and Envoy path."""
import json
import socket
import subprocess
import time

import pytest

from config_peers import Nginx, nginx_conf
from conftest import free_port
from proxy_util import proxy_config
from test_proxy_tcp import TcpServer, greeter, recv_until, tcp_lines, tls_server
from tls_util import make_leaf, pki  # noqa: F401 (fixture)

T = "type.googleapis.com/envoy.extensions."
HCM = T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP = T + "filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = T + "filters.http.router.v3.Router"


def sa(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def cluster(name, port, **extra):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": sa(port)}}]}]}, **extra}


def tcp_chain(cluster_name, name=None, **match):
    c = {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP, "stat_prefix": "tcp", "cluster": cluster_name}}]}
    if name:
        c["name"] = name
    if match:
        c["filter_chain_match"] = match
    return c


def hcm_chain(routes, **match):
    c = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": "http", "route_config": {"virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}]}}]}
    if match:
        c["filter_chain_match"] = match
    return c


def bootstrap(port, chains, clusters, default=None):
    listener = {"name": "virtual", "address": sa(port),
                "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
                "filter_chains": chains}
    if default:
        listener["default_filter_chain"] = default
    return json.dumps({"static_resources": {"listeners": [listener], "clusters": clusters}})


@pytest.fixture
def uri_nginx(tmp_path):
    """nginx answering every request with the target it received."""
    n = Nginx(tmp_path / "nginx", port=free_port())
    n.conf.write_text(nginx_conf(n.root, n.port, "uri=$request_uri"))
    n.start()
    yield n
    n.stop()


def curl(port, path, *extra):
    r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *extra,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.decode().rpartition("\n")
    return int(code), body


def s_client(port, sni, ca, alpn=None):
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni,
            "-CAfile", str(ca), "-verify_return_error", "-brief"]
    if alpn:
        args += ["-alpn", alpn]
    p = subprocess.run(args, input=b"", capture_output=True, timeout=10)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace").replace(" = ", "=")


def test_chains_by_sni_alpn_transport_and_default(sidecar_run, pki, tmp_path, uri_nginx):  # noqa
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.example.test", out=tmp_path)
    b_cert, b_key = make_leaf(pki, "b", "DNS:*.wild.test,DNS:exact.wild.test", out=tmp_path)
    a, b = tls_server(str(a_cert), str(a_key), "A"), tls_server(str(b_cert), str(b_key), "B")
    plain = TcpServer(greeter)
    port = free_port()
    chains = [
        # the wildcard comes first in the file; the exact name still wins (Envoy's precedence)
        tcp_chain("b", name="wild", server_names=["*.wild.test"], transport_protocol="tls"),
        tcp_chain("a", name="exact", server_names=["exact.wild.test", "a.example.test"]),
        # (its access_log turns the proxy's access log on)
        tcp_chain("a", name="h2only", server_names=["alpn.test"], application_protocols=["h2"]),
        hcm_chain([{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                  transport_protocol="raw_buffer", application_protocols=["http/1.1", "h2c"]),
    ]
    chains[1]["filters"][0]["typed_config"]["access_log"] = [{"name": "stdout"}]
    clusters = [cluster("a", a.port), cluster("b", b.port), cluster("plain", plain.port),
                cluster("app", uri_nginx.port)]
    sc = sidecar_run("proxy", config=bootstrap(port, chains, clusters,
                                               default=tcp_chain("plain")))
    ca = pki / "ca.pem"
    # TLS by server name, untouched: each client sees its upstream's own certificate.
    for sni, want in (("a.example.test", "CN=a"), ("x.wild.test", "CN=b"),
                      ("exact.wild.test", "CN=a")):
        rc, out = s_client(port, sni, ca)
        assert rc == 0 and want in out, (sni, out)
    r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(ca), "--resolve",
                        f"a.example.test:{port}:127.0.0.1", f"https://a.example.test:{port}/"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"A", r.stderr
    # ALPN narrows a chain: with h2 offered it is taken, without it the default chain (a plain
    # greeter, no TLS server) gets the ClientHello and the handshake fails.
    rc, out = s_client(port, "alpn.test", ca, alpn="h2")
    assert rc == 0 and "CN=a" in out, out
    rc, out = s_client(port, "alpn.test", ca, alpn="http/1.1")
    assert rc != 0
    # Plaintext HTTP/1 and h2c go to the connection manager's routes (nginx).
    assert curl(port, "/x?y=1") == (200, "uri=/x?y=1")
    assert curl(port, "/h2", "--http2-prior-knowledge") == (200, "uri=/h2")
    # Anything else goes to the default chain.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"HELO there\r\n")
    assert recv_until(s, b"HELO there\r\n") == b"220 greeter ready\r\n250 HELO there\r\n"
    s.close()
    lines = tcp_lines(sc, at_least=7)
    routes = {(x["sni"], x["route"]) for x in lines}
    assert {("a.example.test", "exact"), ("x.wild.test", "wild"), ("exact.wild.test", "exact"),
            ("alpn.test", "h2only"), ("alpn.test", "default_filter_chain"),
            ("", "default_filter_chain")} <= routes, routes
    for x in (a, b, plain):
        x.close()


def test_port_chain_is_relayed_without_detection(sidecar_run, uri_nginx, run_cli, tmp_path):
    """A chain for the listener's own destination port takes every connection to it, HTTP/1
    included (Envoy picks the most specific destination_port first); the translation relays that
    port without detection (opaque_ports)."""
    plain = TcpServer(greeter)
    port, other = free_port(), free_port()
    chains = [hcm_chain([{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]),
              tcp_chain("plain", name="db", destination_port=port),
              tcp_chain("app", name="never", destination_port=other)]
    clusters = [cluster("plain", plain.port), cluster("app", uri_nginx.port)]
    cfg = bootstrap(port, chains, clusters)
    path = tmp_path / "ports.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    derived = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    (lst,) = derived["listeners"]
    assert lst["protocol"] == "auto" and lst["opaque_ports"] == [str(port), str(other)]
    assert [r["name"] for r in lst["tcp_routes"]] == ["db", "never"]
    sidecar_run("proxy", config=cfg)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert recv_until(s, b"\r\n") == b"220 greeter ready\r\n"  # no wait for detection
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recv_until(s, b"Host: x\r\n").startswith(b"250 GET / HTTP/1.1")
    s.close()
    plain.close()


def test_tcp_proxy_alone_and_idle_timeout(sidecar_run, run_cli, tmp_path):
    """One tcp_proxy chain: a listener of protocol tcp; HTTP/1 is relayed like the rest."""
    plain = TcpServer(greeter)
    port = free_port()
    chain = tcp_chain("plain")
    chain["filters"][0]["typed_config"]["idle_timeout"] = "1s"
    cfg = bootstrap(port, [chain], [cluster("plain", plain.port)])
    path = tmp_path / "tcp.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    lst = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])["listeners"][0]
    assert lst["protocol"] == "tcp" and lst["tcp_idle_timeout"] == "1s"
    sidecar_run("proxy", config=cfg)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = recv_until(s, b"250 \r\n")  # the greeter echoes the head's last (empty) line too
    assert got.startswith(b"220 greeter ready\r\n250 GET / HTTP/1.1")
    t0 = time.monotonic()
    assert recv_until(s, b"never") == b""  # closed by the idle timeout
    assert 0.5 < time.monotonic() - t0 < 4
    s.close()
    plain.close()


def named_server(name):
    def handle(conn):
        conn.sendall(name + b"\r\n")
    return TcpServer(handle)


def test_tcp_proxy_weighted_clusters(sidecar_run):
    """weighted_clusters share the connections by weight (80/20 over 500 connections)."""
    x, y = named_server(b"x"), named_server(b"y")
    port = free_port()
    chain = tcp_chain("unused")
    tc = chain["filters"][0]["typed_config"]
    del tc["cluster"]
    tc["weighted_clusters"] = {"clusters": [{"name": "x", "weight": 80},
                                            {"name": "y", "weight": 20}]}
    sidecar_run("proxy", config=bootstrap(port, [chain], [cluster("x", x.port),
                                                          cluster("y", y.port)]))
    got = {b"x\r\n": 0, b"y\r\n": 0}
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        got[recv_until(s, b"\r\n")] += 1
        s.close()
    assert 340 <= got[b"x\r\n"] <= 460, got  # 400 expected; binomial sd ~9
    x.close()
    y.close()


QUERY_ROUTES = [
    {"match": {"prefix": "/", "query_parameters": [
        {"name": "v", "string_match": {"exact": "2"}}]},
     "route": {"cluster": "app", "regex_rewrite": {
         "pattern": {"regex": "^/api/([a-z]+)/(\\d+)$"}, "substitution": "/v2/\\2/\\1"}}},
    {"match": {"prefix": "/", "query_parameters": [
        {"name": "debug", "present_match": True},
        {"name": "user", "string_match": {"safe_regex": {"regex": "[a-z]+-[0-9]+"}}}]},
     "direct_response": {"status": 299, "body": {"inline_string": "debug"}}},
    {"match": {"prefix": "/", "query_parameters": [
        {"name": "lang", "string_match": {"prefix": "en"}}]},
     "direct_response": {"status": 298, "body": {"inline_string": "english"}}},
    {"match": {"prefix": "/"}, "route": {"cluster": "app"}},
]


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2c"])
def test_envoy_query_parameters_and_regex_rewrite(sidecar_run, uri_nginx, h2):
    port = free_port()
    cfg = bootstrap(port, [hcm_chain(QUERY_ROUTES)], [cluster("app", uri_nginx.port)])
    sidecar_run("proxy", config=cfg)
    extra = ["--http2-prior-knowledge"] if h2 else []
    # v=2: the path is rewritten by the regex (groups swapped), the query kept
    assert curl(port, "/api/users/42?v=2&x=1", *extra) == (200, "uri=/v2/42/users?v=2&x=1")
    # the pattern does not match: the path goes unchanged
    assert curl(port, "/other?v=2", *extra) == (200, "uri=/other?v=2")
    # the first occurrence counts; values are compared as sent
    assert curl(port, "/api/users/42?v=3&v=2", *extra) == (200, "uri=/api/users/42?v=3&v=2")
    assert curl(port, "/api/users/42?v=%32", *extra) == (200, "uri=/api/users/42?v=%32")
    # present (even without a value) and a whole-value regex, both needed
    assert curl(port, "/?debug&user=ann-7", *extra) == (299, "debug")
    assert curl(port, "/?debug=0&user=ann-7x", *extra)[0] == 200
    assert curl(port, "/?user=ann-7", *extra)[0] == 200
    assert curl(port, "/?lang=en-GB", *extra) == (298, "english")
    assert curl(port, "/?xlang=en", *extra)[0] == 200


def test_native_query_parameters_and_regex_rewrite(sidecar_run, uri_nginx):
    port = free_port()
    routes = [
        {"name": "absent", "match": {"prefix": "/", "query_parameters": [
            {"name": "token", "present": False}, {"name": "id", "suffix": "-x"}]},
         "direct_response": {"status": 297, "body": "no token"}},
        {"name": "rw", "match": {"prefix": "/img/"}, "cluster": "app",
         "regex_rewrite": {"pattern": "/+", "substitution": "/"}},
        # a query regex on a proxy with no path regex (the worker's match data is made for it)
        {"name": "num", "match": {"prefix": "/n", "query_parameters": [
            {"name": "id", "regex": "[0-9]+"}]},
         "direct_response": {"status": 296, "body": "number"}},
        {"name": "all", "match": {"prefix": "/"}, "cluster": "app"},
    ]
    cfg = proxy_config([{"name": "in", "address": f"127.0.0.1:{port}", "routes": routes}],
                       [{"name": "app", "endpoints": [f"127.0.0.1:{uri_nginx.port}"]}])
    sidecar_run("proxy", config=cfg)
    assert curl(port, "/?id=a-x") == (297, "no token")
    assert curl(port, "/?id=a-x&token=1")[0] == 200
    assert curl(port, "/?id=a-y")[0] == 200
    assert curl(port, "/n?id=42") == (296, "number")
    assert curl(port, "/n?id=4a")[0] == 200
    # every match of the pattern is replaced
    assert curl(port, "/img//a///b?q=1", "--path-as-is") == (200, "uri=/img/a/b?q=1")


REFUSALS = [
    # (what is changed in a base bootstrap, the message part, the path part)
    ("second_hcm", "its filter_chain_match is static_resources.listeners[0].filter_chains[0]'s: "
                   "the two chains would take the same connections", "filter_chains[1]"),
    ("tls_socket", "a tcp_proxy chain next to chains that terminate TLS", "filter_chains[0]"),
    ("address_suffix", "address_suffix is not supported", "filter_chains[0]"),
    ("weighted", "cluster \"nope\" is not a static cluster",
     "filter_chains[0].filters[0].typed_config"),
    ("port_http", "this chain takes plaintext on any port", "default_filter_chain"),
    ("unknown_cluster", "cluster \"nope\" is not a static cluster",
     "filter_chains[0].filters[0].typed_config"),
    ("query_icase", "ignore_case: true is not supported", "query_parameters[0]"),
    ("query_contains", "contains is not supported", "query_parameters[0]"),
    ("alpn_http", "application_protocols http/1.1 on a tcp_proxy chain", "filter_chains[0]"),
    ("bad_subst", "a backslash is followed by neither", "routes[0].route"),
    ("bad_query_regex", "regex \"(\" at offset", "query_parameters[0]"),
]


def refusal(kind, port):
    hr = [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]
    chains = [tcp_chain("app", server_names=["a.test"]), hcm_chain(hr)]
    default = None
    if kind == "second_hcm":
        chains[0] = hcm_chain(hr)
    elif kind == "tls_socket":
        chains[1]["transport_socket"] = {"name": "tls", "typed_config": {
            "@type": T + "transport_sockets.tls.v3.DownstreamTlsContext"}}
    elif kind == "address_suffix":
        chains[0]["filter_chain_match"]["address_suffix"] = "10.0.0.1"
    elif kind == "weighted":
        tc = chains[0]["filters"][0]["typed_config"]
        del tc["cluster"]
        tc["weighted_clusters"] = {"clusters": [{"name": "app", "weight": 50},
                                                {"name": "nope", "weight": 50}]}
    elif kind == "port_http":
        chains[1] = hcm_chain(hr, destination_port=8080)
        default = tcp_chain("app")
    elif kind == "unknown_cluster":
        chains[0]["filters"][0]["typed_config"]["cluster"] = "nope"
    elif kind == "query_icase":
        hr[0]["match"]["query_parameters"] = [{"name": "a", "string_match": {
            "exact": "b", "ignore_case": True}}]
    elif kind == "query_contains":
        hr[0]["match"]["query_parameters"] = [{"name": "a", "string_match": {"contains": "b"}}]
    elif kind == "alpn_http":
        chains[0]["filter_chain_match"] = {"application_protocols": ["http/1.1"]}
    elif kind == "bad_subst":
        hr[0]["route"]["regex_rewrite"] = {"pattern": {"regex": "^/(a)$"},
                                           "substitution": "/\\2"}
    elif kind == "bad_query_regex":
        hr[0]["match"]["query_parameters"] = [{"name": "a", "string_match": {
            "safe_regex": {"regex": "("}}}]
    return bootstrap(port, chains, [cluster("app", 1)], default=default)


@pytest.mark.parametrize("kind,msg,where", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_position_and_path(run_cli, tmp_path, kind, msg, where):
    path = tmp_path / "envoy.yaml"
    # YAML through json: positions are line:col of the JSON text
    path.write_text(refusal(kind, 15006))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
    assert f"{path}:1:" in p.stderr, p.stderr
    assert "static_resources.listeners[0]" in p.stderr, p.stderr
    assert where in p.stderr, p.stderr
