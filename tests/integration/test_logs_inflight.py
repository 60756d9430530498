# SPDX-License-Identifier: Apache-2.0
"""Several batches in flight per output: acknowledgements out of order, a failed batch in the
middle, kill -9 with requests running, 429 with Retry-After and adaptive concurrency, a slow sink,
Loki's per-stream order and Elasticsearch's rejected items, against fakes on loopback.

The invariant checked throughout: the positions database never points past a record whose batch
the backend has not accepted, so a restart re-ships everything that might be lost (duplicates
allowed and counted, nothing missing)."""
import collections
import json
import os
import signal
import threading
import time

from fake_elasticsearch import FakeElasticsearch
from fake_loki import FakeLoki
from logs_util import FakeHTTPSink, backend, metric, rss_kib  # noqa: F401 (a fixture)
from test_logs_outputs import http_out as http_out_fast
from test_logs_outputs import loki_pb  # noqa: F401 (a fixture)
from test_logs_outputs import start as start_logs

from conftest import wait_until

LINE = 61  # bytes of a line written by write_lines, newline included


def write_lines(path, n, first=0, prefix="line"):
    lines = [f"{prefix}-{i:08d} ".ljust(LINE - 1, "x") for i in range(first, first + n)]
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in lines))
    return lines


def start(sidecar_run, tmp_path, outputs, **kw):
    """The sidecar on tmp_path/in, committing positions after every acknowledgement."""
    return start_logs(sidecar_run, tmp_path, outputs, commit_interval="0s", **kw)


def http_out(url, **kw):
    return http_out_fast(url, **{"retry_initial": "100ms", "retry_max": "2s", **kw})


def input_lines(tmp_path, n):
    """Writes <n> numbered lines into tmp_path/in/app.log before the sidecar starts."""
    d = tmp_path / "in"
    d.mkdir()
    return write_lines(d / "app.log", n)


def committed(tmp_path):
    """The offset the positions database holds for the one input file (0 before the first)."""
    try:
        rows = (tmp_path / "pos.db").read_text().splitlines()[1:]
    except FileNotFoundError:
        return 0
    return int(rows[0].split()[2]) if rows else 0


def messages(sink):
    return [json.loads(x)["message"] for b in sink.bodies() for x in b.splitlines()]


def test_out_of_order_acks_commit_only_the_delivered_prefix(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    release = threading.Event()

    def inject(n, body):
        if n == 0:
            release.wait(20)  # the first batch is held until the test has looked
        return (0.2 if n % 2 else 0.0), None, {}

    sink.inject = inject
    out = http_out(sink.url, batch_count=100, max_in_flight=8, adaptive_concurrency=False)
    lines = input_lines(tmp_path, 2000)
    sc, _ = start(sidecar_run, tmp_path, [out])
    # Later batches are acknowledged while the first is held: nothing may be committed.
    wait_until(lambda: len(messages(sink)) >= 1000, timeout=20, what="later batches delivered")
    assert sink.max_active > 1
    assert metric(sc, "sidecar_logs_output_in_flight", {"output": "http"}) >= 1
    time.sleep(0.3)
    assert committed(tmp_path) == 0, "positions moved past a batch still in flight"
    release.set()
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=20,
               what="every position committed once the first batch is through")
    got = messages(sink)
    assert sorted(got) == lines and len(got) == len(lines)
    print(f"out of order: requests={sink.posts} max_in_flight_seen={sink.max_active}")


def test_failed_batch_in_the_middle_holds_commits_not_sending(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    fails = collections.Counter()

    def inject(n, body):
        if b"line-00000500 " in body and fails["x"] < 3:
            fails["x"] += 1
            return 0.0, 503, {}
        return 0.05, None, {}

    sink.inject = inject
    out = http_out(sink.url, batch_count=100, max_in_flight=4, adaptive_concurrency=False,
                   retry_initial="400ms")
    lines = input_lines(tmp_path, 3000)
    sc, _ = start(sidecar_run, tmp_path, [out])
    limit = 500 * LINE  # the failing batch starts at line 500
    checks = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pos = committed(tmp_path)  # read first: what is delivered afterwards cannot explain it
        if "line-00000500 ".ljust(LINE - 1, "x") in messages(sink):
            break
        assert pos <= limit, f"committed {pos} past the failing batch at {limit}"
        checks += 1
        time.sleep(0.05)
    # The batches behind the failing one were sent meanwhile, not held back.
    assert fails["x"] == 3
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=20)
    got = messages(sink)
    assert sorted(got) == lines
    assert metric(sc, "sidecar_logs_retries_total", {"output": "http"}) >= 3
    print(f"failed batch: checks={checks} requests={sink.posts}")


