"""Shared machinery for ferry's integration tests (standard library only).

What lives here:
  * settings: the binary under test, the engines to run, a time scale for slow builds;
  * small utilities: free ports, a YAML writer, log-line parsing, deadlines;
  * `Ferry`: one ferry process (config file or quick mode) whose stderr is collected
    by a thread and parsed into dicts;
  * backend servers that run a handler per connection in a thread (echo, sink,
    source, tagging, slow reader, reset-er, watcher) and a "blackhole" backend whose
    accept queue is full, so SYNs to it are dropped and connects time out;
  * client helpers (connect from a chosen source address, read a line, wait for close).

Timing rules: no fixed ports, no sleeps for readiness (everything polls against a
deadline), and every upper bound goes through `T()` so that a sanitizer build, which
is several times slower, gets proportionally more time.
"""

import ctypes
import hashlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

# --- settings ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
FERRY_BIN = os.environ.get("FERRY_BIN") or str(REPO / "build" / "release" / "ferry")


def _usable_engines():
    """The engines `ferry -V` reports as usable on this machine: every
    behavioural test runs under each of them."""
    try:
        out = subprocess.run([FERRY_BIN, "-V"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ["epoll"]
    found = [m.group(1) for m in re.finditer(r"^\s+(\w+): usable", out, re.M)]
    return found or ["epoll"]


_env_engines = os.environ.get("FERRY_TEST_ENGINES", "")
ENGINES = ([e.strip() for e in _env_engines.split(",") if e.strip()] if _env_engines.strip()
           else _usable_engines())

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer",
                     "VALGRIND-ERROR")  # tests/tools/valgrind-ferry.sh's error markers


def _binary_is_sanitized(path):
    """True when the binary links the ASan runtime (its dynamic symbols name it)."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = _binary_is_sanitized(FERRY_BIN)
# Multiplier for every upper time bound; a sanitizer build runs several times slower.
SCALE = float(os.environ.get("FERRY_TEST_TIMEOUT_SCALE") or (4 if ASAN else 1))


def T(seconds):
    """An upper time bound, scaled for slow builds."""
    return seconds * SCALE


class Deadline:
    """A point in time; `left()` is what remains (never negative)."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def wait_until(pred, timeout, what="condition", interval=0.01):
    """Polls `pred()` until it returns a truthy value, which is returned; fails the
    test with `what` in the message when `timeout` seconds pass first."""
    dl = Deadline(timeout)
    while True:
        v = pred()
        if v:
            return v
        if dl.expired():
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# --- addresses and ports ----------------------------------------------------

def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago on `host` (bind to port 0, then close)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _ipv6_available()


def fmt_addr(host, port):
    """'127.0.0.1:80' or '[::1]:80', as ferry writes addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(text):
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def dead_addr():
    """The address of a loopback port nobody listens on: connects are refused."""
    return fmt_addr("127.0.0.1", free_port())


# --- YAML -------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/%\-]*$")


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    # Plain style when nothing in it can confuse YAML, else a double-quoted string
    # (JSON string syntax is valid YAML).
    return s if _PLAIN.match(s) else json.dumps(s)


def to_yaml(obj, indent=0):
    """Block-style YAML for nested dicts/lists of scalars (enough for ferry configs)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:")
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                out.append(f"{pad}{k}: []")
            elif isinstance(v, dict):
                out.append(f"{pad}{k}: {{}}")
            else:
                out.append(f"{pad}{k}: {_yaml_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2).splitlines()
                out.append(f"{pad}- {body[0].lstrip()}")
                out.extend(body[1:])
            else:
                out.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        out.append(pad + _yaml_scalar(obj))
    return "\n".join(out)


def service(backends, name="web", listen=None, **options):
    """A proxy service dict: `backends` are addresses or dicts; `listen` defaults to
    one auto-port IPv4 listener (see Ferry about ':0')."""
    bl = [b if isinstance(b, dict) else {"address": b} for b in backends]
    svc = {"name": name, "listen": listen or ["127.0.0.1:0"]}
    svc.update(options)
    svc["backends"] = bl
    return svc


# --- logs -------------------------------------------------------------------

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_TEXT_LINE = re.compile(r"^(\S+) (debug|info|warn|error) (.*)$")
_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    """One ferry log line as a dict ('ts', 'level', 'event', fields), or None when the
    line is not a log line.  Text values made of digits become ints, as in JSON."""
    line = line.rstrip("\r\n")
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            return None
        return d if isinstance(d, dict) else None
    m = _TEXT_LINE.match(line)
    if not m or not TS_RE.match(m.group(1)):
        return None
    d = {"ts": m.group(1), "level": m.group(2)}
    for key, val in _FIELD.findall(m.group(3)):
        if val.startswith('"') and len(val) >= 2:
            try:
                val = json.loads(val)
            except ValueError:
                val = val[1:-1]
        elif re.fullmatch(r"-?\d+", val):
            val = int(val)
        d[key] = val
    return d


# --- the ferry process -------------------------------------------------------

def _die_with_parent():
    """preexec_fn: ferry gets SIGKILL if the test runner dies (no stray daemons)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class FerryExited(Exception):
    pass


class Ferry:
    """One ferry process.

    Give either `config` (a dict written as YAML to tmp_path) or `args` (quick mode).
    Listen addresses written with port 0 ("127.0.0.1:0", "[::1]:0") are replaced by
    free ports at start; if ferry loses the race for such a port, it is started once
    more with new ports.  `addr(svc, i)` gives the address actually used.

    stderr is read by a thread; `logs()` are the parsed lines, `access_logs()` the
    close lines; `wait_log()` / `wait_access()` poll them with a deadline.
    """

    def __init__(self, tmp_path, engine, config=None, args=None, extra_args=(),
                 env=None, rlimit_nofile=None, name="ferry"):
        assert (config is None) != (args is None), "give config or args"
        self.tmp_path = Path(tmp_path)
        self.engine = engine
        self.template = config
        self.quick_args = args
        self.extra_args = list(extra_args)
        self.env = env
        self.rlimit_nofile = rlimit_nofile
        self.name = name
        self.proc = None
        self.rc = None
        self.killed = False          # we had to use SIGKILL
        self.stopped_by_test = False  # the test checked the exit itself
        self._raw = []               # stderr lines (str)
        self._logs = []              # parsed log lines (dicts)
        self._cond = threading.Condition()
        self._threads = []
        self.listen = []             # per service: list of (host, port)
        self.config_path = None

    # -- start ----------------------------------------------------------------

    def _materialize(self):
        """Picks ports for ':0' listeners and builds the command line."""
        def fill(text):
            host, port = parse_addr(text)
            if port == 0:
                port = free_port(host)
            return host, port

        if self.template is not None:
            cfg = json.loads(json.dumps(self.template))  # deep copy
            self.listen = []
            for svc in cfg.get("services", []):
                addrs = [fill(a) for a in svc.get("listen", [])]
                svc["listen"] = [fmt_addr(h, p) for h, p in addrs]
                self.listen.append(addrs)
            self.config_path = self.tmp_path / f"{self.name}.yaml"
            self.config_path.write_text(to_yaml(cfg) + "\n")
            self.config = cfg
            cmd = [FERRY_BIN, "-c", str(self.config_path)]
        else:
            args = list(self.quick_args)
            addrs = []
            for i, a in enumerate(args[:-1]):
                if a == "--listen":
                    h, p = fill(args[i + 1])
                    args[i + 1] = fmt_addr(h, p)
                    addrs.append((h, p))
            self.listen = [addrs]
            cmd = [FERRY_BIN] + args
        return cmd + ["--engine", self.engine] + self.extra_args

    def _preexec(self):
        _die_with_parent()
        if self.rlimit_nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (self.rlimit_nofile, self.rlimit_nofile))

    def _reader(self, stream, is_stderr):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._raw.append(line if is_stderr else "stdout: " + line)
                if is_stderr:
                    d = parse_log_line(line)
                    if d is not None:
                        self._logs.append(d)
                self._cond.notify_all()
        stream.close()

    def _spawn(self, cmd):
        self._raw, self._logs = [], []
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=self.tmp_path,
                                     preexec_fn=self._preexec)
        self.pid = self.proc.pid
        self._threads = [threading.Thread(target=self._reader, args=(s, e), daemon=True)
                         for s, e in ((self.proc.stderr, True), (self.proc.stdout, False))]
        for t in self._threads:
            t.start()

    def start(self, ready_timeout=None):
        for attempt in (1, 2):
            self._spawn(self._materialize())
            try:
                self.wait_ready(ready_timeout or T(10))
                return self
            except FerryExited:
                text = self.stderr().lower()
                race = "in use" in text or "eaddrinuse" in text
                if attempt == 1 and race and self._auto_ports():
                    continue
                self.stopped_by_test = True  # the caller gets the exception
                raise
        return self

    def _auto_ports(self):
        if self.template is not None:
            return any(parse_addr(a)[1] == 0 for s in self.template.get("services", [])
                       for a in s.get("listen", []))
        return any(a.endswith(":0") for a in self.quick_args)

    def wait_ready(self, timeout):
        def ready():
            return any("event=ready" in l or '"event":"ready"' in l.replace(" ", "")
                       for l in self._raw)
        dl = Deadline(timeout)
        with self._cond:
            while not ready():
                if self.proc.poll() is not None:
                    # Let the reader finish so the message is complete.
                    self._cond.wait(0.2)
                    if not ready():
                        self._join_readers()
                        self.rc = self.proc.returncode
                        raise FerryExited(f"ferry exited with {self.rc} before ready:\n"
                                          + self.stderr())
                if dl.expired():
                    raise AssertionError(f"ferry not ready after {timeout}s:\n"
                                         + self.stderr())
                self._cond.wait(min(0.1, dl.left()))

    # -- addresses ------------------------------------------------------------

    def addr(self, svc=0, i=0):
        """(host, port) of listener `i` of service `svc` (order of the config)."""
        return self.listen[svc][i]

    def addr_text(self, svc=0, i=0):
        return fmt_addr(*self.addr(svc, i))

    # -- logs -----------------------------------------------------------------

    def stderr(self):
        with self._cond:
            return "\n".join(self._raw)

    def lines(self):
        with self._cond:
            return list(self._raw)

    def logs(self, event=None):
        with self._cond:
            return [d for d in self._logs if event is None or d.get("event") == event]

    def access_logs(self):
        return self.logs("close")

    def wait_log(self, pred, timeout=None, what="log line"):
        """Waits until `pred(list of parsed lines)` is truthy and returns its value."""
        timeout = timeout or T(10)
        dl = Deadline(timeout)
        with self._cond:
            while True:
                v = pred(list(self._logs))
                if v:
                    return v
                if dl.expired():
                    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; "
                                         f"ferry stderr:\n{self.stderr_tail()}")
                self._cond.wait(min(0.1, dl.left()))

    def wait_event(self, event, count=1, timeout=None, where=None):
        """Waits for `count` lines with event=`event` (and matching `where`)."""
        def pred(logs):
            found = [d for d in logs if d.get("event") == event and (where is None or where(d))]
            return found if len(found) >= count else None
        return self.wait_log(pred, timeout, f"{count} event={event} line(s)")

    def wait_access(self, count=1, timeout=None, where=None):
        return self.wait_event("close", count, timeout, where)

    def stderr_tail(self, n=40):
        with self._cond:
            return "\n".join(self._raw[-n:])

    # -- process --------------------------------------------------------------

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=None):
        """Waits for the process to exit and returns its exit status."""
        timeout = timeout or T(10)
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ferry still running {timeout:.1f}s later:\n"
                                 + self.stderr_tail()) from None
        self._join_readers()
        self.stopped_by_test = True
        return self.rc

    def stop(self, sig=signal.SIGTERM, timeout=None, expect_rc=0):
        """Signals ferry, waits for it to exit, and checks the exit status and that
        nothing in stderr came from a sanitizer."""
        self.send_signal(sig)
        rc = self.wait_exit(timeout)
        if expect_rc is not None:
            assert rc == expect_rc, f"ferry exited with {rc}, expected {expect_rc}:\n" \
                                    + self.stderr_tail()
        self.check_sanitizer()
        return rc

    def _join_readers(self):
        for t in self._threads:
            t.join(T(5))

    def check_sanitizer(self):
        text = self.stderr()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer output in ferry's stderr:\n{text[-6000:]}"

    def teardown(self):
        """Ends the process if the test did not; returns a list of problems."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            # Graceful first; open connections may hold it (shutdown_timeout), so a
            # second signal follows, and SIGKILL as a last resort.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T(2))
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(T(5))
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    self.killed = True
                    problems.append("ferry did not exit after two SIGTERMs (killed)")
            self._join_readers()
            if not self.killed and self.proc.returncode != 0:
                problems.append(f"ferry exited with {self.proc.returncode} at teardown")
        elif not self.stopped_by_test and self.proc.returncode != 0:
            self._join_readers()
            problems.append(f"ferry exited on its own with {self.proc.returncode} "
                            "during the test")
        text = self.stderr()
        if any(m in text for m in SANITIZER_MARKERS):
            problems.append("sanitizer output in ferry's stderr")
        if problems:
            problems.append("ferry stderr (tail):\n" + "\n".join(self._raw[-60:]))
        return problems

    # -- /proc ----------------------------------------------------------------

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """User + system CPU time used by ferry so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def run_ferry(args, timeout=None, cwd=None):
    """Runs ferry to completion (for -t, -h, -V and start-up errors)."""
    try:
        return subprocess.run([FERRY_BIN] + list(args), capture_output=True, text=True,
                              timeout=timeout or T(10), cwd=cwd, stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"ferry {' '.join(args)} did not exit within {e.timeout}s "
                             f"(stderr: {e.stderr!r})") from None


# --- data --------------------------------------------------------------------

def payload(n, seed=0):
    """`n` deterministic pseudo-random bytes (fast: SHA-256 counter blocks, repeated)."""
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(2048))
    # 64 KiB of hash output, rotated per repetition so the stream never repeats
    # with a short period; any lost, duplicated or reordered chunk changes the digest.
    reps, rest = divmod(n, len(block))
    parts = []
    for r in range(reps):
        k = (r * 97) % len(block)
        parts.append(block[k:] + block[:k])
    parts.append(block[:rest])
    return b"".join(parts)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --- backend servers -----------------------------------------------------------

class Server:
    """A TCP server on loopback that runs `handler(conn, server)` in a thread for every
    accepted connection.  `results` is a queue handlers put records on; `active` and
    `accepted` count connections.  close() stops accepting (later connects are refused)
    and closes every open connection."""

    def __init__(self, handler, host="127.0.0.1", name="", backlog=1024, conn_timeout=None):
        self.handler = handler
        self.name = name
        self.sock = socket.socket(_family(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.addr = fmt_addr(host, self.port)
        self.conn_timeout = conn_timeout or T(60)
        self.results = queue.Queue()
        self.errors = []
        self.lock = threading.Lock()
        self.conns = set()
        self.accepted = 0
        self.active = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            conn.settimeout(self.conn_timeout)
            with self.lock:
                self.accepted += 1
                self.active += 1
                self.conns.add(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn, self)
        except (OSError, socket.timeout) as e:
            if not self.closed:
                self.errors.append(e)
        finally:
            with self.lock:
                self.active -= 1
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
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
        self.thread.join(T(5))

    def result(self, timeout=None):
        """The next record a handler put on `results` (fails on timeout)."""
        timeout = timeout or T(30)
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"backend {self.name or self.addr}: no result within "
                                 f"{timeout:.0f}s (errors: {self.errors})") from None


def read_to_eof(conn, hasher=None, chunk=262144):
    """Reads until EOF; returns the byte count (feeds `hasher` when given)."""
    n = 0
    while True:
        data = conn.recv(chunk)
        if not data:
            return n
        n += len(data)
        if hasher:
            hasher.update(data)


def echo_handler(conn, srv):
    """Sends back every byte; passes the client's FIN on after the last one."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def tag_handler(conn, srv):
    """Replies with the server's name and a newline, then holds the connection until
    the client closes it (so tests can keep load on a backend)."""
    conn.sendall(srv.name.encode() + b"\n")
    try:
        read_to_eof(conn)
    except OSError:
        pass


def make_duplex_handler(send_data, fin_first=False):
    """A handler that sends `send_data` while reading everything the client sends.
    fin_first=False: its own FIN goes out only after the client's EOF (the client
    finishes first); True: FIN right after its data (the backend finishes first).
    Puts {'received', 'sha256', 'sent'} on results."""
    def handler(conn, srv):
        hasher = hashlib.sha256()
        got_eof = threading.Event()
        errors = []

        def sender():
            try:
                conn.sendall(send_data)
                if not fin_first:
                    got_eof.wait(srv.conn_timeout)
                conn.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        n = read_to_eof(conn, hasher)
        got_eof.set()
        t.join(srv.conn_timeout)
        srv.results.put({"received": n, "sha256": hasher.hexdigest(), "sent": len(send_data),
                         "errors": errors})
    return handler


def make_sink_handler(rate_schedule=None):
    """Reads to EOF and records byte count and sha256.  `rate_schedule(elapsed)` gives
    the bytes/s to read at (None: as fast as possible) to make a slow reader."""
    def handler(conn, srv):
        hasher = hashlib.sha256()
        n = 0
        start = time.monotonic()
        while True:
            rate = rate_schedule(time.monotonic() - start) if rate_schedule else None
            data = conn.recv(16384 if rate else 262144)
            if not data:
                break
            n += len(data)
            hasher.update(data)
            if rate:
                # Sleep until reading `n` bytes is on schedule for this rate.
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(min(ahead, 0.05))
        srv.results.put({"received": n, "sha256": hasher.hexdigest()})
    return handler


def make_watch_handler(greeting=b""):
    """Sends `greeting`, then reads until the connection ends and records how:
    {'how': 'eof'|'reset', 'bytes': n, 'at': monotonic time}."""
    def handler(conn, srv):
        if greeting:
            conn.sendall(greeting)
        srv.results.put({"event": "connected", "at": time.monotonic()})
        n = 0
        how = "eof"
        try:
            n = read_to_eof(conn)
        except ConnectionResetError:
            how = "reset"
        srv.results.put({"event": "end", "how": how, "bytes": n, "at": time.monotonic()})
    return handler


def set_linger_zero(sock):
    """close() will then send a RST instead of a FIN."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def make_reset_handler(greeting=b"hello\n", wait_for=b""):
    """Sends `greeting`, reads `wait_for` bytes, then resets the connection."""
    def handler(conn, srv):
        if greeting:
            conn.sendall(greeting)
        if wait_for:
            recv_exact(conn, len(wait_for))
        srv.results.put({"event": "resetting", "at": time.monotonic()})
        set_linger_zero(conn)
    return handler


class Blackhole:
    """A listening socket whose accept queue is full, so the kernel drops further
    SYNs: a connect to it neither succeeds nor is refused, it times out."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(_family(host), socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.addr = fmt_addr(host, self.port)
        self.fillers = []
        for _ in range(16):
            c = socket.socket(_family(host), socket.SOCK_STREAM)
            c.settimeout(0.3)
            try:
                c.connect((host, self.port))
            except OSError:  # timed out: the queue is full now
                c.close()
                return
            self.fillers.append(c)
        raise RuntimeError("could not fill the blackhole's accept queue")

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


# --- clients -----------------------------------------------------------------

def connect(addr, source=None, timeout=None):
    """A client socket connected to `addr` ((host, port)), optionally bound to the
    source address `source` (e.g. '127.0.0.2') first."""
    s = socket.socket(_family(addr[0]), socket.SOCK_STREAM)
    try:
        if source:
            s.bind((source, 0))
        s.settimeout(timeout or T(10))
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(min(n - len(buf), 262144))
        if not data:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def recv_line(sock):
    """Reads up to and including b'\\n' (one byte at a time: for short replies)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise AssertionError(f"EOF before end of line (got {bytes(buf)!r})")
        buf += b
    return buf.decode().rstrip("\n")


def recv_all(sock):
    buf = bytearray()
    while True:
        data = sock.recv(262144)
        if not data:
            return bytes(buf)
        buf += data


def wait_closed(sock, timeout=None):
    """Waits for the peer to end the connection without sending data; returns
    'eof' or 'reset'.  Fails if data arrives or nothing happens in time."""
    timeout = timeout or T(5)
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        raise AssertionError(f"connection still open after {timeout:.1f}s") from None
    assert data == b"", f"expected the connection to be closed, got data {data[:64]!r}"
    return "eof"


def ask_tag(addr, source=None, hold=False):
    """Connects, reads the backend's name from a tagging backend; closes unless
    `hold`, in which case (name, socket) is returned."""
    s = connect(addr, source)
    try:
        name = recv_line(s)
    except BaseException:
        s.close()
        raise
    if hold:
        return name, s
    s.close()
    return name


def echo_roundtrip(addr, data=b"ping\n", source=None):
    """Connects, sends `data`, half-closes, and returns everything read back."""
    with connect(addr, source) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def duplex_client(sock, send_data, fin_after_eof=False, hasher=None):
    """Sends `send_data` from a thread while reading to EOF; returns (bytes received,
    sha256 hex of them).  The client's FIN follows its data at once, or, with
    fin_after_eof, only after the peer's EOF arrived (so the peer finishes first)."""
    hasher = hasher or hashlib.sha256()
    errors = []
    got_eof = threading.Event()

    def sender():
        try:
            sock.sendall(send_data)
            if fin_after_eof:
                got_eof.wait(T(60))
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        n = read_to_eof(sock, hasher)
    finally:
        got_eof.set()
    t.join(T(60))
    assert not errors, f"client send failed: {errors}"
    return n, hasher.hexdigest()
