# SPDX-License-Identifier: Apache-2.0
"""`sidecar logs` shutdown: SIGTERM reads every tailed file to its end, ships it, waits for the
acknowledgements within drain_timeout, commits positions and exits 0. What cannot be shipped in
time stays uncommitted and is shipped by the next run. Each test counts lines written against
lines received."""
import collections
import json

from conftest import wait_until
from logs_util import (FakeHTTPSink, Writer, backend, file_output,  # noqa: F401 (a fixture)
                       logs_config, read_lines)


def start(sidecar_run, tmp_path, outputs, **kw):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    kw.setdefault("drain_timeout", "180s")  # generous: sanitizer builds on a loaded machine
    cfg = logs_config([str(d / "*.log")], outputs, db=str(tmp_path / "pos.db"), **kw)
    return sidecar_run("logs", config=cfg), d


def committed(tmp_path):
    return int((tmp_path / "pos.db").read_text().splitlines()[1].split()[2])


def http_lines(sink):
    return [json.loads(x)["message"].encode() for b in sink.bodies() for x in b.splitlines()]


def test_sigterm_right_after_a_burst_ships_every_line_file(sidecar_run, tmp_path):
    out = tmp_path / "out.log"
    sc, d = start(sidecar_run, tmp_path, [file_output(out)])
    w = Writer(d / "app.log", 300000)
    w.run()
    # The last line has no newline yet: the drain ships it too (the writer is gone).
    with open(d / "app.log", "ab") as f:
        f.write(b"last line without newline")
    assert sc.stop(timeout=240) == 0
    got = read_lines(out)
    print(f"drain (file): written={w.n + 1} received={len(got)}")
    assert got == w.expected() + [b"last line without newline"]
    assert committed(tmp_path) == (d / "app.log").stat().st_size
    assert "drain cut short" not in sc.logs()


def test_sigterm_right_after_a_burst_ships_every_line_http(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    out = {"type": "http", "url": sink.url, "batch_wait": "1h", "batch_count": 2000}
    sc, d = start(sidecar_run, tmp_path, [out])
    w1 = Writer(d / "a.log", 100000, prefix="a")
    w1.run()
    # A file created just before the signal, possibly not yet seen by the tailer.
    w2 = Writer(d / "b.log", 50000, prefix="b")
    w2.run()
    assert sc.stop(timeout=240) == 0
    got = http_lines(sink)
    print(f"drain (http): written={w1.n + w2.n} received={len(got)}")
    assert collections.Counter(got) == collections.Counter(w1.expected() + w2.expected())


def test_drain_timeout_commits_only_what_was_acknowledged(sidecar_run, tmp_path, backend):
    sink = backend(FakeHTTPSink)
    sink.delay = 0.4
    out = {"type": "http", "url": sink.url, "batch_wait": "1h", "batch_count": 1000,
           "buffer_limit": "64KiB", "retry_initial": "50ms", "retry_max": "200ms"}
    sc, d = start(sidecar_run, tmp_path, [out], drain_timeout="1500ms")
    w = Writer(d / "app.log", 100000)
    w.run()
    assert sc.stop(timeout=60) == 0
    assert "drain cut short" in sc.logs()
    first = http_lines(sink)
    data = (d / "app.log").read_bytes()
    off = committed(tmp_path)
    assert off < len(data), "the slow backend cannot take 100,000 lines in 1.5 s"
    assert data[:off].endswith(b"\n") or off == 0
    shipped_before = data[:off].split(b"\n")[:-1] if off else []
    print(f"drain cut short: written={w.n} received={len(first)} committed_lines="
          f"{len(shipped_before)}")
    # Positions cover acknowledged lines only: every committed line reached the backend.
    assert set(shipped_before) <= set(first)
    sink.delay = 0.0
    sc2, _ = start(sidecar_run, tmp_path, [dict(out, batch_wait="50ms", buffer_limit="8MiB")])
    wait_until(lambda: set(http_lines(sink)) >= set(w.expected()), timeout=120,
               what="every line after the restart")
    got = http_lines(sink)
    print(f"after restart: written={w.n} received={len(got)} unique={len(set(got))}")
    assert set(got) == set(w.expected())
    # Lines before the committed offset are not sent again.
    assert collections.Counter(got)[shipped_before[-1]] == 1 if shipped_before else True
