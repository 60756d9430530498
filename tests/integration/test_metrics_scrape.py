# SPDX-License-Identifier: Apache-2.0
"""`sidecar metrics`: sources (scrape targets, textfiles, its own metrics), failure isolation,
honor_labels, family merging, escaping, formats, and 100,000 series. A real Prometheus (one per
module) scrapes the sidecar and the samples are read back through its query API; `promtool check
metrics` validates our output."""
import gzip
import os
import socket
import threading
import time

import pytest

from conftest import free_port, http_get, wait_until
from metrics_util import FakeTarget, Prometheus, find, parse_samples, promtool_check

APP = (b"# HELP app_requests_total Requests served.\n"
       b"# TYPE app_requests_total counter\n"
       b'app_requests_total{code="200"} 1027\n'
       b'app_requests_total{code="500"} 3\n'
       b"# HELP app_latency_seconds Request latency.\n"
       b"# TYPE app_latency_seconds histogram\n"
       b'app_latency_seconds_bucket{le="0.1"} 5\n'
       b'app_latency_seconds_bucket{le="+Inf"} 7\n'
       b"app_latency_seconds_sum 1.5\n"
       b"app_latency_seconds_count 7\n")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    p = Prometheus(tmp_path_factory.mktemp("prometheus"))
    yield p
    p.stop()


@pytest.fixture
def targets():
    made = []

    def make(*args, **kw):
        t = FakeTarget(*args, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def start(sidecar_run, args=(), config=None, env=None):
    port = free_port()
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}", *args], config=config, env=env)
    sc.expo = f"http://127.0.0.1:{port}/metrics"
    sc.expo_addr = f"127.0.0.1:{port}"
    return sc


def scrape(sc, headers=None):
    status, body, hdrs = http_get(sc.expo, headers=headers)
    assert status == 200, body
    return body, hdrs


def test_sources_reach_prometheus(sidecar_run, targets, prometheus, tmp_path):
    app = targets(APP)
    tf = tmp_path / "tf"
    tf.mkdir()
    (tf / "job.prom").write_text("# HELP backup_last_success_timestamp_seconds Last backup.\n"
                                 "# TYPE backup_last_success_timestamp_seconds gauge\n"
                                 "backup_last_success_timestamp_seconds 1.7e9\n")
    sc = start(sidecar_run, ["--scrape", app.url, "--textfile-dir", str(tf), "--label",
                             "pod=web-0", "--label", "namespace=${NS}"], env={"NS": "shop"})
    body, hdrs = scrape(sc)
    assert hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    code, out = promtool_check(body)
    assert code == 0, out
    s = parse_samples(body.decode())
    assert find(s, "app_requests_total", code="200", pod="web-0", namespace="shop") == [1027]
    assert find(s, "backup_last_success_timestamp_seconds", pod="web-0") == [1.7e9]
    assert find(s, "sidecar_scrape_up", source=app.url) == [1]
    assert find(s, "sidecar_scrape_up", source="textfile:job.prom") == [1]
    assert find(s, "sidecar_scrape_up", source="sidecar") == [1]
    assert find(s, "sidecar_scrape_samples", source=app.url) == [6]
    assert find(s, "sidecar_build_info", role="metrics")
    # Prometheus scrapes us and keeps every label, the histogram included.
    prometheus.add_target(sc.expo_addr, {"test": "sources"})
    got = prometheus.wait_series('app_requests_total{test="sources"}', n=2)
    by_code = {r["metric"]["code"]: r for r in got}
    assert by_code["200"]["value"][1] == "1027"
    assert by_code["200"]["metric"]["pod"] == "web-0"
    assert by_code["200"]["metric"]["namespace"] == "shop"
    q = prometheus.wait_series(
        'histogram_quantile(0.5, app_latency_seconds_bucket{test="sources"})')
    assert float(q[0]["value"][1]) > 0
    up = prometheus.wait_series('sidecar_scrape_up{test="sources",source="textfile:job.prom"}')
    assert up[0]["value"][1] == "1"


