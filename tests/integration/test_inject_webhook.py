# SPDX-License-Identifier: Apache-2.0
"""`sidecar webhook` driven by a fake API server client (FakeApiServer: no API server runs on
these machines) that sends real AdmissionReview v1 documents, as the API server does, over plain
HTTP (TLS termination for the webhook waits for the TLS layer). The JSONPatch it gets back,
applied with python3-jsonpatch, must give exactly what `sidecar inject` produces from the same
pod; the decision rules, malformed and oversized reviews, and the metrics are checked too."""
import base64
import json
import subprocess
import uuid

import jsonpatch
import pytest

from conftest import BIN, free_port, http_get
from inject_util import DATA, inject, load_all, template_meta


class FakeApiServer:
    """Stands in for the API server's admission client: wraps a pod in an AdmissionReview, POSTs
    it to the webhook and applies the patch it returns."""

    def __init__(self, url):
        self.url = url

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
        status, data, _ = http_get(self.url, method="POST", data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
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
def webhook(sidecar_run, tmp_path):
    def start(*args):
        port = free_port()
        sc = sidecar_run("webhook", ["--listen", f"127.0.0.1:{port}", *args])
        return sc, FakeApiServer(f"http://127.0.0.1:{port}/inject"), port
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
    url = f"http://127.0.0.1:{port}/inject"
    for body, reason in [(b"not json", b"not JSON"), (b"[]", b"apiVersion must be"),
                         (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
                          b"request.uid is missing"),
                         (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
                          b'"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE",'
                          b'"object":"pod"}}', b"request.object is not a Pod")]:
        status, data, _ = http_get(url, method="POST", data=body)
        assert status == 400 and reason in data, (status, data)
    status, _, _ = http_get(url, method="POST", data=b"{" + b" " * (2 << 20) + b"}")
    assert status == 413
    # Still serving.
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    assert api.review(pod)["allowed"] is True
    st, health, _ = http_get(f"http://127.0.0.1:{port}/healthz")
    assert st == 200


def test_metrics(webhook):
    _, api, port = webhook()
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    api.review(pod)
    api.review(pod, namespace="kube-system")
    http_get(f"http://127.0.0.1:{port}/inject", method="POST", data=b"x")
    _, text, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    text = text.decode()
    assert 'sidecar_webhook_requests_total{result="injected"} 1' in text
    assert 'sidecar_webhook_requests_total{result="skipped"} 1' in text
    assert 'sidecar_webhook_requests_total{result="invalid"} 1' in text
    assert "sidecar_webhook_request_duration_seconds_count 3" in text


def test_tls_flags_report_pending_tls_layer(tmp_path):
    r = subprocess.run([BIN, "webhook", "--tls-cert", str(tmp_path / "c.pem"), "--tls-key",
                        str(tmp_path / "k.pem")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "no TLS layer yet" in r.stderr


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
