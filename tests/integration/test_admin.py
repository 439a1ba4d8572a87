"""Admin HTTP endpoint (SPEC section 5): /metrics counters after real traffic
(connections, exact bytes both ways, open connections, rejections by limit and by
ACL, connect failures to a dead backend, mirror bytes), the /status document, and
drain/enable of a backend at run time: new connections avoid a drained backend
while a connection already on it keeps working.  Also the error answers (400, 404,
405) and the `--admin` flag of quick mode.

Requests use urllib from the standard library, with proxies disabled (an
http_proxy in the environment must not capture loopback requests)."""

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest

from helpers import (T, ask_tag, connect, dead_addr, free_port, payload, recv_exact, service,
                     wait_closed, wait_until)

FAMILIES = {
    "ferry_connections_total": "counter",
    "ferry_connections_active": "gauge",
    "ferry_connections_rejected_total": "counter",
    "ferry_bytes_total": "counter",
    "ferry_backend_up": "gauge",
    "ferry_backend_connections_active": "gauge",
    "ferry_backend_connect_failures_total": "counter",
    "ferry_mirror_bytes_total": "counter",
    "ferry_mirror_disconnects_total": "counter",
    "ferry_fanout_outputs": "gauge",
    "ferry_fanout_dropped_records_total": "counter",
    "ferry_fanout_disconnects_total": "counter",
}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Admin:
    """The admin endpoint of one ferry at `base` (http://host:port)."""

    def __init__(self, addr):
        self.base = f"http://{addr}"

    def request(self, method, path, data=None):
        """(status, headers, body text) for any status, errors included."""
        req = urllib.request.Request(self.base + path, method=method, data=data)
        try:
            with _OPENER.open(req, timeout=T(5)) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.headers, e.read().decode()

    def get_json(self, path):
        status, headers, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        assert headers["Content-Type"] == "application/json"
        return json.loads(body)

    def status(self):
        return self.get_json("/status")

    def metrics(self):
        status, headers, body = self.request("GET", "/metrics")
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return body

    def samples(self):
        """{(name, frozenset of (label, value)): value} of one scrape."""
        return parse_metrics(self.metrics())

    def value(self, name, **labels):
        return self.samples().get((name, frozenset(labels.items())))

    def wait_value(self, want, name, **labels):
        """Polls until the sample equals `want`; returns it."""
        wait_until(lambda: self.value(name, **labels) == want, T(5),
                   f"{name}{labels} == {want} (last: {self.value(name, **labels)})")

    def backend(self, service, address, action):
        path = (f"/services/{urllib.parse.quote(service, safe='')}/backends/"
                f"{urllib.parse.quote(address, safe='')}/{action}")
        return self.request("POST", path)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_metrics(text):
    """Parses the text format strictly enough to catch a malformed line: every
    family has exactly one HELP and one TYPE line, before its samples."""
    out = {}
    helps, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps[name] = line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = _SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, labels, value = m.groups()
        assert name in types and name in helps, f"sample before HELP/TYPE: {line!r}"
        pairs = _LABEL.findall(labels or "")
        assert "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") == (labels or ""), line
        key = (name, frozenset((k, v.replace('\\"', '"').replace("\\n", "\n")
                                .replace("\\\\", "\\")) for k, v in pairs))
        assert key not in out, f"duplicate series {line!r}"
        out[key] = int(value)
    for name, kind in FAMILIES.items():
        assert name in helps, f"no HELP for {name}"
        assert types.get(name) == kind, f"TYPE of {name}: {types.get(name)}"
    return out


def start(ferry, services, **top):
    """Starts ferry with an admin endpoint on a free port; waits until it answers."""
    addr = f"127.0.0.1:{free_port()}"
    f = ferry(config={"admin": {"listen": addr}, **top, "services": services})
    admin = Admin(addr)
    wait_until(lambda: answers(admin), T(5), "the admin endpoint to answer")
    return f, admin


def answers(admin):
    """True once the endpoint answers (ferry may log `ready` just before)."""
    try:
        return admin.request("GET", "/status")[0] == 200
    except OSError:
        return False


