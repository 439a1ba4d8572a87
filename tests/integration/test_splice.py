"""Pass-through connections that move bulk data go over to splice(2) through the pipe
pool, on both engines (io_uring with IORING_OP_SPLICE), byte-exact: both ways at once,
through a slow reader (full pipes, full send buffers), with the PROXY header in front
(buffers first, then pipes), and with fewer pipes than connections (the rest use
buffers).  That pipes were really used shows in the process's descriptors (pipes are
created lazily and kept); the io_uring engine also logs the bytes it spliced when it
stops (debug level)."""

import os
import re
import socket
import threading

import pytest

from helpers import T, connect, duplex_client, payload, recv_all, service, sha

MIB = 1 << 20


def pipe_fds(pid):
    """How many of the process's descriptors are pipes."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n


def spliced_bytes(f):
    """Stops ferry; returns (in, out) bytes its io_uring engines spliced, summed over
    workers, or None for epoll (which does not log them)."""
    f.stop()
    if f.engine != "io_uring":
        return None
    tot_in = tot_out = 0
    found = False
    for line in f.logs("engine"):
        m = re.search(r"spliced in (\d+) bytes, out (\d+) bytes", line.get("msg", ""))
        if m:
            found = True
            tot_in += int(m.group(1))
            tot_out += int(m.group(2))
    assert found, "no splice counters in the debug log:\n" + f.stderr_tail()
    return tot_in, tot_out


def start(ferry, backend, env=None, **options):
    return ferry(config={"log": {"level": "debug"}, "workers": 1,
                         "services": [service([backend.addr], **options)]}, env=env)


@pytest.mark.parametrize("pipes", ["default", "0"], ids=["splice", "no-pipes"])
def test_duplex_through_pipes(ferry, servers, pipes):
    up, down = payload(24 * MIB + 7, seed=41), payload(16 * MIB - 5, seed=42)
    backend = servers.duplex(down)
    f = start(ferry, backend, env={"FERRY_PIPES": "0"} if pipes == "0" else None)
    before = pipe_fds(f.pid)
    with connect(f.addr(), timeout=T(60)) as c:
        got, got_sha = duplex_client(c, up)
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up)), "client -> backend"
    assert (got, got_sha) == (len(down), sha(down)), "backend -> client"
    grown = pipe_fds(f.pid) - before
    (line,) = f.wait_access(1)
    assert line["bytes_in"] == len(up) and line["bytes_out"] == len(down), line
    moved = spliced_bytes(f)
    if pipes == "0":
        assert grown == 0, "FERRY_PIPES=0 but pipes were created"
        assert moved in (None, (0, 0)), moved
    else:
        assert grown >= 2, "no splice pipe was created: bytes went through buffers"
        if moved is not None:
            # Nearly all of it: bytes that arrived before the backend was
            # connected may have come through buffers.
            total = len(up) + len(down)
            assert moved[0] == moved[1], moved
            assert moved[0] >= total - 4 * MIB, moved


def test_slow_reader(ferry, servers):
    """A backend that reads slower than the client sends: the pipe fills up and the
    send buffer too; nothing is lost or reordered."""
    data = payload(6 * MIB + 3, seed=43)
    backend = servers.sink(rate_schedule=lambda t: 8 * MIB)
    f = start(ferry, backend)
    with connect(f.addr(), timeout=T(60)) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(data), sha(data))
    moved = spliced_bytes(f)
    if moved is not None:
        assert moved[0] == moved[1] >= len(data) - 2 * MIB, moved


def test_proxy_header_then_pipes(ferry, servers):
    """The client's first bytes wait in buffers behind the PROXY header (v2); once
    the half moves bulk data and its buffers are sent it goes over to the pipe (on
    io_uring after the buffers its receive read ahead): the backend sees the header
    and the data in order, and bytes went through the pipe."""
    backend = servers.sink(rate_schedule=lambda t: 16 * MIB)
    f = start(ferry, backend, proxy_protocol="v2")
    data = payload(8 * MIB + 11, seed=44)
    with connect(f.addr(), timeout=T(60)) as c:
        (cip, cport), (fip, fport) = c.getsockname(), c.getpeername()
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    header = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton(cip) +
              socket.inet_aton(fip) + cport.to_bytes(2, "big") + fport.to_bytes(2, "big"))
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(header) + len(data), sha(header + data))
    moved = spliced_bytes(f)
    if moved is not None:
        assert moved[0] == moved[1] > 0, moved


def test_fewer_pipes_than_connections(ferry, servers):
    """One pipe for four concurrent connections: the others fall back to buffers
    and come back to splicing when the pipe is free; every stream stays exact."""
    backend = servers.echo()
    f = start(ferry, backend, env={"FERRY_PIPES": "1"})
    datas = [payload(4 * MIB + i, seed=50 + i) for i in range(4)]
    errors = []

    def one(data):
        try:
            with connect(f.addr(), timeout=T(60)) as c:
                got, got_sha = duplex_client(c, data)
                if (got, got_sha) != (len(data), sha(data)):
                    errors.append(f"echo of {len(data)} bytes came back as {got}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(d,)) for d in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T(90))
    assert not errors, errors
    f.wait_access(4)
    assert pipe_fds(f.pid) >= 2
    moved = spliced_bytes(f)
    if moved is not None:
        assert moved[0] == moved[1] > 0, moved
