"""Resets (SPEC section 3): a reset on one side resets the other, and the access log
says which side did it (end=client_reset / backend_reset)."""

import time

import pytest

from helpers import T, connect, recv_exact, recv_line, service, set_linger_zero


def test_client_reset_reaches_backend(ferry, servers):
    backend = servers.watch(greeting=b"hi\n")
    f = ferry(config={"services": [service([backend.addr])]})
    c = connect(f.addr())
    assert recv_line(c) == "hi"
    assert backend.result()["event"] == "connected"
    c.sendall(b"some bytes")
    set_linger_zero(c)
    t0 = time.monotonic()
    c.close()  # RST
    end = backend.result(timeout=T(5))
    assert end["event"] == "end"
    # The backend's connection ends promptly (ferry resets it; EOF is tolerated).
    assert end["how"] in ("reset", "eof"), end
    assert end["at"] - t0 < T(2), f"backend noticed the reset after {end['at'] - t0:.2f}s"
    (line,) = f.wait_access(1)
    assert line["end"] == "client_reset", line


def test_backend_reset_reaches_client(ferry, servers):
    backend = servers.reset(greeting=b"hello\n", wait_for=b"ack")
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        assert recv_line(c) == "hello"
        c.sendall(b"ack")
        c.settimeout(T(5))
        with pytest.raises(ConnectionResetError):
            data = c.recv(100)
            # Anything but a reset (data or a plain FIN) is wrong.
            pytest.fail(f"expected a reset, got {data!r}")
    (line,) = f.wait_access(1)
    assert line["end"] == "backend_reset", line
    assert line["bytes_in"] == 3 and line["bytes_out"] == 6, line


def test_client_reset_while_backend_is_blocked_sending(ferry, servers):
    """The client reads nothing and resets while the backend is pushing a large
    response (ferry's buffers towards the client are full): the backend's writes
    fail promptly instead of hanging."""

    def handler(conn, srv):
        srv.results.put({"event": "connected"})
        try:
            chunk = b"z" * 65536
            for _ in range(4096):  # 256 MiB: far more than any buffer
                conn.sendall(chunk)
            srv.results.put({"event": "end", "how": "sent everything"})
        except (ConnectionResetError, BrokenPipeError) as e:
            srv.results.put({"event": "end", "how": type(e).__name__, "at": time.monotonic()})

    backend = servers.custom(handler, conn_timeout=T(20))
    f = ferry(config={"services": [service([backend.addr])]})
    c = connect(f.addr())
    assert backend.result()["event"] == "connected"
    recv_exact(c, 1000)  # the response is flowing
    set_linger_zero(c)
    c.close()
    end = backend.result(timeout=T(10))
    assert end["how"] in ("ConnectionResetError", "BrokenPipeError"), end
    (line,) = f.wait_access(1)
    assert line["end"] == "client_reset", line

