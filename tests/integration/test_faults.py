"""Fault injection: ferry facing peers that misbehave in every way.

Each test says in its docstring what must hold.  Common to all of them: ferry
stays up (the fixture's teardown fails a test whose ferry crashed, exited with
an error, had to be killed or printed sanitizer or valgrind output), its memory
stays bounded, and every connection that was not itself hit by a fault gets its
bytes intact, checked with sha256.  Every test runs under each engine.

Backends that must die with SIGKILL, or hold thousands of connections, run in
a separate Python process (`ProcBackend`, one selectors loop); the others are
the harness's threaded servers.

The RSS and CPU bounds hold under valgrind too (`make valgrind`): valgrind only
adds memory and CPU time, so they stay upper bounds; some time limits are
longer there through helpers.T().
"""

import hashlib
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from helpers import (ASAN, T, Deadline, _die_with_parent, connect, dead_addr, duplex_client,
                     fmt_addr, free_port, payload, read_to_eof, recv_exact, recv_line, service,
                     set_linger_zero, sha, wait_closed, wait_until)
from test_fanout_basic import Sink, connected, disconnect_line, fanout_config, hostport, \
    make_records, parse_records, port_addr, send_chunked
from test_fanout_dial import Peer

MIB = 1 << 20


def ms(seconds):
    """A duration for ferry's configuration."""
    return f"{int(seconds * 1000)}ms"


# --- helpers -------------------------------------------------------------------

# An echo server in its own process: one selectors loop, any number of
# connections (it raises its descriptor limit to the hard limit), an optional
# greeting line first, back-pressure (stops reading while 1 MiB is unsent), a
# FIN passed on after the last byte.  Prints its port, then serves until killed.
ECHO_SERVER = r'''
import resource, selectors, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
greeting = (sys.argv[1] + "\n").encode() if sys.argv[1] else b""
HIGH = 1 << 20
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(4096)
ls.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(ls, selectors.EVENT_READ, None)
print(ls.getsockname()[1], flush=True)

class Conn:
    def __init__(self, sock):
        self.sock, self.out, self.eof, self.mask = sock, bytearray(greeting), False, 0

def drop(c):
    sel.unregister(c.sock)
    c.sock.close()

def update(c):
    mask = 0
    if not c.eof and len(c.out) < HIGH:
        mask |= selectors.EVENT_READ
    if c.out:
        mask |= selectors.EVENT_WRITE
    if mask == 0:  # the peer's FIN came and everything is echoed: pass it on
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        drop(c)
    elif mask != c.mask:
        sel.modify(c.sock, mask, c)
        c.mask = mask

while True:
    for key, ev in sel.select():
        if key.data is None:
            for _ in range(256):
                try:
                    s, _ = ls.accept()
                except OSError:
                    break
                s.setblocking(False)
                c = Conn(s)
                c.mask = selectors.EVENT_READ
                sel.register(s, c.mask, c)
                update(c)
            continue
        c = key.data
        try:
            if ev & selectors.EVENT_READ:
                d = c.sock.recv(262144)
                if d:
                    c.out += d
                else:
                    c.eof = True
            if c.out:
                n = c.sock.send(c.out)
                del c.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            drop(c)
            continue
        update(c)
'''


class ProcBackend:
    """ECHO_SERVER in a child process (so it can be killed with SIGKILL, and so its
    descriptors do not count against the test process)."""

    def __init__(self, greeting=""):
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, greeting],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     preexec_fn=_die_with_parent)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.proc.kill()
            raise RuntimeError("the echo server process did not start")
        self.port = int(line)
        self.addr = fmt_addr("127.0.0.1", self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def proc_backends():
    made = []

    def make(greeting=""):
        b = ProcBackend(greeting)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def socket_fds(pid):
    """How many of the process's descriptors are sockets (pipes of the splice pool
    and the engine's own descriptors are left out)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def asan_env():
    """For RSS bounds: ASan's quarantine keeps freed buffers resident; keep it small
    so RSS measures ferry's buffering, not the sanitizer's (as test_backpressure)."""
    if not ASAN:
        return None
    return {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                             ":quarantine_size_mb=8").lstrip(":")}


# RSS growth allowed while connections are stalled or idle: a few MiB of
# buffers, whatever the peers send (the release build grows by less than 1 MiB
# here).  The ASan build mallocs every buffer (FERRY_POOL_MALLOC), with redzones,
# shadow and quarantine on top: it gets more room (about 24 MiB measured on
# io_uring in test_backend_never_reads).
RSS_LIMIT_KB = (64 if ASAN else 32) * 1024


def cpu_share(f, seconds=1.0):
    """Share of one CPU ferry used over the next `seconds`."""
    cpu0, t0 = f.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (f.cpu_seconds() - cpu0) / (time.monotonic() - t0)


def run_threads(targets, timeout):
    """Runs each callable in a thread; waits for all; fails if one is still running."""
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    dl = Deadline(timeout)
    for t in threads:
        t.join(dl.left())
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{alive} client thread(s) still running after {timeout:.0f}s"


def metric(admin, name, labels=""):
    """The value of one sample of ferry's /metrics (None when absent)."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=T(10)) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{" if labels else name) and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return None


class Outcome:
    """How one client connection went: bytes received, their sha256, and the
    errors its sender and reader saw."""

    def __init__(self):
        self.received = 0
        self.sha = None
        self.send_error = None
        self.recv_error = None
        self.tag = None

    def reset(self):
        errs = (self.send_error, self.recv_error)
        return any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in errs)