def test_bad_targets_give_up_zero_while_others_serve(sidecar_run, targets):
    good = targets(APP)
    slow = targets(APP, delay=3)
    garbage = targets(b"this is { not metrics\n\x00\x01")
    err500 = targets(b"oops", status=500)
    refused = f"http://127.0.0.1:{free_port()}/metrics"
    sc = start(sidecar_run, ["--scrape-timeout", "500ms", "--scrape", good.url, "--scrape",
                             slow.url, "--scrape", garbage.url, "--scrape", err500.url,
                             "--scrape", refused])
    t0 = time.monotonic()
    body, _ = scrape(sc)
    assert time.monotonic() - t0 < 2.5, "a slow target must not hold the scrape past its timeout"
    code, out = promtool_check(body)
    assert code == 0, out
    s = parse_samples(body.decode())
    assert find(s, "sidecar_scrape_up", source=good.url) == [1]
    for bad in (slow.url, garbage.url, err500.url, refused):
        assert find(s, "sidecar_scrape_up", source=bad) == [0], bad
        assert find(s, "sidecar_scrape_samples", source=bad) == [0], bad
    assert find(s, "app_requests_total", code="200") == [1027]
    logs = sc.logs()
    assert "source malformed" in logs and "invalid value" in logs
    assert '"status":500' in logs
    assert "scrape failed" in logs


def test_concurrent_scrapes_cost_one_app_scrape(sidecar_run, targets):
    app = targets(APP, delay=0.5)
    sc = start(sidecar_run, ["--scrape", app.url, "--cache", "0s"])
    results = []

    def one():
        results.append(http_get(sc.expo)[0])

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 10
    assert app.hits == 1
    # With a cache, a later scrape within the window reuses the result too.
    sc2 = start(sidecar_run, ["--scrape", app.url, "--cache", "30s"])
    scrape(sc2)
    scrape(sc2)
    assert app.hits == 2


def test_textfile_in_place_vs_atomic_rename(sidecar_run, tmp_path):
    tf = tmp_path / "tf"
    tf.mkdir()
    sc = start(sidecar_run, ["--textfile-dir", str(tf), "--cache", "0s"])
    # Written in place and caught half-way: no final newline, so it is taken as incomplete.
    (tf / "batch.prom").write_text("# TYPE batch_rows gauge\nbatch_rows 10\nbatch_dur")
    s = parse_samples(scrape(sc)[0].decode())
    assert find(s, "sidecar_scrape_up", source="textfile:batch.prom") == [0]
    assert not find(s, "batch_rows")
    assert "partly written" in sc.logs()
    # A half-written line that happens to end a line is a malformed file: also up 0, not fatal.
    (tf / "batch.prom").write_text("# TYPE batch_rows gauge\nbatch_rows 10\nbatch_dur{\n")
    s = parse_samples(scrape(sc)[0].decode())
    assert find(s, "sidecar_scrape_up", source="textfile:batch.prom") == [0]
    # The convention: write under another name, then rename. The temp name is never read.
    tmp = tf / "batch.prom.tmp"
    tmp.write_text("# TYPE batch_rows gauge\nbatch_rows 20\n")
    s = parse_samples(scrape(sc)[0].decode())
    assert not any(src == "textfile:batch.prom.tmp" for (n, ls), _ in s.items()
                   for k, src in ls if k == "source")
    os.rename(tmp, tf / "batch.prom")
    s = parse_samples(scrape(sc)[0].decode())
    assert find(s, "sidecar_scrape_up", source="textfile:batch.prom") == [1]
    assert find(s, "batch_rows") == [20]
    # Many rewrites by rename while scraping: every scrape sees a whole file.
    stop = False

    def writer():
        i = 0
        while not stop:
            p = tf / "w.prom.tmp"
            p.write_text("".join(f"w_metric{{i=\"{k}\"}} {i}\n" for k in range(200)))
            os.rename(p, tf / "w.prom")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(30):
            s = parse_samples(scrape(sc)[0].decode())
            vals = find(s, "w_metric")
            assert len(vals) in (0, 200) and len(set(vals)) <= 1
    finally:
        stop = True
        t.join()


def test_honor_labels(sidecar_run, targets, tmp_path):
    app = targets(b'# TYPE jobs_total counter\njobs_total{pod="from-app",job="x"} 1\n')
    cfg = f"""
labels:
  pod: from-sidecar
targets:
  - url: {app.url}
    name: dishonored
  - url: {app.url}
    name: honored
    honor_labels: true
relabel_configs:
  - source_labels: [exported_pod]
    regex: (.+)
    target_label: was_exported
    replacement: yes-$1
"""
    sc = start(sidecar_run, config=cfg)
    body = scrape(sc)[0].decode()
    s = parse_samples(body)
    assert find(s, "jobs_total", pod="from-sidecar", exported_pod="from-app",
                was_exported="yes-from-app") == [1]
    assert find(s, "jobs_total", pod="from-app") == [1]
    assert not find(s, "jobs_total", pod="from-app", exported_pod="from-app")
    # The family is merged: one TYPE line for both sources.
    assert body.count("# TYPE jobs_total counter") == 1


