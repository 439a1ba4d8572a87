"""The PROXY protocol (SPEC sections 2 and 3).

`proxy_protocol: v1|v2`: the first bytes a backend and every mirror receive are a
header with the real client address (the client socket's own address) and ferry's
listening address, then the client's bytes unchanged.

`accept_proxy_protocol: true`: ferry first reads a v1 or v2 header from the client
(within connect_timeout).  The access log's `client` is the address in the header,
the bytes after it are relayed unchanged, and with `proxy_protocol` set too the
backend's header carries the addresses from the client's header (as HAProxy's
accept-proxy + send-proxy do).  allow/deny judge the real peer.  A LOCAL / UNKNOWN
header keeps the real peer address.  A malformed header, or none in time, closes
that client only, with a warn line event=proxy_protocol_error for a malformed one.

Headers are built and parsed here independently of ferry's code.
"""

import socket
import struct
import threading
import time

import pytest

from helpers import (T, connect, duplex_client, fmt_addr, payload, recv_all, recv_exact,
                     service, sha, wait_closed)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

# Addresses a load balancer in front of ferry would report (documentation ranges).
CLAIMED = {
    "ipv4": (("203.0.113.7", 4242), ("198.51.100.1", 443)),
    "ipv6": (("2001:db8::7", 4242), ("2001:db8::1", 8443)),
}


# --- headers -------------------------------------------------------------------

def _af(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def canon(host):
    """The address as inet_ntop writes it (as ferry logs it)."""
    return socket.inet_ntop(_af(host), socket.inet_pton(_af(host), host))


def v1_header(src, dst):
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {fam} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def v2_header(src, dst, ver_cmd=0x21, fam=None, length=None, body=None):
    af = _af(src[0])
    if body is None:
        body = (socket.inet_pton(af, src[0]) + socket.inet_pton(af, dst[0])
                + struct.pack(">HH", src[1], dst[1]))
    if fam is None:
        fam = 0x21 if af == socket.AF_INET6 else 0x11
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(body) if length is None
                                                     else length) + body


def header(version, src, dst):
    return v1_header(src, dst) if version == 1 else v2_header(src, dst)


V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V2_LOCAL = SIG + b"\x20\x00\x00\x00"


def parse_header(data):
    """(version, src, dst, rest) for a PROXY header at the start of `data`; src and
    dst are (host, port) with canonical hosts, or None for UNKNOWN / LOCAL.  Anything
    that is not a well-formed header fails the test."""
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        assert 0 < end <= 105, f"no CRLF within 107 bytes: {data[:120]!r}"
        parts = data[:end].decode("ascii").split(" ")
        rest = data[end + 2:]
        if parts[1] == "UNKNOWN":
            return 1, None, None, rest
        assert len(parts) == 6 and parts[1] in ("TCP4", "TCP6"), f"bad v1 header {parts}"
        af = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
        for host in parts[2:4]:
            socket.inet_pton(af, host)  # raises on an address of the wrong family
        for port in parts[4:6]:
            assert port.isdigit() and (port == "0" or port[0] != "0") and int(port) < 65536
        return (1, (canon(parts[2]), int(parts[4])), (canon(parts[3]), int(parts[5])), rest)
    assert data.startswith(SIG), f"not a PROXY header: {data[:32]!r}"
    assert len(data) >= 16, f"short v2 header {data!r}"
    ver_cmd, fam = data[12], data[13]
    (length,) = struct.unpack(">H", data[14:16])
    body, rest = data[16:16 + length], data[16 + length:]
    assert len(body) == length, "truncated v2 header"
    assert ver_cmd in (0x20, 0x21), f"bad v2 version/command {ver_cmd:#x}"
    if ver_cmd == 0x20:
        return 2, None, None, rest
    if fam == 0x11:
        assert length >= 12
        sp, dp = struct.unpack(">HH", body[8:12])
        return (2, (socket.inet_ntop(socket.AF_INET, body[0:4]), sp),
                (socket.inet_ntop(socket.AF_INET, body[4:8]), dp), rest)
    if fam == 0x21:
        assert length >= 36
        sp, dp = struct.unpack(">HH", body[32:36])
        return (2, (socket.inet_ntop(socket.AF_INET6, body[0:16]), sp),
                (socket.inet_ntop(socket.AF_INET6, body[16:32]), dp), rest)
    assert fam == 0x00, f"unexpected v2 family/protocol {fam:#x}"
    return 2, None, None, rest


# --- servers and clients ----------------------------------------------------------

