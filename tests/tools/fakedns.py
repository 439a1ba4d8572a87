#!/usr/bin/env python3
"""fakedns.py - a tiny authoritative DNS server for ferry's resolver tests
(standard library only).

    fakedns.py --table FILE [--port 0] [--host 127.0.0.1] [--log FILE]

Answers A and AAAA queries from a JSON table that it reads again on every
query, so a test changes the answers at run time by rewriting the file
(write a temporary file and rename it over the table: a half-written table
is answered with SERVFAIL).  The table maps names (case-insensitive, final
dot optional) to records:

    {"multi.test": {"A": ["10.0.0.1", "10.0.0.2"], "AAAA": ["2001:db8::1"]},
     "v4only.test": {"A": ["10.0.0.9"], "ttl": 5},
     "broken.test": {"rcode": 2},          # answer SERVFAIL (any rcode 0..15)
     "silent.test": {"drop": true}}        # never answer: the client times out

A name not in the table gets NXDOMAIN; a known name without records of the
asked type gets NOERROR with no answer (NODATA); other query types get
NODATA too.  UDP answers larger than 512 bytes are sent truncated (TC bit),
and the same port serves TCP, so large answers work as with a real server.

The server binds UDP and TCP on the same port (--port 0: a free one), then
prints the port on a line of its own on stdout and flushes: a test reads
that line to know it is ready.  --log appends "TYPE name" per query, so a
test can count queries.  It runs until killed.
"""

import argparse
import ipaddress
import json
import socket
import struct
import sys
import threading

QTYPE_A = 1
QTYPE_AAAA = 28
QCLASS_IN = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
UDP_MAX = 512


def parse_question(msg):
    """(id, flags, qname, qtype, qclass, end offset of the question) or None."""
    if len(msg) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount < 1:
        return None
    labels, off = [], 12
    while True:
        if off >= len(msg):
            return None
        n = msg[off]
        off += 1
        if n == 0:
            break
        if n & 0xC0 or off + n > len(msg):
            return None  # queries never use compression
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    if off + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    return qid, flags, ".".join(labels), qtype, qclass, off + 4


def load_table(path):
    """{lower-case name: record dict}; raises on a missing or bad file."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {k.lower().rstrip("."): v for k, v in raw.items()}


def answer(msg, table_path, log_path):
    """The reply to one query (bytes), or None to stay silent."""
    q = parse_question(msg)
    if q is None:
        return None
    qid, qflags, qname, qtype, qclass, qend = q
    if log_path:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write("%s %s\n" % ({QTYPE_A: "A", QTYPE_AAAA: "AAAA"}.get(qtype, qtype), qname))
    rcode, rdatas, ttl = 0, [], 0
    try:
        table = load_table(table_path)
    except (OSError, ValueError) as e:
        print("fakedns: table %s: %s" % (table_path, e), file=sys.stderr, flush=True)
        table, rcode = {}, RCODE_SERVFAIL
    rec = table.get(qname.lower().rstrip("."))
    if rcode == 0 and rec is None:
        rcode = RCODE_NXDOMAIN
    elif rec is not None:
        if rec.get("drop"):
            return None
        rcode = int(rec.get("rcode", 0))
        ttl = int(rec.get("ttl", 0))
        if rcode == 0 and qclass == QCLASS_IN and qtype in (QTYPE_A, QTYPE_AAAA):
            key, cls = ("A", ipaddress.IPv4Address) if qtype == QTYPE_A else \
                ("AAAA", ipaddress.IPv6Address)
            rdatas = [cls(a).packed for a in rec.get(key, [])]
    # QR, opcode and RD copied, AA, RA
    flags = 0x8000 | (qflags & 0x7900) | 0x0400 | 0x0080 | (rcode & 0xF)
    header = struct.pack("!HHHHHH", qid, flags, 1, len(rdatas), 0, 0)
    body = msg[12:qend]
    for rd in rdatas:  # name: pointer to the question's name at offset 12
        body += struct.pack("!HHHIH", 0xC00C, qtype, QCLASS_IN, ttl, len(rd)) + rd
    return header + body


def truncate(reply, qend_len):
    """A UDP reply cut to header and question with TC set."""
    qid, flags = struct.unpack("!HH", reply[:4])
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + reply[12:qend_len]


def serve_udp(sock, args):
    while True:
        msg, peer = sock.recvfrom(65535)
        reply = answer(msg, args.table, args.log)
        if reply is None:
            continue
        if len(reply) > UDP_MAX:
            q = parse_question(msg)
            reply = truncate(reply, q[5])
        sock.sendto(reply, peer)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve_tcp_conn(conn, args):
    with conn:
        while True:
            head = recv_exact(conn, 2)
            if head is None:
                return
            msg = recv_exact(conn, struct.unpack("!H", head)[0])
            if msg is None:
                return
            reply = answer(msg, args.table, args.log)
            if reply is not None:
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def serve_tcp(sock, args):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn, args), daemon=True).start()


def bind_pair(host, port):
    """UDP and TCP sockets bound to the same port (a free one for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, port))
        bound = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, bound))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no port free for both UDP and TCP")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="JSON file, read on every query")
    ap.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log", help="append one 'TYPE name' line per query")
    args = ap.parse_args()
    udp, tcp = bind_pair(args.host, args.port)
    threading.Thread(target=serve_tcp, args=(tcp, args), daemon=True).start()
    print(udp.getsockname()[1], flush=True)
    try:
        serve_udp(udp, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