def test_merging_families_and_type_conflicts(sidecar_run, targets):
    a = targets(b"# HELP shared_total From a.\n# TYPE shared_total counter\n"
                b'shared_total{src="a"} 1\n# TYPE clash gauge\nclash{src="a"} 1\n')
    b = targets(b"# HELP shared_total From b.\n# TYPE shared_total counter\n"
                b'shared_total{src="b"} 2\n# TYPE clash counter\nclash{src="b"} 2\n')
    sc = start(sidecar_run, ["--scrape", a.url, "--scrape", b.url])
    body = scrape(sc)[0].decode()
    code, out = promtool_check(body.encode())
    assert code in (0, 3) and "error" not in out.lower(), out
    lines = body.splitlines()
    i = lines.index("# TYPE shared_total counter")
    assert lines[i - 1] == "# HELP shared_total From a."
    assert lines[i + 1:i + 3] == ['shared_total{src="a"} 1', 'shared_total{src="b"} 2']
    assert body.count("# TYPE shared_total") == 1
    s = parse_samples(body)
    assert find(s, "clash") == [1]  # the later source's counter family was dropped
    assert "type conflict" in sc.logs()
    wait_until(lambda: find(parse_samples(sc.get("/metrics")[1].decode()),
                            "sidecar_metrics_family_conflicts_total") == [1])


ESCAPES = ["plain", "back\\slash", 'quo"te', "new\nline", "\\n not a newline", "utf-8 é€", ""]


def test_label_escaping_round_trip(sidecar_run, targets, prometheus):
    def esc(v):
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines = ["# HELP esc_value Help with \\\\ and \\n.", "# TYPE esc_value gauge"]
    lines += [f'esc_value{{i="{i}",v="{esc(v)}"}} {i}' for i, v in enumerate(ESCAPES)]
    app = targets(("\n".join(lines) + "\n").encode())
    sc = start(sidecar_run, ["--scrape", app.url])
    body = scrape(sc)[0].decode()
    assert "# HELP esc_value Help with \\\\ and \\n." in body
    s = parse_samples(body)
    for i, v in enumerate(ESCAPES):
        want = {"v": v} if v else {}  # an empty label value is the same as no label
        assert find(s, "esc_value", i=str(i), **want) == [i], v
    code, out = promtool_check(body.encode())
    assert code == 0, out
    prometheus.add_target(sc.expo_addr, {"test": "escapes"})
    got = prometheus.wait_series('esc_value{test="escapes"}', n=len(ESCAPES))
    seen = {r["metric"]["i"]: r["metric"].get("v", "") for r in got}
    assert seen == {str(i): v for i, v in enumerate(ESCAPES)}


