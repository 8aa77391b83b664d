#!/usr/bin/env python3
"""Writes the hand-made damaged chunks in testdata/recovery/ (committed).

Each case is a data dir with one category `events` holding one unsealed
chunk `node1-chunk000000000` (+ `.idx`), as a crash could leave it, and
`expected.txt`: exactly the messages recovery must keep. Formats: see
docs/formats.md. Re-run only when the format changes.
"""
import os
import struct

def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

HEADER = b"CBCHIDX\0" + struct.pack("<II", 1, 0)

def record(off, length, crc):
    return struct.pack("<QII", off, length, crc)

def build(batches):
    idx, data = bytearray(HEADER), bytearray()
    for b in batches:
        idx += record(len(data), len(b), crc32c(b))
        data += b
    return idx, data

def write_case(name, data, idx, expected, capacity=None):
    d = os.path.join(os.path.dirname(__file__), "recovery", name, "events")
    os.makedirs(d, exist_ok=True)
    if capacity is not None:
        data = bytes(data) + b"\0" * (capacity - len(data))
    with open(os.path.join(d, "node1-chunk000000000"), "wb") as f:
        f.write(data)
    with open(os.path.join(d, "node1-chunk000000000.idx"), "wb") as f:
        f.write(idx)
    with open(os.path.join(os.path.dirname(d), "expected.txt"), "wb") as f:
        f.write(expected)

good = [b"alpha\n", b"beta\ngamma\n", b"delta\n"]
idx, data = build(good)
all_msgs = b"".join(good)

# Clean but unsealed, file still preallocated with zeroes (kill -9 mid-chunk).
write_case("zero_tail", data, idx, all_msgs, capacity=4096)
# Last batch only partly written: its bytes do not match its CRC.
torn = bytearray(data); torn[-3:] = b"\0\0\0"
write_case("torn_tail", torn, idx, b"".join(good[:2]), capacity=4096)
# Bytes of a batch whose index record never made it (an unacknowledged write).
write_case("partial_line", data + b"epsil", idx, all_msgs, capacity=4096)
# Index cut inside its last record.
write_case("torn_index", data, idx[:-5], b"".join(good[:2]), capacity=4096)
# Index followed by zeroed (never written) records.
write_case("zero_index_tail", data, idx + b"\0" * 64, all_msgs, capacity=4096)
# A 2000-byte message (longer than any read window used by the test) survives intact.
long_line = b"L" * 1999 + b"\n"
idx2, data2 = build([long_line, b"short\n"])
write_case("long_line", data2, idx2, long_line + b"short\n", capacity=8192)
# Middle batch corrupted: everything from it on is cut (and logged).
bad_mid = bytearray(data); bad_mid[8] ^= 0x20
write_case("corrupt_middle", bad_mid, idx, good[0], capacity=4096)
