"""Mirrors (SPEC section 3): every mirrored client's bytes reach the mirror intact
(sha256), followed by a FIN; what the mirror answers never reaches the client; a
mirror that is down, stalls, or resets never delays or breaks the client;
`on_lag: disconnect` drops a lagging mirror, `on_lag: block` paces the client so the
mirror gets every byte; `sample` mirrors an even share of connections."""

import os
import socket
import time

import pytest

from helpers import (ASAN, T, connect, dead_addr, duplex_client, payload, recv_exact, service,
                     set_linger_zero, sha)

MIB = 1 << 20


def mirror_service(backend, mirrors, **options):
    svc = service([backend.addr], **options)
    svc["mirrors"] = mirrors
    return svc


def stall_handler(conn, srv):
    """Accepts and never reads: the mirror's socket buffers fill up."""
    srv.results.put({"event": "connected"})
    time.sleep(T(20))


def chatty_sink_handler(conn, srv):
    """Answers with bytes of its own while reading everything (they must be
    discarded by ferry), and records what it received."""
    import hashlib
    h = hashlib.sha256()
    conn.sendall(b"MIRROR-REPLY" * 1000)
    n = 0
    while True:
        d = conn.recv(262144)
        if not d:
            break
        n += len(d)
        h.update(d)
    srv.results.put({"received": n, "sha256": h.hexdigest()})


def test_mirror_gets_exact_client_bytes(ferry, servers):
    up, down = payload(6 * MIB + 7, seed=3), payload(3 * MIB + 1, seed=4)
    backend = servers.duplex(down)
    mirror = servers.custom(chatty_sink_handler)
    f = ferry(config={"services": [mirror_service(backend, [{"address": mirror.addr}])]})
    with connect(f.addr(), timeout=T(60)) as c:
        got, got_sha = duplex_client(c, up)
    assert (got, got_sha) == (len(down), sha(down)), "client got mirror bytes or lost some"
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up))
    m = mirror.result()  # only comes after the mirror saw EOF: the FIN was passed on
    assert (m["received"], m["sha256"]) == (len(up), sha(up)), "mirror got other bytes"
    (line,) = f.wait_access(1)
    assert line["bytes_in"] == len(up) and line["bytes_out"] == len(down)


def test_two_mirrors_each_get_everything(ferry, servers):
    up = payload(4 * MIB + 3, seed=5)
    backend = servers.sink()
    m1, m2 = servers.sink(), servers.sink()
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": m1.addr}, {"address": m2.addr, "on_lag": "block"}])]})
    with connect(f.addr(), timeout=T(60)) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
    for srv in (backend, m1, m2):
        res = srv.result()
        assert (res["received"], res["sha256"]) == (len(up), sha(up))


def test_mirror_down_never_breaks_client(ferry, servers):
    up = payload(2 * MIB, seed=6)
    backend = servers.echo()
    f = ferry(config={"services": [mirror_service(backend, [{"address": dead_addr()}])]})
    for _ in range(3):
        with connect(f.addr(), timeout=T(30)) as c:
            got, got_sha = duplex_client(c, up)
        assert (got, got_sha) == (len(up), sha(up))
    f.wait_event("mirror_error", count=3)
    assert len(f.wait_access(3)) == 3


def test_stalled_mirror_disconnected_client_unharmed(ferry, servers):
    up = payload(24 * MIB, seed=7)
    backend = servers.sink()
    stalled = servers.custom(stall_handler)
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": stalled.addr, "on_lag": "disconnect", "max_lag": "256KiB"}])]})
    t0 = time.monotonic()
    with connect(f.addr(), timeout=T(60)) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up))
    assert time.monotonic() - t0 < T(15)
    (err,) = f.wait_event("mirror_error")
    assert "lag" in err["error"], err
    assert err["mirror"] == stalled.addr


def test_block_mirror_gets_every_byte_from_slow_reader(ferry, servers):
    up = payload(8 * MIB, seed=8)
    backend = servers.sink()
    # 4 MB/s for the first second, then as fast as it can.
    slow = servers.sink(rate_schedule=lambda t: 4 * MIB if t < 1.0 else None)
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": slow.addr, "on_lag": "block", "max_lag": "512KiB"}])]})
    with connect(f.addr(), timeout=T(60)) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
    for srv in (backend, slow):
        res = srv.result()
        assert (res["received"], res["sha256"]) == (len(up), sha(up))
    assert not f.logs("mirror_error")


