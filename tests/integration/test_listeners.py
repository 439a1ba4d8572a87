"""Several listeners per service, IPv4 and IPv6, and several services side by side."""

import pytest

from helpers import HAS_IPV6, ask_tag, echo_roundtrip, service


def test_several_ipv4_listeners(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr],
                                           listen=["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"])]})
    for i in range(3):
        assert echo_roundtrip(f.addr(0, i), f"via {i}".encode()) == f"via {i}".encode()
    lines = f.wait_access(3)
    assert all(l["service"] == "web" for l in lines)


def test_ipv4_and_ipv6_listeners(ferry, servers, need_ipv6):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], listen=["127.0.0.1:0", "[::1]:0"])]})
    assert echo_roundtrip(f.addr(0, 0), b"four") == b"four"
    assert echo_roundtrip(f.addr(0, 1), b"six") == b"six"
    lines = f.wait_access(2)
    clients = sorted(l["client"].rpartition(":")[0] for l in lines)
    assert clients == ["127.0.0.1", "[::1]"], clients


def test_quick_mode_repeated_listen(ferry, servers, need_ipv6):
    backend = servers.echo()
    f = ferry(args=["--listen", "127.0.0.1:0", "--listen", "[::1]:0",
                    "--backend", backend.addr])
    assert echo_roundtrip(f.addr(0, 0), b"a") == b"a"
    assert echo_roundtrip(f.addr(0, 1), b"b") == b"b"
    assert {l["service"] for l in f.wait_access(2)} == {"default"}


def test_ipv6_backend(ferry, servers, need_ipv6):
    backend = servers.tag("v6", host="::1")
    f = ferry(config={"services": [service([backend.addr])]})
    assert ask_tag(f.addr()) == "v6"
    (line,) = f.wait_access(1)
    assert line["backend"] == backend.addr and backend.addr.startswith("[::1]:")


@pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available")
def test_wildcard_listener(ferry, servers):
    """':port' listens on every interface (IPv4 and IPv6)."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], listen=[":0"])]})
    port = f.addr()[1]
    assert echo_roundtrip(("127.0.0.1", port), b"v4") == b"v4"
    assert echo_roundtrip(("::1", port), b"v6") == b"v6"


def test_services_side_by_side(ferry, servers):
    a, b = servers.tag("a"), servers.tag("b")
    f = ferry(config={"services": [
        service([a.addr], name="alpha", listen=["127.0.0.1:0", "127.0.0.1:0"]),
        service([b.addr], name="beta")]})
    assert [ask_tag(f.addr(0, 0)), ask_tag(f.addr(0, 1)), ask_tag(f.addr(1, 0))] == \
        ["a", "a", "b"]
    lines = f.wait_access(3)
    by_service = {l["service"]: l["backend"] for l in lines}
    assert by_service == {"alpha": a.addr, "beta": b.addr}
