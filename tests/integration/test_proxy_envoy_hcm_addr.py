# SPDX-License-Identifier: Apache-2.0
"""http_connection_manager chains chosen by address (Envoy's filter_chain_match prefix_ranges,
source_prefix_ranges, source_type, source_ports, destination_port) and the native route match
conditions they map onto: each chain's routes carry its conditions, most specific chain first,
and a chain's connections never fall through to a less specific chain's routes (404, as Envoy
answers when the chosen chain has no route). Real peers: nginx upstreams naming themselves,
curl binding 127.0.0.2 or a fixed source port, over HTTP/1.1 and h2c, to a listener on 0.0.0.0
reached at 127.0.0.1 and 127.0.0.5 (its destination address)."""
import json
import subprocess

import pytest

from conftest import free_port
from test_proxy_envoy_chains import bootstrap, cluster, hcm_chain, sa
from test_proxy_envoy_tlschain import derived, namers  # noqa: F401 (fixture)


def cidr(a, n):
    return {"address_prefix": a, "prefix_len": n}


def route(cl, prefix="/"):
    return {"match": {"prefix": prefix}, "route": {"cluster": cl}}


def curl(url, *extra):
    r = subprocess.run(["curl", "-sS", "-o", "-", "-w", " %{http_code}", *extra, url],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def envoy_cfg(port, namers, sport):
    chains = [
        hcm_chain([route("internal")], source_prefix_ranges=[cidr("127.0.0.2", 32)]),
        hcm_chain([route("api", "/api")], prefix_ranges=[cidr("127.0.0.5", 32)]),
        hcm_chain([route("fixed")], source_ports=[sport]),
        hcm_chain([route("public")]),
    ]
    names = ["internal", "api", "fixed", "public"]
    cfg = json.loads(bootstrap(port, chains, [cluster(n, namers(n).port) for n in names]))
    cfg["static_resources"]["listeners"][0]["address"] = sa(port, "0.0.0.0")
    return json.dumps(cfg)


def test_envoy_hcm_chains_by_address(sidecar_run, run_cli, tmp_path, namers):
    """Destination first, then source prefix, then source port; a chosen chain without a route
    for the path answers 404 instead of reaching a less specific chain."""
    port, sport = free_port(), free_port()
    cfg = envoy_cfg(port, namers, sport)
    lst = derived(run_cli, tmp_path, cfg)
    got = [(r.get("cluster"), r["match"].get("destination_prefix_ranges"),
            r["match"].get("source_prefix_ranges"), r["match"].get("source_ports"),
            (r.get("direct_response") or {}).get("status")) for r in lst["routes"]]
    assert got == [("api", ["127.0.0.5/32"], None, None, None),
                   (None, ["127.0.0.5/32"], None, None, "404"),
                   ("internal", None, ["127.0.0.2/32"], None, None),
                   (None, None, ["127.0.0.2/32"], None, "404"),
                   ("fixed", None, None, [str(sport)], None),
                   (None, None, None, [str(sport)], "404"),
                   ("public", None, None, None, None)]
    sidecar_run("proxy", config=cfg)
    for h2 in ([], ["--http2-prior-knowledge"]):
        assert curl(f"http://127.0.0.1:{port}/", *h2) == "public 200"
        assert curl(f"http://127.0.0.1:{port}/", "--interface", "127.0.0.2", *h2) == \
            "internal 200"
        assert curl(f"http://127.0.0.5:{port}/api/x", *h2) == "api 200"
        # destination before source: 127.0.0.2 to 127.0.0.5 is the api chain's
        assert curl(f"http://127.0.0.5:{port}/api", "--interface", "127.0.0.2", *h2) == "api 200"
        # the api chain is chosen and has no route for /: 404, not the public chain's route
        assert curl(f"http://127.0.0.5:{port}/", *h2).endswith(" 404")
    assert curl(f"http://127.0.0.1:{port}/", "--local-port", str(sport)) == "fixed 200"


def test_envoy_single_hcm_chain_with_source_type(sidecar_run, namers):
    """One chain with a source_type: its routes take only such clients (loopback is local)."""
    port = free_port()
    chains = [hcm_chain([route("local")], source_type="SAME_IP_OR_LOOPBACK"),
              hcm_chain([route("other")], destination_port=port)]
    cfg = json.loads(bootstrap(port, chains,
                               [cluster(n, namers(n).port) for n in ("local", "other")]))
    sidecar_run("proxy", config=json.dumps(cfg))
    # destination_port ranks above source_type in Envoy's order
    assert curl(f"http://127.0.0.1:{port}/") == "other 200"


NATIVE = """
listeners:
  - name: in
    address: 0.0.0.0:{port}
    routes:
      - name: lan
        match: {{prefix: /, source_prefix_ranges: [127.0.0.2/32]}}
        cluster: lan
      - name: to5
        match: {{prefix: /, destination_prefix_ranges: [127.0.0.5]}}
        cluster: to5
      - name: external
        match: {{prefix: /, source_type: external}}
        cluster: to5
      - match: {{prefix: /}}
        cluster: rest
clusters:
  - name: lan
    endpoints: [127.0.0.1:{lan}]
  - name: to5
    endpoints: [127.0.0.1:{to5}]
  - name: rest
    endpoints: [127.0.0.1:{rest}]
"""


def test_native_route_address_conditions(sidecar_run, namers):
    port = free_port()
    cfg = NATIVE.format(port=port, lan=namers("lan").port, to5=namers("to5").port,
                        rest=namers("rest").port)
    sidecar_run("proxy", config=cfg)
    assert curl(f"http://127.0.0.1:{port}/", "--interface", "127.0.0.2") == "lan 200"
    assert curl(f"http://127.0.0.5:{port}/") == "to5 200"
    assert curl(f"http://127.0.0.1:{port}/") == "rest 200"
    assert curl(f"http://127.0.0.1:{port}/", "--http2-prior-knowledge") == "rest 200"


def test_native_route_bad_cidr_refused(run_cli, tmp_path):
    cfg = NATIVE.format(port=1, lan=2, to5=3, rest=4).replace("127.0.0.2/32", "127.0.0.2/40")
    path = tmp_path / "p.yaml"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert f"{path}:7:" in p.stderr
    assert '"127.0.0.2/40" is not an IP address or CIDR block' in p.stderr


def refusal(kind, port):
    a = hcm_chain([route("c")], source_prefix_ranges=[cidr("127.0.0.2", 32)])
    b = hcm_chain([route("c")])
    if kind == "codec":
        b["filters"][0]["typed_config"]["codec_type"] = "HTTP1"
    elif kind == "same_match":
        b["filter_chain_match"] = dict(a["filter_chain_match"])
    elif kind == "tls":
        b["filter_chain_match"] = {"server_names": ["a.example"]}
        b["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": "/nonexistent.pem"},
                "private_key": {"filename": "/nonexistent.key"}}]}}}
    return bootstrap(port, [a, b], [cluster("c", 1)])


@pytest.mark.parametrize("kind,msg", [
    ("codec", "static_resources.listeners[0].filter_chains[1]: its "
              "http_connection_manager differs from static_resources.listeners[0]."
              "filter_chains[0]'s beyond route_config and stat_prefix"),
    ("same_match", "static_resources.listeners[0].filter_chains[1]: its filter_chain_match is "
                   "static_resources.listeners[0].filter_chains[0]'s"),
    ("tls", "static_resources.listeners[0].filter_chains[0]: address matches (prefix_ranges, "
            "source_prefix_ranges, source_type, source_ports) on a chain next to chains that "
            "terminate TLS"),
])
def test_refusals(run_cli, tmp_path, kind, msg):
    path = tmp_path / "e.json"
    path.write_text(refusal(kind, free_port()))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
