#!/usr/bin/env python3
"""run.py - `make bench`: ferry against HAProxy, nginx stream, socat and direct.

One run measures every peer with the same backends and load tool (bench/load):

  peers      ferry (each engine in `ferry -V`), HAProxy without and with splice,
             nginx stream, socat (fork mode), and direct (no proxy)
  workloads  bulk upload/download with 1 and 8 streams (GB/s, proxy CPU s/GB),
             64-byte ping-pong latency (p50/p99/p99.9), new connections per
             second (proxy CPU ms per 1,000 connections), RSS per idle
             connection with 9,000 open
  ferry only fan-out of one input to 1, 2, 4 and 8 outputs (GB/s per output,
             CPU s/GB), and 1-stream upload through a proxy service with a
             mirror that keeps pace, one that stalls (on_lag: disconnect) and
             none, each engine; these run on a second ferry instance per
             engine (bench/run.py fx_config), started only for them

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
                 [--only bulk,rr,connrate,idle,fanout,mirror] [--out DIR]

--only runs some workload groups (and starts only the peers they need); its
report goes to build/bench/report/ unless --out says otherwise, so docs/
always holds one complete run.

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
import urllib.request

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

# Workload groups, in run order (--only selects some).  The first four
# measure every peer; fanout and mirror measure ferry alone.
MAIN_GROUPS = ("bulk", "rr", "connrate", "idle")
FX_GROUPS = ("fanout", "mirror")
GROUPS = MAIN_GROUPS + FX_GROUPS
FANOUT_OUTPUTS = (1, 2, 4, 8)       # outputs per fan-out run, one input
MIRROR_CASES = ("none", "keep", "stall")  # no mirror; one that reads; one that never reads
FX_MAX_LAG = "4MiB"                 # outputs' and mirrors' max_lag
FANOUT_TARGET = 0.75   # per-output GB/s with 4 outputs / with 1 output, at least
MIRROR_TARGETS = {"stall": 0.05, "keep": 0.25}  # client throughput cost, under


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


def load_result(returncode, stdout, stderr):
    """A load client's last key=value line, with 'error' when it failed."""
    lines = stdout.strip().splitlines()
    res = parse_kv(lines[-1]) if lines else {}
    if returncode != 0 and "error" not in res:
        res["error"] = (stderr.strip() or f"exit {returncode}")[-300:]
    return res


def run_load(args, timeout):
    """Run a load client on LOAD_CPU; return its key=value result or {'error'}."""
    cmd = ["taskset", "-c", LOAD_CPU, LOAD] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"load {args[0]} timed out after {timeout:.0f} s"}
    return load_result(r.returncode, r.stdout, r.stderr)


def run_load_window(args, timeout, skip, length, roots):
    """run_load, also measuring from `skip` to `skip + length` seconds after
    the start, i.e. inside the client's measured window (no start-up, probes
    or tear-down): each CPU's busy share, the CPU share of the `roots`
    process trees (the proxy) and CPU 0's share busy with anything else."""
    cmd = ["taskset", "-c", LOAD_CPU, LOAD] + args
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=_child_setup)
    try:
        time.sleep(skip)
        s0, c0, t0 = stat_snap(), cpu_seconds(roots), time.time()
        time.sleep(length)
        busy, share = busy_between(s0, stat_snap()), (cpu_seconds(roots) - c0) / (time.time() - t0)
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return {"error": f"load {args[0]} timed out after {timeout:.0f} s"}
    res = load_result(p.returncode, out, err)
    res["window"] = {"cpu0_busy": busy["cpu0"], "cpu1_busy": busy["cpu1"], "proxy_cpu": share,
                     "cpu0_other": max(0.0, busy["cpu0"] - share)}
    return res


def admin_status(port):
    """ferry's GET /status as a dict, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


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

    def __init__(self, name, kind, engine=None, splice=False, config_fn=None, tag=None):
        self.name, self.kind, self.engine, self.splice = name, kind, engine, splice
        self.config_fn = config_fn  # ferry: makes its YAML (default ferry_config)
        self.tag = tag or name      # names its log and config files
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


def fx_config(peer, be):
    """The ferry instance for the fan-out and mirror workloads: the same global
    settings as ferry_config, a fan-out service, and three proxy services to
    the same sink that differ only in their mirror."""
    def proxy(name, port, mirror=None):
        text = f"""  - name: {name}
    listen: ["127.0.0.1:{port}"]
    backends:
      - address: 127.0.0.1:{be['sink']}
"""
        if mirror:
            text += f"""    mirrors:
      - address: 127.0.0.1:{mirror}
        on_lag: disconnect
        max_lag: {FX_MAX_LAG}
"""
        return text
    pt = peer.ports
    return f"""# ferry bench configuration for fan-out and mirrors; engine on the command line
workers: 1
max_connections: {MAXCONN}
buffer_size: 16KiB
shutdown_timeout: 1s
log:
  access: false
admin:
  listen: 127.0.0.1:{pt['admin']}     # mirror bytes and disconnects per run
services:
  - name: fanout
    mode: fanout
    framing: raw
    inputs:
      listen: ["127.0.0.1:{pt['fan_in']}"]
    outputs:
      listen: ["127.0.0.1:{pt['fan_out']}"]
      on_lag: block
      max_lag: {FX_MAX_LAG}
