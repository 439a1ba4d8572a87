"""pytest fixtures for ferry's integration tests.

  engine   every test that starts ferry runs once per engine in $FERRY_TEST_ENGINES
           (comma separated, default "epoll"); ferry gets `--engine ENGINE`.
  ferry    factory: ferry(config={...}) or ferry(args=[...]) starts a ferry process,
           waits for its "ready" line and returns a helpers.Ferry.  At teardown every
           process still running is stopped, and the test errors if ferry crashed,
           had to be killed, or printed sanitizer output.
  servers  factory of backend servers (helpers.Server and friends), all closed at
           teardown: servers.echo(), .tag(name), .duplex(data, fin_first), .sink(rate),
           .watch(greeting), .reset(...), .blackhole(), .custom(handler).

The machinery itself is in helpers.py.
"""

import faulthandler
import os

import pytest

import helpers
from helpers import (ASAN, ENGINES, FERRY_BIN, SCALE, T, Blackhole, Ferry, Server,
                     echo_handler, make_duplex_handler, make_reset_handler,
                     make_sink_handler, make_watch_handler, tag_handler)

# No single test may take longer than this; a hang dumps every thread's stack and
# ends the run instead of blocking CI forever.
TEST_WATCHDOG = T(150)


def pytest_report_header(config):
    return [f"ferry: {FERRY_BIN} (asan: {ASAN}, time scale: {SCALE:g}), "
            f"engines: {', '.join(ENGINES)}"]


def pytest_sessionstart(session):
    if not os.access(FERRY_BIN, os.X_OK):
        pytest.exit(f"ferry binary not found: {FERRY_BIN} (set FERRY_BIN or run make ferry)",
                    returncode=4)


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(TEST_WATCHDOG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def ferry(tmp_path, engine):
    made = []

    def make(config=None, args=None, start=True, **kw):
        kw.setdefault("name", f"ferry{len(made)}")
        f = Ferry(tmp_path, engine, config=config, args=args, **kw)
        made.append(f)
        if start:
            f.start()
        return f

    yield make
    problems = []
    for f in made:
        problems += f.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class Servers:
    """Creates backend servers and remembers them for teardown."""

    def __init__(self):
        self.made = []

    def _add(self, s):
        self.made.append(s)
        return s

    def custom(self, handler, **kw):
        return self._add(Server(handler, **kw))

    def echo(self, **kw):
        return self.custom(echo_handler, **kw)

    def tag(self, name, **kw):
        return self.custom(tag_handler, name=name, **kw)

    def duplex(self, send_data, fin_first=False, **kw):
        return self.custom(make_duplex_handler(send_data, fin_first), **kw)

    def sink(self, rate_schedule=None, **kw):
        return self.custom(make_sink_handler(rate_schedule), **kw)

    def watch(self, greeting=b"", **kw):
        return self.custom(make_watch_handler(greeting), **kw)

    def reset(self, greeting=b"hello\n", wait_for=b"", **kw):
        return self.custom(make_reset_handler(greeting, wait_for), **kw)

    def blackhole(self, **kw):
        return self._add(Blackhole(**kw))

    def close_all(self):
        for s in self.made:
            s.close()


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.close_all()


@pytest.fixture
def need_ipv6():
    if not helpers.HAS_IPV6:
        pytest.skip("::1 is not available")