def paced_duplex(sock, data, out, rate=None, chunk=65536, progress=None):
    """Sends `data` (at `rate` bytes/s at most) from a thread while reading to EOF;
    fills `out` (an Outcome) instead of raising, so a test can judge what happened."""
    hasher = hashlib.sha256()

    def sender():
        start = time.monotonic()
        try:
            for off in range(0, len(data), chunk):
                sock.sendall(data[off:off + chunk])
                if rate:
                    ahead = (off + chunk) / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            out.send_error = e

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        while True:
            d = sock.recv(262144)
            if not d:
                break
            out.received += len(d)
            hasher.update(d)
            if progress is not None:
                progress.set()
    except OSError as e:
        out.recv_error = e
    t.join(T(60))
    out.sha = hasher.hexdigest()


# --- backends that fail --------------------------------------------------------------

def test_backend_resets_mid_stream(ferry, servers):
    """The backend resets some connections in the middle of a transfer while others
    to the same backend run at the same time.  Must hold: each reset connection's
    client gets a reset (and the access log says end=backend_reset); every other
    client gets its 4 MiB echoed intact; ferry stays up and serves afterwards."""
    up = payload(4 * MIB, seed=11)

    def handler(conn, srv):
        mode = recv_line(conn)
        if mode == "reset":
            recv_exact(conn, 256 * 1024)  # well into the client's stream
            set_linger_zero(conn)         # the server closes it: RST
            return
        while True:
            d = conn.recv(262144)
            if not d:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(d)

    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr])]})
    outcomes = {}

    def client(i, mode):
        out = outcomes[i] = Outcome()
        with connect(f.addr(), timeout=T(30)) as c:
            c.sendall(mode.encode() + b"\n")
            paced_duplex(c, up, out)

    modes = ["reset", "echo"] * 4
    run_threads([lambda i=i, m=m: client(i, m) for i, m in enumerate(modes)], T(60))
    for i, mode in enumerate(modes):
        o = outcomes[i]
        if mode == "reset":
            assert o.reset(), f"client {i}: expected a reset, got EOF after {o.received} " \
                              f"bytes (send: {o.send_error!r}, recv: {o.recv_error!r})"
            assert o.received == 0
        else:
            assert (o.send_error, o.recv_error) == (None, None), (o.send_error, o.recv_error)
            assert (o.received, o.sha) == (len(up), sha(up)), f"client {i} lost bytes"
    lines = f.wait_access(len(modes))
    ends = sorted(d["end"] for d in lines)
    assert ends.count("backend_reset") == 4, ends
    assert f.running()
    with connect(f.addr(), timeout=T(30)) as c:
        c.sendall(b"echo\n")
        assert duplex_client(c, up[:MIB]) == (MIB, sha(up[:MIB]))


