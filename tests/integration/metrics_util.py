# SPDX-License-Identifier: Apache-2.0
"""Helpers for the `sidecar metrics` tests: fake scrape targets (named as fakes: an app's
/metrics that can be slow, return garbage or 500), a fake remote_write receiver that decodes what
it gets with the protobuf library, and the real peers, Prometheus and the Pushgateway, started on
free loopback ports with their data in a tmp dir and stopped by PID."""
import gzip
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port, http_get, wait_until


class FakeTarget:
    """A fake application /metrics endpoint (an in-process thread, not a process).

    `body` (bytes or a callable returning bytes) is served with `status` after `delay` seconds;
    `content_type` defaults to text 0.0.4. `encoding` "gzip" compresses the body when the request
    accepts gzip (as Go's promhttp does); any other value is sent as Content-Encoding with the body
    as given. `chunked` frames the body in chunks instead of Content-Length. `hits` counts
    requests."""

    def __init__(self, body=b"", status=200, delay=0.0, content_type=None, encoding=None,
                 chunked=False):
        self.body = body
        self.status = status
        self.delay = delay
        self.encoding = encoding
        self.chunked = chunked
        self.content_type = content_type or "text/plain; version=0.0.4; charset=utf-8"
        self.hits = 0
        self.headers = []
        self.paths = []
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server API
                with target.lock:
                    target.hits += 1
                    target.headers.append(dict(self.headers))
                    target.paths.append(self.path)
                if target.delay:
                    time.sleep(target.delay)
                body = target.body() if callable(target.body) else target.body
                coding = target.encoding
                if coding == "gzip":
                    if "gzip" in self.headers.get("Accept-Encoding", ""):
                        body = gzip.compress(body)
                    else:
                        coding = None
                try:
                    self.send_response(target.status)
                    self.send_header("Content-Type", target.content_type)
                    if coding:
                        self.send_header("Content-Encoding", coding)
                    if target.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for i in range(0, len(body), 1000):
                            piece = body[i:i + 1000]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeReceiver:
    """A fake remote_write receiver that answers with scripted statuses, then 204."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                fake.requests.append((time.monotonic(), dict(self.headers), body))
                status = fake.statuses.pop(0) if fake.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/api/v1/write"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


_WRITE_REQUEST = None


def write_request_class():
    """The prometheus.WriteRequest message of Prometheus's prompb (remote.proto, types.proto),
    built at run time from its field numbers with the protobuf library (no generated code)."""
    global _WRITE_REQUEST
    if _WRITE_REQUEST is not None:
        return _WRITE_REQUEST
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="sidecar_test_prompb.proto", package="prometheus",
                                            syntax="proto3")

    def msg(name, fields):
        m = fd.message_type.add(name=name)
        for fname, num, typ, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=typ, label=label)
            if tname:
                f.type_name = tname
        return m

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Label", [("name", 1, F.TYPE_STRING, OPT, None), ("value", 2, F.TYPE_STRING, OPT, None)])
    msg("Sample", [("value", 1, F.TYPE_DOUBLE, OPT, None),
                   ("timestamp", 2, F.TYPE_INT64, OPT, None)])
    msg("TimeSeries", [("labels", 1, F.TYPE_MESSAGE, REP, ".prometheus.Label"),
                       ("samples", 2, F.TYPE_MESSAGE, REP, ".prometheus.Sample")])
    mm = msg("MetricMetadata", [
        ("type", 1, F.TYPE_ENUM, OPT, ".prometheus.MetricMetadata.MetricType"),
        ("metric_family_name", 2, F.TYPE_STRING, OPT, None),
        ("help", 4, F.TYPE_STRING, OPT, None),
        ("unit", 5, F.TYPE_STRING, OPT, None)])
    e = mm.enum_type.add(name="MetricType")
    for i, n in enumerate(["UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM",
                           "SUMMARY", "INFO", "STATESET"]):
        e.value.add(name=n, number=i)
    msg("WriteRequest", [("timeseries", 1, F.TYPE_MESSAGE, REP, ".prometheus.TimeSeries"),
                         ("metadata", 3, F.TYPE_MESSAGE, REP, ".prometheus.MetricMetadata")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName("prometheus.WriteRequest")
    if hasattr(message_factory, "GetMessageClass"):
        _WRITE_REQUEST = message_factory.GetMessageClass(desc)
    else:
        _WRITE_REQUEST = message_factory.MessageFactory(pool).GetPrototype(desc)
    return _WRITE_REQUEST


def decode_write_request(body):
    """Decodes a snappy-compressed remote_write body into a WriteRequest message."""
    import snappy

    req = write_request_class()()
    req.ParseFromString(snappy.uncompress(body))
    return req


class Peer:
    """A real peer process, stopped by PID."""

    def __init__(self, cmd, log_path):
        self.log = open(log_path, "wb")
        self.log_path = log_path
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Prometheus(Peer):
    """A real Prometheus with a file_sd job the tests point at their sidecars, scraped every
    second, and the remote-write receiver enabled. <extra_jobs> is YAML for more scrape
    configs; "@DIRECT@" in it names a second file_sd file (add_target(..., direct=True))."""

    def __init__(self, tmp, extra_jobs=""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sd = tmp / "targets.json"
        self.sd.write_text("[]")
        self.sd_direct = tmp / "direct.json"
        self.sd_direct.write_text("[]")
        cfg = tmp / "prometheus.yml"
        cfg.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: sidecar
    file_sd_configs:
      - files: ['{self.sd}']
        refresh_interval: 1s
{extra_jobs.replace("@DIRECT@", str(self.sd_direct))}
""")
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        super().__init__([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}",
                          "--web.enable-remote-write-receiver", "--log.level=warn"],
                         tmp / "prometheus.log")
        wait_until(lambda: http_get(self.url + "/-/ready", timeout=1)[0] == 200, timeout=30,
                   what="prometheus ready")
        self.groups = []

    def add_target(self, addr, labels, direct=False):
        """Adds a scrape target (host:port) with extra target labels to the file_sd job."""
        self.groups.append((direct, {"targets": [addr], "labels": labels}))
        for d, path in ((False, self.sd), (True, self.sd_direct)):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([g for dd, g in self.groups if dd == d]))
            os.rename(tmp, path)

    def query(self, q):
        query = urllib.parse.urlencode({"query": q})
        status, body, _ = http_get(self.url + "/api/v1/query?" + query)
        assert status == 200, body
        data = json.loads(body)
        assert data["status"] == "success", data
        return data["data"]["result"]

    def wait_series(self, q, n=1, timeout=20):
        """Waits until the query returns at least <n> series; returns them."""
        out = []

        def ok():
            out[:] = self.query(q)
            return len(out) >= n

        wait_until(ok, timeout=timeout, interval=0.2, what=f"prometheus series for {q}")
        return out


