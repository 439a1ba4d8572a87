#!/usr/bin/env python3
"""soak.py - ferry under mixed traffic for a long time: memory flat, no errors.

One ferry process, everything on loopback, for SOAK_SECONDS (default 600):

  * proxy service `web`: two echo backends with active health checks
    (send 'HEALTH\\n', expect 'OK'); backend b2 flaps every ~10 s (it answers
    the health check with 'DOWN' for ~10 s, then 'OK' again, while still
    serving every client connection it gets, so no client is ever hurt by the
    flap itself);
  * a mirror on `web` (on_lag: block) that checks every mirrored transfer;
  * a fan-out service `feed` with line framing: two steady inputs, an input
    that comes and goes, two steady outputs, an output that comes and goes;
  * SIGHUP every ~15 s, alternating two configurations (balance, weights,
    mirror sample, a third, dead backend that health checks mark down);
  * concurrent clients: transfers of 1 B..2 MiB echoed back and checked with
    sha256, and long-lived "keeper" connections pinging through the reloads.

Every 5 s ferry's RSS (and its descriptors, active connections) is sampled
into build/soak-rss.csv.  At the end it checks:

  * every client transfer, keeper ping, mirrored transfer and fan-out record
    arrived intact (sha256 / crc32, fan-out records in order without gaps);
  * ferry's log has no error-level line (none is expected: EXPECTED_ERRORS is
    the whitelist) and no line that is not JSON;
  * every reload was applied, health checks saw b2 go down and come back;
  * memory is flat after warm-up: the largest RSS of the last 70% of the
    samples is at most the largest of the first 30% plus max(10%, 4 MiB);
  * ferry exits 0 on SIGTERM.

It prints a summary and exits 0 when everything held, 1 otherwise (2 when the
run itself could not be done).  Standard library only.

Environment: SOAK_SECONDS (600), FERRY_BIN (build/release/ferry),
SOAK_ENGINE (auto), SOAK_WORKERS (auto), SOAK_CLIENTS (6), SOAK_KEEPERS (4),
SOAK_CSV (build/soak-rss.csv).
"""

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS") or 600)
FERRY_BIN = os.environ.get("FERRY_BIN") or str(REPO / "build" / "release" / "ferry")
ENGINE = os.environ.get("SOAK_ENGINE") or "auto"
WORKERS = os.environ.get("SOAK_WORKERS") or "auto"
N_CLIENTS = int(os.environ.get("SOAK_CLIENTS") or 6)
N_KEEPERS = int(os.environ.get("SOAK_KEEPERS") or 4)
CSV_PATH = Path(os.environ.get("SOAK_CSV") or REPO / "build" / "soak-rss.csv")

SAMPLE_EVERY = 5.0
FLAP_EVERY = 10.0
RELOAD_EVERY = 15.0
FANOUT_RATE = 200          # records per second per steady input
MAX_TRANSFER = 2 << 20
KIB = 1024
MIB = 1 << 20

# Error-level log events that are expected in this run (event -> why).  None is:
# the flapping backend, the dead backend and the reloads only give info and
# warn lines (backend_down, health_check_error, connect_error, ...).
EXPECTED_ERRORS = {}

BLOCK = random.Random(1).randbytes(8 * MIB)  # transfers are slices of it


# --- bookkeeping ---------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.failures = []
        self.counts = {}

    def fail(self, what):
        with self.lock:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {what}")
            if len(self.failures) <= 20:
                print(f"soak: FAILURE: {what}", file=sys.stderr, flush=True)

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def get(self, key):
        with self.lock:
            return self.counts.get(key, 0)


STATS = Stats()
STOP = threading.Event()       # the traffic phase is over
ABORT = threading.Event()      # something fatal: wind down now


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def addr(port):
    return f"127.0.0.1:{port}"