""" + proxy("mirror-none", pt["mirror_none"]) + \
        proxy("mirror-keep", pt["mirror_keep"], be["mirror_sink"]) + \
        proxy("mirror-stall", pt["mirror_stall"], be["mirror_stall"])


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
        cfg = os.path.join(tmp, f"{peer.tag}.yaml")
        peer.config, peer.config_lang = (peer.config_fn or ferry_config)(peer, be), "yaml"
        with open(cfg, "w") as f:
            f.write(peer.config)
        argv = [FERRY, "-c", cfg, "--engine", peer.engine]
        peer.argv_text = f"taskset -c 0 ./ferry -c ferry.yaml --engine {peer.engine}"
        p = procs.start(peer.tag, argv, PROXY_CPU)
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
        self.peers = []      # peers of the main groups (bulk, rr, connrate, idle)
        self.fx_peers = []   # the ferry instances of the fanout and mirror groups
        self.backends = {}
        self.other_cpu = {}  # process name -> CPU s used by others during measured runs
        self.group_s = {}    # group -> seconds it took (for the time budget)
        self.groups = list(args.only)
        with open("/proc/sys/net/ipv4/tcp_max_tw_buckets") as f:
            self.tw_max = int(f.read())

    def note(self, msg):
        print(f"bench: {msg}", file=sys.stderr)
        self.notes.append(msg)

    # -- set-up ---------------------------------------------------------
    def ferry_engines(self):
        """Engines `ferry -V` lists as usable, noting the others."""
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
        if "io_uring" not in engines and "io_uring" not in state:
            self.note("ferry has no io_uring engine in this build (`ferry -V`: engines: "
                      f"{' '.join(engines)}): io_uring skipped")
        return [e for e in ("epoll", "io_uring") if e in engines]

    def main_peers(self, engines):
        """Every peer of the main groups, direct and direct-xcpu last."""
        peers = [Peer(f"ferry-{e}", "ferry", engine=e) for e in engines]
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
        return peers + [Peer("direct", "direct"), Peer("direct-xcpu", "direct")]

    def setup(self):
        """Backends, then the peers the selected groups need (ports chosen free)."""
        engines = self.ferry_engines()
        peers = self.main_peers(engines) if set(self.groups) & set(MAIN_GROUPS) else []
        # fanout and mirror: a second ferry per engine (fx_config), so that the
        # main instances keep the configuration their numbers are compared in.
        fx = [Peer(f"ferry-{e}", "ferry", engine=e, config_fn=fx_config, tag=f"ferry-{e}-fx")
              for e in engines] if set(self.groups) & set(FX_GROUPS) else []
        base = pick_ports(10 + 3 * len(peers) + 6 * len(fx))
        # mirror_sink reads as fast as it can (a mirror that keeps pace);
        # mirror_stall accepts and never reads (a mirror that stalls).
        self.backends = {"sink": base, "source": base + 1, "echo": base + 2, "echo_x": base + 3,
                         "mirror_sink": base + 4, "mirror_stall": base + 5}
        port = base + 10
        for p in peers:
            if p.is_proxy:
                p.ports = {"up": port, "down": port + 1, "echo": port + 2}
                port += 3
        for p in fx:
            p.ports = dict(zip(("fan_in", "fan_out", "mirror_none", "mirror_keep", "mirror_stall",
                                "admin"), range(port, port + 6)))
            port += 6
        if peers:
            direct, xcpu = peers[-2], peers[-1]
            direct.ports = {"up": self.backends["sink"], "down": self.backends["source"],
                            "echo": self.backends["echo"]}
            # The cross-CPU floor: the same echo server, but on the proxies' CPU.
            xcpu.ports = {"echo": self.backends["echo_x"]}
        self.peers, self.fx_peers = peers, fx

        be = self.backends
        for role, port, cpu in (("sink", be["sink"], LOAD_CPU), ("source", be["source"], LOAD_CPU),
                                ("echo", be["echo"], LOAD_CPU), ("echo", be["echo_x"], PROXY_CPU),
                                ("sink", be["mirror_sink"], LOAD_CPU),
                                ("stall", be["mirror_stall"], LOAD_CPU)):
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
        for p in fx:
            err = start_peer(p, be, self.procs, self.tmp) or self.fx_check(p)
            if err:
                self.note(f"{p.name} (fan-out/mirror instance) failed to start or check, "
                          f"skipped: {err.strip()}")
                stop_peer(p, self.procs)
                self.fx_peers.remove(p)
        bare = Peer("backends", "direct")  # the check every proxy passes, without one
        bare.ports = {"down": be["source"], "echo": be["echo"]}
        err = sanity_check(bare)
        if err:
            raise RuntimeError("the backends fail the echo check: " + err)

    def fx_check(self, peer):
        """The fan-out/mirror instance works: 1 MiB fanned out to one output
        comes out byte for byte, and /status lists the mirrors."""
        data = os.urandom(1 << 20)
        try:
            with socket.create_connection(("127.0.0.1", peer.ports["fan_out"]), timeout=5) as out, \
                    socket.create_connection(("127.0.0.1", peer.ports["fan_in"]), timeout=5) as inp:
                # An output gets only what arrives after ferry registered it:
                # probe with single bytes until one comes out.
                out.settimeout(0.05)
                for _ in range(100):
                    inp.sendall(b"p")
                    try:
                        if out.recv(1 << 16):
                            break
                    except socket.timeout:
                        pass
                else:
                    return "fan-out: the output received nothing"
                time.sleep(0.1)
                try:  # the rest of the probes
                    while out.recv(1 << 16):
                        pass
                except socket.timeout:
                    pass
                out.settimeout(5)
                inp.sendall(data)
                got = bytearray()
                while len(got) < len(data):
                    chunk = out.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
            if bytes(got) != data:
                return f"fan-out delivered {len(got)} of {len(data)} bytes, or different bytes"
        except OSError as e:
            return f"fan-out check failed: {e}"
        st = admin_status(peer.ports["admin"])
        names = {s["name"]: s for s in (st or {}).get("services", [])}
        if not all(names.get(f"mirror-{c}", {}).get("mirrors") for c in ("keep", "stall")):
            return f"/status does not list the mirrors: {st}"
        return ""

    def mirror_counters(self, peer, case):
        """(bytes, disconnects) of the case's mirror from /status, or None."""
        st = admin_status(peer.ports["admin"])
        for svc in (st or {}).get("services", []):
            if svc["name"] == f"mirror-{case}" and svc["mirrors"]:
                return svc["mirrors"][0]["bytes"], svc["mirrors"][0]["disconnects"]
        return None

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

    def fanout(self):
        """One input to 1, 2, 4 and 8 outputs through each engine's fx
        instance (on_lag: block), interleaved; see `load fanout`."""
        a = self.a
        items = [(p, n) for p in self.fx_peers for n in FANOUT_OUTPUTS]
        for r, (p, n) in self.rounds(items):
            wl, where = f"fanout{n}", f"fan-out to {n} round {r + 1}"
            if not self.ensure_alive(p, where):
                continue
            c0, st0, w0, pt0 = cpu_seconds(p.roots()), stat_snap(), time.time(), all_proc_ticks()
            res = run_load_window(["fanout", "-c", f"127.0.0.1:{p.ports['fan_in']}",
                                   "-o", f"127.0.0.1:{p.ports['fan_out']}", "-n", str(n),
                                   "-t", str(a.seconds), "-w", str(a.warmup)],
                                  a.seconds + a.warmup + 20, *self.window(), p.roots())
            time.sleep(0.2)  # let ferry close the input and the outputs
            if res.get("in_bytes_total"):
                res["cpu_s"] = cpu_seconds(p.roots()) - c0
                res["cpu_s_per_GB_in"] = res["cpu_s"] / (res["in_bytes_total"] / 1e9)
                res["cpu_s_per_GB_out"] = res["cpu_s"] / (res["out_bytes_total"] / 1e9)
            self.foreign(res, p, st0, w0, pt0)
            res.update(res.pop("window", {}))  # the busy shares of the measured window
            self.record(wl, p, res, where, r)
            self.progress(f"fanout{n}", r, p, res.get("out_min_GBps"), "GB/s per output (slowest)")

    def window(self):
        """(skip, length): the part of a run's measured time that run.py
        samples CPU busy in, clear of its start and end by 0.1 s."""
        return self.a.warmup + 0.1, max(0.2, self.a.seconds - 0.2)

    def mirror(self):
        """1-stream upload through mirror-none/-keep/-stall of each engine's fx
        instance, interleaved; /status before and after gives what the
        mirror got and how often it was disconnected."""
        a = self.a
        items = [(p, c) for p in self.fx_peers for c in MIRROR_CASES]
        for r, (p, case) in self.rounds(items):
            wl, where = f"mirror_{case}", f"mirror {case} round {r + 1}"
            if not self.ensure_alive(p, where):
                continue
            m0 = self.mirror_counters(p, case) if case != "none" else None
            c0, st0, w0, pt0 = cpu_seconds(p.roots()), stat_snap(), time.time(), all_proc_ticks()
            res = run_load_window(["bulk", "-c", f"127.0.0.1:{p.ports['mirror_' + case]}", "-d", "up",
                                   "-n", "1", "-t", str(a.seconds), "-w", str(a.warmup)],
                                  a.seconds + a.warmup + 20, *self.window(), p.roots())
            time.sleep(0.2)  # the mirror gets its FIN after the last byte: let it drain
            if "bytes_total" in res:
                res["cpu_s"] = cpu_seconds(p.roots()) - c0
                res["cpu_s_per_GB"] = res["cpu_s"] / (res["bytes_total"] / 1e9)
            self.foreign(res, p, st0, w0, pt0)
            res.update(res.pop("window", {}))  # the busy shares of the measured window
            m1 = self.mirror_counters(p, case) if case != "none" else None
            if m0 and m1 and res.get("bytes_total"):
                res["mirror_bytes"] = m1[0] - m0[0]
                res["mirror_disconnects"] = m1[1] - m0[1]
                res["mirror_share"] = res["mirror_bytes"] / res["bytes_total"]
            elif case != "none":
                res.setdefault("mirror_error", "/status did not answer")
            self.record(wl, p, res, where, r)
            self.progress(f"mirror-{case}", r, p, res.get("GBps"), "GB/s client")

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
        print("bench: peers: " + ", ".join(p.name for p in self.peers) +
              (("; fan-out/mirror: " + ", ".join(p.name for p in self.fx_peers))
               if self.fx_peers else ""), file=sys.stderr)
        steps = {"bulk": lambda: [self.bulk(*w) for w in BULK], "rr": self.latency,
                 "connrate": self.connrate, "idle": self.idle_memory,
                 "fanout": self.fanout, "mirror": self.mirror}
        for g in GROUPS:
            if g in self.groups and not (g == "idle" and not self.a.idle):
                tg = time.time()
                steps[g]()
                self.group_s[g] = round(time.time() - tg, 1)
        self.shutdown_peers()
        self.elapsed = time.time() - t0

    def shutdown_peers(self):
        """Stop every proxy with SIGTERM; report one that hangs or fails."""
        for p in [p for p in self.peers if p.is_proxy] + self.fx_peers:
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


