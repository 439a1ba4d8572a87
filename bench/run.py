#!/usr/bin/env python3
"""run.py - `make bench`: ferry against HAProxy, nginx stream, socat and direct.

One run measures every peer with the same backends and load tool (bench/load):

  peers      ferry (each engine in `ferry -V`), HAProxy without and with splice,
             nginx stream, socat (fork mode), and direct (no proxy)
  workloads  bulk upload/download with 1 and 8 streams (GB/s, proxy CPU s/GB),
             64-byte ping-pong latency (p50/p99/p99.9), new connections per
             second (proxy CPU ms per 1,000 connections), RSS per idle
             connection with 9,000 open

Every proxy runs pinned to CPU 0, every backend and client to CPU 1 (run.py
itself too).  All proxies start once and stay up; each listens on three ports
(upload -> sink, download -> source, echo -> echo).  Workloads run one after the
other; within a workload the peers are interleaved, round after round, each
round in a rotated order, and the median of the rounds is reported, so the
ratios come from one run under the same conditions.

Output: a table on stdout, docs/benchmarks.md, docs/benchmarks.json and
docs/bench.png (gnuplot).  Python 3 standard library only.

    bench/run.py [--seconds 2] [--rounds 3] [--idle 9000] [--wait-quiet 30]
                 [--quick] [--keep] [--load build/bench/load]

Every process it starts is stopped at the end, also on error or Ctrl-C (each
runs in its own process group, stopped by that group's id, and gets SIGKILL
from the kernel should run.py itself die).
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOAD = os.path.join(ROOT, "build", "bench", "load")  # built by `make bench`; see --load
FERRY = os.path.join(ROOT, "ferry")
DOCS = os.path.join(ROOT, "docs")

PROXY_CPU = "0"     # every proxy
LOAD_CPU = "1"      # backends, load clients and run.py itself
MAXCONN = 9300      # per proxy: the 9,000 idle connections plus margin
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_STREAM_SO = "/usr/lib/nginx/modules/ngx_stream_module.so"

# Workloads: name -> (kind, parameters).  Bulk "up" is client -> backend.
BULK = [("up1", "up", 1), ("up8", "up", 8), ("down1", "down", 1), ("down8", "down", 8)]
RR_SIZE = 64
CONN_CONC = 32          # connections in flight in the connection-rate client
CONN_SRC = "127.0.0.2"  # connection-rate clients use 127.0.0.2 .. 127.0.0.9
CONN_NSRC = 8


# ----------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    """In the child before exec: die with run.py (PR_SET_PDEATHSIG = 1)."""
    _libc.prctl(1, signal.SIGKILL)


class Procs:
    """Every long-running process run.py starts, to stop them all at the end."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.all = []

    def start(self, name, argv, cpu, env=None):
        """Start argv pinned to `cpu`, output to LOGDIR/name.log."""
        log = open(os.path.join(self.logdir, name + ".log"), "ab")
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, preexec_fn=_child_setup)
        log.close()
        p.name, p.logfile = name, os.path.join(self.logdir, name + ".log")
        self.all.append(p)
        return p

    def stop(self, p, grace=3.0):
        """SIGTERM p's process group (p and its forks), then SIGKILL leftovers.

        Returns False when p was still running `grace` seconds after SIGTERM."""
        graceful = True
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                graceful = False
        try:  # forked children (socat) may outlive their parent
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            p.wait(timeout=5)
        if p in self.all:
            self.all.remove(p)
        return graceful

    def stop_all(self):
        for p in list(self.all):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                print(f"bench: could not stop {p.name} (pid {p.pid}): {e}", file=sys.stderr)


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------- /proc

def descendants(roots):
    """PIDs of roots and all their descendants, from /proc/*/stat."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                parent[int(d)] = int(st[st.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    out, todo = set(), [r for r in roots if r in parent]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(c for c, pp in parent.items() if pp == pid)
    return out


def cpu_seconds(roots):
    """utime+stime (+ reaped children's cutime+cstime) of the process trees."""
    ticks = 0
    for pid in descendants(roots):
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return ticks / CLK_TCK


def all_proc_ticks():
    """{pid: (name, utime+stime+cutime+cstime ticks)} for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                name = st[st.index("(") + 1:st.rindex(")")]
                fields = st[st.rindex(")") + 2:].split()
                out[int(d)] = (name, sum(int(x) for x in fields[11:15]))
            except (OSError, ValueError):
                pass
    return out


def rss_kib(roots):
    total = 0
    for pid in descendants(roots):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def stat_snap():
    """Per-CPU (total, idle+iowait, steal) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                w = line.split()
                v = [int(x) for x in w[1:]]
                out[w[0]] = (sum(v), v[3] + v[4], v[7] if len(v) > 7 else 0)
    return out


def busy_between(a, b):
    """Busy share of each CPU between two stat_snap()s."""
    return {c: 1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0]) for c in b}


def cpu_busy(interval=1.0):
    """Per-CPU busy share over the next `interval` seconds."""
    a = stat_snap()
    time.sleep(interval)
    return busy_between(a, stat_snap())


def tw_count():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()
                return int(w[w.index("tw") + 1])
    return 0


# ------------------------------------------------------------------ helpers

def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_ports(count):
    """`count` consecutive free ports below the ephemeral range (32768)."""
    for base in range(18000, 32000, 200):
        if all(port_free(base + i) for i in range(count)):
            return base
    sys.exit("bench: no block of free ports found below 32000")


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def parse_kv(line):
    """'bulk a=1 b="x y"' -> {'a': '1', 'b': 'x y'} (numbers as float)."""
    out = {}
    for tok in shlex.split(line)[1:]:
        k, _, v = tok.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def set_load(path):
    global LOAD
    LOAD = os.path.abspath(path)


def run_load(args, timeout):
    """Run a load client on LOAD_CPU; return its key=value result or {'error'}."""
    cmd = ["taskset", "-c", LOAD_CPU, LOAD] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"load {args[0]} timed out after {timeout:.0f} s"}
    lines = r.stdout.strip().splitlines()
    res = parse_kv(lines[-1]) if lines else {}
    if r.returncode != 0 and "error" not in res:
        res["error"] = (r.stderr.strip() or f"exit {r.returncode}")[-300:]
    return res


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# -------------------------------------------------------------------- peers

