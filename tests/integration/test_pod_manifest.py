# SPDX-License-Identifier: Apache-2.0
"""`sidecar pod check`: the manifest subset. Unsupported fields are rejected with their position and
their path in the manifest, never silently ignored; a Deployment's or Job's template is accepted."""
import textwrap


def write(tmp_path, text, name="pod.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_valid_pod(run_cli, tmp_path):
    path = write(tmp_path, """\
        apiVersion: v1
        kind: Pod
        metadata: {name: web, labels: {app: web}}
        spec:
          initContainers:
          - name: proxy
            image: example/proxy
            restartPolicy: Always
            command: [sleep, "100"]
          containers:
          - name: app
            command: [sleep, "100"]
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 0, r.stderr
    assert 'valid pod "web" (1 init containers, 1 containers)' in r.stdout


def test_unsupported_field_rejected_with_its_path(run_cli, tmp_path):
    path = write(tmp_path, """\
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: a
            command: [sleep, "1"]
          - name: b
            command: [sleep, "1"]
            stdin: true
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert f"{path}:10:5: unknown key \"stdin\"" in r.stderr, r.stderr
    assert "(at spec.containers[1].stdin)" in r.stderr, r.stderr


def test_nested_unsupported_field(run_cli, tmp_path):
    path = write(tmp_path, """\
        kind: Pod
        spec:
          containers:
          - name: a
            command: [sleep, "1"]
            livenessProbe:
              grpc: {port: 5000}
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert "(at spec.containers[0].livenessProbe.grpc)" in r.stderr, r.stderr


def test_restart_policy_rules(run_cli, tmp_path):
    path = write(tmp_path, """\
        kind: Pod
        spec:
          initContainers:
          - {name: i, command: ["true"], restartPolicy: Never}
          containers:
          - {name: a, command: ["true"]}
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert "spec.initContainers[0]: restartPolicy \"Never\" is not allowed" in r.stderr
    path = write(tmp_path, """\
        kind: Pod
        spec:
          containers:
          - {name: a, command: ["true"], restartPolicy: Always}
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert "spec.containers[0]: restartPolicy is allowed only on init containers" in r.stderr


def test_deployment_and_job_templates(run_cli, tmp_path):
    path = write(tmp_path, """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
              - name: app
                command: [sleep, "100"]
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 0, r.stderr
    assert 'valid pod "web"' in r.stdout
    path = write(tmp_path, """\
        apiVersion: batch/v1
        kind: Job
        metadata: {name: batch}
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: app
                command: ["true"]
                volumeMounts: [{name: missing, mountPath: /data}]
        """)
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    want = "spec.containers[0].volumeMounts[0]: volume \"missing\" is not in spec.volumes"
    assert want in r.stderr
    assert "(in spec.template)" in r.stderr


def test_other_kinds_and_missing_command(run_cli, tmp_path):
    path = write(tmp_path, "kind: Service\nspec: {}\n")
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert "unknown key" in r.stderr or "not supported" in r.stderr
    path = write(tmp_path, "kind: Pod\nspec:\n  containers:\n  - {name: a, image: nginx}\n")
    r = run_cli("pod", "check", path)
    assert r.returncode == 1
    assert "command is required" in r.stderr


def test_usage_errors(run_cli, tmp_path):
    r = run_cli("pod", "run")
    assert r.returncode == 1
    assert "a manifest is required" in r.stderr
    r = run_cli("pod", "frobnicate", "x.yaml")
    assert r.returncode != 0
    r = run_cli("pod", "run", "a.yaml", "b.yaml")
    assert r.returncode == 2
    r = run_cli("pod", "--help")
    assert r.returncode == 0
    assert "sidecar pod run FILE" in r.stdout
