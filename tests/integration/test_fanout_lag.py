"""Fan-out lagging outputs (SPEC section 4): on_lag block, disconnect, drop,
with fast, slow, stalled, resetting and restarting outputs on one stream of
checksummed records.

The stream is larger than what a stalled loopback reader's socket buffers
absorb (about 4 MiB here), so a stalled output really lags.  At the end the
input closes and ferry gets SIGTERM: with no input left it sends every output
what is queued for it, then a FIN, so each reader sees the end of its stream.
"""

import threading
import time

import pytest

from helpers import SCALE, T, connect, wait_until
from test_fanout_basic import (Sink, connected, disconnect_line, fanout_config, hostport,
                               make_records, parse_records, port_addr, send_chunked)

N_RECORDS = 100_000  # about 9 MiB
MAX_LAG = "1MiB"


def stream():
    recs = make_records("s", N_RECORDS, seed=7, max_body=150)
    return recs, b"".join(recs)


def explain(got, want):
    """A short account of how got differs from want (no multi-megabyte diff)."""
    got = bytes(got)
    n = min(len(got), len(want))
    first = next((i for i in range(n) if got[i] != want[i]), n)
    return (f"got {len(got)} bytes, want {len(want)}; first difference at {first}: "
            f"got {got[first:first + 40]!r}, want {want[first:first + 40]!r}")


def check_all(f, s, data):
    """s received the whole stream, unchanged."""
    assert bytes(s.data) == data, \
        f"output :{s.port} ({s.how}, {disconnect_line(f, s.port)}): {explain(s.data, data)}"


def check_prefix(f, s, data):
    """s received an unchanged prefix of the stream."""
    assert data.startswith(bytes(s.data)), \
        f"output :{s.port} ({s.how}, {disconnect_line(f, s.port)}): {explain(s.data, data)}"


def is_subsequence(seq):
    return all(b > a for a, b in zip(seq, seq[1:]))


@pytest.mark.parametrize("policy", ["block", "disconnect", "drop"])
def test_lag_policies(ferry, policy):
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": policy, "max_lag": MAX_LAG}))
    recs, data = stream()
    input_done = threading.Event()
    fast = Sink(connect(hostport(po)))
    slow = Sink(connect(hostport(po)), rate=12 * 1024 * 1024)
    # Stalled: reads nothing until the input is done (block: until it gives
    # up waiting, since block holds the input back meanwhile).
    stalled = Sink(connect(hostport(po)), stall=input_done, stall_max=T(1.5))
    resetting = Sink(connect(hostport(po)), reset_after=300_000)
    restarting = Sink(connect(hostport(po)), close_after=200_000)
    connected(f, "output", 5)

    sinks = [fast, slow, stalled, resetting, restarting]
    reconnected = []

    def restart():
        restarting.wait(T(30))
        reconnected.append(Sink(connect(hostport(po))))
    rt = threading.Thread(target=restart, daemon=True)
    rt.start()

    with connect(hostport(pi)) as inp:
        # Paced so that a plain Python reader keeps up: only the outputs
        # meant to lag do.
        # Slower on slow builds (ASan), where a busy machine can starve a
        # reader thread long enough to fall max_lag behind.
        send_chunked(inp, data, seed=3, max_chunk=64 * 1024, pace=30 * 1024 * 1024 / SCALE)
    input_done.set()
    f.wait_event("fanout_input", where=lambda d: d.get("state") == "disconnected",
                 timeout=T(30))
    rt.join(T(30))
    assert reconnected, "the restarting output did not reconnect"
    again = reconnected[0]
    sinks.append(again)
    f.stop(timeout=T(30))
    for s in sinks:
        s.wait(T(30))

    def line(s):
        return disconnect_line(f, s.port)

    # The resetting output is gone without harm to the others.
    if policy == "disconnect" and resetting.how == "eof":
        # closed for lag before it had read enough to reset: allowed here
        assert line(resetting)["end"] == "lag"
    else:
        assert resetting.how == "we_reset"
        assert line(resetting)["end"] in ("reset", "send_error", "fin")
    # The restarting output's first session got a prefix of the stream.
    check_prefix(f, restarting, data)

    if policy == "block":
        # Nothing lost anywhere: the slowest output set the pace.
        for s in (fast, slow, stalled):
            check_all(f, s, data)
            assert line(s)["end"] == "shutdown"
        # The reconnected output starts at a record boundary and then gets
        # every record to the end.
        seq = [i for _, i in parse_records(again.data)]
        assert seq and seq == list(range(seq[0], N_RECORDS))
    elif policy == "disconnect":
        check_all(f, fast, data)
        assert line(fast)["end"] == "shutdown"
        # The stalled output was closed for lagging; it got an unchanged
        # prefix of the stream (its last record may be cut).
        assert line(stalled)["end"] == "lag"
        assert len(stalled.data) < len(data)
        check_prefix(f, stalled, data)
        # The slow one got everything, or was closed for lag with a prefix.
        if line(slow)["end"] == "lag":
            check_prefix(f, slow, data)
        else:
            check_all(f, slow, data)
        assert data.find(bytes(again.data)) >= 0
    else:  # drop
        total_dropped = 0
        for s in (fast, slow, stalled):
            got = parse_records(s.data)  # whole records only, never a partial one
            seq = [i for _, i in got]
            assert is_subsequence(seq), f"output :{s.port}: records out of order"
            dropped = line(s)["dropped_records"]
            assert len(seq) + dropped == N_RECORDS, \
                f"output :{s.port}: {len(seq)} received + {dropped} dropped"
            assert line(s)["end"] == "shutdown"
            total_dropped += dropped
        assert line(stalled)["dropped_records"] > 0
        assert line(fast)["dropped_records"] < N_RECORDS // 10
        assert total_dropped > 0
        seq = [i for _, i in parse_records(again.data)]
        assert is_subsequence(seq)


def test_block_paces_the_input(ferry):
    """on_lag block: while an output does not read, the input is not read
    either (its bytes stay in the network), and nothing is lost after."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": "block", "max_lag": "256KiB"}))
    go = threading.Event()
    stalled = Sink(connect(hostport(po)), stall=go, stall_max=T(20))
    connected(f, "output", 1)
    data = bytes(range(256)) * (4 * 48 * 1024)  # 48 MiB
    inp = connect(hostport(pi))
    inp.setblocking(False)
    sent, last = 0, time.monotonic()
    while sent < len(data) and time.monotonic() - last < 0.5:
        try:
            sent += inp.send(data[sent:sent + 262144])
            last = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    # The input is held back: what went in is what the sockets on the way
    # buffer plus max_lag, far less than the stream.
    assert sent < len(data) // 2
    go.set()
    inp.setblocking(True)
    inp.settimeout(T(30))
    inp.sendall(data[sent:])
    inp.close()
    wait_until(lambda: len(stalled.data) >= len(data), T(30), "the whole stream")
    assert bytes(stalled.data) == data
