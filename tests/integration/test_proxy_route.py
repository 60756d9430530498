# SPDX-License-Identifier: Apache-2.0
"""sidecar proxy: route traffic policy against real (fake) upstreams: a 90/10 weighted split over
subsets lands within chi-square bounds and never leaves its subset; canary by header and cookie;
local rate limits allow exactly `burst`, then 429 with Retry-After and x-ratelimit-* headers, refill,
key by client IP (--rate-limit) and keep their state across reloads of unchanged routes; header
transforms and rewrites; fault abort and delay percentages; mirroring that never changes the
client's answer and stays bounded when the shadow stalls; a route timeout of 0s turns it off."""
import http.client
import json
import re
import signal
import socket
import threading
import time

from conftest import free_port, http_get
from proxy_util import (Client, FakeUpstream, access_lines, curl_head, echo_handler, get,
                        metric, named, proxy_config, respond, wait_for)


def listener(port, routes, **extra):
    return {"name": "l", "address": f"127.0.0.1:{port}", "routes": routes, **extra}


def keepalive_bodies(port, n, path="/", headers=None):
    """Sends <n> GETs on one keep-alive connection; returns the list of (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    out = []
    try:
        for _ in range(n):
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            out.append((r.status, r.read()))
    finally:
        c.close()
    return out


def reviews_cluster(v1a, v1b, v2, lb="round_robin"):
    return {"name": "reviews", "lb_policy": lb,
            "labeled_endpoints": [
                {"address": v1a.addr, "labels": {"version": "v1"}},
                {"address": v1b.addr, "labels": {"version": "v1"}},
                {"address": v2.addr, "labels": {"version": "v2", "track": "canary"}}],
            "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}}]}


def test_proxy_weighted_split_90_10_within_bounds(sidecar_run):
    v1a, v1b, v2 = named("v1a"), named("v1b"), named("v2")
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [{"name": "split", "weighted_clusters": [
            {"cluster": "reviews", "subset": "v1", "weight": 90},
            {"cluster": "reviews", "subset": "v2", "weight": 10}]}])],
        [reviews_cluster(v1a, v1b, v2)], access_log="off"))
    n = 10000
    counts = {}
    for status, body in keepalive_bodies(port, n):
        assert status == 200
        counts[body] = counts.get(body, 0) + 1
    got_v1 = counts.get(b"v1a", 0) + counts.get(b"v1b", 0)
    got_v2 = counts.get(b"v2", 0)
    assert got_v1 + got_v2 == n
    # Chi-square, one degree of freedom: 24 is p ~ 1e-6, so a correct split fails about once in a
    # million runs, while a wrong one (say 85/15: chi2 ~ 280) never passes.
    chi2 = (got_v1 - 0.9 * n) ** 2 / (0.9 * n) + (got_v2 - 0.1 * n) ** 2 / (0.1 * n)
    assert chi2 < 24, (got_v1, got_v2, chi2)
    # Round robin stays within subset v1: both of its endpoints share its traffic evenly.
    assert abs(counts[b"v1a"] - counts[b"v1b"]) <= 2, counts
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_requests_total", route="split", cluster="reviews",
                  code="200") == n
    for u in (v1a, v1b, v2):
        u.close()


def test_proxy_canary_by_header_and_cookie(sidecar_run):
    v1a, v1b, v2 = named("v1a"), named("v1b"), named("v2")
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [
            {"name": "canary-header", "match": {"headers": [{"name": "x-canary", "value": "1"}]},
             "cluster": "reviews", "subset": "v2"},
            {"name": "canary-cookie", "match": {"cookies": [{"name": "user", "value": "tester"}]},
             "cluster": "reviews", "subset": "v2"},
            {"name": "stable", "cluster": "reviews", "subset": "v1"}])],
        [reviews_cluster(v1a, v1b, v2, lb="least_request")]))
    stable = [b for _, b in keepalive_bodies(port, 60)]
    assert b"v2" not in stable, "least_request picks within the subset only"
    assert stable.count(b"v1a") > 0 and stable.count(b"v1b") > 0
    assert {b for _, b in keepalive_bodies(port, 10, headers={"x-canary": "1"})} == {b"v2"}
    assert {b for _, b in keepalive_bodies(port, 10, headers={"x-canary": "0"})} <= {b"v1a", b"v1b"}
    cookie = {"Cookie": "theme=dark; user=tester; lang=en"}
    assert {b for _, b in keepalive_bodies(port, 10, headers=cookie)} == {b"v2"}
    other = {"Cookie": "user=testers; xuser=tester"}
    assert {b for _, b in keepalive_bodies(port, 10, headers=other)} <= {b"v1a", b"v1b"}
    lines = access_lines(sc, at_least=100)
    assert {l["route"] for l in lines if l["endpoint"] == v2.addr} == {"canary-header",
                                                                       "canary-cookie"}
    for u in (v1a, v1b, v2):
        u.close()


def rl_route(burst, per_unit=1, unit="minute", **extra):
    return {"name": "limited", "cluster": "app",
            "rate_limit": {"requests_per_unit": per_unit, "unit": unit, "burst": burst, **extra}}


def test_proxy_rate_limit_burst_then_429_then_refill(sidecar_run):
    up = named("ok")
    port = free_port()
    # 1 token per second, burst 5.
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [rl_route(5, per_unit=1, unit="second", headers=True)])],
        [{"name": "app", "endpoints": [up.addr]}]))
    c = Client(port)
    t0 = time.monotonic()
    allowed = []
    while True:
        r = c.request()
        if r.status != 200:
            break
        allowed.append(r)
        assert len(allowed) < 100
    elapsed = time.monotonic() - t0
    # Exactly the burst, plus whatever refilled while the requests ran (1/s).
    assert 5 <= len(allowed) <= 5 + int(elapsed) + 1
    if elapsed < 0.9:
        assert len(allowed) == 5
        assert [a.header("x-ratelimit-remaining") for a in allowed] == ["4", "3", "2", "1", "0"]
    assert all(a.header("x-ratelimit-limit") == "5" for a in allowed)
    assert r.status == 429
    assert r.header("Retry-After") == "1"
    assert r.header("x-ratelimit-limit") == "5"
    assert r.header("x-ratelimit-remaining") == "0"
    assert 1 <= int(r.header("x-ratelimit-reset")) <= 5
    assert b"rate limit" in r.body
    assert len(up.requests) == len(allowed), "a refused request never reaches the upstream"
    # Refill: one token per second (generous margin: 1.5 s).
    time.sleep(1.5)
    r2 = c.request()
    assert r2.status == 200
    c.close()
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_rq_rate_limited_total", listener="l", route="limited") >= 1
    assert any(l["status"] == 429 and l["flags"] == "RL" for l in access_lines(sc))
    up.close()


def test_proxy_rate_limit_keyed_by_header(sidecar_run):
    up = named("ok")
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [listener(port, [rl_route(2, key="header", header="x-user", max_keys=100)])],
        [{"name": "app", "endpoints": [up.addr]}]))
    a = [s for s, _ in keepalive_bodies(port, 3, headers={"x-user": "alice"})]
    b = [s for s, _ in keepalive_bodies(port, 3, headers={"x-user": "bob"})]
    assert a == [200, 200, 429] and b == [200, 200, 429]
    up.close()


def test_proxy_rate_limit_headers_only_on_429_by_default(sidecar_run):
    up = named("ok")
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [listener(port, [rl_route(2)])], [{"name": "app", "endpoints": [up.addr]}]))
    c = Client(port)
    allowed = [c.request() for _ in range(2)]
    assert [a.status for a in allowed] == [200, 200]
    for a in allowed:
        assert [k for k, _ in a.headers if k.lower().startswith("x-ratelimit-")] == [], \
            "allowed responses carry no x-ratelimit-* header unless headers: true"
    r = c.request()
    assert r.status == 429
    assert r.header("x-ratelimit-limit") == "2"
    assert r.header("x-ratelimit-remaining") == "0"
    assert 1 <= int(r.header("x-ratelimit-reset")) <= 120
    assert 1 <= int(r.header("Retry-After")) <= 60
    c.close()
    up.close()


def client_from(port, src_ip):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src_ip, 0))
    c = Client.__new__(Client)
    c.sock, c.buf = s, b""
    return c


def test_proxy_rate_limit_flag_per_client_ip(sidecar_run):
    up = named("ok")
    port = free_port()
    sidecar_run("proxy", ["--listen", f"127.0.0.1:{port}", "--upstream", up.addr,
                          "--rate-limit", "3/m"])
    c1 = client_from(port, "127.0.0.1")
    assert [c1.request().status for _ in range(4)] == [200, 200, 200, 429]
    c2 = client_from(port, "127.0.0.2")
    r = c2.request()
    assert r.status == 200, "another client IP has its own bucket"
    assert r.header("x-ratelimit-limit") is None, "the flag leaves them to 429s"
    assert [c2.request().status for _ in range(3)] == [200, 200, 429]
    c3 = client_from(port, "127.0.0.1")
    assert c3.request().status == 429, "the bucket belongs to the IP, not the connection"
    for c in (c1, c2, c3):
        c.close()
    up.close()


def test_proxy_reload_keeps_rate_limit_state(sidecar_run):
    up = named("ok")
    port = free_port()

    def cfg(burst, extra_route=False):
        routes = [rl_route(burst)]
        if extra_route:
            routes.insert(0, {"name": "other", "match": {"prefix": "/other"}, "cluster": "app"})
        return proxy_config([listener(port, routes)], [{"name": "app", "endpoints": [up.addr]}])

    sc = sidecar_run("proxy", config=cfg(3))
    assert [s for s, _ in keepalive_bodies(port, 4)] == [200, 200, 200, 429]
    # An unrelated change: the limited route keeps its (empty) bucket.
    sc.config_path.write_text(cfg(3, extra_route=True))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert get(port, "/other").status == 200
    assert get(port, "/").status == 429, "bucket state survives the reload"
    # SIGHUP too.
    sc.config_path.write_text(cfg(3))
    sc.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(sc) == 2), "the SIGHUP reload went through"
    assert get(port, "/").status == 429
    # A changed limit is a new bucket.
    sc.config_path.write_text(cfg(4, extra_route=True))
    assert http_get(sc.admin + "/reload", method="POST")[0] == 200
    assert [s for s, _ in keepalive_bodies(port, 5)] == [200, 200, 200, 200, 429]
    up.close()


def reloads(sc):
    return metric(sc.get("/metrics")[1].decode(), "sidecar_reloads_total", result="success")


def test_proxy_header_transforms_and_rewrites(sidecar_run):
    def handler(up, conn, req):
        body = json.dumps({"target": req.target, "headers": req.headers}).encode()
        return respond(conn, 200, body, [("X-Secret", "s"), ("X-Keep", "k"), ("Server", "fake")])

    up = FakeUpstream(handler)
    port = free_port()
    sidecar_run("proxy", config=proxy_config(
        [listener(port, [{
            "name": "api", "match": {"prefix": "/api/"}, "cluster": "app",
            "prefix_rewrite": "/v2/", "host_rewrite": "backend.internal",
            "headers": {
                "request": {"set": {"x-client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                                    "x-copy": "from-%REQ(x-in)%-100%%",
                                    "x-proto": "%PROTOCOL%"},
                            "add": {"x-added": "yes"},
                            "remove": ["x-drop"]},
                "response": {"set": {"server": "sidecar", "x-upstream": "%UPSTREAM_HOST%",
                                     "x-start": "%START_TIME%", "x-code": "%RESPONSE_CODE%"},
                             "add": {"x-route": "api"},
                             "remove": ["x-secret"]}}}])],
        [{"name": "app", "endpoints": [up.addr]}]))
    r = get(port, "/api/items?q=1", headers=[("x-in", "abc"), ("x-drop", "1"),
                                             ("x-client", "spoofed"), ("x-added", "mine")])
    assert r.status == 200
    seen = r.json()
    h = {}
    for k, v in seen["headers"]:
        h.setdefault(k.lower(), []).append(v)
    assert seen["target"] == "/v2/items?q=1"
    assert h["host"] == ["backend.internal"]
    assert h["x-client"] == ["127.0.0.1"]
    assert h["x-copy"] == ["from-abc-100%"]
    assert h["x-added"] == ["mine", "yes"]
    assert "x-drop" not in h
    assert r.header("x-secret") is None
    assert r.header("x-keep") == "k"
    assert r.header("server") == "sidecar"
    assert r.header("x-upstream") == up.addr
    assert r.header("x-route") == "api"
    assert r.header("x-code") == "200"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.header("x-start"))
    assert h["x-proto"] == ["HTTP/1.1"]
    up.close()


def test_proxy_fault_abort_percentage(sidecar_run):
    up = named("ok")
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [{"name": "f", "cluster": "app",
                          "fault": {"abort": {"http_status": 503, "percentage": 30}}}])],
        [{"name": "app", "endpoints": [up.addr]}]))
    n = 1000
    statuses = [s for s, _ in keepalive_bodies(port, n)]
    aborted = statuses.count(503)
    # Binomial(1000, 0.3): sd 14.5; +-6 sd.
    assert 213 <= aborted <= 387, aborted
    assert statuses.count(200) == n - aborted
    assert len(up.requests) == n - aborted, "aborted requests never reach the upstream"
    lines = access_lines(sc, at_least=n)
    assert sum(1 for l in lines if l["flags"] == "FI") == aborted
    up.close()


def test_proxy_fault_delay_percentage(sidecar_run):
    up = named("ok")
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [{"name": "d", "cluster": "app",
                          "fault": {"delay": {"fixed_delay": "20ms", "percentage": 20}}}])],
        [{"name": "app", "endpoints": [up.addr]}]))
    n = 300
    assert all(s == 200 for s, _ in keepalive_bodies(port, n))
    lines = access_lines(sc, at_least=n)
    delayed = [l for l in lines if l["flags"] == "DI"]
    # Binomial(300, 0.2): sd 6.9; +-6 sd.
    assert 19 <= len(delayed) <= 101, len(delayed)
    # libuv timers count whole milliseconds: 19 ms and a fraction is a 20 ms delay.
    assert all(l["duration_ms"] >= 19 for l in delayed), "a delayed request waits its delay"
    assert len(up.requests) == n
    up.close()


def test_proxy_mirror_copies_and_never_changes_the_answer(sidecar_run):
    main = FakeUpstream(echo_handler)
    shadow = FakeUpstream(lambda up, conn, req: respond(conn, 500, b"shadow says no"))
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [{"name": "m", "cluster": "app",
                          "retry_policy": {"num_retries": 0},
                          "mirror": {"cluster": "shadow"}}])],
        [{"name": "app", "endpoints": [main.addr]},
         {"name": "shadow", "endpoints": [shadow.addr]}]))
    c = Client(port)
    for i in range(10):
        r = c.request(path=f"/item/{i}", headers=[("x-n", str(i))])
        assert r.status == 200 and r.json()["target"] == f"/item/{i}"
    r = c.request(method="POST", path="/post", body=b"payload-123")
    assert r.status == 200 and r.json()["body_head"] == "payload-123"
    c.close()
    assert wait_for(lambda: len(shadow.requests) == 11)
    got = sorted(shadow.requests, key=lambda q: q.target)
    post = [q for q in got if q.method == "POST"][0]
    assert post.body == b"payload-123"
    assert post.header("host") == "test-shadow"
    assert all(q.header("host") == "test-shadow" for q in got)
    assert {q.target for q in got if q.method == "GET"} == {f"/item/{i}" for i in range(10)}
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_mirror_rq_total", cluster="shadow") == 11
    main.close()
    shadow.close()


def test_proxy_mirror_stalled_shadow_is_bounded(sidecar_run):
    main = FakeUpstream(lambda up, conn, req: respond(conn, 200, b"main"))
    release = threading.Event()

    def stall(up, conn, req):
        release.wait(30)
        return False

    shadow = FakeUpstream(stall)
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [{"name": "m", "cluster": "app",
                          "mirror": {"cluster": "shadow", "percentage": 100}}])],
        [{"name": "app", "endpoints": [main.addr]},
         {"name": "shadow", "endpoints": [shadow.addr]}]))
    # The shadow holds every copy unanswered; the client still gets all its answers.
    bodies = [b for _, b in keepalive_bodies(port, 100)]
    assert bodies == [b"main"] * 100
    text = sc.get("/metrics")[1].decode()
    sent = metric(text, "sidecar_mirror_rq_total", cluster="shadow")
    dropped = metric(text, "sidecar_mirror_rq_dropped_total", cluster="shadow")
    assert sent == 64 and dropped == 36, (sent, dropped)
    release.set()
    main.close()
    shadow.close()


def test_proxy_route_timeout_off(sidecar_run):
    def slow(up, conn, req):
        time.sleep(1.0)
        return respond(conn, 200, b"slow")

    up = FakeUpstream(slow)
    port = free_port()
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, [
            {"name": "off", "match": {"prefix": "/off"}, "cluster": "app", "timeout": "0s",
             "retry_policy": {"per_try_timeout": "0s"}},
            {"name": "pertry", "match": {"prefix": "/pertry"}, "cluster": "app", "timeout": "0s"},
            {"name": "inherit", "cluster": "app"}])],
        [{"name": "app", "endpoints": [up.addr]}], timeout="300ms", per_try_timeout="250ms",
        retries=0))
    assert get(port, "/inherit").status == 504
    assert get(port, "/pertry").status == 504, "per_try_timeout is inherited"
    r = get(port, "/off")
    assert r.status == 200 and r.body == b"slow", "0s turns both timeouts off"
    lines = {l["route"]: l for l in access_lines(sc, at_least=3)}
    assert "UT" in lines["inherit"]["flags"] and "UT" in lines["pertry"]["flags"]
    up.close()


def test_proxy_route_check_errors(run_cli, tmp_path):
    cases = [
        ({"name": "r", "cluster": "app", "subset": "nope"}, 'has no subset "nope"'),
        ({"name": "r", "cluster": "app", "weighted_clusters": [{"cluster": "app"}]},
         "one of cluster and weighted_clusters"),
        ({"name": "r"}, "needs cluster, weighted_clusters, redirect or direct_response"),
        ({"name": "r", "weighted_clusters": [{"cluster": "app", "weight": 0}]}, "add up to 0"),
        ({"name": "r", "cluster": "app",
          "headers": {"request": {"set": {"x": "%NOPE%"}}}}, "unknown variable %NOPE%"),
        ({"name": "r", "cluster": "app",
          "headers": {"response": {"set": {"x": "%REQ(a)%"}}}}, "for request headers"),
        ({"name": "r", "cluster": "app", "timeout": "soon"}, "not a duration"),
        ({"name": "r", "cluster": "app", "retry_policy": {"per_try_timeout": "x"}},
         'per_try_timeout "x" is not a duration'),
        ({"name": "r", "cluster": "app", "rate_limit": {"requests_per_unit": 1, "key": "header"}},
         "needs `header`"),
        ({"name": "r", "cluster": "app", "fault": {"abort": {"percentage": 5}}},
         "http_status from 200 to 599"),
        ({"name": "r", "cluster": "app", "mirror": {"cluster": "ghost"}},
         'unknown mirror cluster "ghost"'),
        ({"name": "r", "cluster": "app", "prefix_rewrite": "/x"}, "needs a match prefix"),
        ({"name": "r", "cluster": "app",
          "headers": {"request": {"remove": ["Content-Length"]}}}, 'cannot remove "Content-Length"'),
        ({"name": "r", "cluster": "app",
          "headers": {"response": {"set": {"transfer-encoding": "x"}}}},
         'cannot set "transfer-encoding"'),
        ({"name": "r", "cluster": "app",
          "headers": {"request": {"add": {"x-a": "a\u0001b"}}}}, "control characters"),
        ([{"name": "r", "cluster": "app", "rate_limit": {"requests_per_unit": 1}},
          {"name": "r", "cluster": "app"}], "needs a name of its own"),
    ]
    for route, want in cases:
        cfg = tmp_path / "p.yaml"
        routes = route if isinstance(route, list) else [route]
        cfg.write_text(proxy_config([listener(1, routes)],
                                    [{"name": "app", "endpoints": ["127.0.0.1:9"],
                                      "subsets": [{"name": "v1", "labels": {"v": "1"}}]}]))
        out = run_cli("proxy", "-c", str(cfg), "--check")
        assert out.returncode != 0 and want in out.stderr + out.stdout, (route, out.stderr)
    out = run_cli("proxy", "--listen", "127.0.0.1:1", "--rate-limit", "10/day", "--check")
    assert out.returncode != 0 and "N/s, N/m or N/h" in out.stderr + out.stdout


def test_proxy_rate_limit_shared_by_workers(sidecar_run):
    up = named("ok")
    port = free_port()
    sidecar_run("proxy", ["--workers", "3"], config=proxy_config(
        [listener(port, [rl_route(10, per_unit=10, unit="minute")])],
        [{"name": "app", "endpoints": [up.addr]}]))
    t0 = time.monotonic()
    clients = [Client(port) for _ in range(8)]
    statuses = [c.request().status for _ in range(3) for c in clients]
    elapsed = time.monotonic() - t0
    for c in clients:
        c.close()
    # One bucket for all workers: exactly the burst, plus one token per 6 s that passed.
    assert 10 <= statuses.count(200) <= 10 + int(elapsed / 6), (statuses, elapsed)
    assert statuses.count(200) + statuses.count(429) == 24
    up.close()


def test_proxy_route_destination_ports_without_interception_use_the_listener_port(sidecar_run):
    # Two listeners share one route table shape: a connection that was not redirected is matched
    # on the port it reached, so each listener takes its own route.
    a, b = named("a"), named("b")
    pa, pb = free_port(), free_port()
    routes = [{"name": "on-a", "match": {"destination_ports": [str(pa)]}, "cluster": "a"},
              {"name": "other", "cluster": "b"}]
    sc = sidecar_run("proxy", config=proxy_config(
        [{"name": "la", "address": f"127.0.0.1:{pa}", "routes": routes},
         {"name": "lb", "address": f"127.0.0.1:{pb}", "routes": routes}],
        [{"name": "a", "endpoints": [a.addr]}, {"name": "b", "endpoints": [b.addr]}],
        access_log="off"))
    sc.wait_ready()
    # every request of a keep-alive connection, not only its first
    assert keepalive_bodies(pa, 3) == [(200, b"a")] * 3
    assert keepalive_bodies(pb, 3) == [(200, b"b")] * 3


def test_proxy_route_destination_ports_are_checked(tmp_path, run_cli):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("listeners:\n  - name: l\n    address: 127.0.0.1:1\n    routes:\n"
                   "      - {name: r, cluster: c, match: {destination_ports: [\"0\"]}}\n"
                   "clusters:\n  - {name: c, endpoints: [\"127.0.0.1:2\"]}\n")
    r = run_cli("proxy", "-c", str(cfg), "--check")
    assert r.returncode != 0
    assert "p.yaml:5:58: \"0\" is not a port (1 to 65535)" in r.stderr, r.stderr


def test_proxy_route_redirect_and_direct_response(sidecar_run):
    up = named("app")
    port = free_port()
    routes = [
        {"name": "https", "match": {"prefix": "/secure"}, "redirect": {"https_redirect": True}},
        {"name": "moved", "match": {"prefix": "/old/"},
         "redirect": {"prefix_rewrite": "/new/", "response_code": 308}},
        {"name": "away", "match": {"path": "/away"},
         "redirect": {"scheme": "http", "host": "other.example", "port": 9090,
                      "path": "/landing", "strip_query": True, "response_code": 302}},
        {"name": "seeother", "match": {"path": "/q"},
         "redirect": {"path": "/r?fixed=1", "response_code": 303}},
        {"name": "temp", "match": {"path": "/tmp"},
         "redirect": {"host": "t.example", "response_code": 307}},
        {"name": "health", "match": {"path": "/healthz"},
         "direct_response": {"status": 200, "body": "ok\n"}},
        {"name": "gone", "match": {"path": "/gone"},
         "direct_response": {"status": 410, "body": "{\"error\":\"gone\"}",
                             "content_type": "application/json"}},
        {"name": "empty", "match": {"path": "/empty"}, "direct_response": {"status": 204}},
        {"name": "app", "cluster": "app"},
    ]
    sc = sidecar_run("proxy", config=proxy_config(
        [listener(port, routes, http2={"enabled": True})],
        [{"name": "app", "endpoints": [up.addr]}]))
    st, h, _ = curl_head(port, "/secure/x?a=1", host="shop.example:8080")
    assert (st, h["location"]) == (301, "https://shop.example/secure/x?a=1")
    st, h, _ = curl_head(port, "/old/a/b?k=v", host="shop.example:8080")
    assert (st, h["location"]) == (308, "http://shop.example:8080/new/a/b?k=v")
    st, h, _ = curl_head(port, "/away?drop=me", host="shop.example")
    assert (st, h["location"]) == (302, "http://other.example:9090/landing")
    st, h, _ = curl_head(port, "/q?orig=1", host="shop.example")
    assert (st, h["location"]) == (303, "http://shop.example/r?fixed=1")
    st, h, _ = curl_head(port, "/tmp?keep=1", host="shop.example:8080")
    assert (st, h["location"]) == (307, "http://t.example:8080/tmp?keep=1")
    # HTTP/1.0 without Host: nothing to build the Location from.
    st, _, body = curl_head(port, "/secure", "--http1.0", "-H", "Host:")
    assert (st, body) == (400, b"the request has no Host to redirect from\n")
    st, h, body = curl_head(port, "/healthz")
    assert (st, body, h["content-type"]) == (200, b"ok\n", "text/plain; charset=utf-8")
    st, h, body = curl_head(port, "/gone")
    assert (st, body, h["content-type"]) == (410, b'{"error":"gone"}', "application/json")
    st, h, body = curl_head(port, "/empty")
    assert (st, body) == (204, b"")
    # HTTP/2 (h2c prior knowledge): the same answers.
    st, h, body = curl_head(port, "/gone", "--http2-prior-knowledge")
    assert (st, body, h["content-type"]) == (410, b'{"error":"gone"}', "application/json")
    st, h, _ = curl_head(port, "/secure?z=2", "--http2-prior-knowledge", host="h2.example")
    assert (st, h["location"]) == (301, "https://h2.example/secure?z=2")
    st, _, body = curl_head(port, "/other")
    assert (st, body) == (200, b"app")
    assert len(up.requests) == 1, "redirects and direct responses never reach the upstream"
    lines = access_lines(sc, at_least=13)
    flags = {l["route"]: l["flags"] for l in lines}
    assert flags["https"] == "RD" and flags["gone"] == "DR" and flags["app"] == "-", flags
    text = sc.get("/metrics")[1].decode()
    assert metric(text, "sidecar_requests_total", route="gone", code="410") == 2
    assert metric(text, "sidecar_requests_total", route="https", code="301") == 2
    up.close()


def test_proxy_route_action_check_errors(run_cli, tmp_path):
    cases = [
        ({"name": "r", "redirect": {"https_redirect": True}, "direct_response": {"status": 200}},
         "use one of redirect, direct_response and health_endpoint"),
        ({"name": "r", "cluster": "app", "direct_response": {"status": 200}},
         "answers itself: it takes no cluster"),
        ({"name": "r", "redirect": {"host": "x", "response_code": 304}},
         "301, 302, 303, 307 or 308"),
        ({"name": "r", "redirect": {"scheme": "ftp"}}, "scheme must be http or https"),
        ({"name": "r", "redirect": {"prefix_rewrite": "/x"}}, "prefix_rewrite needs a match.prefix"),
        ({"name": "r", "redirect": {"path": "x y"}}, "start with /"),
        ({"name": "r", "direct_response": {"status": 200, "body": "x" * 4097}},
         "longer than 4096 bytes"),
        ({"name": "r", "direct_response": {"status": 99}}, "out of range [200, 599]"),
    ]
    for route, want in cases:
        cfg = tmp_path / "p.yaml"
        cfg.write_text(proxy_config([listener(1, [route])],
                                    [{"name": "app", "endpoints": ["127.0.0.1:9"]}]))
        out = run_cli("proxy", "-c", str(cfg), "--check")
        assert out.returncode != 0 and want in out.stderr + out.stdout, (route, out.stderr)
