# SPDX-License-Identifier: Apache-2.0
"""Helpers for the injector tests: run `sidecar inject`, read YAML as Kubernetes reads it
(PyYAML's YAML 1.1, like kubectl's converter), and validate objects against Kubernetes' OpenAPI
schemas with the npm package kubernetes-models (tests/node, installed by scripts/deps.sh)."""
import json
import subprocess

import yaml

from conftest import BIN, ROOT

DATA = ROOT / "tests" / "integration" / "data" / "inject"
NODE_DIR = ROOT / "tests" / "node"


def inject(*args, stdin=None, check=True):
    """Runs `sidecar inject ARGS` and returns the CompletedProcess (text)."""
    r = subprocess.run([BIN, "inject", *map(str, args)], input=stdin, capture_output=True,
                       text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def load_all(text):
    """Returns the non-empty documents of a YAML stream."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


def validate(objs):
    """Validates <objs> with kubernetes-models; returns the validator's report lines."""
    if not (NODE_DIR / "node_modules" / "kubernetes-models").is_dir():
        raise AssertionError("tests/node/node_modules is missing: run scripts/deps.sh")
    r = subprocess.run(["node", str(NODE_DIR / "validate.mjs")], input=json.dumps(objs),
                       capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
    assert r.returncode == 0, f"schema validation failed:\n{r.stdout}{r.stderr}"
    return r.stdout.splitlines()


def pod_spec(obj):
    """The pod template's spec of a workload (or the Pod's own spec)."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def template_meta(obj):
    kind = obj["kind"]
    if kind == "Pod":
        return obj["metadata"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"].setdefault("metadata", {})
    return obj["spec"]["template"].setdefault("metadata", {})


def names(items):
    return [c["name"] for c in items or []]


def minimal_pod(annotations=None, containers=None, **spec):
    """A one-container Pod manifest as YAML text."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": annotations or {}},
           "spec": {"containers": containers or [{"name": "app", "image": "app:1",
                                                  "ports": [{"containerPort": 8080}]}],
                    **spec}}
    return yaml.safe_dump(pod, sort_keys=False)