def echo_bytes(addr, n, seed):
    """Sends n bytes through an echo backend and reads them back."""
    data = payload(n, seed)
    with connect(addr) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            d = c.recv(65536)
            if not d:
                break
            got += d
    assert bytes(got) == data
    return n


def test_metrics_after_traffic(ferry, servers):
    backend = servers.echo()
    mirror = servers.sink()
    svc = service([backend.addr], name="web")
    svc["mirrors"] = [{"address": mirror.addr}]
    f, admin = start(ferry, [svc])
    W, B, M = {"service": "web"}, {"service": "web", "backend": backend.addr}, \
        {"service": "web", "mirror": mirror.addr}

    # Nothing yet: every series is there, at zero.
    s = admin.samples()
    for reason in ("limit", "acl", "no_backend"):
        assert s[("ferry_connections_rejected_total",
                  frozenset({**W, "reason": reason}.items()))] == 0
    assert admin.value("ferry_backend_up", **B) == 1
    assert admin.value("ferry_mirror_bytes_total", **M) == 0

    sizes = [1000, 70000, 1]
    total = sum(echo_bytes(f.addr(), n, seed=i) for i, n in enumerate(sizes))
    f.wait_access(len(sizes))
    admin.wait_value(len(sizes), "ferry_connections_total", **W)
    admin.wait_value(total, "ferry_bytes_total", **W, direction="in")
    admin.wait_value(total, "ferry_bytes_total", **W, direction="out")
    admin.wait_value(0, "ferry_connections_active", **W)
    admin.wait_value(0, "ferry_backend_connections_active", **B)
    admin.wait_value(total, "ferry_mirror_bytes_total", **M)
    assert admin.value("ferry_mirror_disconnects_total", **M) == 0
    assert admin.value("ferry_backend_connect_failures_total", **B) == 0
    for reason in ("limit", "acl", "no_backend"):
        assert admin.value("ferry_connections_rejected_total", **W, reason=reason) == 0
    # A proxy service has no fan-out series.
    assert not any(k[0].startswith("ferry_fanout_") for k in admin.samples())

    # An open connection is counted while it lasts.
    with connect(f.addr()) as c:
        c.sendall(b"x")
        assert recv_exact(c, 1) == b"x"
        admin.wait_value(1, "ferry_connections_active", **W)
        admin.wait_value(1, "ferry_backend_connections_active", **B)
        st = admin.status()["services"][0]
        assert st["backends"][0]["active"] == 1
        assert st["mirrors"][0]["active"] == 1
    admin.wait_value(0, "ferry_connections_active", **W)
    admin.wait_value(0, "ferry_backend_connections_active", **B)
    admin.wait_value(len(sizes) + 1, "ferry_connections_total", **W)
    admin.wait_value(total + 1, "ferry_bytes_total", **W, direction="in")


def test_rejections_and_connect_failures(ferry, servers):
    backend = servers.echo()
    dead = dead_addr()
    f, admin = start(ferry, [
        service([backend.addr], name="lim", max_connections=1),
        service([backend.addr], name="acl", deny=["127.0.0.3/32"]),
        service([dead], name="dead", retries=0),
    ])
    # limit: one held, the next closed at once
    with connect(f.addr(0)) as held:
        held.sendall(b"x")
        assert recv_exact(held, 1) == b"x"
        with connect(f.addr(0)) as c:
            wait_closed(c, T(3))
        admin.wait_value(1, "ferry_connections_rejected_total", service="lim", reason="limit")
        assert admin.value("ferry_connections_total", service="lim") == 2
        assert admin.value("ferry_connections_active", service="lim") == 1
    # acl: a denied source is closed at accept
    with connect(f.addr(1), source="127.0.0.3") as c:
        wait_closed(c, T(3))
    admin.wait_value(1, "ferry_connections_rejected_total", service="acl", reason="acl")
    assert admin.value("ferry_connections_total", service="acl") == 1
    assert admin.value("ferry_connections_rejected_total", service="acl", reason="limit") == 0
    # a dead backend: one failed connect per client (retries: 0); still up, as
    # there is no health check
    for _ in range(2):
        with connect(f.addr(2)) as c:
            wait_closed(c, T(5))
    admin.wait_value(2, "ferry_backend_connect_failures_total", service="dead", backend=dead)
    assert admin.value("ferry_backend_up", service="dead", backend=dead) == 1
    assert admin.value("ferry_connections_total", service="dead") == 2
    admin.wait_value(0, "ferry_connections_active", service="dead")


