"""Fan-out (SPEC section 4): data integrity, roles, line framing, shutdown.

Also holds the small helpers the other test_fanout_*.py files import: a fan-out
config builder, a threaded output reader (`Sink`), checksummed line records.
Every wait has a deadline (helpers.T scales them for sanitizer builds).
"""

import random
import socket
import string
import threading
import time
import zlib

import pytest

from helpers import T, connect, fmt_addr, free_port, payload, sha, wait_until


# --- helpers shared by the fan-out tests -------------------------------------

def port_addr(host="127.0.0.1"):
    """A free loopback address for a role port (inputs.listen / outputs.listen)."""
    return fmt_addr(host, free_port(host))


def hostport(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def fanout_config(framing="raw", listen=None, inputs=None, outputs=None, **svc_opts):
    svc = {"name": "feed", "mode": "fanout"}
    if listen:
        svc["listen"] = listen
    svc["framing"] = framing
    svc.update(svc_opts)
    svc["inputs"] = inputs or {}
    svc["outputs"] = outputs or {}
    return {"shutdown_timeout": f"{int(T(10))}s", "services": [svc]}


def connected(f, role, n, via=None):
    """Waits for n `state=connected` lines of role ('input' or 'output')."""
    return f.wait_event(f"fanout_{role}", count=n,
                        where=lambda d: d.get("state") == "connected"
                        and (via is None or d.get("via") == via))


def disconnect_line(f, port, role="output", timeout=None):
    """The `state=disconnected` line of the peer whose local port is `port`."""
    lines = f.wait_event(f"fanout_{role}", timeout=timeout,
                         where=lambda d: d.get("state") == "disconnected"
                         and str(d.get("peer", "")).endswith(f":{port}"))
    return lines[0]


class Sink:
    """Reads one connection in a thread until EOF, reset or timeout.

    rate: bytes per second to read at (None: as fast as possible);
    stall: an Event (or seconds) to wait for before reading at all;
    reset_after / close_after: after that many bytes, close with a RST / FIN.
    """

    def __init__(self, sock, rate=None, stall=None, stall_max=None, reset_after=None,
                 close_after=None):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.rate = rate
        self.stall = stall
        self.stall_max = stall_max
        self.reset_after = reset_after
        self.close_after = close_after
        self.data = bytearray()
        self.how = None
        self.done = threading.Event()
        sock.settimeout(T(60))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            if isinstance(self.stall, threading.Event):
                self.stall.wait(self.stall_max)
            elif self.stall:
                time.sleep(self.stall)
            start = time.monotonic()
            while True:
                d = self.sock.recv(16384 if self.rate else 262144)
                if not d:
                    self.how = "eof"
                    break
                self.data += d
                n = len(self.data)
                if self.reset_after is not None and n >= self.reset_after:
                    import struct
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                    self.how = "we_reset"
                    break
                if self.close_after is not None and n >= self.close_after:
                    self.how = "we_closed"
                    break
                if self.rate:
                    ahead = n / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.05))
        except ConnectionResetError:
            self.how = "reset"
        except socket.timeout:
            self.how = "timeout"
        except OSError as e:
            self.how = f"error {e}"
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.done.set()

    def wait(self, timeout=None):
        assert self.done.wait(timeout or T(30)), f"sink :{self.port} still reading"
        return bytes(self.data)


def sink_at(addr, source=None, **kw):
    return Sink(connect(addr, source), **kw)


