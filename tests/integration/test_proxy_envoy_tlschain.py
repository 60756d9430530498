# SPDX-License-Identifier: Apache-2.0
"""Envoy listeners whose http_connection_manager chains terminate TLS each, chosen by
server_names and transport_protocol, with a raw_buffer chain for plaintext beside them (Istio's
inbound listener), and the native options they map onto (tls.certificates[].server_names,
tls.unmatched_sni, mtls permissive). Checked with openssl s_client (which certificate each name
gets, handshakes refused for names no chain takes) and curl over HTTPS, mutual TLS and plaintext
to nginx; what one listener TLS context cannot express is refused with its position and path."""
import copy
import json
import subprocess

import pytest

from config_peers import Nginx, nginx_conf
from conftest import free_port
from test_proxy_envoy_chains import (T, bootstrap, cluster, curl, hcm_chain, s_client,
                                     tcp_chain, uri_nginx)  # noqa: F401 (fixture)
from tls_util import make_leaf, pki  # noqa: F401 (fixture)

DTLS = T + "transport_sockets.tls.v3.DownstreamTlsContext"
ROUTES = [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]


@pytest.fixture
def namers(tmp_path):
    """nginx upstreams, one per name, each answering its name."""
    made = {}

    def get(name):
        if name not in made:
            n = Nginx(tmp_path / ("nginx-" + name), port=free_port())
            n.conf.write_text(nginx_conf(n.root, n.port, name))
            n.start()
            made[name] = n
        return made[name]
    yield get
    for n in made.values():
        n.stop()


def tls_socket(cert, key, ca=None, require=False, alpn=None):
    ctx = {"tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                 "private_key": {"filename": str(key)}}]}
    if ca:
        ctx["validation_context"] = {"trusted_ca": {"filename": str(ca)}}
    if alpn:
        ctx["alpn_protocols"] = alpn
    tc = {"@type": DTLS, "common_tls_context": ctx}
    if require:
        tc["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": tc}


def tls_chain(cert, key, stat="http", **match):
    c = hcm_chain(copy.deepcopy(ROUTES), **match)
    c["filters"][0]["typed_config"]["stat_prefix"] = stat
    c["transport_socket"] = tls_socket(cert, key)
    return c


def https(port, name, ca, *extra):
    r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(ca),
                        "--resolve", f"{name}:{port}:127.0.0.1", *extra,
                        f"https://{name}:{port}/p?q=1"], capture_output=True, timeout=10)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def derived(run_cli, tmp_path, cfg):
    path = tmp_path / "envoy.json"
    path.write_text(cfg)
    p = run_cli("proxy", "-c", str(path), "--check", "--print")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    (lst,) = out["listeners"]
    return lst


def test_chains_own_certificates_by_server_names_and_plaintext(sidecar_run, run_cli, pki,
                                                               tmp_path, uri_nginx):
    """Each TLS chain serves its own certificate for its server_names (exact first, then the
    longest wildcard suffix, over any number of labels); the chain without server_names serves
    every other name and ClientHellos without SNI; plaintext goes to the raw_buffer chain. All
    reach the same routes (nginx)."""
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.example.test", out=tmp_path)
    # a certificate whose own names are not the chain's: server_names decide, as in Envoy
    w_cert, w_key = make_leaf(pki, "w", "DNS:w.internal,DNS:deep.wild.test", out=tmp_path)
    d_cert, d_key = make_leaf(pki, "d", "DNS:default.test,DNS:deep.wild.test", out=tmp_path)
    port = free_port()
    chains = [
        tls_chain(w_cert, w_key, "wild", server_names=["*.wild.test"], transport_protocol="tls"),
        tls_chain(a_cert, a_key, "a", server_names=["a.example.test", "*.deep.wild.test"],
                  transport_protocol="tls"),
        tls_chain(d_cert, d_key, "default", transport_protocol="tls"),
        hcm_chain(ROUTES, transport_protocol="raw_buffer"),
    ]
    cfg = bootstrap(port, chains, [cluster("app", uri_nginx.port)])
    lst = derived(run_cli, tmp_path, cfg)
    assert lst["mtls"] == "permissive"
    assert lst["tls"]["cert"] == str(d_cert)
    assert [(c["cert"], c["server_names"]) for c in lst["tls"]["certificates"]] == [
        (str(w_cert), ["*.wild.test"]), (str(a_cert), ["a.example.test", "*.deep.wild.test"])]
    assert "unmatched_sni" not in lst["tls"]
    sidecar_run("proxy", config=cfg)
    ca = pki / "ca.pem"
    for sni, want in (("a.example.test", "CN=a"), ("x.wild.test", "CN=w"),
                      ("x.y.z.wild.test", "CN=w"),   # any depth
                      ("x.deep.wild.test", "CN=a"),  # the longer suffix wins
                      ("other.test", "CN=d")):
        rc, out = s_client(port, sni, ca)
        assert want in out, (sni, out)
    # w's own names do not select it; its chain's server_names do (curl checks the name)
    rc, out = s_client(port, "w.internal", ca)
    assert "CN=d" in out, out
    rc, body, err = https(port, "a.example.test", ca)
    assert rc == 0 and body == "uri=/p?q=1\n200", err
    rc, body, err = https(port, "default.test", ca, "--http2")
    assert rc == 0 and body == "uri=/p?q=1\n200", err
    assert curl(port, "/plain") == (200, "uri=/plain")


