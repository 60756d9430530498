#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpora of fuzz_logpos and fuzz_logspool (tests/fuzz/corpus/logpos, logspool):
# positions files (version 1 and 2, escaped paths, malformed lines) and spool files (complete,
# torn, consumed, corrupt), each file named by the SHA-1 of its content, so rerunning only adds
# files and inputs the fuzzer found stay. Usage: tests/fuzz/gen_corpus_logstate.py
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

V1 = b"sidecar-logs-positions 1\n"
V2 = b"sidecar-logs-positions 2\n"
POS = [
    b"", V2, V1,
    V2 + b"2049 131 4096 1024 cbf29ce484222325 /var/log/app.log\n",
    V2 + b"2049 131 4096 12 00000000000000ff /var/log/a b.log\n66 7 0 0 0000000000000000 /x\n",
    V2 + b"1 2 3 4 0000000000000005 /p%25q%0Ar%0D.log\n",
    V1 + b"2049 131 4096 /var/log/old.log\n\n1 2 3 /y\n",
    V2 + b"1 2 3 1025 0 /too-long-head\n",
    V2 + b"1 2 3 4 GG /bad-hex\n",
    V2 + b"1 2 3 4 00000000000000000 /hex-too-long\n",
    V2 + b"18446744073709551615 18446744073709551615 18446744073709551615 0 ffffffffffffffff /max\n",
    V2 + b"18446744073709551616 1 1 0 0 /overflow\n",
    V2 + b"1 2 3 4 5 /bad%2\n", V2 + b"1 2 3 4 5 /bad%zz\n", V2 + b"1 2\n",
    b"sidecar-logs-positions 3\n1 2 3 4 5 /future\n", b"garbage\n",
    V2 + b"1 2 3 4 5 /no-newline-at-end",
]

REC_MAGIC = 0x53434231


def record(items):
    body = b"".join(items)
    ends, at = [], 0
    for it in items:
        at += len(it)
        ends.append(at)
    return struct.pack("<III", REC_MAGIC, len(body), len(items)) + body + \
        b"".join(struct.pack("<I", e) for e in ends)


def spool(rd, recs, tail=b""):
    return b"SCSPOOL1" + struct.pack("<Q", rd) + b"".join(recs) + tail


r1 = record([b'{"a":1}\n', b'{"b":2}\n'])
r2 = record([b"line\n"])
SPOOL = [
    b"", spool(16, []), spool(16, [r1]), spool(16, [r1, r2]),
    spool(16 + len(r1), [r1, r2]),                     # the first batch was delivered
    spool(16, [r1, r2], r2[:7]),                       # torn last record
    spool(16, [r1], struct.pack("<III", REC_MAGIC, 1 << 30, 1)),  # a header promising too much
    spool(4096, [r1]),                                 # read offset past the end
    spool(8, [r1]),                                    # read offset inside the header
    b"NOTSPOOL" + bytes(8), b"SCSPOOL1",               # not ours; a cut header
    spool(16, [struct.pack("<III", REC_MAGIC, 3, 2) + b"abc" + struct.pack("<II", 2, 1)]),
    spool(16, [struct.pack("<III", REC_MAGIC, 3, 2) + b"abc" + struct.pack("<II", 1, 2)]),
    spool(16, [struct.pack("<III", REC_MAGIC, 3, 1) + b"abc" + struct.pack("<I", 9)]),
    spool(16, [struct.pack("<III", REC_MAGIC, 0, 0)]),
    spool(16, [struct.pack("<III", REC_MAGIC, 2, 65) + b"ab" + bytes(4 * 65)]),
    spool(16, [r1, struct.pack("<III", 0xdeadbeef, 1, 1) + b"x" + struct.pack("<I", 1)]),
]


def write(name, cases):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for c in cases:
        with open(os.path.join(d, hashlib.sha1(c).hexdigest()), "wb") as f:
            f.write(c)


write("logpos", POS)
write("logspool", SPOOL)
