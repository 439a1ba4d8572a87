"""Many connections at once: 300 clients, driven by one selector loop, each sends a
few KB through ferry to an echo backend and must get exactly its bytes back."""

import os
import selectors
import socket

import pytest

from helpers import Deadline, FerryExited, T, service

N_CLIENTS = 300


def run_clients(addr, payloads, timeout):
    """Connects one non-blocking client per payload, all at once; each sends its
    payload, half-closes and reads to EOF.  Returns what each one read back."""
    sel = selectors.DefaultSelector()
    got = [bytearray() for _ in payloads]
    try:
        for i, data in enumerate(payloads):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE,
                         {"i": i, "out": memoryview(data), "sent": 0})
        dl = Deadline(timeout)
        while sel.get_map():
            if dl.expired():
                pending = sorted(k.data["i"] for k in sel.get_map().values())
                raise AssertionError(f"{len(pending)} clients unfinished after {timeout}s: "
                                     f"{pending[:20]}")
            for key, ev in sel.select(timeout=min(1.0, dl.left())):
                s, st = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    st["sent"] += s.send(st["out"][st["sent"]:st["sent"] + 65536])
                    if st["sent"] == len(st["out"]):
                        s.shutdown(socket.SHUT_WR)
                        sel.modify(s, selectors.EVENT_READ, st)
                if ev & selectors.EVENT_READ:
                    data = s.recv(65536)
                    if data:
                        got[st["i"]] += data
                    else:
                        sel.unregister(s)
                        s.close()
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return got


@pytest.mark.parametrize("workers", [1, 2])
def test_300_concurrent_echo(ferry, servers, workers):
    backend = servers.echo()
    try:
        f = ferry(config={"workers": workers, "services": [service([backend.addr])]})
    except FerryExited as e:
        if "not supported yet" in str(e):
            pytest.skip(f"workers: {workers} is not supported yet")
        raise
    # Distinct sizes (2 KiB .. ~4 KiB) and contents per client.
    payloads = [os.urandom(2048 + 7 * i) for i in range(N_CLIENTS)]
    got = run_clients(f.addr(), payloads, T(60))
    bad = [i for i, (p, g) in enumerate(zip(payloads, got)) if bytes(g) != p]
    assert not bad, f"{len(bad)} clients got wrong bytes, e.g. client {bad[0]}: " \
                    f"{len(got[bad[0]])} of {len(payloads[bad[0]])} bytes"

    lines = f.wait_access(N_CLIENTS, timeout=T(20))
    assert len(lines) == N_CLIENTS
    assert all(l["end"] == "client_fin" for l in lines), \
        {l["end"] for l in lines}
    assert sorted(l["bytes_in"] for l in lines) == sorted(len(p) for p in payloads)
    assert all(l["bytes_in"] == l["bytes_out"] for l in lines)
    assert backend.accepted == N_CLIENTS
    f.stop()