def test_every_chain_named_rejects_other_names(sidecar_run, run_cli, pki, tmp_path, uri_nginx):
    """Without a TLS chain for any name, a ClientHello naming none of the chains (or naming
    nothing) finds no chain: the handshake fails with unrecognized_name. Without a plaintext
    chain the listener takes TLS only."""
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.example.test", out=tmp_path)
    b_cert, b_key = make_leaf(pki, "b", "DNS:b.example.test", out=tmp_path)
    port = free_port()
    chains = [tls_chain(a_cert, a_key, server_names=["a.example.test"]),
              tls_chain(b_cert, b_key, server_names=["b.example.test"])]
    cfg = bootstrap(port, chains, [cluster("app", uri_nginx.port)])
    lst = derived(run_cli, tmp_path, cfg)
    assert lst["mtls"] == "strict" and lst["tls"]["unmatched_sni"] == "reject"
    assert "cert" not in lst["tls"]
    sidecar_run("proxy", config=cfg)
    ca = pki / "ca.pem"
    assert "CN=a" in s_client(port, "a.example.test", ca)[1]
    assert "CN=b" in s_client(port, "b.example.test", ca)[1]
    rc, out = s_client(port, "c.example.test", ca)
    assert rc != 0 and "unrecognized name" in out, out
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername",
                        "-brief"], input=b"", capture_output=True, timeout=10)
    assert p.returncode != 0 and b"unrecognized name" in p.stdout + p.stderr
    rc, body, err = https(port, "b.example.test", ca)
    assert rc == 0 and body == "uri=/p?q=1\n200", err
    r = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True,
                       timeout=10)
    assert r.returncode != 0  # strict: plaintext is not taken


def test_istio_inbound_shape_mutual_tls_and_plaintext(sidecar_run, pki, tmp_path, uri_nginx):
    """Istio's inbound listener: a TLS chain requiring client certificates from the mesh CA
    (transport_protocol tls, Istio's ALPN names) and a raw_buffer chain, the same connection
    manager on both: mutual TLS and plaintext both reach the app; TLS without a client
    certificate does not."""
    port = free_port()
    mtls = hcm_chain(ROUTES, transport_protocol="tls",
                     application_protocols=["istio-http/1.0", "istio-http/1.1", "istio-h2"])
    mtls["transport_socket"] = tls_socket(pki / "server.pem", pki / "server.key",
                                          ca=pki / "ca.pem", require=True,
                                          alpn=["h2", "http/1.1"])
    plain = hcm_chain(ROUTES, transport_protocol="raw_buffer",
                      application_protocols=["http/1.0", "http/1.1", "h2c"])
    sidecar_run("proxy", config=bootstrap(port, [mtls, plain], [cluster("app", uri_nginx.port)]))
    ca = pki / "ca.pem"
    rc, body, err = https(port, "server.test", ca, "--cert", str(pki / "client.pem"), "--key",
                          str(pki / "client.key"))
    assert rc == 0 and body == "uri=/p?q=1\n200", err
    rc, body, err = https(port, "server.test", ca)
    assert rc != 0 or not body.endswith("200"), body
    assert curl(port, "/plain") == (200, "uri=/plain")
    assert curl(port, "/h2c", "--http2-prior-knowledge") == (200, "uri=/h2c")


