# SPDX-License-Identifier: Apache-2.0
"""Real peers for the config and secrets suites: nginx (as the app, and as an HTTP server of
static files with ETag) and etcd, each started in a temp dir on free loopback ports and stopped by
PID."""
import base64
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import free_port, http_get, wait_until

NGINX = "/usr/sbin/nginx"
# Workers must read pytest's 0700 temp dirs: as root, keep them root.
USER = "user root root;\n" if os.getuid() == 0 else ""
ETCD = "/usr/bin/etcd"


def stop_pid(proc, sig=signal.SIGTERM, timeout=10):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nginx:
    """An nginx master started in the foreground; its config is <root>/nginx.conf."""

    def __init__(self, root: Path, conf_text=None, port=None, conf_path=None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        self.port = port or free_port()
        self.conf = conf_path or root / "nginx.conf"
        if conf_text is not None:
            self.conf.write_text(conf_text)
        self.proc = None

    def start(self, ready=None):
        """Starts nginx and waits until <ready>() is true (default: it answers GET / over plain
        HTTP/1.1; a TLS or h2c-only server passes its own probe)."""
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.root), "-e", str(self.root / "logs/error.log"), "-c",
             str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(ready or (lambda: self.get("/")[0] > 0), timeout=10, what="nginx listening")
        return self

    def get(self, path, **kw):
        try:
            return http_get(f"http://127.0.0.1:{self.port}{path}", timeout=2, **kw)
        except OSError:
            return (0, b"", {})

    def stop(self):
        if self.proc:
            stop_pid(self.proc, signal.SIGQUIT)
            self.proc = None

    def pid_file(self):
        return self.root / "nginx.pid"


def nginx_http(root: Path, servers: str, extra_http="") -> str:
    """An nginx config for one worker with its files under <root>, serving the <servers> blocks."""
    return USER + f"""
worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    {extra_http}
    {servers}
}}
"""


def nginx_conf(root: Path, port: int, body: str, extra_http="") -> str:
    """A minimal nginx config whose / answers <body> (a valid app config)."""
    return nginx_http(root, f"""server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{body}"; }}
    }}""", extra_http)


def nginx_static_conf(root: Path, port: int, docroot: Path, cert: Path = None,
                      key: Path = None) -> str:
    """nginx serving <docroot> as static files (ETag and Last-Modified on by default), over https
    with <cert> and <key> when given."""
    tls = f"""
        ssl_certificate {cert};
        ssl_certificate_key {key};""" if cert else ""
    return nginx_http(root, f"""server {{
        listen 127.0.0.1:{port}{" ssl" if cert else ""};{tls}
        root {docroot};
    }}""")


def make_cert(tmp: Path, name: str, cn: str = "127.0.0.1"):
    """A self-signed certificate for 127.0.0.1 made by `openssl req`; returns (cert, key)."""
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Etcd:
    """A single-member etcd on loopback with its data dir in a temp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.peer = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "etcd.log", "wb")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "test", "--data-dir", str(root / "etcd-data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-cluster", f"test=http://127.0.0.1:{self.peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: http_get(self.url + "/health", timeout=1)[0] == 200, timeout=20,
                   what="etcd healthy")

    def _post(self, path, obj):
        req = urllib.request.Request(self.url + path, data=json.dumps(obj).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def put(self, key, value):
        return self._post("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                         "value": base64.b64encode(value.encode()).decode()})

    def delete(self, key):
        return self._post("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def stop(self):
        stop_pid(self.proc)
        self.log.close()


def metric(sc, name, labels=None):
    """Returns the value of one series from the sidecar's /metrics, or None."""
    text = sc.get("/metrics")[1].decode()
    want = name
    if labels:
        want += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def write_atomic(path: Path, text: str):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
