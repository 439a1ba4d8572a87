"""SIGHUP reload of fan-out services (SPEC sections 1 and 4): a service added by
a reload starts, a removed one closes its listeners and ends its connections as
at shutdown, an unchanged one keeps every connection untouched (peer lists
change in place), and a changed one is replaced by a new instance that takes
over the running listening sockets, so that no connection attempt is refused,
while the old instance's connections carry on until their inputs end."""

import signal
import socket
import threading

from helpers import T, connect, free_port, payload, sha, to_yaml, wait_until
from test_admin import Admin
from test_fanout_basic import Sink, connected, fanout_config, hostport, port_addr


def write(f, cfg):
    f.config_path.write_text(to_yaml(cfg) + "\n")


def reload(f, count):
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload", count=count)


def feed(name, pi, po, **svc):
    """One raw fan-out service with an input port and an output port."""
    c = fanout_config("raw", inputs={"listen": [pi]},
                      outputs={"listen": [po], "on_lag": svc.pop("on_lag", "block"),
                               "max_lag": "1MiB"}, **svc)
    c["services"][0]["name"] = name
    return c


def services(*cfgs):
    out = dict(cfgs[0])
    out["services"] = [s for c in cfgs for s in c["services"]]
    return out


def refused(text):
    try:
        with socket.create_connection(hostport(text), timeout=T(2)):
            return False
    except ConnectionRefusedError:
        return True


def send_and_check(pi, sinks, size, seed):
    """Sends `size` bytes into input port pi; every sink gets them."""
    data = payload(size, seed=seed)
    before = [len(s.data) for s in sinks]
    with connect(hostport(pi)) as inp:
        inp.sendall(data)
    wait_until(lambda: all(len(s.data) - b >= size for s, b in zip(sinks, before)), T(20),
               "every output to receive the input's bytes")
    for s, b in zip(sinks, before):
        assert sha(bytes(s.data[b:b + size])) == sha(data), f"output :{s.port} got other bytes"


def test_reload_adds_and_removes_a_fanout_service(ferry):
    a_in, a_out, b_in, b_out = port_addr(), port_addr(), port_addr(), port_addr()
    first = feed("a", a_in, a_out)
    f = ferry(first)
    assert refused(b_in) and refused(b_out)

    write(f, services(first, feed("b", b_in, b_out)))
    reload(f, 1)
    f.wait_event("fanout_reload", where=lambda d: d["service"] == "b" and d["action"] == "added")
    out = Sink(connect(hostport(b_out)))
    connected(f, "output", 1)
    send_and_check(b_in, [out], 300_000, seed=1)
    assert not f.logs("reload_warning"), f.logs("reload_warning")

    write(f, first)
    reload(f, 2)
    f.wait_event("fanout_reload", where=lambda d: d["service"] == "b" and d["action"] == "removed")
    wait_until(lambda: refused(b_in) and refused(b_out), T(5), "b's listeners closed")
    # Its output had everything it was sent, then a FIN (no input left).
    got = out.wait(T(20))
    assert out.how == "eof" and len(got) == 300_000
    # a was never touched
    assert not [d for d in f.logs("fanout_reload") if d["service"] == "a"]
    a = Sink(connect(hostport(a_out)))
    connected(f, "output", 2)
    send_and_check(a_in, [a], 100_000, seed=2)


def test_unchanged_service_keeps_its_connections(ferry):
    pi, po = port_addr(), port_addr()
    cfg = feed("feed", pi, po)
    f = ferry(cfg)
    outs = [Sink(connect(hostport(po))) for _ in range(2)]
    connected(f, "output", 2)
    inp = connect(hostport(pi))
    data = payload(4 * 1024 * 1024, seed=3)
    inp.sendall(data[:1_000_000])
    # Same file but a peer list changed: the service stays, in place.
    cfg["services"][0]["deny"] = ["10.0.0.0/8"]
    write(f, cfg)
    for i in range(1, 4):
        reload(f, i)
        inp.sendall(data[i * 1_000_000:(i + 1) * 1_000_000])
    inp.sendall(data[4_000_000:])
    inp.close()
    wait_until(lambda: all(len(s.data) >= len(data) for s in outs), T(20), "the whole stream")
    for s in outs:
        assert sha(bytes(s.data)) == sha(data)
    assert not f.logs("fanout_reload")
    assert not f.logs("reload_warning")
    assert not [d for d in f.logs("fanout_output") if d.get("state") == "disconnected"]