def test_native_server_names_and_unmatched_sni(sidecar_run, pki, tmp_path, uri_nginx):
    """The native options the chains map onto, written by hand."""
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.internal,DNS:api.example.test", out=tmp_path)
    port = free_port()
    cfg = f"""
listeners:
  - name: web
    address: 127.0.0.1:{port}
    tls:
      certificates:
        - {{cert: {a_cert}, key: {a_key}, server_names: [api.example.test, "*.apps.test"]}}
        - {{cert: {pki / 'server.pem'}, key: {pki / 'server.key'}}}
      unmatched_sni: reject
    routes: [{{cluster: app}}]
clusters:
  - name: app
    endpoints: [127.0.0.1:{uri_nginx.port}]
"""
    sidecar_run("proxy", config=cfg)
    ca = pki / "ca.pem"
    assert "CN=a" in s_client(port, "api.example.test", ca)[1]
    assert "CN=a" in s_client(port, "x.y.apps.test", ca)[1]
    assert "CN=server" in s_client(port, "server.test", ca)[1]  # by its DNS names
    rc, out = s_client(port, "a.internal", ca)  # server_names replace a's own names
    assert rc != 0 and "unrecognized name" in out, out
    rc, body, err = https(port, "api.example.test", ca)
    assert rc == 0 and body == "uri=/p?q=1\n200", err


def test_client_verification_per_chain(sidecar_run, run_cli, pki, tmp_path, uri_nginx):
    """A chain's own validation_context and require_client_certificate: mutual TLS for the
    server name of the chain that requires it, none for the others (Envoy's per-chain
    DownstreamTlsContext), and optional verification on a third name."""
    a_cert, a_key = make_leaf(pki, "a", "DNS:mtls.example.test", out=tmp_path)
    o_cert, o_key = make_leaf(pki, "o", "DNS:opt.example.test", out=tmp_path)
    d_cert, d_key = make_leaf(pki, "d", "DNS:open.example.test", out=tmp_path)
    ca = pki / "ca.pem"
    port = free_port()
    strict = tls_chain(a_cert, a_key, server_names=["mtls.example.test"])
    strict["transport_socket"] = tls_socket(a_cert, a_key, ca=ca, require=True)
    opt = tls_chain(o_cert, o_key, server_names=["opt.example.test"])
    opt["transport_socket"] = tls_socket(o_cert, o_key, ca=ca)
    chains = [strict, opt, tls_chain(d_cert, d_key), hcm_chain(ROUTES)]
    cfg = bootstrap(port, chains, [cluster("app", uri_nginx.port)])
    lst = derived(run_cli, tmp_path, cfg)
    assert "client_ca" not in lst["tls"] and "client_cert" not in lst["tls"]
    assert [(c["server_names"], c.get("client_ca"), c.get("client_cert"))
            for c in lst["tls"]["certificates"]] == [
        (["mtls.example.test"], str(ca), "require"), (["opt.example.test"], str(ca), "optional")]
    sidecar_run("proxy", config=cfg)
    client = ["--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]
    for h2 in ([], ["--http2"]):
        rc, body, err = https(port, "mtls.example.test", ca, *client, *h2)
        assert rc == 0 and body == "uri=/p?q=1\n200", err
        rc, body, err = https(port, "mtls.example.test", ca, *h2)
        assert rc != 0 or not body.endswith("200"), body
        rc, body, err = https(port, "open.example.test", ca, *h2)
        assert rc == 0 and body == "uri=/p?q=1\n200", err
        rc, body, err = https(port, "opt.example.test", ca, *h2)
        assert rc == 0 and body == "uri=/p?q=1\n200", err
        rc, body, err = https(port, "opt.example.test", ca, *client, *h2)
        assert rc == 0 and body == "uri=/p?q=1\n200", err
        # a name that requires a certificate is not reached through one that does not
        rc, body, err = https(port, "open.example.test", ca, "-H", "Host: mtls.example.test",
                              *h2)
        assert body.endswith("\n421"), (body, err)
    # openssl sees the CertificateRequest only on the chain that verifies clients
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "mtls.example.test", "-CAfile", str(ca)], input=b"",
                       capture_output=True, timeout=10)
    out = p.stdout.decode(errors="replace")
    assert "Acceptable client certificate CA names" in out, out
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "open.example.test", "-CAfile", str(ca)], input=b"",
                       capture_output=True, timeout=10)
    out = p.stdout.decode(errors="replace")
    assert "No client certificate CA names sent" in out, out
    assert curl(port, "/plain") == (200, "uri=/plain")


