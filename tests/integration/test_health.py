"""Health checks (SPEC section 3, "Health"; keys of section 2): active checks every
`interval` mark a backend down after `fall` failures and up after `rise` successes,
send/expect with escapes, the PROXY header on check connections, passive failures
(failed client connects) counting toward `fall`, one log line per state change, and
clients closed at once (end=no_backend) when every backend is down.

Intervals are short (100-200ms) so every test finishes in a few seconds; upper bounds
go through T() for slow builds."""

import signal
import socket
import threading
import time

import pytest

from helpers import (T, Blackhole, ask_tag, connect, dead_addr, fmt_addr, free_port,
                     read_to_eof, service, to_yaml, wait_closed, wait_until)


def hc(**kw):
    """A health_check section with short, test-friendly defaults."""
    d = {"interval": "200ms", "timeout": "200ms", "rise": 2, "fall": 2}
    d.update(kw)
    return d


def state_changes(f, backend):
    """backend_down / backend_up lines for `backend`, in order."""
    return [d for d in f.logs() if d.get("event") in ("backend_down", "backend_up")
            and d.get("backend") == backend]


class Switchable:
    """A tagging backend (sends its name and a newline, then holds the connection
    until the client closes) on a fixed loopback port that can stop listening, so
    connects are refused, and listen again on the same port."""

    def __init__(self, name):
        self.name = name
        self.host = "127.0.0.1"
        self.port = 0
        self.sock = None
        self.thread = None
        self.lock = threading.Lock()
        self.conns = set()
        self.accepted = 0
        self.start()
        self.addr = fmt_addr(self.host, self.port)

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self.sock = s
        self.thread = threading.Thread(target=self._accept_loop, args=(s,), daemon=True)
        self.thread.start()

    def _accept_loop(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(T(30))
            c.sendall(self.name.encode() + b"\n")
            read_to_eof(c)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            c.close()

    def stop(self):
        s, self.sock = self.sock, None
        if s is None:
            return
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        s.close()
        self.thread.join(T(5))
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop()


@pytest.fixture
def switchable():
    made = []

    def make(name):
        s = Switchable(name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_down_after_fall_up_after_rise(ferry, servers, switchable):
    a, b = servers.tag("a"), switchable("b")
    f = ferry(config={"services": [service([a.addr, b.addr], balance="round_robin",
                                           health_check=hc(fall=2, rise=2))]})
    assert sorted(ask_tag(f.addr()) for _ in range(4)) == ["a", "a", "b", "b"]
    assert not state_changes(f, b.addr), "backends start up"

    t0 = time.monotonic()
    b.stop()
    (down,) = f.wait_event("backend_down", timeout=T(5))
    took = time.monotonic() - t0
    assert down["level"] == "warn", down
    assert down["service"] == "web" and down["backend"] == b.addr, down
    assert down["reason"] == "connect: Connection refused", down
    # fall (2) x interval (200ms), plus one interval of phase: well under 2 s.
    assert took < T(2), f"marked down after {took:.2f}s"

    # Once down, new clients all go to the other backend, with no failed connect.
    errors = len(f.logs("connect_error"))
    assert [ask_tag(f.addr()) for _ in range(6)] == ["a"] * 6
    assert len(f.logs("connect_error")) == errors
    assert not [l for l in f.access_logs() if l.get("end") == "connect_failed"]

    b.start()
    (up,) = f.wait_event("backend_up", timeout=T(5))
    assert up["level"] == "info", up
    assert up["service"] == "web" and up["backend"] == b.addr, up
    assert "reason" not in up, up
    assert sorted(ask_tag(f.addr()) for _ in range(4)) == ["a", "a", "b", "b"]
    assert [d["event"] for d in state_changes(f, b.addr)] == ["backend_down", "backend_up"]


def _ping_handler(reply_parts, gap=0.05):
    """A backend for send/expect: reads one line, records it, answers with
    `reply_parts` (sent separately, `gap` apart, so a reply spans receives),
    then waits for the client to close."""
    def handler(conn, srv):
        data = b""
        while not data.endswith(b"\n"):
            d = conn.recv(256)
            if not d:
                break
            data += d
        srv.results.put(data)
        for i, part in enumerate(reply_parts):
            if i:
                time.sleep(gap)
            conn.sendall(part)
        read_to_eof(conn)
    return handler


def test_send_expect_single_quoted_escapes(ferry, servers, tmp_path):
    """send 'PING\\r\\n' / expect '+PONG' written in single-quoted YAML: the escapes
    are decoded by ferry.  A reply split over two segments still matches; a wrong
    reply marks the backend down (reason "expect not found")."""
    good = servers.custom(_ping_handler([b"+PO", b"NG\r\n"]), name="good")
    bad = servers.custom(_ping_handler([b"-ERR unknown command\r\n"]), name="bad")
    port = free_port()
    path = tmp_path / "health.yaml"
    path.write_text(
        "services:\n"
        "  - name: kv\n"
        f"    listen: [\"127.0.0.1:{port}\"]\n"
        "    balance: round_robin\n"
        "    backends:\n"
        f"      - address: {good.addr}\n"
        f"      - address: {bad.addr}\n"
        "    health_check:\n"
        "      interval: 200ms\n"
        "      timeout: 1s\n"
        "      rise: 2\n"
        "      fall: 2\n"
        "      send: 'PING\\r\\n'\n"
        "      expect: '+PONG'\n")
    f = ferry(args=["-c", str(path)])
    (down,) = f.wait_event("backend_down", timeout=T(5))
    assert down["backend"] == bad.addr and down["service"] == "kv", down
    assert down["reason"] == "expect not found", down
    assert good.result() == b"PING\r\n"
    assert bad.result() == b"PING\r\n"
    # A few more rounds: the good backend, split reply and all, stays up.
    wait_until(lambda: good.accepted >= 5, T(5), "five checks of the good backend")
    assert not state_changes(f, good.addr)
    assert len(state_changes(f, bad.addr)) == 1


@pytest.mark.parametrize("version,send,want", [
    ("v1", None, b"PROXY UNKNOWN\r\n"),
    # `send` holds the escape text (backslash, n) that ferry decodes
    ("v2", "HELLO\\n", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00HELLO\n"),
])
def test_proxy_header_on_check_connections(ferry, servers, version, send, want):
    """With proxy_protocol, a check connection starts with the LOCAL (v2) or
    UNKNOWN (v1) header, followed by `send` when set."""
    def record(conn, srv):
        srv.results.put(read_to_eof_bytes(conn))

    rec = servers.custom(record)
    check = hc(interval="1h", timeout="1s", rise=1, fall=1)
    if send is not None:
        check["send"] = send
    f = ferry(config={"services": [service([rec.addr], proxy_protocol=version,
                                           health_check=check)]})
    assert rec.result(T(5)) == want
    assert not state_changes(f, rec.addr)


def read_to_eof_bytes(conn):
    data = b""
    while True:
        d = conn.recv(4096)
        if not d:
            return data
        data += d


def test_flapping_backend(ferry, servers, switchable):
    """A backend that stops and starts listening every ~0.5 s: one log line per
    state change (strictly alternating, down first), clients keep being served,
    and ferry survives."""
    a, b = servers.tag("a"), switchable("b")
    # two workers: passive results come from both threads, checks from worker 0
    f = ferry(config={"workers": 2,
                      "services": [service([a.addr, b.addr], balance="round_robin",
                                           retries=2,
                                           health_check=hc(interval="100ms",
                                                           timeout="100ms", rise=1,
                                                           fall=1))]})
    stop = threading.Event()
    toggles = []

    def flap():
        while not stop.is_set():
            if stop.wait(0.5):
                break
            if b.sock is not None:
                b.stop()
                toggles.append("stop")
            else:
                b.start()
                toggles.append("start")

    t = threading.Thread(target=flap, daemon=True)
    t.start()
    served = failed = 0
    dl = time.monotonic() + 3.2
    try:
        while time.monotonic() < dl:
            try:
                ask_tag(f.addr())
                served += 1
            except (OSError, AssertionError):
                failed += 1  # a client on b at the very moment b stops
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(T(5))
    if b.sock is None:
        b.start()
    # The last change is "up" once b listens for good.
    wait_until(lambda: (state_changes(f, b.addr) or [{}])[-1].get("event") == "backend_up",
               T(5), "b back up after flapping")
    events = [d["event"] for d in state_changes(f, b.addr)]
    assert len(events) >= 2, (events, toggles)
    assert events[0] == "backend_down", events
    for x, y in zip(events, events[1:]):
        assert x != y, f"two {x} lines in a row: {events}"
    stops = toggles.count("stop")
    assert events.count("backend_down") <= stops, (events, toggles)
    assert served > 0 and failed <= served, (served, failed)
    assert f.running()
    assert ask_tag(f.addr()) in ("a", "b")


def test_all_backends_down_closes_client_at_once(ferry):
    f = ferry(config={"services": [service([dead_addr(), dead_addr()],
                                           health_check=hc(rise=1, fall=1))]})
    f.wait_event("backend_down", count=2, timeout=T(5))
    errors = len(f.logs("connect_error"))
    with connect(f.addr()) as c:
        t0 = time.monotonic()
        wait_closed(c, T(3))
        assert time.monotonic() - t0 < T(1), "the client should be closed at once"
    (line,) = f.wait_access(1)
    assert line["end"] == "no_backend", line
    assert line["backend"] == "-", line
    assert len(f.logs("connect_error")) == errors, "no connect is tried"


def test_passive_failures_mark_down(ferry, servers, switchable):
    """Checks are an hour apart: only failed client connects can mark the backend
    down (fall 2).  Every client is still served, by retrying on the other one."""
    a, b = switchable("a"), servers.tag("b")
    f = ferry(config={"workers": 2,
                      "services": [service([a.addr, b.addr], balance="round_robin",
                                           retries=1,
                                           health_check=hc(interval="1h", timeout="1s",
                                                           rise=1, fall=2))]})
    # the first round of checks ran (at once, at start) and passed
    wait_until(lambda: a.accepted >= 1 and b.accepted >= 1, T(5), "first checks")
    a.stop()
    tags = []
    for _ in range(10):
        tags.append(ask_tag(f.addr()))
        if f.logs("backend_down"):
            break
    assert set(tags) == {"b"}, tags
    (down,) = f.wait_event("backend_down", timeout=T(2))
    assert down["backend"] == a.addr and down["reason"] == "passive failures", down
    assert len(f.logs("connect_error")) == 2, f.logs("connect_error")
    # down: no more connects to it
    assert [ask_tag(f.addr()) for _ in range(4)] == ["b"] * 4
    assert len(f.logs("connect_error")) == 2


def test_passive_success_forgives_passive_failures(ferry, servers, switchable):
    """fall 2: refused, then served, then refused is not two consecutive failures
    (a good client connect clears the passive streak, as HAProxy's observe layer4)."""
    a = switchable("a")
    f = ferry(config={"services": [service([a.addr], retries=0,
                                           health_check=hc(interval="1h", timeout="1s",
                                                           rise=1, fall=2))]})
    wait_until(lambda: a.accepted >= 1, T(5), "first check")
    for _ in range(2):
        a.stop()
        with connect(f.addr()) as c:
            wait_closed(c, T(3))
        a.start()
        assert ask_tag(f.addr()) == "a"
    assert len(f.logs("connect_error")) == 2
    assert not f.logs("backend_down")


def test_timeout_and_clean_shutdown_with_checks_in_flight(ferry, servers):
    """A backend whose connects hang is marked down for "timeout"; SIGTERM while
    check connects are pending still exits at once with status 0."""
    hole = Blackhole()
    try:
        live = servers.tag("live")
        f = ferry(config={"services": [service([hole.addr, live.addr],
                                               health_check=hc(interval="100ms",
                                                               timeout="300ms", rise=1,
                                                               fall=1))]})
        (down,) = f.wait_event("backend_down", timeout=T(5))
        assert down["backend"] == hole.addr and down["reason"] == "timeout", down
        assert [ask_tag(f.addr()) for _ in range(3)] == ["live"] * 3
        time.sleep(0.15)  # a check of the blackhole is very likely in flight now
        t0 = time.monotonic()
        f.stop(signal.SIGTERM, timeout=T(5))
        assert time.monotonic() - t0 < T(2)
    finally:
        hole.close()


def test_reload_without_health_check_brings_backends_up(ferry, servers, switchable):
    """The state of a backend survives a reload that keeps it; a reload that removes
    health_check brings a down backend back (nothing is checked any more)."""
    a, b = servers.tag("a"), switchable("b")
    f = ferry(config={"services": [service([a.addr, b.addr], balance="round_robin",
                                           health_check=hc(rise=1, fall=1))]})
    b.stop()
    f.wait_event("backend_down", timeout=T(5))
    cfg = f.config
    f.config_path.write_text(to_yaml(cfg) + "\n")
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload", count=1)
    time.sleep(0.5)  # checks of the new generation ran: b is still down
    assert [d["event"] for d in state_changes(f, b.addr)] == ["backend_down"]
    assert [ask_tag(f.addr()) for _ in range(3)] == ["a"] * 3

    b.start()
    del cfg["services"][0]["health_check"]
    f.config_path.write_text(to_yaml(cfg) + "\n")
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload", count=2)
    (up,) = f.wait_event("backend_up", timeout=T(5))
    assert up["backend"] == b.addr, up
    assert sorted(ask_tag(f.addr()) for _ in range(4)) == ["a", "a", "b", "b"]
