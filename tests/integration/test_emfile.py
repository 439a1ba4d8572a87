"""Running out of file descriptors (ferry runs with RLIMIT_NOFILE=64).

When accept() fails with EMFILE the listener stays readable: ferry must log
event=accept_paused once, must not busy-loop on it, and must serve again once
descriptors free up."""

import socket
import time

from helpers import T, connect, recv_all, service, wait_until

NOFILE = 64
N_CLIENTS = 120  # more than ferry has descriptors


def open_clients(addr, n):
    """n non-blocking client connections; each completes in the kernel's accept
    queue whether or not ferry accepts it."""
    clients = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(addr)
        clients.append(s)
    return clients


def served(addr):
    """One echo exchange with short timeouts; False while ferry cannot serve."""
    try:
        with connect(addr, timeout=2) as c:
            c.sendall(b"again")
            c.shutdown(socket.SHUT_WR)
            return recv_all(c) == b"again"
    except OSError:  # refused, reset or timed out: not yet
        return False


def cpu_share(f, seconds=1.0):
    """Share of one CPU ferry used over the next `seconds`."""
    cpu0, t0 = f.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (f.cpu_seconds() - cpu0) / (time.monotonic() - t0)


def test_accept_paused_on_emfile(ferry, servers):
    """Clients wait in the backend queue, so each holds exactly one of ferry's
    descriptors and accept() itself is what runs out."""
    backend = servers.echo()
    f = ferry(config={"max_connections": 10000, "services": [service(
        [{"address": backend.addr, "max_connections": 1}], queue_timeout="5s")]},
        rlimit_nofile=NOFILE)
    first = connect(f.addr())  # takes the backend's only slot
    first.sendall(b"x")
    assert first.recv(1) == b"x"

    clients = open_clients(f.addr(), N_CLIENTS)
    try:
        f.wait_event("accept_paused", timeout=T(10))
        share = cpu_share(f)
        assert share < 0.3, f"ferry used {share:.0%} of a CPU while accept was paused"
        paused = f.logs("accept_paused")
        assert len(paused) == 1, f"accept_paused logged {len(paused)} times"
        assert paused[0]["level"] == "warn", paused[0]
        assert f.running()
    finally:
        for s in clients:
            s.close()
        first.close()

    # Once the clients are gone, ferry frees their descriptors and accepts again.
    wait_until(lambda: served(f.addr()), T(20), "ferry to serve again after EMFILE",
               interval=0.2)
    for _ in range(5):
        assert served(f.addr())
    f.stop()


def test_descriptor_flood_does_not_spin(ferry, servers):
    """Every client needs a backend connection too: whatever ferry does with the
    clients it cannot serve, it must not spin, and it serves again afterwards."""
    backend = servers.echo()
    f = ferry(config={"max_connections": 10000, "services": [service([backend.addr])]},
              rlimit_nofile=NOFILE)
    clients = open_clients(f.addr(), N_CLIENTS)
    try:
        wait_until(lambda: f.open_fds() >= NOFILE - 8 or len(f.access_logs()) >= N_CLIENTS,
                   T(10), "ferry to use its descriptors")
        share = cpu_share(f)
        assert share < 0.3, f"ferry used {share:.0%} of a CPU with descriptors exhausted"
        assert f.running()
    finally:
        for s in clients:
            s.close()
    wait_until(lambda: served(f.addr()), T(20), "ferry to serve again", interval=0.2)
    f.stop()
