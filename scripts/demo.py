#!/usr/bin/env python3
"""demo.py - ferry in two minutes of reading, under 30 seconds of running.

    python3 scripts/demo.py ./ferry        (what `make demo` runs)

What it shows:
  1. two small backends, "alpha" and "beta", that answer every connection with
     their own name;
  2. ferry in front of them with round_robin balancing: six requests, and which
     backend served each one;
  3. ferry's access log: one line per finished connection;
  4. failover: beta stops; the next requests all land on alpha, because ferry
     retries a failed connect on another backend;
  5. a graceful stop with SIGTERM (exit status 0).

Everything runs on 127.0.0.1 with free ports; only the Python standard library is used.
Exits non-zero with a message saying what went wrong if any step fails.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 10.0  # seconds allowed for any single step


class DemoError(Exception):
    pass


def section(title):
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)))


# --- backends -----------------------------------------------------------------

class NameServer:
    """A TCP server on 127.0.0.1 that replies "hello from NAME" to every client."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # port 0: the kernel picks a free port
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # stop() closed the socket
                return
            with conn:
                conn.sendall(f"hello from {self.name}\n".encode())

    def stop(self):
        """Stops listening: connecting to this backend is refused from now on."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- ferry --------------------------------------------------------------------

class FerryProcess:
    """ferry running in the background; its log (stderr) is collected by a thread."""

    def __init__(self, binary, config_path):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([binary, "-c", config_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, what, count=1):
        """Waits until `count` log lines contain `what`; returns those lines."""
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                found = [l for l in self.lines if what in l]
                if len(found) >= count:
                    return found
                if self.proc.poll() is not None:
                    raise DemoError("ferry exited (status %s):\n  %s" % (
                        self.proc.returncode, "\n  ".join(self.lines[-10:])))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"no '{what}' in ferry's log after {TIMEOUT:.0f}s")
                self.cond.wait(min(left, 0.2))

    def stop(self):
        """SIGTERM: ferry closes its listeners, finishes open connections, exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise DemoError("ferry did not exit after SIGTERM") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def request(port):
    """One client connection through ferry; returns the backend's reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        reply = b""
        while not reply.endswith(b"\n"):
            data = s.recv(100)
            if not data:
                break
            reply += data
    if not reply:
        raise DemoError("ferry closed the connection without an answer")
    return reply.decode().strip()


def show_access_log(ferry, count):
    """Waits for `count` access-log lines ("event=close") and prints them."""
    lines = ferry.wait_for("event=close", count)
    for line in lines:
        print("  " + line)
    return len(lines)


# --- the demo -------------------------------------------------------------------

def main():
    if len(sys.argv) != 2:
        print("usage: demo.py PATH_TO_FERRY", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        raise DemoError(f"{binary} is not an executable (build it with `make`)")

    section("1. two backends")
    alpha, beta = NameServer("alpha"), NameServer("beta")
    print(f"  alpha listens on {alpha.addr}")
    print(f"  beta  listens on {beta.addr}")

    section("2. ferry in front of them")
    port = free_port()
    config = f"""\
# ferry demo: one service, two backends, round robin
log:
  access: true            # one log line per finished connection
services:
  - name: demo
    listen: ["127.0.0.1:{port}"]
    balance: round_robin
    connect_timeout: 1s
    retries: 2            # a failed connect is tried on another backend
    backends:
      - address: {alpha.addr}
      - address: {beta.addr}
"""
    with tempfile.TemporaryDirectory(prefix="ferry-demo-") as tmp:
        config_path = os.path.join(tmp, "demo.yaml")
        with open(config_path, "w") as f:
            f.write(config)
        print(f"  config ({config_path}):")
        for line in config.splitlines():
            print("    | " + line)

        ferry = FerryProcess(binary, config_path)
        try:
            ferry.wait_for("event=ready")
            print(f"  ferry is ready on 127.0.0.1:{port}")

            section("3. six requests, round robin")
            served = []
            for i in range(1, 7):
                reply = request(port)
                served.append(reply.split()[-1])
                print(f"  request {i}: {reply}")
            if sorted(served) != ["alpha"] * 3 + ["beta"] * 3:
                raise DemoError(f"expected three answers from each backend, got {served}")

            section("4. ferry's access log")
            seen = show_access_log(ferry, 6)

            section("5. beta goes away: traffic moves to alpha")
            mark = len(ferry.lines)
            beta.stop()
            print("  beta stopped listening")
            for i in range(1, 5):
                reply = request(port)
                print(f"  request {i}: {reply}")
                if not reply.endswith("alpha"):
                    raise DemoError(f"expected alpha after beta stopped, got {reply!r}")
            ferry.wait_for("event=close", seen + 4)
            print("  ferry's log for these requests (warnings are connects to beta):")
            for line in ferry.lines[mark:]:
                print("  " + line)

            section("6. graceful stop")
            status = ferry.stop()
            print(f"  SIGTERM sent; ferry exited with status {status}")
            if status != 0:
                raise DemoError(f"ferry exited with status {status}")
        finally:
            ferry.kill()
            alpha.stop()
            beta.stop()

    section("done")
    print("  ferry balanced, logged, failed over and stopped cleanly.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DemoError, OSError) as e:
        print(f"\ndemo FAILED: {e}", file=sys.stderr)
        sys.exit(1)
