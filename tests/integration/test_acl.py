"""allow / deny (SPEC section 2): CIDRs judged on the connecting peer's address;
refused clients are closed at accept with end=rejected reason=acl."""

import time

import pytest

from helpers import T, connect, echo_roundtrip, service


def refused(f, source, addr=None):
    """True when a client from `source` is closed without being served."""
    with connect(addr or f.addr(), source=source) as c:
        c.settimeout(T(3))
        try:
            c.sendall(b"ping")
        except (BrokenPipeError, ConnectionResetError):
            return True
        t0 = time.monotonic()
        try:
            data = c.recv(10)
        except ConnectionResetError:
            data = b""
        assert time.monotonic() - t0 < T(2)
        return data == b""


CASES = {
    # name: (allow, deny, sources served, sources refused)
    "allow one": (["127.0.0.2/32"], [], ["127.0.0.2"], ["127.0.0.1", "127.0.0.3"]),
    "allow range": (["127.0.0.0/30"], [], ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
                    ["127.0.0.4", "127.0.0.9"]),
    "deny one": ([], ["127.0.0.3/32"], ["127.0.0.1", "127.0.0.2"], ["127.0.0.3"]),
    "deny wins": (["127.0.0.0/8"], ["127.0.0.5"], ["127.0.0.1", "127.0.0.6"], ["127.0.0.5"]),
}


@pytest.mark.parametrize("allow,deny,served,refused_from", CASES.values(), ids=CASES.keys())
def test_allow_deny(ferry, servers, allow, deny, served, refused_from):
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], allow=allow, deny=deny)]})
    for src in served:
        assert echo_roundtrip(f.addr(), b"ping", source=src) == b"ping", src
    for src in refused_from:
        assert refused(f, src), f"client from {src} was served"
    lines = f.wait_access(len(served) + len(refused_from))
    rejected = [l for l in lines if l["end"] == "rejected"]
    assert sorted(l["client"].rpartition(":")[0] for l in rejected) == sorted(refused_from)
    assert all(l.get("reason") == "acl" and l["backend"] == "-" for l in rejected), rejected
    assert backend.accepted == len(served), "refused clients must never reach a backend"


def test_acl_ipv6(ferry, servers, need_ipv6):
    """An IPv4-only allow list refuses ::1; an IPv6 deny entry refuses it too."""
    backend = servers.echo()
    f = ferry(config={"services": [
        service([backend.addr], name="v4only", listen=["[::1]:0", "127.0.0.1:0"],
                allow=["127.0.0.0/8"]),
        service([backend.addr], name="nov6", listen=["[::1]:0"], deny=["::1/128"]),
    ]})
    assert refused(f, None, f.addr(0, 0))
    assert echo_roundtrip(f.addr(0, 1), b"ok") == b"ok"
    assert refused(f, None, f.addr(1, 0))
    lines = f.wait_access(3)
    assert sum(1 for l in lines if l.get("reason") == "acl") == 2, lines
