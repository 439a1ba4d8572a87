"""max_connections (global, per service, per backend) and queue_timeout."""

import socket
import time
from collections import Counter

from helpers import T, ask_tag, connect, recv_exact, service, wait_closed


def open_echo(addr, source=None):
    """A client connection proven to be relayed end to end (one echoed byte)."""
    c = connect(addr, source)
    c.sendall(b"x")
    assert recv_exact(c, 1) == b"x"
    return c


def assert_rejected_at_once(addr):
    with connect(addr) as c:
        t0 = time.monotonic()
        wait_closed(c, T(3))
        took = time.monotonic() - t0
    assert took < T(1), f"rejected client closed only after {took:.2f}s"


def test_global_max_connections(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"max_connections": 2, "services": [service([backend.addr])]})
    c1, c2 = open_echo(f.addr()), open_echo(f.addr())
    try:
        assert_rejected_at_once(f.addr())
        (line,) = f.wait_access(1)
        assert line["end"] == "rejected" and line.get("reason") == "limit", line
        assert line["backend"] == "-", line
        # A slot frees when a client leaves.
        c1.close()
        f.wait_access(2)
        with open_echo(f.addr()):
            pass
    finally:
        c1.close()
        c2.close()


def test_service_max_connections(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], name="web", max_connections=1),
                                   service([backend.addr], name="api")]})
    web, api = f.addr(0), f.addr(1)
    held = [open_echo(web)]
    try:
        assert_rejected_at_once(web)
        line = f.wait_access(1)[0]
        assert (line["service"], line["end"], line.get("reason")) == ("web", "rejected", "limit")
        # The other service is not limited by web's limit.
        held += [open_echo(api), open_echo(api)]
    finally:
        for c in held:
            c.close()
    lines = f.wait_access(4)
    assert Counter(l["end"] for l in lines)["rejected"] == 1, lines


def test_backend_max_connections_skips_full_backend(ferry, servers):
    a, b = servers.tag("a"), servers.tag("b")
    f = ferry(config={"services": [service([{"address": a.addr, "max_connections": 1},
                                            b.addr], balance="round_robin")]})
    held = [ask_tag(f.addr(), hold=True) for _ in range(4)]
    try:
        assert Counter(t for t, _ in held) == {"a": 1, "b": 3}
    finally:
        for _, s in held:
            s.close()


def test_queue_waits_for_free_slot(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([{"address": backend.addr, "max_connections": 1}],
                                           queue_timeout="10s")]})
    c1 = open_echo(f.addr())
    with connect(f.addr()) as c2:
        c2.sendall(b"hello")
        c2.settimeout(0.5)
        try:
            early = c2.recv(10)
        except socket.timeout:
            early = None
        assert early is None, f"queued client got {early!r} while the backend was full"
        assert backend.accepted == 1
        c1.close()  # frees the slot: c2 is connected now
        c2.settimeout(T(5))
        assert recv_exact(c2, 5) == b"hello"
    lines = f.wait_access(2)
    assert [l["end"] for l in lines] == ["client_fin", "client_fin"], lines
    assert lines[1]["bytes_in"] == 5 and lines[1]["backend"] == backend.addr


def test_queue_timeout_expires(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([{"address": backend.addr, "max_connections": 1}],
                                           queue_timeout="400ms")]})
    with open_echo(f.addr()):
        with connect(f.addr()) as c2:
            t0 = time.monotonic()
            wait_closed(c2, T(5))
            took = time.monotonic() - t0
        assert 0.35 <= took <= 0.4 + T(1.5), f"queued client closed after {took:.2f}s"
        (line,) = f.wait_access(1)
        assert line["end"] == "no_backend" and line["backend"] == "-", line
    assert backend.accepted == 1


def test_queue_timeout_zero(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([{"address": backend.addr, "max_connections": 1}],
                                           queue_timeout="0s")]})
    with open_echo(f.addr()):
        assert_rejected_at_once(f.addr())
        (line,) = f.wait_access(1)
        assert line["end"] == "no_backend", line