def recv_line(sock, limit=256):
    """Reads one '\\n'-terminated line (at most `limit` bytes) a byte at a time."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise EOFError(f"EOF before end of line ({bytes(buf)!r})")
        buf += b
        if len(buf) > limit:
            raise ValueError(f"line too long: {bytes(buf[:64])!r}")
    return bytes(buf)


def die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --- servers -------------------------------------------------------------------

class ThreadedServer:
    """A loopback listener running handler(conn) in a thread per connection."""

    def __init__(self, name, handler):
        self.name = name
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.addr = addr(self.port)
        self.conns = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(120)
            with self.lock:
                self.conns.add(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except (OSError, EOFError, ValueError) as e:
            if not self.closed:
                self.on_error(e)
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def on_error(self, e):
        STATS.fail(f"{self.name}: {e!r}")

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EchoBackend(ThreadedServer):
    """Echoes everything (its first line included) and passes the FIN on; a
    connection whose first line is 'HEALTH' is a health check, answered 'OK' or,
    while `healthy` is False, 'DOWN'."""

    def __init__(self, name):
        self.healthy = True
        super().__init__(name, self.serve)

    def serve(self, c):
        first = c.recv(65536)
        if first.startswith(b"HEALTH"):
            STATS.add(f"health_checks_{self.name}")
            c.sendall(b"OK\n" if self.healthy else b"DOWN\n")
            return
        STATS.add(f"served_{self.name}")
        data = first
        while data:
            c.sendall(data)
            data = c.recv(262144)
        c.shutdown(socket.SHUT_WR)

    def on_error(self, e):
        # A client that dies resets its backend connection; the client side
        # reports that as the failure, so nothing more to say here.
        STATS.add(f"backend_errors_{self.name}")


class MirrorSink(ThreadedServer):
    """Checks every mirrored connection: 'XFER id n sha\\n' then n bytes whose
    sha256 is sha; 'KEEP id\\n' then anything."""

    def __init__(self):
        super().__init__("mirror", self.serve)

    def serve(self, c):
        header = recv_line(c)
        parts = header.split()
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(262144)
            if not d:
                break
            n += len(d)
            h.update(d)
        if parts[0] == b"XFER" and len(parts) == 4:
            if n != int(parts[2]) or h.hexdigest().encode() != parts[3]:
                STATS.fail(f"mirror: transfer {parts[1].decode()} got {n} of "
                           f"{int(parts[2])} bytes or other bytes")
            else:
                STATS.add("mirror_transfers_ok")
        elif parts[0] == b"KEEP":
            STATS.add("mirror_keepers")
        else:
            STATS.fail(f"mirror: unexpected first line {header[:60]!r}")


# --- proxy clients ---------------------------------------------------------------

XID = [0]
XID_LOCK = threading.Lock()


def next_xid():
    with XID_LOCK:
        XID[0] += 1
        return XID[0]


def transfer(port, rng):
    """One echo transfer through ferry, checked; returns the bytes moved."""
    r = rng.random()
    n = (rng.randint(1, 16 * KIB) if r < 0.4 else rng.randint(16 * KIB, 256 * KIB)
         if r < 0.8 else rng.randint(256 * KIB, MAX_TRANSFER))
    off = rng.randint(0, len(BLOCK) - n)
    body = memoryview(BLOCK)[off:off + n]
    xid = next_xid()
    header = f"XFER {xid} {n} {hashlib.sha256(body).hexdigest()}\n".encode()
    want = hashlib.sha256(header)
    want.update(body)
    got = hashlib.sha256()
    got_n = 0
    send_err = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        def sender():
            try:
                s.sendall(header)
                for k in range(0, n, 65536):
                    s.sendall(body[k:k + 65536])
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                send_err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        while True:
            d = s.recv(262144)
            if not d:
                break
            got_n += len(d)
            got.update(d)
        t.join(60)
    if send_err:
        raise send_err[0]
    if got_n != len(header) + n or got.digest() != want.digest():
        raise ValueError(f"transfer {xid}: {got_n} of {len(header) + n} bytes came back, "
                         f"or other bytes")
    return n


def transfer_client(port, seed):
    rng = random.Random(seed)
    while not STOP.is_set():
        try:
            n = transfer(port, rng)
            STATS.add("transfers_ok")
            STATS.add("transfer_bytes", n)
        except (OSError, ValueError) as e:
            STATS.fail(f"client: {e!r}")
            time.sleep(0.5)
        time.sleep(rng.random() * 0.2)


def keeper(port, seed):
    """Long-lived connections (20..60 s) pinging every 0.5 s through reloads and
    flaps: every ping comes back."""
    rng = random.Random(seed)
    while not STOP.is_set():
        life = rng.uniform(20, 60)
        xid = next_xid()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                header = f"KEEP {xid}\n".encode()
                s.sendall(header)
                if recv_exact(s, len(header)) != header:
                    raise ValueError(f"keeper {xid}: header came back changed")
                end = time.monotonic() + life
                k = 0
                while time.monotonic() < end and not STOP.is_set():
                    ping = f"ping {xid} {k} ".encode() * rng.randint(1, 64) + b"\n"
                    s.sendall(ping)
                    if recv_exact(s, len(ping)) != ping:
                        raise ValueError(f"keeper {xid}: ping {k} came back changed")
                    STATS.add("keeper_pings")
                    k += 1
                    time.sleep(0.5)
                s.shutdown(socket.SHUT_WR)
                if s.recv(1) != b"":
                    raise ValueError(f"keeper {xid}: data after the end")
                STATS.add("keepers_ok")
        except (OSError, ValueError, EOFError) as e:
            STATS.fail(f"keeper: {e!r}")
            time.sleep(0.5)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


# --- fan-out -----------------------------------------------------------------------

def record(tag, seq, rng):
    body = rng.randbytes(rng.randint(0, 100)).hex()
    core = f"{tag}:{seq}:{body}"
    return f"{core}:{zlib.crc32(core.encode()):08x}\n".encode()


class FanInput:
    """Writes records `tag:seq:body:crc` at `rate` per second, split into random
    pieces, until stopped (or `count` records), then closes."""

    def __init__(self, port, tag, rate, count=None, seed=0):
        self.port, self.tag, self.rate, self.count = port, tag, rate, count
        self.rng = random.Random(seed)
        self.sent = 0
        self.done = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
                start = time.monotonic()
                pending = bytearray()
                while not self.stop.is_set() and (self.count is None or self.sent < self.count):
                    # the records due by now
                    due = int((time.monotonic() - start) * self.rate) + 1
                    if self.count is not None:
                        due = min(due, self.count)
                    while self.sent < due:
                        pending += record(self.tag, self.sent, self.rng)
                        self.sent += 1
                    while pending:
                        k = self.rng.randint(1, max(1, len(pending)))
                        s.sendall(pending[:k])
                        del pending[:k]
                    time.sleep(0.02)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(30)
                while s.recv(65536):
                    pass
        except OSError as e:
            STATS.fail(f"fan-out input {self.tag}: {e!r}")
        finally:
            self.done.set()


class FanOutput:
    """Reads an output connection: every record intact, each input's records in
    order without a gap (from the first one it sees, when it joined late)."""

    def __init__(self, port, name, life=None):
        self.name, self.life = name, life
        self.last = {}        # tag -> last seq seen
        self.first = {}       # tag -> first seq seen
        self.records = 0
        self.done = threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        buf = bytearray()
        end = time.monotonic() + self.life if self.life else None
        try:
            self.sock.settimeout(1.0)
            while True:
                if end and time.monotonic() > end:
                    break
                try:
                    d = self.sock.recv(262144)
                except socket.timeout:
                    continue
                if not d:
                    break
                buf += d
                cut = buf.rfind(b"\n")
                if cut < 0:
                    continue
                for line in bytes(buf[:cut]).split(b"\n"):
                    self._check(line)
                del buf[:cut + 1]
            if buf and not end:
                STATS.fail(f"fan-out output {self.name}: stream ends inside a record")
        except OSError as e:
            if not STOP.is_set() or not isinstance(e, ConnectionResetError):
                STATS.fail(f"fan-out output {self.name}: {e!r}")
        finally:
            self.sock.close()
            self.done.set()

    def _check(self, line):
        core, _, crc = line.rpartition(b":")
        if not core or f"{zlib.crc32(core):08x}".encode() != crc:
            STATS.fail(f"fan-out output {self.name}: damaged record {line[:80]!r}")
            return
        tag, seq, _ = core.split(b":", 2)
        tag, seq = tag.decode(), int(seq)
        prev = self.last.get(tag)
        if prev is None:
            self.first[tag] = seq
        elif seq != prev + 1:
            STATS.fail(f"fan-out output {self.name}: input {tag} record {seq} after {prev}")
        self.last[tag] = seq
        self.records += 1


# --- ferry -----------------------------------------------------------------------

class Ferry:
    def __init__(self, config_path):
        self.config_path = config_path
        self.proc = None
        self.lock = threading.Condition()
        self.levels = {}           # (level, event) -> count
        self.errors = []           # unexpected error-level lines
        self.unparsed = []         # stderr lines that are not JSON
        self.reloads = 0
        self.ready = False
        self.engine = self.workers = "?"  # as the ready line says
        self.events = {}           # event -> list of (time, dict) for the few we watch

    def start(self):
        self.proc = subprocess.Popen([FERRY_BIN, "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        threading.Thread(target=self._read, daemon=True).start()
        with self.lock:
            end = time.monotonic() + 15
            while not self.ready:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("ferry did not get ready:\n" + "\n".join(self.unparsed))
                self.lock.wait(0.2)

    def _read(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                d = json.loads(line)
                if not isinstance(d, dict):
                    raise ValueError
            except ValueError:
                with self.lock:
                    self.unparsed.append(line)
                continue
            level, event = d.get("level"), d.get("event")
            with self.lock:
                self.levels[(level, event)] = self.levels.get((level, event), 0) + 1
                if level == "error" and event not in EXPECTED_ERRORS:
                    self.errors.append(line)
                if event == "ready":
                    self.ready = True
                    self.engine, self.workers = d.get("engine", "?"), d.get("workers", "?")
                if event == "reload":
                    self.reloads += 1
                if event in ("backend_down", "backend_up", "reload_failed"):
                    self.events.setdefault(event, []).append(d)
                self.lock.notify_all()

    def wait_reloads(self, n, timeout=10):
        with self.lock:
            end = time.monotonic() + timeout
            while self.reloads < n and time.monotonic() < end:
                self.lock.wait(0.2)
            return self.reloads >= n

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def alive(self):
        return self.proc.poll() is None


def make_config(variant, ports, backends, mirror):
    """The two configurations SIGHUP alternates between (JSON is YAML)."""
    hc = {"interval": "500ms" if variant == "A" else "700ms", "timeout": "500ms",
          "rise": 2, "fall": 2, "send": "HEALTH\\n", "expect": "OK"}
    if variant == "A":
        bl = [{"address": backends[0].addr}, {"address": backends[1].addr}]
        web = {"balance": "round_robin", "mirrors": [{"address": mirror.addr,
                                                      "on_lag": "block"}]}
    else:
        bl = [{"address": backends[0].addr, "weight": 2}, {"address": backends[1].addr},
              {"address": addr(ports["dead"])}]
        web = {"balance": "least_conn", "mirrors": [{"address": mirror.addr,
                                                     "on_lag": "block", "sample": "50%"}]}
    return {
        "engine": ENGINE,
        "workers": WORKERS,
        "max_connections": 2000,
        "shutdown_timeout": "10s",
        "log": {"level": "info", "format": "json", "access": True},
        "admin": {"listen": addr(ports["admin"])},
        "services": [
            dict({"name": "web", "listen": [addr(ports["web"])], "backends": bl,
                  "connect_timeout": "1s", "idle_timeout": "30s", "retries": 2,
                  "health_check": hc}, **web),
            {"name": "feed", "mode": "fanout", "framing": "line", "max_line": "4KiB",
             "inputs": {"listen": [addr(ports["fin"])]},
             "outputs": {"listen": [addr(ports["fout"])], "on_lag": "disconnect",
                         "max_lag": "4MiB"}},
        ],
    }


def write_config(path, cfg):
    # JSON is YAML.  health_check.send is "HEALTH\\n" in the file: YAML turns
    # that into HEALTH\n and ferry decodes the escape into a newline.
    text = json.dumps(cfg, indent=1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


# --- the run -------------------------------------------------------------------------

def flat(samples):
    """(ok, text) for the memory check: max of the last 70% <= max of the first
    30% + max(10%, 4 MiB)."""
    k = max(1, int(len(samples) * 0.3))
    first, last = samples[:k], samples[k:]
    if not last:
        return False, "too few samples"
    base = max(first)
    allow = max(base * 0.10, 4 * 1024)
    ok = max(last) <= base + allow
    return ok, (f"max of the last {len(last)} samples {max(last)} KiB "
                f"{'<=' if ok else '>'} max of the first {len(first)} ({base} KiB) "
                f"+ {allow:.0f} KiB")


def main():
    if not os.access(FERRY_BIN, os.X_OK):
        print(f"soak: no ferry binary at {FERRY_BIN} (make ferry, or set FERRY_BIN)",
              file=sys.stderr)
        return 2
    tmp = REPO / "build" / "soak"
    tmp.mkdir(parents=True, exist_ok=True)
    CSV_PATH.parent.mkdir(parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("web", "admin", "fin", "fout", "dead")}
    b1, b2 = EchoBackend("b1"), EchoBackend("b2")
    mirror = MirrorSink()
    servers = [b1, b2, mirror]
    configs = {v: make_config(v, ports, [b1, b2], mirror) for v in "AB"}
    config_path = tmp / "ferry.yaml"
    write_config(config_path, configs["A"])
    ferry = Ferry(config_path)

    # Hard bound on the whole run, whatever happens.
    def watchdog():
        print("soak: watchdog: the run took too long; killing ferry", file=sys.stderr)
        if ferry.proc and ferry.proc.poll() is None:
            ferry.proc.kill()
        os._exit(2)
    dog = threading.Timer(SOAK_SECONDS + 240, watchdog)
    dog.daemon = True
    dog.start()

    t_start = time.monotonic()
    samples = []
    try:
        ferry.start()
        print(f"soak: ferry {FERRY_BIN} pid {ferry.proc.pid}, engine {ferry.engine}, "
              f"workers {ferry.workers}, {SOAK_SECONDS:.0f}s; web :{ports['web']}, feed in :{ports['fin']} "
              f"out :{ports['fout']}, admin :{ports['admin']}", flush=True)
        # Fan-out: the steady outputs first, so they see every record.
        outs = [FanOutput(ports["fout"], f"out{i}") for i in range(2)]
        wait_for(lambda: (metric(ports["admin"], "ferry_fanout_outputs") or 0) >= 2, 10,
                 "the fan-out outputs to connect")
        ins = [FanInput(ports["fin"], f"in{i}", FANOUT_RATE, seed=i) for i in range(2)]
        churn_ins, churn_outs = [], []

        threads = [threading.Thread(target=transfer_client, args=(ports["web"], 100 + i),
                                    daemon=True) for i in range(N_CLIENTS)]
        threads += [threading.Thread(target=keeper, args=(ports["web"], 200 + i), daemon=True)
                    for i in range(N_KEEPERS)]
        for t in threads:
            t.start()

        csv = open(CSV_PATH, "w")
        csv.write("elapsed_s,rss_kib,fds,connections_active,transfers_ok\n")
        next_sample, next_flap, next_reload = 0.0, FLAP_EVERY, RELOAD_EVERY
        next_churn_in, next_churn_out = 20.0, 15.0
        reloads_sent = flaps = 0
        variant = "A"
        rng = random.Random(7)
        while True:
            now = time.monotonic() - t_start
            if now >= SOAK_SECONDS or ABORT.is_set():
                break
            if not ferry.alive():
                STATS.fail(f"ferry exited with {ferry.proc.returncode} during the run")
                break
            if now >= next_sample:
                try:
                    active = metric(ports["admin"], "ferry_connections_active")
                except OSError as e:
                    STATS.fail(f"admin /metrics: {e!r}")
                    active = None
                rss = ferry.rss_kib()
                samples.append(rss)
                csv.write(f"{now:.1f},{rss},{ferry.fds()},"
                          f"{'' if active is None else int(active)},"
                          f"{STATS.get('transfers_ok')}\n")
                csv.flush()
                next_sample += SAMPLE_EVERY
            if now >= next_flap:
                b2.healthy = not b2.healthy
                flaps += 1
                next_flap += FLAP_EVERY * rng.uniform(0.8, 1.2)
            if now >= next_reload:
                variant = "B" if variant == "A" else "A"
                write_config(config_path, configs[variant])
                reloads_sent += 1
                ferry.proc.send_signal(signal.SIGHUP)
                if not ferry.wait_reloads(reloads_sent):
                    STATS.fail(f"reload {reloads_sent} (config {variant}) not applied in 10s")
                next_reload += RELOAD_EVERY * rng.uniform(0.8, 1.2)
            if now >= next_churn_in:
                # an input that sends 500 records at once and leaves
                churn_ins.append(FanInput(ports["fin"], f"c{len(churn_ins)}", 5000, count=500,
                                          seed=1000 + len(churn_ins)))
                next_churn_in += 20
            if now >= next_churn_out:
                churn_outs.append(FanOutput(ports["fout"], f"late{len(churn_outs)}", life=5))
                next_churn_out += 15
            time.sleep(0.2)
        traffic_seconds = time.monotonic() - t_start
        csv.close()

        # Wind down: clients finish what they are doing, inputs close, and the
        # steady outputs must have every record of every input.
        STOP.set()
        for t in threads:
            t.join(90)
            if t.is_alive():
                STATS.fail("a client did not finish within 90s")
        for i in ins + churn_ins:
            i.stop.set()
        for i in ins + churn_ins:
            if not i.done.wait(30):
                STATS.fail(f"fan-out input {i.tag} did not finish")
        expected = {i.tag: i.sent for i in ins + churn_ins}

        def delivered():
            return all(o.last.get(tag, -1) == n - 1 for o in outs
                       for tag, n in expected.items() if n)
        if not wait_for(delivered, 30, None):
            for o in outs:
                short = {t: (o.last.get(t, -1) + 1, n) for t, n in expected.items()
                         if o.last.get(t, -1) != n - 1}
                STATS.fail(f"fan-out output {o.name}: records missing (got, sent): {short}")
        for o in outs:
            for tag in expected:
                if expected[tag] and o.first.get(tag, 0) != 0:
                    STATS.fail(f"fan-out output {o.name}: input {tag} started at record "
                               f"{o.first[tag]}")
        for o in churn_outs:
            o.done.wait(10)
        fanout_records = sum(o.records for o in outs + churn_outs)

        # Health checks saw the flaps.
        with ferry.lock:
            downs = [d for d in ferry.events.get("backend_down", [])
                     if d.get("backend") == b2.addr]
            ups = [d for d in ferry.events.get("backend_up", []) if d.get("backend") == b2.addr]
        if flaps >= 2 and (not downs or not ups):
            STATS.fail(f"b2 flapped {flaps} times but ferry logged {len(downs)} backend_down "
                       f"and {len(ups)} backend_up lines for it")

        # Stop ferry.
        ferry.proc.send_signal(signal.SIGTERM)
        try:
            rc = ferry.proc.wait(30)
        except subprocess.TimeoutExpired:
            ferry.proc.kill()
            rc = ferry.proc.wait()
            STATS.fail("ferry did not exit within 30s of SIGTERM (killed)")
        if rc != 0:
            STATS.fail(f"ferry exited with {rc}")
        time.sleep(0.2)  # the reader thread takes the last lines
    except RuntimeError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    finally:
        STOP.set()
        if ferry.proc and ferry.proc.poll() is None:
            ferry.proc.kill()
            ferry.proc.wait()
        for s in servers:
            s.close()
        dog.cancel()

    # --- verdict ---
    with ferry.lock:
        errors, unparsed = list(ferry.errors), list(ferry.unparsed)
        levels = dict(ferry.levels)
        reloads_seen = ferry.reloads
    for line in errors[:10]:
        STATS.fail(f"error-level log line: {line}")
    if len(errors) > 10:
        STATS.fail(f"... {len(errors) - 10} more error-level log lines")
    for line in unparsed[:10]:
        STATS.fail(f"stderr line that is not a JSON log line: {line}")
    mem_ok, mem_text = flat(samples) if samples else (False, "no samples")
    if not mem_ok:
        STATS.fail(f"memory not flat: {mem_text}")

    warn = {e: n for (lv, e), n in sorted(levels.items()) if lv == "warn"}
    info = {e: n for (lv, e), n in sorted(levels.items()) if lv == "info"}
    c = STATS.get
    print()
    print("soak summary")
    print(f"  duration          {traffic_seconds:.0f}s of traffic (SOAK_SECONDS={SOAK_SECONDS:g})"
          f", engine {ferry.engine} ({ENGINE}), workers {ferry.workers} ({WORKERS})")
    print(f"  transfers         {c('transfers_ok')} intact, "
          f"{c('transfer_bytes') / MIB:.0f} MiB each way; keepers {c('keepers_ok')} "
          f"({c('keeper_pings')} pings)")
    print(f"  backends          b1 served {c('served_b1')}, b2 served {c('served_b2')}; "
          f"b2 flapped {flaps} times, ferry logged {len(downs)} down / {len(ups)} up")
    print(f"  mirror            {c('mirror_transfers_ok')} transfers intact, "
          f"{c('mirror_keepers')} keeper connections")
    print(f"  fan-out           {fanout_records} records checked on "
          f"{len(outs) + len(churn_outs)} outputs from {len(expected)} inputs")
    print(f"  reloads           {reloads_sent} sent, {reloads_seen} applied")
    print(f"  log               info {info}")
    print(f"                    warn {warn}")
    print(f"                    error lines {len(errors)}, non-JSON lines {len(unparsed)}")
    if samples:
        print(f"  RSS (KiB)         first {samples[0]}, last {samples[-1]}, min {min(samples)}, "
              f"max {max(samples)}, {len(samples)} samples every {SAMPLE_EVERY:g}s -> "
              f"{CSV_PATH}")
    print(f"  memory flat       {'yes' if mem_ok else 'NO'}: {mem_text}")
    failures = STATS.failures
    if failures:
        print(f"  FAILED            {len(failures)} problem(s):")
        for f in failures[:30]:
            print(f"    {f}")
        return 1
    print("  result            PASS")
    return 0


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    if what:
        raise RuntimeError(f"timed out waiting for {what}")
    return False


if __name__ == "__main__":
    sys.exit(main())
