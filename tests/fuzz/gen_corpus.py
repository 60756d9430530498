#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpora for fuzz_http1 (tests/fuzz/corpus/http1) and fuzz_chunked
# (tests/fuzz/corpus/chunked): valid messages of many shapes plus one file per smuggling vector
# the parser must reject. Files are named after what they hold; re-running rewrites them and leaves
# other files (such as inputs the fuzzer found) alone. Usage: tests/fuzz/gen_corpus.py
import os

HERE = os.path.dirname(os.path.abspath(__file__))
H = b"Host: example.com"


def req(line, *fields, body=b""):
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


HTTP1 = {
    # valid requests
    "ok-curl-get": req(b"GET / HTTP/1.1", b"Host: example.com", b"User-Agent: curl/8.5.0",
                       b"Accept: */*"),
    "ok-browser-get": req(
        b"GET /static/app.js?v=3 HTTP/1.1", b"Host: www.example.com",
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        b"Accept-Language: en-US,en;q=0.5", b"Accept-Encoding: gzip, deflate, br",
        b"Referer: https://www.example.com/", b"Connection: keep-alive",
        b"Cookie: session=abc123; theme=dark", b"Upgrade-Insecure-Requests: 1",
        b"Sec-Fetch-Dest: document", b"Sec-Fetch-Mode: navigate", b"Sec-Fetch-Site: same-origin"),
    "ok-post-json": req(b"POST /api/v1/items HTTP/1.1", H, b"Content-Type: application/json",
                        b"Content-Length: 18", body=b'{"id":1,"ok":true}'),
    "ok-post-empty": req(b"POST /x HTTP/1.1", H, b"Content-Length: 0"),
    "ok-put-leading-zeros": req(b"PUT /x HTTP/1.1", H, b"Content-Length: 0005", body=b"hello"),
    "ok-chunked": req(b"POST /up HTTP/1.1", H, b"Transfer-Encoding: chunked",
                      body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "ok-chunked-trailers": req(b"POST /up HTTP/1.1", H, b"Transfer-Encoding: chunked",
                               b"Trailer: X-Checksum",
                               body=b"3;ext=1\r\nabc\r\n0\r\nX-Checksum: 900150983cd2\r\n\r\n"),
    "ok-chunked-extensions": req(b"POST /up HTTP/1.1", H, b"Transfer-Encoding: chunked",
                                 body=b"a ; name = \"v\\\"al\" ;flag\r\n0123456789\r\n0\r\n\r\n"),
    "ok-gzip-chunked": req(b"POST /up HTTP/1.1", H, b"Transfer-Encoding: gzip, chunked",
                           body=b"0\r\n\r\n"),
    "ok-te-two-fields": req(b"POST /up HTTP/1.1", H, b"Transfer-Encoding: gzip",
                            b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "ok-connect": req(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443",
                      b"Proxy-Authorization: Basic dXNlcjpwYXNz"),
    "ok-connect-ipv6": req(b"CONNECT [2001:db8::1]:8443 HTTP/1.1", b"Host: [2001:db8::1]:8443"),
    "ok-options-star": req(b"OPTIONS * HTTP/1.1", H),
    "ok-absolute-form": req(b"GET http://example.com:8080/a/b?c=d&e=f HTTP/1.1", H,
                            b"Proxy-Connection: keep-alive"),
    "ok-keepalive-10": req(b"GET / HTTP/1.0", b"Connection: keep-alive"),
    "ok-http10-plain": req(b"GET /index.html HTTP/1.0", b"User-Agent: Wget/1.21"),
    "ok-http10-post": req(b"POST /form HTTP/1.0", b"Content-Length: 3", body=b"a=b"),
    "ok-close": req(b"GET / HTTP/1.1", H, b"Connection: close"),
    "ok-connection-lists": req(b"GET / HTTP/1.1", H, b"Connection: foo, keep-alive",
                               b"Connection: Close"),
    "ok-pipelined": req(b"GET /1 HTTP/1.1", H) + req(b"GET /2 HTTP/1.1", H) +
    req(b"POST /3 HTTP/1.1", H, b"Content-Length: 2", body=b"ok"),
    "ok-websocket": req(b"GET /chat HTTP/1.1", b"Host: server.example.com", b"Upgrade: websocket",
                        b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                        b"Sec-WebSocket-Version: 13", b"Origin: http://example.com"),
    "ok-h2c-upgrade": req(b"GET / HTTP/1.1", H, b"Connection: Upgrade, HTTP2-Settings",
                          b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
    "ok-expect-continue": req(b"PUT /big HTTP/1.1", H, b"Expect: 100-continue",
                              b"Content-Length: 10", body=b"0123456789"),
    "ok-leading-crlf": b"\r\n\r\n" + req(b"GET / HTTP/1.1", H),
    "ok-ows": req(b"GET / HTTP/1.1", b"Host:example.com", b"X-A: \t spaced value \t ",
                  b"X-Empty:", b"X-Tab:\tv"),
    "ok-obs-text": req(b"GET / HTTP/1.1", H, b"X-Name: caf\xc3\xa9 \x80\xff"),
    "ok-tchar-method": req(b"M-SEARCH / HTTP/1.1", H, b"!#$%&'*+-.^_`|~09AZaz: v"),
    "ok-long-target": req(b"GET /" + b"a/" * 200 + b"?q=" + b"x" * 300 + b" HTTP/1.1", H),
    "ok-many-headers": req(b"GET / HTTP/1.1", H, *[b"X-H%02d: value-%d" % (i, i) for i in range(60)]),
    "ok-empty-host": req(b"GET / HTTP/1.1", b"Host:"),
    "ok-host-port": req(b"GET / HTTP/1.1", b"Host: 127.0.0.1:8080"),
    "ok-incomplete-head": b"GET / HTTP/1.1\r\nHost: exa",
    "ok-incomplete-body": req(b"POST / HTTP/1.1", H, b"Content-Length: 100", body=b"partial"),
    # valid responses
    "resp-200-length": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "resp-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\n",
    "resp-eof": b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil close",
    "resp-204": b"HTTP/1.1 204 No Content\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
    "resp-304": b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n",
    "resp-100-then-200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "resp-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "resp-no-reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "resp-empty-reason": b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    "resp-close": b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    # smuggling vectors and malformed heads: all must be rejected
    "bad-cl-te": req(b"POST / HTTP/1.1", H, b"Content-Length: 6", b"Transfer-Encoding: chunked",
                     body=b"0\r\n\r\nX"),
    "bad-te-cl": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked", b"Content-Length: 6",
                     body=b"0\r\n\r\nX"),
    "bad-cl-dup": req(b"POST / HTTP/1.1", H, b"Content-Length: 5", b"Content-Length: 5",
                      body=b"hello"),
    "bad-cl-dup-differ": req(b"POST / HTTP/1.1", H, b"Content-Length: 5", b"Content-Length: 6"),
    "bad-cl-list": req(b"POST / HTTP/1.1", H, b"Content-Length: 5, 5", body=b"hello"),
    "bad-cl-sign": req(b"POST / HTTP/1.1", H, b"Content-Length: +5", body=b"hello"),
    "bad-cl-negative": req(b"POST / HTTP/1.1", H, b"Content-Length: -1"),
    "bad-cl-space": req(b"POST / HTTP/1.1", H, b"Content-Length: 1 0"),
    "bad-cl-hex": req(b"POST / HTTP/1.1", H, b"Content-Length: 0x5"),
    "bad-cl-overflow": req(b"POST / HTTP/1.1", H, b"Content-Length: 18446744073709551617"),
    "bad-te-not-final": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked, gzip"),
    "bad-te-identity": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: identity"),
    "bad-te-twice": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked",
                        b"Transfer-Encoding: chunked"),
    "bad-te-xchunked": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: xchunked"),
    "bad-te-comma": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked,"),
    "bad-te-vtab": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding:\x0bchunked"),
    "bad-te-http10": req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "bad-te-space-colon": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding : chunked"),
    "bad-obs-fold": req(b"GET / HTTP/1.1", H, b"X-A: a", b" folded"),
    "bad-obs-fold-te": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding:", b" chunked"),
    "bad-ws-first-line": b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n",
    "bad-lf-request-line": b"GET / HTTP/1.1\nHost: example.com\r\n\r\n",
    "bad-lf-header": b"GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n",
    "bad-lf-end": b"GET / HTTP/1.1\r\nHost: example.com\r\n\n",
    "bad-lf-only": b"GET / HTTP/1.1\nHost: example.com\n\n",
    "bad-cr-value": b"GET / HTTP/1.1\r\nHost: example.com\r\nX: a\rb\r\n\r\n",
    "bad-cr-line-start": b"GET / HTTP/1.1\r\nHost: example.com\r\n\rX: y\r\n\r\n",
    "bad-space-colon": b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",
    "bad-name-char": req(b"GET / HTTP/1.1", H, b"X(y): z"),
    "bad-name-empty": req(b"GET / HTTP/1.1", H, b": z"),
    "bad-name-nocolon": req(b"GET / HTTP/1.1", H, b"Xyz"),
    "bad-nul-value": req(b"GET / HTTP/1.1", H, b"X: a\x00b"),
    "bad-ctl-value": req(b"GET / HTTP/1.1", H, b"X: a\x01b"),
    "bad-del-value": req(b"GET / HTTP/1.1", H, b"X: a\x7fb"),
    "bad-host-missing": req(b"GET / HTTP/1.1", b"Accept: */*"),
    "bad-host-dup": req(b"GET / HTTP/1.1", b"Host: a.example", b"Host: b.example"),
    "bad-host-invalid": req(b"GET / HTTP/1.1", b"Host: a.example/evil"),
    "bad-host-userinfo": req(b"GET / HTTP/1.1", b"Host: user@a.example"),
    "bad-version-20": req(b"GET / HTTP/2.0", H),
    "bad-version-12": req(b"GET / HTTP/1.2", H),
    "bad-version-lower": req(b"GET / http/1.1", H),
    "bad-version-garbage": req(b"GET / HTTP/1.1x", H),
    "bad-http09": b"GET /\r\n\r\n",
    "bad-double-space": req(b"GET  / HTTP/1.1", H),
    "bad-target-ctl": req(b"GET /a\x01b HTTP/1.1", H),
    "bad-target-utf8": req(b"GET /caf\xc3\xa9 HTTP/1.1", H),
    "bad-star-get": req(b"GET * HTTP/1.1", H),
    "bad-connect-origin": req(b"CONNECT / HTTP/1.1", H),
    "bad-authority-get": req(b"GET example.com:80 HTTP/1.1", H),
    "bad-414": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n\r\n",
    "bad-414-incomplete": b"GET /" + b"a" * 8300,
    "bad-431-size": req(b"GET / HTTP/1.1", H, *[b"X-%03d: " % i + b"v" * 700 for i in range(95)]),
    "bad-431-count": req(b"GET / HTTP/1.1", H, *[b"X-%03d: v" % i for i in range(101)]),
    "bad-empty-lines": b"\r\n" * 6 + req(b"GET / HTTP/1.1", H),
    "bad-resp-cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad-resp-status": b"HTTP/1.1 2000 OK\r\n\r\n",
    "bad-resp-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    # a Connection header naming framing or routing fields (a proxy would drop them)
    "bad-conn-names-cl": req(b"POST / HTTP/1.1", H, b"Content-Length: 5",
                             b"Connection: content-length", body=b"GET /"),
    "bad-conn-names-te": req(b"POST / HTTP/1.1", H, b"Connection: keep-alive, Transfer-Encoding",
                             b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "bad-conn-names-host": req(b"GET / HTTP/1.1", H, b"Connection: host"),
    "bad-conn-names-trailer": req(b"GET / HTTP/1.1", H, b"Connection: Trailer"),
    "ok-conn-te": req(b"GET / HTTP/1.1", H, b"Connection: TE", b"TE: trailers"),
    # field names spelling framing with '_' (headers_with_underscores acts on them)
    "ok-underscore-te": req(b"POST / HTTP/1.1", H, b"Content-Length: 5",
                            b"Transfer_Encoding: chunked", body=b"0\r\n\r\n"),
    "ok-underscore-cl": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked",
                            b"Content_Length: 0", body=b"0\r\n\r\n"),
    "ok-underscore-first": req(b"GET / HTTP/1.1", H, b"_x: 1"),
}

CHUNKED = {
    "ok-one": b"5\r\nhello\r\n0\r\n\r\n",
    "ok-many": b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "ok-upper-hex": b"1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n",
    "ok-leading-zeros": b"000003\r\nabc\r\n0000\r\n\r\n",
    "ok-16-digits": b"0000000000000002\r\nhi\r\n0\r\n\r\n",
    "ok-extensions": b"3;a=b;c;d=\"q\\\"s\"\r\nabc\r\n0;last=1\r\n\r\n",
    "ok-extensions-bws": b"3 ; a = b ;c\r\nabc\r\n0\r\n\r\n",
    "ok-trailers": b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nX-Empty:\r\nX-Ows:  v  \r\n\r\n",
    "ok-binary": b"4\r\n\x00\r\n\xff\r\n0\r\n\r\n",
    "ok-followed": b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
    "ok-incomplete": b"10\r\n0123456",
    "ok-empty": b"0\r\n\r\n",
    "bad-no-size": b"\r\nabc\r\n",
    "bad-not-hex": b"g\r\nabc\r\n",
    "bad-17-digits": b"00000000000000001\r\na\r\n0\r\n\r\n",
    "bad-overflow": b"10000000000000000\r\n",
    "bad-sign": b"-1\r\na\r\n",
    "bad-0x": b"0x1\r\na\r\n",
    "bad-space-before": b" 1\r\na\r\n0\r\n\r\n",
    "bad-space-after": b"1 \r\na\r\n0\r\n\r\n",
    "bad-lf-size": b"1\na\r\n0\r\n\r\n",
    "bad-ext-empty": b"1;\r\na\r\n0\r\n\r\n",
    "bad-ext-noval": b"1;a=\r\na\r\n0\r\n\r\n",
    "bad-ext-quote": b"1;a=\"x\r\na\r\n0\r\n\r\n",
    "bad-no-crlf-after-data": b"1\r\nab\r\n0\r\n\r\n",
    "bad-lf-after-data": b"1\r\na\n0\r\n\r\n",
    "bad-trailer-fold": b"0\r\nX: a\r\n b\r\n\r\n",
    "bad-trailer-space-colon": b"0\r\nX : a\r\n\r\n",
    "bad-trailer-ctl": b"0\r\nX: \x01\r\n\r\n",
    "bad-final-lf": b"0\r\n\n",
    "bad-size-line-long": b"1;" + b"e" * 5000 + b"\r\na\r\n0\r\n\r\n",
    "bad-trailers-large": b"0\r\n" + b"X: " + b"v" * 17000 + b"\r\n\r\n",
    # forbidden trailer fields (refused when strict: inputs of odd length in fuzz_chunked)
    "trailer-cl": b"1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n",
    "trailer-te": b"1\r\na\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n ",
    "trailer-host": b"0\r\nHost: evil\r\n\r\n",
    "trailer-authorization": b"0\r\nauthorization: Bearer x\r\n\r\n ",
}


def write(kind, cases):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    for name, data in cases.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{kind}: {len(cases)} files in {d}")


if __name__ == "__main__":
    write("http1", HTTP1)
    write("chunked", CHUNKED)
