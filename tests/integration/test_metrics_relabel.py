# SPDX-License-Identifier: Apache-2.0
"""Relabeling checked against Prometheus itself: one real Prometheus scrapes the same fake target
twice, directly with metric_relabel_configs and through `sidecar metrics` configured with the very
same rules (the examples of Prometheus's relabel_config documentation: drop by name, keep, replace
with groups, labelmap, labeldrop, labelkeep, hashmod). The series both paths store must be equal,
labels and values included."""
import json

import pytest

from conftest import free_port, http_get
from metrics_util import FakeTarget, Prometheus, find, parse_samples

TARGET = (b"# HELP http_requests_total Requests.\n"
          b"# TYPE http_requests_total counter\n"
          b'http_requests_total{method="GET",code="200",path="/api/v1/users",k8s_label_team="a",'
          b'pod_template_hash="abc"} 11\n'
          b'http_requests_total{method="POST",code="201",path="/api/v2/orders",'
          b'k8s_label_team="b",k8s_label_tier="web"} 22\n'
          b'http_requests_total{method="GET",code="503",path="/health"} 33\n'
          b'http_requests_total{method="PUT",code="404",path="/x/y"} 44\n'
          b"# TYPE go_goroutines gauge\ngo_goroutines 10\n"
          b'# TYPE expensive_metric_bytes gauge\nexpensive_metric_bytes{a="1"} 1\n'
          b'# TYPE app_info gauge\napp_info{version="1.2",k8s_label_team="c"} 1\n'
          b"# TYPE other_metric gauge\nother_metric 5\n")

RULES = [
    {"source_labels": ["__name__"], "regex": "go_.*|expensive_metric_.*", "action": "drop"},
    {"source_labels": ["__name__"], "regex": "http_.*|app_.*", "action": "keep"},
    {"source_labels": ["code"], "regex": "5..", "action": "drop"},
    {"source_labels": ["path"], "regex": "/api/v(\\d+)/.*", "target_label": "api_version",
     "replacement": "v$1"},
    {"source_labels": ["method", "code"], "separator": ":", "regex": "(GET|POST):(\\d)\\d\\d",
     "target_label": "kind", "replacement": "${1}_${2}xx"},
    {"regex": "k8s_label_(.+)", "action": "labelmap", "replacement": "team_$1"},
    {"regex": "k8s_label_.*|pod_template_hash", "action": "labeldrop"},
    {"source_labels": ["__name__", "path"], "modulus": 8, "target_label": "shard",
     "action": "hashmod"},
    {"regex": "__name__|job|instance|test|method|code|path|api_version|kind|shard|team_.*|version",
     "action": "labelkeep"},
]


def rules_yaml(indent, sidecar=False):
    # JSON is YAML: one rule per line keeps the regexes exact. The sidecar expands ${ENV} in
    # every config value, so a literal "$" (as in "${1}") is written "$$" there.
    pad = " " * indent
    text = "\n".join(f"{pad}- {json.dumps(r)}" for r in RULES)
    return text.replace("$", "$$") if sidecar else text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    target = FakeTarget(TARGET)
    extra = f"""  - job_name: direct
    file_sd_configs:
      - files: ['@DIRECT@']
        refresh_interval: 1s
    metric_relabel_configs:
{rules_yaml(6)}
"""
    prom = Prometheus(tmp_path_factory.mktemp("prom-relabel"), extra_jobs=extra)
    prom.add_target(f"127.0.0.1:{target.port}", {"test": "relabel"}, direct=True)
    yield prom, target
    prom.stop()
    target.close()


def series(result, drop=("job", "instance", "test")):
    return {(frozenset((k, v) for k, v in r["metric"].items() if k not in drop), r["value"][1])
            for r in result}


def test_relabel_rules_match_prometheus(sidecar_run, setup):
    prom, target = setup
    port = free_port()
    cfg = f"targets:\n  - url: {target.url}\nrelabel_configs:\n{rules_yaml(2, sidecar=True)}\n"
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}"], config=cfg)
    status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    s = parse_samples(body.decode())
    assert find(s, "http_requests_total", api_version="v1", kind="GET_2xx", team_team="a") == [11]
    assert not find(s, "go_goroutines") and not find(s, "other_metric")
    assert not find(s, "http_requests_total", code="503")
    # Our own health families are not subject to the rules, as Prometheus's "up" is not.
    assert find(s, "sidecar_scrape_up", source=target.url) == [1]

    prom.add_target(f"127.0.0.1:{port}", {"test": "relabel"})
    names = '__name__=~"http_requests_total|app_info|go_goroutines|other_metric|expensive.*"'
    direct = prom.wait_series(f'{{job="direct",{names}}}', n=4)
    via = prom.wait_series(f'{{job="sidecar",test="relabel",{names}}}', n=4)
    assert series(via) == series(direct)
    shards = {r["metric"]["path"]: r["metric"]["shard"] for r in direct if "path" in r["metric"]}
    assert len(shards) == 3 and all(0 <= int(v) < 8 for v in shards.values())
    sc.stop()
