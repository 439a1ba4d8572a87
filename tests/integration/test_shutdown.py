"""Signals (SPEC section 1): SIGINT/SIGTERM close every listener at once, let open
connections finish for up to shutdown_timeout, then close the rest (end=shutdown)
and exit 0; a second signal exits at once."""

import hashlib
import signal
import socket
import threading
import time

import pytest

from helpers import T, connect, recv_line, service, wait_closed, wait_until

SIGNALS = [signal.SIGTERM, signal.SIGINT]
SIG_IDS = ["SIGTERM", "SIGINT"]


def listener_closed(addr):
    """True when connecting to `addr` is refused (nobody listens any more)."""
    try:
        s = connect(addr, timeout=1)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Caught in the listener's queue as it closed: try again.
        return False
    s.close()
    return False


@pytest.mark.parametrize("sig", SIGNALS, ids=SIG_IDS)
def test_idle_exit(ferry, servers, sig):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr])]})
    t0 = time.monotonic()
    f.stop(sig, timeout=T(5))
    assert time.monotonic() - t0 < T(2)


@pytest.mark.parametrize("sig", SIGNALS, ids=SIG_IDS)
def test_graceful_shutdown_finishes_transfer(ferry, servers, sig):
    backend = servers.sink()
    f = ferry(config={"shutdown_timeout": "30s", "services": [service([backend.addr])]})
    c = connect(f.addr())
    chunk_count, chunk = 256, bytes(range(256)) * 256  # 256 x 64 KiB = 16 MiB
    hasher = hashlib.sha256()
    halfway = threading.Event()
    errors = []

    def sender():  # paced: about 1.5 s in all
        try:
            for i in range(chunk_count):
                piece = i.to_bytes(4, "big") + chunk[4:]
                hasher.update(piece)
                c.sendall(piece)
                if i == chunk_count // 4:
                    halfway.set()
                time.sleep(0.006)
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)
            halfway.set()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    assert halfway.wait(T(10))
    f.send_signal(sig)
    # Listeners close at once, while the transfer goes on.
    wait_until(lambda: listener_closed(f.addr()), T(2), "the listener to close")
    assert f.running(), "ferry must wait for the open connection"
    t.join(T(30))
    assert not errors, errors
    # (A probe that connected just before the listener closed may have been relayed
    # too: it shows up as an empty connection.)
    res = backend.result()
    while res["received"] == 0:
        res = backend.result()
    assert res == {"received": chunk_count * len(chunk), "sha256": hasher.hexdigest()}
    c.settimeout(T(5))
    assert c.recv(10) == b""  # the backend's FIN came through
    c.close()
    done = time.monotonic()
    assert f.wait_exit(T(10)) == 0, f.stderr_tail()
    assert time.monotonic() - done < T(3), "ferry should exit once the last connection ends"
    f.check_sanitizer()
    (line,) = [l for l in f.access_logs() if l["bytes_in"] > 0]
    assert line["end"] in ("backend_fin", "client_fin"), line
    assert line["bytes_in"] == chunk_count * len(chunk)


@pytest.mark.parametrize("sig", SIGNALS, ids=SIG_IDS)
def test_shutdown_timeout_closes_connections(ferry, servers, sig):
    backend = servers.watch(greeting=b"hi\n")
    f = ferry(config={"shutdown_timeout": "500ms", "services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        assert recv_line(c) == "hi"
        backend.result()  # connected
        t0 = time.monotonic()
        f.send_signal(sig)
        wait_closed(c, T(5))
        took = time.monotonic() - t0
    assert 0.4 <= took <= 0.5 + T(2), f"closed {took:.2f}s after the signal"
    assert backend.result(timeout=T(3))["event"] == "end"
    assert f.wait_exit(T(5)) == 0
    f.check_sanitizer()
    (line,) = f.access_logs()
    assert line["end"] == "shutdown", line
    assert line["bytes_out"] == 3


@pytest.mark.parametrize("first,second", [(signal.SIGTERM, signal.SIGTERM),
                                          (signal.SIGINT, signal.SIGTERM),
                                          (signal.SIGTERM, signal.SIGINT)],
                         ids=["TERM-TERM", "INT-TERM", "TERM-INT"])
def test_second_signal_exits_at_once(ferry, servers, first, second):
    backend = servers.watch(greeting=b"hi\n")
    f = ferry(config={"shutdown_timeout": "30s", "services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        assert recv_line(c) == "hi"
        f.send_signal(first)
        wait_until(lambda: listener_closed(f.addr()), T(2), "the listener to close")
        assert f.running()
        t0 = time.monotonic()
        f.send_signal(second)
        assert f.wait_exit(T(5)) == 0
        assert time.monotonic() - t0 < T(1.5)
        wait_closed(c, T(3))  # the process is gone, so is the connection
    f.check_sanitizer()


def test_no_new_connections_after_signal(ferry, servers):
    """Two services, several listeners: all of them close at the first signal."""
    backend = servers.watch(greeting=b"hi\n")
    f = ferry(config={"shutdown_timeout": "30s", "services": [
        service([backend.addr], name="a", listen=["127.0.0.1:0", "127.0.0.1:0"]),
        service([backend.addr], name="b")]})
    with connect(f.addr(1)) as c:
        assert recv_line(c) == "hi"
        f.send_signal(signal.SIGTERM)
        for svc, i in ((0, 0), (0, 1), (1, 0)):
            wait_until(lambda: listener_closed(f.addr(svc, i)), T(2),
                       f"listener {f.addr(svc, i)} to close")
    assert f.wait_exit(T(5)) == 0
    f.check_sanitizer()
