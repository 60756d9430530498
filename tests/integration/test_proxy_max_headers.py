# SPDX-License-Identifier: Apache-2.0
"""A listener's max_request_headers (default 100, at most 1024) bounds the header fields of a
request on HTTP/1 and HTTP/2 alike (431 over it), natively and from an Envoy bootstrap's
common_http_protocol_options.max_headers_count. HTTP/1 requests are written field by field on a
socket (exact counts); HTTP/2 ones sent by curl with prior knowledge, whose pseudo-header fields
count as Envoy counts them. nginx answers behind the proxy."""
import json
import socket
import subprocess

import pytest

from conftest import free_port
from test_proxy_envoy_tlschain import namers  # noqa: F401 (fixture)
from test_proxy_h2_front import envoy_doc, printed_listener


@pytest.fixture
def app(namers):  # noqa: F811 (namers is a fixture)
    return namers("ok")


def h1_status(port, nfields):
    """Status of a GET carrying exactly <nfields> header fields (Host among them)."""
    head = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"x-f{i}: v\r\n" for i in range(nfields - 1))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall((head + "\r\n").encode())
    buf = s.recv(200)
    s.close()
    return int(buf.split(b" ", 2)[1])


def h2_status(port, nfields):
    """Status of an h2c GET carrying exactly <nfields> fields: 4 pseudo-header fields,
    user-agent, accept and the rest."""
    extra = []
    for i in range(nfields - 6):
        extra += ["-H", f"x-f{i}: v"]
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        "--http2-prior-knowledge", *extra, f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=10)
    return int(r.stdout or 0)


NATIVE = """
listeners:
  - name: in
    address: 127.0.0.1:{port}
    {extra}
    routes:
      - match: {{prefix: /}}
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:{app}]
"""


def test_default_100_fields(sidecar_run, app):
    port = free_port()
    sidecar_run("proxy", config=NATIVE.format(port=port, app=app.port, extra=""))
    assert h1_status(port, 100) == 200
    assert h1_status(port, 101) == 431
    assert h2_status(port, 100) == 200
    assert h2_status(port, 101) == 431


def test_raised_and_lowered(sidecar_run, app):
    port = free_port()
    sidecar_run("proxy", config=NATIVE.format(port=port, app=app.port,
                                              extra="max_request_headers: 300"))
    assert h1_status(port, 101) == 200
    assert h1_status(port, 300) == 200
    assert h1_status(port, 301) == 431
    assert h2_status(port, 101) == 200
    assert h2_status(port, 300) == 200
    assert h2_status(port, 301) == 431
    port2 = free_port()
    sidecar_run("proxy", config=NATIVE.format(port=port2, app=app.port,
                                              extra="max_request_headers: 20"))
    assert h1_status(port2, 20) == 200
    assert h1_status(port2, 21) == 431
    assert h2_status(port2, 21) == 431


def test_envoy_max_headers_count(sidecar_run, run_cli, app):
    port = free_port()
    doc = envoy_doc(port, f"127.0.0.1:{app.port}",
                    common_http_protocol_options={"max_headers_count": 150})
    sc = sidecar_run("proxy", config=json.dumps(doc))
    assert printed_listener(run_cli, sc.config_path)["max_request_headers"] == "150"
    assert h1_status(port, 101) == 200
    assert h1_status(port, 151) == 431
    assert h2_status(port, 150) == 200
    assert h2_status(port, 151) == 431


def test_bounds_refused(run_cli, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(NATIVE.format(port=1, app=2, extra="max_request_headers: 2000"))
    p = run_cli("proxy", "-c", str(path), "--check")
    assert p.returncode != 0
    assert f"{path}:5:26: 2000 is out of range [1, 1024]" in p.stderr, p.stderr
