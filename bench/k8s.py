#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark of the Kubernetes pieces, printed as a Markdown section on stdout (bench/run.sh's
"k8s" section); raw figures go to OUT_DIR/k8s.json. A measurement, not a test.

- Webhook latency per AdmissionReview over HTTPS (client-side, one keep-alive TLS connection as
  the API server keeps, p50/p99/max) for
  pods of 1, 10 and 50 containers (each with two HTTP probes and a port; roles proxy, logs and
  metrics, probes rewritten), against the API server's 10 s default webhook timeout.
- The image (`scripts/image.py`): archive, compressed layer and unpacked sizes, libraries.
- The injected sidecars' memory: `sidecar proxy`, `logs` and `metrics` started with the arguments
  `sidecar inject` gives them, RSS and PSS idle and after 20,000 requests through the proxy (one
  keep-alive client) with the logs sidecar shipping the app's log line for each.

usage: bench/k8s.py BUILD_DIR OUT_DIR      environment: BENCH_QUICK=1 (fewer reviews)
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("BENCH_QUICK") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            host, _, rest = url.partition("//")[2].partition("/")
            c = http.client.HTTPConnection(host, timeout=1)
            c.request("GET", "/" + rest)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench/k8s.py: {url} never answered")


def pod(n):
    ctrs = [{"name": f"c{i}", "image": f"registry.example.com/app{i}:1",
             "ports": [{"name": "http", "containerPort": 8080 + i}],
             "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
             "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080 + i}}}
            for i in range(n)]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "bench-", "annotations": {
                "sidecar.dev/roles": "proxy,logs,metrics", "prometheus.io/port": "8080",
                "sidecar.dev/rewrite-probes": "true"}},
            "spec": {"containers": ctrs}}


def review(obj, i):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": f"uid-{i}", "kind": {"kind": "Pod"},
                                   "operation": "CREATE", "namespace": "bench",
                                   "object": obj}}).encode()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def bench_webhook(binary, raw):
    pki = Path(tempfile.mkdtemp(prefix="sidecar-k8s-pki."))
    subprocess.run(["sh", str(ROOT / "tests" / "certs.sh"), str(pki)], check=True,
                   capture_output=True)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    port = free_port()
    proc = subprocess.Popen([binary, "webhook", "--listen", f"127.0.0.1:{port}", "--admin",
                             "127.0.0.1:0", "--log-level", "warn", "--tls-cert",
                             str(pki / "server.pem"), "--tls-key", str(pki / "server.key")],
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 15
        while True:
            try:
                c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=1)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        rows = []
        for n in (1, 10, 50):
            count = {1: 4000, 10: 2000, 50: 500}[n] // (10 if QUICK else 1)
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
            bodies = [review(pod(n), i) for i in range(count)]
            lat = []
            for b in bodies:
                t0 = time.perf_counter()
                conn.request("POST", "/inject", b, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                lat.append(time.perf_counter() - t0)
                assert r.status == 200 and b'"patch"' in data, data[:200]
            conn.close()
            raw[f"webhook_{n}"] = {"reviews": count, "p50_s": pct(lat, 0.5),
                                   "p99_s": pct(lat, 0.99), "max_s": max(lat),
                                   "patch_bytes": len(data), "review_bytes": len(bodies[0])}
            rows.append(f"| {n} | {count} | {len(bodies[0]):,} | {len(data):,} | "
                        f"{pct(lat, 0.5) * 1e3:.3f} | {pct(lat, 0.99) * 1e3:.3f} | "
                        f"{max(lat) * 1e3:.3f} | {10 / pct(lat, 0.99):,.0f}x |")
        return rows
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(pki, ignore_errors=True)


def bench_image(binary, out, raw):
    tar = Path(out) / "sidecar-image.tar"
    r = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "image.py"), binary,
                        str(tar)], capture_output=True, text=True, check=True)
    first = r.stdout.splitlines()[0]
    raw["image"] = first
    return first


def proc_mem(pid):
    """(RSS KiB, PSS KiB) of <pid>."""
    rss = pss = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


class App(BaseHTTPRequestHandler):
    """The app behind the proxy: 200 "ok" and a metrics page; it writes a log line per
    request to the shared log directory."""
    log_file = None

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"app_requests_total 1\n" if self.path == "/metrics" else b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        App.log_file.write(f'{{"path":"{self.path}","status":200}}\n')

    def log_message(self, *args):
        pass


