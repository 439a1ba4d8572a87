"""SIGHUP reload in the same process (SPEC section 1): listeners added and removed,
services and backends changed, not one established connection dropped; an invalid
new file is logged and the old configuration kept."""

import signal
import socket
import threading
import time

import pytest

from helpers import (T, connect, fmt_addr, free_port, payload, recv_exact, service, sha,
                     to_yaml, wait_until)


def write(f, cfg):
    f.config_path.write_text(to_yaml(cfg) + "\n")


def reload(f, count):
    """Sends SIGHUP and waits for the `count`th reload line."""
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload", count=count)


def tag_of(addr):
    with connect(addr, timeout=T(10)) as c:
        line = b""
        while not line.endswith(b"\n"):
            d = c.recv(64)
            if not d:
                break
            line += d
        return line.decode().strip()


def refused(addr):
    try:
        with socket.create_connection(addr, timeout=T(2)):
            return False
    except ConnectionRefusedError:
        return True


def test_reload_switches_backends_and_listeners(ferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    p1, p2 = free_port(), free_port()
    cfg = {"services": [service([a.addr], listen=[fmt_addr("127.0.0.1", p1)])]}
    f = ferry(config=cfg)
    assert tag_of(("127.0.0.1", p1)) == "alpha"

    # A connection that stays open through the reloads, on the old backend.
    live = connect(("127.0.0.1", p1), timeout=T(10))
    assert recv_exact(live, 6) == b"alpha\n"

    cfg2 = {"services": [service([b.addr], listen=[fmt_addr("127.0.0.1", p2)])]}
    write(f, cfg2)
    reload(f, 1)
    assert tag_of(("127.0.0.1", p2)) == "beta"
    assert wait_until(lambda: refused(("127.0.0.1", p1)), T(5), "old listener closed")

    # The live connection still relays, both ways, after its backend was removed.
    live.sendall(b"still here")
    live.shutdown(socket.SHUT_WR)
    live.settimeout(T(10))
    assert live.recv(1) == b""
    live.close()
    lines = f.wait_access(3)
    first = [x for x in lines if x["backend"] == a.addr and x["bytes_in"] == 10]
    assert first, lines


def test_same_address_keeps_its_socket(ferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    f = ferry(config={"services": [service([a.addr])]})
    addr = f.addr()
    cfg2 = {"services": [service([b.addr], listen=[fmt_addr(*addr)], balance="round_robin")]}
    write(f, cfg2)
    reload(f, 1)
    assert tag_of(addr) == "beta"


def test_invalid_file_keeps_old_config(ferry, servers):
    a = servers.tag("alpha")
    f = ferry(config={"services": [service([a.addr])]})
    f.config_path.write_text("services:\n  - name: web\n    balance: leastconn\n")
    f.send_signal(signal.SIGHUP)
    (line,) = f.wait_event("reload_failed")
    assert "balance" in line["error"] and line["level"] == "error", line
    assert tag_of(f.addr()) == "alpha"
    assert f.running()


def test_busy_port_keeps_old_config(ferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    f = ferry(config={"services": [service([a.addr])]})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = fmt_addr("127.0.0.1", busy.getsockname()[1])
        write(f, {"services": [service([b.addr], listen=[fmt_addr(*f.addr()), taken])]})
        f.send_signal(signal.SIGHUP)
        (line,) = f.wait_event("reload_failed")
        assert taken in line["error"], line
    assert tag_of(f.addr()) == "alpha"


def test_added_service(ferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    f = ferry(config={"services": [service([a.addr])]})
    p2 = free_port()
    write(f, {"services": [service([a.addr], listen=[fmt_addr(*f.addr())]),
                           service([b.addr], name="other",
                                   listen=[fmt_addr("127.0.0.1", p2)])]})
    reload(f, 1)
    assert tag_of(f.addr()) == "alpha"
    assert tag_of(("127.0.0.1", p2)) == "beta"


def test_reload_loop_under_load_breaks_nothing(ferry, servers):
    """Hundreds of connections stream data through while the file flips between
    two configurations; every byte of every connection must arrive."""
    e1, e2 = servers.echo(), servers.echo()
    port = free_port()
    listen = [fmt_addr("127.0.0.1", port)]
    cfgs = [{"services": [service([e1.addr], listen=listen)]},
            {"services": [service([e2.addr, e1.addr], listen=listen, balance="round_robin")]}]
    f = ferry(config=cfgs[0])
    n_conns, chunk, rounds = 200, 4096, 25
    data = payload(chunk * rounds, seed=42)
    errors = []
    done = []

    def client(i):
        try:
            with connect(("127.0.0.1", port), timeout=T(60)) as c:
                got = bytearray()
                for r in range(rounds):
                    c.sendall(data[r * chunk:(r + 1) * chunk])
                    got += recv_exact(c, chunk)
                    time.sleep(0.01)
                c.shutdown(socket.SHUT_WR)
                assert c.recv(1) == b""
                if sha(bytes(got)) != sha(data):
                    errors.append(f"conn {i}: bytes differ")
                done.append(i)
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(f"conn {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_conns)]
    for t in threads:
        t.start()
    reloads = 0
    deadline = time.monotonic() + T(60)
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        reloads += 1
        write(f, cfgs[reloads % 2])
        reload(f, reloads)
        time.sleep(0.05)
    for t in threads:
        t.join(T(60))
    print(f"reload under load: {reloads} reloads, {n_conns} connections, "
          f"{len(errors)} broken")
    assert not errors, errors[:5]
    assert len(done) == n_conns
    assert reloads >= 5, reloads
    assert f.running()
    assert not f.logs("reload_failed")
