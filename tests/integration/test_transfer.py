"""Byte-exact relaying both ways at once, in quick mode and with a config file, with
text and JSON logs; the access log line has exact byte counts and the right `end`."""

import json
import socket

import pytest

from helpers import TS_RE, T, connect, duplex_client, payload, service, sha

MIB = 1 << 20
# Different sizes each way, so a swap of bytes_in and bytes_out shows.
UP = 32 * MIB + 12345     # client -> backend
DOWN = 32 * MIB - 54321   # backend -> client


@pytest.fixture(scope="module")
def data():
    up, down = payload(UP, seed=1), payload(DOWN, seed=2)
    return up, down, sha(up), sha(down)


CASES = [  # (how ferry is started, log format, who sends FIN first)
    ("quick", "text", "client"),
    ("file", "text", "backend"),
    ("quick", "json", "backend"),
    ("file", "json", "client"),
]


@pytest.mark.parametrize("mode,fmt,first", CASES,
                         ids=["-".join(c) for c in CASES])
def test_duplex_transfer(ferry, servers, data, mode, fmt, first):
    up, down, up_sha, down_sha = data
    backend = servers.duplex(down, fin_first=(first == "backend"))
    if mode == "quick":
        f = ferry(args=["--listen", "127.0.0.1:0", "--backend", backend.addr,
                        "--log-format", fmt])
    else:
        f = ferry(config={"log": {"format": fmt}, "services": [service([backend.addr])]})

    with connect(f.addr(), timeout=T(60)) as c:
        local_port = c.getsockname()[1]
        got, got_sha = duplex_client(c, up, fin_after_eof=(first == "backend"))
    res = backend.result()
    assert (res["received"], res["sha256"]) == (UP, up_sha), "client -> backend corrupted"
    assert (got, got_sha) == (DOWN, down_sha), "backend -> client corrupted"

    (line,) = f.wait_access(1)
    assert line["level"] == "info"
    assert TS_RE.match(line["ts"]), line
    assert line["service"] == ("default" if mode == "quick" else "web"), line
    assert line["client"] == f"127.0.0.1:{local_port}", line
    assert line["backend"] == backend.addr
    assert line["bytes_in"] == UP and line["bytes_out"] == DOWN, line
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert line["end"] == f"{first}_fin", line

    if fmt == "json":
        # Every line ferry wrote is one JSON object with ts, level and event.
        for raw in f.lines():
            obj = json.loads(raw)
            assert {"ts", "level", "event"} <= obj.keys(), raw
            assert TS_RE.match(obj["ts"]), raw
    f.stop()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_log_field_types(ferry, servers, fmt):
    backend = servers.echo()
    f = ferry(args=["--listen", "127.0.0.1:0", "--backend", backend.addr,
                    "--log-format", fmt])
    with connect(f.addr()) as c:
        local = c.getsockname()
        c.sendall(b"x" * 512)
        c.shutdown(socket.SHUT_WR)
        assert len(c.recv(4096)) > 0
        while c.recv(4096):
            pass
    (line,) = f.wait_access(1)
    assert line["event"] == "close"
    assert line["client"] == f"127.0.0.1:{local[1]}"
    assert line["bytes_in"] == 512 and line["bytes_out"] == 512
    assert line["end"] == "client_fin"
    if fmt == "json":
        raw = [l for l in f.lines() if '"close"' in l][0]
        obj = json.loads(raw)
        for k in ("bytes_in", "bytes_out", "duration_ms"):
            assert type(obj[k]) is int, f"{k} must be a JSON number: {raw}"
    else:
        raw = [l for l in f.lines() if "event=close" in l][0]
        for k in ("bytes_in=512", "bytes_out=512", "end=client_fin", "service=default",
                  f"backend={backend.addr}"):
            assert f" {k}" in raw, raw


def test_empty_connection(ferry, servers):
    """A client that connects and closes at once: zero bytes, end=client_fin."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr])]})
    c = connect(f.addr())
    c.close()
    (line,) = f.wait_access(1)
    assert (line["bytes_in"], line["bytes_out"]) == (0, 0), line
    assert line["end"] == "client_fin", line


def test_backend_speaks_first(ferry, servers):
    """A server-first protocol: the backend's greeting reaches the client before it
    sends anything, and the backend closing first gives end=backend_fin."""
    backend = servers.duplex(b"220 hello\r\n", fin_first=True)
    f = ferry(config={"services": [service([backend.addr])]})
    with connect(f.addr()) as c:
        n, digest = duplex_client(c, b"", fin_after_eof=True)
    assert (n, digest) == (11, sha(b"220 hello\r\n"))
    (line,) = f.wait_access(1)
    assert (line["bytes_in"], line["bytes_out"], line["end"]) == (0, 11, "backend_fin"), line


def test_many_sequential_connections(ferry, servers):
    """Slots are reused cleanly: 200 short connections one after another."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr])]})
    for i in range(200):
        msg = f"message {i}\n".encode() * (i % 7 + 1)
        with connect(f.addr()) as c:
            c.sendall(msg)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                got += d
        assert got == msg, f"connection {i}"
    lines = f.wait_access(200)
    assert all(l["end"] == "client_fin" for l in lines)
    assert sum(l["bytes_in"] for l in lines) == sum(l["bytes_out"] for l in lines)
