# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: cluster traffic policy against upstreams that misbehave on purpose. Circuit
breakers (max_requests, across workers too; max_connections; max_pending_requests against a full
accept queue) trip at exactly the configured count with 503 UO and recover, and their counts
survive a reload; an endpoint answering 503 five times in a row is ejected while its healthy
sibling takes the traffic, readmitted when the ejection time is up, and ejected for twice as long
the next time; a lone endpoint is never ejected; ejections and health results survive a reload
that leaves the cluster alone, and a changed cluster starts afresh; active health checks take an
endpoint out and bring it back (a bad status, a closed port, a timeout; with none left the answer
is 503 UH); the retry budget caps concurrent retries."""
import json
import socket
import threading
import time

import pytest
from conftest import free_port, http_get
from proxy_util import (Client, FakeUpstream, access_lines, get, metric, metrics, proxy_config,
                        respond, wait_for)


def config(port, endpoints, cluster_extra=None, route_extra=None, **extra):
    cluster = {"name": "c", "endpoints": endpoints}
    cluster.update(cluster_extra or {})
    route = {"name": "r", "cluster": "c", "retry_policy": {"num_retries": 0}}
    route.update(route_extra or {})
    return proxy_config([{"name": "l", "address": f"127.0.0.1:{port}", "routes": [route]}],
                        [cluster], **extra)


def last_access(sc, before):
    """The access-log line of the request made after <before> lines were written."""
    return access_lines(sc, at_least=before + 1)[before]


def log_events(sc, msg):
    out = []
    for line in sc.logs().splitlines():
        if line.startswith("{") and msg in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Gate:
    """An upstream whose answers wait until released; counts the requests it is holding."""

    def __init__(self):
        self.release = threading.Event()
        self.held = 0
        self.lock = threading.Lock()
        self.up = FakeUpstream(self.handler)

    def handler(self, up, conn, req):
        with self.lock:
            self.held += 1
        self.release.wait(30)
        return respond(conn, 200, b"released")


def send_async(port, results, path="/"):
    """Sends one GET on its own connection in a thread; appends the response to results."""
    def run():
        try:
            results.append(get(port, path))
        except Exception as e:  # noqa: BLE001 - reported by the assertions on results
            results.append(e)
    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("workers", [1, 2])
def test_proxy_breaker_max_requests_trips_and_recovers(sidecar_run, workers):
    # With two workers the limit still counts the cluster's requests on both together.
    g = Gate()
    port = free_port()
    sc = sidecar_run("proxy", ["--workers", str(workers)], config=config(
        port, [g.up.addr], {"circuit_breakers": {"max_requests": 2}}))
    results = []
    threads = [send_async(port, results) for _ in range(2)]
    assert wait_for(lambda: g.held == 2, timeout=15)
    n = len(access_lines(sc, 0))
    r = get(port, "/")
    assert r.status == 503 and b"overflow" in r.body
    line = last_access(sc, n)
    assert line["status"] == 503 and line["flags"] == "UO"
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    assert len(g.up.requests) == 2, "the refused request never reached the upstream"
    g.release.set()
    for t in threads:
        t.join(15)
    assert sorted(x.status for x in results) == [200, 200]
    # Recovered: the slots are free again.
    for _ in range(3):
        assert get(port, "/").status == 200
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    g.up.close()


def test_proxy_breaker_counts_survive_reload(sidecar_run):
    g = Gate()
    port = free_port()
    cb = {"circuit_breakers": {"max_requests": 2}}
    sc = sidecar_run("proxy", config=config(port, [g.up.addr], cb))
    results = []
    threads = [send_async(port, results) for _ in range(2)]
    assert wait_for(lambda: g.held == 2, timeout=15)
    # The two requests in flight on the old configuration still count against the new one.
    sc.config_path.write_text(config(port, [g.up.addr], cb, {"timeout": "20s"}))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert get(port, "/").status == 503
    g.release.set()
    for t in threads:
        t.join(15)
    assert sorted(x.status for x in results) == [200, 200]
    assert get(port, "/").status == 200
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    g.up.close()


def test_proxy_breaker_max_connections(sidecar_run):
    g = Gate()
    port = free_port()
    sc = sidecar_run("proxy", config=config(
        port, [g.up.addr], {"circuit_breakers": {"max_connections": 1}}))
    results = []
    t = send_async(port, results)
    assert wait_for(lambda: g.held == 1, timeout=15)
    # The only connection is busy and no second may open: fail fast, nothing queues.
    n = len(access_lines(sc, 0))
    r = get(port, "/")
    assert r.status == 503
    assert last_access(sc, n)["flags"] == "UO"
    g.release.set()
    t.join(15)
    assert results[0].status == 200
    # The pooled connection serves what follows.
    c = Client(port)
    for _ in range(3):
        assert c.request().status == 200
    c.close()
    assert g.up.connections == 1
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    g.up.close()


def test_proxy_breaker_max_pending_requests(sidecar_run):
    # A listener whose accept queue is full (backlog 0, one connection never accepted): further
    # connects hang, so a request stays pending while the proxy connects.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    addr = "127.0.0.1:%d" % blackhole.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", blackhole.getsockname()[1]))
    port = free_port()
    sc = sidecar_run("proxy", config=config(
        port, [addr], {"circuit_breakers": {"max_pending_requests": 1},
                       "outlier_detection": {"consecutive_5xx": 0},
                       "connect_timeout": "20s"}))
    results = []
    threads = [send_async(port, results) for _ in range(2)]
    # One request waits for its connection; the other may not wait too: 503 UO at once.
    assert wait_for(lambda: len(results) == 1, timeout=15)
    assert results[0].status == 503 and b"overflow" in results[0].body
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    flags = sorted(line["flags"] for line in access_lines(sc, at_least=1))
    assert flags == ["UO"]
    # The pending connect fails once nothing listens: the slot is free again.
    blackhole.close()
    for t in threads:
        t.join(30)
    assert sorted(r.status for r in results) == [502, 503]
    r = get(port, "/")
    assert r.status == 502, "no longer over the limit: a connect failure, not an overflow"
    assert metric(metrics(sc), "sidecar_upstream_rq_overflow_total", cluster="c") == 1
    filler.close()


def test_proxy_outlier_ejects_and_readmits(sidecar_run):
    bad = FakeUpstream(lambda up, conn, req: respond(conn, 503, b"bad", reason="Unavailable"))
    good = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"good"))
    port = free_port()
    sc = sidecar_run("proxy", config=config(
        port, [bad.addr, good.addr],
        {"outlier_detection": {"consecutive_5xx": 5, "base_ejection_time": "3s",
                               "interval": "60s"}}))
    c = Client(port)
    statuses = []
    t_before = None
    while len(bad.requests) < 5:
        if len(bad.requests) == 4:
            t_before = time.monotonic()
        statuses.append(c.request().status)
        assert len(statuses) <= 12
    assert statuses.count(503) == 5
    # Ejected: the healthy sibling takes everything while the ejection lasts.
    for _ in range(10):
        r = c.request()
        assert r.status == 200 and r.body == b"good"
    assert time.monotonic() - t_before < 2.5, "the machine was too slow for the 3 s window"
    assert len(bad.requests) == 5
    text = metrics(sc)
    assert metric(text, "sidecar_outlier_ejections_active", cluster="c") == 1
    assert metric(text, "sidecar_outlier_ejections_total", cluster="c") == 1
    ev = log_events(sc, "outlier detection ejected")
    assert len(ev) == 1 and ev[0]["ejection_ms"] == 3000 and ev[0]["ejections"] == 1
    assert ev[0]["endpoint"] == bad.addr
    # Readmitted when the time is up, not before.
    assert wait_for(lambda: metric(metrics(sc), "sidecar_outlier_ejections_active",
                                   cluster="c") == 0, timeout=20, interval=0.05)
    assert time.monotonic() - t_before >= 2.8
    n = len(bad.requests)
    for _ in range(4):
        c.request()
    assert len(bad.requests) > n, "the readmitted endpoint gets traffic again"
    # Five more in a row: ejected again, for twice the base time.
    for _ in range(12):
        c.request()
        if log_events(sc, "outlier detection ejected")[1:]:
            break
    ev = log_events(sc, "outlier detection ejected")
    assert len(ev) == 2 and ev[1]["ejections"] == 2 and ev[1]["ejection_ms"] == 6000
    assert metric(metrics(sc), "sidecar_outlier_ejections_total", cluster="c") == 2
    c.close()
    bad.close()
    good.close()


def test_proxy_outlier_lone_endpoint_never_ejected(sidecar_run):
    bad = FakeUpstream(lambda up, conn, req: respond(conn, 503, b"bad", reason="Unavailable"))
    port = free_port()
    sc = sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", bad.addr,
                               "--retries", "0"])
    for _ in range(12):
        assert get(port, "/").status == 503
    assert len(bad.requests) == 12, "50% of one endpoint is none: it keeps its traffic"
    assert (metric(metrics(sc), "sidecar_outlier_ejections_total", cluster="upstream") or 0) == 0
    bad.close()


def test_proxy_outlier_state_survives_reload(sidecar_run):
    bad = FakeUpstream(lambda up, conn, req: respond(conn, 503, b"bad", reason="Unavailable"))
    good = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"good"))
    port = free_port()
    od = {"outlier_detection": {"base_ejection_time": "60s"}}
    sc = sidecar_run("proxy", config=config(port, [bad.addr, good.addr], od))
    c = Client(port)
    while len(bad.requests) < 5:
        c.request()
    assert metric(metrics(sc), "sidecar_outlier_ejections_active", cluster="c") == 1
    # A reload that changes only the route keeps the cluster's state: still ejected.
    sc.config_path.write_text(config(port, [bad.addr, good.addr], od, {"timeout": "20s"}))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    c.close()
    c = Client(port)
    for _ in range(10):
        assert c.request().body == b"good"
    assert len(bad.requests) == 5
    text = metrics(sc)
    assert metric(text, "sidecar_outlier_ejections_active", cluster="c") == 1
    assert metric(text, "sidecar_outlier_ejections_total", cluster="c") == 1
    # A reload that changes the cluster's policy starts it afresh: the endpoint is back.
    od2 = {"outlier_detection": {"base_ejection_time": "60s", "consecutive_5xx": 7}}
    sc.config_path.write_text(config(port, [bad.addr, good.addr], od2))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    c.close()
    c = Client(port)
    for _ in range(4):
        c.request()
    assert len(bad.requests) > 5
    assert wait_for(lambda: metric(metrics(sc), "sidecar_outlier_ejections_active",
                                   cluster="c") == 0, timeout=10)
    c.close()
    bad.close()
    good.close()


class Service:
    """An upstream with a /healthz whose answer the test switches."""

    def __init__(self, name):
        self.name = name.encode()
        self.healthy = True
        self.checks = 0
        self.up = FakeUpstream(self.handler)

    def handler(self, up, conn, req):
        if req.target == "/healthz":
            self.checks += 1
            if self.healthy:
                return respond(conn, 200, b"ok")
            return respond(conn, 500, b"sick", reason="Internal Server Error")
        return respond(conn, 200, self.name)

    def traffic(self):
        return sum(1 for r in self.up.requests if r.target != "/healthz")


def test_proxy_health_checks_remove_and_readmit(sidecar_run):
    a, b = Service("A"), Service("B")
    port = free_port()
    hc = {"health_check": {"path": "/healthz", "interval": "100ms", "timeout": "2s",
                           "unhealthy_threshold": 2, "healthy_threshold": 2},
          "outlier_detection": {"consecutive_5xx": 0}}
    sc = sidecar_run("proxy", config=config(port, [a.up.addr, b.up.addr], hc))
    assert wait_for(lambda: a.checks >= 1 and b.checks >= 1, timeout=10)
    got = {get(port, "/").body for _ in range(6)}
    assert got == {b"A", b"B"}
    hreq = next(r for r in a.up.requests if r.target == "/healthz")
    assert hreq.method == "GET" and hreq.header("Host") == a.up.addr

    a.healthy = False
    assert wait_for(lambda: log_events(sc, "endpoint out of load balancing"), timeout=15)
    ev = log_events(sc, "endpoint out of load balancing")[0]
    assert ev["endpoint"] == a.up.addr and ev["reason"] == "status 500"
    assert metric(metrics(sc), "sidecar_upstream_endpoints_unhealthy", cluster="c") == 1
    n = a.traffic()
    for _ in range(10):
        assert get(port, "/").body == b"B"
    assert a.traffic() == n

    b.healthy = False
    assert wait_for(lambda: len(log_events(sc, "endpoint out of load balancing")) == 2,
                    timeout=15)
    n = len(access_lines(sc, 0))
    r = get(port, "/")
    assert r.status == 503
    assert last_access(sc, n)["flags"] == "UH"
    assert metric(metrics(sc), "sidecar_upstream_endpoints_unhealthy", cluster="c") == 2

    a.healthy = True
    assert wait_for(lambda: log_events(sc, "endpoint back in load balancing"), timeout=15)
    for _ in range(4):
        assert get(port, "/").body == b"A"
    b.healthy = True
    assert wait_for(lambda: len(log_events(sc, "endpoint back in load balancing")) == 2,
                    timeout=15)
    assert {get(port, "/").body for _ in range(6)} == {b"A", b"B"}
    assert metric(metrics(sc), "sidecar_upstream_endpoints_unhealthy", cluster="c") == 0
    a.up.close()
    b.up.close()


def test_proxy_health_state_survives_reload(sidecar_run):
    a, b = Service("A"), Service("B")
    a.healthy = False
    port = free_port()
    hc = {"health_check": {"path": "/healthz", "interval": "1s", "unhealthy_threshold": 1,
                           "healthy_threshold": 1},
          "outlier_detection": {"consecutive_5xx": 0}}
    sc = sidecar_run("proxy", config=config(port, [a.up.addr, b.up.addr], hc))
    assert wait_for(lambda: log_events(sc, "endpoint out of load balancing"), timeout=15)
    # A reload that leaves the cluster alone keeps A out at once (a fresh state would start it
    # healthy until its next check), and the checks go on.
    sc.config_path.write_text(config(port, [a.up.addr, b.up.addr], hc, {"timeout": "20s"}))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    for _ in range(6):
        assert get(port, "/").body == b"B"
    assert a.traffic() == 0
    checks = a.checks
    assert wait_for(lambda: a.checks > checks, timeout=15)
    a.healthy = True
    assert wait_for(lambda: log_events(sc, "endpoint back in load balancing"), timeout=15)
    assert {get(port, "/").body for _ in range(6)} == {b"A", b"B"}
    a.up.close()
    b.up.close()


def test_proxy_health_check_down_endpoint_and_timeout(sidecar_run):
    """A closed port and a server that never answers both fail their checks."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_addr = f"127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now
    stall_release = threading.Event()

    def stall(up, conn, req):
        stall_release.wait(30)
        return False

    staller = FakeUpstream(stall)
    good = Service("G")
    port = free_port()
    hc = {"health_check": {"path": "/healthz", "interval": "100ms", "timeout": "300ms",
                           "unhealthy_threshold": 1},
          "outlier_detection": {"consecutive_5xx": 0}}
    sc = sidecar_run("proxy", config=config(port, [dead_addr, staller.addr, good.up.addr], hc))
    assert wait_for(lambda: len(log_events(sc, "endpoint out of load balancing")) == 2,
                    timeout=15)
    reasons = {e["endpoint"]: e["reason"] for e in log_events(sc, "endpoint out of load")}
    assert reasons[staller.addr] == "timeout"
    assert dead_addr in reasons
    for _ in range(6):
        assert get(port, "/").body == b"G"
    assert not [r for r in staller.requests if r.target != "/healthz"]
    stall_release.set()
    staller.close()
    good.up.close()


