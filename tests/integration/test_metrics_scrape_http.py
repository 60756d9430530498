# SPDX-License-Identifier: Apache-2.0
"""`sidecar metrics` scraping plain http:// targets through its own HTTP/1.1 client (no libcurl,
no OpenSSL in the process): gzip and identity bodies, Content-Length and chunked framing, names
resolved on the loop, credentials, and each way a target can fail (too slow, too big, before and
after decompression, a broken or unknown content coding, a name that does not resolve), each
isolated to its own sidecar_scrape_up 0. With a proxy in the environment the egress client
(libcurl) scrapes instead, asking for gzip too."""
import gzip

from conftest import free_port, http_get
from metrics_util import (FakeTarget, env_without_proxies, find, mapped_libs, parse_samples,
                          promtool_check)



def app(name):
    """An exposition whose series name the target that served it."""
    return (b"# HELP app_requests_total Requests served.\n"
            b"# TYPE app_requests_total counter\n"
            b'app_requests_total{code="200",target="%s"} 1027\n'
            b'app_requests_total{code="500",target="%s"} 3\n' % (name.encode(), name.encode()))


APP = app("app")


def start(sidecar_run, args=(), config=None, env=None):
    port = free_port()
    sc = sidecar_run("metrics", ["--listen", f"127.0.0.1:{port}", *args], config=config, env=env)
    sc.expo = f"http://127.0.0.1:{port}/metrics"
    return sc


def collect(sc):
    status, body, _ = http_get(sc.expo)
    assert status == 200, body
    code, out = promtool_check(body)
    assert code == 0, out
    return parse_samples(body.decode())


def test_plain_http_targets_without_libcurl(sidecar_run):
    plain = FakeTarget(app("plain"))
    zipped = FakeTarget(app("zipped"), encoding="gzip")
    chunked = FakeTarget(app("chunked"), encoding="gzip", chunked=True)
    # A body of two gzip members, as `gzip -c a b` writes, read as one (sent as it is: the fake
    # compresses only for "gzip").
    body = app("two")
    two = FakeTarget(gzip.compress(body[:60]) + gzip.compress(body[60:]), encoding="x-gzip")
    # Inflates to far more than one read's worth: every output buffer of it must come out.
    large_body = app("large") + b"# HELP app_series_total Many series.\n" + \
        b"# TYPE app_series_total counter\n" + b"".join(b'app_series_total{n="%d"} %d\n' % (i, i)
                                         for i in range(5000))
    large = FakeTarget(large_body, encoding="gzip")
    by_name = FakeTarget(app("by_name"))
    authed = FakeTarget(app("authed"))
    try:
        config = f"""
targets:
  - url: {plain.url}
    name: plain
  - url: {zipped.url}
    name: zipped
  - url: {chunked.url}
    name: chunked
  - url: {two.url}
    name: two
  - url: {large.url}
    name: large
  - url: http://localhost:{by_name.port}/metrics?x=1
    name: by_name
  - url: {authed.url}
    name: authed
    basic_user: scraper
    basic_password: pa55
"""
        sc = start(sidecar_run, config=config, env=env_without_proxies())
        s = collect(sc)
        assert len(gzip.compress(large_body)) < 32 * 1024 < len(large_body)
        assert find(s, "sidecar_scrape_samples", source="large") == [5002]
        assert find(s, "app_series_total", n="4999") == [4999]
        for name in ("plain", "zipped", "chunked", "two", "large", "by_name", "authed"):
            assert find(s, "sidecar_scrape_up", source=name) == [1], name
            assert find(s, "app_requests_total", code="200", target=name) == [1027], name
            assert find(s, "app_requests_total", code="500", target=name) == [3], name
        # Prometheus asks for gzip; the fake compressed only where asked.
        assert zipped.headers[-1]["Accept-Encoding"] == "gzip"
        assert "application/openmetrics-text" in plain.headers[-1]["Accept"]
        assert by_name.headers[-1]["Host"] == f"localhost:{by_name.port}"
        assert by_name.paths[-1] == "/metrics?x=1"
        assert authed.headers[-1]["Authorization"] == "Basic c2NyYXBlcjpwYTU1"  # scraper:pa55
        maps = mapped_libs(sc.proc.pid)
        assert "libcurl" not in maps and "libssl" not in maps and "libcrypto" not in maps
    finally:
        for t in (plain, zipped, chunked, two, large, by_name, authed):
            t.close()


def test_failing_targets_are_isolated(sidecar_run, tmp_path):
    good = FakeTarget(APP, encoding="gzip")
    slow = FakeTarget(APP, delay=3)
    big = FakeTarget(APP * 200)  # about 27 KiB received
    bomb = FakeTarget(b"# a comment line that compresses well\n" * 2000, encoding="gzip")
    broken = FakeTarget(gzip.compress(APP)[:-12], encoding="GZIP")  # truncated, sent as it is
    brotli = FakeTarget(APP, encoding="br")
    garbage = FakeTarget(b"\x1f\x8b not gzip at all", encoding="x-gzip")
    unresolvable = "http://target.invalid/metrics"
    try:
        config = f"""
max_scrape_bytes: 16KiB
targets:
  - {{url: {good.url}, name: good}}
  - {{url: {slow.url}, name: slow, timeout: 500ms}}
  - {{url: {big.url}, name: big}}
  - {{url: {bomb.url}, name: bomb}}
  - {{url: {broken.url}, name: broken}}
  - {{url: {brotli.url}, name: brotli}}
  - {{url: {garbage.url}, name: garbage}}
  - {{url: "{unresolvable}", name: unresolvable}}
"""
        sc = start(sidecar_run, config=config, env=env_without_proxies())
        s = collect(sc)
        assert find(s, "sidecar_scrape_up", source="good") == [1]
        assert find(s, "app_requests_total", code="200", target="app") == [1027]
        for bad in ("slow", "big", "bomb", "broken", "brotli", "garbage", "unresolvable"):
            assert find(s, "sidecar_scrape_up", source=bad) == [0], bad
            assert find(s, "sidecar_scrape_samples", source=bad) == [0], bad
        # The bomb was small on the wire: the cap held the decompressed bytes.
        assert len(gzip.compress(bomb.body)) < 16 * 1024
        logs = sc.logs()
        assert "timed out" in logs
        assert logs.count("response over max_scrape_bytes") == 2  # big, bomb
        assert "truncated gzip body" in logs
        assert "unsupported Content-Encoding" in logs
        assert "malformed gzip body" in logs
        assert "cannot resolve target.invalid" in logs
        assert "libcurl" not in mapped_libs(sc.proc.pid)
    finally:
        for t in (good, slow, big, bomb, broken, brotli, garbage):
            t.close()


def test_proxy_in_environment_uses_libcurl_with_gzip(sidecar_run):
    zipped = FakeTarget(APP, encoding="gzip")
    try:
        # curl honours http_proxy; no_proxy lets it reach the target directly all the same.
        env = {"http_proxy": f"http://127.0.0.1:{free_port()}", "no_proxy": "127.0.0.1"}
        sc = start(sidecar_run, ["--scrape", zipped.url], env=env)
        s = collect(sc)
        assert find(s, "sidecar_scrape_up", source=zipped.url) == [1]
        assert find(s, "app_requests_total", code="500", target="app") == [3]
        assert "gzip" in zipped.headers[-1]["Accept-Encoding"]
        assert "libcurl" in mapped_libs(sc.proc.pid)
    finally:
        zipped.close()

