# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: the app's probes through the status port (or the admin port without one), as
`sidecar inject` rewrites them (Istio's probe rewriting). $SIDECAR_APP_PROBES maps each
/app-health/<container>/<kind> path to the original httpGet; the proxy forwards the kubelet's
request to the app on loopback (over TLS, unverified, for an HTTPS probe) and answers with the app's
status, 503 with a reason when the app cannot be reached or does not answer within the probe's
timeout, so a STRICT mTLS inbound listener does not fail the probes. The status port serves only
health and the probes: the admin port's other routes are not reachable there."""
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port, http_get
from proxy_util import FakeUpstream, respond
from tls_util import pki  # noqa: F401


class HttpsApp:
    """An app that serves HTTPS only (its own certificate), answering 204 on every GET."""

    def __init__(self, cert, key):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def app_handler(up, conn, req):
    if req.target == "/slow":
        time.sleep(2)
    status = 500 if req.target == "/broken" else 200
    return respond(conn, status, json.dumps(dict(req.headers)).encode())


def probes_env(app_port, closed_port, https_port):
    return json.dumps({
        "/app-health/app/livez": {"httpGet": {"path": "/live", "port": app_port,
                                              "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
        "/app-health/app/readyz": {"httpGet": {"path": "/broken", "port": app_port}},
        "/app-health/app/startupz": {"httpGet": {"path": "/", "port": closed_port}},
        "/app-health/slow/livez": {"httpGet": {"path": "/slow", "port": app_port},
                                   "timeoutSeconds": 1},
        "/app-health/tls/livez": {"httpGet": {"path": "/", "port": https_port,
                                              "scheme": "HTTPS"}},
        "/app-health/plain/livez": {"httpGet": {"path": "/", "port": app_port,
                                                "scheme": "HTTPS"}},
    })


def test_probes_forwarded_to_the_app(sidecar_run, pki):
    app = FakeUpstream(app_handler)
    tls_app = HttpsApp(str(pki / "server.pem"), str(pki / "server.key"))
    closed = free_port()
    try:
        port = free_port()
        env = {"SIDECAR_APP_PROBES": probes_env(app.port, closed, tls_app.port)}
        identity = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
                    "ca": str(pki / "ca.pem")}
        cfg = json.dumps({"listeners": [{"name": "inbound", "address": f"127.0.0.1:{port}",
                                         "mtls": "strict",
                                         "routes": [{"name": "r", "cluster": "app"}]}],
                          "clusters": [{"name": "app", "endpoints": [app.addr]}],
                          "identity": identity})
        sc = sidecar_run("proxy", config=cfg, env=env)
        assert sc.get("/app-health/app/livez")[0] == 200
        got = {k.lower(): v for k, v in app.requests[-1].headers}
        assert app.requests[-1].target == "/live"
        assert got["x-probe"] == "1" and got["user-agent"].startswith("kube-probe/")
        assert got["host"] == f"127.0.0.1:{app.port}"
        assert sc.get("/app-health/app/readyz")[0] == 500
        status, body, _ = sc.get("/app-health/app/startupz")
        assert status == 503 and b"app probe failed" in body
        t0 = time.monotonic()
        status, body, _ = sc.get("/app-health/slow/livez")
        assert status == 503 and time.monotonic() - t0 < 1.9
        # HTTPS: over TLS without verifying the app's certificate, as the kubelet does; an app
        # that does not speak TLS fails the probe.
        assert sc.get("/app-health/tls/livez")[0] == 204
        assert sc.get("/app-health/plain/livez")[0] == 503
        assert sc.get("/app-health/none/livez")[0] == 404
        # The kubelet hanging up mid-probe cancels it; the admin port keeps answering.
        s = socket.create_connection(("127.0.0.1", sc.admin_port))
        s.sendall(b"GET /app-health/slow/livez HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
        time.sleep(0.2)
        assert sc.get("/app-health/app/livez")[0] == 200
    finally:
        app.close()
        tls_app.close()


def test_status_port_serves_health_and_probes_only(sidecar_run):
    app = FakeUpstream(app_handler)
    try:
        status = free_port()
        env = {"SIDECAR_APP_PROBES": json.dumps({
            "/app-health/app/livez": {"httpGet": {"path": "/live", "port": app.port}}})}
        sc = sidecar_run("proxy", args=["--listen", f"127.0.0.1:{free_port()}", "--upstream",
                                        app.addr, "--status-listen", f"127.0.0.1:{status}"],
                         env=env)
        base = f"http://127.0.0.1:{status}"
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/ready")[0] == 200
        assert http_get(base + "/app-health/app/livez")[0] == 200
        assert app.requests[-1].target == "/live"
        for path in ("/config", "/metrics", "/quitquitquit", "/drain"):
            assert http_get(base + path)[0] == 404, path
        # The probes moved: the admin port keeps its own routes only.
        assert sc.get("/app-health/app/livez")[0] == 404
        assert sc.get("/metrics")[0] == 200
        assert "status listening" in sc.logs()
    finally:
        app.close()


def test_status_port_taken_is_refused(run_cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = run_cli("proxy", "--listen", f"127.0.0.1:{free_port()}", "--upstream", "127.0.0.1:9",
                    "--admin", f"127.0.0.1:{free_port()}", "--status-listen",
                    f"127.0.0.1:{taken}", timeout=20)
    assert r.returncode != 0 and "status_listen" in r.stderr


def test_probes_env_malformed_is_refused(run_cli):
    r = run_cli("proxy", "--listen", f"127.0.0.1:{free_port()}", "--upstream", "127.0.0.1:9",
                "--admin", f"127.0.0.1:{free_port()}",
                env={"SIDECAR_APP_PROBES": '{"/app-health/a/livez": {"httpGet": {"port": "x"}}}'})
    assert r.returncode != 0 and "SIDECAR_APP_PROBES" in r.stderr
