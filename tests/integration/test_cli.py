"""Command line (SPEC section 1): usage errors exit 2, invalid configurations and
start-up failures exit 1 with `ferry: FILE:LINE:COL: key.path: message`, -t / -h / -V
exit 0, and keys of later issues are rejected with "not supported yet"."""

import re
import socket

import pytest

from helpers import ENGINES, fmt_addr, free_port, run_ferry

GOOD = """\
services:
  - name: web
    listen: ["127.0.0.1:{port}"]
    balance: round_robin
    backends:
      - address: 127.0.0.1:9001
"""


def addr():
    return fmt_addr("127.0.0.1", free_port())


@pytest.fixture
def good_file(tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(GOOD.format(port=free_port()))
    return p


# --- usage errors: exit 2 ----------------------------------------------------

USAGE_ERRORS = {
    "no arguments": [],
    "unknown long flag": ["--bogus"],
    "unknown short flag": ["-Z"],
    "bad engine": ["--listen", "{L}", "--backend", "{B}", "--engine", "foo"],
    "bad workers": ["--listen", "{L}", "--backend", "{B}", "--workers", "x"],
    "bad log level": ["--listen", "{L}", "--backend", "{B}", "--log-level", "x"],
    "bad log format": ["--listen", "{L}", "--backend", "{B}", "--log-format", "x"],
    "bad balance": ["--listen", "{L}", "--backend", "{B}", "--balance", "x"],
    "misspelt balance": ["--listen", "{L}", "--backend", "{B}", "--balance", "leastconn"],
    "backend without listen": ["--backend", "{B}"],
    "listen without backend": ["--listen", "{L}"],
    "config and listen": ["-c", "{C}", "--listen", "{L}", "--backend", "{B}"],
    "check without config": ["-t"],
    "listen missing argument": ["--listen"],
    "backend missing argument": ["--listen", "{L}", "--backend"],
    "config missing argument": ["-c"],
    "engine missing argument": ["--listen", "{L}", "--backend", "{B}", "--engine"],
}


@pytest.mark.parametrize("argv", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_error_exits_2(argv, good_file):
    subst = {"{L}": addr(), "{B}": addr(), "{C}": str(good_file)}
    argv = [subst.get(a, a) for a in argv]
    r = run_ferry(argv)
    assert r.returncode == 2, f"argv {argv}: exit {r.returncode}, stderr {r.stderr!r}"
    assert r.stderr.startswith("ferry: "), f"argv {argv}: stderr {r.stderr!r}"


@pytest.mark.parametrize("flag,value", [("--engine", "foo"), ("--workers", "x"),
                                        ("--log-level", "x"), ("--log-format", "x"),
                                        ("--balance", "x")])
def test_bad_flag_value_is_named(flag, value):
    r = run_ferry(["--listen", addr(), "--backend", addr(), flag, value])
    assert r.returncode == 2
    # The message says which flag or which value is wrong.
    assert flag.lstrip("-") in r.stderr or value in r.stderr, r.stderr


# --- -h, -V, -t ------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag):
    r = run_ferry([flag])
    assert r.returncode == 0, r.stderr
    assert "--listen" in r.stdout and "-c" in r.stdout, r.stdout


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    r = run_ferry([flag])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and re.match(r"^ferry \S+", lines[0]), r.stdout
    engines = [l for l in lines if l.startswith("engines:")]
    assert engines, f"no 'engines:' line in {r.stdout!r}"
    assert "epoll" in engines[0]


def test_check_good_file(good_file):
    r = run_ferry(["-t", "-c", str(good_file)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration OK"


BAD_BALANCE = """\
services:
  - name: web
    listen: ["127.0.0.1:8080"]
    balance: leastconn
    backends:
      - address: 127.0.0.1:9001
"""
BAD_BALANCE_MSG = ('ferry: f.yaml:4:14: services[0].balance: unknown value "leastconn" '
                   "(expected round_robin, least_conn, random, source_hash)")


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_bad_file_message(tmp_path, check):
    (tmp_path / "f.yaml").write_text(BAD_BALANCE)
    r = run_ferry((["-t"] if check else []) + ["-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert BAD_BALANCE_MSG in r.stderr.splitlines(), r.stderr
    assert "configuration OK" not in r.stdout


def test_missing_config_file(tmp_path):
    r = run_ferry(["-t", "-c", "nothere.yaml"], cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("ferry: ") and "nothere.yaml" in r.stderr, r.stderr


# --- config errors name FILE:LINE:COL and the key ---------------------------------

SVC = """\
services:
  - name: web
    listen: ["127.0.0.1:8080"]
"""
BACKEND = """\
    backends:
      - address: 127.0.0.1:9001
"""

# (file text, line of the error, key path in the message)
CONFIG_ERRORS = {
    "unknown top-level key": ("colour: blue\n" + SVC + BACKEND, 1, "colour"),
    "unknown service key": (SVC + "    colour: blue\n" + BACKEND, 4, "services[0].colour"),
    "unknown backend key": (SVC + BACKEND + "        colour: blue\n", 6,
                            "services[0].backends[0].colour"),
    "duration without unit": (SVC + "    connect_timeout: 5\n" + BACKEND, 4,
                              "services[0].connect_timeout"),
    "bad duration": (SVC + "    idle_timeout: soon\n" + BACKEND, 4,
                     "services[0].idle_timeout"),
    "bad size": ("buffer_size: 12XB\n" + SVC + BACKEND, 1, "buffer_size"),
    "weight 0": (SVC + BACKEND + "        weight: 0\n", 6, "services[0].backends[0].weight"),
    "weight 257": (SVC + BACKEND + "        weight: 257\n", 6,
                   "services[0].backends[0].weight"),
    "address without port": (SVC + "    backends:\n      - address: 127.0.0.1\n", 5,
                             "services[0].backends[0].address"),
    "bad listen address": ("services:\n  - name: web\n    listen: [\"127.0.0.1:99999\"]\n"
                           + BACKEND, 3, "services[0].listen[0]"),
    "bad service name": ("services:\n  - name: Web!\n    listen: [\"127.0.0.1:8080\"]\n"
                         + BACKEND, 2, "services[0].name"),
    "duplicate service name": (SVC + BACKEND + "  - name: web\n"
                               "    listen: [\"127.0.0.1:8081\"]\n" + BACKEND, 6,
                               "services[1].name"),
    "bad log level": ("log:\n  level: loud\n" + SVC + BACKEND, 2, "log.level"),
    "bad log format": ("log:\n  format: xml\n" + SVC + BACKEND, 2, "log.format"),
    "bad engine": ("engine: turbo\n" + SVC + BACKEND, 1, "engine"),
    "negative retries": (SVC + "    retries: -1\n" + BACKEND, 4, "services[0].retries"),
    "bad cidr": (SVC + "    allow: [\"300.0.0.0/8\"]\n" + BACKEND, 4, "services[0].allow[0]"),
    "bad max_connections": ("max_connections: many\n" + SVC + BACKEND, 1, "max_connections"),
}


@pytest.mark.parametrize("text,line,key", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_config_error_location(tmp_path, text, line, key):
    (tmp_path / "f.yaml").write_text(text)
    r = run_ferry(["-t", "-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1, f"exit {r.returncode}; stdout {r.stdout!r} stderr {r.stderr!r}"
    want = re.compile(rf"^ferry: f\.yaml:{line}:\d+: {re.escape(key)}: \S")
    assert any(want.match(l) for l in r.stderr.splitlines()), \
        f"expected 'ferry: f.yaml:{line}:COL: {key}: ...', got {r.stderr!r}"


def test_yaml_syntax_error_location(tmp_path):
    (tmp_path / "f.yaml").write_text(SVC + "    balance: [round_robin\n" + BACKEND)
    r = run_ferry(["-t", "-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1
    assert re.match(r"^ferry: f\.yaml:\d+:\d+: ", r.stderr), r.stderr


def test_proxy_service_without_backends(tmp_path):
    (tmp_path / "f.yaml").write_text(SVC)
    r = run_ferry(["-t", "-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1
    assert re.match(r"^ferry: f\.yaml:\d+:\d+: services\[0\]", r.stderr), r.stderr
    assert "backends" in r.stderr


# --- features of later issues ---------------------------------------------------

NOT_YET = {
    "fan-out accept_proxy_protocol": (
        "services:\n  - name: feed\n    mode: fanout\n    listen: [\"127.0.0.1:7000\"]\n"
        "    accept_proxy_protocol: true\n    inputs:\n      from: [\"127.0.0.1\"]\n"
        "    outputs:\n      from: [\"127.0.0.2\"]\n",
        "accept_proxy_protocol"),
}


@pytest.mark.parametrize("text,key", NOT_YET.values(), ids=NOT_YET.keys())
def test_later_feature_not_supported_yet(tmp_path, text, key):
    (tmp_path / "f.yaml").write_text(text)
    r = run_ferry(["-t", "-c", "f.yaml"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "not supported yet" in r.stderr and key in r.stderr, r.stderr
    assert re.match(r"^ferry: f\.yaml:\d+:\d+: ", r.stderr), r.stderr


# --- start-up failures: exit 1 -----------------------------------------------------

@pytest.mark.parametrize("mode", ["quick", "file"])
def test_listen_address_in_use(tmp_path, engine, mode):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = fmt_addr("127.0.0.1", busy.getsockname()[1])
        if mode == "quick":
            argv = ["--listen", taken, "--backend", addr()]
        else:
            (tmp_path / "f.yaml").write_text(GOOD.format(port=busy.getsockname()[1]))
            argv = ["-c", "f.yaml"]
        r = run_ferry(argv + ["--engine", engine], cwd=tmp_path)
    assert r.returncode == 1, f"exit {r.returncode}: {r.stderr!r}"
    assert taken in r.stderr, f"the message should name {taken}: {r.stderr!r}"
