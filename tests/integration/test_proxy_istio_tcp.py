# SPDX-License-Identifier: Apache-2.0
"""Istio VirtualService tcp and tls routes on the outbound listener, against real peers: a TLS
route by sniHosts passes TLS untouched to a server presenting its own certificate (openssl
s_client, curl), a tcp route shares connections 80/20 between two TCP servers, what no route
takes goes to its original destination; http[] queryParams and rewrite.uriRegexRewrite against
nginx over HTTP/1.1 and h2c; and the refusals, with their position and path."""
import json
import socket
import subprocess

import pytest

from conftest import free_port
from test_proxy_envoy_chains import curl, s_client, uri_nginx  # noqa: F401
from test_proxy_tcp import TcpServer, recv_until, tcp_lines, tls_server
from tls_util import make_leaf, pki  # noqa: F401 (fixture)


def own(port, listener_extra=None):
    lst = {"name": "out", "address": f"127.0.0.1:{port}", "direction": "outbound",
           "routes": []}
    lst.update(listener_extra or {})
    return json.dumps({"listeners": [lst], "workload": {"namespace": "shop"},
                       "access_log": "stdout"})


def se(name, port, upstream_port, proto="TCP"):
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}]
  ports: [{{number: {port}, name: p, protocol: {proto}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {upstream_port}}}}}]
"""


def answering(name):
    """A server-second TCP peer: reads the client's 8 bytes, answers its name."""
    def handle(conn):
        recv_until(conn, b"\x2f")
        conn.sendall(name + b"\r\n")
    return TcpServer(handle)


def stream(*docs):
    return "\n---\n".join(docs)


def test_tls_and_tcp_routes(sidecar_run, pki, tmp_path):  # noqa: F811
    a_cert, a_key = make_leaf(pki, "a", "DNS:api.example.test", out=tmp_path)
    a = tls_server(str(a_cert), str(a_key), "A")
    x, y = answering(b"x"), answering(b"y")
    port = free_port()
    docs = stream(
        own(port),
        se("api.example.test", 443, a.port, "TLS"),
        se("db.shop.svc.cluster.local", port, x.port),
        se("db-canary.shop.svc.cluster.local", port, y.port),
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api.example.test]
  tls:
  - match: [{{sniHosts: [api.example.test], port: {port}}}]
    route: [{{destination: {{host: api.example.test, port: {{number: 443}}}}}}]
""",
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db]
  tcp:
  - match: [{{port: {port}}}]
    route:
    - destination: {{host: db, port: {{number: {port}}}}}
      weight: 80
    - destination: {{host: db-canary, port: {{number: {port}}}}}
      weight: 20
""")
    sc = sidecar_run("proxy", config=docs)
    ca = pki / "ca.pem"
    rc, out = s_client(port, "api.example.test", ca)
    assert rc == 0 and "CN=a" in out, out
    r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(ca), "--resolve",
                        f"api.example.test:{port}:127.0.0.1", f"https://api.example.test:{port}/"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"A", r.stderr
    got = {b"x\r\n": 0, b"y\r\n": 0}
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # a PostgreSQL SSLRequest: not HTTP
        got[recv_until(s, b"\r\n")] += 1
        s.close()
    assert 340 <= got[b"x\r\n"] <= 460, got
    routes = {(line["sni"], line["route"]) for line in tcp_lines(sc, at_least=502)}
    assert ("api.example.test", "api.tls0") in routes and ("", "db.tcp0") in routes, routes
    for s in (a, x, y):
        s.close()


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2c"])
def test_query_params_and_uri_regex_rewrite(sidecar_run, uri_nginx, h2):  # noqa: F811
    port = free_port()
    docs = stream(own(port), f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {uri_nginx.port}}}}}]