def test_backend_never_reads(ferry, servers):
    """The backend accepts and never reads.  Must hold: each client's writes stop
    after what socket buffers and ferry's few in-flight buffers hold (back-pressure,
    far less than it tries to send); ferry's RSS stays bounded; after idle_timeout
    (no byte moved) ferry closes both sides and logs end=idle_timeout."""
    release = threading.Event()

    def handler(conn, srv):
        srv.results.put("connected")
        release.wait(T(60))

    idle = min(T(3), 6)  # under valgrind a little longer: ferry moves bytes slower
    backend = servers.custom(handler)
    f = ferry(config={"services": [service([backend.addr], idle_timeout=ms(idle))]},
              env=asan_env())
    base_kb = f.rss_kb()
    n = 6
    clients = [connect(f.addr(), timeout=T(10)) for _ in range(n)]
    try:
        for _ in range(n):
            backend.result()
        sent = [0] * n
        chunk = b"\x5a" * 262144
        limit = 256 * MIB  # per client: back-pressure must stop it long before
        for c in clients:
            c.setblocking(False)
        peak_kb = base_kb
        quiet_since = time.monotonic()
        # Until no client could write for a second.
        while time.monotonic() - quiet_since < 1.0:
            _, writable, _ = select.select([], clients, [], 0.2)
            for c in writable:
                i = clients.index(c)
                try:
                    sent[i] += c.send(chunk)
                    quiet_since = time.monotonic()
                except BlockingIOError:
                    pass
                assert sent[i] < limit, f"client {i} sent {sent[i] // MIB} MiB: no back-pressure"
            peak_kb = max(peak_kb, f.rss_kb())
        stalled_at = time.monotonic()
        print(f"sent per client (MiB): {[s // MIB for s in sent]}; ferry RSS {base_kb // 1024}"
              f" -> peak {peak_kb // 1024} MiB")
        assert max(sent) < 64 * MIB, f"a client pushed {max(sent) // MIB} MiB into ferry"
        growth = peak_kb - base_kb
        assert growth < RSS_LIMIT_KB, f"ferry's RSS grew by {growth // 1024} MiB"
        # idle_timeout closes both sides (the client may see a reset: ferry had
        # unread bytes of it).
        for c in clients:
            c.setblocking(True)
            assert wait_closed(c, timeout=idle + T(10)) in ("eof", "reset")
        waited = time.monotonic() - stalled_at
        assert waited < idle + T(5), f"closed {waited:.1f}s after the stall"
        lines = f.wait_access(n)
        assert all(d["end"] == "idle_timeout" for d in lines), [d["end"] for d in lines]
        assert f.running()
    finally:
        release.set()
        for c in clients:
            c.close()