def test_later_batches_sent_while_one_waits_for_its_retry(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    order = []

    def inject(n, body):
        first = body.split(b"\n", 1)[0]
        order.append(json.loads(first)["message"][:13])
        if first.find(b"line-00000000") >= 0 and order.count("line-00000000") < 2:
            return 0.0, 503, {}
        return 0.0, None, {}

    sink.inject = inject
    out = http_out(sink.url, batch_count=100, max_in_flight=4, adaptive_concurrency=False,
                   retry_initial="1s", retry_max="1s")
    lines = input_lines(tmp_path, 1000)
    start(sidecar_run, tmp_path, [out])
    wait_until(lambda: sorted(messages(sink)) == lines, timeout=20)
    # The first batch failed once; the ones behind it went out before its retry.
    first = [i for i, x in enumerate(order) if x == "line-00000000"]
    assert len(first) == 2 and first[1] - first[0] >= 5, order


def test_kill9_with_batches_in_flight_reships_from_committed(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.delay = 0.3
    out = http_out(sink.url, batch_count=100, max_in_flight=8, adaptive_concurrency=False,
                   buffer_limit="256KiB")
    lines = input_lines(tmp_path, 6000)
    sc, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: committed(tmp_path) > 0, timeout=20, what="a first commit")
    wait_until(lambda: metric(sc, "sidecar_logs_output_in_flight", {"output": "http"}) >= 4,
               timeout=10, what="several batches in flight")
    os.kill(sc.proc.pid, signal.SIGKILL)
    sc.proc.wait()
    sc.log.close()
    pos = committed(tmp_path) // LINE
    time.sleep(0.5)  # requests the killed process had sent may still be answered
    first_run = len(messages(sink))
    sink.delay = 0
    start(sidecar_run, tmp_path, [out])
    wait_until(lambda: set(messages(sink)) >= set(lines), timeout=30, what="every line")
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=10)
    got = messages(sink)
    dups = len(got) - len(set(got))
    # What the first run delivered past the committed position came again, once; that is
    # bounded by what was read but not committed (the queue's limit at ~80 bytes per encoded
    # line, plus the batches in flight).
    bound = (256 * 1024) // 80 + 8 * 100
    print(f"kill -9: committed_lines={pos} delivered_first_run={first_run} total={len(got)} "
          f"duplicates={dups} bound={bound}")
    assert set(got) == set(lines)
    assert sorted(got[:first_run])[:pos] == lines[:pos]
    assert dups == first_run - pos
    assert dups <= bound


