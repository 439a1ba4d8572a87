"""tests/tools/fakedns.py, the DNS server the resolver tests run against, checked
on its own with hand-built queries: A and AAAA answers from the table, NXDOMAIN
for unknown names, NODATA for a known name without that type, a table change
seen by the next query, SERVFAIL and silence on demand, a half-written table,
and large answers truncated on UDP but whole over TCP.

`FakeDNS` is the fixture a ferry-level test can reuse: start it, write a table,
point ferry (or the resolver) at `fd.server` ("127.0.0.1:PORT").
"""

import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import T

FAKEDNS = Path(__file__).resolve().parents[1] / "tools" / "fakedns.py"
A, AAAA, MX = 1, 28, 15


class FakeDNS:
    """One fakedns.py process on a free port, its table in `path`."""

    def __init__(self, tmp_path, table=None):
        self.path = tmp_path / "dns-table.json"
        self.set(table or {})
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKEDNS), "--port", "0", "--table", str(self.path)],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # the port: printed once bound
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError("fakedns.py did not start")
        self.port = int(line)
        self.server = f"127.0.0.1:{self.port}"

    def set(self, table):
        """Replaces the table atomically; the next query sees it."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, self.path)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=T(5))
        self.proc.stdout.close()


@pytest.fixture
def fakedns(tmp_path):
    fd = FakeDNS(tmp_path)
    yield fd
    fd.close()


def query(name, qtype, qid=None):
    qid = random.randrange(65536) if qid is None else qid
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", qtype, 1)


def parse(reply):
    """(id, flags, [rdata bytes]) of a reply built by fakedns (no compression
    except the answers' pointer to the question)."""
    qid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    off = 12
    for _ in range(qd):
        while reply[off]:
            off += reply[off] + 1
        off += 5
    rdatas = []
    for _ in range(an):
        assert reply[off:off + 2] == b"\xc0\x0c"
        _, _, _, rdlen = struct.unpack("!HHIH", reply[off + 2:off + 12])
        rdatas.append(reply[off + 12:off + 12 + rdlen])
        off += 12 + rdlen
    return qid, flags, rdatas


def ask_udp(fd, name, qtype, timeout=None):
    qid, msg = query(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout or T(5))
        s.sendto(msg, ("127.0.0.1", fd.port))
        reply = s.recv(65535)
    got_id, flags, rdatas = parse(reply)
    assert got_id == qid
    assert flags & 0x8000  # QR
    return flags, rdatas, len(reply)


def ask_tcp(fd, name, qtype):
    qid, msg = query(name, qtype)
    with socket.create_connection(("127.0.0.1", fd.port), timeout=T(5)) as s:
        s.sendall(struct.pack("!H", len(msg)) + msg)
        f = s.makefile("rb")
        (n,) = struct.unpack("!H", f.read(2))
        reply = f.read(n)
    got_id, flags, rdatas = parse(reply)
    assert got_id == qid
    return flags, rdatas


def rcode(flags):
    return flags & 0xF


def v4(rdatas):
    return sorted(str(ipaddress.IPv4Address(r)) for r in rdatas)


def v6(rdatas):
    return sorted(str(ipaddress.IPv6Address(r)) for r in rdatas)


def test_a_and_aaaa(fakedns):
    fakedns.set({"Multi.Test.": {"A": ["10.0.0.1", "10.0.0.2"], "AAAA": ["2001:db8::1"]}})
    flags, rd, _ = ask_udp(fakedns, "multi.test", A)
    assert rcode(flags) == 0 and flags & 0x0400  # authoritative
    assert v4(rd) == ["10.0.0.1", "10.0.0.2"]
    flags, rd, _ = ask_udp(fakedns, "MULTI.test", AAAA)
    assert rcode(flags) == 0
    assert v6(rd) == ["2001:db8::1"]


def test_unknown_name_is_nxdomain_known_without_type_is_nodata(fakedns):
    fakedns.set({"v4.test": {"A": ["10.0.0.1"]}})
    flags, rd, _ = ask_udp(fakedns, "nope.test", A)
    assert rcode(flags) == 3 and rd == []
    flags, rd, _ = ask_udp(fakedns, "v4.test", AAAA)
    assert rcode(flags) == 0 and rd == []
    flags, rd, _ = ask_udp(fakedns, "v4.test", MX)
    assert rcode(flags) == 0 and rd == []


def test_table_is_read_on_every_query(fakedns):
    fakedns.set({"svc.test": {"A": ["10.0.0.1"]}})
    assert v4(ask_udp(fakedns, "svc.test", A)[1]) == ["10.0.0.1"]
    fakedns.set({"svc.test": {"A": ["10.0.0.7"]}})
    assert v4(ask_udp(fakedns, "svc.test", A)[1]) == ["10.0.0.7"]
    fakedns.set({})
    assert rcode(ask_udp(fakedns, "svc.test", A)[0]) == 3


def test_rcode_drop_and_bad_table(fakedns):
    fakedns.set({"broken.test": {"rcode": 2}, "silent.test": {"drop": True}})
    assert rcode(ask_udp(fakedns, "broken.test", A)[0]) == 2
    with pytest.raises(socket.timeout):
        ask_udp(fakedns, "silent.test", A, timeout=0.3)
    fakedns.path.write_text('{"half": ')  # a torn write: SERVFAIL, not a crash
    assert rcode(ask_udp(fakedns, "half", A)[0]) == 2
    fakedns.set({"ok.test": {"A": ["10.0.0.1"]}})
    assert v4(ask_udp(fakedns, "ok.test", A)[1]) == ["10.0.0.1"]


def test_large_answer_truncated_on_udp_whole_on_tcp(fakedns):
    addrs = [f"10.9.0.{i}" for i in range(100)]
    fakedns.set({"big.test": {"A": addrs}})
    flags, rd, size = ask_udp(fakedns, "big.test", A)
    assert flags & 0x0200 and rd == [] and size <= 512  # TC
    flags, rd = ask_tcp(fakedns, "big.test", A)
    assert rcode(flags) == 0 and not flags & 0x0200
    assert v4(rd) == sorted(addrs)