def test_openmetrics_and_gzip(sidecar_run, targets):
    om = targets(b"# TYPE om_events counter\n# HELP om_events Events.\n"
                 b'om_events_total{k="v"} 4 # {trace_id="abc"} 1.0\nom_events_created 1.7e9\n'
                 b"# TYPE om_temp_celsius gauge\n# UNIT om_temp_celsius celsius\n"
                 b"om_temp_celsius 21.5\n# EOF\n",
                 content_type="application/openmetrics-text; version=1.0.0; charset=utf-8")
    sc = start(sidecar_run, ["--scrape", om.url])
    body, hdrs = scrape(sc)
    assert "application/openmetrics-text" in om.headers[-1]["Accept"]  # we ask targets for it
    text = body.decode()
    assert "# TYPE om_events_total counter\nom_events_total{k=\"v\"} 4\n" in text
    assert "om_events_created" not in text and "trace_id" not in text
    code, out = promtool_check(body)
    assert code in (0, 3) and "error" not in out.lower(), out
    body, hdrs = scrape(sc, {"Accept": "application/openmetrics-text;version=1.0.0,"
                                       "text/plain;version=0.0.4;q=0.5"})
    assert hdrs["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE om_events counter\n" in text and "om_events_total{k=\"v\"} 4\n" in text
    assert "# UNIT om_temp_celsius celsius\n" in text
    assert "# TYPE sidecar_scrape_up gauge" in text
    body, hdrs = scrape(sc, {"Accept-Encoding": "gzip"})
    assert hdrs["Content-Encoding"] == "gzip"
    plain = gzip.decompress(body).decode()
    assert "om_events_total" in plain and "# EOF" not in plain
    status, _, hdrs = http_get(sc.expo.replace("/metrics", "/nope"))
    assert status == 404
    status, _, hdrs = http_get(sc.expo, method="POST", data=b"x")
    assert status in (400, 405)


def test_hundred_thousand_series(sidecar_run, targets):
    n = 100_000
    big = ("# HELP big_series A wide family.\n# TYPE big_series gauge\n" + "".join(
        f'big_series{{shard="{i % 97}",id="series-{i}",zone="zone-{i % 7}"}} {i}\n'
        for i in range(n))).encode()
    app = targets(big)
    sc = start(sidecar_run, ["--scrape", app.url, "--scrape-timeout", "20s", "--label",
                             "pod=big-0", "--cache", "0s"])
    t0 = time.monotonic()
    body, _ = scrape(sc)
    elapsed = time.monotonic() - t0
    text = body.decode()
    assert text.count("\nbig_series{") == n
    i = 99991
    assert (f'big_series{{shard="{i % 97}",id="series-{i}",zone="zone-{i % 7}",pod="big-0"}} '
            f'{i}\n') in text
    s = parse_samples(text)
    assert find(s, "sidecar_scrape_samples", source=app.url) == [n]
    print(f"100k series: one scrape of our endpoint took {elapsed * 1000:.0f} ms "
          f"({len(body)} bytes)")
    # Over the series cap the source fails as a whole, with up 0, not a truncated output.
    sc2 = start(sidecar_run, ["--scrape", app.url, "--scrape-timeout", "20s"],
                config="max_series: 1000\n")
    s = parse_samples(scrape(sc2)[0].decode())
    assert find(s, "sidecar_scrape_up", source=app.url) == [0]
    assert not find(s, "big_series")
    assert "too many samples" in sc2.logs()


def test_check_rejects_bad_config(run_cli, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("relabel_configs:\n  - action: replace\n    regex: '(unclosed'\n"
                   "    target_label: x\n")
    r = run_cli("metrics", "-c", str(cfg), "--check")
    assert r.returncode == 1
    assert "regex" in r.stderr
    cfg.write_text("targets:\n  - url: ftp://x/metrics\n")
    r = run_cli("metrics", "-c", str(cfg), "--check")
    assert r.returncode == 1 and "targets[0].url" in r.stderr


def test_target_auth_and_config_dump(sidecar_run, targets):
    bearer = targets(APP)
    basic = targets(APP)
    sc = start(sidecar_run, config=f"""
targets:
  - url: {bearer.url}
    name: bearer
    bearer_token: s3cret-token
  - url: {basic.url}
    name: basic
    basic_user: scraper
    basic_password: pa55
""")
    s = parse_samples(scrape(sc)[0].decode())
    assert find(s, "sidecar_scrape_up", source="bearer") == [1]
    assert bearer.headers[-1]["Authorization"] == "Bearer s3cret-token"
    assert basic.headers[-1]["Authorization"] == "Basic c2NyYXBlcjpwYTU1"  # scraper:pa55
    status, body, _ = sc.get("/config")
    assert status == 200
    text = body.decode()
    assert "s3cret-token" not in text and "pa55" not in text and "<redacted>" in text


def raw(port, data, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_exposition_http_framing(sidecar_run, targets):
    n = 20_000  # several 256 KiB pieces
    app = targets(("# TYPE wide gauge\n" + "".join(
        f'wide{{i="{i}",pad="{"x" * 40}"}} {i}\n' for i in range(n))).encode())
    sc = start(sidecar_run, ["--scrape", app.url])
    port = int(sc.expo_addr.split(":")[1])
    # Two pipelined requests on one connection, both answered in order, chunked.
    out = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert out.count(b"Transfer-Encoding: chunked\r\n") == 2
    assert out.endswith(b"\r\n0\r\n\r\n")
    # HTTP/1.0: no chunked framing, the body ends at close.
    out = raw(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body.decode().count("\nwide{") == n
    # HEAD: the head only.
    out = raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")
    # gzip over several pieces decodes to the same text as the plain answer.
    plain = scrape(sc)[0]
    zipped, hdrs = scrape(sc, {"Accept-Encoding": "gzip"})
    assert hdrs["Content-Encoding"] == "gzip"
    assert parse_samples(gzip.decompress(zipped).decode()).keys() == \
        parse_samples(plain.decode()).keys()
