"""Connect failures (SPEC section 3): a failed connect is retried on another backend
`retries` times; when every try fails the client is closed (end=connect_failed)."""

import time
from collections import Counter

import pytest

from helpers import T, ask_tag, connect, dead_addr, service, wait_closed


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "source_hash"])
def test_dead_backend_is_skipped(ferry, servers, balance):
    live = servers.tag("live")
    bl = [dead_addr(), live.addr] if balance != "source_hash" else [dead_addr(), live.addr,
                                                                     dead_addr()]
    f = ferry(config={"services": [service(bl, balance=balance, retries=2)]})
    # Several source addresses so that source_hash also lands on dead backends first.
    for i in range(12):
        assert ask_tag(f.addr(), source=f"127.0.0.{10 + i}") == "live"
    lines = f.wait_access(12)
    assert all(l["backend"] == live.addr for l in lines), lines


def test_all_backends_dead(ferry):
    f = ferry(config={"services": [service([dead_addr(), dead_addr()], retries=2)]})
    with connect(f.addr()) as c:
        t0 = time.monotonic()
        wait_closed(c, T(3))
        assert time.monotonic() - t0 < T(2), "the client should be closed promptly"
    (line,) = f.wait_access(1)
    assert line["end"] == "connect_failed", line
    assert line["backend"] == "-", line
    assert line["bytes_in"] == 0 and line["bytes_out"] == 0


def test_client_data_before_failure_is_dropped_cleanly(ferry):
    """The client sends data while ferry is still connecting; every try fails; the
    client is closed and the bytes it sent are counted as received."""
    f = ferry(config={"services": [service([dead_addr()], retries=1)]})
    with connect(f.addr()) as c:
        c.sendall(b"early bytes")
        wait_closed(c, T(3))
    (line,) = f.wait_access(1)
    assert line["end"] == "connect_failed", line


def test_no_retries(ferry, servers):
    """retries: 0 and round_robin over [dead, live]: every other connection fails."""
    live = servers.tag("live")
    f = ferry(config={"services": [service([dead_addr(), live.addr], balance="round_robin",
                                           retries=0)]})
    outcomes = []
    for _ in range(4):
        with connect(f.addr()) as c:
            c.settimeout(T(5))
            try:
                data = c.recv(100)
            except ConnectionResetError:
                data = b""
            outcomes.append("live" if data == b"live\n" else "failed")
    assert sorted(outcomes) == ["failed", "failed", "live", "live"], outcomes
    lines = f.wait_access(4)
    assert Counter(l["end"] for l in lines)["connect_failed"] == 2, lines


def test_backend_going_away(ferry, servers):
    """A backend that stops listening while ferry runs: traffic moves to the other."""
    a, b = servers.tag("a"), servers.tag("b")
    f = ferry(config={"services": [service([a.addr, b.addr], balance="round_robin")]})
    assert sorted(ask_tag(f.addr()) for _ in range(4)) == ["a", "a", "b", "b"]
    b.close()
    assert [ask_tag(f.addr()) for _ in range(6)] == ["a"] * 6
