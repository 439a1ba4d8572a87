#!/usr/bin/env python3
"""idle_rss.py - ferry's resident memory with N idle proxied connections.

Starts a backend that accepts and holds connections, ferry in front of it,
opens N client connections through ferry, waits until ferry holds N backend
connections, and prints RSS before and after and the cost per connection.

    python3 bench/idle_rss.py ./ferry 9000 [--engine epoll]

Loopback only; every wait has a deadline.  The hard open-file limit here is
20,000, so a proxy holds at most about 9,000 client connections (each needs
a client and a backend descriptor).
"""
import argparse, os, resource, selectors, socket, subprocess, sys, tempfile, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ferry")
    ap.add_argument("n", type=int)
    ap.add_argument("--engine", default="epoll")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    bport, fport = free_port(), free_port()
    held = []
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", bport))
    lsock.listen(4096)
    lsock.settimeout(0.2)
    stop = threading.Event()

    def backend():
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
                held.append(c)
            except socket.timeout:
                pass

    t = threading.Thread(target=backend, daemon=True)
    t.start()

    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"""max_connections: {a.n + 100}
log:
  access: false
services:
  - name: idle
    listen: ["127.0.0.1:{fport}"]
    backends:
      - address: 127.0.0.1:{bport}
""")
    cfg.close()
    p = subprocess.Popen([a.ferry, "-c", cfg.name, "--engine", a.engine],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    for line in p.stderr:
        if "event=ready" in line:
            break
        if time.time() > deadline:
            sys.exit("ferry did not get ready")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    time.sleep(0.2)
    before = rss_kib(p.pid)
    clients = []
    for i in range(a.n):
        c = socket.create_connection(("127.0.0.1", fport), timeout=5)
        clients.append(c)
    deadline = time.time() + 30
    while len(held) < a.n and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    after = rss_kib(p.pid)
    ok = len(held) >= a.n
    per = (after - before) * 1024 / a.n
    print(f"engine={a.engine} connections={len(held)} rss_before_kib={before} "
          f"rss_after_kib={after} per_connection_bytes={per:.0f}")
    for c in clients:
        c.close()
    for c in held:
        c.close()
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        sys.exit("ferry did not stop within 15 s of SIGTERM")
    stop.set()
    os.unlink(cfg.name)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