def test_proxy_retry_budget_limits_retries(sidecar_run):
    release = threading.Event()
    seen = set()
    lock = threading.Lock()
    retried = []

    def handler(up, conn, req):
        rid = req.header("X-Request-Id")
        with lock:
            first = rid not in seen
            seen.add(rid)
            if not first:
                retried.append(rid)
        if first:
            return respond(conn, 503, b"first try fails", reason="Unavailable")
        release.wait(30)
        return respond(conn, 200, b"retried")

    up = FakeUpstream(handler)
    port = free_port()
    sc = sidecar_run("proxy", config=config(
        port, [up.addr],
        {"circuit_breakers": {"retry_budget": {"budget_percent": 0,
                                               "min_retry_concurrency": 2}}},
        {"retry_policy": {"num_retries": 3, "retry_on": ["5xx"]}}))
    results = []
    threads = [send_async(port, results) for _ in range(5)]
    # Two retries run (and wait); the other three requests may not retry: their 503 comes back.
    assert wait_for(lambda: len(retried) == 2 and len(results) == 3, timeout=20)
    assert [r.status for r in results] == [503, 503, 503]
    text = metrics(sc)
    assert metric(text, "sidecar_upstream_rq_retry_overflow_total", cluster="c") == 3
    assert metric(text, "sidecar_upstream_rq_retry_total", cluster="c") == 2
    release.set()
    for t in threads:
        t.join(15)
    assert sorted(r.status for r in results) == [200, 200, 503, 503, 503]
    assert len(up.requests) == 7
    up.close()
