# SPDX-License-Identifier: Apache-2.0
"""`sidecar logs` outputs against fakes of the real backends (FakeHTTPSink, FakeLoki,
FakeElasticsearch: see logs_util.py), plus drain and outage behaviour. Each test counts lines
written against lines received."""
import collections
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from urllib.parse import urlencode

from conftest import BIN, http_get, memory_env, wait_until
from fake_elasticsearch import FakeElasticsearch
from fake_loki import LOKI_PROTO, FakeLoki
from logs_util import (FakeHTTPSink, Writer, backend, file_output,  # noqa: F401 (a fixture)
                       logs_config, metric, read_lines, rss_kib)


@pytest.fixture(scope="module")
def loki_pb(tmp_path_factory):
    """Loki's push.proto compiled with protoc at test time."""
    d = tmp_path_factory.mktemp("proto")
    (d / "push.proto").write_text(LOKI_PROTO)
    subprocess.run(["protoc", f"-I{d}", "-I/usr/include", f"--python_out={d}", "push.proto"],
                   check=True, cwd=d)
    sys.path.insert(0, str(d))
    try:
        return importlib.import_module("push_pb2")
    finally:
        sys.path.remove(str(d))


def start(sidecar_run, tmp_path, outputs, env=None, **kw):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    cfg = logs_config([str(d / "*.log")], outputs, db=str(tmp_path / "pos.db"), **kw)
    return sidecar_run("logs", config=cfg, env=env), d


def http_out(url, **kw):
    o = {"type": "http", "url": url, "batch_wait": "50ms", "retry_initial": "50ms",
         "retry_max": "500ms"}
    o.update(kw)
    return o


