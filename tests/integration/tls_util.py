# SPDX-License-Identifier: Apache-2.0
"""TLS fixtures for the proxy suites: the test PKI from tests/certs.sh (made once per session with
the openssl CLI), extra leaves signed by its intermediate, and small clients built on the real
tools users have: curl, `openssl s_client` and Python's ssl module."""
import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The directory tests/certs.sh filled (see its header for the files)."""
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(["sh", str(ROOT / "tests" / "certs.sh"), str(d)], check=True)
    return d


def make_leaf(pki: Path, name: str, san: str, days: int = 30, out: Path = None):
    """A new ECDSA leaf signed by the PKI's intermediate (chain appended); returns (cert, key)."""
    out = out or pki
    key, csr, cert, ext = (out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem",
                           out / f"{name}.ext")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-out", str(csr), "-subj",
                    f"/O=sidecar test/CN={name}"], check=True, capture_output=True)
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "int.pem"),
                    "-CAkey", str(pki / "int.key"), "-CAcreateserial", "-days", str(days),
                    "-out", str(cert), "-extfile", str(ext)], check=True, capture_output=True)
    cert.write_bytes(cert.read_bytes() + (pki / "int.pem").read_bytes())
    csr.unlink()
    ext.unlink()
    return cert, key


def serial_of(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert)],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].upper()


def s_client(port, *args, data=b"", timeout=10):
    """Runs `openssl s_client` against 127.0.0.1:<port> with <args>, writing <data> then EOF;
    returns (exit code, stdout + stderr as text). With <data>, s_client waits for the server to
    close (send a request with Connection: close); without, it leaves after the handshake."""
    ign = ["-ign_eof"] if data else []
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *ign, *args],
                       input=data, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def peer_serial(port, ca: Path, sni="localhost"):
    """The serial number of the certificate the server on <port> presents for <sni>."""
    _, out = s_client(port, "-servername", sni, "-CAfile", str(ca), "-showcerts")
    pem = out[out.index("-----BEGIN CERTIFICATE-----"):out.index("-----END CERTIFICATE-----") + 25]
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem.encode(),
                       capture_output=True, check=True)
    return p.stdout.decode().strip().split("=", 1)[1].upper()


def curl(url, *args, timeout=10):
    """Runs curl -sS and returns (exit code, body, http status or 0)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-w", "\n%{http_code}",
                        *args, url], capture_output=True, timeout=timeout + 5)
    out = p.stdout.rsplit(b"\n", 1)
    code = int(out[1]) if len(out) == 2 and out[1].isdigit() else 0
    return p.returncode, out[0], code


def https_up(port):
    """Whether a TLS server listens on <port> (curl completes a handshake; 56: it then closed)."""
    return curl(f"https://127.0.0.1:{port}/", "-k")[0] in (0, 56)


def tls_context(ca: Path, cert: Path = None, key: Path = None):
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


class TLSClient:
    """A raw HTTP/1.1 client over Python's ssl, for exact requests on one kept-alive connection."""

    def __init__(self, port, ctx, server_hostname="localhost", timeout=10):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        self.buf = bytearray()

    def request(self, path="/", headers=(), body=None, method="GET"):
        h = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        for k, v in headers:
            h += f"{k}: {v}\r\n"
        if body is not None:
            h += f"Content-Length: {len(body)}\r\n"
        self.sock.sendall(h.encode() + b"\r\n" + (body or b""))
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed before the response head")
            self.buf += d
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = bytes(self.buf[:i]), self.buf[i + 4:]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            d = self.sock.recv(1 << 20)
            if not d:
                raise EOFError("closed in the body")
            self.buf += d
        body, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return status, hdrs, body

    def close(self):
        self.sock.close()
