"""Packaging: `make install` into a staging DESTDIR puts every file where the systemd
unit and man(1) look for it, with the unit's paths following PREFIX; a second install
keeps an operator's /etc/ferry/ferry.yaml; `make uninstall` removes everything but that
file.  The example configuration shipped in packaging/ passes `ferry -t` and, on free
ports, really relays."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import FERRY_BIN, REPO, T, echo_roundtrip, fmt_addr, free_port, run_ferry

PREFIX = "/usr"
INSTALLED = {
    "usr/bin/ferry": 0o755,
    "usr/share/man/man1/ferry.1": 0o644,
    "usr/share/man/man5/ferry.yaml.5": 0o644,
    "usr/lib/systemd/system/ferry.service": 0o644,
    "etc/ferry/ferry.yaml": 0o644,
}
EXAMPLE = REPO / "packaging" / "ferry.yaml"


def make(target, destdir):
    """Runs `make TARGET` in the repository as an operator would: not as a sub-make of
    `make test` (MAKEFLAGS, a jobserver and VARIANT=asan must not leak in), so the
    release build is what gets installed."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VARIANT")}
    r = subprocess.run(["make", "--no-print-directory", target, f"DESTDIR={destdir}",
                        f"PREFIX={PREFIX}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=T(300), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"make {target} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    make("install", d)
    return d


def test_every_file_installed(destdir):
    for rel, mode in INSTALLED.items():
        p = destdir / rel
        assert p.is_file(), f"{rel} not installed"
        assert p.stat().st_mode & 0o777 == mode, f"{rel}: mode {oct(p.stat().st_mode)}"
    assert (destdir / "etc/ferry/ferry.yaml").read_text() == EXAMPLE.read_text()
    assert (destdir / "usr/share/man/man5/ferry.yaml.5").read_bytes() == \
        (REPO / "man/ferry.yaml.5").read_bytes()


def test_installed_binary_runs(destdir):
    r = subprocess.run([str(destdir / "usr/bin/ferry"), "-V"], capture_output=True,
                       text=True, timeout=T(10), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ferry "), r.stdout
    r = subprocess.run([str(destdir / "usr/bin/ferry"), "-t", "-c",
                        str(destdir / "etc/ferry/ferry.yaml")], capture_output=True,
                       text=True, timeout=T(10), stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (0, "configuration OK\n"), r.stderr


def test_unit_follows_prefix(destdir):
    unit = (destdir / "usr/lib/systemd/system/ferry.service").read_text()
    lines = unit.splitlines()
    assert "ExecStart=/usr/bin/ferry -c /etc/ferry/ferry.yaml" in lines
    assert "ExecReload=/usr/bin/ferry -t -c /etc/ferry/ferry.yaml" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Type=notify" in lines
    assert "/usr/local" not in unit


def test_unit_verifies(destdir, tmp_path):
    """systemd's own parser accepts the unit (offline: no running systemd needed).
    verify insists that ExecStart exists, so it is pointed at the staged binary."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = (destdir / "usr/lib/systemd/system/ferry.service").read_text()
    staged = tmp_path / "ferry.service"
    staged.write_text(unit.replace("/usr/bin/ferry", str(destdir / "usr/bin/ferry")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(staged)],
                       capture_output=True, text=True, timeout=T(60),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("page", ["man1/ferry.1", "man5/ferry.yaml.5"])
def test_man_pages_render_cleanly(destdir, page):
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    r = subprocess.run(["man", "--warnings", "-l", str(destdir / "usr/share/man" / page)],
                       capture_output=True, text=True, timeout=T(60),
                       env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "SEE ALSO" in r.stdout


def test_reinstall_keeps_config_and_uninstall_removes_the_rest(tmp_path):
    d = tmp_path / "root"
    make("install", d)
    conf = d / "etc/ferry/ferry.yaml"
    mine = conf.read_text().replace("127.0.0.1:9001", "127.0.0.1:9002") + "# edited\n"
    conf.write_text(mine)
    r = make("install", d)
    assert conf.read_text() == mine, "make install overwrote the operator's file"
    assert "kept" in r.stdout
    make("uninstall", d)
    for rel in INSTALLED:
        if rel != "etc/ferry/ferry.yaml":
            assert not (d / rel).exists(), f"{rel} left behind by uninstall"
    assert conf.read_text() == mine


def test_example_config_checks():
    """What `make install` ships as /etc/ferry/ferry.yaml is a valid file."""
    r = run_ferry(["-t", "-c", "packaging/ferry.yaml"], cwd=REPO)
    assert (r.returncode, r.stdout) == (0, "configuration OK\n"), r.stderr


def test_example_config_relays(ferry, servers, tmp_path):
    """The example, moved to free ports, serves: clients on its listener reach its
    backend."""
    backend = servers.echo()
    listen = ("127.0.0.1", free_port())
    text = EXAMPLE.read_text()
    assert '"127.0.0.1:8080"' in text and "127.0.0.1:9001" in text
    text = text.replace('"127.0.0.1:8080"', f'"{fmt_addr(*listen)}"')
    text = text.replace("127.0.0.1:9001", backend.addr)
    conf = tmp_path / "example.yaml"
    conf.write_text(text)
    ferry(args=["-c", str(conf)])
    assert echo_roundtrip(listen) == b"ping\n"
