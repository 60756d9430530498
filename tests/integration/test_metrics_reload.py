# SPDX-License-Identifier: Apache-2.0
"""`sidecar metrics` reload (SIGHUP and POST /reload): targets, static labels and relabel rules
change under concurrent scrapes of the exposition endpoint without any response mixing two
configurations or breaking; the textfile directory, the StatsD listener and the push settings (a
real Pushgateway, a fake remote_write receiver) follow the new config; a malformed config is
refused with its position and the old one keeps running."""
import re
import signal
import socket
import threading
import time

import pytest

from conftest import free_port, http_get, wait_until
from metrics_util import FakeReceiver, FakeTarget, Pushgateway, decode_write_request, find, \
    parse_samples, promtool_check


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    p = Pushgateway(tmp_path_factory.mktemp("pushgw-reload"))
    yield p
    p.stop()


def scrape(url):
    status, body, _ = http_get(url, timeout=30)
    assert status == 200, body
    return body.decode()


def reloads(sc, result):
    _, text, _ = sc.get("/metrics")
    m = re.search(r'sidecar_reloads_total\{result="%s"\} (\d+)' % result, text.decode())
    return int(m.group(1)) if m else 0


def reload(sc, how):
    if how == "signal":
        before = reloads(sc, "success")
        sc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reloads(sc, "success") > before, timeout=20, what="SIGHUP reload")
    else:
        status, body, _ = http_get(sc.admin + "/reload", method="POST", timeout=20)
        assert status == 200, body


def test_reload_under_concurrent_scrapes(sidecar_run):
    a = FakeTarget(b"# TYPE a_total counter\na_total{x=\"1\"} 1\n", delay=0.05)
    b = FakeTarget(b"# TYPE b_total counter\nb_total{x=\"2\"} 2\n", delay=0.05)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    configs = {
        "a": (a, "one", "x"),
        "b": (b, "two", "y"),
    }

    def cfg(which):
        target, team, stage = configs[which]
        return f"""
listen: 127.0.0.1:{port}
cache: 0s
self_metrics: false
targets:
  - url: {target.url}
    name: app
labels:
  team: {team}
relabel_configs:
  - {{"target_label": "stage", "replacement": "{stage}"}}
"""

    sc = sidecar_run("metrics", config=cfg("a"))
    stop, errors, bodies, seen = threading.Event(), [], [], {"a": 0, "b": 0}

    def check(text):
        s = parse_samples(text)
        got_a, got_b = find(s, "a_total"), find(s, "b_total")
        if bool(got_a) == bool(got_b):
            return f"not exactly one configuration's target: {text!r}"
        which = "a" if got_a else "b"
        _, team, stage = configs[which]
        name = f"{which}_total"
        if find(s, name, team=team, stage=stage) != got_a + got_b:
            return f"labels of another configuration on {name}: {text!r}"
        if find(s, "sidecar_scrape_up", source="app", team=team) != [1.0]:
            return f"health of the target missing or down: {text!r}"
        seen[which] += 1
        return None

    def load():
        while not stop.is_set():
            try:
                text = scrape(url)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
                continue
            err = check(text)
            if err:
                errors.append(err)
            if len(bodies) < 50:
                bodies.append(text)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(8):
            which = "b" if i % 2 == 0 else "a"
            sc.config_path.write_text(cfg(which))
            reload(sc, "signal" if i % 2 else "post")
            # New scrapes use the new configuration once the reload has returned.
            text = scrape(url)
            assert check(text) is None, text
            assert f"{which}_total" in text
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert seen["a"] > 0 and seen["b"] > 0
    assert reloads(sc, "success") == 8
    for body in bodies[:5]:
        code, out = promtool_check(body.encode())
        assert code in (0, 3), out
    a.close()
    b.close()


def statsd_send(port, line):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(line.encode(), ("127.0.0.1", port))