class Peer:
    """A proxy under test (or direct): its ports, processes and config text."""

    def __init__(self, name, kind, engine=None, splice=False):
        self.name, self.kind, self.engine, self.splice = name, kind, engine, splice
        self.ports = {}       # "up"/"down"/"echo" -> listening port
        self.procs = []       # processes started for this peer
        self.config = ""      # the exact configuration, for the doc
        self.config_lang = ""
        self.argv_text = ""   # how it was started, for the doc
        self.events = []      # crashes, restarts, errors: reported in the doc

    @property
    def is_proxy(self):
        return self.kind != "direct"

    def roots(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def alive(self):
        return all(p.poll() is None for p in self.procs)


def ferry_config(peer, be):
    return f"""# ferry bench configuration; the engine is chosen on the command line
workers: 1
max_connections: {MAXCONN}
buffer_size: 16KiB
shutdown_timeout: 1s
log:
  access: false
services:
  - name: up
    listen: ["127.0.0.1:{peer.ports['up']}"]
    backends:
      - address: 127.0.0.1:{be['sink']}
  - name: down
    listen: ["127.0.0.1:{peer.ports['down']}"]
    backends:
      - address: 127.0.0.1:{be['source']}
  - name: echo
    listen: ["127.0.0.1:{peer.ports['echo']}"]
    backends:
      - address: 127.0.0.1:{be['echo']}
"""


def haproxy_config(peer, be):
    sp = peer.splice
    g = ["global", "    nbthread 1", f"    maxconn {MAXCONN}"]
    d = ["defaults", "    mode tcp", f"    maxconn {MAXCONN}", "    timeout connect 5s",
         "    timeout client 5m", "    timeout server 5m"]
    if sp:  # IO.md: splice-auto made no splice calls here; these two do
        g.append("    maxpipes 256")
        d += ["    option splice-request", "    option splice-response"]
    head = f"# HAProxy bench configuration ({'with' if sp else 'without'} splice)"
    listens = []
    for name, port, server, bport in (("up", peer.ports["up"], "sink", be["sink"]),
                                      ("down", peer.ports["down"], "source", be["source"]),
                                      ("echo", peer.ports["echo"], "echo", be["echo"])):
        listens.append(f"listen {name}\n    bind 127.0.0.1:{port}\n    server {server} 127.0.0.1:{bport}\n")
    return "\n".join([head] + g + [""] + d + [""]) + "\n" + "\n".join(listens)


def nginx_config(peer, be, prefix):
    return f"""# nginx bench configuration (stream module, own prefix {prefix})
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
load_module {NGINX_STREAM_SO};

events {{
    worker_connections 19000;
}}

stream {{
    server {{ listen 127.0.0.1:{peer.ports['up']};   proxy_pass 127.0.0.1:{be['sink']}; }}
    server {{ listen 127.0.0.1:{peer.ports['down']}; proxy_pass 127.0.0.1:{be['source']}; }}
    server {{ listen 127.0.0.1:{peer.ports['echo']}; proxy_pass 127.0.0.1:{be['echo']}; }}
}}
"""


def socat_argv(port, backend):
    return ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
            f"TCP:127.0.0.1:{backend}"]


