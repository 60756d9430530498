#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus for fuzz_proxy_detect (tests/fuzz/corpus/proxy_detect): the first bytes
# of intercepted connections: HTTP/1 request lines, the HTTP/2 preface, real ClientHellos from
# Python's ssl module (with and without SNI and ALPN, one split across two records), a
# server-first protocol's client reply, and near misses. Re-running rewrites these files and
# leaves others (inputs the fuzzer found) alone. Run with /usr/bin/python3.
import ssl

# Run as a script: its directory is on the path.
from gen_corpus_tls import client_hello, write


def split_records(hello, at):
    """The same handshake bytes in two records (a ClientHello may span records)."""
    body = hello[5:]
    hdr = hello[:3]
    a, b = body[:at], body[at:]
    return (hdr + len(a).to_bytes(2, "big") + a) + (hdr + len(b).to_bytes(2, "big") + b)


H13 = client_hello("api.example.test", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3)
SEEDS = {
    "http1-get": b"GET /path?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "http1-post-10": b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    "http1-leading-crlf": b"\r\nOPTIONS * HTTP/1.1\r\n\r\n",
    "http1-partial": b"DELETE /a/b",
    "http1-bad-version": b"GET / HTTP/2.0\r\n\r\n",
    "http1-lf-only": b"PATCH /x HTTP/1.1\nHost: b\n\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    "h2-partial": b"PRI * HTTP/2",
    "tls13-sni-alpn": H13,
    "tls12-no-sni": client_hello(None, None, ssl.TLSVersion.TLSv1_2),
    "tls12-sni": client_hello("Mixed.Case.Example", ["http/1.1"], ssl.TLSVersion.TLSv1_2),
    "tls-split": split_records(H13, 40),
    "tls-truncated": H13[: len(H13) // 2],
    "mysql-reply": b"\x20\x00\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01\x21",
    "smtp-ehlo": b"EHLO client.example\r\n",
    "redis-ping": b"*1\r\n$4\r\nPING\r\n",
    "binary": bytes(range(256)),
    "empty": b"",
}

for name, data in SEEDS.items():
    write("proxy_detect", name, data)