# Fan-out and mirror results (ferry only): fields of `load fanout` / `load
# bulk` samples summarised per engine and number of outputs / mirror case.
# The busy shares (cpu0_busy, cpu1_busy, proxy_cpu, cpu0_other) of these
# samples are those of the measured window (run_load_window).
FANOUT_FIELDS = ("in_GBps", "out_min_GBps", "out_mean_GBps", "out_max_GBps", "delivered_GBps",
                 "cpu_s_per_GB_in", "cpu_s_per_GB_out", "proxy_cpu", "cpu0_busy", "cpu1_busy",
                 "cpu0_other")
MIRROR_FIELDS = ("GBps", "cpu_s_per_GB", "mirror_share", "mirror_disconnects",
                 "proxy_cpu", "cpu0_busy", "cpu1_busy", "cpu0_other")


def field_stats(samples, fields):
    """{field: median, ..., "min_max": {field: [min, max]}, "rounds": n}."""
    out, spread = {}, {}
    for f in fields:
        vals = [s[f] for s in samples if isinstance(s.get(f), (int, float))]
        out[f] = med(vals)
        spread[f] = [min(vals), max(vals)] if vals else None
    out["min_max"] = spread
    out["rounds"] = sum(1 for s in samples if "error" not in s)
    return out


def paired(b, peer, wl_a, wl_b, field):
    """{round: ratio wl_a / wl_b} of one field of one fx peer (runs of the
    same round are seconds apart)."""
    def per_round(wl):
        return {s["round"]: s[field] for s in b.samples.get(wl, {}).get(peer, [])
                if isinstance(s.get(field), (int, float))}
    x, y = per_round(wl_a), per_round(wl_b)
    return {r: x[r] / y[r] for r in sorted(x) if y.get(r)}