def test_http_ndjson_gzip_byte_for_byte(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sc, d = start(sidecar_run, tmp_path, [http_out(sink.url + "/ingest", gzip=True)],
                  parser="json")
    lines = [json.dumps({"i": i, "msg": f"m{i}"}, separators=(",", ":")).encode()
             for i in range(5000)]
    (d / "app.log").write_bytes(b"\n".join(lines) + b"\n")
    wait_until(lambda: sum(b.count(b"\n") for b in sink.bodies()) >= 5000, timeout=20)
    # Byte for byte per batch; batches in flight together may arrive in any order.
    body = b"".join(sorted(sink.bodies(), key=lambda b: json.loads(b.split(b"\n", 1)[0])["i"]))
    nl = body.count(b"\n")
    print(f"http ndjson: written=5000 received={nl}")
    assert body == b"\n".join(lines) + b"\n"
    path, headers, _ = sink.requests[0]
    assert path == "/ingest" and headers["Content-Type"] == "application/x-ndjson"
    assert headers["Content-Encoding"] == "gzip"


def test_http_json_array(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sc, d = start(sidecar_run, tmp_path,
                  [http_out(sink.url, format="json_array", batch_count=100)])
    (d / "app.log").write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    wait_until(lambda: sum(len(json.loads(b)) for b in sink.bodies()) >= 1000, timeout=20)
    # Each body is one batch, in order; batches in flight together may arrive in any order.
    bodies = [[e["message"] for e in json.loads(b)] for b in sink.bodies()]
    assert all(x == sorted(x, key=lambda m: int(m.split()[1])) for x in bodies)
    got = sorted((m for x in bodies for m in x), key=lambda m: int(m.split()[1]))
    assert got == [f"line {i}" for i in range(1000)]
    assert all(len(x) <= 100 for x in bodies)


def loki_lines(loki):
    return loki.lines()


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_loki_push(sidecar_run, tmp_path, backend, loki_pb, encoding):
    loki = backend(FakeLoki, loki_pb)
    loki.throttle = 2  # the first two pushes get 429 and are retried
    out = {"type": "loki", "url": loki.url, "loki_encoding": encoding, "batch_wait": "50ms",
           "retry_initial": "50ms", "label_fields": ["level"], "batch_count": 500}
    sc, d = start(sidecar_run, tmp_path, [out], parser="json", labels={"app": "demo"})
    lines = [json.dumps({"level": ["info", "warn"][i % 2], "n": i}, separators=(",", ":"))
             for i in range(3000)]
    (d / "app.log").write_text("\n".join(lines) + "\n")
    wait_until(lambda: len(loki.lines()) >= 3000, timeout=20, what="loki lines")
    time.sleep(0.2)
    # Read back through the query API, as one would from a real Loki.
    status, body, _ = http_get(loki.url + "/loki/api/v1/query_range?" + urlencode(
        {"query": '{app="demo"}', "limit": 100000}))
    assert status == 200
    got = [v[1] for s in json.loads(body)["data"]["result"] for v in s["values"]]
    print(f"loki {encoding}: written=3000 received={len(got)} rejected={loki.rejected}")
    assert collections.Counter(got) == collections.Counter(lines)
    assert not loki.rejected
    keys = {dict(k)["level"] for k in loki.streams}
    assert keys == {"info", "warn"} and all(dict(k)["app"] == "demo" for k in loki.streams)
    assert metric(sc, "sidecar_logs_retries_total", {"output": "loki"}) >= 2
    assert metric(sc, "sidecar_logs_lines_shipped_total", {"output": "loki"}) == 3000


def test_loki_out_of_order_timestamps_sorted_per_stream(sidecar_run, tmp_path, backend,
                                                          loki_pb):
    loki = backend(FakeLoki, loki_pb)
    out = {"type": "loki", "url": loki.url, "batch_wait": "300ms"}
    sc, d = start(sidecar_run, tmp_path, [out], parser="json", time_key="t",
                  time_format="unix", labels={"app": "demo"})
    ts = [1700000005, 1700000001, 1700000003, 1700000002, 1700000004]
    (d / "app.log").write_text("".join(json.dumps({"t": t, "m": str(t)}) + "\n" for t in ts))
    wait_until(lambda: len(loki.lines()) >= 5, timeout=10)
    assert not loki.rejected
    assert [e[0] for e in loki.entries()] == sorted(t * 10**9 for t in ts)


@pytest.mark.parametrize("encoding,as_number", [("json", False), ("protobuf", False),
                                               ("protobuf", True)])
def test_loki_nanosecond_times_exact(sidecar_run, tmp_path, backend, loki_pb, encoding,
                                     as_number):
    # Every digit of a time survives the push: seconds and nanoseconds (leading zeros, nines,
    # times in different seconds), in the order written, whether the time is a JSON string or a
    # JSON number (19 digits: more than a double holds).
    loki = backend(FakeLoki, loki_pb)
    out = {"type": "loki", "url": loki.url, "loki_encoding": encoding, "batch_wait": "100ms"}
    sc, d = start(sidecar_run, tmp_path, [out], parser="json", time_key="t",
                  time_format="unix_ns", labels={"app": "demo"})
    base = 1796608800 * 10**9
    nanos = [0, 1, 9, 10, 99999999, 100000000, 123456789, 900000001, 999999999]
    ts = [base + k * 10**9 + n for k in range(3) for n in nanos]
    (d / "app.log").write_text("".join(json.dumps({"t": t if as_number else str(t),
                                                   "m": str(i)}) + "\n"
                                       for i, t in enumerate(ts)))
    wait_until(lambda: len(loki.lines()) >= len(ts), timeout=10, what="loki lines")
    assert not loki.rejected
    assert [e[0] for e in loki.entries()] == ts


def test_elasticsearch_partial_failures(sidecar_run, tmp_path, backend):
    es = backend(FakeElasticsearch)

    def status(doc, attempt):
        n = int(doc["message"].split()[1])
        if n % 10 == 3:
            return 400  # mapping error: dropped, counted, logged
        if n % 10 == 7 and attempt < 3:
            return 429  # retried alone until it succeeds
        return 201

    es.item_status = status
    out = {"type": "elasticsearch", "url": es.url, "index": "app-logs-%Y.%m.%d",
           "batch_wait": "50ms", "retry_initial": "50ms"}
    sc, d = start(sidecar_run, tmp_path, [out])
    (d / "app.log").write_bytes(b"".join(b"line %d\n" % i for i in range(2000)))
    wait_until(lambda: metric(sc, "sidecar_logs_lines_shipped_total",
                              {"output": "elasticsearch"}) >= 1800, timeout=20)
    got = collections.Counter(doc["message"] for _, doc in es.docs)
    expected = [f"line {i}" for i in range(2000) if i % 10 != 3]
    print(f"elasticsearch: written=2000 received={len(got)} dropped(400)=200")
    assert got == collections.Counter(expected)  # each exactly once: only failed items retried
    assert all(idx.startswith("app-logs-20") for idx, _ in es.docs)
    assert metric(sc, "sidecar_logs_dropped_total",
                  {"output": "elasticsearch", "reason": "rejected"}) == 200
    assert "mapper_parsing_exception" in sc.logs()
    assert all("@timestamp" in doc for _, doc in es.docs)


def test_backend_down_then_back_nothing_lost_rss_bounded(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.fail_status = 503
    # Every retry uploads its batch again through a buffer allocated for the request.
    sc, d = start(sidecar_run, tmp_path,
                  [http_out(sink.url, buffer_limit="1MiB", batch_count=2000)], env=memory_env())
    w = Writer(d / "app.log", 400000, size=100)  # ~40 MB backlog
    w.run()
    peak = 0
    t_end = time.monotonic() + 30  # the backend stays down for 30 s (issue 6)
    while time.monotonic() < t_end:
        peak = max(peak, rss_kib(sc.proc.pid))
        time.sleep(0.1)
    assert metric(sc, "sidecar_logs_queue_bytes", {"output": "http"}) <= 1.1 * (1 << 20)
    sink.fail_status = None
    wait_until(lambda: sum(b.count(b"\n") for b in sink.bodies()) >= w.n, timeout=60)
    got = [json.loads(x)["message"].encode() for b in sink.bodies() for x in b.splitlines()]
    print(f"backend down: written={w.n} received={len(got)} peak_rss={peak} KiB")
    # Several batches go out at once after the outage: each arrives whole, in any order.
    assert sorted(got) == w.expected()
    # Sanitizer builds keep freed memory in quarantine: allow them more.
    limit = 96 * 1024 if "asan" in BIN else 32 * 1024
    assert peak < limit, f"RSS grew to {peak} KiB with a 40 MB backlog"
    assert metric(sc, "sidecar_logs_retries_total", {"output": "http"}) > 0


def test_sigterm_flushes_queues_and_commits(sidecar_run, tmp_path):
    out = tmp_path / "out.log"
    sc, d = start(sidecar_run, tmp_path, [file_output(out, batch_wait="1h", batch_count=100000)])
    w = Writer(d / "app.log", 10000)
    w.run()
    wait_until(lambda: metric(sc, "sidecar_logs_lines_read_total") == w.n)
    assert read_lines(out) == []  # still batched
    assert sc.stop() == 0
    assert read_lines(out) == w.expected()
    db = (tmp_path / "pos.db").read_text().splitlines()
    assert int(db[1].split()[2]) == (d / "app.log").stat().st_size


def test_retry_limit_dead_letter(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.fail_status = 500
    dl = tmp_path / "dead.ndjson"
    sc, d = start(sidecar_run, tmp_path,
                  [http_out(sink.url, max_retries=2, dead_letter=str(dl))])
    (d / "app.log").write_bytes(b"a\nb\n")
    wait_until(lambda: dl.exists() and dl.read_bytes().count(b"\n") == 2, timeout=10)
    assert dl.read_bytes() == b'{"message":"a"}\n{"message":"b"}\n'
    assert metric(sc, "sidecar_logs_dropped_total",
                  {"output": "http", "reason": "retries_exhausted"}) == 2


def test_metrics_names_and_promtool(sidecar_run, tmp_path):
    sc, d = start(sidecar_run, tmp_path, [file_output(tmp_path / "o.log")])
    (d / "a.log").write_bytes(b"x\n")
    wait_until(lambda: metric(sc, "sidecar_logs_lines_shipped_total", {"output": "file"}) == 1)
    status, body, _ = sc.get("/metrics")
    text = body.decode()
    for name in ["sidecar_logs_lines_read_total", "sidecar_logs_lines_shipped_total",
                 "sidecar_logs_bytes_shipped_total", "sidecar_logs_retries_total",
                 "sidecar_logs_dropped_total", "sidecar_logs_parse_errors_total",
                 "sidecar_logs_queue_bytes", "sidecar_logs_files_watched"]:
        assert f"# TYPE {name} " in text, name
    promtool = shutil.which("promtool")
    assert promtool
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    status, body, _ = sc.get("/config")
    assert status == 200 and json.loads(body)


def test_flags_common_case(sidecar_run, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    out = tmp_path / "o.log"
    sc = sidecar_run("logs", args=["--path", str(d / "*.log"), "--parser", "json",
                                   "--label", "app=demo", "--output", f"file={out}",
                                   "--db", str(tmp_path / "p.db")])
    (d / "a.log").write_bytes(b'{"k":"v"}\n')
    wait_until(lambda: read_lines(out) == [b'{"k":"v"}'], timeout=10)


def test_stdin_input_until_eof(tmp_path):
    from conftest import BIN, free_port
    out = tmp_path / "o.log"
    lines = [b"stdin line %d" % i for i in range(20000)]
    p = subprocess.Popen([BIN, "logs", "--admin", f"127.0.0.1:{free_port()}", "--stdin",
                          "--output", f"file={out}"], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.stdin.write(b"\n".join(lines) + b"\nlast without newline")
        p.stdin.close()
        assert p.wait(timeout=30) == 0  # end of stdin with no paths: drain and exit 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    got = [json.loads(x)["message"].encode() for x in read_lines(out)]
    assert got == lines + [b"last without newline"]


def test_spool_keeps_reading_through_outage_and_survives_kill9(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.fail_status = 503
    spool = tmp_path / "http.spool"
    out = http_out(sink.url, buffer_limit="64KiB", batch_count=500, spool=str(spool),
                   spool_limit="64MiB")
    sc, d = start(sidecar_run, tmp_path, [out])
    w = Writer(d / "app.log", 50000)
    w.run()
    # The input is not paused: everything is read, made durable in the spool, and committed.
    wait_until(lambda: metric(sc, "sidecar_logs_lines_read_total") == w.n, timeout=30)
    size = (d / "app.log").stat().st_size
    wait_until(lambda: int((tmp_path / "pos.db").read_text().splitlines()[1].split()[2]) == size,
               timeout=10, what="positions committed past spooled data")
    assert metric(sc, "sidecar_logs_queue_bytes", {"output": "http"}) <= 70 * 1024
    os.kill(sc.proc.pid, signal.SIGKILL)
    sc.proc.wait()
    sc.log.close()
    (d / "app.log").unlink()  # rotated away for good: only the spool has the lines now
    sink.fail_status = None
    sc2, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: sum(b.count(b"\n") for b in sink.bodies()) >= w.n, timeout=30)
    got = [json.loads(x)["message"].encode() for b in sink.bodies() for x in b.splitlines()]
    print(f"spool: written={w.n} received={len(got)} unique={len(set(got))}")
    assert got == w.expected()  # in order, nothing lost, no duplicates
    wait_until(lambda: spool.stat().st_size == 16, timeout=10, what="spool emptied")


@pytest.mark.parametrize("before,after", [("json", "protobuf"), ("protobuf", "json")])
def test_loki_spool_survives_an_encoding_change(sidecar_run, tmp_path, backend, loki_pb, before,
                                                after):
    # A batch keeps a Loki line as a JSON string for loki_encoding json and as its bytes for
    # protobuf; batches spooled under one encoding are sent right under the other after a restart.
    loki = backend(FakeLoki, loki_pb)
    loki.fail_status = 503
    spool = tmp_path / "loki.spool"

    def out(enc):
        return {"type": "loki", "url": loki.url, "loki_encoding": enc, "batch_wait": "50ms",
                "retry_initial": "50ms", "retry_max": "500ms", "buffer_limit": "16KiB",
                "batch_count": 100, "spool": str(spool), "spool_limit": "16MiB"}

    # Escapes, non-ASCII (as \u escapes in half of the input) and a tab in the messages; each
    # line sent is the record's JSON.
    lines = [json.dumps({"n": i, "msg": f"m\t\"{i}\" \\ é 日本 \U0001F600"}, ensure_ascii=i % 2 == 0)
             for i in range(2000)]
    sc, d = start(sidecar_run, tmp_path, [out(before)], parser="json", labels={"app": "demo"})
    (d / "app.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    wait_until(lambda: metric(sc, "sidecar_logs_lines_read_total") == len(lines), timeout=30)
    wait_until(lambda: spool.exists() and spool.stat().st_size > 16, timeout=10, what="spooled")
    size = (d / "app.log").stat().st_size
    wait_until(lambda: int((tmp_path / "pos.db").read_text().splitlines()[1].split()[2]) == size,
               timeout=10, what="positions committed past spooled data")
    os.kill(sc.proc.pid, signal.SIGKILL)
    sc.proc.wait()
    sc.log.close()
    (d / "app.log").unlink()  # committed past every line: only the spool has them now
    loki.fail_status = None
    sc2, _ = start(sidecar_run, tmp_path, [out(after)], parser="json", labels={"app": "demo"})
    wait_until(lambda: spool.stat().st_size == 16, timeout=30, what="spool emptied")
    got = loki.lines()
    want = [json.dumps(json.loads(x), ensure_ascii=False, separators=(",", ":")) for x in lines]
    print(f"loki spool {before}->{after}: written={len(lines)} received={len(got)}")
    assert sorted(got) == sorted(want)  # every line once, intact
    assert not loki.rejected