class Pushgateway(Peer):
    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
        super().__init__([binary, f"--web.listen-address=127.0.0.1:{self.port}",
                          f"--persistence.file={tmp / 'pushgw.db'}", "--log.level=warn"],
                         tmp / "pushgateway.log")
        wait_until(lambda: http_get(self.url + "/-/ready", timeout=1)[0] == 200, timeout=20,
                   what="pushgateway ready")

    def groups(self):
        status, body, _ = http_get(self.url + "/api/v1/metrics")
        assert status == 200, body
        return json.loads(body)["data"]


def mapped_libs(pid):
    """The memory map of process <pid> (/proc/PID/maps): which shared libraries it loaded."""
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def env_without_proxies():
    """Environment overrides that blank the proxy variables libcurl would honour for http://, so
    a sidecar started with them reaches plain-http peers directly whatever the test runner has."""
    return {k: "" for k in ("http_proxy", "all_proxy", "ALL_PROXY", "HTTP_PROXY")
            if os.environ.get(k)}


def parse_samples(text):
    """Parses exposition text into {(name, frozenset(labels.items())): value} — a minimal reader
    for assertions (the real validation is promtool's and Prometheus's)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels = {}
            i = 0
            while rest[i] != "}":
                eq = rest.index("=", i)
                key = rest[i:eq]
                j = eq + 2
                val = []
                while rest[j] != '"':
                    if rest[j] == "\\":
                        val.append({"n": "\n", "\\": "\\", '"': '"'}[rest[j + 1]])
                        j += 2
                    else:
                        val.append(rest[j])
                        j += 1
                labels[key] = "".join(val)
                i = j + 1
                if rest[i] == ",":
                    i += 1
            value = rest[i + 1:].strip().split()[0]
        else:
            name, value = line.split()[:2]
            labels = {}
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def find(samples, name, **labels):
    """Returns the values of samples named <name> whose labels include <labels>."""
    return [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]


def promtool_check(body):
    """Runs `promtool check metrics`; returns (code, output). Code 3 means lint warnings only."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    return r.returncode, r.stdout.decode() + r.stderr.decode()
