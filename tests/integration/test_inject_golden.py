# SPDX-License-Identifier: Apache-2.0
"""`sidecar inject` on realistic manifests against golden files (UPDATE_GOLDEN=1 rewrites them):
a Deployment with two containers and probes, a StatefulSet under a mesh config, a CronJob, a pod
whose init containers and volumes have names that could clash, a List, and a multi-document file.
Each output is checked for idempotence (injecting it again changes no byte), for keeping
everything the input had, and against Kubernetes' OpenAPI schemas (kubernetes-models)."""
import copy
import json
import os

import pytest

from inject_util import DATA, inject, load_all, pod_spec, template_meta, validate

CASES = {
    "deployment": ("deployment.yaml", []),
    "deployment-classic": ("deployment.yaml", ["--native-sidecars=false"]),
    "deployment-cni": ("deployment.yaml", ["--cni", "--kubernetes-version", "v1.30.1"]),
    "statefulset": ("statefulset.yaml", ["--mesh-config", DATA / "mesh.yaml"]),
    "cronjob": ("cronjob.yaml", []),
    "existing": ("existing.yaml", []),
    "list": ("list.yaml", []),
    "multi": ("multi.yaml", []),
}


def golden(name):
    return DATA / f"{name}.golden.yaml"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    src, args = CASES[name]
    out = inject("-f", DATA / src, *args).stdout
    if os.environ.get("UPDATE_GOLDEN"):
        golden(name).write_text(out)
    assert out == golden(name).read_text(), f"{name}: output differs from its golden file"


@pytest.mark.parametrize("name", sorted(CASES))
def test_idempotent(name, tmp_path):
    src, args = CASES[name]
    first = inject("-f", DATA / src, *args).stdout
    second = inject("-f", "-", *args, stdin=first)
    assert second.stdout == first
    assert "0 pod templates injected" in second.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_schema_valid(name):
    objs = load_all(golden(name).read_text())
    lines = validate(objs)
    assert lines and all(" valid" in l for l in lines), lines