def test_backend_killed_mid_transfer(ferry, proc_backends):
    """Backend A, a separate process, gets SIGKILL while clients transfer through
    both backends.  Must hold: A's clients end promptly (reset or EOF, short of
    their data, never a hang); B's clients get every byte echoed intact; ferry
    stays up, and new clients are served by B (connects to A are refused and
    retried on B)."""
    a, b = proc_backends("A"), proc_backends("B")
    f = ferry(config={"services": [service([a.addr, b.addr], balance="round_robin",
                                           retries=2)]})
    up = payload(6 * MIB, seed=12)
    n = 8
    socks, outcomes, progress = [], [], []
    for _ in range(n):  # in turn: round_robin alternates A, B, A, B...
        c = connect(f.addr(), timeout=T(30))
        o = Outcome()
        o.tag = recv_line(c)
        socks.append(c)
        outcomes.append(o)
        progress.append(threading.Event())
    assert sorted(o.tag for o in outcomes) == ["A"] * (n // 2) + ["B"] * (n // 2)

    threads = [threading.Thread(target=paced_duplex, daemon=True,
                                args=(socks[i], up, outcomes[i], 4 * MIB, 65536, progress[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    for p in progress:
        assert p.wait(T(10)), "a transfer did not start"
    time.sleep(0.3)
    a.kill()
    killed_at = time.monotonic()
    for t in threads:
        t.join(T(30))
    assert not any(t.is_alive() for t in threads), "a client hangs after its backend died"
    for c in socks:
        c.close()
    for i, o in enumerate(outcomes):
        if o.tag == "B":
            assert (o.send_error, o.recv_error) == (None, None), (o.send_error, o.recv_error)
            assert (o.received, o.sha) == (len(up), sha(up)), f"client {i} on B lost bytes"
        else:
            assert o.received < len(up), f"client {i} on the dead backend got everything?"
    assert time.monotonic() - killed_at < T(15)
    f.wait_access(n)
    assert f.running()
    for _ in range(4):
        with connect(f.addr(), timeout=T(30)) as c:
            assert recv_line(c) == "B"
            assert duplex_client(c, up[:MIB]) == (MIB, sha(up[:MIB]))


# --- clients that fail ---------------------------------------------------------------

def test_slowloris_clients(ferry, proc_backends):
    """300 clients connect and never send a byte.  Must hold: meanwhile other
    clients are served with their bytes intact; idle_timeout closes every silent
    client (end=idle_timeout), none before its time; ferry's RSS stays bounded
    and its sockets return to what it had before."""
    backend = proc_backends("")
    idle = min(T(3), 8)  # the silent clients must all be connected well before it
    f = ferry(config={"services": [service([backend.addr], idle_timeout=ms(idle))]},
              env=asan_env())
    base_socks = socket_fds(f.pid)
    base_kb = f.rss_kb()
    n = 300
    silent = []
    try:
        t0 = time.monotonic()
        for _ in range(n):
            silent.append(connect(f.addr(), timeout=T(10)))
        wait_until(lambda: socket_fds(f.pid) >= base_socks + 2 * n, T(10),
                   "ferry to hold every silent client and its backend connection")
        rss_kb = f.rss_kb()
        # Served while the silent ones wait.
        for i in range(10):
            data = payload(128 * 1024 + i, seed=20 + i)
            with connect(f.addr(), timeout=T(30)) as c:
                assert duplex_client(c, data) == (len(data), sha(data))
        served_by = time.monotonic() - t0
        early = [d for d in f.access_logs() if d["end"] == "idle_timeout"]
        if served_by < idle - 0.5:
            assert not early, f"silent clients closed before idle_timeout: {early[:3]}"
        for c in silent:
            assert wait_closed(c, timeout=idle + T(10)) in ("eof", "reset")
        lines = f.wait_access(n + 10)
        idle_lines = [d for d in lines if d["end"] == "idle_timeout"]
        assert len(idle_lines) == n, f"{len(idle_lines)} of {n} closed for idle_timeout"
        assert min(d["duration_ms"] for d in idle_lines) >= idle * 1000 - 50
        assert rss_kb - base_kb < RSS_LIMIT_KB, \
            f"{n} idle connections cost {(rss_kb - base_kb) // 1024} MiB of RSS"
        wait_until(lambda: socket_fds(f.pid) == base_socks, T(10),
                   "ferry to close every socket of the silent clients")
    finally:
        for c in silent:
            c.close()


def test_clients_vanish_mid_transfer(ferry, servers):
    """While the backend streams 16 MiB to each client, some clients reset (RST)
    after 1 MiB and some just close mid-upload without reading.  Must hold: the
    backend's side of each vanished client ends (ferry passes the reset or close
    on); the surviving clients get every byte both ways intact; ferry ends up with
    exactly the sockets it had before (nothing leaks) and logs every connection."""
    down = payload(16 * MIB, seed=13)
    up = payload(MIB, seed=14)
    backend = servers.duplex(down)
    f = ferry(config={"services": [service([backend.addr])]})
    base_socks = socket_fds(f.pid)
    outcomes = {}

    def survivor(i):
        with connect(f.addr(), timeout=T(60)) as c:
            outcomes[i] = duplex_client(c, up)

    def resetter(i):
        c = connect(f.addr(), timeout=T(30))
        recv_exact(c, MIB)
        set_linger_zero(c)
        c.close()
        outcomes[i] = "reset"

    def closer(i):
        c = connect(f.addr(), timeout=T(30))
        c.sendall(up[:300000])
        c.close()  # mid-upload, with the backend's bytes unread
        outcomes[i] = "closed"

    kinds = [survivor, resetter, closer] * 4
    run_threads([lambda i=i, k=k: k(i) for i, k in enumerate(kinds)], T(90))
    for i, k in enumerate(kinds):
        if k is survivor:
            assert outcomes[i] == (len(down), sha(down)), f"survivor {i} lost bytes"
    wait_until(lambda: backend.active == 0, T(10), "the backend's connections to end")
    results = []
    while not backend.results.empty():  # vanished clients may have ended with a FIN
        results.append(backend.results.get())
    full = [r for r in results if r["received"] == len(up)]
    assert [r["sha256"] for r in full] == [sha(up)] * 4, "a survivor's upload changed"
    lines = f.wait_access(len(kinds))
    ends = [d["end"] for d in lines]
    assert ends.count("client_reset") >= 4, ends
    wait_until(lambda: socket_fds(f.pid) == base_socks, T(10),
               "ferry's sockets to go back to what it had before")
    assert f.running()


NOFILE = 128


def test_connection_storm_past_nofile(ferry, servers):
    """200 clients at once, each holding its connection after one echo exchange,
    against a ferry with RLIMIT_NOFILE 128 (room for about 60 proxied connections).
    Must hold: while saturated ferry does not spin (under 30% of a CPU) and stays
    up; once the served clients leave, descriptors free up and every client of the
    storm is served (a client closed unserved retries), its bytes intact."""
    backend = servers.echo()
    f = ferry(config={"max_connections": 10000, "services": [service([backend.addr])]},
              rlimit_nofile=NOFILE)
    n = 200
    release = threading.Event()
    served = [False] * n
    retries = [0] * n
    dl = Deadline(T(90))

    def client(i):
        msg = f"storm-{i:04d}|".encode() * 40
        while not dl.expired():
            try:
                with connect(f.addr(), timeout=T(60)) as c:
                    c.sendall(msg)
                    got = recv_exact(c, len(msg))
                    assert got == msg, f"client {i}: bytes changed"
                    served[i] = True
                    release.wait(T(90))
                    return
            except (OSError, AssertionError) as e:
                if "bytes changed" in str(e):
                    raise
                retries[i] += 1
                time.sleep(0.3 + (i % 7) * 0.05)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        # Saturated: the served count stops growing well below n.
        last, since = -1, time.monotonic()
        while time.monotonic() - since < 1.5:
            now = sum(served)
            if now != last:
                last, since = now, time.monotonic()
            assert not dl.expired(), "the served count never settled"
            time.sleep(0.1)
        assert 0 < last < n, f"{last} of {n} clients served with {NOFILE} descriptors"
        share = cpu_share(f, 1.5)
        print(f"saturated: {last} of {n} served, ferry CPU {share:.0%}, "
              f"{sum(retries)} retries so far")
        assert share < 0.3, f"ferry used {share:.0%} of a CPU while saturated"
        assert f.running()
    finally:
        release.set()
    # Served clients leave as soon as they are served now; the rest follow.
    for t in threads:
        t.join(dl.left())
    assert all(served), f"{n - sum(served)} clients never served after descriptors freed"
    assert f.running()
    with connect(f.addr(), timeout=T(30)) as c:
        assert duplex_client(c, b"after the storm") == (15, sha(b"after the storm"))


N_MANY = 9000


def test_nine_thousand_connections(ferry, proc_backends):
    """9,000 connections open at once (max_connections 10000; ferry holds 18,000
    sockets under the 20,000 descriptor limit; the backend is another process).
    Must hold: every one is accepted and relays a small echo exchange intact,
    /metrics counts 9,000 active, ferry's RSS is reported (and bounded), everything
    within about a minute; after the clients close, ferry is back to 0 active."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * N_MANY + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {2 * N_MANY + 500} (ferry needs "
                    f"two sockets per connection)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    try:
        backend = proc_backends("")
        admin = fmt_addr("127.0.0.1", free_port())
        # Ferry inherits the raised limit.
        f = ferry(config={"max_connections": 10000, "admin": {"listen": admin},
                          "log": {"access": False},
                          "services": [service([backend.addr])]})
        base_kb = f.rss_kb()
        t0 = time.monotonic()
        dl = Deadline(T(60))
        sel = selectors.DefaultSelector()
        addr = f.addr()
        started = done = 0
        batch = 500
        errors = []
        while done < N_MANY:
            while started < N_MANY and started - done < batch:
                s = socket.socket()
                s.setblocking(False)
                err = s.connect_ex(addr)
                if err not in (0, 115):  # EINPROGRESS
                    errors.append((started, os.strerror(err)))
                    s.close()
                    break
                socks.append(s)
                sel.register(s, selectors.EVENT_WRITE,
                             [f"hello {started:05d}\n".encode(), bytearray(), "connect"])
                started += 1
            assert not errors, f"connect failed: {errors[:5]}"
            assert not dl.expired(), f"{done} of {N_MANY} exchanges done in {T(60):.0f}s"
            for key, _ in sel.select(timeout=1.0):
                s, st = key.fileobj, key.data
                if st[2] == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert err == 0, f"connect: {os.strerror(err)}"
                    s.send(st[0])
                    st[2] = "read"
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                d = s.recv(4096)
                assert d, f"connection {st[0]!r} closed after {len(st[1])} bytes"
                st[1] += d
                if len(st[1]) >= len(st[0]):
                    assert bytes(st[1]) == st[0], f"got {bytes(st[1])!r} for {st[0]!r}"
                    sel.unregister(s)
                    done += 1
        sel.close()
        elapsed = time.monotonic() - t0
        active = wait_until(lambda: metric(admin, "ferry_connections_active") == N_MANY
                            and N_MANY, T(10), "/metrics to count every connection")
        rss_kb = f.rss_kb()
        print(f"{N_MANY} connections open and echoed in {elapsed:.1f}s; ferry RSS "
              f"{base_kb // 1024} -> {rss_kb // 1024} MiB ({(rss_kb - base_kb) / N_MANY:.1f} "
              f"KiB per connection), {socket_fds(f.pid)} sockets")
        assert active == N_MANY
        assert rss_kb - base_kb < 512 * 1024, f"RSS grew by {(rss_kb - base_kb) // 1024} MiB"
        assert f.running()
        for s in socks:
            s.close()
        socks = []
        wait_until(lambda: metric(admin, "ferry_connections_active") == 0, T(30),
                   "every connection to close")
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- mirrors and fan-out outputs that fail ---------------------------------------------

def _stall_handler(conn, srv):
    """Accepts and never reads."""
    srv.results.put("connected")
    time.sleep(T(20))


def _reset_after_handler(conn, srv):
    """Reads 64 KiB, then resets."""
    recv_exact(conn, 65536)
    set_linger_zero(conn)


def _close_at_once_handler(conn, srv):
    """Closes at once without reading (FIN, then RST for whatever comes)."""


def _sink_handler(conn, srv):
    h = hashlib.sha256()
    n = read_to_eof(conn, h)
    srv.results.put({"received": n, "sha256": h.hexdigest()})


def test_failing_mirrors_leave_main_traffic_intact(ferry, servers):
    """One service, five mirrors: refused, reset mid-stream, stalled (on_lag
    disconnect, max_lag 256KiB), closed at once, and a healthy one (on_lag block).  Must hold:
    every client's 24 MiB reach the backend and its 1 MiB reply comes back, intact
    and in time; the healthy mirror gets each client's exact bytes and a FIN;
    the refused, resetting and stalled mirrors are logged (event=mirror_error, the
    stalled one for lag); ferry stays up."""
    up = payload(24 * MIB, seed=15)
    down = payload(MIB, seed=16)
    backend = servers.duplex(down)
    resetting = servers.custom(_reset_after_handler)
    stalled = servers.custom(_stall_handler)
    closing = servers.custom(_close_at_once_handler)
    healthy = servers.custom(_sink_handler)
    refused = dead_addr()
    svc = service([backend.addr])
    svc["mirrors"] = [{"address": refused}, {"address": resetting.addr},
                      {"address": stalled.addr, "on_lag": "disconnect", "max_lag": "256KiB"},
                      {"address": closing.addr},
                      # block: paced to this mirror, so a busy test process reading it
                      # slowly cannot make it lag and be disconnected.
                      {"address": healthy.addr, "on_lag": "block"}]
    f = ferry(config={"services": [svc]})
    n = 4
    outcomes = {}

    def client(i):
        with connect(f.addr(), timeout=T(60)) as c:
            outcomes[i] = duplex_client(c, up)

    t0 = time.monotonic()
    run_threads([lambda i=i: client(i) for i in range(n)], T(90))
    elapsed = time.monotonic() - t0
    for i in range(n):
        assert outcomes[i] == (len(down), sha(down)), f"client {i} got other bytes"
    for _ in range(n):
        r = backend.result()
        assert (r["received"], r["sha256"]) == (len(up), sha(up)), "the backend lost bytes"
        try:
            m = healthy.result()
        except AssertionError as e:  # its connection ended badly
            raise AssertionError(f"{e}; mirror errors: {f.logs('mirror_error')}") from None
        assert (m["received"], m["sha256"]) == (len(up), sha(up)), "the healthy mirror lost bytes"
    assert elapsed < T(30), f"mirrors slowed the clients down: {elapsed:.1f}s"
    f.wait_access(n)
    errs = f.wait_event("mirror_error", count=3 * n,
                        where=lambda d: d.get("mirror") in (refused, resetting.addr,
                                                            stalled.addr))
    by = {}
    for e in errs:
        by.setdefault(e["mirror"], []).append(e)
    assert set(by) == {refused, resetting.addr, stalled.addr}, list(by)
    assert all("lag" in e["error"] for e in by[stalled.addr]), by[stalled.addr][:2]
    assert f.running()


@pytest.mark.parametrize("policy", ["disconnect", "drop"])
def test_failing_fanout_outputs_leave_main_traffic_intact(ferry, policy):
    """A line-framed fan-out stream (150,000 records, about 13 MiB, paced at 8
    MiB/s, max_lag 3MiB) while outputs fail: one resets mid-stream, one stalls (reads nothing
    until the input is done), one closes and reconnects, and a dialed sink is
    stopped and restarted (ferry redials it).  Must hold: the healthy listening
    output and the healthy dialed output get the stream byte for byte (sha256);
    the stalled one gets, with `disconnect`, an unchanged prefix and end=lag, with
    `drop`, whole records in order plus a dropped count making up the rest; the
    reconnected outputs start at a record boundary; ferry stays up."""
    pi, po = port_addr(), port_addr()
    dialed_ok, dialed_restart = Peer(), Peer()
    try:
        f = ferry(fanout_config("line", inputs={"listen": [pi]},
                                outputs={"listen": [po],
                                         "connect": [dialed_ok.addr, dialed_restart.addr],
                                         "on_lag": policy, "max_lag": "3MiB"}))
        connected(f, "output", 2, via="connect")
        recs = make_records("f", 150_000, seed=17, max_body=150)
        data = b"".join(recs)
        input_done = threading.Event()
        healthy = Sink(connect(hostport(po)))
        stalled = Sink(connect(hostport(po)), stall=input_done, stall_max=T(30))
        resetting = Sink(connect(hostport(po)), reset_after=300_000)
        restarting = Sink(connect(hostport(po)), close_after=200_000)
        connected(f, "output", 6)
        again = []

        def reconnect():
            restarting.wait(T(30))
            again.append(Sink(connect(hostport(po))))

        def restart_dialed():
            wait_until(lambda: dialed_restart.conns
                       and len(dialed_restart.conns[0].data) >= 300_000, T(30),
                       "the dialed sink to get its first bytes")
            dialed_restart.stop()
            time.sleep(0.1)
            dialed_restart.start()

        helpers_ = [threading.Thread(target=reconnect, daemon=True),
                    threading.Thread(target=restart_dialed, daemon=True)]
        for t in helpers_:
            t.start()
        with connect(hostport(pi)) as inp:
            send_chunked(inp, data, seed=5, max_chunk=64 * 1024, pace=8 * MIB)
        input_done.set()
        f.wait_event("fanout_input", where=lambda d: d.get("state") == "disconnected",
                     timeout=T(30))
        for t in helpers_:
            t.join(T(30))
        assert again, "the restarting output did not reconnect"
        assert len(dialed_restart.conns) >= 2, "ferry did not redial the restarted sink"
        f.stop(timeout=T(30))
        sinks = [healthy, stalled, resetting, restarting, again[0]]
        for s in sinks:
            s.wait(T(30))
        for p in (dialed_ok, dialed_restart):
            for s in p.conns:
                s.wait(T(30))

        # The main traffic: byte for byte.
        assert sha(bytes(healthy.data)) == sha(data), "the healthy output lost or changed bytes"
        (ok_sink,) = dialed_ok.conns
        assert sha(bytes(ok_sink.data)) == sha(data), "the healthy dialed output lost bytes"
        # The failing ones.
        assert resetting.how == "we_reset" and data.startswith(bytes(resetting.data[:300_000]))
        assert data.startswith(bytes(restarting.data))
        first = dialed_restart.conns[0]
        assert data.startswith(bytes(first.data))
        for late in [again[0]] + dialed_restart.conns[1:]:
            seq = [i for _, i in parse_records(late.data)]  # whole records only
            assert seq, "a reconnected output got nothing"
            if policy == "disconnect":
                assert seq == list(range(seq[0], seq[0] + len(seq))), "records missing"
            else:
                assert all(b > a for a, b in zip(seq, seq[1:])), "records out of order"
        line = disconnect_line(f, stalled.port)
        if policy == "disconnect":
            assert line["end"] == "lag", line
            assert len(stalled.data) < len(data) and data.startswith(bytes(stalled.data))
        else:
            seq = [i for _, i in parse_records(stalled.data)]
            assert all(b > a for a, b in zip(seq, seq[1:])), "records out of order"
            assert line["dropped_records"] > 0 and len(seq) + line["dropped_records"] == \
                len(recs), line
    finally:
        dialed_ok.stop()
        dialed_restart.stop()
