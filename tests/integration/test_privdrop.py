"""Dropping privileges (SPEC section 2: `user`, `group`; section 1:
--require-unprivileged): ferry started as root binds its listeners (a port below 1024
too), then runs as the configured user and group -- every id of every thread, checked
in /proc -- and still relays byte-exact under each engine.  A user or group that does
not exist is a configuration error (also for -t); --require-unprivileged refuses to
run as root; a non-root ferry cannot switch to another user.  After the drop, a reload
that needs a privileged port fails clearly and keeps the old configuration, and a
reload that changes the user warns that it needs a restart.

Most tests need root (they are skipped otherwise).  Tests that reload keep the
configuration file in a directory the dropped user can read, since ferry re-reads it
as that user."""

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from helpers import (FERRY_BIN, SANITIZER_MARKERS, T, Deadline, Ferry, connect,
                     duplex_client, fmt_addr, free_port, payload, service, sha, to_yaml,
                     run_ferry, wait_until)

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="dropping privileges needs root")

NOBODY = pwd.getpwnam("nobody")


def _group(*names):
    for n in names:
        try:
            return grp.getgrnam(n)
        except KeyError:
            pass
    return None


NOGROUP = _group("nogroup", "nobody")  # Debian: nogroup; others: nobody
MIB = 1 << 20


def ids(pid, task=None):
    """{'Uid': [real, effective, saved, fs], 'Gid': [...], 'Groups': [...]} of a
    process (or one of its threads) from /proc."""
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in val.split()]
    return out


def tasks(pid):
    return sorted(os.listdir(f"/proc/{pid}/task"))