def test_block_mirror_bounds_memory(ferry, servers):
    """A blocking mirror that reads slowly paces the client instead of piling up
    bytes in ferry."""
    up = payload(64 * MIB, seed=9)
    backend = servers.sink()
    slow = servers.sink(rate_schedule=lambda t: 16 * MIB)
    env = None
    if ASAN:  # ASan's quarantine would keep freed buffers resident
        env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                ":quarantine_size_mb=8").lstrip(":")}
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": slow.addr, "on_lag": "block", "max_lag": "1MiB"}])]}, env=env)
    base = f.rss_kb()
    peak = base
    with connect(f.addr(), timeout=T(60)) as c:
        c.setblocking(False)
        view = memoryview(up)
        sent = 0
        deadline = time.monotonic() + T(30)
        while sent < len(up) and time.monotonic() < deadline:
            try:
                sent += c.send(view[sent:sent + 262144])
            except BlockingIOError:
                time.sleep(0.005)
            peak = max(peak, f.rss_kb())
        assert sent == len(up)
        c.setblocking(True)
        c.shutdown(socket.SHUT_WR)
        c.settimeout(T(30))
        assert c.recv(1) == b""
    for srv in (backend, slow):
        res = srv.result()
        assert (res["received"], res["sha256"]) == (len(up), sha(up))
    assert peak - base < 32 * 1024, f"RSS grew {peak - base} KiB"


def test_mirror_reset_never_breaks_client(ferry, servers):
    up = payload(4 * MIB, seed=10)
    backend = servers.echo()
    resetter = servers.reset(greeting=b"", wait_for=b"x" * 1000)
    f = ferry(config={"services": [mirror_service(backend, [{"address": resetter.addr}])]})
    with connect(f.addr(), timeout=T(60)) as c:
        got, got_sha = duplex_client(c, up)
    assert (got, got_sha) == (len(up), sha(up))
    (line,) = f.wait_access(1)
    assert line["end"] in ("client_fin", "backend_fin"), line
    f.wait_event("mirror_error")


def test_client_reset_resets_mirror(ferry, servers):
    backend = servers.watch()
    mirror = servers.watch()
    f = ferry(config={"services": [mirror_service(backend, [{"address": mirror.addr}])]})
    c = connect(f.addr(), timeout=T(10))
    c.sendall(b"hello")
    assert mirror.result()["event"] == "connected"
    time.sleep(0.2)
    set_linger_zero(c)
    c.close()
    res = mirror.result()
    assert res["event"] == "end" and res["how"] == "reset", res


def test_sample_mirrors_every_fourth_connection(ferry, servers):
    backend = servers.echo()
    mirror = servers.sink()
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": mirror.addr, "sample": "25%"}])]})
    for i in range(8):
        with connect(f.addr(), timeout=T(10)) as c:
            c.sendall(b"conn %d\n" % i)
            c.shutdown(socket.SHUT_WR)
            assert recv_exact(c, 7) == b"conn %d\n" % i
    f.wait_access(8)
    got = sorted(mirror.result()["received"] for _ in range(2))
    assert got == [7, 7]
    time.sleep(0.3)
    assert mirror.accepted == 2, f"{mirror.accepted} of 8 connections mirrored at 25%"


def test_quick_mode_mirror_flag(ferry, servers):
    up = payload(MIB, seed=11)
    backend = servers.echo()
    mirror = servers.sink()
    f = ferry(args=["--listen", "127.0.0.1:0", "--backend", backend.addr,
                    "--mirror", mirror.addr])
    with connect(f.addr(), timeout=T(30)) as c:
        got, got_sha = duplex_client(c, up)
    assert (got, got_sha) == (len(up), sha(up))
    res = mirror.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up))


def test_blocking_mirror_that_never_connects_releases_client(ferry, servers):
    """A blocking mirror whose connect hangs (SYNs dropped) gives up after
    connect_timeout, so it delays the client at most that long."""
    up = payload(4 * MIB, seed=12)
    backend = servers.sink()
    hole = servers.blackhole()
    f = ferry(config={"services": [mirror_service(
        backend, [{"address": hole.addr, "on_lag": "block", "max_lag": "64KiB"}],
        connect_timeout="300ms")]})
    t0 = time.monotonic()
    with connect(f.addr(), timeout=T(30)) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up))
    assert time.monotonic() - t0 < T(10)
    (err,) = f.wait_event("mirror_error")
    assert "timeout" in err["error"], err