def test_status_document(ferry, servers):
    b1, b2, mirror = servers.echo(), servers.echo(), servers.sink()
    web = service([b1.addr, {"address": b2.addr, "weight": 5}], name="web",
                  listen=["127.0.0.1:0", "127.0.0.1:0"])
    web["mirrors"] = [{"address": mirror.addr}]
    f, admin = start(ferry, [web, service([b2.addr], name="api")])
    doc = admin.status()
    assert doc == {"services": [
        {"name": "web", "mode": "proxy", "listen": [f.addr_text(0, 0), f.addr_text(0, 1)],
         "backends": [
             {"address": b1.addr, "state": "up", "active": 0, "weight": 1},
             {"address": b2.addr, "state": "up", "active": 0, "weight": 5}],
         "mirrors": [{"address": mirror.addr, "active": 0, "bytes": 0, "disconnects": 0}],
         "inputs": 0, "outputs": 0},
        {"name": "api", "mode": "proxy", "listen": [f.addr_text(1, 0)],
         "backends": [{"address": b2.addr, "state": "up", "active": 0, "weight": 1}],
         "mirrors": [], "inputs": 0, "outputs": 0},
    ]}
    status, headers, _ = admin.request("HEAD", "/status")
    assert status == 200


def tag_echo_handler(conn, srv):
    """Sends the server's name and a newline, then echoes."""
    conn.sendall(srv.name.encode() + b"\n")
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def test_drain_and_enable(ferry, servers):
    a = servers.custom(tag_echo_handler, name="a")
    b = servers.custom(tag_echo_handler, name="b")
    f, admin = start(ferry, [service([a.addr, b.addr], name="web", balance="round_robin")])
    by_name = {"a": a, "b": b}

    # An open connection on the backend that gets drained.
    name, held = ask_tag(f.addr(), hold=True)
    drained, other = by_name[name], by_name["b" if name == "a" else "a"]
    with held:
        status, headers, body = admin.backend("web", drained.addr, "drain")
        assert status == 200, body
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"address": drained.addr, "state": "drain", "active": 1,
                                    "weight": 1}
        backends = admin.status()["services"][0]["backends"]
        assert {x["address"]: x["state"] for x in backends} == {drained.addr: "drain",
                                                                other.addr: "up"}
        # still healthy: up stays 1 while drained
        assert admin.value("ferry_backend_up", service="web", backend=drained.addr) == 1

        # New connections all avoid it ...
        for _ in range(6):
            assert ask_tag(f.addr()) == other.name
        # ... while the open one keeps working.
        held.sendall(b"still here")
        assert recv_exact(held, 10) == b"still here"

        # Draining again is harmless.
        assert admin.backend("web", drained.addr, "drain")[0] == 200

        status, _, body = admin.backend("web", drained.addr, "enable")
        assert status == 200, body
        assert json.loads(body) == {"address": drained.addr, "state": "up", "active": 1,
                                    "weight": 1}
        seen = {ask_tag(f.addr()) for _ in range(6)}
        assert seen == {"a", "b"}, seen
        held.sendall(b"and now")
        assert recv_exact(held, 7) == b"and now"


def test_drain_ipv6_backend(ferry, servers, need_ipv6):
    v4 = servers.custom(tag_echo_handler, name="v4")
    v6 = servers.custom(tag_echo_handler, name="v6", host="::1")
    assert v6.addr.startswith("[::1]:")
    f, admin = start(ferry, [service([v4.addr, v6.addr], name="web", balance="round_robin")])
    # quote() gives %5B%3A%3A1%5D%3A<port>
    status, _, body = admin.backend("web", v6.addr, "drain")
    assert status == 200, body
    assert json.loads(body)["address"] == v6.addr
    for _ in range(4):
        assert ask_tag(f.addr()) == "v4"
    status, _, body = admin.backend("web", v6.addr, "enable")
    assert status == 200 and json.loads(body)["state"] == "up", body
    assert {ask_tag(f.addr()) for _ in range(4)} == {"v4", "v6"}


