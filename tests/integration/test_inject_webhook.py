# SPDX-License-Identifier: Apache-2.0
"""`sidecar webhook` driven by a fake API server client (FakeApiServer: no API server runs on
these machines) that sends real AdmissionReview v1 documents over TLS, verifying the webhook's
certificate against the test CA and reusing its connection as the API server does. The JSONPatch
it gets back, applied with python3-jsonpatch, must give exactly what `sidecar inject` produces
from the same pod; the decision rules, malformed and oversized reviews, the metrics, certificate
rotation and the plain-HTTP mode are checked too."""
import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import uuid

import jsonpatch
import pytest

from conftest import BIN, free_port, http_get, wait_until
from inject_util import DATA, inject, load_all, template_meta
from tls_util import make_leaf, peer_serial, pki, serial_of  # noqa: F401 - pki is a fixture


class FakeApiServer:
    """Stands in for the API server's admission client: wraps a pod in an AdmissionReview, POSTs
    it to the webhook over one kept-alive HTTPS connection (verifying the serving certificate
    against <ca>; plain HTTP when <ca> is None) and applies the patch it returns."""

    def __init__(self, port, ca=None):
        self.port = port
        self.ca = ca
        self.conn = None

    def _connect(self):
        if self.ca:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            return http.client.HTTPSConnection("localhost", self.port, context=ctx, timeout=10)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method, path, body=None, headers=None):
        """Returns (status, body bytes), reconnecting once when the kept connection closed."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body, headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if (r.getheader("Connection") or "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path):
        return self.request("GET", path)

    def review(self, pod, namespace="default", operation="CREATE", kind="Pod"):
        uid = str(uuid.uuid4())
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": uid,
                            "kind": {"group": "", "version": "v1", "kind": kind},
                            "resource": {"group": "", "version": "v1", "resource": "pods"},
                            "requestKind": {"group": "", "version": "v1", "kind": kind},
                            "name": pod.get("metadata", {}).get("name", ""),
                            "namespace": namespace, "operation": operation,
                            "userInfo": {"username": "system:serviceaccount:kube-system:rs"},
                            "object": pod, "oldObject": None, "dryRun": False,
                            "options": {"apiVersion": "meta.k8s.io/v1",
                                        "kind": "CreateOptions"}}}
        status, data = self.post("/inject", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200, data
        review = json.loads(data)
        assert review["apiVersion"] == "admission.k8s.io/v1"
        assert review["kind"] == "AdmissionReview"
        resp = review["response"]
        assert resp["uid"] == uid
        return resp

    def admit(self, pod, **kw):
        """Returns (response, the pod as the API server would store it)."""
        resp = self.review(pod, **kw)
        if "patch" not in resp:
            return resp, pod
        assert resp["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(resp["patch"]))
        return resp, jsonpatch.apply_patch(pod, ops)


@pytest.fixture
def webhook(sidecar_run, tmp_path, pki):
    """Starts `sidecar webhook` over HTTPS with the test PKI's server certificate (a copy, so a
    test may replace it); returns (sidecar, FakeApiServer, port)."""
    def start(*args, tls=True):
        port = free_port()
        tls_args = []
        if tls:
            for f in ("server.pem", "server.key"):
                shutil.copy(pki / f, tmp_path / f)
            tls_args = ["--tls-cert", str(tmp_path / "server.pem"), "--tls-key",
                        str(tmp_path / "server.key")]
        sc = sidecar_run("webhook", ["--listen", f"127.0.0.1:{port}", *tls_args, *args])
        return sc, FakeApiServer(port, pki / "ca.pem" if tls else None), port
    return start


def pods_of(path):
    """The pod templates of a manifest file, as Pods."""
    out = []
    for doc in load_all(path.read_text()):
        for obj in doc.get("items", [doc]):
            if obj["kind"] == "Pod":
                out.append(obj)
            elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                                 "CronJob"):
                meta = dict(template_meta(obj))
                spec = (obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                        if obj["kind"] == "CronJob" else obj["spec"]["template"]["spec"])
                meta.setdefault("generateName", obj["metadata"]["name"] + "-")
                out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    return out


@pytest.mark.parametrize("src", ["deployment.yaml", "statefulset.yaml", "cronjob.yaml",
                                 "existing.yaml", "list.yaml"])
def test_patch_gives_exactly_inject_output(webhook, src, tmp_path):
    _, api, _ = webhook()
    for pod in pods_of(DATA / src):
        resp, patched = api.admit(pod)
        assert resp["allowed"] is True
        f = tmp_path / "pod.json"
        f.write_text(json.dumps(pod))
        want = json.loads(inject("-f", f).stdout)
        assert patched == want
        # Reinvocation (reinvocationPolicy: IfNeeded): an injected pod gets no patch.
        again, same = api.admit(patched)
        assert again["allowed"] is True and "patch" not in again and same == patched


def test_mesh_config_and_flags_apply(webhook, tmp_path):
    _, api, _ = webhook("--mesh-config", DATA / "mesh.yaml", "--native-sidecars=false")
    (pod,) = pods_of(DATA / "statefulset.yaml")
    _, patched = api.admit(pod)
    f = tmp_path / "pod.json"
    f.write_text(json.dumps(pod))
    want = json.loads(inject("-f", f, "--mesh-config", DATA / "mesh.yaml",
                             "--native-sidecars=false").stdout)
    assert patched == want
    assert patched["spec"]["containers"][0]["image"] == "registry.example.com/sidecar:0.1.0"


def test_decisions(webhook, tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("exclude_namespaces: [monitoring]\n")
    _, api, _ = webhook("--mesh-config", mesh)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    for ns in ("kube-system", "kube-public", "monitoring"):
        resp = api.review(pod, namespace=ns)
        assert resp["allowed"] is True and "patch" not in resp, ns
    assert "patch" in api.review(pod, namespace="shop")
    host = dict(pod, spec=dict(pod["spec"], hostNetwork=True))
    assert "patch" not in api.review(host)
    off = dict(pod, metadata={"name": "p", "annotations": {"sidecar.dev/inject": "false"}})
    assert "patch" not in api.review(off)
    assert "patch" not in api.review(pod, operation="UPDATE")
    assert "patch" not in api.review({"kind": "Deployment"}, kind="Deployment")
    clash = dict(pod, spec={"containers": [{"name": "app", "image": "a"}],
                            "volumes": [{"name": "sidecar-podinfo", "emptyDir": {}}]})
    resp = api.review(clash)
    assert resp["allowed"] is False
    assert "spec.volumes[0].name" in resp["status"]["message"]


def test_malformed_and_oversized_reviews(webhook):
    sc, api, port = webhook()
    for body, reason in [(b"not json", b"not JSON"), (b"[]", b"apiVersion must be"),
                         (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
                          b"request.uid is missing"),
                         (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
                          b'"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE",'
                          b'"object":"pod"}}', b"request.object is not a Pod")]:
        status, data = api.post("/inject", body)
        assert status == 400 and reason in data, (status, data)
    # A body over 1 MiB is refused from its Content-Length, before it is sent.
    ctx = ssl.create_default_context(cafile=str(api.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"POST /inject HTTP/1.1\r\nHost: localhost\r\n"
                        b"Content-Length: 2097152\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 413 ")
    # Still serving, and plaintext on the TLS port gets nowhere.
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    assert api.review(pod)["allowed"] is True
    plain = FakeApiServer(port)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        plain.post("/inject", b"{}")


def test_metrics(webhook):
    sc, api, port = webhook()
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    api.review(pod)
    api.review(pod, namespace="kube-system")
    api.post("/inject", b"x")
    status, text = api.get("/metrics")
    assert status == 200
    text = text.decode()
    assert 'sidecar_webhook_requests_total{result="injected"} 1' in text
    assert 'sidecar_webhook_requests_total{result="skipped"} 1' in text
    assert 'sidecar_webhook_requests_total{result="invalid"} 1' in text
    assert "sidecar_webhook_request_duration_seconds_count 3" in text
    assert api.get("/ready")[0] == 200 and api.get("/healthz")[0] == 200
    # The admin port has the same metrics.
    assert "sidecar_webhook_requests_total" in sc.get("/metrics")[1].decode()


def test_certificate_rotation(webhook, pki, tmp_path):
    """A new certificate written over the old files serves new connections without a restart; a
    broken one is refused and the last good pair keeps serving."""
    sc, api, port = webhook()
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    assert peer_serial(port, pki / "ca.pem") == serial_of(pki / "server.pem")
    new_cert, new_key = make_leaf(pki, "webhook-next", "DNS:localhost,IP:127.0.0.1",
                                  out=tmp_path)
    for src, dst in ((new_key, "server.key.tmp"), (new_cert, "server.pem.tmp")):
        shutil.copy(src, tmp_path / dst)
    os.replace(tmp_path / "server.key.tmp", tmp_path / "server.key")
    os.replace(tmp_path / "server.pem.tmp", tmp_path / "server.pem")
    want = serial_of(new_cert)
    wait_until(lambda: peer_serial(port, pki / "ca.pem") == want, timeout=15,
               what="the new certificate")
    assert "TLS certificates reloaded" in sc.logs()
    assert FakeApiServer(port, pki / "ca.pem").review(pod)["allowed"] is True
    (tmp_path / "server.pem").write_text("not a certificate\n")
    wait_until(lambda: "TLS reload refused" in sc.logs(), timeout=15,
               what="the broken certificate to be refused")
    assert peer_serial(port, pki / "ca.pem") == want
    assert FakeApiServer(port, pki / "ca.pem").review(pod)["allowed"] is True


def test_plain_http_mode(webhook):
    """Without --tls-cert the webhook serves plain HTTP (tests, or behind a TLS-terminating
    proxy) and says so."""
    sc, api, port = webhook(tls=False)
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    assert "patch" in api.review(pod)
    assert "plain HTTP" in sc.logs()


def test_tls_flags_go_together_and_files_must_load(tmp_path, pki):
    r = subprocess.run([BIN, "webhook", "--tls-cert", str(pki / "server.pem")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "--tls-cert and --tls-key go together" in r.stderr
    r = subprocess.run([BIN, "webhook", "--listen", f"127.0.0.1:{free_port()}", "--admin",
                        "127.0.0.1:0", "--tls-cert", str(pki / "notpem.pem"), "--tls-key",
                        str(pki / "server.key")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "notpem.pem" in r.stderr, r.stderr


def test_patch_escaping(webhook, tmp_path):
    """Keys with / and ~ (JSON Pointer escapes), non-ASCII, quotes and control characters
    survive the patch."""
    _, api, _ = webhook()
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": {"a~b/c": "h\u00e9llo \u2713 \"q\"\n\t\u0001"},
                        "labels": {"app.kubernetes.io/name": "x"}},
           "spec": {"containers": [{"name": "app", "image": "app:1", "args": ["\\d+"]}]}}
    _, patched = api.admit(pod)
    f = tmp_path / "pod.json"
    f.write_text(json.dumps(pod))
    assert patched == json.loads(inject("-f", f).stdout)
    assert patched["metadata"]["annotations"]["a~b/c"] == pod["metadata"]["annotations"]["a~b/c"]
