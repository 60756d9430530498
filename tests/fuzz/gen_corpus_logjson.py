#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus of fuzz_logjson (tests/fuzz/corpus/logjson): log lines of many shapes,
# valid and not, each file named by the SHA-1 of its content, so rerunning only adds files and
# inputs the fuzzer found stay. Usage: tests/fuzz/gen_corpus_logjson.py
import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = [
    b"{}", b" \t{ } \r", b"", b"{", b"[1,2]", b"42", b"\"s\"", b"null",
    b'{"a":1,"b":"x"}',
    b'{"a" : "b" , "c":[1, 2,{"d":null}], "e":{}}',
    b'{"dup":1,"x":2,"dup":"last"}',
    b'{"esc":"q\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20AC \\ud83d\\ude00 \\u001f"}',
    b'{"n":-0,"i":9223372036854775807,"m":-9223372036854775808,"z":0}',
    b'{"r":1.5,"e":1e2,"E":-2.5E-3,"s":0.1,"t":1e-400,"u":-0.0,"big":1.7976931348623157e308}',
    b'{"t":true,"f":false,"z":null}',
    "{\"u\":\"\u00e9\u20ac\U0001F600\",\"\":\"empty key\"}".encode(),
    b'{"nested":{"a":{"b":[[],[{}]]},"a":2}}',
    b'{"ctl":"\\u0001\\u007f\x7f"}',
    b'{"i":9223372036854775808}', b'{"i":-9223372036854775809}', b'{"i":[99999999999999999999]}',
    b'{"r":1e400}', b'{"r":[1e999]}', b'{"r":{"x":-1e309}}',
    b'{"nul":"\\u0000"}', b'{"k\\u0000":1}', b'{"lone":"\\ud800"}', b'{"lone":"\\udc00"}',
    b'{"pair":"\\ud800\\u0041"}', b'{"pair":"\\ud800\\udbff"}', b'{"h":"\\uZZZZ"}',
    b'{"a":01}', b'{"a":1.}', b'{"a":.5}', b'{"a":1e}', b'{"a":+1}', b'{"a":-}',
    b'{"a":tru}', b'{"a":nul}', b'{"a":falsey}', b'{"a":"x\ty"}', b'{"a":"\\x"}',
    b'{"a":1,}', b"{,}", b'{"a"}', b'{"a":1 "b":2}', b'{"a":[1,]}', b'{"a":{"b"}}',
    b'{"a":"\xc0\x80"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xf4\x90\x80\x80"}', b'{"a":"\xff"}',
    b'{"a":1}\n{}', b"{'a':1}", b'{"a":1}x', b'{"a":1}  ', b'\xef\xbb\xbf{"bom":1}',
    b'{"a":"unterminated', b'{"a":[1,2', b'{"a":{"b":{', b'{"a":1\x00}',
    b'{"a":[' + b"[" * 2046 + b"]" * 2046 + b"]}",
    b'{"a":[' + b"[" * 2047 + b"]" * 2047 + b"]}",
    b'{"a":' + b'{"b":' * 100 + b"1" + b"}" * 100 + b"}",
    b'{"' + b'k"' * 1 + b':1,' + b",".join(b'"k%d":%d' % (i, i) for i in range(40)) + b"}",
]

lv = ["info", "warn", "error", "debug"]
for i in range(8):
    CASES.append(json.dumps({"ts": "2026-11-23T05:00:%02d.%06dZ" % (i, i), "level": lv[i % 4],
                             "msg": "request handled %d" % i, "path": "/api/v1/items/%d" % i,
                             "status": 200 + i, "duration_ms": i * 1.25, "user": "u%d" % i,
                             "tags": ["a", i], "http": {"method": "GET", "code": 200}},
                            ensure_ascii=i % 2 == 0).encode())


def main():
    d = os.path.join(HERE, "corpus", "logjson")
    os.makedirs(d, exist_ok=True)
    for c in CASES:
        with open(os.path.join(d, hashlib.sha1(c).hexdigest()), "wb") as f:
            f.write(c)


if __name__ == "__main__":
    main()