def make_records(tag, n, seed, max_body=120):
    """n checksummed records b'tag:i:body:crc\\n'."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = "".join(rng.choices(string.ascii_letters, k=rng.randint(0, max_body)))
        core = f"{tag}:{i}:{body}"
        out.append(f"{core}:{zlib.crc32(core.encode()):08x}\n".encode())
    return out


def parse_records(data, allow_partial_tail=False):
    """[(tag, i)] of the records in data; every record must be intact."""
    lines = bytes(data).split(b"\n")
    tail = lines.pop()
    if tail and not allow_partial_tail:
        raise AssertionError(f"stream ends inside a record: {tail[:80]!r}")
    out = []
    for line in lines:
        core, _, crc = line.rpartition(b":")
        assert core and f"{zlib.crc32(core):08x}".encode() == crc, \
            f"damaged record {line[:120]!r}"
        tag, i, _ = core.split(b":", 2)
        out.append((tag.decode(), int(i)))
    return out


def send_chunked(sock, data, seed=0, max_chunk=9000, pace=None):
    """Sends data in random-size pieces (records get split across writes);
    pace: bytes per second at most."""
    rng = random.Random(seed)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pos = 0
    start = time.monotonic()
    while pos < len(data):
        k = rng.randint(1, max_chunk)
        sock.sendall(data[pos:pos + k])
        pos += k
        if pace:
            ahead = pos / pace - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def closed_by_peer(sock, timeout=None):
    """True once the peer closed (EOF or reset); data received is ignored."""
    sock.settimeout(timeout or T(5))
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# --- tests ---------------------------------------------------------------------

def test_raw_every_output_gets_identical_bytes(ferry):
    """Raw, one input: every output's bytes are the input's, byte for byte; at
    SIGTERM with no input left, outputs get everything, then a FIN."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": "block", "max_lag": "1MiB"}))
    sinks = [sink_at(hostport(po)) for _ in range(3)]
    connected(f, "output", 3)
    data = payload(6 * 1024 * 1024, seed=1)
    with connect(hostport(pi)) as s:
        send_chunked(s, data, seed=1, max_chunk=200000)
    wait_until(lambda: all(len(k.data) >= len(data) for k in sinks), T(30),
               "every output to receive the whole stream")
    f.stop()
    for k in sinks:
        got = k.wait()
        assert k.how == "eof"
        assert len(got) == len(data) and sha(got) == sha(data)
    line = f.wait_event("fanout_input", where=lambda d: d.get("state") == "disconnected")[0]
    assert line["bytes"] == len(data) and line["end"] == "fin"
    assert all(d["end"] == "shutdown" and d["bytes"] == len(data)
               for d in f.logs("fanout_output") if d.get("state") == "disconnected")


def test_line_several_inputs_records_intact(ferry):
    """Line framing, three inputs writing records split at random places at
    the same time: both outputs get every record once, intact, each input's
    in order, and the very same byte stream (one shared log)."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": "block"}))
    sinks = [sink_at(hostport(po)) for _ in range(2)]
    connected(f, "output", 2)
    streams = {t: make_records(t, 3000, seed=k) for k, t in enumerate(("a", "b", "c"))}
    total = sum(len(r) for recs in streams.values() for r in recs)
    errors = []

    def send(tag, k):
        try:
            with connect(hostport(pi)) as s:
                send_chunked(s, b"".join(streams[tag]), seed=k, max_chunk=700,
                             pace=1024 * 1024)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(t, k)) for k, t in enumerate(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T(30))
    assert not errors
    wait_until(lambda: all(len(k.data) >= total for k in sinks), T(30), "all records")
    time.sleep(0.1)
    outs = [bytes(k.data) for k in sinks]
    assert len(outs[0]) == total and outs[0] == outs[1]
    recs = parse_records(outs[0])
    assert sorted(recs) == sorted((t, i) for t in streams for i in range(3000))
    for tag in streams:
        seq = [i for t, i in recs if t == tag]
        assert seq == list(range(3000)), f"input {tag}: records out of order"
    # Records of different inputs did interleave (the test would be weak otherwise).
    tags = [t for t, _ in recs]
    assert sum(1 for x, y in zip(tags, tags[1:]) if x != y) > 10


def test_shared_port_classifies_by_source(ferry):
    """On the shared port the source address decides the role; a peer that
    matches no role is closed at accept and logged."""
    f = ferry(fanout_config("line", listen=["127.0.0.1:0"],
                            inputs={"from": ["127.0.0.1/32"]},
                            outputs={"from": ["127.0.0.2/32", "127.0.0.4/32"]}))
    addr = f.addr()
    out = sink_at(addr, source="127.0.0.2")
    out2 = sink_at(addr, source="127.0.0.4")
    connected(f, "output", 2, via="shared")
    stranger = connect(addr, source="127.0.0.3")
    assert closed_by_peer(stranger)
    rej = f.wait_event("fanout_rejected")[0]
    assert rej["level"] == "warn" and rej["reason"] == "no_role"
    assert rej["peer"].startswith("127.0.0.3:")
    with connect(addr, source="127.0.0.1") as inp:
        connected(f, "input", 1, via="shared")
        inp.sendall(b"hello\n")
        wait_until(lambda: out.data == b"hello\n" and out2.data == b"hello\n", T(5),
                   "the record at both outputs")
    assert [d["role"] for d in f.logs("fanout_input")][0] == "input"


def test_max_line_closes_the_input(ferry):
    """A record longer than max_line closes its input with an error; its
    partial record never reaches an output; other inputs go on."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", max_line="1KiB", inputs={"listen": [pi]},
                            outputs={"listen": [po]}))
    out = sink_at(hostport(po))
    connected(f, "output", 1)
    a = connect(hostport(pi))
    a.sendall(b"a1\n" + b"x" * 2000)
    assert closed_by_peer(a)
    a.close()
    err = f.wait_event("fanout_max_line")[0]
    assert err["level"] == "error" and err["max_line"] == 1024
    line = f.wait_event("fanout_input", where=lambda d: d.get("state") == "disconnected")[0]
    assert line["end"] == "max_line"
    exact = b"y" * 1023 + b"\n"  # exactly max_line with its \n: accepted
    with connect(hostport(pi)) as b:
        b.sendall(b"b1\n" + exact)
        want = b"a1\nb1\n" + exact
        wait_until(lambda: len(out.data) >= len(want), T(5), "records of the good input")
    time.sleep(0.1)
    assert bytes(out.data) == want


