# SPDX-License-Identifier: Apache-2.0
"""Relabeling checked against Prometheus itself: one real Prometheus scrapes the same fake target
twice, directly with metric_relabel_configs and through `sidecar metrics` configured with the very
same rules (the examples of Prometheus's relabel_config documentation: drop by name, keep, replace
with groups, labelmap, labeldrop, labelkeep, hashmod). The series both paths store must be equal,
labels and values included. Per-target rules are checked the same way: a target's
relabel_configs (target relabeling: __address__, __metrics_path__, the static labels) and
metric_relabel_configs against the same rules in a Prometheus scrape config, and their order
against the global rules."""
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


TARGET2 = (b"# TYPE app_requests_total counter\n"
           b'app_requests_total{x="1",team="app"} 5\n'
           b"# TYPE dropme gauge\ndropme 1\n")

TARGET_RULES = [
    {"source_labels": ["__address__"], "target_label": "addr"},
    {"target_label": "__metrics_path__", "replacement": "/custom/path"},
    {"source_labels": ["team"], "regex": "core", "target_label": "team", "replacement": "core-a"},
]

METRIC_RULES = [
    {"source_labels": ["__name__"], "regex": "dropme", "action": "drop"},
    {"source_labels": ["x"], "regex": "(.*)", "target_label": "x", "replacement": "t$1"},
]


def yaml_list(rules, indent, sidecar=False):
    pad = " " * indent
    text = "\n".join(f"{pad}- {json.dumps(r)}" for r in rules)
    return text.replace("$", "$$") if sidecar else text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    target = FakeTarget(TARGET)
    target2 = FakeTarget(TARGET2)
    extra = f"""  - job_name: per_target
    static_configs:
      - targets: ['127.0.0.1:{target2.port}']
        labels: {{team: core}}
    relabel_configs:
{yaml_list(TARGET_RULES, 6)}
    metric_relabel_configs:
{yaml_list(METRIC_RULES, 6)}
  - job_name: direct
    file_sd_configs:
      - files: ['@DIRECT@']
        refresh_interval: 1s
    metric_relabel_configs:
{rules_yaml(6)}
"""
    prom = Prometheus(tmp_path_factory.mktemp("prom-relabel"), extra_jobs=extra)
    prom.add_target(f"127.0.0.1:{target.port}", {"test": "relabel"}, direct=True)
    yield prom, target, target2
    prom.stop()
    target.close()
    target2.close()


def series(result, drop=("job", "instance", "test")):
    return {(frozenset((k, v) for k, v in r["metric"].items() if k not in drop), r["value"][1])
            for r in result}


def test_relabel_rules_match_prometheus(sidecar_run, setup):
    prom, target, _ = setup
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


def test_per_target_rules_match_prometheus(sidecar_run, setup):
    """A target's relabel_configs and metric_relabel_configs give the series Prometheus gives for
    the same rules in a scrape config; the honor_labels clash (the target's own "team") is
    resolved the same way (exported_team)."""
    prom, _, target2 = setup
    port = free_port()
    cfg = f"""
labels:
  team: core
targets:
  - url: {target2.url}
    name: t2
    relabel_configs:
{yaml_list(TARGET_RULES, 6, sidecar=True)}
    metric_relabel_configs:
{yaml_list(METRIC_RULES, 6, sidecar=True)}
"""
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}"], config=cfg)
    s = parse_samples(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode())
    assert find(s, "app_requests_total", team="core-a", exported_team="app", x="t1",
                addr=f"127.0.0.1:{target2.port}") == [5]
    assert not find(s, "dropme")
    assert "/custom/path" in target2.paths
    # Other sources keep the static labels as they are.
    assert find(s, "sidecar_scrape_up", source="t2", team="core") == [1]

    prom.add_target(f"127.0.0.1:{port}", {"test": "per_target"})
    direct = prom.wait_series('{job="per_target",__name__=~"app_requests_total|dropme"}')
    via = prom.wait_series('{job="sidecar",test="per_target",__name__=~"app_requests_total|dropme"}')
    assert series(via) == series(direct)
    sc.stop()


def test_per_target_rules_order_and_target_drop(sidecar_run):
    """Order: static labels, the target's metric_relabel_configs, then the global rules. A target
    that its relabel_configs drop is never scraped; the others are."""
    a = FakeTarget(b'm{x="1"} 1\n')
    b = FakeTarget(b'n{x="2"} 2\n')
    port = free_port()
    cfg = f"""
labels:
  pod: p-0
targets:
  - url: {a.url}
    name: a
    metric_relabel_configs:
      - {{"source_labels": ["x", "pod"], "regex": "(.*);(.*)", "target_label": "x",
          "replacement": "t$${{1}}-$$2"}}
  - url: {b.url}
    name: b
    relabel_configs:
      - {{"source_labels": ["__address__"], "regex": "nowhere:.*", "action": "keep"}}
relabel_configs:
  - {{"source_labels": ["x"], "regex": "t(.*)", "target_label": "x", "replacement": "g$$1"}}
"""
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}"], config=cfg)
    s = parse_samples(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode())
    assert find(s, "m", x="g1-p-0", pod="p-0") == [1]
    assert not find(s, "n") and b.hits == 0
    assert find(s, "sidecar_scrape_up", source="a") == [1]
    assert not find(s, "sidecar_scrape_up", source="b")
    sc.stop()
    a.close()
    b.close()
