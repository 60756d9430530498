# SPDX-License-Identifier: Apache-2.0
"""`sidecar metrics` pushing: to a real Pushgateway (grouping by job and instance, on an interval
and once more at SIGTERM so a Job's final values are not lost) and to a real Prometheus through
remote_write 1.0 (read back through its query API); retries against a fake receiver (named as a
fake: it scripts the status codes) for 5xx/429 with backoff and no retry on 4xx; the metadata each
batch carries, decoded by a fake receiver with the protobuf library; both pushers reached over
plain http:// by host name without loading libcurl or OpenSSL."""
import time

import pytest

from conftest import free_port, wait_until
from metrics_util import (FakeReceiver, FakeTarget, Prometheus, Pushgateway, decode_write_request,
                          env_without_proxies, mapped_libs)


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    p = Pushgateway(tmp_path_factory.mktemp("pushgw"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    p = Prometheus(tmp_path_factory.mktemp("prom-rw"))
    yield p
    p.stop()


def pushed_value(pushgateway, job, name):
    for g in pushgateway.groups():
        if g["labels"].get("job") != job:
            continue
        fam = g.get(name)
        if fam:
            return g["labels"], fam["metrics"]
    return None, None


def test_pushgateway_interval_and_final_push(sidecar_run, pushgateway, tmp_path):
    tf = tmp_path / "tf"
    tf.mkdir()
    (tf / "job.prom").write_text("# TYPE batch_processed_rows gauge\nbatch_processed_rows 1\n")
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}", "--textfile-dir",
                                 str(tf), "--cache", "0s"],
                     config=f"""
self_metrics: false
labels:
  pod: batch-7
pushgateway:
  url: {pushgateway.url}
  job: nightly
  instance: host/a
  interval: 300ms
""")
    wait_until(lambda: pushed_value(pushgateway, "nightly", "batch_processed_rows")[1],
               timeout=10, what="first push")
    labels, metrics = pushed_value(pushgateway, "nightly", "batch_processed_rows")
    assert labels["instance"] == "host/a"
    assert metrics[0]["labels"]["pod"] == "batch-7"
    assert metrics[0]["value"] == "1"
    # Health families travel too.
    _, up = pushed_value(pushgateway, "nightly", "sidecar_scrape_up")
    assert up and up[0]["value"] == "1"
    # The job's last value, written just before SIGTERM, arrives with the final push.
    tmp = tf / "job.prom.tmp"
    tmp.write_text("# TYPE batch_processed_rows gauge\nbatch_processed_rows 4242\n")
    tmp.rename(tf / "job.prom")
    # One SIGTERM (sc.stop sends it): a second one would cut the drain short, final push included.
    assert sc.stop() == 0
    _, metrics = pushed_value(pushgateway, "nightly", "batch_processed_rows")
    assert metrics[0]["value"] == "4242", sc.logs()


def test_remote_write_to_prometheus(sidecar_run, prometheus, tmp_path):
    tf = tmp_path / "tf"
    tf.mkdir()
    (tf / "rw.prom").write_text('# HELP rw_temperature_celsius T.\n# TYPE rw_temperature_celsius '
                                'gauge\nrw_temperature_celsius{room="a b \\"c\\""} 21.5\n')
    sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}", "--textfile-dir", str(tf),
                            "--label", "pod=rw-0", "--remote-write-url",
                            prometheus.url + "/api/v1/write"],
                config="remote_write:\n  interval: 500ms\n")
    got = prometheus.wait_series('rw_temperature_celsius{pod="rw-0"}')
    assert got[0]["metric"]["room"] == 'a b "c"'
    assert got[0]["value"][1] == "21.5"
    up = prometheus.wait_series('sidecar_scrape_up{pod="rw-0",source="textfile:rw.prom"}')
    assert up[0]["value"][1] == "1"


