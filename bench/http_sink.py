#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A counting HTTP/1.1 sink for bench/logs.sh: accepts POSTs on loopback (any path: the generic
HTTP output, Loki's /loki/api/v1/push, Elasticsearch's /_bulk), counts the records they carry
and answers 200 at once or after --latency milliseconds (a backend across a network), without
blocking other connections meanwhile. A record is counted by a marker every bench line holds
once (--marker), after undoing Content-Encoding gzip and, for application/x-protobuf (Loki),
snappy. GET /count answers "records requests bytes max_concurrent". A measuring tool, not a
fake of any product: the tests' fakes are tests/integration/fake_*.py.

Usage: http_sink.py PORT [--latency MS] [--marker TEXT]
"""
import argparse
import asyncio
import gzip

ES_OK = b'{"took":1,"errors":false,"items":[]}'


class Stats:
    records = 0
    requests = 0
    body_bytes = 0
    active = 0
    max_active = 0


class Sink(asyncio.Protocol):
    def __init__(self, args):
        self.args = args
        self.buf = bytearray()
        self.head = None
        self.need = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                del self.buf[:end + 4]
                self.need = 0
                for h in self.head[1:]:
                    k, _, v = h.partition(":")
                    if k.strip().lower() == "content-length":
                        self.need = int(v)
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[:self.need])
            del self.buf[:self.need]
            head, self.head = self.head, None
            self.request(head, body)

    def request(self, head, body):
        hdrs = {}
        for h in head[1:]:
            k, _, v = h.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if head[0].startswith("GET /count"):
            out = f"{Stats.records} {Stats.requests} {Stats.body_bytes} {Stats.max_active}\n"
            self.answer(200, out.encode(), "text/plain")
            return
        Stats.requests += 1
        Stats.body_bytes += len(body)
        if hdrs.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if hdrs.get("content-type", "").startswith("application/x-protobuf"):
            import snappy
            body = snappy.uncompress(body)
        n = body.count(self.args.marker)
        reply = ES_OK if "/_bulk" in head[0] else b"{}"
        Stats.active += 1
        Stats.max_active = max(Stats.max_active, Stats.active)

        def done():
            Stats.active -= 1
            Stats.records += n  # counted once answered: what the shipper saw acknowledged
            self.answer(200, reply, "application/json")

        if self.args.latency > 0:
            asyncio.get_running_loop().call_later(self.args.latency / 1000, done)
        else:
            done()

    def answer(self, status, body, ctype):
        if self.transport.is_closing():
            return
        self.transport.write(b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                             % (status, ctype.encode(), len(body)) + body)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--marker", default="request handled")
    args = ap.parse_args()
    args.marker = args.marker.encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(args), "127.0.0.1", args.port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
