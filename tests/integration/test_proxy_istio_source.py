# SPDX-License-Identifier: Apache-2.0
"""VirtualService source matches, as Istio applies them on the caller's sidecar: a match whose
sourceLabels or sourceNamespace do not select this workload (workload.namespace, workload.labels
over the downward API labels file) is left out at load, and so is a route whose matches are all
left out; a match's gateways replace the VirtualService's, and only `mesh` concerns a sidecar.
The reference's example (ratings v2 for reviews v2, v1 for everyone else) runs against Python
upstreams; tcp routes take the same source matches."""
import json
import socket

import pytest

from conftest import free_port
from test_proxy_istio import named, own, request, service_entry, stream
from test_proxy_istio_tcp import answering
from test_proxy_tcp import recv_until

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match:
    - sourceLabels: {app: reviews, version: v2}
    route: [{destination: {host: ratings, subset: v2}}]
  - route: [{destination: {host: ratings, subset: v1}}]
"""


@pytest.fixture
def ratings():
    v1, v2 = named("v1"), named("v2")
    yield v1, v2
    v1.close()
    v2.close()


@pytest.mark.parametrize("labels,want", [({"app": "reviews", "version": "v2"}, b"v2"),
                                         ({"app": "reviews", "version": "v1"}, b"v1"),
                                         ({}, b"v1")])
def test_source_labels_select_the_route_for_this_workload(sidecar_run, ratings, labels, want):
    v1, v2 = ratings
    port = free_port()
    sidecar_run("proxy", config=stream(
        own(port, workload={"namespace": "shop", "labels": labels}),
        service_entry("ratings", 9080, [(v1, {"version": "v1"}), (v2, {"version": "v2"})]),
        DR, VS))
    assert request(port, "ratings", n=3) == [(200, want)] * 3


def test_source_labels_from_the_downward_api_file(sidecar_run, ratings, tmp_path):
    v1, v2 = ratings
    port = free_port()
    lf = tmp_path / "labels"
    lf.write_text('app="reviews"\nversion="v2"\npod-template-hash="5d8b"\n')
    sidecar_run("proxy", config=stream(
        own(port, workload={"namespace": "shop", "labels_file": str(lf)}),
        service_entry("ratings", 9080, [(v1, {"version": "v1"}), (v2, {"version": "v2"})]),
        DR, VS))
    assert request(port, "ratings") == [(200, b"v2")]


def derived_routes(run_cli, tmp_path, workload, vs):
    up = named("x")
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port(), workload=workload),
                        service_entry("ratings", 9080, [(up, {"version": "v1"}),
                                                        (up, {"version": "v2"})]), DR, vs))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    up.close()
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    return [r["name"] for r in d["listeners"][0]["routes"]], p.stderr


def test_source_namespace_and_gateways(run_cli, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  gateways: [mesh, istio-system/public]
  http:
  - name: from-shop
    match: [{sourceNamespace: shop}]
    route: [{destination: {host: ratings, subset: v2}}]
  - name: from-billing
    match: [{sourceNamespace: billing}, {sourceLabels: {app: billing}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - name: edge-only
    match: [{gateways: [istio-system/public], uri: {prefix: /edge}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - name: mixed
    match: [{gateways: [istio-system/public], uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - name: rest
    route: [{destination: {host: ratings, subset: v1}}]
"""
    names, err = derived_routes(run_cli, tmp_path, {"namespace": "shop"}, vs)
    assert names[:3] == ["ratings.from-shop", "ratings.mixed", "ratings.rest"], names
    assert "sourceNamespace billing is not this workload's (shop)" in err, err
    assert "VirtualService/ratings.spec.http[2].match[0]: left out: its gateways do not include " \
        "mesh" in err, err
    names, _ = derived_routes(run_cli, tmp_path, {"namespace": "billing"}, vs)
    assert names[:3] == ["ratings.from-billing", "ratings.mixed", "ratings.rest"], names


def test_gateways_without_mesh_are_left_out(run_cli, tmp_path):
    """A VirtualService for gateways only does not apply to a sidecar: it is left out with a
    note, as Istio leaves it out of sidecars' configuration, and the rest still loads."""
    gw = VS.replace("  hosts: [ratings]", "  hosts: [ratings]\n  gateways: [istio-system/public]")
    names, err = derived_routes(run_cli, tmp_path, {"namespace": "shop"}, gw)
    assert "ratings.1" not in names, names
    assert "VirtualService/ratings.spec: left out: its gateways do not include mesh (this " \
        "VirtualService is for gateways" in err, err
    with_mesh, _ = derived_routes(run_cli, tmp_path, {"namespace": "shop"}, VS)
    assert "ratings.1" in with_mesh, with_mesh


def test_tcp_route_by_source_labels_to_a_subset(sidecar_run):
    """A tcp route for this workload's labels goes first and to the subset's endpoints only; the
    route for other workloads is left out."""
    a, b = answering(b"a"), answering(b"b")
    port = free_port()
    se = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  ports: [{{number: {port}, name: p, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{p: {a.port}}}, labels: {{role: primary}}}}
  - {{address: 127.0.0.1, ports: {{p: {b.port}}}, labels: {{role: replica}}}}
"""
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  subsets:
  - {name: primary, labels: {role: primary}}
  - {name: replica, labels: {role: replica}}
"""
    vs = f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db]
  tcp:
  - match: [{{port: {port}, sourceLabels: {{app: writer}}}}]
    route: [{{destination: {{host: db, subset: primary}}}}]
  - match: [{{port: {port}, sourceLabels: {{app: reporting}}}}]
    route: [{{destination: {{host: db, subset: replica}}}}]
"""
    for app, want in (("reporting", b"b\r\n"), ("writer", b"a\r\n")):
        sc = sidecar_run("proxy", config=stream(
            json.dumps({"listeners": [{"name": "out", "address": f"127.0.0.1:{port}",
                                       "direction": "outbound", "routes": []}],
                        "workload": {"namespace": "shop", "labels": {"app": app}},
                        "access_log": "off"}), se, dr, vs))
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            assert recv_until(s, b"\r\n") == want
            s.close()
        sc.stop()
    a.close()
    b.close()


def test_tcp_destination_subnets_and_source_subnet(run_cli, tmp_path):
    """destinationSubnets and sourceSubnet become the tcp route's destination_prefix_ranges and
    source_prefix_ranges (native address conditions), so the route no longer takes every
    connection to its port."""
    f = tmp_path / "istio.yaml"
    f.write_text(stream(own(free_port()), """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, destinationSubnets: [10.1.0.0/16, "fd00::/8"], sourceSubnet: 10.2.0.0/16}]
    route: [{destination: {host: db}}]
  tls:
  - match: [{sniHosts: [db.example], port: 443, destinationSubnets: [10.3.0.0/16]}]
    route: [{destination: {host: db}}]
"""))
    p = run_cli("proxy", "-c", str(f), "--check", "--print")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout[:p.stdout.rindex("}") + 1])
    tr = {r["name"]: r for r in d["listeners"][0]["tcp_routes"]}
    assert tr["db.tcp0"]["destination_prefix_ranges"] == ["10.1.0.0/16", "fd00::/8"]
    assert tr["db.tcp0"]["source_prefix_ranges"] == ["10.2.0.0/16"]
    assert tr["db.tls0"]["destination_prefix_ranges"] == ["10.3.0.0/16"]
    assert "takes every TCP connection" not in p.stderr, p.stderr
