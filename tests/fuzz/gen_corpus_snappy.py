#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus for fuzz_snappy (tests/fuzz/corpus/snappy): the input is compressed as it
# is, and when its first byte is odd also repeated up to 80 KiB. Log lines (what Loki pushes hold),
# runs, text with no repeats, and sizes around the encoder's edges (16 bytes, 60-byte literals).
# Re-running rewrites these files and leaves others (inputs the fuzzer found) alone.
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
rnd = random.Random(23)
lines = b"".join(
    b'{"ts":"2026-12-07T02:00:00.%06dZ","level":"%s","msg":"%s","n":%d}\n'
    % (i, rnd.choice([b"info", b"warn"]), b" ".join(rnd.choice([b"alpha", b"GET", b"ok", b"req"])
                                                     for _ in range(6)), i)
    for i in range(40))
SEEDS = {
    "empty": b"",
    "one": b"a",
    "sixteen": b"0123456789abcdef",
    "seventeen": b"0123456789abcdefg",
    "zeros": b"\0" * 300,
    "period3": b"\x01abc" * 100,
    "lines": lines,
    "lines-repeated": b"\x01" + lines[:500],
    "random": bytes(rnd.randrange(256) for _ in range(700)),
    "random-repeated": b"\x03" + bytes(rnd.randrange(256) for _ in range(300)),
    "literal61": bytes(rnd.randrange(256) for _ in range(61)) + b"xyzw" * 20,
}

out = os.path.join(HERE, "corpus", "snappy")
os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