def _subset(want, got, path=""):
    """Every value of <want> is in <got>: mappings by key, lists by position (the injector only
    appends or inserts its own entries, which are skipped by name)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        for k, v in want.items():
            assert k in got, f"{path}.{k} was dropped"
            _subset(v, got[k], f"{path}.{k}")
    elif isinstance(want, list):
        ours = [g for g in got if not (isinstance(g, dict) and
                                       str(g.get("name", "")).startswith("sidecar-"))]
        assert len(ours) == len(want), f"{path}: {len(want)} items became {len(ours)}"
        for i, (w, g) in enumerate(zip(want, ours)):
            _subset(w, g, f"{path}[{i}]")
    else:
        assert want == got, f"{path}: {want!r} became {got!r}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_keeps_everything_else(name):
    """Apart from what injection rewrites by design (HTTP probes through the proxy, the
    prometheus.io annotations pointed at the metrics sidecar), the input is in the output."""
    src, _ = CASES[name]
    before = load_all((DATA / src).read_text())
    after = load_all(golden(name).read_text())
    assert len(before) == len(after)
    flat_b, flat_a = [], []
    for b, a in zip(before, after):
        if b.get("kind") == "List":
            flat_b += b["items"]
            flat_a += a["items"]
            b, a = dict(b, items=[]), dict(a, items=[])
        flat_b.append(b)
        flat_a.append(a)
    for b, a in zip(flat_b, flat_a):
        b = copy.deepcopy(b)
        try:
            spec, meta = pod_spec(b), template_meta(b)
        except KeyError:
            _subset(b, a)
            continue
        for c in spec.get("containers", []):
            for p in ("livenessProbe", "readinessProbe", "startupProbe"):
                if "httpGet" in c.get(p, {}) and "sidecar-proxy" in json.dumps(a):
                    del c[p]["httpGet"]
        if "sidecar-metrics" in json.dumps(a):
            for k in ("prometheus.io/port", "prometheus.io/path"):
                meta.get("annotations", {}).pop(k, None)
        _subset(b, a)


def test_json_in_json_out(tmp_path):
    src = load_all((DATA / "deployment.yaml").read_text())[0]
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(src, indent=2))
    out = inject("-f", path).stdout
    assert out.lstrip().startswith("{")
    assert json.loads(out) == load_all(golden("deployment").read_text())[0]


def test_output_file(tmp_path):
    out = tmp_path / "out.yaml"
    r = inject("-f", DATA / "cronjob.yaml", "-o", out)
    assert r.stdout == ""
    assert out.read_text() == golden("cronjob").read_text()


def _strip_injected(obj, before):
    """Removes from an injected object exactly what injection adds (entries named sidecar-*, the
    status annotations) and restores what it rewrites (prometheus.io annotations, HTTP probes
    from SIDECAR_APP_PROBES), so that what is left can be compared with the input."""
    obj, before = copy.deepcopy(obj), copy.deepcopy(before)
    try:
        spec, bspec = pod_spec(obj), pod_spec(before)
    except KeyError:
        return obj
    tmpl = obj if obj["kind"] == "Pod" else (
        obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob"
        else obj["spec"]["template"])
    btmpl = before if before["kind"] == "Pod" else (
        before["spec"]["jobTemplate"]["spec"]["template"] if before["kind"] == "CronJob"
        else before["spec"]["template"])
    meta, bmeta = tmpl.get("metadata", {}), btmpl.get("metadata", {})
    ann = meta.get("annotations", {})
    if "sidecar.dev/status" not in ann:
        return obj
    probes = {}
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        for e in c.get("env", []) if c["name"] == "sidecar-proxy" else []:
            if e["name"] == "SIDECAR_APP_PROBES":
                probes = json.loads(e["value"])
    for key in ("initContainers", "containers", "volumes"):
        if key in spec:
            spec[key] = [x for x in spec[key] if not x["name"].startswith("sidecar-")]
            if not spec[key] and key not in bspec:
                del spec[key]
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if "volumeMounts" in c:
            c["volumeMounts"] = [m for m in c["volumeMounts"]
                                 if not m["name"].startswith("sidecar-")]
        for p in ("livenessProbe", "readinessProbe", "startupProbe"):
            hg = c.get(p, {}).get("httpGet", {})
            if hg.get("path", "") in probes:
                orig = [b for b in bspec["containers"] if b["name"] == c["name"]][0]
                c[p]["httpGet"] = orig[p]["httpGet"]
    for c in spec.get("containers", []):
        orig = [b for b in bspec["containers"] if b["name"] == c["name"]][0]
        if "volumeMounts" in c and not c["volumeMounts"] and "volumeMounts" not in orig:
            del c["volumeMounts"]
    bann = bmeta.get("annotations", {})
    for k in ("sidecar.dev/status", "vault.hashicorp.com/agent-inject-status",
              "prometheus.io/port", "prometheus.io/path", "prometheus.io/scrape"):
        if k in bann:
            ann[k] = bann[k]
        else:
            ann.pop(k, None)
    if not ann and "annotations" not in bmeta:
        meta.pop("annotations", None)
    if not meta and "metadata" not in btmpl:
        tmpl.pop("metadata", None)
    return obj


@pytest.mark.parametrize("name", sorted(CASES))
def test_adds_nothing_else(name):
    """What is left of the output once the injected entries are taken out is the input, exactly:
    injection adds nothing it does not account for."""
    src, _ = CASES[name]
    before = load_all((DATA / src).read_text())
    after = load_all(golden(name).read_text())
    for b, a in zip(before, after):
        if b.get("kind") == "List":
            assert [_strip_injected(x, y) for x, y in zip(a["items"], b["items"])] == b["items"]
            assert dict(a, items=[]) == dict(b, items=[])
        else:
            assert _strip_injected(a, b) == b
