"""connect_timeout (with a backend that drops SYNs) and idle_timeout."""

import socket
import time

import pytest

from helpers import T, ask_tag, connect, recv_line, service, wait_closed


def test_connect_timeout_retries_on_live_backend(ferry, servers):
    hole, live = servers.blackhole(), servers.tag("live")
    f = ferry(config={"services": [service([hole.addr, live.addr], balance="round_robin",
                                           connect_timeout="300ms", retries=1)]})
    took = []
    for _ in range(4):
        t0 = time.monotonic()
        assert ask_tag(f.addr()) == "live"
        took.append(time.monotonic() - t0)
    # Those that tried the blackhole first waited for connect_timeout, no longer.
    assert max(took) >= 0.25, f"no connection waited for the blackhole: {took}"
    assert max(took) < 0.3 + T(2), took
    lines = f.wait_access(4)
    assert all(l["backend"] == live.addr for l in lines), lines


@pytest.mark.parametrize("retries", [0, 2])
def test_connect_timeout_only_blackhole(ferry, servers, retries):
    """Every try times out: the client is closed after about
    connect_timeout * (retries + 1), with end=connect_failed."""
    hole = servers.blackhole()
    f = ferry(config={"services": [service([hole.addr], connect_timeout="300ms",
                                           retries=retries)]})
    expected = 0.3 * (retries + 1)
    with connect(f.addr()) as c:
        t0 = time.monotonic()
        wait_closed(c, expected + T(5))
        took = time.monotonic() - t0
    assert expected - 0.05 <= took <= expected + T(1.5), \
        f"closed after {took:.2f}s, expected about {expected:.1f}s"
    (line,) = f.wait_access(1)
    assert line["end"] == "connect_failed" and line["backend"] == "-", line


def test_idle_timeout_closes_both_sides(ferry, servers):
    backend = servers.watch(greeting=b"hi\n")
    f = ferry(config={"services": [service([backend.addr], idle_timeout="500ms")]})
    with connect(f.addr()) as c:
        assert recv_line(c) == "hi"
        t0 = time.monotonic()
        assert backend.result()["event"] == "connected"
        wait_closed(c, T(5))
        took = time.monotonic() - t0
    assert 0.4 <= took <= 0.5 + T(1.5), f"idle connection closed after {took:.2f}s"
    end = backend.result(timeout=T(3))
    assert end["event"] == "end", end  # the backend's side was closed too
    (line,) = f.wait_access(1)
    assert line["end"] == "idle_timeout", line
    assert (line["bytes_in"], line["bytes_out"]) == (0, 3), line


@pytest.mark.parametrize("direction", ["client_to_backend", "backend_to_client"])
def test_traffic_keeps_connection_alive(ferry, servers, direction):
    """A byte every 200 ms in either direction keeps a 1 s idle_timeout from firing
    for 2.5 s."""
    ticks = 12

    def handler(conn, srv):
        if direction == "backend_to_client":
            for _ in range(ticks):
                conn.sendall(b".")
                time.sleep(0.2)
            conn.shutdown(socket.SHUT_WR)
        n = 0
        while conn.recv(100):
            n += 1
        srv.results.put(n)

    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr], idle_timeout="1s")]})
    with connect(f.addr()) as c:
        if direction == "client_to_backend":
            for _ in range(ticks):
                c.sendall(b".")
                time.sleep(0.2)
            c.shutdown(socket.SHUT_WR)
            assert c.recv(10) == b""
        else:
            got = b""
            while len(got) < ticks:
                d = c.recv(100)
                assert d, f"closed early after {len(got)} bytes"
                got += d
            c.shutdown(socket.SHUT_WR)
            assert c.recv(10) == b""
    backend.result()
    (line,) = f.wait_access(1)
    assert line["end"] in ("client_fin", "backend_fin"), line