def privileged_port():
    """A loopback port below 1024 that is free at the moment (root only)."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


def duplex_backend(servers, size=4 * MIB):
    """A backend sending `size - 777` bytes while it reads; (backend, up, down)."""
    up, down = payload(size, seed=11), payload(size - 777, seed=12)
    backend = servers.duplex(down)
    return backend, up, down


def check_traffic(f, backend, up, down, svc=0):
    """One connection through ferry: both directions arrive complete and unchanged."""
    with connect(f.addr(svc), timeout=T(60)) as c:
        got, got_sha = duplex_client(c, up)
    res = backend.result()
    assert (res["received"], res["sha256"]) == (len(up), sha(up)), "client -> backend"
    assert (got, got_sha) == (len(down), sha(down)), "backend -> client"


@pytest.fixture
def readable_dir():
    """A directory the dropped user can read (pytest's tmp_path is 0700 root)."""
    d = tempfile.mkdtemp(prefix="ferry-privdrop-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pferry(readable_dir, engine):
    """Like the `ferry` fixture, with the configuration in readable_dir."""
    made = []

    def make(config, **kw):
        kw.setdefault("name", f"ferry{len(made)}")
        f = Ferry(readable_dir, engine, config=config, **kw)
        made.append(f)
        f.start()
        os.chmod(f.config_path, 0o644)
        return f

    yield make
    problems = []
    for f in made:
        problems += f.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def write(f, cfg):
    f.config_path.write_text(to_yaml(cfg) + "\n")
    os.chmod(f.config_path, 0o644)


# --- the drop itself ------------------------------------------------------------

@root_only
def test_binds_privileged_port_then_runs_as_nobody(ferry, servers):
    port = privileged_port()
    backend, up, down = duplex_backend(servers)
    f = ferry(config={"user": "nobody",
                      "services": [service([backend.addr], listen=[f"127.0.0.1:{port}"])]})
    got = ids(f.pid)
    assert got["Uid"] == [NOBODY.pw_uid] * 4, got
    assert got["Gid"] == [NOBODY.pw_gid] * 4, got
    assert got["Groups"] == [NOBODY.pw_gid], got
    (line,) = f.logs("privileges")
    assert line["user"] == "nobody" and line["uid"] == NOBODY.pw_uid, line
    # The drop is logged before ready.
    events = [d.get("event") for d in f.logs()]
    assert events.index("privileges") < events.index("ready"), events
    check_traffic(f, backend, up, down)
    f.stop()


@root_only
def test_every_thread_drops(ferry, servers):
    """The admin endpoint's and the resolver's threads exist before the drop (a host
    name starts the resolver); glibc changes them too.  Worker threads start later."""
    backend = servers.echo()
    f = ferry(config={"user": "nobody", "workers": 2,
                      "admin": {"listen": fmt_addr("127.0.0.1", free_port())},
                      "services": [service([f"localhost:{backend.port}"])]})
    # main, resolver, admin, worker 1 (started just after the ready line)
    threads = wait_until(lambda: len(tasks(f.pid)) >= 4 and tasks(f.pid), T(5),
                         "four threads")
    for t in threads:
        got = ids(f.pid, t)
        assert got["Uid"] == [NOBODY.pw_uid] * 4, (t, got)
        assert got["Gid"] == [NOBODY.pw_gid] * 4, (t, got)


@root_only
@pytest.mark.skipif(NOGROUP is None, reason="no nogroup/nobody group")
def test_user_and_group(ferry, servers):
    backend, up, down = duplex_backend(servers, size=MIB)
    f = ferry(config={"user": "nobody", "group": NOGROUP.gr_name,
                      "services": [service([backend.addr])]})
    got = ids(f.pid)
    assert got["Uid"] == [NOBODY.pw_uid] * 4, got
    assert got["Gid"] == [NOGROUP.gr_gid] * 4, got
    assert got["Groups"] == [NOGROUP.gr_gid], got
    (line,) = f.logs("privileges")
    assert line["group"] == NOGROUP.gr_name and line["gid"] == NOGROUP.gr_gid, line
    check_traffic(f, backend, up, down)


@root_only
@pytest.mark.skipif(NOGROUP is None, reason="no nogroup/nobody group")
def test_group_only_changes_the_group(ferry, servers):
    backend, up, down = duplex_backend(servers, size=MIB)
    f = ferry(config={"group": NOGROUP.gr_name, "services": [service([backend.addr])]})
    got = ids(f.pid)
    assert got["Uid"] == [0] * 4, got
    assert got["Gid"] == [NOGROUP.gr_gid] * 4, got
    assert got["Groups"] == [NOGROUP.gr_gid], got
    check_traffic(f, backend, up, down)


@root_only
def test_numeric_user_and_group(ferry, servers):
    backend = servers.echo()
    f = ferry(config={"user": str(NOBODY.pw_uid), "group": str(NOBODY.pw_gid),
                      "services": [service([backend.addr])]})
    got = ids(f.pid)
    assert got["Uid"] == [NOBODY.pw_uid] * 4 and got["Gid"] == [NOBODY.pw_gid] * 4, got


# --- names that do not exist ------------------------------------------------------

SVC = """\
services:
  - name: web
    listen: ["127.0.0.1:{port}"]
    backends:
      - address: 127.0.0.1:9001
"""


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
@pytest.mark.parametrize("text,want", [
    ("user: ferry-no-such-user\n",
     'ferry: f.yaml:1:7: user: no such user "ferry-no-such-user" in the user database'),
    ("user: nobody\ngroup: ferry-no-such-group\n",
     'ferry: f.yaml:2:8: group: no such group "ferry-no-such-group" in the group database'),
], ids=["user", "group"])
def test_unknown_name_is_a_config_error(tmp_path, check, text, want):
    (tmp_path / "f.yaml").write_text(text + SVC.format(port=free_port()))
    r = run_ferry((["-t"] if check else []) + ["-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [want], r.stderr
    assert "configuration OK" not in r.stdout


def test_known_names_check_ok(tmp_path):
    (tmp_path / "f.yaml").write_text("user: nobody\n" + SVC.format(port=free_port()))
    r = run_ferry(["-t", "-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration OK"


# --- --require-unprivileged ----------------------------------------------------------

REFUSE = ("ferry: refusing to run as root (--require-unprivileged): set user: in the "
          "configuration")


@root_only
@pytest.mark.parametrize("how", ["no user", "user root", "group only", "quick mode"])
def test_require_unprivileged_refuses_root(tmp_path, how, engine):
    port = free_port()
    extra = {"no user": "", "user root": "user: root\n", "group only": "group: root\n"}
    if how == "quick mode":
        argv = ["--listen", f"127.0.0.1:{port}", "--backend", "127.0.0.1:9001"]
    else:
        (tmp_path / "f.yaml").write_text(extra[how] + SVC.format(port=port))
        argv = ["-c", "f.yaml"]
    r = run_ferry(argv + ["--require-unprivileged", "--engine", engine], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [REFUSE], r.stderr
    # Refused before binding anything.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@root_only
def test_require_unprivileged_with_user_runs(ferry, servers):
    backend, up, down = duplex_backend(servers, size=MIB)
    f = ferry(config={"user": "nobody", "services": [service([backend.addr])]},
              extra_args=["--require-unprivileged"])
    assert ids(f.pid)["Uid"] == [NOBODY.pw_uid] * 4
    check_traffic(f, backend, up, down)


def test_help_lists_require_unprivileged():
    r = run_ferry(["--help"])
    assert r.returncode == 0 and "--require-unprivileged" in r.stdout, r.stdout


# --- started as a non-root user -------------------------------------------------------

def _as_nobody():
    os.setgroups([])
    os.setgid(NOBODY.pw_gid)
    os.setuid(NOBODY.pw_uid)


def spawn_as_nobody(cfg_path, *extra):
    """ferry -c cfg_path started as nobody (from root); returns the Popen."""
    return subprocess.Popen([FERRY_BIN, "-c", cfg_path, *extra], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_nobody, cwd="/")


@root_only
def test_non_root_cannot_switch_user(readable_dir, engine):
    path = os.path.join(readable_dir, "f.yaml")
    with open(path, "w") as fh:
        fh.write("user: daemon\n" + SVC.format(port=free_port()))
    os.chmod(path, 0o644)
    p = spawn_as_nobody(path, "--engine", engine)
    _, err = p.communicate(timeout=T(10))
    assert p.returncode == 1, err
    assert err.startswith('ferry: cannot switch to user "daemon" (uid 1)'), err
    assert f"started as uid {NOBODY.pw_uid}, not root" in err, err


@root_only
def test_non_root_already_that_user_runs(readable_dir, engine, servers):
    """user: names the user ferry already runs as (e.g. systemd's User=): nothing to
    do, and --require-unprivileged is satisfied."""
    backend = servers.echo()
    port = free_port()
    path = os.path.join(readable_dir, "f.yaml")
    with open(path, "w") as fh:
        fh.write("user: nobody\n" + SVC.format(port=port).replace("127.0.0.1:9001",
                                                                  backend.addr))
    os.chmod(path, 0o644)
    p = spawn_as_nobody(path, "--engine", engine, "--require-unprivileged")
    try:
        lines = []
        dl = Deadline(T(10))
        while not any("event=ready" in l for l in lines):
            line = p.stderr.readline()
            assert line or not dl.expired(), "".join(lines)
            assert line, f"ferry exited early: {''.join(lines)}"
            lines.append(line)
        assert any("already running as" in l for l in lines), lines
        with connect(("127.0.0.1", port)) as c:
            c.sendall(b"ping")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(16) == b"ping"
    finally:
        p.send_signal(signal.SIGTERM)
        _, rest = p.communicate(timeout=T(10))
    assert p.returncode == 0, rest
    assert not any(m in rest for m in SANITIZER_MARKERS), rest


# --- reload after the drop -------------------------------------------------------------

def tag_of(addr):
    with connect(addr, timeout=T(10)) as c:
        line = b""
        while not line.endswith(b"\n"):
            d = c.recv(64)
            if not d:
                break
            line += d
        return line.decode().strip()


@root_only
def test_reload_to_privileged_port_fails_and_keeps_serving(pferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    f = pferry({"user": "nobody", "services": [service([a.addr])]})
    port = privileged_port()
    here = f.addr_text()
    write(f, {"user": "nobody",
              "services": [service([b.addr], listen=[here, f"127.0.0.1:{port}"])]})
    f.send_signal(signal.SIGHUP)
    (line,) = f.wait_event("reload_failed")
    assert line["level"] == "error", line
    assert f"127.0.0.1:{port}" in line["error"], line
    assert "Permission denied" in line["error"] and "restart" in line["error"], line
    assert 'user "nobody"' in line["error"], line
    # The old configuration keeps serving, as nobody.
    assert tag_of(f.addr()) == "alpha"
    assert f.running()
    assert ids(f.pid)["Uid"] == [NOBODY.pw_uid] * 4

    # An unprivileged port still works after the drop.
    write(f, {"user": "nobody", "services": [service([b.addr], listen=[here])]})
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload")
    wait_until(lambda: tag_of(f.addr()) == "beta", T(5), "new backend")


@root_only
def test_reload_changing_user_warns(pferry, servers):
    a, b = servers.tag("alpha"), servers.tag("beta")
    f = pferry({"user": "nobody", "services": [service([a.addr])]})
    write(f, {"user": "daemon", "services": [service([b.addr], listen=[f.addr_text()])]})
    f.send_signal(signal.SIGHUP)
    f.wait_event("reload")
    (warn,) = f.wait_event("reload_warning")
    assert warn["level"] == "warn", warn
    assert "restart" in warn["msg"] and '"nobody"' in warn["msg"], warn
    # The rest of the file applied; the user did not change.
    wait_until(lambda: tag_of(f.addr()) == "beta", T(5), "new backend")
    assert ids(f.pid)["Uid"] == [NOBODY.pw_uid] * 4
    assert not f.logs("reload_failed")