def capture_handler(conn, srv):
    """Reads everything until EOF and records it: {'data': bytes}."""
    data = bytearray()
    while True:
        d = conn.recv(262144)
        if not d:
            break
        data += d
    srv.results.put({"data": bytes(data)})


def own_addr(sock):
    host, port = sock.getsockname()[:2]
    return canon(host), port


def listen_addr(f, svc=0, i=0):
    host, port = f.addr(svc, i)
    return canon(host), port


def send_slowly(sock, data, pause=0.003):
    """One byte per segment (TCP_NODELAY, a pause between sends)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        time.sleep(pause)


def closed_unserved(sock, timeout):
    """Waits for ferry to close `sock`; fails if any byte arrives first.  A send
    into the closed connection may fail, and the close may come as a reset."""
    try:
        return wait_closed(sock, timeout)
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


def send_to_closing(sock, data):
    """Sends what ferry may already have closed the connection on."""
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass


def echo_ok(f, data=b"ping", hdr=None, source=None):
    """A client sends an optional header and `data` and gets `data` back."""
    with connect(f.addr(), source=source) as c:
        c.sendall((hdr or b"") + data)
        c.shutdown(socket.SHUT_WR)
        return recv_all(c) == data


def capture_result(srv):
    return srv.result()["data"]


# --- proxy_protocol: the header ferry sends ------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_header_to_backend_and_mirror(ferry, servers, version):
    """Each connection's header names its own client; the mirror gets the same
    header; the client's bytes follow unchanged."""
    backend, mirror = servers.custom(capture_handler), servers.custom(capture_handler)
    svc = service([backend.addr], proxy_protocol=f"v{version}")
    svc["mirrors"] = [{"address": mirror.addr}]
    f = ferry(config={"services": [svc]})
    for n, source in enumerate(["127.0.0.2", "127.0.0.3"]):
        data = payload(200_000 + n, seed=20 + n)
        with connect(f.addr(), source=source) as c:
            me = own_addr(c)
            assert me[0] == source
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b""
        for who, srv in (("backend", backend), ("mirror", mirror)):
            ver, src, dst, rest = parse_header(capture_result(srv))
            assert ver == version, who
            assert src == me, f"{who}: header source {src}, client was {me}"
            assert dst == listen_addr(f), f"{who}: header destination {dst}"
            assert (len(rest), sha(rest)) == (len(data), sha(data)), \
                f"{who}: bytes after the header differ"
    lines = f.wait_access(2)
    assert sorted(l["client"].rpartition(":")[0] for l in lines) == ["127.0.0.2", "127.0.0.3"]


@pytest.mark.parametrize("version", [1, 2])
def test_header_to_backend_ipv6_client(ferry, servers, need_ipv6, version):
    """A client on an IPv6 listener: TCP6 / AF_INET6 header, to an IPv4 backend."""
    backend = servers.custom(capture_handler)
    f = ferry(config={"services": [service([backend.addr], listen=["[::1]:0"],
                                           proxy_protocol=f"v{version}")]})
    data = payload(50_000, seed=30)
    with connect(f.addr()) as c:
        me = own_addr(c)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    got = capture_result(backend)
    if version == 1:
        assert got.startswith(b"PROXY TCP6 ::1 ::1 "), got[:64]
    else:
        assert got[12:14] == b"\x21\x21", got[:16]
    ver, src, dst, rest = parse_header(got)
    assert (ver, src, dst) == (version, me, listen_addr(f))
    assert rest == data


# --- accept_proxy_protocol: the header ferry reads -----------------------------------