def test_partial_record_discarded_at_eof(ferry):
    """An input that ends inside a record: that partial record is dropped."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]}, outputs={"listen": [po]}))
    out = sink_at(hostport(po))
    connected(f, "output", 1)
    with connect(hostport(pi)) as a:
        a.sendall(b"full\npart")
    line = f.wait_event("fanout_input", where=lambda d: d.get("state") == "disconnected")[0]
    assert line["discarded"] == 4 and line["end"] == "fin"
    with connect(hostport(pi)) as b:
        b.sendall(b"next\n")
        wait_until(lambda: len(out.data) >= 10, T(5), "the second input's record")
    time.sleep(0.1)
    assert bytes(out.data) == b"full\nnext\n"


def test_late_output_starts_at_record_boundary(ferry):
    """An output that joins while a record is half received gets that record
    whole once it ends; one that joins later gets only later records."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]}, outputs={"listen": [po]}))
    early = sink_at(hostport(po))
    connected(f, "output", 1)
    with connect(hostport(pi)) as inp:
        connected(f, "input", 1)
        inp.sendall(b"one\nab")
        wait_until(lambda: early.data == b"one\n", T(5), "the first record")
        late = sink_at(hostport(po))
        connected(f, "output", 2)
        inp.sendall(b"c\ntwo\n")
        wait_until(lambda: late.data == b"abc\ntwo\n", T(5), "the late output's records")
        later = sink_at(hostport(po))
        connected(f, "output", 3)
        inp.sendall(b"three\n")
        wait_until(lambda: later.data == b"three\n", T(5), "the latest output's record")
    time.sleep(0.1)
    assert bytes(early.data) == b"one\nabc\ntwo\nthree\n"
    assert bytes(late.data) == b"abc\ntwo\nthree\n"
    assert bytes(later.data) == b"three\n"


def test_raw_late_output_gets_bytes_from_its_join(ferry):
    """Raw: an output gets exactly the bytes that arrive after it connected."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]}, outputs={"listen": [po]}))
    first = sink_at(hostport(po))
    connected(f, "output", 1)
    with connect(hostport(pi)) as inp:
        inp.sendall(b"before")
        wait_until(lambda: first.data == b"before", T(5), "the first bytes")
        second = sink_at(hostport(po))
        connected(f, "output", 2)
        inp.sendall(b"-after")
        wait_until(lambda: second.data == b"-after" and first.data == b"before-after",
                   T(5), "the later bytes at both outputs")


def test_output_bytes_are_read_and_dropped(ferry):
    """What an output sends is read and thrown away (its socket never fills and
    nothing reaches anyone); its FIN ends it."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": "block"}))
    chatty = connect(hostport(po))
    cport = chatty.getsockname()[1]
    other = sink_at(hostport(po))
    connected(f, "output", 2)
    junk = payload(8 * 1024 * 1024, seed=9)
    chatty.settimeout(T(20))
    chatty.sendall(junk)  # would block forever if ferry did not read it
    data = payload(1024 * 1024, seed=3)
    with connect(hostport(pi)) as inp:
        inp.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        got += chatty.recv(262144)
    assert bytes(got) == data
    wait_until(lambda: bytes(other.data) == data, T(10), "the other output's copy")
    chatty.shutdown(socket.SHUT_WR)
    assert closed_by_peer(chatty)
    chatty.close()
    line = disconnect_line(f, cport)
    assert line["end"] == "fin"
    assert line["bytes"] == len(data)


