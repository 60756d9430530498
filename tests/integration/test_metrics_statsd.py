# SPDX-License-Identifier: Apache-2.0
"""`sidecar metrics` StatsD input, driven by the test over UDP: counters with sample rates,
gauges (absolute and relative), timers and histograms into buckets, sets, DogStatsD tags as
labels, malformed lines counted and ignored, the series cap; `promtool check metrics` accepts the
result."""
import socket

from conftest import free_port, http_get, wait_until
from metrics_util import find, parse_samples, promtool_check


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_statsd_types_and_tags(sidecar_run):
    udp = free_udp_port()
    port = free_port()
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}", "--statsd-listen",
                                 f"127.0.0.1:{udp}", "--cache", "0s", "--label", "pod=s-0"],
                     config="statsd:\n  buckets: ['0.01', '0.1', '1']\n")
    lines = [
        "page.views:1|c",
        "page.views:1|c",
        "page.views:1|c|@0.5",
        "api.requests:1|c|#route:/users,method:GET",
        "api.requests:2|c|#method:GET,route:/users",  # same series, tags in another order
        "queue.depth:10|g",
        "queue.depth:+5|g",
        "queue.depth:-3|g",
        "db.query:50|ms",
        "db.query:500|ms",
        "db.query:5|ms|#db:users",
        "payload.bytes:3|h",
        "users.unique:alice|s",
        "users.unique:bob|s",
        "users.unique:alice|s",
        "broken line",
        "bad.value:abc|c",
        "bad.type:1|zz",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto("\n".join(lines[:5]).encode(), ("127.0.0.1", udp))  # multi-metric packet
        for line in lines[5:]:
            s.sendto(line.encode(), ("127.0.0.1", udp))

    def admin_counter(name):
        return find(parse_samples(sc.get("/metrics")[1].decode()), name)

    wait_until(lambda: admin_counter("sidecar_statsd_lines_total") == [len(lines)], timeout=5,
               what="statsd lines received")
    assert admin_counter("sidecar_statsd_malformed_total") == [3]
    status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    code, out = promtool_check(body)
    assert code in (0, 3) and "error" not in out.lower(), out
    text = body.decode()
    s = parse_samples(text)
    assert find(s, "page_views_total", pod="s-0") == [4]  # 1 + 1 + 1/0.5
    assert find(s, "api_requests_total", route="/users", method="GET") == [3]
    assert find(s, "queue_depth") == [12]
    assert "# TYPE db_query histogram" in text

    def exact(name, **labels):
        return s.get((name, frozenset({"pod": "s-0", **labels}.items())))

    assert exact("db_query_bucket", le="0.01") == 0  # 50 ms and 500 ms, in seconds
    assert exact("db_query_bucket", le="0.1") == 1
    assert exact("db_query_bucket", le="1") == 2
    assert exact("db_query_bucket", le="+Inf") == 2
    assert exact("db_query_count") == 2
    assert exact("db_query_sum") == 0.55
    assert exact("db_query_bucket", db="users", le="0.01") == 1
    assert find(s, "db_query_sum", db="users") == [0.005]
    assert find(s, "payload_bytes_bucket", le="+Inf") == [1]
    assert find(s, "users_unique") == [2]
    assert find(s, "sidecar_scrape_up", source="statsd") == [1]


def test_statsd_series_cap(sidecar_run):
    udp = free_udp_port()
    port = free_port()
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}", "--cache", "0s"],
                     config=f"statsd:\n  listen: 127.0.0.1:{udp}\n  max_series: 5\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(20):
            s.sendto(f"m:{i}|g|#i:{i}".encode(), ("127.0.0.1", udp))

    def dropped():
        return find(parse_samples(sc.get("/metrics")[1].decode()), "sidecar_statsd_dropped_total")

    wait_until(lambda: dropped() == [15], timeout=5, what="dropped count")
    s = parse_samples(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode())
    assert len(find(s, "m")) == 5