@pytest.mark.parametrize("how", ["one_segment", "byte_by_byte"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("version", [1, 2])
def test_accept_header(ferry, servers, version, family, how):
    """The header is taken off, the bytes after it (in the same segment, or after
    a header that came one byte at a time) reach the backend unchanged both ways,
    and the access log names the client of the header."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], accept_proxy_protocol=True)]})
    src, dst = CLAIMED[family]
    hdr = header(version, src, dst)
    data = payload(300_000, seed=40 + version)
    with connect(f.addr(), timeout=T(30)) as c:
        if how == "one_segment":
            got = duplex_client(c, hdr + data)  # header and data in one send
        else:
            send_slowly(c, hdr)
            got = duplex_client(c, data)
    assert got == (len(data), sha(data)), "bytes after the header were not relayed intact"
    (line,) = f.wait_access(1)
    assert line["client"] == fmt_addr(canon(src[0]), src[1]), line


@pytest.mark.parametrize("in_version,out_version,family", [
    (1, 1, "ipv4"), (1, 2, "ipv6"), (2, 1, "ipv6"), (2, 2, "ipv4")])
def test_accept_and_send(ferry, servers, in_version, out_version, family):
    """The backend's and the mirror's header carry the client's claimed addresses,
    whatever the two versions (an IPv6 client behind an IPv4-only chain too)."""
    backend, mirror = servers.custom(capture_handler), servers.custom(capture_handler)
    svc = service([backend.addr], accept_proxy_protocol=True,
                  proxy_protocol=f"v{out_version}")
    svc["mirrors"] = [{"address": mirror.addr}]
    f = ferry(config={"services": [svc]})
    src, dst = CLAIMED[family]
    data = b"after the header\r\n" + payload(20_000, seed=50)
    with connect(f.addr(), source="127.0.0.2") as c:
        c.sendall(header(in_version, src, dst) + data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    want_src = (canon(src[0]), src[1])
    want_dst = (canon(dst[0]), dst[1])
    for who, srv in (("backend", backend), ("mirror", mirror)):
        ver, got_src, got_dst, rest = parse_header(capture_result(srv))
        assert ver == out_version, who
        assert got_src == want_src, f"{who}: source {got_src}, claimed {want_src}"
        assert got_dst == want_dst, f"{who}: destination {got_dst}, claimed {want_dst}"
        assert rest == data, f"{who}: bytes after the header differ"
    (line,) = f.wait_access(1)
    assert line["client"] == fmt_addr(*want_src), line


LOCAL_HEADERS = {
    "v1_unknown": V1_UNKNOWN,
    "v1_unknown_with_fields": b"PROXY UNKNOWN 2001:db8::7 2001:db8::1 4242 443\r\n",
    "v2_local": V2_LOCAL,
    "v2_local_with_addresses": v2_header(*CLAIMED["ipv4"], ver_cmd=0x20),
    "v2_proxy_unspec": SIG + b"\x21\x00\x00\x00",
}


@pytest.mark.parametrize("name", LOCAL_HEADERS.keys())
def test_accept_local_keeps_real_peer(ferry, servers, name):
    """LOCAL / UNKNOWN (and PROXY over AF_UNSPEC): the connection's own addresses
    stand, in the log and in the header sent on."""
    out_version = 1 if name.endswith("fields") or name == "v2_local" else 2
    backend = servers.custom(capture_handler)
    f = ferry(config={"services": [service([backend.addr], accept_proxy_protocol=True,
                                           proxy_protocol=f"v{out_version}")]})
    with connect(f.addr(), source="127.0.0.3") as c:
        me = own_addr(c)
        c.sendall(LOCAL_HEADERS[name] + b"hello")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    ver, src, dst, rest = parse_header(capture_result(backend))
    assert (ver, src, dst, rest) == (out_version, me, listen_addr(f), b"hello")
    (line,) = f.wait_access(1)
    assert line["client"] == fmt_addr(*me), line


def test_acl_judges_the_real_peer(ferry, servers):
    """allow/deny look at the connecting peer, never at the claimed address: an
    allowed peer claiming a denied address is served, a refused peer claiming an
    allowed one is closed at accept (its header never read)."""
    backend = servers.echo()
    f = ferry(config={"services": [service(
        [backend.addr], accept_proxy_protocol=True, allow=["127.0.0.2/32"],
        deny=["10.0.0.0/8"])]})
    claimed = ("10.1.2.3", 5555)
    assert echo_ok(f, b"ping", v1_header(claimed, ("10.0.0.1", 80)), source="127.0.0.2")
    with connect(f.addr(), source="127.0.0.3") as c:
        send_to_closing(c, v2_header(("127.0.0.2", 6666), ("127.0.0.1", 80)) + b"ping")
        closed_unserved(c, T(3))
    lines = f.wait_access(2)
    served = [l for l in lines if l["end"] != "rejected"]
    rejected = [l for l in lines if l["end"] == "rejected"]
    assert [l["client"] for l in served] == [fmt_addr(*claimed)], lines
    assert len(rejected) == 1 and rejected[0]["client"].rpartition(":")[0] == "127.0.0.3"
    assert rejected[0].get("reason") == "acl", rejected
    assert backend.accepted == 1, "a refused client reached the backend"


@pytest.mark.parametrize("version", [1, 2])
def test_accept_on_ipv6_listener(ferry, servers, need_ipv6, version):
    """A header arriving over IPv6 may claim an IPv4 client."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], listen=["[::1]:0"],
                                           accept_proxy_protocol=True)]})
    src, dst = CLAIMED["ipv4"]
    assert echo_ok(f, b"over six", header(version, src, dst))
    (line,) = f.wait_access(1)
    assert line["client"] == fmt_addr(*src), line


