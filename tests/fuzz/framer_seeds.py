#!/usr/bin/env python3
"""framer_seeds.py - writes tests/fuzz/corpus/framer/: scripts of operations
for fuzz_framer.c (see the format at the top of that file), one per scenario
the unit tests cover.  Run it again after changing the format:

    python3 tests/fuzz/framer_seeds.py
"""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "framer")


def header(line, max_line, buf_size, slots=64, nodes=8, bufs=64):
    return bytes([1 if line else 0, max_line - 1, buf_size - 4, slots - 1, nodes, bufs - 8])


def feed(i, data, reserve=False):
    return bytes([(i << 4) | (1 if reserve else 0), len(data)]) + data


def reserve(i):
    return bytes([(i << 4) | 3])


def unreserve(i):
    return bytes([(i << 4) | 4])


def end(i):
    return bytes([(i << 4) | 5])


def attach(c):
    return bytes([(c << 4) | 6])


def detach(c):
    return bytes([(c << 4) | 7])


def take(c, max_slices=8, whole=False, max_bytes=0xFF):
    return bytes([(c << 4) | 8, (max_slices - 1) | (0x80 if whole else 0), max_bytes])


def done(c):
    return bytes([(c << 4) | 9])


def skip(c, keep_last=False):
    return bytes([(c << 4) | 10 | (0x40 if keep_last else 0)])


def chunks(data, n):
    return [data[k:k + n] for k in range(0, len(data), n)]


SEEDS = {}

# Line framing: records across buffer boundaries, two outputs, both drained.
s = header(True, 100, 16) + attach(0) + attach(1)
for piece in chunks(b"alpha\nbeta gamma delta\nepsilon\nzeta eta theta iota\n", 16):
    s += feed(0, piece, reserve=True)
s += take(0, whole=True) + done(0) + take(1, max_slices=1) + done(1) + take(1) + done(1)
s += end(0) + detach(0) + detach(1)
SEEDS["line_two_outputs"] = s

# Two inputs interleaving partial records: records never mix in the log.
s = header(True, 64, 16) + attach(0)
s += feed(0, b"in0-part") + feed(1, b"in1-part") + feed(0, b"-end\nnext") + feed(1, b"-end\n")
s += take(0, whole=True) + done(0) + feed(0, b"\n") + take(0) + done(0)
SEEDS["line_two_inputs"] = s

# A record longer than max_line: good records first, then -EMSGSIZE.
s = header(True, 8, 32) + attach(0)
s += feed(0, b"ok\nfine\nthis one is far too long\n") + take(0) + done(0)
s += feed(1, b"1234567") + feed(1, b"8")  # reaches max_line with no end
SEEDS["line_too_long"] = s

# Raw framing: chunks as they come, takes limited in slices and bytes.
s = header(False, 1, 8) + attach(0) + attach(2)
for k in range(12):
    s += feed(k % 3, bytes([65 + k]) * (1 + k % 8))
s += take(0, max_slices=2, max_bytes=1) + done(0) + take(0, max_bytes=3) + take(2)
s += done(0) + done(2) + detach(2)
SEEDS["raw_limits"] = s

# Small reads are copied into the input's previous buffer.
s = header(True, 200, 64, bufs=8) + attach(0)
for k in range(40):
    s += feed(0, b"x" if k % 7 else b"\n", reserve=True)
s += take(0, whole=True) + done(0)
SEEDS["line_small_reads"] = s

# A late joiner gets whole records only; skip with keep_last (on_lag: drop).
s = header(True, 50, 16) + attach(0)
s += feed(0, b"first\nsecond half") + attach(1) + feed(0, b" done\nthird\n")
s += feed(0, b"fourth\n") + skip(1, keep_last=True) + skip(0) + take(1) + done(1)
s += skip(0, keep_last=True) + take(0) + done(0)
SEEDS["line_late_join_skip"] = s

# No output attached: complete bytes are released, partial kept.
s = header(True, 30, 16) + feed(0, b"gone\nkept") + attach(0) + feed(0, b" too\n")
s += take(0) + done(0)
SEEDS["line_no_reader"] = s

# A tiny log: reservations run out of slots and nodes.
s = header(True, 40, 4, slots=1, nodes=1, bufs=16) + attach(0)
for k in range(20):
    s += reserve(k % 3) + feed(k % 3, b"ab" if k % 5 else b"c\n")
s += unreserve(0) + take(0, max_slices=1) + done(0) + end(1) + end(2)
SEEDS["line_tiny_log"] = s

# Sends held while more arrives, then a detach with slices pending.
s = header(False, 1, 16, slots=16, bufs=10) + attach(0) + attach(1)
for k in range(20):
    s += feed(k % 2, bytes([48 + k % 10]) * 16)
    if k % 4 == 0:
        s += take(0, max_slices=2)
s += detach(1) + done(0) + take(0) + done(0)
SEEDS["raw_held_sends"] = s

# Detach and reattach at the tail, in the middle of a partial record.
s = header(True, 100, 20) + attach(0) + feed(0, b"one\ntw") + detach(0)
s += attach(0) + feed(0, b"o\nthree\n") + take(0, whole=True, max_slices=1) + done(0)
s += take(0) + done(0)
SEEDS["line_reattach"] = s

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