def test_routes_per_chain(sidecar_run, run_cli, pki, tmp_path, namers):
    """Chains whose connection managers differ in route_config: each TLS chain's routes take the
    requests of its server names, the default TLS chain's the other TLS connections, the
    plaintext chain's plaintext; a chain's request its routes do not take is answered 404, not
    by another chain's routes."""
    a_cert, a_key = make_leaf(pki, "a", "DNS:a.example.test", out=tmp_path)
    d_cert, d_key = make_leaf(pki, "d", "DNS:default.test,DNS:other.wild.test", out=tmp_path)
    port = free_port()

    def routes(cl, prefix="/"):
        return [{"match": {"prefix": prefix}, "route": {"cluster": cl}}]

    def chain(cert, key, cl, prefix="/", **match):
        c = tls_chain(cert, key, **match)
        c["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"] = \
            routes(cl, prefix)
        return c
    chains = [
        chain(d_cert, d_key, "wild", server_names=["*.wild.test"], transport_protocol="tls"),
        chain(a_cert, a_key, "a", "/a", server_names=["a.example.test"],
              transport_protocol="tls"),
        chain(d_cert, d_key, "dflt", transport_protocol="tls"),
        hcm_chain(routes("plain"), transport_protocol="raw_buffer"),
    ]
    names = ("a", "wild", "dflt", "plain")
    cfg = bootstrap(port, chains, [cluster(n, namers(n).port) for n in names])
    lst = derived(run_cli, tmp_path, cfg)
    got = [(r.get("cluster"), r["match"].get("server_names"), r["match"]["transport_protocol"])
           for r in lst["routes"]]
    assert got == [("a", ["a.example.test"], "tls"), (None, ["a.example.test"], "tls"),
                   ("wild", ["*.wild.test"], "tls"), (None, ["*.wild.test"], "tls"),
                   ("dflt", None, "tls"), (None, None, "tls"), ("plain", None, "raw_buffer")]
    sidecar_run("proxy", config=cfg)
    ca = pki / "ca.pem"
    for h2 in ([], ["--http2"]):
        rc, body, err = https(port, "a.example.test", ca, *h2)
        assert (rc, body) == (0, "404") or body.endswith("\n404"), (body, err)
        r = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--resolve",
                            f"a.example.test:{port}:127.0.0.1", *h2,
                            f"https://a.example.test:{port}/a/x"], capture_output=True, text=True)
        assert r.stdout == "a", r.stderr
        r = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--resolve",
                            f"other.wild.test:{port}:127.0.0.1", *h2,
                            f"https://other.wild.test:{port}/"], capture_output=True, text=True)
        assert r.stdout == "wild", r.stderr
        r = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--resolve",
                            f"default.test:{port}:127.0.0.1", *h2,
                            f"https://default.test:{port}/"], capture_output=True, text=True)
        assert r.stdout == "dflt", r.stderr
    r = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True,
                       text=True)
    assert r.stdout == "plain", r.stderr


REFUSALS = [
    ("alpn", "its alpn differs from", "filter_chains[1].transport_socket"),
    ("routes", "its http_connection_manager differs from static_resources.listeners[0]."
               "filter_chains[0]'s beyond route_config and stat_prefix", "filter_chains[1]"),
    ("tcp_proxy", "a tcp_proxy chain next to chains that terminate TLS", "filter_chains[2]"),
    ("two_defaults", "a second TLS chain without server_names", "filter_chains[1]"),
    ("raw_tls", "transport_protocol raw_buffer with a TLS transport_socket", "filter_chains[1]"),
    ("tls_no_socket", "a chain for TLS connections without a transport_socket",
     "filter_chains[1]"),
    ("two_plain", "a second plaintext chain", "filter_chains[2]"),
    ("port", "destination_port 1 differs from the listener's port", "filter_chains[0]"),
]


def refusal(kind, pki):
    cert, key = pki / "server.pem", pki / "server.key"
    chains = [tls_chain(cert, key, server_names=["a.test"]), tls_chain(cert, key)]
    if kind == "alpn":
        chains[1]["transport_socket"] = tls_socket(cert, key, alpn=["h2"])
    elif kind == "routes":
        chains[1]["filters"][0]["typed_config"]["codec_type"] = "HTTP1"
    elif kind == "tcp_proxy":
        chains.append(tcp_chain("app", server_names=["b.test"]))
    elif kind == "two_defaults":
        del chains[0]["filter_chain_match"]
    elif kind == "raw_tls":
        chains[1]["filter_chain_match"] = {"transport_protocol": "raw_buffer"}
    elif kind == "tls_no_socket":
        del chains[1]["transport_socket"]
        chains[1]["filter_chain_match"] = {"transport_protocol": "tls"}
    elif kind == "two_plain":
        del chains[1]["transport_socket"]
        chains.append(hcm_chain(ROUTES))
    elif kind == "port":
        chains[0]["filter_chain_match"]["destination_port"] = 1
    return bootstrap(15006, chains, [cluster("app", 1)])


@pytest.mark.parametrize("kind,msg,where", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_position_and_path(run_cli, pki, tmp_path, kind, msg, where):
    path = tmp_path / "envoy.json"
    path.write_text(refusal(kind, pki))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
    assert f"{path}:1:" in p.stderr, p.stderr
    assert "static_resources.listeners[0]." + where in p.stderr, p.stderr

