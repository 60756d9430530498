# SPDX-License-Identifier: Apache-2.0
"""deploy/: both kustomize overlays build with `kubectl kustomize`, and every object they produce
validates against Kubernetes' (and cert-manager's) OpenAPI schemas with kubernetes-models; the
installation has what the webhook needs (two replicas and a PDB, the namespace selector, the
failure policy, a serving certificate the CA bundle verifies); the compose layout shares one log
volume between the app and the logs sidecar."""
import base64
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from inject_util import load_all, validate

DEPLOY = ROOT / "deploy"


def kustomize(path):
    r = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return load_all(r.stdout)


def for_schema(objs):
    """Secret data as the API server reads it: kustomize wraps long base64 values over lines,
    which Go's decoder skips and the schema's "byte" format does not."""
    out = []
    for o in objs:
        if o["kind"] == "Secret":
            o = dict(o, data={k: re.sub(r"\s", "", v) for k, v in o["data"].items()})
        out.append(o)
    return out


def by_kind(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def check_common(objs):
    k = by_kind(objs)
    dep = k[("Deployment", "sidecar-webhook")]
    assert dep["metadata"]["namespace"] == "sidecar-system"
    assert dep["spec"]["replicas"] == 2
    pdb = k[("PodDisruptionBudget", "sidecar-webhook")]
    assert pdb["spec"]["minAvailable"] == 1
    sa = k[("ServiceAccount", "sidecar-webhook")]
    assert sa["automountServiceAccountToken"] is False
    assert not [o for o in objs if o["kind"] in ("Role", "ClusterRole", "RoleBinding",
                                                  "ClusterRoleBinding")]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == "webhook"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mutating = k[("MutatingWebhookConfiguration", "sidecar-injector")]
    wh = mutating["webhooks"][0]
    assert wh["namespaceSelector"]["matchLabels"] == {"sidecar-injection": "enabled"}
    assert wh["failurePolicy"] == "Fail"
    assert wh["reinvocationPolicy"] == "IfNeeded"
    assert wh["clientConfig"]["service"] == {"name": "sidecar-webhook",
                                             "namespace": "sidecar-system", "path": "/inject",
                                             "port": 443}
    assert wh["rules"][0]["operations"] == ["CREATE"]
    assert wh["objectSelector"]["matchExpressions"] == [
        {"key": "sidecar.dev/inject", "operator": "NotIn", "values": ["false"]}]
    # Pods that opt in by label where their namespace did not, and never the same pod twice.
    by_pod = mutating["webhooks"][1]
    assert by_pod["objectSelector"] == {"matchLabels": {"sidecar.dev/inject": "true"}}
    assert {"key": "sidecar-injection", "operator": "NotIn",
            "values": ["enabled", "disabled"]} in by_pod["namespaceSelector"]["matchExpressions"]
    assert by_pod["clientConfig"]["service"] == wh["clientConfig"]["service"]
    mesh = [o for o in objs if o["kind"] == "ConfigMap"][0]
    vol = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "mesh"][0]
    assert vol["configMap"]["name"] == mesh["metadata"]["name"]
    return k


def test_cert_manager_overlay():
    objs = kustomize(DEPLOY / "cert-manager")
    validate(for_schema(objs))
    k = check_common(objs)
    cert = k[("Certificate", "sidecar-webhook")]
    assert cert["spec"]["secretName"] == "sidecar-webhook-tls"
    assert "sidecar-webhook.sidecar-system.svc" in cert["spec"]["dnsNames"]
    ann = k[("MutatingWebhookConfiguration", "sidecar-injector")]["metadata"]["annotations"]
    assert ann["cert-manager.io/inject-ca-from"] == "sidecar-system/sidecar-webhook"


def test_self_signed_overlay(tmp_path):
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    subprocess.run([str(copy / "self-signed" / "gen-cert.sh")], check=True, capture_output=True,
                   timeout=60)
    objs = kustomize(copy / "self-signed")
    validate(for_schema(objs))
    k = check_common(objs)
    hooks = k[("MutatingWebhookConfiguration", "sidecar-injector")]["webhooks"]
    ca = base64.b64decode(hooks[0]["clientConfig"]["caBundle"])
    assert hooks[1]["clientConfig"]["caBundle"] == hooks[0]["clientConfig"]["caBundle"]
    (tmp_path / "ca.pem").write_bytes(ca)
    secret = k[("Secret", "sidecar-webhook-tls")]
    crt = base64.b64decode(re.sub(r"\s", "", secret["data"]["tls.crt"]))
    (tmp_path / "tls.pem").write_bytes(crt)
    r = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                        "-verify_hostname", "sidecar-webhook.sidecar-system.svc",
                        str(tmp_path / "tls.pem")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_layout():
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    svc = doc["services"]
    assert set(svc) == {"app", "proxy", "logs", "metrics"}
    for name in ("proxy", "logs", "metrics"):
        assert "sidecar" in svc[name]["image"]
        assert svc[name]["command"][0] == name
    assert "applogs:/var/log/app" in svc["app"]["volumes"]
    assert "applogs:/var/log/app:ro" in svc["logs"]["volumes"]


@pytest.mark.parametrize("role", ["proxy", "logs", "metrics"])
def test_compose_commands_are_valid_flags(role, run_cli):
    """Each sidecar service's command line passes the role's own --check."""
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    cmd = doc["services"][role]["command"]
    r = run_cli(*cmd, "--check")
    assert r.returncode == 0, r.stderr
