"""log.access_interval: connections open longer than the interval get event=progress
lines with the bytes so far; short ones get only their close line."""

import socket
import time

from helpers import T, connect, echo_roundtrip, recv_exact, service


def test_progress_lines(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"log": {"access_interval": "500ms"},
                      "services": [service([backend.addr])]})

    # A short connection: closed well before the interval.
    with connect(f.addr()) as quick:
        quick_client = "127.0.0.1:%d" % quick.getsockname()[1]
        quick.sendall(b"q")
        assert recv_exact(quick, 1) == b"q"

    # A long one: 100 bytes every 100 ms for about 1.8 s.
    with connect(f.addr()) as c:
        client = "127.0.0.1:%d" % c.getsockname()[1]
        for _ in range(18):
            c.sendall(b"x" * 100)
            assert recv_exact(c, 100) == b"x" * 100
            time.sleep(0.1)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(10) == b""

    close = f.wait_access(2)
    final = [l for l in close if l["client"] == client][0]
    progress = [l for l in f.logs("progress") if l["client"] == client]
    assert 2 <= len(progress) <= 5, f"{len(progress)} progress lines for a 1.8 s connection"
    for p in progress:
        assert p["service"] == "web" and p["backend"] == backend.addr
        assert "end" not in p or p["end"] in ("", "-"), p
        assert 0 < p["bytes_in"] <= final["bytes_in"] == 1800
        assert 0 < p["bytes_out"] <= final["bytes_out"] == 1800
    # Bytes and durations only grow.
    for a, b in zip(progress, progress[1:]):
        assert a["bytes_in"] <= b["bytes_in"] and a["duration_ms"] < b["duration_ms"]
    assert not [l for l in f.logs("progress") if l["client"] == quick_client]

    # Progress lines are spaced by about the interval.
    gaps = [b["duration_ms"] - a["duration_ms"] for a, b in zip(progress, progress[1:])]
    assert all(300 <= g <= 500 + T(0.5) * 1000 for g in gaps), gaps


def test_no_progress_by_default(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        for _ in range(4):
            c.sendall(b"y")
            assert recv_exact(c, 1) == b"y"
            time.sleep(0.3)
    f.wait_access(1)
    assert not f.logs("progress")
    assert echo_roundtrip(f.addr(), b"z") == b"z"