# --- bad headers and silent clients ----------------------------------------------------

MALFORMED = {
    "garbage_http": b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    "garbage_binary": bytes(range(1, 64)),
    "v1_lowercase": b"proxy TCP4 203.0.113.7 198.51.100.1 4242 443\r\nhello",
    "v1_double_space": b"PROXY TCP4  203.0.113.7 198.51.100.1 4242 443\r\nhello",
    "v1_bad_address": b"PROXY TCP4 203.0.113.256 198.51.100.1 4242 443\r\nhello",
    "v1_wrong_family": b"PROXY TCP4 2001:db8::7 2001:db8::1 4242 443\r\nhello",
    "v1_port_65536": b"PROXY TCP4 203.0.113.7 198.51.100.1 65536 443\r\nhello",
    "v1_negative_port": b"PROXY TCP4 203.0.113.7 198.51.100.1 -1 443\r\nhello",
    "v1_lf_only": b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\nhello",
    "v1_unknown_protocol": b"PROXY UDP4 203.0.113.7 198.51.100.1 4242 443\r\nhello",
    "v1_no_crlf_in_107": b"PROXY UNKNOWN " + b"x" * 120,
    "v2_bad_signature": b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12) + b"hello",
    "v2_bad_version": v2_header(*CLAIMED["ipv4"], ver_cmd=0x11) + b"hello",
    "v2_bad_command": v2_header(*CLAIMED["ipv4"], ver_cmd=0x22) + b"hello",
    "v2_udp": v2_header(*CLAIMED["ipv4"], fam=0x12) + b"hello",
    "v2_short_address_block": v2_header(*CLAIMED["ipv4"], fam=0x21) + b"hello",
    "v2_oversize_length": v2_header(*CLAIMED["ipv4"], length=0xffff) + b"hello",
}


@pytest.mark.parametrize("name", MALFORMED.keys())
def test_malformed_header_closes_that_client_only(ferry, servers, name):
    """Closed at once (each of these is refused before any timeout), never
    reaching a backend, logged as a warning; a client already relaying and a new
    one are unaffected."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], accept_proxy_protocol=True,
                                           connect_timeout="10s")]})
    good = connect(f.addr())
    try:
        good.sendall(v2_header(*CLAIMED["ipv6"]) + b"first ")
        assert recv_exact(good, 6) == b"first "
        with connect(f.addr(), source="127.0.0.4") as bad:
            t0 = time.monotonic()
            send_to_closing(bad, MALFORMED[name])
            closed_unserved(bad, T(3))
            took = time.monotonic() - t0
        assert took < 5, f"closed only after {took:.1f}s (a header timeout, not the error)"
        warns = f.wait_event("proxy_protocol_error")
        assert warns[0]["level"] == "warn", warns
        good.sendall(b"second")
        assert recv_exact(good, 6) == b"second"
    finally:
        good.close()
    assert echo_ok(f, b"third", v1_header(*CLAIMED["ipv4"]))
    assert backend.accepted == 2, "the bad client reached a backend"
    assert f.running()


def test_silent_or_partial_header_times_out(ferry, servers):
    """A client that sends nothing, or only the start of a header, is closed after
    connect_timeout; meanwhile other clients are served at once."""
    backend = servers.echo()
    f = ferry(config={"services": [service([backend.addr], accept_proxy_protocol=True,
                                           connect_timeout="600ms")]})
    starts = [b"", b"PROXY TCP4 203.0.113.", SIG[:7], v2_header(*CLAIMED["ipv6"])[:40]]
    took = [None] * len(starts)
    errors = []

    def silent(i):
        try:
            with connect(f.addr()) as c:
                t0 = time.monotonic()
                if starts[i]:
                    c.sendall(starts[i])
                closed_unserved(c, 0.6 + T(3))
                took[i] = time.monotonic() - t0
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=silent, args=(i,), daemon=True)
               for i in range(len(starts))]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    assert echo_ok(f, b"not blocked", v1_header(*CLAIMED["ipv4"]))
    assert time.monotonic() - t0 < 0.5, "a silent client delayed another one"
    for t in threads:
        t.join(T(10))
    assert not errors, errors
    for start, t in zip(starts, took):
        assert t is not None and 0.5 <= t <= 0.6 + T(1), \
            f"client that sent {start!r} closed after {t}s, expected about 0.6s"
    assert backend.accepted == 1
    assert f.running()
