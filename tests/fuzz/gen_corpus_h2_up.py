#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus for fuzz_proxy_h2_up (tests/fuzz/corpus/proxy_h2_up): the bytes an
# HTTP/2 server sends back to the proxy's upstream session while its requests are in flight on
# streams 1, 3, 5, 7 (the HTTP/1 clients, in order) and 9, 11 (the h2c client's two streams).
# Each file is one flags byte (bits 0-1: HTTP/1 clients - 1; bit 2: an h2c client too; bit 3: the
# server keeps the connection open after its last segment), then segments separated by
# "\n=====\n", sent one after another as the proxy writes. Frames are built by hand here and
# header blocks encoded with Debian's python3-hpack, so seeds can also be malformed on purpose.
# Re-running rewrites these files and leaves others (inputs the fuzzer found) alone. Run with
# /usr/bin/python3.
import os
import struct

from hpack import Encoder

SEP = b"\n=====\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WUPD, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def settings(**kv):
    ids = {"table": 1, "push": 2, "streams": 3, "window": 4, "frame": 5, "list": 6}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in kv.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


class Server:
    """One HPACK encoder per connection, as a server has."""

    def __init__(self):
        self.enc = Encoder()

    def headers(self, stream, fields, end_stream=False, end_headers=True):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream, self.enc.encode(fields))

    def response(self, stream, status=200, body=b"", extra=(), length=True, trailers=None):
        fields = [(":status", str(status))] + list(extra)
        if length:
            fields.append(("content-length", str(len(body))))
        out = self.headers(stream, fields, end_stream=not body and not trailers)
        if body:
            out += frame(DATA, 0 if trailers else END_STREAM, stream, body)
        if trailers:
            out += self.headers(stream, trailers, end_stream=True)
        return out


def seed(flags, *segments):
    return bytes([flags]) + SEP.join(segments)


