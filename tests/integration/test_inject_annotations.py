# SPDX-License-Identifier: Apache-2.0
"""Every annotation `sidecar inject` honours, one at a time on a minimal pod: sidecar.dev/* (opt
out, roles, per-role switches, role options, modes, resources), Vault Agent injector annotations
and prometheus.io/*; plus the errors that name the document and the field. Each injected pod is
also validated against Kubernetes' schemas."""
import json

import pytest
import yaml

from inject_util import inject, load_all, minimal_pod, names, validate


def run(annotations=None, *args, containers=None, **spec):
    out = inject("-f", "-", *args, stdin=minimal_pod(annotations, containers, **spec)).stdout
    (pod,) = load_all(out)
    return pod


def sidecars(pod):
    s = pod["spec"]
    return names(s.get("initContainers")) + [n for n in names(s["containers"]) if
                                             n.startswith("sidecar-")]


def ctr(pod, name):
    s = pod["spec"]
    for c in s.get("initContainers", []) + s["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def status(pod):
    """The status annotation, "version=V;roles=a,b;mode=native", as a dict."""
    value = pod["metadata"]["annotations"]["sidecar.dev/status"]
    assert len(value) <= 63  # podman kube play holds annotations to label limits
    st = dict(kv.split("=", 1) for kv in value.split(";"))
    st["roles"] = st["roles"].split(",")
    return st


def test_default_is_proxy_with_iptables_first():
    pod = run()
    assert sidecars(pod) == ["sidecar-iptables", "sidecar-proxy"]
    assert status(pod) == {"version": "0.1.0", "roles": ["proxy"], "mode": "native"}
    validate([pod])


def test_inject_false_opts_out():
    pod = run({"sidecar.dev/inject": "false"})
    assert sidecars(pod) == []
    assert "sidecar.dev/status" not in pod["metadata"]["annotations"]


def test_inject_label_like_the_annotation():
    """The label sidecar.dev/inject (what the webhook's objectSelector matches) decides as the
    annotation does; the annotation wins when both are set."""
    def pod_with(labels, annotations=None):
        doc = yaml.safe_load(minimal_pod(annotations))
        doc["metadata"]["labels"] = labels
        (out,) = load_all(inject("-f", "-", stdin=yaml.safe_dump(doc)).stdout)
        return out
    assert sidecars(pod_with({"sidecar.dev/inject": "false"})) == []
    assert sidecars(pod_with({"sidecar.dev/inject": "true"})) != []
    assert sidecars(pod_with({"sidecar.dev/inject": "false"}, {"sidecar.dev/inject": "true"})) != []
    doc = yaml.safe_load(minimal_pod())
    doc["metadata"]["labels"] = {"sidecar.dev/inject": "yes"}
    r = inject("-f", "-", stdin=yaml.safe_dump(doc), check=False)
    assert r.returncode == 1 and "metadata.labels[sidecar.dev/inject]" in r.stderr


def test_roles_annotation_picks_roles():
    pod = run({"sidecar.dev/roles": "logs, metrics"})
    assert sidecars(pod) == ["sidecar-logs", "sidecar-metrics"]
    validate([pod])


@pytest.mark.parametrize("role", ["proxy", "logs", "metrics", "secrets"])
def test_each_role_switches_alone(role):
    on = run({f"sidecar.dev/{role}": "true", "sidecar.dev/roles": "proxy"})
    assert f"sidecar-{role}" in sidecars(on)
    off = run({f"sidecar.dev/{role}": "false", "sidecar.dev/roles": "proxy,logs,metrics,secrets"})
    assert f"sidecar-{role}" not in sidecars(off)
    validate([on, off])


def test_no_roles_leaves_pod_alone():
    pod = run({"sidecar.dev/proxy": "false"})
    assert sidecars(pod) == []


def test_native_sidecars_restart_always_with_startup_probe():
    pod = run({"sidecar.dev/roles": "proxy,logs"})
    for name in ("sidecar-proxy", "sidecar-logs"):
        c = ctr(pod, name)
        assert c["restartPolicy"] == "Always"
        cmd = c["startupProbe"]["exec"]["command"]
        assert cmd[:2] == ["sidecar", "wait"] and cmd[3].endswith("/ready")
    assert pod["spec"]["containers"][0]["name"] == "app"


def test_classic_mode_proxy_first_with_poststart_wait():
    for pod in (run({}, "--native-sidecars=false"),
                run({"sidecar.dev/native-sidecars": "false"}),
                run({}, "--kubernetes-version", "1.28")):
        assert names(pod["spec"]["containers"]) == ["sidecar-proxy", "app"]
        hook = ctr(pod, "sidecar-proxy")["lifecycle"]["postStart"]["exec"]["command"]
        assert hook[:4] == ["sidecar", "wait", "--url", "http://127.0.0.1:15000/ready"]
        assert "restartPolicy" not in ctr(pod, "sidecar-proxy")
        validate([pod])
    pod = run({"sidecar.dev/native-sidecars": "false", "sidecar.dev/hold-application": "false"})
    assert "lifecycle" not in ctr(pod, "sidecar-proxy")


def test_iptables_least_privilege_and_exclusions():
    pod = run({"sidecar.dev/roles": "proxy,metrics",
               "sidecar.dev/proxy-exclude-inbound-ports": "8443, 9443",
               "sidecar.dev/proxy-exclude-outbound-ports": "5432",
               "sidecar.dev/proxy-exclude-outbound-cidrs": "10.0.0.0/8"})
    ipt = ctr(pod, "sidecar-iptables")
    assert pod["spec"]["initContainers"][0]["name"] == "sidecar-iptables"
    sc = ipt["securityContext"]
    assert sc["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    a = ipt["args"]
    assert a[a.index("--exclude-inbound-ports") + 1] == "15000,15024,9090,8443,9443"
    assert a[a.index("--exclude-outbound-ports") + 1] == "5432"
    assert a[a.index("--exclude-outbound-cidrs") + 1] == "10.0.0.0/8"
    assert a[a.index("--proxy-uid") + 1] == "1337"


def test_cni_drops_the_init_container():
    assert "sidecar-iptables" not in sidecars(run({}, "--cni"))
    assert "sidecar-iptables" not in sidecars(run({"sidecar.dev/cni": "true"}))


def test_probe_rewriting():
    c = {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}],
         "livenessProbe": {"httpGet": {"path": "/live", "port": "http", "scheme": "HTTP"},
                           "timeoutSeconds": 4},
         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
         "startupProbe": {"tcpSocket": {"port": 8080}}}
    pod = run({}, containers=[c])  # on by default
    assert pod["spec"] == run({"sidecar.dev/rewrite-probes": "true"}, containers=[c])["spec"]
    app = pod["spec"]["containers"][0]
    assert app["livenessProbe"]["httpGet"] == {"path": "/app-health/app/livez", "port": 15024,
                                               "scheme": "HTTP"}
    assert app["livenessProbe"]["timeoutSeconds"] == 4
    assert app["readinessProbe"]["httpGet"]["path"] == "/app-health/app/readyz"
    assert app["startupProbe"] == {"tcpSocket": {"port": 8080}}
    env = {e["name"]: e.get("value") for e in ctr(pod, "sidecar-proxy")["env"]}
    probes = json.loads(env["SIDECAR_APP_PROBES"])
    assert probes["/app-health/app/livez"] == {
        "httpGet": {"path": "/live", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 4}
    assert probes["/app-health/app/readyz"]["httpGet"] == {"path": "/ready", "port": 8080}
    # The kubelet reaches the status port on the pod's address; the admin port stays on loopback,
    # and inbound capture leaves the status port alone.
    args = ctr(pod, "sidecar-proxy")["args"]
    assert args[args.index("--status-listen") + 1] == "0.0.0.0:15024"
    assert not any(a.startswith("0.0.0.0:15000") for a in args)
    ipt = ctr(pod, "sidecar-iptables")["args"]
    assert "15024" in ipt[ipt.index("--exclude-inbound-ports") + 1].split(",")
    off = run({"sidecar.dev/rewrite-probes": "false"}, containers=[c])
    assert off["spec"]["containers"][0] == c
    assert "--status-listen" not in ctr(off, "sidecar-proxy")["args"]


def test_logs_path_output_parser():
    pod = run({"sidecar.dev/roles": "logs", "sidecar.dev/logs-path": "/data/logs",
               "sidecar.dev/logs-output": "loki=http://loki:3100, stdout",
               "sidecar.dev/logs-parser": "json"})
    logs = ctr(pod, "sidecar-logs")
    a = logs["args"]
    assert a[a.index("--path") + 1] == "/data/logs/*.log"
    assert a[a.index("--parser") + 1] == "json"
    assert [a[i + 1] for i, x in enumerate(a) if x == "--output"] == ["loki=http://loki:3100",
                                                                      "stdout"]
    ro = [m for m in logs["volumeMounts"] if m["name"] == "sidecar-logs"]
    assert ro == [{"name": "sidecar-logs", "mountPath": "/data/logs", "readOnly": True}]
    app = pod["spec"]["containers"][0]
    assert {"name": "sidecar-logs", "mountPath": "/data/logs"} in app["volumeMounts"]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["sidecar-logs"] == {"name": "sidecar-logs", "emptyDir": {}}


def test_metrics_merging():
    pod = run({"sidecar.dev/roles": "metrics", "prometheus.io/port": "8081",
               "prometheus.io/path": "/stats"})
    a = ctr(pod, "sidecar-metrics")["args"]
    assert a[a.index("--scrape") + 1] == "http://127.0.0.1:8081/stats"
    assert a[a.index("--listen") + 1] == "0.0.0.0:9090"
    ann = pod["metadata"]["annotations"]
    assert (ann["prometheus.io/port"], ann["prometheus.io/path"], ann["prometheus.io/scrape"]) == \
        ("9090", "/metrics", "true")
    pod = run({"sidecar.dev/roles": "metrics", "sidecar.dev/metrics-port": "7000",
               "sidecar.dev/metrics-path": "/m"})
    a = ctr(pod, "sidecar-metrics")["args"]
    assert a[a.index("--scrape") + 1] == "http://127.0.0.1:7000/m"


def test_vault_annotations():
    base = {"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/role": "web",
            "vault.hashicorp.com/agent-inject-secret-db": "database/creds/web",
            "vault.hashicorp.com/agent-inject-template-db": "{{ .Data.password }}",
            "vault.hashicorp.com/service": "https://vault.example:8200",
            "sidecar.dev/proxy": "false"}
    native = run(base)
    assert sidecars(native) == ["sidecar-secrets"]
    s = ctr(native, "sidecar-secrets")
    a = s["args"]
    assert a[a.index("--vault-addr") + 1] == "https://vault.example:8200"
    assert a[a.index("--annotations-file") + 1] == "/etc/podinfo/annotations"
    assert native["metadata"]["annotations"]["vault.hashicorp.com/agent-inject-status"] == \
        "injected"
    app = native["spec"]["containers"][0]
    assert {"name": "sidecar-secrets", "mountPath": "/vault/secrets", "readOnly": True} in \
        app["volumeMounts"]
    vols = {v["name"]: v for v in native["spec"]["volumes"]}
    assert vols["sidecar-secrets"]["emptyDir"] == {"medium": "Memory"}
    classic = run(base, "--native-sidecars=false")
    assert names(classic["spec"]["initContainers"]) == ["sidecar-secrets-init"]
    assert "--once" in ctr(classic, "sidecar-secrets-init")["args"]
    assert "sidecar-secrets" in names(classic["spec"]["containers"])
    only = run(dict(base, **{"vault.hashicorp.com/agent-pre-populate-only": "true"}))
    assert sidecars(only) == ["sidecar-secrets-init"]
    done = run(dict(base, **{"vault.hashicorp.com/agent-inject-status": "injected"}))
    assert sidecars(done) == []
    validate([native, classic, only])


def test_resources_and_security_context():
    pod = run({"sidecar.dev/cpu-request": "50m", "sidecar.dev/memory-limit": "64Mi"})
    p = ctr(pod, "sidecar-proxy")
    assert p["resources"] == {"requests": {"cpu": "50m", "memory": "16Mi"},
                              "limits": {"cpu": "1", "memory": "64Mi"}}
    assert p["securityContext"] == {
        "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}}


def test_downward_api():
    pod = run({"sidecar.dev/roles": "proxy,logs"})
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
           for e in ctr(pod, "sidecar-logs")["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
                   "POD_IP": "status.podIP", "SERVICE_ACCOUNT": "spec.serviceAccountName"}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    items = vols["sidecar-podinfo"]["downwardAPI"]["items"]
    assert [i["path"] for i in items] == ["labels", "annotations"]
    assert {"name": "sidecar-podinfo", "mountPath": "/etc/podinfo", "readOnly": True} in \
        ctr(pod, "sidecar-logs")["volumeMounts"]


def test_identity_volume_from_mesh_config(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("identity: csi\nidentity_issuer: mesh-ca\ntrust_domain: example.org\n")
    pod = run({}, "--mesh-config", mesh)
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    attrs = vols["sidecar-identity"]["csi"]["volumeAttributes"]
    assert vols["sidecar-identity"]["csi"]["driver"] == "csi.cert-manager.io"
    assert attrs["csi.cert-manager.io/uri-sans"] == \
        "spiffe://example.org/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"
    assert attrs["csi.cert-manager.io/issuer-name"] == "mesh-ca"
    mesh.write_text("identity: none\n")
    pod = run({}, "--mesh-config", mesh)
    assert "sidecar-identity" not in names(pod["spec"]["volumes"])


def test_host_network_never_injected():
    assert sidecars(run({}, hostNetwork=True)) == []


@pytest.mark.parametrize("annotations,containers,want", [
    ({"sidecar.dev/roles": "proxy,tracing"}, None,
     'document 1 (Pod/p): metadata.annotations[sidecar.dev/roles]: unknown role "tracing"'),
    ({"sidecar.dev/inject": "nope"}, None,
     'document 1 (Pod/p): metadata.annotations[sidecar.dev/inject]: "nope" is not "true"'),
    ({"sidecar.dev/proxy-exclude-inbound-ports": "80,http"}, None,
     'metadata.annotations[sidecar.dev/proxy-exclude-inbound-ports]: "http" is not a port'),
    ({"sidecar.dev/roles": "logs", "sidecar.dev/logs-path": "logs"}, None,
     'metadata.annotations[sidecar.dev/logs-path]: "logs" is not an absolute path'),
    ({"sidecar.dev/roles": "metrics"},
     [{"name": "app", "image": "a", "ports": [{"containerPort": 9090}]}],
     "spec.containers[0].ports[0].containerPort: port 9090 is the metrics sidecar's"),
    ({}, [{"name": "sidecar-proxy", "image": "a"}],
     'spec.containers[0].name: "sidecar-proxy" is reserved for the injected sidecars'),
])
def test_errors_name_document_and_field(annotations, containers, want):
    r = inject("-f", "-", stdin=minimal_pod(annotations, containers), check=False)
    assert r.returncode == 1
    assert want in r.stderr, r.stderr
    assert r.stdout == ""


def test_yaml_syntax_error_has_position():
    r = inject("-f", "-", stdin="kind: Pod\nspec: [a\n", check=False)
    assert r.returncode == 1
    assert "stdin:3:1:" in r.stderr


def test_injected_command_lines_pass_their_roles_check(run_cli):
    """Every injected container's command line is accepted by its own role (`--check`), the
    sidecar-iptables one included: the flags the injector writes are the ones the roles have."""
    pod = run({"sidecar.dev/roles": "proxy,logs,metrics,secrets", "prometheus.io/port": "8081",
               "sidecar.dev/proxy-exclude-outbound-cidrs": "10.0.0.0/8,fd00::/8",
               "sidecar.dev/proxy-exclude-outbound-ports": "5432"},
              "--native-sidecars=false")
    s = pod["spec"]
    checked = []
    for c in s.get("initContainers", []) + s["containers"]:
        if c.get("command") != ["sidecar"]:
            continue
        args = [a.replace("$(POD_NAME)", "p").replace("$(POD_NAMESPACE)", "ns") for a in c["args"]]
        r = run_cli(*args, "--check")
        assert r.returncode == 0, f"{c['name']}: {args}: {r.stderr}"
        checked.append(args[0])
    assert sorted(checked) == ["iptables", "logs", "metrics", "proxy", "secrets", "secrets"]
    for c in s["containers"] + s.get("initContainers", []):
        for hook in [c.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command"),
                     (c.get("startupProbe") or c.get("readinessProbe") or {}).get("exec", {})
                     .get("command")]:
            if hook:
                assert run_cli(*hook[1:], "--check").returncode == 0, hook
