"""Back-pressure (SPEC section 3): a slow reader slows its writer; ferry's memory stays
bounded by the buffers in flight, never by how much a peer sends."""

import hashlib
import os
import socket
import threading
import time

from helpers import ASAN, Deadline, T, connect, service

MIB = 1 << 20
TOTAL_MIB = 300
SLOW_SECONDS = 3.0
SLOW_RATE = 10 * MIB  # bytes/s while slow
RSS_GROWTH_LIMIT_KB = 64 * 1024


def test_slow_backend_bounds_memory(ferry, servers):
    # The backend reads at 10 MB/s for 3 s, then as fast as it can.
    backend = servers.sink(lambda t: SLOW_RATE if t < SLOW_SECONDS else None,
                           conn_timeout=T(60))
    env = None
    if ASAN:
        # ASan's quarantine keeps freed buffers resident; keep it small so RSS
        # measures ferry's buffering, not the sanitizer's.
        env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                ":quarantine_size_mb=8").lstrip(":")}
    f = ferry(config={"services": [service([backend.addr])]}, env=env)

    c = connect(f.addr(), timeout=T(60))
    base_kb = f.rss_kb()
    block = os.urandom(MIB)
    sent = [0]
    hasher = hashlib.sha256()
    errors = []

    def sender():
        try:
            for i in range(TOTAL_MIB):
                chunk = i.to_bytes(8, "big") + block[8:]  # every MiB differs
                hasher.update(chunk)
                c.sendall(chunk)
                sent[0] += len(chunk)
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    start = time.monotonic()
    t.start()
    peak_kb = base_kb
    sent_after_2s = None
    dl = Deadline(T(60))
    while t.is_alive() and not dl.expired():
        peak_kb = max(peak_kb, f.rss_kb())
        if sent_after_2s is None and time.monotonic() - start >= 2.0:
            sent_after_2s = sent[0]
        time.sleep(0.05)
    t.join(1)
    assert not t.is_alive(), "the client could not send everything in time"
    assert not errors, errors
    res = backend.result(timeout=T(30))
    elapsed = time.monotonic() - start
    c.close()

    assert res["received"] == TOTAL_MIB * MIB and res["sha256"] == hasher.hexdigest()
    growth = peak_kb - base_kb
    assert growth < RSS_GROWTH_LIMIT_KB, \
        f"ferry's RSS grew by {growth // 1024} MiB (from {base_kb // 1024} MiB)"
    # While the backend read 20 MB in 2 s, the client could not run far ahead: only
    # socket and pipe buffers sit between them.
    assert sent_after_2s is not None and sent_after_2s < 120 * MIB, \
        f"client sent {sent_after_2s // MIB} MiB in the first 2 s"
    print(f"300 MiB in {elapsed:.1f}s, RSS {base_kb // 1024} -> peak {peak_kb // 1024} MiB")
    (line,) = f.wait_access(1)
    assert line["bytes_in"] == TOTAL_MIB * MIB, line