def test_remote_write_metadata(sidecar_run):
    """Every batch carries one MetricMetadata per family (type, HELP, UNIT), decoded here with the
    protobuf library from Prometheus's field numbers; Prometheus's own receiver accepts such
    batches (test_remote_write_to_prometheus)."""
    target = FakeTarget(b"# TYPE room_temperature_celsius gauge\n"
                        b"# UNIT room_temperature_celsius celsius\n"
                        b"# HELP room_temperature_celsius Temperature of the room.\n"
                        b"room_temperature_celsius 21.5\n"
                        b"# TYPE jobs counter\n# HELP jobs Jobs done.\njobs_total 3\n"
                        b"# TYPE rpc_seconds histogram\n"
                        b'rpc_seconds_bucket{le="1"} 1\nrpc_seconds_bucket{le="+Inf"} 2\n'
                        b"rpc_seconds_sum 1.5\nrpc_seconds_count 2\n"
                        b"# TYPE q summary\nq_sum 1\nq_count 1\n"
                        b"# EOF\n",
                        content_type="application/openmetrics-text; version=1.0.0; charset=utf-8")
    fake = FakeReceiver()
    try:
        sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}", "--scrape", target.url,
                                "--remote-write-url", fake.url], config="self_metrics: false\n")
        wait_until(lambda: fake.requests, timeout=20, what="a remote_write batch")
        req = decode_write_request(fake.requests[0][2])
        meta = {m.metric_family_name: m for m in req.metadata}
        T = type(req.metadata[0])
        t = meta["room_temperature_celsius"]
        assert (t.type, t.help, t.unit) == (T.GAUGE, "Temperature of the room.", "celsius")
        # As in the exposition: an OpenMetrics counter family is "jobs", its samples jobs_total.
        assert meta["jobs"].type == T.COUNTER and meta["jobs"].help == "Jobs done."
        assert meta["rpc_seconds"].type == T.HISTOGRAM
        assert meta["q"].type == T.SUMMARY
        assert meta["sidecar_scrape_up"].type == T.GAUGE
        names = {l.value for ts in req.timeseries for l in ts.labels if l.name == "__name__"}
        assert {"room_temperature_celsius", "jobs_total", "rpc_seconds_bucket"} <= names
        # One entry per family, and none for a family without samples.
        assert len(req.metadata) == len(meta)
    finally:
        fake.close()
        target.close()


def test_remote_write_retries_5xx_and_429_not_4xx(sidecar_run):
    fake = FakeReceiver([503, 429, 500])
    try:
        sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}"], config=f"""
remote_write:
  url: {fake.url}
  interval: 1h
  min_backoff: 100ms
  max_retries: 5
""")
        wait_until(lambda: len(fake.requests) >= 4, timeout=10, what="retries")
        times = [t for t, _, _ in fake.requests[:4]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps[0] >= 0.08 and gaps[1] >= 0.18 and gaps[2] >= 0.35, gaps  # doubling backoff
        _, hdrs, body = fake.requests[0]
        assert hdrs["Content-Encoding"] == "snappy"
        assert hdrs["Content-Type"] == "application/x-protobuf"
        assert hdrs["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        assert all(r[2] == body for r in fake.requests[:4])  # the same batch each time
        time.sleep(0.5)
        assert len(fake.requests) == 4
        status, text, _ = sc.get("/metrics")
        assert "sidecar_remote_write_retries_total 3" in text.decode()
        assert "sidecar_remote_write_batches_sent_total 1" in text.decode()
    finally:
        fake.close()

    fake = FakeReceiver([400, 400, 400])
    try:
        sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}"], config=f"""
remote_write:
  url: {fake.url}
  interval: 1h
  min_backoff: 50ms
""")
        wait_until(lambda: len(fake.requests) >= 1, timeout=10, what="first request")
        time.sleep(0.5)
        assert len(fake.requests) == 1  # a 4xx is final
        status, text, _ = sc.get("/metrics")
        assert "sidecar_remote_write_batches_failed_total 1" in text.decode()
        # At SIGTERM one more batch is sent (and refused: it is not retried either).
        assert sc.stop() == 0
        assert len(fake.requests) == 2
    finally:
        fake.close()


def test_pushers_over_plain_http_without_libcurl(sidecar_run, pushgateway, tmp_path):
    tf = tmp_path / "tf"
    tf.mkdir()
    (tf / "job.prom").write_text("# TYPE batch_rows gauge\nbatch_rows 7\n")
    receiver = FakeReceiver(statuses=[503])  # one retry, then accepted
    try:
        sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{free_port()}", "--textfile-dir",
                                     str(tf), "--cache", "0s"], config=f"""
self_metrics: false
pushgateway:
  url: http://localhost:{pushgateway.port}/
  job: plain
  interval: 300ms
remote_write:
  url: http://localhost:{receiver.port}/api/v1/write
  interval: 300ms
  min_backoff: 50ms
  basic_user: writer
  basic_password: pw
""", env=env_without_proxies())

        def pushed():
            for g in pushgateway.groups():
                if g["labels"].get("job") == "plain" and g.get("batch_rows"):
                    return g["batch_rows"]["metrics"][0]["value"] == "7"
            return False

        wait_until(pushed, timeout=10, what="push to the Pushgateway")
        wait_until(lambda: len(receiver.requests) >= 2, timeout=10, what="remote_write retry")
        _, headers, body = receiver.requests[-1]
        assert headers["Authorization"] == "Basic d3JpdGVyOnB3"  # writer:pw
        assert headers["Content-Encoding"] == "snappy"
        assert headers["Host"] == f"localhost:{receiver.port}"
        names = {lb.value for ts in decode_write_request(body).timeseries for lb in ts.labels
                 if lb.name == "__name__"}
        assert "batch_rows" in names
        assert "remote_write failed" in sc.logs()  # the 503, retried
        maps = mapped_libs(sc.proc.pid)
        assert "libcurl" not in maps and "libssl" not in maps
    finally:
        receiver.close()