def test_errors(ferry, servers):
    backend = servers.echo()
    f, admin = start(ferry, [service([backend.addr], name="web")])

    def error(method, path, want):
        status, headers, body = admin.request(method, path)
        assert status == want, (method, path, status, body)
        assert headers["Content-Type"] == "application/json"
        assert "error" in json.loads(body)
        return headers, json.loads(body)

    _, doc = error("POST", "/services/nope/backends/127.0.0.1%3A1/drain", 404)
    assert "nope" in doc["error"]
    _, doc = error("POST", f"/services/web/backends/{dead_addr()}/enable", 404)
    assert "web" in doc["error"]
    headers, _ = error("GET", "/services/web/backends/"
                       f"{urllib.parse.quote(backend.addr, safe='')}/drain", 405)
    assert headers["Allow"] == "POST"
    headers, _ = error("POST", "/metrics", 405)
    assert headers["Allow"] == "GET, HEAD"
    error("GET", "/", 404)
    error("GET", "/nope", 404)
    error("GET", "/metrics/extra", 404)
    error("POST", "/services/web/backends/127.0.0.1%3/drain", 400)
    error("POST", "/services/web/backends/%zz/drain", 400)
    # nothing above changed the backend
    assert admin.status()["services"][0]["backends"][0]["state"] == "up"
    # ferry still relays
    assert echo_bytes(f.addr(), 10, seed=1) == 10


def test_admin_flag_in_quick_mode(ferry, servers):
    backend = servers.echo()
    addr = f"127.0.0.1:{free_port()}"
    f = ferry(args=["--listen", "127.0.0.1:0", "--backend", backend.addr, "--admin", addr])
    admin = Admin(addr)
    wait_until(lambda: answers(admin), T(5), "the admin endpoint to answer")
    svc = admin.status()["services"][0]
    assert svc["listen"] == [f.addr_text()]
    assert svc["backends"] == [{"address": backend.addr, "state": "up", "active": 0,
                                "weight": 1}]
    echo_bytes(f.addr(), 100, seed=2)
    admin.wait_value(1, "ferry_connections_total", service=svc["name"])
    admin.wait_value(100, "ferry_bytes_total", service=svc["name"], direction="out")


def test_admin_port_busy_fails_start(ferry, servers):
    """Start-up fails (exit 1) with a message naming the address and the reason."""
    backend = servers.echo()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        f = ferry(config={"admin": {"listen": f"127.0.0.1:{port}"},
                          "services": [service([backend.addr])]}, start=False)
        with pytest.raises(Exception) as exc:
            f.start()
        msg = str(exc.value)
        assert f"127.0.0.1:{port}" in msg and "in use" in msg.lower(), msg
        assert f.rc == 1


def metric(series, name, **labels):
    return series.get((name, frozenset(labels.items())))


def test_fanout_metrics_and_status(ferry):
    """A running fan-out service's gauges and counters reach /metrics and /status."""
    p_in, p_out = free_port(), free_port()
    feed = {"name": "feed", "mode": "fanout", "framing": "line",
            "inputs": {"listen": [f"127.0.0.1:{p_in}"]},
            "outputs": {"listen": [f"127.0.0.1:{p_out}"], "on_lag": "drop"}}
    f, admin = start(ferry, [feed])
    outs = [connect(("127.0.0.1", p_out)) for _ in range(2)]
    inp = connect(("127.0.0.1", p_in))

    def counts():
        svc = admin.status()["services"][0]
        return svc["inputs"], svc["outputs"]

    assert wait_until(lambda: counts() == (1, 2), T(5), "one input and two outputs")
    inp.sendall(b"hello\n")
    for o in outs:
        assert recv_exact(o, 6) == b"hello\n"
    series = parse_metrics(admin.metrics())
    assert metric(series, "ferry_fanout_outputs", service="feed") == 2
    assert metric(series, "ferry_fanout_dropped_records_total", service="feed") == 0
    assert metric(series, "ferry_fanout_disconnects_total", service="feed") == 0
    for s in outs + [inp]:
        s.close()