def test_sigterm_closes_listeners_and_waits_for_inputs(ferry):
    """SIGTERM closes the listeners at once; an open input still delivers;
    once it ends, outputs are flushed and closed, and ferry exits 0."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]}, outputs={"listen": [po]}))
    out = sink_at(hostport(po))
    connected(f, "output", 1)
    inp = connect(hostport(pi))
    connected(f, "input", 1)
    f.send_signal()
    f.wait_event("shutdown")

    def refused():
        try:
            connect(hostport(po), timeout=1).close()
            return False
        except OSError:
            return True
    wait_until(refused, T(5), "the output port to be closed")
    assert f.running()
    inp.sendall(b"last words\n")
    inp.close()
    assert out.wait(T(10)) == b"last words\n"
    assert out.how == "eof"
    assert f.wait_exit(T(10)) == 0
    f.check_sanitizer()


def test_drop_never_splits_or_drops_a_large_record_for_a_fast_output(ferry):
    """on_lag drop with records larger than max_lag: an output that keeps up
    still gets every record whole (the newest record is never dropped)."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("line", inputs={"listen": [pi]},
                            outputs={"listen": [po], "on_lag": "drop", "max_lag": "4KiB"}))
    out = sink_at(hostport(po))
    connected(f, "output", 1)
    recs = [bytes([97 + k]) * 40000 + b"\n" for k in range(5)]
    with connect(hostport(pi)) as inp:
        for r in recs:
            n = len(out.data)
            inp.sendall(r)
            wait_until(lambda: len(out.data) >= n + len(r), T(5), "the large record")
    assert bytes(out.data) == b"".join(recs)


def test_limit_and_acl_at_accept(ferry):
    """Over the service's max_connections, or denied, a peer is closed at
    accept; a slot comes back when its connection has ended."""
    pi, po = port_addr(), port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]}, outputs={"listen": [po]},
                            max_connections=2, deny=["127.0.0.5/32"]))
    a = sink_at(hostport(po))
    b = connect(hostport(po))
    connected(f, "output", 2)
    c = connect(hostport(po))
    assert closed_by_peer(c)
    c.close()
    assert f.wait_event("fanout_rejected")[0]["reason"] == "limit"
    d = connect(hostport(po), source="127.0.0.5")
    assert closed_by_peer(d)
    d.close()
    assert f.wait_event("fanout_rejected", count=2)[1]["reason"] == "acl"
    bport = b.getsockname()[1]
    b.close()
    disconnect_line(f, bport)
    # The slot is free once the engine released the socket: an input (they
    # count toward max_connections too) now gets in and reaches the output.

    def input_accepted():
        s = connect(hostport(pi))
        s.sendall(b"x")
        try:
            wait_until(lambda: a.data.endswith(b"x"), 0.5, "the byte")
            return s
        except AssertionError:
            s.close()
            return None
    s = wait_until(input_accepted, T(5), "a free slot")
    s.close()
    assert any(d["reason"] == "limit" for d in f.logs("fanout_rejected"))


def test_runs_on_worker_zero_with_several_workers(ferry):
    """With several workers fan-out runs on worker 0 only: one log, one set of
    listeners, every output gets everything."""
    pi, po = port_addr(), port_addr()
    cfg = fanout_config("raw", inputs={"listen": [pi]}, outputs={"listen": [po]})
    cfg["workers"] = 2
    f = ferry(cfg)
    sinks = [sink_at(hostport(po)) for _ in range(4)]
    connected(f, "output", 4)
    data = payload(512 * 1024, seed=5)
    with connect(hostport(pi)) as inp:
        inp.sendall(data)
    wait_until(lambda: all(bytes(k.data) == data for k in sinks), T(10), "every copy")
