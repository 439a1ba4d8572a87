"""Fan-out dialed peers (SPEC section 4): ferry connects to outputs.connect
sinks and inputs.connect sources, and reconnects after failure or close with
exponential backoff (100ms doubling to 10s, back to 100ms after a connection
that was established)."""

import socket
import threading
import time
from datetime import datetime

from helpers import T, connect, dead_addr, free_port, wait_until
from test_fanout_basic import Sink, connected, fanout_config, hostport, port_addr


class Peer:
    """A listener on a fixed loopback port that ferry dials.  Each accepted
    connection is a Sink (when ferry writes to us) or gets `send(k)` bytes
    (when ferry reads from us).  stop() closes the port and every connection;
    start() opens the same port again."""

    def __init__(self, port=None, send=None, keep_open=True):
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.send = send
        self.keep_open = keep_open
        self.conns = []  # Sinks, or raw sockets in send mode
        self.accepted = 0
        self.lsock = None
        self.start()

    def start(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            k = self.accepted
            self.accepted += 1
            if self.send is None:
                self.conns.append(Sink(c))
                continue
            self.conns.append(c)
            try:
                c.sendall(self.send(k))
                if not self.keep_open:
                    c.close()
            except OSError:
                pass

    def stop(self):
        ls, self.lsock = self.lsock, None
        if ls:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        for c in self.conns:
            sock = c.sock if isinstance(c, Sink) else c
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if not isinstance(c, Sink):
                sock.close()


def test_dialed_output_restarts(ferry):
    """A sink that goes away is redialed; once it is back it gets the records
    that arrive from then on."""
    sink = Peer()
    pi = port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]},
                            outputs={"connect": [sink.addr]}))
    connected(f, "output", 1, via="connect")
    inp = connect(hostport(pi))
    connected(f, "input", 1)
    inp.sendall(b"r1\n")
    wait_until(lambda: sink.conns and sink.conns[0].data == b"r1\n", T(5), "r1 at the sink")
    sink.stop()
    f.wait_event("fanout_output", where=lambda d: d.get("state") == "disconnected")
    # Down: connects are refused and retried, with the delay doubling.
    errs = f.wait_event("fanout_connect_error", count=2, timeout=T(5))
    assert errs[0]["role"] == "output" and errs[0]["peer"] == sink.addr
    inp.sendall(b"lost-while-down\n")  # no output connected: goes nowhere
    time.sleep(0.1)
    sink.start()
    connected(f, "output", 2, via="connect")
    inp.sendall(b"r2\n")
    wait_until(lambda: len(sink.conns) == 2 and sink.conns[1].data == b"r2\n", T(5),
               "r2 at the restarted sink")
    inp.close()
    sink.stop()


def test_dialed_input_reconnects(ferry):
    """A source that closes is redialed at once (100ms after a connection that
    was established); one that is down is retried until it is back."""
    src = Peer(send=lambda k: f"s{k}\n".encode(), keep_open=False)
    po = port_addr()
    f = ferry(fanout_config("line", inputs={"connect": [src.addr]},
                            outputs={"listen": [po]}))
    out = Sink(connect(hostport(po)))
    connected(f, "output", 1)
    # Each connection sends one record and closes: ferry keeps coming back.
    wait_until(lambda: out.data.count(b"\n") >= 3, T(5), "records of three connections")
    src.stop()
    src.send = lambda k: b"back\n"
    src.keep_open = True
    f.wait_event("fanout_connect_error", timeout=T(5))
    src.start()
    wait_until(lambda: out.data.endswith(b"back\n"), T(10), "the source back")
    recs = bytes(out.data).split(b"\n")[:-1]
    nums = [int(r[1:]) for r in recs if r.startswith(b"s")]
    # The first record may come before the output connected (it then goes
    # nowhere); from then on one per connection, none lost.
    assert len(nums) >= 3 and nums == list(range(nums[0], nums[0] + len(nums)))
    lines = [d for d in f.logs("fanout_input") if d.get("state") == "connected"]
    assert all(d["via"] == "connect" and d["peer"] == src.addr for d in lines)
    src.stop()


def test_backoff_doubles_to_the_cap(ferry):
    """A sink that never answers: retries after 100, 200, 400, 800ms..."""
    addr = dead_addr()
    pi = port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]}, outputs={"connect": [addr]}))
    errs = f.wait_event("fanout_connect_error", count=5, timeout=T(10))
    assert [d["retry_ms"] for d in errs[:5]] == [100, 200, 400, 800, 1600]
    assert all(d["level"] == "warn" and d["peer"] == addr for d in errs)
    # The tries really were that far apart: 100+200+400+800 ms in all.
    t = [datetime.strptime(d["ts"], "%Y-%m-%dT%H:%M:%S.%fZ") for d in errs[:5]]
    assert (t[4] - t[0]).total_seconds() >= 1.45


def test_shutdown_stops_dialing(ferry):
    """SIGTERM stops redialing at once: ferry exits without waiting for the
    backoff or shutdown_timeout."""
    pi = port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]},
                            outputs={"connect": [dead_addr()]}))
    f.wait_event("fanout_connect_error", count=2, timeout=T(5))
    start = time.monotonic()
    f.stop(timeout=T(5))
    assert time.monotonic() - start < T(2)