def fx_summary(b):
    """Medians per engine: fanout[engine][outputs], mirror[engine][case],
    with the ratios the targets read (vs_1: slowest output's GB/s against
    the 1-output run; vs_none / cost: client GB/s against no mirror), and the
    same ratios at equal ferry CPU (*_cpu: inverse ratio of CPU s per input
    GB), which a busy machine disturbs less: ferry, CPU-bound, then gets a
    share of CPU 0 that varies from run to run."""
    out = {"fanout": {}, "mirror": {}}
    for p in b.fx_peers:
        if "fanout" in b.groups:
            fo = out["fanout"][p.name] = {}
            for n in FANOUT_OUTPUTS:
                fo[n] = field_stats(b.samples.get(f"fanout{n}", {}).get(p.name, []), FANOUT_FIELDS)
            for n in FANOUT_OUTPUTS:
                fo[n]["vs_1"] = ratio(fo[n]["out_min_GBps"], fo[1]["out_min_GBps"])
                fo[n]["vs_1_cpu"] = ratio(fo[1]["cpu_s_per_GB_in"], fo[n]["cpu_s_per_GB_in"])
        if "mirror" in b.groups:
            mi = out["mirror"][p.name] = {}
            for c in MIRROR_CASES:
                mi[c] = field_stats(b.samples.get(f"mirror_{c}", {}).get(p.name, []), MIRROR_FIELDS)
            for c in MIRROR_CASES:
                mi[c]["vs_none"] = ratio(mi[c]["GBps"], mi["none"]["GBps"])
                mi[c]["cost"] = None if mi[c]["vs_none"] is None else 1 - mi[c]["vs_none"]
                mi[c]["vs_none_cpu"] = ratio(mi["none"]["cpu_s_per_GB"], mi[c]["cpu_s_per_GB"])
    return out


def fx_targets(b, fx):
    """The issue's fan-out and mirror targets, per engine, as ratios within
    this run; 'rounds passing' pairs the runs of each round."""
    out = []
    for p in b.fx_peers:
        if p.name in fx["fanout"]:
            val = fx["fanout"][p.name][4]["vs_1"]
            rs = list(paired(b, p.name, "fanout4", "fanout1", "out_min_GBps").values())
            out.append({"group": "fanout", "engine": p.name,
                        "target": "fan-out: GB/s of the slowest of 4 outputs / GB/s with 1 output",
                        "measured": val, "at_equal_cpu": fx["fanout"][p.name][4]["vs_1_cpu"],
                        "limit": f">= {FANOUT_TARGET:g}", "against": "1 output",
                        "result": "n/a" if val is None else "PASS" if val >= FANOUT_TARGET else "MISS",
                        "rounds_passing": f"{sum(x >= FANOUT_TARGET for x in rs)}/{len(rs)}" if rs else ""})
        if p.name in fx["mirror"]:
            for case, lim in sorted(MIRROR_TARGETS.items(), key=lambda kv: kv[1]):
                row = fx["mirror"][p.name][case]
                cost = row["cost"]
                # A "keeping" mirror that ferry disconnected (it fell max_lag
                # behind) did not get the traffic: that round proves nothing.
                dropped = {s["round"] for s in b.samples.get(f"mirror_{case}", {}).get(p.name, [])
                           if case == "keep" and s.get("mirror_disconnects")}
                rs = [None if r in dropped else 1 - x
                      for r, x in paired(b, p.name, f"mirror_{case}", "mirror_none", "GBps").items()]
                what = ("a mirror that stalls (on_lag: disconnect)" if case == "stall"
                        else "a mirror that keeps pace")
                res = "n/a" if cost is None else "PASS" if cost < lim else "MISS"
                if res == "PASS" and case == "keep" and row["mirror_disconnects"]:
                    res = "INVALID"  # see fx_checks' note: the mirror was dropped
                out.append({"group": "mirror", "engine": p.name,
                            "target": f"{what}: client throughput cost vs no mirror",
                            "measured": cost, "ratio": row["vs_none"],
                            "at_equal_cpu": None if row["vs_none_cpu"] is None else 1 - row["vs_none_cpu"],
                            "limit": f"< {lim * 100:g} %", "against": "no mirror", "result": res,
                            "rounds_passing": f"{sum(x is not None and x < lim for x in rs)}/{len(rs)}"
                            if rs else ""})
    return out