def seeds():
    s = {}
    srv = Server()
    pre = settings(streams=100, window=65535) + SETTINGS_ACK
    s["get_200"] = seed(0, pre + srv.response(1, body=b"ok"))

    srv = Server()
    s["four_clients"] = seed(3, pre + srv.response(1, body=b"a") + srv.response(3, 201, b"bb") +
                             srv.response(5, 204, length=False) +
                             srv.response(7, extra=[("x-h", "1")], body=b""))

    srv = Server()
    s["chunked_trailers"] = seed(2, pre + srv.response(
        1, body=b"hello", length=False, trailers=[("grpc-status", "0"), ("x-sum", "abc")]) +
        srv.response(3, body=b"x" * 1000, length=False) + srv.response(5, 500, b"err"))

    srv = Server()
    s["interim_103_100"] = seed(1, pre + srv.headers(1, [(":status", "103"),
                                                         ("link", "</s.css>; rel=preload")]) +
                                srv.headers(3, [(":status", "100")]) +
                                srv.response(1, body=b"hi") + srv.response(3, body=b"posted"))

    srv = Server()
    s["segments_slow"] = seed(
        1 | 8, settings(streams=2),
        SETTINGS_ACK + srv.headers(1, [(":status", "200")]),
        frame(DATA, 0, 1, b"part1"),
        frame(DATA, END_STREAM, 1, b"part2") + srv.response(3, body=b"x"))

    srv = Server()
    s["rst_refused_goaway"] = seed(3, pre + frame(RST, 0, 1, struct.pack(">I", 7)) +
                                   srv.response(3, body=b"ok") +
                                   frame(GOAWAY, 0, 0, struct.pack(">II", 3, 0) + b"bye"))

    srv = Server()
    s["goaway_then_close"] = seed(1, pre + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))

    srv = Server()
    s["reset_mid_body"] = seed(0, pre + srv.headers(1, [(":status", "200"),
                                                        ("content-length", "100")]) +
                               frame(DATA, 0, 1, b"x" * 10) +
                               frame(RST, 0, 1, struct.pack(">I", 2)))

    srv = Server()
    s["ping_window"] = seed(0, pre + frame(PING, 0, 0, b"12345678") +
                            frame(WUPD, 0, 0, struct.pack(">I", 100000)) +
                            frame(WUPD, 0, 1, struct.pack(">I", 1000)) +
                            srv.response(1, body=b"ok"),
                            frame(PING, ACK, 0, b"\0" * 8))

    srv = Server()
    s["keepalive_no_ack"] = seed(8, pre + srv.response(1, body=b"ok"))

    srv = Server()
    blk = srv.enc.encode([(":status", "200"), ("x-long", "v" * 200), ("content-length", "0")])
    s["continuation"] = seed(0, pre + frame(HEADERS, END_STREAM, 1, blk[:50]) +
                             frame(CONT, 0, 1, blk[50:120]) + frame(CONT, END_HEADERS, 1,
                                                                    blk[120:]))

    srv = Server()
    s["padded_data"] = seed(0, pre + srv.headers(1, [(":status", "200")]) +
                            frame(DATA, END_STREAM | PADDED, 1, b"\x04data\0\0\0\0"))

    srv = Server()
    s["big_header_list"] = seed(0, pre + srv.headers(1, [(":status", "200"),
                                                         ("x-big", "b" * 9000)],
                                                     end_stream=True))

    srv = Server()
    s["malformed_uppercase"] = seed(1, pre + srv.headers(1, [(":status", "200"),
                                                             ("X-Upper", "1")]) +
                                    srv.response(3, body=b"fine"))

    srv = Server()
    s["malformed_no_status"] = seed(0, pre + srv.headers(1, [("x", "1")], end_stream=True))

    srv = Server()
    s["connection_header"] = seed(0, pre + srv.headers(1, [(":status", "200"),
                                                           ("connection", "close")]))

    srv = Server()
    s["length_mismatch"] = seed(0, pre + srv.headers(1, [(":status", "200"),
                                                         ("content-length", "2")]) +
                                frame(DATA, END_STREAM, 1, b"toolong"))

    srv = Server()
    s["data_before_headers"] = seed(0, pre + frame(DATA, END_STREAM, 1, b"x") +
                                    srv.response(1))

    srv = Server()
    s["push_promise"] = seed(0, pre + frame(PUSH, END_HEADERS, 1, struct.pack(">I", 2) +
                                            srv.enc.encode([(":method", "GET"), (":path", "/p"),
                                                            (":scheme", "http"),
                                                            (":authority", "x")])) +
                             srv.response(1, body=b"ok"))

    srv = Server()
    s["no_settings_first"] = seed(0, srv.response(1, body=b"ok"))

    srv = Server()
    s["h2c_client_too"] = seed(4, pre + srv.response(1, body=b"h1") +
                               srv.response(3, body=b"g", length=False,
                                            trailers=[("grpc-status", "0")]) +
                               srv.headers(5, [(":status", "103"), ("link", "</a>")]) +
                               srv.response(5, 201, b"p"))

    srv = Server()
    s["h2c_reset"] = seed(4 | 1, pre + srv.response(1, body=b"a") +
                          frame(RST, 0, 5, struct.pack(">I", 8)) + srv.response(3) +
                          srv.response(7, 503, b"no"))

    srv = Server()
    s["head_with_length"] = seed(3, pre + srv.response(1) + srv.response(3) + srv.response(5) +
                                 srv.headers(7, [(":status", "200"), ("content-length", "10")],
                                             end_stream=True))

    srv = Server()
    s["stream_limit_1"] = seed(2, settings(streams=1) + SETTINGS_ACK,
                               srv.response(1, body=b"one"),
                               srv.response(3, body=b"two"), srv.response(5, body=b"three"))

    srv = Server()
    s["tiny_window_upload"] = seed(1, settings(window=1) + SETTINGS_ACK,
                                   frame(WUPD, 0, 3, struct.pack(">I", 2)),
                                   frame(WUPD, 0, 3, struct.pack(">I", 10)) +
                                   srv.response(1) + srv.response(3, body=b"ok"))

    s["garbage"] = seed(0, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    s["settings_flood"] = seed(0, settings() * 40)
    return s


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "proxy_h2_up")
    os.makedirs(out, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