def test_changed_service_hands_over_its_sockets(ferry):
    """on_lag and an added output port change: a new instance takes over the
    listening sockets (connection attempts during the reloads are all
    accepted), the old instance's input and output go on until the input ends,
    and the output then gets everything and a FIN.  The metrics of the name
    count both instances."""
    pi, po, po2 = port_addr(), port_addr(), port_addr()
    admin = f"127.0.0.1:{free_port()}"
    cfg = feed("feed", pi, po)
    cfg["admin"] = {"listen": admin}
    f = ferry(cfg)
    adm = Admin(admin)
    old_out = Sink(connect(hostport(po)))
    connected(f, "output", 1)
    old_in = connect(hostport(pi))
    data = payload(3 * 1024 * 1024, seed=4)
    old_in.sendall(data[:1_000_000])

    # Connect to the ports all through the reloads: never refused.
    stop, refusals, tries = threading.Event(), [], [0]

    def knock():
        while not stop.is_set():
            for p in (pi, po):
                try:
                    socket.create_connection(hostport(p), timeout=T(2)).close()
                    tries[0] += 1
                except OSError as e:
                    refusals.append(f"{p}: {e}")
    t = threading.Thread(target=knock, daemon=True)
    t.start()

    cfg2 = feed("feed", pi, po, on_lag="disconnect")
    cfg2["services"][0]["outputs"]["listen"].append(po2)
    cfg2["admin"] = cfg["admin"]
    write(f, cfg2)
    reload(f, 1)
    f.wait_event("fanout_reload", where=lambda d: d["action"] == "replaced")
    write(f, cfg)
    reload(f, 2)
    f.wait_event("fanout_reload", count=2, where=lambda d: d["action"] == "replaced")
    write(f, cfg2)
    reload(f, 3)
    f.wait_event("fanout_reload", count=3, where=lambda d: d["action"] == "replaced")
    stop.set()
    t.join(T(10))
    assert not refusals, refusals[:5]
    assert tries[0] > 0

    # New peers join the new instance, on the handed-over and the new port.
    new_outs = [Sink(connect(hostport(po))), Sink(connect(hostport(po2)))]
    wait_until(lambda: adm.value("ferry_fanout_outputs", service="feed") == 3, T(10),
               "the old output and the two new ones counted under the name")
    send_and_check(pi, new_outs, 200_000, seed=5)

    # The old connections were never cut: the rest of the stream arrives.
    old_in.sendall(data[1_000_000:])
    wait_until(lambda: len(old_out.data) >= len(data), T(20), "the old output's stream")
    old_in.close()
    got = old_out.wait(T(20))
    assert old_out.how == "eof"
    assert sha(got) == sha(data), "the old output lost or changed bytes"
    assert not any(len(s.data) > 200_000 for s in new_outs), "streams mixed across instances"
    wait_until(lambda: adm.value("ferry_fanout_outputs", service="feed") == 2, T(10),
               "the retired instance gone")
    send_and_check(pi, new_outs, 100_000, seed=6)


def test_failed_replacement_keeps_the_running_service(ferry):
    """A changed service whose new port is taken: logged, naming the service,
    and the running one keeps serving."""
    pi, po = port_addr(), port_addr()
    cfg = feed("feed", pi, po)
    f = ferry(cfg)
    out = Sink(connect(hostport(po)))
    connected(f, "output", 1)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cfg2 = feed("feed", pi, po)
    cfg2["services"][0]["outputs"]["listen"].append(f"127.0.0.1:{busy.getsockname()[1]}")
    write(f, cfg2)
    reload(f, 1)
    line = f.wait_event("reload_failed", where=lambda d: d.get("service") == "feed")[0]
    assert str(busy.getsockname()[1]) in line["error"]
    assert not f.logs("fanout_reload")
    send_and_check(pi, [out], 200_000, seed=7)
    busy.close()


def test_invalid_file_keeps_the_fanout_service(ferry):
    """A reload with a broken file: reload_failed, and the fan-out service and
    its connections go on untouched."""
    pi, po = port_addr(), port_addr()
    f = ferry(feed("feed", pi, po))
    out = Sink(connect(hostport(po)))
    connected(f, "output", 1)
    f.config_path.write_text("services:\n  - name: feed\n    mode: fanout\n    framing: lines\n")
    f.send_signal(signal.SIGHUP)
    line = f.wait_event("reload_failed")[0]
    assert "framing" in line["error"]
    assert not f.logs("fanout_reload")
    send_and_check(pi, [out], 200_000, seed=8)
