# SPDX-License-Identifier: Apache-2.0
"""`sidecar config` with a real etcd (Debian's etcd-server) through its v3 JSON gateway: a key
and a prefix, changes seen through the watch stream (the poll interval is an hour), and an etcd
outage that keeps the last good file."""
import json

import pytest

from config_peers import Etcd, metric
from conftest import wait_until


@pytest.fixture
def etcd(tmp_path):
    e = Etcd(tmp_path)
    yield e
    e.stop()


def test_etcd_key_watch(sidecar_run, etcd, tmp_path):
    etcd.put("/apps/web/config", json.dumps({"db": "db1", "pool": 5}))
    dest = tmp_path / "web.conf"
    cfg = f"""
interval: 1h
sources:
  - name: web
    url: etcd://127.0.0.1:{etcd.port}/apps/web/config
    dest: {dest}
    template: "db={{{{ .Data.db }}}} pool={{{{ .Data.pool }}}}\\n"
"""
    sc = sidecar_run("config", config=cfg)
    assert dest.read_text() == "db=db1 pool=5\n"
    for i in range(2, 6):
        etcd.put("/apps/web/config", json.dumps({"db": f"db{i}", "pool": 5}))
        wait_until(lambda: dest.read_text() == f"db=db{i} pool=5\n", timeout=5,
                   what=f"watch delivered db{i}")
    ok = metric(sc, "sidecar_config_fetch_total", {"source": "web", "result": "success"})
    assert ok == 5


def test_etcd_prefix_and_outage(sidecar_run, etcd, tmp_path):
    etcd.put("/feature/a", "on")
    etcd.put("/feature/b", "off")
    etcd.put("/featurex/no", "not under the prefix")
    dest = tmp_path / "features.json"
    sc = sidecar_run("config", ["--source", f"etcd://127.0.0.1:{etcd.port}/feature/?prefix",
                                "--dest", str(dest), "--interval", "1h", "--validate", "json",
                                "--retry-backoff", "50ms", "--max-backoff", "200ms"])
    assert json.loads(dest.read_text()) == {"a": "on", "b": "off"}
    etcd.put("/feature/c", "on")
    wait_until(lambda: json.loads(dest.read_text()) == {"a": "on", "b": "off", "c": "on"},
               timeout=5, what="watch saw the new key")
    etcd.delete("/feature/a")
    wait_until(lambda: json.loads(dest.read_text()) == {"b": "off", "c": "on"}, timeout=5,
               what="watch saw the delete")
    # Outage: etcd goes away, the last good file stays.
    etcd.stop()
    err = {"source": "features.json", "result": "error"}
    wait_until(lambda: (metric(sc, "sidecar_config_fetch_total", err) or 0) >= 1, timeout=10,
               what="errors counted")
    assert json.loads(dest.read_text()) == {"b": "off", "c": "on"}
    assert sc.get("/ready")[0] == 200