""", """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - match: [{queryParams: {version: {exact: v2}, user: {regex: "[a-z]+"}}}]
    rewrite: {uriRegexRewrite: {match: "^/books/([0-9]+)$", rewrite: "/v2/book/\\\\1"}}
    route: [{destination: {host: web}}]
  - match: [{queryParams: {lang: {prefix: en}}}]
    directResponse: {status: 298, body: {string: english}}
  - route: [{destination: {host: web}}]
""")
    sidecar_run("proxy", config=docs)
    extra = ["-H", "Host: web"] + (["--http2-prior-knowledge"] if h2 else [])
    assert curl(port, "/books/7?version=v2&user=ann", *extra) == \
        (200, "uri=/v2/book/7?version=v2&user=ann")
    assert curl(port, "/books/7?version=v2&user=Ann", *extra) == \
        (200, "uri=/books/7?version=v2&user=Ann")
    assert curl(port, "/books/7?version=v1&user=ann", *extra) == \
        (200, "uri=/books/7?version=v1&user=ann")
    assert curl(port, "/?lang=en-US", *extra) == (298, "english")


REFUSED = [
    ("no_port", """  tcp:
  - route: [{destination: {host: db}}]""", "a tcp route needs match.port",
     "VirtualService/v.spec.tcp[0].match[0]"),
    ("no_sni", """  tls:
  - match: [{port: 443}]
    route: [{destination: {host: db}}]""", "sniHosts is required",
     "VirtualService/v.spec.tls[0].match[0]"),
    ("subset", """  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db, subset: v1}}]""", "no DestinationRule defines subset v1",
     "VirtualService/v.spec.tcp[0].route[0]"),
    ("weights", """  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db}, weight: 50}, {destination: {host: db2}, weight: 20}]""",
     "route weights add up to 70, not 100", "VirtualService/v.spec.tcp[0]"),
    ("bad_destination_subnet", """  tcp:
  - match: [{port: 5432, destinationSubnets: [10.0.0.0/8, 10.1.0.0/40]}]
    route: [{destination: {host: db}}]""", '"10.1.0.0/40" is not an IP address or CIDR block',
     "VirtualService/v.spec.tcp[0].match[0].destinationSubnets[1]: "),
    ("bad_source_subnet", """  tcp:
  - match: [{port: 5432, sourceSubnet: 10.0.0.300}]
    route: [{destination: {host: db}}]""", '"10.0.0.300" is not an IP address or CIDR block',
     "VirtualService/v.spec.tcp[0].match[0].sourceSubnet: "),
    ("tls_source_subnet", """  tls:
  - match: [{sniHosts: [a.b], sourceSubnet: 10.0.0.0/8}]
    route: [{destination: {host: db}}]""", "sourceSubnet is not supported",
     "VirtualService/v.spec.tls[0].match[0]"),
    ("query_regex", """  http:
  - match: [{queryParams: {a: {regex: "("}}}]
    route: [{destination: {host: db}}]""", "regex \"(\" at offset",
     "VirtualService/v.spec.http[0].match[0]"),
    ("rewrite_group", """  http:
  - rewrite: {uriRegexRewrite: {match: "^/(a)", rewrite: "/\\\\3"}}
    route: [{destination: {host: db}}]""", "a backslash is followed by neither",
     "VirtualService/v.spec.http[0]"),
]


@pytest.mark.parametrize("kind,spec,msg,where", REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals(run_cli, tmp_path, kind, spec, msg, where):
    path = tmp_path / "istio.yaml"
    path.write_text(stream(own(15001), f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: v, namespace: shop}}
spec:
  hosts: [db]
{spec}
"""))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr and where in p.stderr, p.stderr
    assert f"{path}:" in p.stderr, p.stderr


def test_http_listener_refuses_tcp_routes(run_cli, tmp_path):
    path = tmp_path / "istio.yaml"
    path.write_text(stream(own(15001, {"protocol": "http"}), """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db}}]
"""))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0 and "to be of protocol auto (it is http)" in p.stderr, p.stderr