def bench_rss(binary, out, raw):
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-k8s-bench."))
    app_port = free_port()
    (tmp / "logs").mkdir()
    App.log_file = open(tmp / "logs" / "app.log", "a", buffering=1)
    srv = ThreadingHTTPServer(("127.0.0.1", app_port), App)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    # The arguments `sidecar inject` gives the three sidecars, on free ports.
    manifest = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "annotations": {
        "sidecar.dev/roles": "proxy,logs,metrics", "sidecar.dev/logs-path": str(tmp / "logs"),
        "prometheus.io/port": str(app_port)}}, "spec": {"containers": [{"name": "app", "image": "a",
        "ports": [{"containerPort": app_port}]}]}})
    injected = json.loads(subprocess.run([binary, "inject", "--cni"], input=manifest,
                                         capture_output=True, text=True, check=True).stdout)
    args = {c["name"]: c["args"] for c in injected["spec"]["initContainers"]}
    listen = free_port()
    procs = {}
    env = dict(os.environ, POD_NAME="bench", POD_NAMESPACE="bench")
    def cmd(a):
        # What the kubelet does to $(VAR) in args.
        return [binary] + [x.replace("$(POD_NAME)", "bench").replace("$(POD_NAMESPACE)", "bench")
                           for x in a]

    try:
        procs["proxy"] = subprocess.Popen(cmd(args["sidecar-proxy"]) + [
            "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{free_port()}",
            "--access-log", "off"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        logs_args = cmd(args["sidecar-logs"])
        logs_args[logs_args.index("--db") + 1] = str(tmp / "logs.db")
        logs_args[logs_args.index("--output") + 1] = f"file={tmp / 'shipped.log'}"
        procs["logs"] = subprocess.Popen(logs_args + ["--admin", f"127.0.0.1:{free_port()}"],
                                         env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        m = cmd(args["sidecar-metrics"])
        mport = free_port()
        m[m.index("--listen") + 1] = f"127.0.0.1:{mport}"
        procs["metrics"] = subprocess.Popen(m + ["--admin", f"127.0.0.1:{free_port()}"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{listen}/")
        wait_http(f"http://127.0.0.1:{mport}/metrics")
        time.sleep(1)
        idle = {k: proc_mem(p.pid) for k, p in procs.items()}
        n = 2000 if QUICK else 20000
        subprocess.run(["/usr/bin/python3", "-c", f"""
import http.client
c = http.client.HTTPConnection("127.0.0.1", {listen})
for i in range({n}):
    c.request("GET", "/req/%d" % i); c.getresponse().read()
"""], check=True)
        for _ in range(10):
            conn = http.client.HTTPConnection("127.0.0.1", mport)
            conn.request("GET", "/metrics")
            conn.getresponse().read()
        time.sleep(2)
        busy = {k: proc_mem(p.pid) for k, p in procs.items()}
        raw["rss"] = {"idle": idle, "after": busy, "requests": n}
        rows = []
        for k in ("proxy", "logs", "metrics"):
            rows.append(f"| {k} | {idle[k][0] / 1024:.1f} | {idle[k][1] / 1024:.1f} | "
                        f"{busy[k][0] / 1024:.1f} | {busy[k][1] / 1024:.1f} |")
        tot = [sum(v[i] for v in d.values()) / 1024 for d in (idle, busy) for i in (0, 1)]
        rows.append(f"| **total** | {tot[0]:.1f} | {tot[1]:.1f} | {tot[2]:.1f} | {tot[3]:.1f} |")
        return rows, n
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    binary = str(Path(sys.argv[1]).resolve() / "sidecar")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    raw = {}
    wh = bench_webhook(binary, raw)
    img = bench_image(binary, out, raw)
    rss, n = bench_rss(binary, out, raw)
    Path(out, "k8s.json").write_text(json.dumps(raw, indent=2))
    print("### Webhook: latency per AdmissionReview (HTTPS, one client, keep-alive)\n")
    print("| containers | reviews | review bytes | response bytes | p50 ms | p99 ms | max ms "
          "| headroom to the 10 s timeout (p99) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(wh))
    print("\n### Image (`make image`)\n")
    print(img.replace("image ", "", 1) + ".")
    print("\nThe anchors' images (envoyproxy/envoy, istio/proxyv2, linkerd's proxy, fluent-bit, "
          "vault) were not measured: this machine has no registry access. The one published "
          "figure found: envoyproxy/envoy at 28.3 MB compressed, its envoy binary 53.9 MB "
          "(envoyproxy/envoy issue 20215, March 2022); istio/proxyv2 adds pilot-agent to it.")
    print(f"\n### The injected sidecars' memory (MiB; idle, then after {n:,} requests through "
          "the proxy, a log line shipped for each and 10 scrapes)\n")
    print("| sidecar | RSS idle | PSS idle | RSS after | PSS after |")
    print("|---|---|---|---|---|")
    print("\n".join(rss))
    print("\nIstio documents its sidecar (Envoy) at about 60 MB per 1,000 requests/s (1.24); "
          "those figures are not measured side by side here.")


if __name__ == "__main__":
    main()
