"""Host names in backend addresses (SPEC section 2): resolved without blocking the
event loop (c-ares in its own thread), every address a name resolves to is a backend,
re-resolved every resolve_interval, and a name that stops resolving keeps its last
addresses.  A local DNS server (tests/tools/fakedns.py) answers from a table the test
changes; ferry is pointed at it with FERRY_DNS_SERVER."""

import socket
import threading


import pytest

from helpers import T, connect, free_port, service, wait_until
from test_resolve_tool import FakeDNS


class Tagger:
    """A server on HOST:PORT that answers every connection with its tag and
    keeps it open until the client closes."""

    def __init__(self, host, port, tag):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.tag = tag
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.sendall(self.tag.encode() + b"\n")
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def dns(tmp_path):
    fd = FakeDNS(tmp_path)
    yield fd
    fd.close()


@pytest.fixture
def taggers():
    port = free_port()
    a, b = Tagger("127.0.0.1", port, "a"), Tagger("127.0.0.2", port, "b")
    yield port, a, b
    a.close()
    b.close()


def tag_of(addr):
    with connect(addr, timeout=T(10)) as c:
        data = b""
        while not data.endswith(b"\n"):
            d = c.recv(16)
            if not d:
                break
            data += d
        return data.decode().strip()


def start(ferry, dns, port, balance="round_robin", interval="200ms"):
    cfg = {"resolve_interval": interval,
           "services": [service([f"app.test:{port}"], balance=balance)]}
    return ferry(config=cfg, env={"FERRY_DNS_SERVER": dns.server})


def test_every_address_is_a_backend(ferry, dns, taggers):
    port, a, b = taggers
    dns.set({"app.test": {"A": ["127.0.0.1", "127.0.0.2"]}})
    f = start(ferry, dns, port)
    tags = [tag_of(f.addr()) for _ in range(6)]
    assert sorted(set(tags)) == ["a", "b"], tags
    lines = f.wait_access(6)
    assert {x["backend"] for x in lines} == {f"app.test:{port}@127.0.0.1",
                                            f"app.test:{port}@127.0.0.2"}


def test_reresolution_moves_new_connections(ferry, dns, taggers):
    port, a, b = taggers
    dns.set({"app.test": {"A": ["127.0.0.1"]}})
    f = start(ferry, dns, port)
    assert tag_of(f.addr()) == "a"
    live = connect(f.addr(), timeout=T(10))
    assert live.recv(2) == b"a\n"
    dns.set({"app.test": {"A": ["127.0.0.2"]}})
    assert wait_until(lambda: tag_of(f.addr()) == "b", T(10), "the new address in use")
    assert all(tag_of(f.addr()) == "b" for _ in range(4))
    # The connection to the old address lives on.
    live.sendall(b"x")
    live.shutdown(socket.SHUT_WR)
    live.settimeout(T(10))
    assert live.recv(1) == b""
    live.close()
    f.wait_event("resolve_changed")


def test_name_that_stops_resolving_keeps_addresses(ferry, dns, taggers):
    port, a, b = taggers
    dns.set({"app.test": {"A": ["127.0.0.1"]}})
    f = start(ferry, dns, port)
    dns.set({})
    (line,) = f.wait_event("resolve_failed", timeout=T(10))
    assert line["host"] == "app.test"
    assert all(tag_of(f.addr()) == "a" for _ in range(3))


def test_unknown_name_at_start_is_an_error(tmp_path, dns):
    dns.set({})
    cfg = tmp_path / "f.yaml"
    cfg.write_text(f"services:\n  - name: web\n    listen: [\"127.0.0.1:{free_port()}\"]\n"
                   f"    backends: [{{address: \"nope.test:80\"}}]\n")
    import os
    import subprocess
    from helpers import FERRY_BIN
    r = subprocess.run([FERRY_BIN, "-c", str(cfg)], capture_output=True, text=True,
                       timeout=T(30), env=dict(os.environ, FERRY_DNS_SERVER=dns.server))
    assert r.returncode == 1, r.stderr
    assert "nope.test" in r.stderr, r.stderr


def test_drain_by_name_drains_every_address(ferry, dns, taggers):
    """The admin API takes the backend address as written: a host name drains
    every address it resolved to."""
    import json
    import urllib.request
    port, a, b = taggers
    dns.set({"app.test": {"A": ["127.0.0.1", "127.0.0.2"]}})
    admin = f"127.0.0.1:{free_port()}"
    f = ferry(config={"admin": {"listen": admin},
                      "services": [service([f"app.test:{port}", a_addr(port)],
                                           balance="round_robin")]},
              env={"FERRY_DNS_SERVER": dns.server})
    req = urllib.request.Request(
        f"http://{admin}/services/web/backends/app.test%3A{port}/drain", method="POST")
    with urllib.request.urlopen(req, timeout=T(5)) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{admin}/status", timeout=T(5)) as r:
        backends = json.loads(r.read())["services"][0]["backends"]
    states = {x["address"]: x["state"] for x in backends}
    assert states[f"app.test:{port}@127.0.0.1"] == "drain"
    assert states[f"app.test:{port}@127.0.0.2"] == "drain"
    assert states[a_addr(port)] == "up"