def test_reload_textfiles_statsd_and_pushers(sidecar_run, pushgateway, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "one.prom").write_text("from_dir_one 1\n")
    (d2 / "two.prom").write_text("from_dir_two 2\n")
    rw1, rw2 = FakeReceiver(), FakeReceiver()
    port, sd1, sd2 = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}/metrics"

    def cfg(d, sd, job, rw):
        return f"""
listen: 127.0.0.1:{port}
cache: 0s
textfile_dir: {d}
statsd:
  listen: 127.0.0.1:{sd}
pushgateway:
  url: {pushgateway.url}
  job: {job}
  interval: 200ms
remote_write:
  url: {rw.url}
  interval: 200ms
"""

    sc = sidecar_run("metrics", config=cfg(d1, sd1, "reload_job_1", rw1))
    try:
        statsd_send(sd1, "first_counter:1|c")
        wait_until(lambda: "first_counter" in scrape(url), timeout=20, what="statsd on first port")
        wait_until(lambda: any(g["labels"].get("job") == "reload_job_1"
                               for g in pushgateway.groups()), timeout=20, what="first push")
        wait_until(lambda: rw1.requests, timeout=20, what="first remote_write")

        sc.config_path.write_text(cfg(d2, sd2, "reload_job_2", rw2))
        reload(sc, "post")
        text = scrape(url)
        assert "from_dir_two 2" in text and "from_dir_one" not in text
        statsd_send(sd2, "second_counter:1|c")
        wait_until(lambda: "second_counter" in scrape(url), timeout=20,
                   what="statsd on the new port")
        wait_until(lambda: any(g["labels"].get("job") == "reload_job_2"
                               for g in pushgateway.groups()), timeout=20, what="push, new job")
        wait_until(lambda: rw2.requests, timeout=20, what="remote_write to the new receiver")
        n1 = len(rw1.requests)
        time.sleep(0.6)  # three intervals: nothing more may go to the old receiver
        assert len(rw1.requests) <= n1 + 1  # at most the batch that was in flight
        # The same address with other buckets keeps the listener and its counters.
        sc.config_path.write_text(cfg(d2, sd2, "reload_job_2", rw2).replace(
            "statsd:\n", "statsd:\n  buckets: [0.5, 1]\n"))
        reload(sc, "signal")
        statsd_send(sd2, "lat:700|ms")
        wait_until(lambda: find(parse_samples(scrape(url)), "lat_bucket", le="1") == [1.0],
                   timeout=20, what="histogram with the new buckets")
        assert find(parse_samples(scrape(url)), "second_counter_total") == [1.0]
        assert sc.stop() == 0
    finally:
        rw1.close()
        rw2.close()
    # The final push at SIGTERM went to the new group.
    for g in pushgateway.groups():
        if g["labels"].get("job") == "reload_job_2":
            assert "from_dir_two" in g
    _, _, body = rw2.requests[-1]
    names = {l.value for ts in decode_write_request(body).timeseries for l in ts.labels
             if l.name == "__name__"}
    assert "from_dir_two" in names and "from_dir_one" not in names


def test_rejected_reload_keeps_the_old_config(sidecar_run):
    target = FakeTarget(b"app_up 1\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    good = f"""
listen: 127.0.0.1:{port}
cache: 0s
targets:
  - url: {target.url}
labels:
  team: old
"""
    sc = sidecar_run("metrics", config=good)
    assert find(parse_samples(scrape(url)), "app_up", team="old") == [1.0]
    bad = [
        # A type error: the loader names the file, line and column.
        (good.replace("cache: 0s", "cache: banana"), r":3:8: "),
        # A regex PCRE2 refuses, in a target's own rules.
        (good.replace("labels:", "    metric_relabel_configs:\n"
                                 "      - {\"source_labels\": [\"a\"], \"regex\": \"(\"}\n"
                                 "labels:"), r"targets\[0\]\.metric_relabel_configs\[0\]"),
        # The exposition address is bound once.
        (good.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"), r"listen"),
        # A StatsD address that cannot be bound.
        (good + "statsd:\n  listen: 192.0.2.1:9125\n", r"statsd\.listen"),
    ]
    for i, (text, want) in enumerate(bad):
        sc.config_path.write_text(text.replace("team: old", "team: new"))
        status, body, _ = http_get(sc.admin + "/reload", method="POST", timeout=20)
        assert status != 200, body
        assert re.search(want, body.decode()), body
        if i == 0:
            assert str(sc.config_path) + ":" in body.decode()
        assert find(parse_samples(scrape(url)), "app_up", team="old") == [1.0]
    assert reloads(sc, "failure") == len(bad)
    sc.config_path.write_text(good.replace("team: old", "team: new"))
    reload(sc, "post")
    assert find(parse_samples(scrape(url)), "app_up", team="new") == [1.0]
    target.close()
