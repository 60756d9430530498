#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpora for fuzz_tls_sniff (tests/fuzz/corpus/tls_sniff: a connection's first
# bytes: real ClientHellos from Python's ssl module, HTTP/1 and HTTP/2 prefaces, near misses) and
# fuzz_x509_id (tests/fuzz/corpus/x509_id: first byte 0x00/0x02 then a DER certificate from
# tests/certs.sh, 0x02 adding a By value that needs quoting; first byte 0x01 then a SPIFFE ID
# text). Re-running rewrites these files and leaves others (inputs the fuzzer found) alone.
# Run with /usr/bin/python3; needs the openssl CLI.
import os
import ssl
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def client_hello(sni, alpn, maximum):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


SNIFF = {
    "tls13-hello": client_hello("example.test", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3),
    "tls12-hello": client_hello(None, None, ssl.TLSVersion.TLSv1_2),
    "http1-get": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "short-handshake": b"\x16\x03",
    "record-too-short": b"\x16\x03\x01\x00\x00\x01",
    "record-too-long": b"\x16\x03\x01\x40\x01\x01",
    "server-hello": b"\x16\x03\x03\x00\x10\x02",
    "sslv2-hello": b"\x80\x2e\x01\x03\x01\x00\x15\x00",
    "alert": b"\x15\x03\x03\x00\x02\x02\x28",
    "empty": b"",
}

IDS = [
    b"spiffe://cluster.local/ns/default/sa/web",
    b"spiffe://example.org",
    b"spiffe://example.org/a/b/c",
    b"spiffe://td/ns/a/sa/b/extra",
    b"spiffe://Upper.case/x",
    b"spiffe://td/x/",
    b"spiffe://td/../x",
    b"spiffe://td:80/x",
    b"spiffe://td/x?y",
    b"https://td/x",
]


def main():
    for name, data in SNIFF.items():
        write("tls_sniff", name, data)
    for i, text in enumerate(IDS):
        write("x509_id", "id-%02d" % i, b"\x01" + text)
    certs = os.path.join(os.path.dirname(HERE), "certs.sh")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["sh", certs, d], check=True)
        for name in ["server", "client", "two_uris", "rsa", "ed25519", "wild", "expired",
                     "other", "ca"]:
            der = subprocess.run(["openssl", "x509", "-in", os.path.join(d, name + ".pem"),
                                  "-outform", "DER"], check=True, capture_output=True).stdout
            write("x509_id", "cert-" + name, b"\x00" + der)
            if name in ("server", "client"):
                write("x509_id", "cert-by-" + name, b"\x02" + der)


if __name__ == "__main__":
    main()