def a_addr(port):
    return f"127.0.0.1:{port}"


def test_listen_host_name_listens_on_every_address(ferry, dns, taggers):
    """A host name in a listen address: ferry listens on every address it
    resolves to, and follows it when it changes (the listener of an address
    that went away closes; connections on it live on).  admin.listen may be
    a name too."""
    port, a, b = taggers
    lport, aport = free_port(), free_port()
    dns.set({"front.test": {"A": ["127.0.0.1", "127.0.0.2"]},
             "adm.test": {"A": ["127.0.0.1"]}})
    f = ferry(config={"resolve_interval": "200ms", "admin": {"listen": f"adm.test:{aport}"},
                      "services": [service([a_addr(port)], listen=[f"front.test:{lport}"])]},
              env={"FERRY_DNS_SERVER": dns.server})
    assert tag_of(("127.0.0.1", lport)) == "a"
    assert tag_of(("127.0.0.2", lport)) == "a"
    with connect(("127.0.0.1", aport), timeout=T(5)) as c:
        c.sendall(b"GET /status HTTP/1.0\r\n\r\n")
        assert c.recv(12).startswith(b"HTTP/1.")
    live = connect(("127.0.0.1", lport), timeout=T(10))
    assert live.recv(2) == b"a\n"

    dns.set({"front.test": {"A": ["127.0.0.2"]}, "adm.test": {"A": ["127.0.0.1"]}})

    def refused():
        try:
            socket.create_connection(("127.0.0.1", lport), timeout=T(2)).close()
            return False
        except ConnectionRefusedError:
            return True
    wait_until(refused, T(10), "the listener of the address that went away closed")
    assert tag_of(("127.0.0.2", lport)) == "a"
    live.sendall(b"x")
    live.shutdown(socket.SHUT_WR)
    live.settimeout(T(10))
    assert live.recv(1) == b""
    live.close()


def test_fanout_dials_every_address_of_a_name(ferry, dns):
    """outputs.connect with a host name: ferry dials every address it
    resolves to, and each gets the input's bytes."""
    from test_fanout_basic import connected, fanout_config, hostport, port_addr
    from helpers import payload, sha
    sport = free_port()
    sinks = []
    for host in ("127.0.0.1", "127.0.0.2"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, sport))
        s.listen(4)
        sinks.append(s)
    dns.set({"sink.test": {"A": ["127.0.0.1", "127.0.0.2"]}})
    pi = port_addr()
    f = ferry(fanout_config("raw", inputs={"listen": [pi]},
                            outputs={"connect": [f"sink.test:{sport}"]}),
              env={"FERRY_DNS_SERVER": dns.server})
    conns = []
    for s in sinks:
        s.settimeout(T(10))
        conns.append(s.accept()[0])
    connected(f, "output", 2, via="connect")
    data = payload(500_000, seed=9)
    with connect(hostport(pi)) as inp:
        inp.sendall(data)
    for c in conns:
        c.settimeout(T(10))
        got = b""
        while len(got) < len(data):
            d = c.recv(65536)
            assert d, "closed early"
            got += d
        assert sha(got) == sha(data)
        c.close()
    for s in sinks:
        s.close()


@pytest.mark.parametrize("where", ["listen", "admin", "output"])
def test_unknown_name_in_other_addresses_at_start_is_an_error(tmp_path, dns, where):
    """A listen, admin or fan-out address whose name does not resolve at start:
    exit 1 with a message naming the host, nothing bound."""
    import os
    import subprocess
    from helpers import FERRY_BIN
    dns.set({})
    port = free_port()
    if where == "listen":
        text = (f"services:\n  - name: web\n    listen: [\"nope.test:{port}\"]\n"
                f"    backends: [{{address: \"127.0.0.1:9\"}}]\n")
    elif where == "admin":
        text = (f"admin: {{listen: \"nope.test:{port}\"}}\nservices:\n  - name: web\n"
                f"    listen: [\"127.0.0.1:{free_port()}\"]\n"
                f"    backends: [{{address: \"127.0.0.1:9\"}}]\n")
    else:
        text = (f"services:\n  - name: feed\n    mode: fanout\n"
                f"    inputs: {{listen: [\"127.0.0.1:{free_port()}\"]}}\n"
                f"    outputs: {{connect: [\"nope.test:{port}\"]}}\n")
    cfg = tmp_path / "f.yaml"
    cfg.write_text(text)
    r = subprocess.run([FERRY_BIN, "-c", str(cfg)], capture_output=True, text=True,
                       timeout=T(30), env=dict(os.environ, FERRY_DNS_SERVER=dns.server))
    assert r.returncode == 1, r.stderr
    assert "nope.test" in r.stderr, r.stderr
    assert "ready" not in r.stderr