def test_429_retry_after_backs_concurrency_off(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    throttle = threading.Event()
    rejected = {}
    accepted = {}
    lock = threading.Lock()

    def inject(n, body):
        key = body.split(b"\n", 1)[0]
        with lock:
            if throttle.is_set():
                rejected.setdefault(key, time.monotonic())
                return 0.0, 429, {"Retry-After": "1"}
            accepted.setdefault(key, time.monotonic())
        return 0.05, None, {}

    sink.inject = inject
    out = http_out(sink.url, batch_count=50, max_in_flight=16, retry_initial="10ms")
    lines = input_lines(tmp_path, 60000)
    sc, _ = start(sidecar_run, tmp_path, [out])

    def gauge():
        return metric(sc, "sidecar_logs_output_concurrency", {"output": "http"})

    assert gauge() == 1  # adaptive concurrency starts low
    wait_until(lambda: gauge() == 16, timeout=20, what="concurrency at max_in_flight")
    throttle.set()  # the backend is overloaded for a while: every request gets 429
    time.sleep(0.3)
    during = []
    for _ in range(10):
        during.append(gauge())
        time.sleep(0.05)
    throttle.clear()
    wait_until(lambda: len(set(messages(sink))) >= len(lines), timeout=60, what="every line")
    assert sorted(messages(sink)) == lines
    print(f"429: concurrency while throttled={during} rejected={len(rejected)}")
    assert max(during) < 16, "concurrency did not back off on 429"
    for key, t in rejected.items():
        assert accepted[key] - t >= 0.9, "retried before Retry-After"
    assert metric(sc, "sidecar_logs_retries_total", {"output": "http"}) >= len(rejected)


def test_slow_sink_backpressure_bounded_memory(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.delay = 0.2
    out = http_out(sink.url, batch_count=500, buffer_limit="1MiB", max_in_flight=4)
    lines = input_lines(tmp_path, 200000)  # 12 MB: far more than the queue may hold
    sc, _ = start(sidecar_run, tmp_path, [out])
    peak_rss = peak_queue = 0
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        peak_rss = max(peak_rss, rss_kib(sc.proc.pid))
        peak_queue = max(peak_queue, metric(sc, "sidecar_logs_queue_bytes", {"output": "http"}))
        time.sleep(0.1)
    print(f"slow sink: peak queue={peak_queue} peak rss={peak_rss} KiB "
          f"delivered={len(messages(sink))}")
    assert peak_queue <= 1.1 * (1 << 20)
    limit = 96 * 1024 if os.environ.get("SIDECAR_SANITIZED") else 40 * 1024
    assert peak_rss < limit
    assert len(messages(sink)) < len(lines)  # the sink was the limit
    sink.delay = 0
    wait_until(lambda: len(messages(sink)) >= len(lines), timeout=60)
    assert sorted(messages(sink)) == lines


def test_loki_streams_stay_in_order_with_batches_in_flight(sidecar_run, tmp_path, backend,
                                                           loki_pb):  # noqa: F811
    loki = backend(FakeLoki, loki_pb)
    loki.unordered_writes = False  # rejects out-of-order entries per stream
    failed = []

    def inject(n, body):
        # The first push of stream "a" fails twice; stream "b" must not wait for it.
        if b'"level":"a"' in body and b'"n":0}' in body.replace(b'\\"', b'"') and len(failed) < 2:
            failed.append(n)
            return 0.0, 503, {}
        return 0.1, None, {}

    loki.inject = inject
    out = {"type": "loki", "url": loki.url, "batch_wait": "50ms", "batch_count": 100,
           "label_fields": ["level"], "max_in_flight": 8, "adaptive_concurrency": False,
           "retry_initial": "300ms", "loki_encoding": "json", "ordered": True}
    d = tmp_path / "in"
    d.mkdir()
    # Blocks of 100 records per stream, so that each batch holds one stream.
    recs = [json.dumps({"level": "ab"[(i // 100) % 2], "n": i}, separators=(",", ":"))
            for i in range(2000)]
    (d / "app.log").write_text("".join(r + "\n" for r in recs))
    sc, _ = start(sidecar_run, tmp_path, [out], parser="json")
    wait_until(lambda: len(loki.lines()) >= len(recs), timeout=30, what="every entry")
    assert not loki.rejected, loki.rejected[:3]
    assert len(failed) == 2
    for key, vals in loki.streams.items():
        ts = [t for t, _ in vals]
        assert ts == sorted(ts)
        ns = [json.loads(v)["n"] for _, v in vals]
        assert ns == sorted(ns), f"stream {dict(key)} out of order"
    # Stream b's batches went out while stream a's first batch waited for its retries.
    assert loki.max_active > 1


def test_elasticsearch_rejected_items_go_to_dead_letter_with_reason(sidecar_run, tmp_path,
                                                                    backend):
    es = backend(FakeElasticsearch)

    def status(doc, attempt):
        n = int(doc["message"].split("-")[1].split()[0])
        if n % 10 == 3:
            return 400  # mapper_parsing_exception: never retried
        if n % 10 == 7 and attempt == 1:
            return 429  # es_rejected_execution_exception: retried alone
        return 201

    es.item_status = status
    dl = tmp_path / "dead.ndjson"
    out = {"type": "elasticsearch", "url": es.url, "batch_wait": "50ms", "batch_count": 50,
           "retry_initial": "50ms", "dead_letter": str(dl), "max_in_flight": 4}
    lines = input_lines(tmp_path, 500)
    sc, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: len(es.docs) >= 450, timeout=20, what="accepted documents")
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=10)
    stored = sorted(doc["message"] for _, doc in es.docs)
    assert stored == [x for x in lines if int(x[5:13]) % 10 != 3]
    dead = [json.loads(x) for x in dl.read_text().splitlines()]
    assert len(dead) == 50
    assert {x["status"] for x in dead} == {400}
    assert {x["type"] for x in dead} == {"mapper_parsing_exception"}
    assert all(x["reason"] and x["output"] == "elasticsearch" for x in dead)
    docs = sorted(json.loads(x["item"].splitlines()[1])["message"] for x in dead)
    assert docs == [x for x in lines if int(x[5:13]) % 10 == 3]
    assert metric(sc, "sidecar_logs_dropped_total",
                  {"output": "elasticsearch", "reason": "rejected"}) == 50


def loki_lines(loki):
    """The lines Loki stored, per stream in the order it accepted them."""
    return [line for _, line in loki.entries()]


def test_loki_default_sends_a_streams_batches_in_parallel(sidecar_run, tmp_path, backend):
    # By default (ordered: false, for a Loki that accepts out-of-order writes, as Loki does since
    # 2.4) one stream's batches go out several at once against a backend 200 ms away; every line
    # arrives once and positions are committed past all of them.
    loki = backend(FakeLoki)
    loki.inject = lambda n, body: (0.2, None, {})
    out = {"type": "loki", "url": loki.url, "batch_wait": "50ms", "batch_count": 100,
           "loki_encoding": "json"}
    lines = input_lines(tmp_path, 4000)
    sc, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: len(loki_lines(loki)) >= len(lines), timeout=30, what="every entry")
    assert not loki.rejected, loki.rejected[:3]
    assert sorted(loki_lines(loki)) == lines  # each line once
    assert loki.max_active > 1  # pushes of the one stream overlapped
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=10)
    assert metric(sc, "sidecar_logs_lines_shipped_total", {"output": "loki"}) == len(lines)


def test_loki_busy_stream_ships_its_backlog_in_one_push(sidecar_run, tmp_path, backend):
    # One stream, ordered, a backend 200 ms away: the batches that queue while a push runs go
    # out together in the next one (within max_push_bytes), in order, not one per round trip.
    loki = backend(FakeLoki)
    loki.unordered_writes = False
    sizes = []

    def inject(n, body):
        sizes.append(sum(len(s["values"]) for s in json.loads(body)["streams"]))
        return 0.2, None, {}

    loki.inject = inject
    out = {"type": "loki", "url": loki.url, "batch_wait": "50ms", "batch_count": 100,
           "loki_encoding": "json", "max_push_bytes": "64KiB", "ordered": True}
    lines = input_lines(tmp_path, 4000)  # 40 batches of about 10 KiB each
    sc, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: len(loki_lines(loki)) >= len(lines), timeout=30, what="every entry")
    assert not loki.rejected, loki.rejected[:3]
    assert loki_lines(loki) == lines  # one stream, in order, each line once
    assert loki.max_active == 1  # one push of the stream at a time
    # Pushes merged several batches, and none went over max_push_bytes (64 KiB: 6 batches).
    assert len(sizes) <= 40 // 3, sizes
    assert max(sizes) > 100 and max(sizes) <= 600, sizes
    wait_until(lambda: committed(tmp_path) == len(lines) * LINE, timeout=10)
    assert metric(sc, "sidecar_logs_lines_shipped_total", {"output": "loki"}) == len(lines)


def test_loki_merged_push_failed_then_killed_loses_nothing(sidecar_run, tmp_path, backend):
    # A merged push fails (503) and is retried whole; then one runs slowly and the sidecar is
    # killed with it in flight: nothing it held was committed, and the restart ships the rest.
    loki = backend(FakeLoki)
    loki.unordered_writes = False
    state = {"fails": 0, "slow": False, "failed": []}

    def inject(n, body):
        if n >= 1 and state["fails"] < 2:  # the second push, twice
            state["fails"] += 1
            state["failed"].append(sum(len(s["values"]) for s in json.loads(body)["streams"]))
            return 0.1, 503, {}
        if state["slow"] and sum(len(s["values"]) for s in json.loads(body)["streams"]) > 100:
            state["slow_merged"] = True
            return 3.0, None, {}
        return 0.1, None, {}

    loki.inject = inject
    out = {"type": "loki", "url": loki.url, "batch_wait": "50ms", "batch_count": 100,
           "loki_encoding": "json", "retry_initial": "200ms", "retry_max": "1s", "ordered": True}
    d = tmp_path / "in"
    d.mkdir()
    first = write_lines(d / "app.log", 2000)
    sc, _ = start(sidecar_run, tmp_path, [out])
    wait_until(lambda: len(loki_lines(loki)) >= len(first), timeout=30, what="every entry")
    assert state["fails"] == 2 and not loki.rejected, loki.rejected[:3]
    assert max(state["failed"]) > 100, state  # a merged push failed
    assert loki_lines(loki) == first
    wait_until(lambda: committed(tmp_path) == len(first) * LINE, timeout=10)
    state["slow"] = True
    more = write_lines(d / "app.log", 3000, first=2000)
    wait_until(lambda: state.get("slow_merged"), timeout=10, what="a slow merged push")
    time.sleep(0.5)
    delivered = len(loki_lines(loki))
    assert committed(tmp_path) <= delivered * LINE  # nothing of the merged push
    os.kill(sc.proc.pid, signal.SIGKILL)
    sc.proc.wait()
    sc.log.close()
    pos = committed(tmp_path) // LINE
    wait_until(lambda: loki.active == 0, timeout=10)
    state["slow"] = False
    start(sidecar_run, tmp_path, [out])
    wait_until(lambda: set(loki_lines(loki)) >= set(first + more), timeout=30, what="every line")
    got = loki_lines(loki)
    assert got[:pos] == (first + more)[:pos]  # everything committed had been delivered
    assert not loki.rejected, loki.rejected[:3]