def fx_checks(b, fx):
    """Notes when a fan-out or mirror run did not measure what it claims."""
    for peer, rows in fx["fanout"].items():
        for n, r in rows.items():
            lo, hi = r["out_min_GBps"], r["out_max_GBps"]
            if lo and hi and lo < 0.9 * hi:
                b.note(f"{peer} fan-out to {n}: the slowest output got {lo / hi:.0%} of the fastest "
                       "one's rate (on_lag: block should pace them alike)")
    for peer, rows in fx["mirror"].items():
        keep, stall = rows["keep"], rows["stall"]
        dropped = sum(1 for s in b.samples.get("mirror_keep", {}).get(peer, [])
                      if s.get("mirror_disconnects"))
        if dropped:
            b.note(f"{peer}: ferry disconnected the mirror that reads as fast as it can in {dropped} "
                   f"of {keep['rounds']} rounds (more than max_lag queued; median share of the "
                   f"client's bytes it got: {pct(keep['mirror_share'])}): those rounds measure a "
                   "mirror dropped part way, not one kept at pace, and do not count as passing "
                   "(INVALID when the median run was one of them)")
        if stall["rounds"] and stall["mirror_disconnects"] == 0:
            b.note(f"{peer}: the stalled mirror was never disconnected (max_lag not reached?)")


def pct(v):
    return "-" if v is None else f"{v * 100:.1f} %"


def fx_text(fx):
    """The fan-out and mirror medians as plain text for stdout."""
    lines = []
    for peer, rows in fx["fanout"].items():
        for n, r in rows.items():
            lines.append(f"  fan-out  {peer:<15} {n} out: in {fmt(r['in_GBps'])} GB/s, per output "
                         f"{fmt(r['out_min_GBps'])} (slowest) / {fmt(r['out_mean_GBps'])} (mean) "
                         f"GB/s = {fmt(r['vs_1'])} of 1 output ({fmt(r['vs_1_cpu'])} at equal CPU), "
                         f"CPU {fmt(r['cpu_s_per_GB_in'], '{:.3f}')} "
                         f"s per input GB, {fmt(r['cpu_s_per_GB_out'], '{:.3f}')} s per delivered GB")
    for peer, rows in fx["mirror"].items():
        for c, r in rows.items():
            lines.append(f"  mirror   {peer:<15} {c:<5}: client {fmt(r['GBps'])} GB/s = "
                         f"{fmt(r['vs_none'])} of no mirror (cost {pct(r['cost'])}; "
                         f"{fmt(r['vs_none_cpu'])} at equal CPU), CPU "
                         f"{fmt(r['cpu_s_per_GB'], '{:.3f}')} s/GB, mirror got {pct(r['mirror_share'])}")
    return "\n".join(lines)


def fx_target_rows(tg):
    """Markdown rows of fan-out/mirror targets (costs shown in percent)."""
    L = ["| engine | target | measured | limit | against | result | rounds passing |",
         "|---|---|---:|---|---|---|---:|"]
    for t in tg:
        shown = pct(t["measured"]) if t["group"] == "mirror" else fmt(t["measured"])
        L.append(f"| {t['engine']} | {t['target']} | {shown} | {t['limit']} | {t['against']} | "
                 f"**{t['result']}** | {t['rounds_passing'] or '-'} |")
    return L


