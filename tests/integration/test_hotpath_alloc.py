"""The hot path allocates nothing: after a warm-up, a long transfer and a storm of
new connections leave ferry's heap-allocation count unchanged.  The count comes
from an LD_PRELOAD shim (tests/tools/alloccount.c, built by the Makefile) that
keeps it in a file the test reads while ferry runs."""

import socket
import struct
import threading

import pytest

from helpers import ASAN, REPO, T, connect, payload, service

SHIM = REPO / "build" / "alloccount.so"

pytestmark = pytest.mark.skipif(ASAN or not SHIM.exists(),
                                reason="needs the release build and build/alloccount.so")


def allocs(path):
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def echo_round(addr, data):
    with connect(addr, timeout=T(30)) as c:
        got = bytearray()

        def reader():
            while True:
                d = c.recv(262144)
                if not d:
                    return
                got.extend(d)

        t = threading.Thread(target=reader)
        t.start()
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        t.join(T(30))
        assert bytes(got) == data


def storm(addr, n):
    for _ in range(n):
        with connect(addr, timeout=T(10)) as c:
            c.sendall(b"ping")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(16) == b"ping"


@pytest.mark.parametrize("pipes", ["default", "0"], ids=["splice", "buffers"])
def test_no_allocation_after_warmup(ferry, servers, tmp_path, pipes):
    counter = tmp_path / "allocs"
    env = {"LD_PRELOAD": str(SHIM), "ALLOCCOUNT_FILE": str(counter)}
    if pipes == "0":
        env["FERRY_PIPES"] = "0"
    backend = servers.echo()
    f = ferry(config={"log": {"access": True},
                      "services": [service([backend.addr])]}, env=env)
    data = payload(8 << 20, seed=5)
    # Warm-up: first use of every path (log formatting, time zone, pools).
    echo_round(f.addr(), data)
    storm(f.addr(), 50)
    f.wait_access(51)
    before = allocs(counter)
    for _ in range(3):
        echo_round(f.addr(), data)
    storm(f.addr(), 300)
    f.wait_access(51 + 303)
    after = allocs(counter)
    assert after == before, f"{after - before} heap allocations on the hot path"