def start_peer(peer, be, procs, tmp):
    """Start a peer's processes (CPU 0) and wait until it accepts; '' or error."""
    deadline = time.time() + 10
    if peer.kind == "ferry":
        cfg = os.path.join(tmp, f"{peer.name}.yaml")
        peer.config, peer.config_lang = ferry_config(peer, be), "yaml"
        with open(cfg, "w") as f:
            f.write(peer.config)
        argv = [FERRY, "-c", cfg, "--engine", peer.engine]
        peer.argv_text = f"taskset -c 0 ./ferry -c ferry.yaml --engine {peer.engine}"
        p = procs.start(peer.name, argv, PROXY_CPU)
        peer.procs = [p]
        while time.time() < deadline:  # ferry says when every listener is bound
            if "event=ready" in log_tail(p.logfile, 50):
                break
            if p.poll() is not None:
                return f"exited with status {p.returncode}: {log_tail(p.logfile)}"
            time.sleep(0.05)
    elif peer.kind == "haproxy":
        cfg = os.path.join(tmp, f"{peer.name}.cfg")
        peer.config, peer.config_lang = haproxy_config(peer, be), "haproxy"
        with open(cfg, "w") as f:
            f.write(peer.config)
        peer.argv_text = "taskset -c 0 haproxy -db -f haproxy.cfg"
        peer.procs = [procs.start(peer.name, ["haproxy", "-db", "-f", cfg], PROXY_CPU)]
    elif peer.kind == "nginx":
        prefix = os.path.join(tmp, "nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        cfg = os.path.join(prefix, "nginx.conf")
        peer.config, peer.config_lang = nginx_config(peer, be, prefix), "nginx"
        with open(cfg, "w") as f:
            f.write(peer.config)
        peer.argv_text = "taskset -c 0 nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/nginx-error.log"
        peer.procs = [procs.start(peer.name, ["nginx", "-p", prefix, "-c", cfg, "-e",
                                              os.path.join(prefix, "nginx-error.log")], PROXY_CPU)]
    elif peer.kind == "socat":
        peer.procs, lines = [], []
        for role, backend in (("up", be["sink"]), ("down", be["source"]), ("echo", be["echo"])):
            argv = socat_argv(peer.ports[role], backend)
            lines.append("taskset -c 0 " + " ".join(argv))
            peer.procs.append(procs.start(f"{peer.name}-{role}", argv, PROXY_CPU))
        peer.config, peer.config_lang = "\n".join(lines) + "\n", "sh"
        peer.argv_text = "three socat processes, one per port (above)"
    for port in peer.ports.values():
        if not wait_port(port, deadline):
            return f"port {port} not accepting: " + "".join(log_tail(p.logfile) for p in peer.procs)
    for p in peer.procs:
        if p.poll() is not None:
            return f"exited with status {p.returncode}: {log_tail(p.logfile)}"
    return ""


def stop_peer(peer, procs):
    for p in peer.procs:
        procs.stop(p)
    peer.procs = []


def sanity_check(peer):
    """1 MiB through the echo port must come back byte for byte."""
    data = os.urandom(1 << 20)
    try:
        with socket.create_connection(("127.0.0.1", peer.ports["echo"]), timeout=5) as s:
            s.sendall(data)
            got = bytearray()
            while len(got) < len(data):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
        if bytes(got) != data:
            return f"echo returned {len(got)} bytes, {'different' if len(got) == len(data) else 'short'}"
        with socket.create_connection(("127.0.0.1", peer.ports["down"]), timeout=5) as s:
            if not s.recv(1):
                return "download port gave no data"
    except OSError as e:
        return f"echo check failed: {e}"
    return ""


# ---------------------------------------------------------------- workloads

class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = tempfile.mkdtemp(prefix="ferry-bench-")
        self.procs = Procs(self.tmp)
        self.samples = {}   # workload -> peer -> [result dict]
        self.notes = []     # things the reader must know (skips, crashes, busy CPUs)
        self.peers = []
        self.backends = {}
        self.other_cpu = {}  # process name -> CPU s used by others during measured runs
        with open("/proc/sys/net/ipv4/tcp_max_tw_buckets") as f:
            self.tw_max = int(f.read())

    def note(self, msg):
        print(f"bench: {msg}", file=sys.stderr)
        self.notes.append(msg)

    # -- set-up ---------------------------------------------------------
    def setup(self):
        # `ferry -V`: "engines: epoll io_uring", then "  NAME: usable" or why not.
        engines, state = [], {}
        for line in subprocess.run([FERRY, "-V"], capture_output=True, text=True).stdout.splitlines():
            key, _, val = line.partition(":")
            if key == "engines":
                engines = [e for e in val.replace(",", " ").split() if e]
            elif line.startswith(" ") and key.strip() in engines:
                state[key.strip()] = val.strip()
        for e in list(engines):
            if e in state and not state[e].startswith("usable"):
                self.note(f"ferry's {e} engine is compiled in but not usable here ({state[e]}): skipped")
                engines.remove(e)
        peers = [Peer(f"ferry-{e}", "ferry", engine=e) for e in ("epoll", "io_uring") if e in engines]
        if "io_uring" not in engines and "io_uring" not in state:
            self.note("ferry has no io_uring engine in this build (`ferry -V`: engines: "
                      f"{' '.join(engines)}): io_uring skipped")
        if shutil.which("haproxy"):
            peers += [Peer("haproxy", "haproxy"), Peer("haproxy-splice", "haproxy", splice=True)]
        else:
            self.note("haproxy not installed: skipped")
        if shutil.which("nginx") and os.path.exists(NGINX_STREAM_SO):
            peers.append(Peer("nginx", "nginx"))
        else:
            self.note("nginx or libnginx-mod-stream not installed: skipped")
        if shutil.which("socat"):
            peers.append(Peer("socat", "socat"))
        else:
            self.note("socat not installed: skipped")
        direct, xcpu = Peer("direct", "direct"), Peer("direct-xcpu", "direct")
        peers += [direct, xcpu]

        base = pick_ports(10 + 3 * len(peers))
        self.backends = {"sink": base, "source": base + 1, "echo": base + 2, "echo_x": base + 3}
        for i, p in enumerate(peers):
            if p.is_proxy:
                p.ports = {"up": base + 10 + 3 * i, "down": base + 11 + 3 * i, "echo": base + 12 + 3 * i}
        direct.ports = {"up": self.backends["sink"], "down": self.backends["source"],
                        "echo": self.backends["echo"]}
        # The cross-CPU floor: the same echo server, but on the proxies' CPU.
        xcpu.ports = {"echo": self.backends["echo_x"]}
        self.peers = peers

        be = self.backends
        for role, port, cpu in (("sink", be["sink"], LOAD_CPU), ("source", be["source"], LOAD_CPU),
                                ("echo", be["echo"], LOAD_CPU), ("echo", be["echo_x"], PROXY_CPU)):
            self.procs.start(f"backend-{role}-{port}", [LOAD, role, "-l", f"127.0.0.1:{port}"], cpu)
        for port in be.values():
            if not wait_port(port, time.time() + 5):
                raise RuntimeError(f"backend on port {port} did not start")
        for p in [p for p in peers if p.is_proxy]:
            err = start_peer(p, be, self.procs, self.tmp) or sanity_check(p)
            if err:
                self.note(f"{p.name} failed to start or check, skipped: {err.strip()}")
                stop_peer(p, self.procs)
                self.peers.remove(p)
        err = sanity_check(direct)
        if err:
            raise RuntimeError("the backends fail the echo check: " + err)

    def ensure_alive(self, peer, where):
        """Report a dead proxy precisely and restart it so the run can go on."""
        if not peer.is_proxy or peer.alive():
            return True
        codes = [p.returncode for p in peer.procs]
        tail = "".join(log_tail(p.logfile) for p in peer.procs).strip()
        self.note(f"{peer.name} DIED during {where} (exit status {codes}); log tail: {tail[-500:]}")
        peer.events.append(f"died during {where}, exit {codes}")
        stop_peer(peer, self.procs)
        err = start_peer(peer, self.backends, self.procs, self.tmp)
        if err:
            self.note(f"{peer.name} could not be restarted: {err}")
            return False
        self.note(f"{peer.name} restarted")
        return True

    def record(self, wl, peer, res, where, rnd):
        res["round"] = rnd + 1
        if "error" in res:
            self.note(f"{peer.name} {where}: {res['error']}")
            peer.events.append(f"{where}: {res['error']}")
        self.samples.setdefault(wl, {}).setdefault(peer.name, []).append(res)

    def rounds(self, peers):
        """Yield (round, peer), interleaved: every round a rotated order."""
        for r in range(self.a.rounds):
            k = r % len(peers)
            for p in peers[k:] + peers[:k]:
                yield r, p

    # -- workloads ------------------------------------------------------
    def bulk(self, wl, direction, streams):
        a = self.a
        peers = [p for p in self.peers if "up" in p.ports]
        for r, p in self.rounds(peers):
            where = f"{wl} round {r + 1}"
            if not self.ensure_alive(p, where):
                continue
            c0, st0, w0, pt0 = cpu_seconds(p.roots()), stat_snap(), time.time(), all_proc_ticks()
            res = run_load(["bulk", "-c", f"127.0.0.1:{p.ports[direction]}", "-d", direction,
                            "-n", str(streams), "-t", str(a.seconds), "-w", str(a.warmup)],
                           timeout=a.seconds + a.warmup + 20)
            time.sleep(0.2)  # let the proxy finish the close before reading its CPU
            if p.is_proxy and "bytes_total" in res:
                res["cpu_s"] = cpu_seconds(p.roots()) - c0
                res["cpu_s_per_GB"] = res["cpu_s"] / (res["bytes_total"] / 1e9)
            self.foreign(res, p, st0, w0, pt0)
            self.record(wl, p, res, where, r)
            self.progress(wl, r, p, res.get("GBps"), "GB/s")

    def latency(self):
        a = self.a
        for r, p in self.rounds(self.peers):
            where = f"rr round {r + 1}"
            if not self.ensure_alive(p, where):
                continue
            res = run_load(["rr", "-c", f"127.0.0.1:{p.ports['echo']}", "-s", str(RR_SIZE),
                            "-t", str(a.seconds), "-w", str(a.warmup)],
                           timeout=a.seconds + a.warmup + 20)
            self.record("rr", p, res, where, r)
            self.progress("rr", r, p, res.get("p50_us"), "us p50")

    def connrate(self):
        a = self.a
        peers = [p for p in self.peers if "up" in p.ports]
        for r, p in self.rounds(peers):
            where = f"connrate round {r + 1}"
            if not self.ensure_alive(p, where):
                continue
            # Same start for everyone: a full TIME_WAIT table (see the doc).
            fill = run_load(["twfill", "-n", str(self.tw_max), "-t", "30"], timeout=40)
            tw = tw_count()
            c0, st0, w0, pt0 = cpu_seconds(p.roots()), stat_snap(), time.time(), all_proc_ticks()
            res = run_load(["connrate", "-c", f"127.0.0.1:{p.ports['echo']}", "-n", str(CONN_CONC),
                            "-t", str(a.seconds), "-w", str(a.warmup), "-s", "64",
                            "-S", CONN_SRC, "-N", str(CONN_NSRC)],
                           timeout=a.seconds + a.warmup + 20)
            time.sleep(0.2)
            res["tw_before"] = tw
            res["twfill_made"] = fill.get("made")
            if p.is_proxy and res.get("conns_total"):
                res["cpu_s"] = cpu_seconds(p.roots()) - c0
                res["cpu_ms_per_1k"] = res["cpu_s"] * 1000 / (res["conns_total"] / 1000)
            self.foreign(res, p, st0, w0, pt0)
            self.record("connrate", p, res, where, r)
            self.progress("connrate", r, p, res.get("rate"), "conn/s")

    def idle_memory(self):
        n = self.a.idle
        for p in [p for p in self.peers if p.is_proxy and p.kind != "socat"]:
            where = "idle memory"
            if not self.ensure_alive(p, where):
                continue
            time.sleep(0.3)
            before = rss_kib(p.roots())
            cl = subprocess.Popen(["taskset", "-c", LOAD_CPU, LOAD, "idle", "-c",
                                   f"127.0.0.1:{p.ports['echo']}", "-n", str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True, preexec_fn=_child_setup)
            res = {}
            try:
                ready, _, _ = select.select([cl.stdout], [], [], 120)
                line = cl.stdout.readline() if ready else ""
                res = parse_kv(line) if line else {"error": "idle client gave no answer in 120 s"}
                if "error" not in res:
                    time.sleep(0.5)
                    after = rss_kib(p.roots())
                    res.update(rss_before_kib=before, rss_after_kib=after,
                               kib_per_conn=(after - before) / n, connections=n)
            finally:
                cl.stdin.close()
                try:
                    cl.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(cl.pid, signal.SIGKILL)
                    cl.wait()
            self.record("idle", p, res, where, 0)
            self.progress("idle", 0, p, res.get("kib_per_conn"), "KiB/conn")
            time.sleep(1.0)  # let the proxy close the 9,000 pairs before the next peer

    def foreign(self, res, p, st0, w0, pt0):
        """Record how busy both CPUs were, CPU 0's share not used by the proxy,
        and which other processes used CPU meanwhile (other sessions' tests,
        kernel threads): the run's noise, reported in the doc."""
        busy = busy_between(st0, stat_snap())
        res["cpu0_busy"], res["cpu1_busy"] = busy["cpu0"], busy["cpu1"]
        if "cpu_s" in res:
            res["cpu0_other"] = max(0.0, busy["cpu0"] - res["cpu_s"] / (time.time() - w0))
        ours = descendants([q.pid for q in self.procs.all] + [os.getpid()])
        for pid, (name, ticks) in all_proc_ticks().items():
            if pid not in ours:
                d = (ticks - pt0.get(pid, (name, 0))[1]) / CLK_TCK if pid in pt0 else 0
                if d > 0:
                    self.other_cpu[name] = self.other_cpu.get(name, 0.0) + d

    def progress(self, wl, r, p, value, unit):
        v = "ERROR" if value is None else (f"{value:.3f}" if value < 100 else f"{value:.0f}")
        print(f"  {wl:<8} round {r + 1}  {p.name:<15} {v} {unit}", file=sys.stderr, flush=True)

    # -- run --------------------------------------------------------------
    def run(self):
        t0 = time.time()
        busy = cpu_busy(1.0)
        # This machine may be shared: wait a little for other work to calm down.
        quiet_until = t0 + self.a.wait_quiet
        while max(busy.values()) > 0.10 and time.time() < quiet_until:
            print("bench: waiting for a quiet machine (CPU busy: " +
                  ", ".join(f"{c} {v:.0%}" for c, v in sorted(busy.items())) + ")",
                  file=sys.stderr, flush=True)
            busy = cpu_busy(2.0)
        self.busy_before = busy
        if max(busy.values()) > 0.10:
            self.note("the machine was not quiet at the start (CPU busy: " +
                      ", ".join(f"{c} {v:.0%}" for c, v in sorted(busy.items())) +
                      "); other work disturbs these numbers")
        if os.getpriority(os.PRIO_PROCESS, 0) != -20:
            self.note("could not raise the priority to nice -20 (not root): other work on the "
                      "machine disturbs the numbers more")
        self.setup()
        print("bench: peers: " + ", ".join(p.name for p in self.peers), file=sys.stderr)
        for wl, direction, streams in BULK:
            self.bulk(wl, direction, streams)
        self.latency()
        self.connrate()
        if self.a.idle:
            self.idle_memory()
        self.shutdown_peers()
        self.elapsed = time.time() - t0

    def shutdown_peers(self):
        """Stop every proxy with SIGTERM; report one that hangs or fails."""
        for p in [p for p in self.peers if p.is_proxy]:
            for proc in p.procs:
                t = time.time()
                if not self.procs.stop(proc, grace=5.0):
                    self.note(f"{p.name} did not exit within 5 s of SIGTERM (killed): "
                              + log_tail(proc.logfile, 3).strip())
                    p.events.append("hung on SIGTERM")
                elif p.kind == "ferry" and proc.returncode != 0:
                    self.note(f"{p.name} exited with status {proc.returncode} after SIGTERM "
                              f"({time.time() - t:.1f} s): " + log_tail(proc.logfile, 3).strip())
            p.procs = []


# ------------------------------------------------------------------ results

METRICS = [  # key, column title, workload, field, unit format
    ("up1", "up 1 GB/s", "up1", "GBps", "{:.2f}"),
    ("up8", "up 8 GB/s", "up8", "GBps", "{:.2f}"),
    ("down1", "down 1 GB/s", "down1", "GBps", "{:.2f}"),
    ("down8", "down 8 GB/s", "down8", "GBps", "{:.2f}"),
    ("cpu_up1", "s/GB up 1", "up1", "cpu_s_per_GB", "{:.3f}"),
    ("cpu_up8", "s/GB up 8", "up8", "cpu_s_per_GB", "{:.3f}"),
    ("cpu_down1", "s/GB down 1", "down1", "cpu_s_per_GB", "{:.3f}"),
    ("cpu_down8", "s/GB down 8", "down8", "cpu_s_per_GB", "{:.3f}"),
    ("p50", "p50 us", "rr", "p50_us", "{:.1f}"),
    ("p99", "p99 us", "rr", "p99_us", "{:.1f}"),
    ("p999", "p99.9 us", "rr", "p999_us", "{:.1f}"),
    ("conn_s", "conn/s", "connrate", "rate", "{:.0f}"),
    ("cpu_ms_1k", "CPU ms/1k conn", "connrate", "cpu_ms_per_1k", "{:.1f}"),
    ("kib_idle", "KiB/idle conn", "idle", "kib_per_conn", "{:.2f}"),
    ("rss_base", "base RSS MiB", "idle", "rss_before_kib", "{:.1f}"),
]


def summarise(b):
    """Medians per peer and metric, plus min/max over the rounds."""
    med_ = {}
    spread = {}
    for p in b.peers:
        med_[p.name], spread[p.name] = {}, {}
        for key, _, wl, field, _ in METRICS:
            vals = [s.get(field) for s in b.samples.get(wl, {}).get(p.name, [])
                    if isinstance(s.get(field), (int, float))]
            if key == "rss_base":
                vals = [v / 1024 for v in vals]
            med_[p.name][key] = med(vals)
            spread[p.name][key] = [min(vals), max(vals)] if vals else None
    return med_, spread


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def by_round(b, peer, key):
    """{round: value} of one metric of one peer (metric keys as in METRICS)."""
    wl, field = next((w, f) for k, _, w, f, _ in METRICS if k == key)
    return {s["round"]: s[field] for s in b.samples.get(wl, {}).get(peer, [])
            if isinstance(s.get(field), (int, float))}


def targets(b, m):
    """The issue's targets: median ratio, PASS/MISS, and in how many rounds
    the same ratio, taken from the peers' runs of that round, passed."""
    out = []
    ferries = [p.name for p in b.peers if p.kind == "ferry"]
    hs = m.get("haproxy-splice")

    def add(engine, what, val, limit, ge, ref, key=None):
        ok = (lambda v: v >= limit) if ge else (lambda v: v <= limit)
        res = "n/a" if val is None else "PASS" if ok(val) else "MISS"
        rounds = ""
        if key and ref in m:  # paired per-round ratios
            mine, theirs = by_round(b, engine, key), by_round(b, ref, key)
            rs = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
            rounds = f"{sum(ok(x) for x in rs)}/{len(rs)}" if rs else ""
        out.append({"engine": engine, "target": what, "measured": val,
                    "limit": (">= " if ge else "<= ") + f"{limit:g}", "result": res, "against": ref,
                    "rounds_passing": rounds})

    for f in ferries:
        fm = m[f]
        for wl, title in (("up1", "bulk up, 1 stream"), ("down1", "bulk down, 1 stream"),
                          ("up8", "bulk up, 8 streams"), ("down8", "bulk down, 8 streams")):
            add(f, f"{title}: throughput / HAProxy-splice", ratio(fm[wl], hs and hs[wl]), 1.1, True,
                "haproxy-splice", wl)
            add(f, f"{title}: CPU s/GB / HAProxy-splice", ratio(fm["cpu_" + wl], hs and hs["cpu_" + wl]),
                0.8, False, "haproxy-splice", "cpu_" + wl)
        # Latency: against the HAProxy variant with the lower value (the stricter reading).
        for key, lim, title in (("p50", 0.9, "latency p50"), ("p99", 0.9, "latency p99"),
                                ("p999", 1.0, "latency p99.9")):
            cands = [(m[h][key], h) for h in ("haproxy", "haproxy-splice") if h in m and m[h][key]]
            best = min(cands) if cands else (None, "haproxy")
            add(f, f"{title} / HAProxy (best of both)", ratio(fm[key], best[0]), lim, False, best[1], key)
        peers = [p.name for p in b.peers if p.is_proxy and p.kind != "ferry"
                 and m[p.name]["conn_s"] is not None]
        bp = max(peers, key=lambda n: m[n]["conn_s"]) if peers else None
        add(f, "conn/s / best peer", ratio(fm["conn_s"], bp and m[bp]["conn_s"]), 1.1, True, bp, "conn_s")
        add(f, "CPU ms per 1k conn / best peer", ratio(fm["cpu_ms_1k"], bp and m[bp]["cpu_ms_1k"]),
            0.75, False, bp, "cpu_ms_1k")
        add(f, "RSS KiB per idle connection (absolute)", fm["kib_idle"], 1.5, False, "-")
    if "ferry-io_uring" in m and "ferry-epoll" in m:
        u, e = m["ferry-io_uring"], m["ferry-epoll"]
        for wl in ("up1", "up8", "down1", "down8", "conn_s"):
            add("ferry-io_uring", f"io_uring / epoll: {wl}", ratio(u[wl], e[wl]), 1.0, True, "ferry-epoll", wl)
        add("ferry-io_uring", "io_uring / epoll: latency p50", ratio(u["p50"], e["p50"]), 1.0, False,
            "ferry-epoll", "p50")
    else:
        out.append({"engine": "ferry-io_uring", "target": "io_uring no slower than epoll "
                    "(no io_uring engine in this build)",
                    "measured": None, "limit": "-", "result": "SKIP",
                    "against": "ferry-epoll", "rounds_passing": ""})
    return out


def text_table(b, m):
    cols = [("peer", 15)] + [(t, max(len(t), 7)) for _, t, _, _, _ in METRICS]
    head = "  ".join(f"{t:>{w}}" if i else f"{t:<{w}}" for i, (t, w) in enumerate(cols))
    lines = [head, "-" * len(head)]
    for p in b.peers:
        row = [f"{p.name:<15}"]
        for (key, t, _, _, f), (_, w) in zip(METRICS, cols[1:]):
            row.append(f"{fmt(m[p.name][key], f):>{w}}")
        lines.append("  ".join(row))
    return "\n".join(lines)


def md_table(b, m):
    head = "| peer | " + " | ".join(t for _, t, _, _, _ in METRICS) + " |"
    lines = [head, "|---|" + "---:|" * len(METRICS)]
    for p in b.peers:
        lines.append(f"| {p.name} | " + " | ".join(fmt(m[p.name][k], f) for k, _, _, _, f in METRICS) + " |")
    return "\n".join(lines)


def ratio_tables(b, m):
    refs = [r for r in ("haproxy", "haproxy-splice", "direct") if r in m]
    out = []
    for f in [p.name for p in b.peers if p.kind == "ferry"]:
        out.append(f"**{f}** (ratio = {f} / peer; for GB/s and conn/s higher is better, "
                   "for CPU, latency and memory lower is better)\n")
        out.append("| metric | " + f + " | " + " | ".join(f"{r} | ratio" for r in refs) + " |")
        out.append("|---|---:|" + "---:|---:|" * len(refs))
        for key, title, _, _, fm in METRICS:
            cells = [fmt(m[f][key], fm)]
            for r in refs:
                cells += [fmt(m[r][key], fm), fmt(ratio(m[f][key], m[r][key]), "{:.2f}x")]
            out.append(f"| {title} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot(b, m, path):
    """docs/bench.png: throughput bars and latency bars per peer (gnuplot)."""
    if not shutil.which("gnuplot"):
        b.note("gnuplot not installed: no plot")
        return False
    bulk_dat, lat_dat = os.path.join(b.tmp, "bulk.dat"), os.path.join(b.tmp, "latency.dat")
    with open(bulk_dat, "w") as f:
        f.write("# peer up1 up8 down1 down8 (GB/s)\n")
        for p in b.peers:
            if "up" in p.ports:
                v = [m[p.name][k] for k in ("up1", "up8", "down1", "down8")]
                f.write(p.name + " " + " ".join("NaN" if x is None else f"{x:.4f}" for x in v) + "\n")
    with open(lat_dat, "w") as f:
        f.write("# peer p50 p99 p999 (us)\n")
        for p in b.peers:
            v = [m[p.name][k] for k in ("p50", "p99", "p999")]
            f.write(p.name + " " + " ".join("NaN" if x is None else f"{x:.4f}" for x in v) + "\n")
    script = f"""
set terminal pngcairo noenhanced size 1500,600 font 'sans,10'
set output '{path}'
set multiplot layout 1,2 title 'ferry bench: proxy on CPU 0, load and backends on CPU 1 (median of {b.a.rounds} rounds)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left
set grid ytics
set xtics rotate by -30
set datafile missing 'NaN'
set title 'Bulk throughput (GB/s, higher is better)'
set ylabel 'GB/s'
set yrange [0:*]
plot '{bulk_dat}' using 2:xtic(1) title 'up, 1 stream', '' using 3 title 'up, 8 streams', \\
     '' using 4 title 'down, 1 stream', '' using 5 title 'down, 8 streams'
set title '64-byte request/response round trip (us, lower is better, log scale)'
set ylabel 'microseconds'
set logscale y
set yrange [*:*]
plot '{lat_dat}' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        b.note("gnuplot failed: " + r.stderr.strip()[-300:])
        return False
    return True


def versions():
    def dpkg(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        return r.stdout.strip() or "not installed"
    ferry_v = subprocess.run([FERRY, "-V"], capture_output=True, text=True).stdout.splitlines()
    socat_v = [l for l in first_line_all(["socat", "-V"]) if "socat version" in l]
    return {
        "ferry": ferry_v[0] if ferry_v else "?",
        "ferry -V": " / ".join(ferry_v),
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "socat": socat_v[0].strip() if socat_v else "?",
        "liburing": f"{dpkg('liburing-dev')} (Debian liburing-dev)",
    }


def first_line_all(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])}


def write_outputs(b):
    other = [s["cpu0_other"] for wl in b.samples.values() for ss in wl.values() for s in ss
             if "cpu0_other" in s]
    if other and statistics.median(other) > 0.10:
        b.note(f"CPU 0 (the proxies' CPU) was busy with other work for a median "
               f"{statistics.median(other):.0%} of the measured time: numbers are disturbed, "
               "rerun on a quiet machine")
    m, spread = summarise(b)
    tg = targets(b, m)
    mach, vers = machine(), versions()
    table = text_table(b, m)
    print(table)
    print()
    for t in tg:
        print(f"  {t['result']:<5} {t['engine']:<15} {t['target']:<50} "
              f"{fmt(t['measured'])} (target {t['limit']}, vs {t['against']}"
              + (f"; rounds passing {t['rounds_passing']})" if t["rounds_passing"] else ")"))
    os.makedirs(DOCS, exist_ok=True)
    png_ok = plot(b, m, os.path.join(DOCS, "bench.png"))
    raw = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(b.elapsed, 1),
        "machine": mach, "versions": vers,
        "method": {"seconds": b.a.seconds, "warmup": b.a.warmup, "rounds": b.a.rounds,
                   "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU, "rr_size": RR_SIZE,
                   "connrate_concurrency": CONN_CONC, "connrate_sources": CONN_NSRC,
                   "idle_connections": b.a.idle, "tw_max_buckets": b.tw_max},
        "cpu_busy_before": b.busy_before,
        "peers": [{"name": p.name, "kind": p.kind, "ports": p.ports, "events": p.events,
                   "config": p.config, "started_as": p.argv_text} for p in b.peers],
        "other_processes_cpu_s": b.other_cpu,
        "median": m, "min_max": spread, "samples": b.samples, "targets": tg, "notes": b.notes,
    }
    with open(os.path.join(DOCS, "benchmarks.json"), "w") as f:
        json.dump(raw, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(os.path.join(DOCS, "benchmarks.md"), "w") as f:
        f.write(markdown(b, m, tg, mach, vers, png_ok))
    print(f"\nbench: wrote docs/benchmarks.md, docs/benchmarks.json"
          f"{', docs/bench.png' if png_ok else ''} ({b.elapsed:.0f} s)")


def markdown(b, m, tg, mach, vers, png_ok):
    a = b.a
    L = []
    L.append("# ferry benchmarks\n")
    L.append(f"Generated by `make bench` (bench/run.py) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in {b.elapsed:.0f} s. "
             "All numbers are medians of the rounds of this one run; the ratios compare peers "
             "measured side by side, interleaved, under the same conditions. Raw numbers: "
             "[benchmarks.json](benchmarks.json).\n")
    if b.notes:
        L.append("**Notes from this run:**\n")
        L += [f"- {n}" for n in b.notes]
        L.append("")
    L.append("## Results\n")
    L.append("GB/s = 10^9 bytes per second through the proxy; s/GB = proxy CPU seconds "
             "(user + system, all its processes) per 10^9 bytes moved; latency = round trip of a "
             f"{RR_SIZE}-byte message over one persistent connection; conn/s = connect, send 64 B, "
             "read 64 B back, close; CPU ms/1k conn = proxy CPU per 1,000 such connections; "
             f"KiB/idle conn = proxy RSS growth per idle connection, measured at {a.idle:,} open "
             "connections; base RSS = the proxy's RSS just before those were opened. "
             "`direct` is the load tool talking to the backends with no proxy (the physical "
             "limit, everything on CPU 1); `direct-xcpu` is the round-trip floor when the echo "
             "server runs on the proxies' CPU 0, i.e. what crossing CPUs costs by itself.\n")
    L.append(md_table(b, m))
    L.append("")
    if png_ok:
        L.append("![throughput and latency per proxy](bench.png)\n")
    L.append("## Targets\n")
    L.append("Ratios within this run, one worker each. PASS/MISS is read strictly from the "
             "medians; on this 2-vCPU VM two quiet runs differ by about 6 % in medians and up to "
             "20 % in ratios, so a result within 20 % of its limit is not a firm verdict either way. 'Rounds passing' "
             "counts the rounds in which the same ratio, taken from the two peers' runs of that "
             "round (seconds apart), met the limit.\n")
    L.append("| engine | target | measured | limit | against | result | rounds passing |")
    L.append("|---|---|---:|---|---|---|---:|")
    for t in tg:
        L.append(f"| {t['engine']} | {t['target']} | {fmt(t['measured'])} | {t['limit']} | "
                 f"{t['against']} | **{t['result']}** | {t['rounds_passing'] or '-'} |")
    L.append("")
    L.append("## Ratios\n")
    L.append(ratio_tables(b, m))
    L.append("## Machine\n")
    L.append(f"- nproc: {mach['nproc']}")
    L.append(f"- CPU: {mach['cpu']}")
    L.append(f"- kernel: {mach['kernel']} ({mach['os']})")
    other = [s["cpu0_other"] for wl in b.samples.values() for ss in wl.values() for s in ss
             if "cpu0_other" in s]
    if other:
        L.append(f"- CPU 0 busy with work other than the proxy during the bulk and connection-rate "
                 f"runs (from /proc/stat): median {statistics.median(other):.0%}, "
                 f"max {max(other):.0%}")
    top = sorted(b.other_cpu.items(), key=lambda kv: -kv[1])[:6]
    if top:
        L.append("- CPU seconds used by processes other than this benchmark's during the bulk and "
                 "connection-rate runs (top; processes that started and ended meanwhile count "
                 "in their parent): " + ", ".join(f"{n} {v:.1f}" for n, v in top))
    L.append("- CPU busy in the second before the run: " +
             ", ".join(f"{c} {v:.0%}" for c, v in sorted(b.busy_before.items())))
    L.append("")
    L.append("## Versions\n")
    for k, v in vers.items():
        L.append(f"- {k}: `{v}`")
    L.append("")
    L.append("## Method\n")
    L.append(f"""- **Pinning.** Every proxy runs with `taskset -c {PROXY_CPU}`; the backends, the load
  clients and run.py itself run on CPU {LOAD_CPU}. The load side is the ceiling on this machine:
  no proxy can beat `direct`, which runs entirely on CPU {LOAD_CPU}.
- **Priority.** run.py, the proxies, the backends and the load clients all run at nice -20
  (inherited from run.py), so that other work on a shared machine disturbs every peer alike and
  as little as possible; what other processes used anyway is listed under "Machine".
- **One worker each.** ferry `workers: 1`; HAProxy `nbthread 1`; nginx `worker_processes 1`;
  socat forks one process per connection (it has no other mode that serves many clients).
- **Same backends and load tool for all**: `bench/load` (C, one binary): `sink`, `source` and
  `echo` servers, and the `bulk`, `rr`, `connrate`, `idle` and `twfill` clients. Every proxy
  starts once and listens on three ports (upload -> sink, download -> source, echo -> echo).
- **Buffers.** Each peer keeps its defaults: ferry `buffer_size` 16 KiB (4 per direction in
  flight), HAProxy `tune.bufsize` 16 KiB, nginx `proxy_buffer_size` 16k, socat 8 KiB.
- **Durations.** Each measurement runs {a.warmup} s of warm-up (not counted) and {a.seconds} s
  measured; {a.rounds} rounds; within a workload the peers run interleaved, each round in a
  rotated order, and the median of the rounds is reported (min and max are in the JSON).
- **Bulk.** 1 or 8 TCP streams for the measured time, `up` = client writes to the sink through the
  proxy, `down` = the source writes to the client. The rate counts bytes after the warm-up, when
  every buffer on the path is full, so bytes written equal bytes delivered to within those
  buffers. Proxy CPU = utime + stime (+ reaped children) from `/proc/PID/stat` of the proxy's
  process tree, read before the client starts and 0.2 s after it ends; divided by all bytes of
  the run (warm-up included, as the CPU window includes it).
- **Latency.** One connection, {RR_SIZE} bytes written, {RR_SIZE} bytes read back, again, for the
  measured time (TCP_NODELAY at both ends); every round trip is a sample (nearest-rank percentiles).
  Each proxied round trip crosses CPUs four times; see `direct-xcpu` for one crossing pair.
- **Connection rate.** {CONN_CONC} connections in flight, each: non-blocking connect from one of
  {CONN_NSRC} source addresses ({CONN_SRC} upward, so 4-tuples never run out), send 64 B, read the
  64 B echo, close normally (FIN, client first). **TIME_WAIT is prefilled, not avoided:** before
  every connection-rate measurement `load twfill` tops the kernel's TIME_WAIT table up to
  `net.ipv4.tcp_max_tw_buckets` ({b.tw_max}) with connections between 127.0.1.x and 127.0.0.254,
  so every peer runs with the same full table (new TIME_WAIT sockets overflow it and are dropped;
  without the fill the first peers would run with an empty table and later ones with a full one).
  The TIME_WAIT count before each run is in the JSON (`tw_before`).
- **Idle memory.** `load idle` opens {a.idle:,} connections through the proxy one after the other,
  sends 64 B on each and waits for the echo (so each is proxied end to end), then holds them.
  RSS (VmRSS summed over the proxy's processes) before and 0.5 s after; the growth divided by
  {a.idle:,}. Measured at {a.idle:,}: the hard descriptor limit is 20,000 per process and each
  proxied connection needs two. Memory a proxy allocates at start-up for its configured maximum
  (nginx's connection array, for instance) is in `base RSS`, not in the per-connection figure.
  socat is skipped (a process per connection).
- **Clean-up.** Every process run.py starts runs in its own process group and is stopped by that
  group's id at the end, also on errors and Ctrl-C.
""")
    L.append("## Configurations\n")
    for p in b.peers:
        if p.is_proxy:
            L.append(f"### {p.name}\n")
            L.append(f"Started as: `{p.argv_text}` (ports are chosen free at run time).\n")
            L.append(f"```{p.config_lang}\n{p.config.rstrip()}\n```\n")
    L.append("## Reproduce\n")
    L.append("```sh\nmake bench          # builds ./ferry, installs missing packages, runs bench/run.py\n"
             "/usr/bin/python3 bench/run.py --seconds 3 --rounds 5   # longer\n```\n")
    return "\n".join(L)


# --------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=9000, help="idle connections (0: skip)")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s, 1,000 idle: a smoke test")
    ap.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                    help="wait up to this long for both CPUs to be under 10%% busy first")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--load", default=LOAD, help="the bench/load.c binary")
    a = ap.parse_args()
    set_load(a.load)
    if a.quick:
        a.seconds, a.rounds, a.idle, a.wait_quiet = 1.0, 1, 1000, 0.0
    for tool, hint in ((FERRY, "run `make ferry`"), (LOAD, "run `make bench`"),
                       (shutil.which("taskset"), "install util-linux")):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool or 'taskset'} missing: {hint}")
    if os.cpu_count() < 2:
        sys.exit("bench: needs 2 CPUs (proxy on CPU 0, load on CPU 1)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2 * a.idle + 100:
        sys.exit(f"bench: hard descriptor limit {hard} is too low for {a.idle} idle connections")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    # Every process of the benchmark inherits nice -20: on a shared machine other
    # work then disturbs all peers alike, and less (needs root; else noted).
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    except OSError:
        pass
    # SIGTERM (e.g. from make) unwinds like Ctrl-C so the finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))

    b = Bench(a)
    try:
        b.run()
        write_outputs(b)
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
    finally:
        b.procs.stop_all()
        if a.keep:
            print(f"bench: logs kept in {b.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