def fx_markdown(b, fx, tg):
    """The doc's "Fan-out" and "Mirrors" sections."""
    a, L = b.a, []
    rounds = f"median of {a.rounds} round{'s' if a.rounds > 1 else ''}"
    busy = ("ferry CPU = ferry's CPU time / wall time, CPU0/CPU1 busy = share of each CPU busy "
            "with anything (/proc/stat), CPU0 other = CPU 0's busy share not used by ferry (other "
            "work on the machine): all sampled inside the measured window. A CPU near 100 % busy is "
            "what limited the run; CPU 1 carries every sender and receiver.")
    if fx["fanout"]:
        L.append("## Fan-out\n")
        L.append(f"One input connected to `inputs.listen`, 1, 2, 4 or 8 outputs connected to "
                 f"`outputs.listen` (`framing: raw`, `on_lag: block`, `max_lag: {FX_MAX_LAG}`), all "
                 "in one `load fanout` process on CPU 1; ferry on CPU 0. The input sends as fast as "
                 "ferry takes it, the outputs read as fast as they can. Per output = bytes an output "
                 "received after the warm-up / measured time: the slowest output (what the target "
                 "reads) and the mean. Delivered = all outputs together. CPU s per GB = ferry's CPU "
                 f"seconds over the run / GB sent by the input, and / GB received by all outputs. "
                 "Same at equal ferry CPU = CPU s per input GB with 1 output / with N: the ratio "
                 "if ferry had the same CPU time in both runs (it is CPU-bound when CPU 0 is 100 % "
                 "busy; the targets read the throughput ratio). "
                 f"{rounds}, engines and output counts interleaved. {busy}\n")
        L.append("| engine | outputs | input GB/s | per output GB/s, slowest | per output GB/s, mean "
                 "| slowest / 1 output | same at equal ferry CPU | delivered GB/s | CPU s per input GB "
                 "| CPU s per delivered GB | ferry CPU | CPU0 busy | CPU1 busy | CPU0 other |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for peer, rows in fx["fanout"].items():
            for n, r in rows.items():
                L.append(f"| {peer} | {n} | {fmt(r['in_GBps'])} | {fmt(r['out_min_GBps'])} | "
                         f"{fmt(r['out_mean_GBps'])} | {fmt(r['vs_1'])} | {fmt(r['vs_1_cpu'])} | "
                         f"{fmt(r['delivered_GBps'])} | "
                         f"{fmt(r['cpu_s_per_GB_in'], '{:.3f}')} | {fmt(r['cpu_s_per_GB_out'], '{:.3f}')} | "
                         f"{pct(r['proxy_cpu'])} | {pct(r['cpu0_busy'])} | {pct(r['cpu1_busy'])} | {pct(r['cpu0_other'])} |")
        L.append("")
        L += fx_target_rows([t for t in tg if t["group"] == "fanout"])
        L.append("")
    if fx["mirror"]:
        L.append("## Mirrors\n")
        L.append("One stream uploading through three proxy services of the same ferry instance, to "
                 "the same sink, that differ only in `mirrors`: none; one mirror that reads as fast "
                 "as it can (`keep`); one that accepts and never reads (`stall`), both `on_lag: "
                 f"disconnect`, `max_lag: {FX_MAX_LAG}`. Sinks and client on CPU 1, ferry on CPU 0. "
                 "Cost = 1 - client GB/s / client GB/s without a mirror. Mirror got = bytes ferry "
                 "sent the mirror (`/status`) / bytes the client sent; disconnects per run from "
                 "`/status` too. Cost at equal ferry CPU = 1 - CPU s/GB without a mirror / with "
                 "one (the cost if ferry had the same CPU time in both runs). On both engines "
                 "a connection without a mirror is relayed with splice(2) (io_uring: "
                 "IORING_OP_SPLICE) and one with a mirror through buffers shared by the backend "
                 "and the mirror, so its cost includes leaving splice. "
                 f"{rounds}, engines and cases interleaved. {busy}\n")
        L.append("| engine | mirror | client GB/s | / no mirror | cost | cost at equal ferry CPU | "
                 "CPU s/GB | mirror got | mirror disconnects per run | ferry CPU | CPU0 busy | "
                 "CPU1 busy | CPU0 other |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for peer, rows in fx["mirror"].items():
            for c, r in rows.items():
                none = c == "none"
                L.append(f"| {peer} | {c} | {fmt(r['GBps'])} | {fmt(r['vs_none'])} | "
                         f"{'-' if none else pct(r['cost'])} | "
                         f"{'-' if none or r['vs_none_cpu'] is None else pct(1 - r['vs_none_cpu'])} | "
                         f"{fmt(r['cpu_s_per_GB'], '{:.3f}')} | "
                         f"{'-' if none else pct(r['mirror_share'])} | "
                         f"{'-' if none else fmt(r['mirror_disconnects'], '{:.0f}')} | "
                         f"{pct(r['proxy_cpu'])} | {pct(r['cpu0_busy'])} | {pct(r['cpu1_busy'])} | {pct(r['cpu0_other'])} |")
        L.append("")
        L += fx_target_rows([t for t in tg if t["group"] == "mirror"])
        L.append("")
    if L:
        invalid = any(t["result"] == "INVALID" for t in tg)
        L.append("PASS/MISS is read strictly from the medians; 'rounds passing' counts the rounds in "
                 "which the ratio of that round's two runs (seconds apart, same engine) met the "
                 "limit. As under Targets: ratios of two quiet runs differ by up to 20 % here, so a "
                 "result within 20 % of its limit is not a firm verdict either way."
                 + (" INVALID: ferry disconnected the mirror meant to keep pace in the median run "
                    "(see the notes), so it did not measure a mirror kept at pace." if invalid else "")
                 + "\n")
    return "\n".join(L)


def dat_row(label, values):
    return label + " " + " ".join("NaN" if x is None else f"{x:.4f}" for x in values) + "\n"


def plot(b, m, fx, path):
    """docs/bench.png (gnuplot): throughput and latency bars per peer (main
    groups), then GB/s per output in fan-out and client GB/s with mirrors
    per engine (fanout, mirror), each panel only when its groups ran."""
    if not shutil.which("gnuplot"):
        b.note("gnuplot not installed: no plot")
        return False
    panels = []  # gnuplot commands of one panel each
    if b.peers:
        bulk_dat, lat_dat = os.path.join(b.tmp, "bulk.dat"), os.path.join(b.tmp, "latency.dat")
        with open(bulk_dat, "w") as f:
            f.write("# peer up1 up8 down1 down8 (GB/s)\n")
            for p in b.peers:
                if "up" in p.ports:
                    f.write(dat_row(p.name, [m[p.name][k] for k in ("up1", "up8", "down1", "down8")]))
        with open(lat_dat, "w") as f:
            f.write("# peer p50 p99 p999 (us)\n")
            for p in b.peers:
                f.write(dat_row(p.name, [m[p.name][k] for k in ("p50", "p99", "p999")]))
        panels.append(f"""set title 'Bulk throughput (GB/s, higher is better)'
set ylabel 'GB/s'
plot '{bulk_dat}' using 2:xtic(1) title 'up, 1 stream', '' using 3 title 'up, 8 streams', \\
     '' using 4 title 'down, 1 stream', '' using 5 title 'down, 8 streams'""")
        panels.append(f"""set title '64-byte request/response round trip (us, lower is better, log scale)'
set ylabel 'microseconds'
set logscale y
set yrange [*:*]
plot '{lat_dat}' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
unset logscale y
set yrange [0:*]""")
    engines = [p.name for p in b.fx_peers]
    if fx["fanout"]:
        fan_dat = os.path.join(b.tmp, "fanout.dat")
        with open(fan_dat, "w") as f:
            f.write("# outputs " + " ".join(engines) + " (GB/s of the slowest output)\n")
            for n in FANOUT_OUTPUTS:
                f.write(dat_row(f"{n}", [fx["fanout"][e][n]["out_min_GBps"] for e in engines]))
        cols = ", ".join(f"'{fan_dat}' using {i + 2}{':xtic(1)' if i == 0 else ''} title '{e}'"
                         for i, e in enumerate(engines))
        panels.append(f"""set key below
set title 'Fan-out: GB/s per output (slowest) by number of outputs, one input'
set ylabel 'GB/s per output'
plot {cols}""")
    if fx["mirror"]:
        mir_dat = os.path.join(b.tmp, "mirror.dat")
        with open(mir_dat, "w") as f:
            f.write("# mirror " + " ".join(engines) + " (client GB/s, 1 stream up)\n")
            for c in MIRROR_CASES:
                f.write(dat_row(c, [fx["mirror"][e][c]["GBps"] for e in engines]))
        cols = ", ".join(f"'{mir_dat}' using {i + 2}{':xtic(1)' if i == 0 else ''} title '{e}'"
                         for i, e in enumerate(engines))
        panels.append(f"""set key below
set title 'Proxy with a mirror: client GB/s (1 stream up; none / keeps pace / stalls)'
set ylabel 'GB/s'
plot {cols}""")
    if not panels:
        return False
    rows = (len(panels) + 1) // 2
    cols = 1 if len(panels) == 1 else 2
    nl = "\n"
    script = f"""
set terminal pngcairo noenhanced size {750 * cols},{560 * rows} font 'sans,10'
set output '{path}'
set multiplot layout {rows},{cols} title 'ferry bench: proxy on CPU 0, load and backends on CPU 1 (median of {b.a.rounds} rounds)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left
set grid ytics
set xtics rotate by -30
set datafile missing 'NaN'
set yrange [0:*]
{nl.join(panels)}
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
    """Print the results; write benchmarks.md/.json and bench.png to --out."""
    other = [s["cpu0_other"] for wl in b.samples.values() for ss in wl.values() for s in ss
             if "cpu0_other" in s]
    if other and statistics.median(other) > 0.10:
        b.note(f"CPU 0 (the proxies' CPU) was busy with other work for a median "
               f"{statistics.median(other):.0%} of the measured time: numbers are disturbed, "
               "rerun on a quiet machine")
    m, spread = summarise(b)
    fx = fx_summary(b)
    fx_checks(b, fx)
    tg = targets(b, m) if b.peers else []
    ftg = fx_targets(b, fx)
    mach, vers = machine(), versions()
    if b.peers:
        print(text_table(b, m))
        print()
    for t in tg:
        print(f"  {t['result']:<5} {t['engine']:<15} {t['target']:<50} "
              f"{fmt(t['measured'])} (target {t['limit']}, vs {t['against']}"
              + (f"; rounds passing {t['rounds_passing']})" if t["rounds_passing"] else ")"))
    if ftg:
        print(fx_text(fx))
        print()
    for t in ftg:
        shown = pct(t["measured"]) if t["group"] == "mirror" else fmt(t["measured"])
        print(f"  {t['result']:<5} {t['engine']:<15} {t['target']:<70} {shown} (target {t['limit']}"
              + (f"; rounds passing {t['rounds_passing']})" if t["rounds_passing"] else ")"))
    out = b.a.out
    os.makedirs(out, exist_ok=True)
    png_ok = plot(b, m, fx, os.path.join(out, "bench.png"))
    raw = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(b.elapsed, 1),
        "groups": b.groups, "group_seconds": b.group_s,
        "machine": mach, "versions": vers,
        "method": {"seconds": b.a.seconds, "warmup": b.a.warmup, "rounds": b.a.rounds,
                   "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU, "rr_size": RR_SIZE,
                   "connrate_concurrency": CONN_CONC, "connrate_sources": CONN_NSRC,
                   "idle_connections": b.a.idle, "tw_max_buckets": b.tw_max,
                   "fanout_outputs": list(FANOUT_OUTPUTS), "mirror_cases": list(MIRROR_CASES),
                   "fx_max_lag": FX_MAX_LAG},
        "cpu_busy_before": b.busy_before,
        "peers": [{"name": p.name, "kind": p.kind, "ports": p.ports, "events": p.events,
                   "config": p.config, "started_as": p.argv_text} for p in b.peers],
        "fx_peers": [{"name": p.name, "ports": p.ports, "events": p.events, "config": p.config,
                      "started_as": p.argv_text} for p in b.fx_peers],
        "other_processes_cpu_s": b.other_cpu,
        "median": m, "min_max": spread,
        "fanout": fx["fanout"], "mirror": fx["mirror"],
        "samples": b.samples, "targets": tg + ftg, "notes": b.notes,
    }
    with open(os.path.join(out, "benchmarks.json"), "w") as f:
        json.dump(raw, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(os.path.join(out, "benchmarks.md"), "w") as f:
        f.write(markdown(b, m, tg, fx, ftg, mach, vers, png_ok))
    print(f"\nbench: wrote {os.path.relpath(out, ROOT)}/benchmarks.md, benchmarks.json"
          f"{', bench.png' if png_ok else ''} ({b.elapsed:.0f} s; "
          + ", ".join(f"{g} {t:.0f} s" for g, t in b.group_s.items()) + ")")


def markdown(b, m, tg, fx, ftg, mach, vers, png_ok):
    L = []
    L.append("# ferry benchmarks\n")
    L.append(f"Generated by `make bench` (bench/run.py) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in {b.elapsed:.0f} s. "
             "All numbers are medians of the rounds of this one run; the ratios compare peers "
             "measured side by side, interleaved, under the same conditions. Raw numbers: "
             "[benchmarks.json](benchmarks.json).\n")
    if set(b.groups) != set(GROUPS):
        L.append(f"**Partial run** (`--only {','.join(b.groups)}`): the other workloads were not "
                 "measured.\n")
    if b.notes:
        L.append("**Notes from this run:**\n")
        L += [f"- {n}" for n in b.notes]
        L.append("")
    if b.peers:
        L.append(main_markdown(b, m, tg, png_ok))
    elif png_ok:
        L.append("![fan-out and mirror results](bench.png)\n")
    L.append(fx_markdown(b, fx, ftg))
    L.append(machine_markdown(b, mach, vers))
    L.append(method_markdown(b))
    L.append("## Configurations\n")
    for p in b.peers:
        if p.is_proxy:
            L.append(f"### {p.name}\n")
            L.append(f"Started as: `{p.argv_text}` (ports are chosen free at run time).\n")
            L.append(f"```{p.config_lang}\n{p.config.rstrip()}\n```\n")
    if b.fx_peers:
        p = b.fx_peers[0]
        L.append(f"### {' and '.join(q.name for q in b.fx_peers)}: fan-out and mirrors\n")
        L.append("A second ferry instance per engine, used only by the fan-out and mirror "
                 f"workloads. Started as: `{p.argv_text}` (each engine; ports are chosen free at "
                 "run time).\n")
        L.append(f"```yaml\n{p.config.rstrip()}\n```\n")
    L.append("## Reproduce\n")
    L.append("```sh\nmake bench          # builds ./ferry, installs missing packages, runs bench/run.py\n"
             "make bench BENCH_ARGS=--only=fanout,mirror   # just these; report in build/bench/report/\n"
             "/usr/bin/python3 bench/run.py --seconds 3 --rounds 5   # longer\n```\n")
    return "\n".join(L)


def main_markdown(b, m, tg, png_ok):
    """Results, Targets and Ratios of the main groups (every peer)."""
    a = b.a
    L = []
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
        L.append("![throughput and latency per proxy; fan-out and mirrors](bench.png)\n")
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
    return "\n".join(L)


def machine_markdown(b, mach, vers):
    """Machine (with the interference measured during the runs) and Versions."""
    L = []
    L.append("## Machine\n")
    L.append(f"- nproc: {mach['nproc']}")
    L.append(f"- CPU: {mach['cpu']}")
    L.append(f"- kernel: {mach['kernel']} ({mach['os']})")
    other = [s["cpu0_other"] for wl in b.samples.values() for ss in wl.values() for s in ss
             if "cpu0_other" in s]
    if other:
        L.append(f"- CPU 0 busy with work other than the proxy during the bulk, connection-rate, "
                 f"fan-out and mirror runs (from /proc/stat): median {statistics.median(other):.0%}, "
                 f"max {max(other):.0%}")
    top = sorted(b.other_cpu.items(), key=lambda kv: -kv[1])[:6]
    if top:
        L.append("- CPU seconds used by processes other than this benchmark's during the bulk, "
                 "connection-rate, fan-out and mirror runs (top; processes that started and ended "
                 "meanwhile count in their parent): " + ", ".join(f"{n} {v:.1f}" for n, v in top))
    L.append("- CPU busy in the second before the run: " +
             ", ".join(f"{c} {v:.0%}" for c, v in sorted(b.busy_before.items())))
    L.append("")
    L.append("## Versions\n")
    for k, v in vers.items():
        L.append(f"- {k}: `{v}`")
    L.append("")
    return "\n".join(L)


def method_markdown(b):
    a, L = b.a, []
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
- **Fan-out** (ferry only). A second ferry instance per engine (configuration below: the main
  instances' global settings, a fan-out service, three mirror test services). `load fanout`
  connects the outputs, then the input, and sends 1-byte probes until every output has received
  one: ferry delivers only to outputs connected when bytes arrive, and the probes prove every
  output is attached from the outputs' side, without relying on `/status`. Then {a.warmup} s of
  warm-up and {a.seconds} s measured, as for bulk; with `on_lag: block` every output gets every
  byte, so the slowest output paces the input. ferry's CPU as for bulk, over the whole run; the
  busy shares in the fan-out and mirror tables are sampled by run.py inside the measured time
  (from 0.1 s after the warm-up to 0.1 s before the end).
- **Mirrors** (ferry only). `load bulk -d up -n 1` through `mirror-none`, `mirror-keep` and
  `mirror-stall`: the same backend sink, and a mirror served by `load sink` (reads as fast as it
  can) or `load stall` (accepts, never reads; closes when ferry resets the connection), both on
  CPU {LOAD_CPU}. ferry's `/status` mirror `bytes` and `disconnects` are read before and after each
  run.
- **Clean-up.** Every process run.py starts runs in its own process group and is stopped by that
  group's id at the end, also on errors and Ctrl-C.
""")
    return "\n".join(L)


# --------------------------------------------------------------------- main

def parse_groups(text):
    """--only value: comma-separated groups, returned in run order."""
    want = {g.strip() for g in text.split(",") if g.strip()}
    unknown = want - set(GROUPS)
    if unknown or not want:
        raise argparse.ArgumentTypeError(
            f"unknown group(s) {', '.join(sorted(unknown)) or '(none)'}; choose from {','.join(GROUPS)}")
    return [g for g in GROUPS if g in want]


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
    ap.add_argument("--only", type=parse_groups, default=list(GROUPS), metavar="GROUPS",
                    help=f"run only these workload groups, comma-separated ({','.join(GROUPS)})")
    ap.add_argument("--out", metavar="DIR", help="where the report goes (default: docs/ for a "
                    "full run, build/bench/report/ with --only)")
    a = ap.parse_args()
    if a.out is None:
        a.out = DOCS if a.only == list(GROUPS) else os.path.join(ROOT, "build", "bench", "report")
    a.out = os.path.abspath(a.out)
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
    if "idle" in a.only and hard < 2 * a.idle + 100:
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
