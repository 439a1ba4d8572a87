"""Half-close (SPEC section 3): a FIN from one side is passed on after every queued
byte, and the other direction keeps flowing until it ends too."""

import hashlib
import socket
import time

from helpers import connect, payload, read_to_eof, recv_all, service, sha

MIB = 1 << 20


def test_client_half_close(ferry, servers):
    """The client sends a request and shuts down writing; the backend sees EOF only
    after every byte, then answers, and the answer reaches the client in full."""
    request, answer = payload(MIB + 7, seed=3), payload(2 * MIB + 5, seed=4)

    def handler(conn, srv):
        h = hashlib.sha256()
        n = read_to_eof(conn, h)  # the request, up to the relayed FIN
        srv.results.put({"received": n, "sha256": h.hexdigest()})
        conn.sendall(answer)      # the direction back still works
        conn.shutdown(socket.SHUT_WR)
        read_to_eof(conn)

    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        c.sendall(request)
        c.shutdown(socket.SHUT_WR)
        got = recv_all(c)
    assert backend.result() == {"received": len(request), "sha256": sha(request)}
    assert len(got) == len(answer) and sha(got) == sha(answer)
    (line,) = f.wait_access(1)
    assert line["end"] == "client_fin", line
    assert (line["bytes_in"], line["bytes_out"]) == (len(request), len(answer)), line


def test_backend_half_close(ferry, servers):
    """The backend sends its data and shuts down writing first; the client reads to
    EOF and can still send afterwards; the backend gets all of it."""
    greeting, upload = payload(MIB + 3, seed=5), payload(3 * MIB + 1, seed=6)

    def handler(conn, srv):
        conn.sendall(greeting)
        conn.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        n = read_to_eof(conn, h)
        srv.results.put({"received": n, "sha256": h.hexdigest()})

    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        got = recv_all(c)  # up to the backend's FIN
        assert len(got) == len(greeting) and sha(got) == sha(greeting)
        c.sendall(upload)  # the other direction is still open
        c.shutdown(socket.SHUT_WR)
        assert backend.result() == {"received": len(upload), "sha256": sha(upload)}
        assert recv_all(c) == b""
    (line,) = f.wait_access(1)
    assert line["end"] == "backend_fin", line
    assert (line["bytes_in"], line["bytes_out"]) == (len(upload), len(greeting)), line


def test_trickle_after_half_close(ferry, servers):
    """After the client's FIN the backend keeps sending small pieces over time;
    the half-closed connection stays up for all of them."""
    pieces = [b"one\n", b"two\n", b"three\n", b"four\n"]

    def handler(conn, srv):
        assert read_to_eof(conn) == 0
        for p in pieces:
            conn.sendall(p)
            time.sleep(0.1)
        conn.shutdown(socket.SHUT_WR)

    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b"".join(pieces)
    (line,) = f.wait_access(1)
    assert line["end"] == "client_fin"
    assert line["bytes_out"] == sum(map(len, pieces))
