"""Load balancing (SPEC section 3) with tagging backends that reply with their name:
round_robin (smooth weighted), least_conn, random (weighted power of two choices) and
source_hash (Maglev on the client IP)."""

from collections import Counter

import pytest

from helpers import ask_tag, service


def balanced(ferry, backends, balance, weights=None, **opts):
    """Starts ferry with one service over `backends` (tagging servers)."""
    weights = weights or [1] * len(backends)
    bl = [{"address": b.addr, "weight": w} for b, w in zip(backends, weights)]
    return ferry(config={"services": [service(bl, balance=balance, **opts)]})


def sequential_tags(f, n, source=None):
    return [ask_tag(f.addr(), source) for _ in range(n)]


def max_run(seq, item):
    best = run = 0
    for x in seq:
        run = run + 1 if x == item else 0
        best = max(best, run)
    return best


# --- round_robin ------------------------------------------------------------------

def test_round_robin_alternates(ferry, servers):
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "round_robin")
    tags = sequential_tags(f, 12)
    assert all(x != y for x, y in zip(tags, tags[1:])), tags
    assert Counter(tags) == {"a": 6, "b": 6}


def test_round_robin_weights(ferry, servers):
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "round_robin", weights=[3, 1])
    tags = sequential_tags(f, 40)
    assert Counter(tags) == {"a": 30, "b": 10}, tags
    # The pattern repeats every 4 connections: each 4 in a row hold exactly one b.
    for i in range(len(tags) - 3):
        assert tags[i:i + 4].count("b") == 1, tags


def test_round_robin_is_smooth(ferry, servers):
    """Weights 5:1:1 give a a b a c a a (nginx's smooth weighted round robin), not
    five a in a row followed by b and c."""
    a, b, c = servers.tag("a"), servers.tag("b"), servers.tag("c")
    f = balanced(ferry, [a, b, c], "round_robin", weights=[5, 1, 1])
    tags = sequential_tags(f, 70)
    assert Counter(tags) == {"a": 50, "b": 10, "c": 10}, tags
    assert max_run(tags, "a") <= 4, f"not smooth: {''.join(tags)}"
    assert max_run(tags, "b") == 1 and max_run(tags, "c") == 1, "".join(tags)


# --- least_conn ---------------------------------------------------------------------

def test_least_conn_prefers_idle_backend(ferry, servers):
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "least_conn")
    held = [ask_tag(f.addr(), hold=True) for _ in range(4)]
    try:
        assert Counter(t for t, _ in held) == {"a": 2, "b": 2}, [t for t, _ in held]
        # Close the two on b; once ferry has logged them, b is idle and a has two.
        for t, s in held:
            if t == "b":
                s.close()
        f.wait_access(2)
        more = [ask_tag(f.addr(), hold=True) for _ in range(2)]
        held += more
        assert [t for t, _ in more] == ["b", "b"], "new connections must go to idle b"
    finally:
        for _, s in held:
            s.close()


def test_least_conn_weighted(ferry, servers):
    """Active connections relative to weight: with 2:1, six held connections end up
    four on a and two on b whatever the tie order."""
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "least_conn", weights=[2, 1])
    held = [ask_tag(f.addr(), hold=True) for _ in range(6)]
    try:
        assert Counter(t for t, _ in held) == {"a": 4, "b": 2}
    finally:
        for _, s in held:
            s.close()


# --- random (weighted power of two choices) -------------------------------------------

def test_random_follows_weights(ferry, servers):
    """With no load, picks follow the weights (3:1 -> about 75% on a)."""
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "random", weights=[3, 1])
    tags = []
    for i in range(200):
        tags.append(ask_tag(f.addr()))
        f.wait_access(i + 1)  # closed in ferry too: both backends idle again
    share = tags.count("a") / len(tags)
    assert 0.6 <= share <= 0.9, f"share of weight-3 backend: {share:.2f}"


def test_random_prefers_less_loaded(ferry, servers):
    """With load, two choices keep held connections close to even (pure random
    would drift much further apart)."""
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], "random")
    held = [ask_tag(f.addr(), hold=True) for _ in range(40)]
    try:
        counts = Counter(t for t, _ in held)
        assert abs(counts["a"] - counts["b"]) <= 6, counts
    finally:
        for _, s in held:
            s.close()


# --- source_hash -----------------------------------------------------------------------

SOURCES = [f"127.0.0.{i}" for i in range(10, 70)]


def hash_map(f):
    """Which backend each source address in SOURCES is sent to."""
    return {src: ask_tag(f.addr(), source=src) for src in SOURCES}


def test_source_hash_is_sticky(ferry, servers):
    backends = [servers.tag(n) for n in "abc"]
    f = balanced(ferry, backends, "source_hash")
    for src in ("127.0.0.1", "127.0.0.7", "127.0.0.42"):
        tags = sequential_tags(f, 10, source=src)
        assert len(set(tags)) == 1, f"{src} moved between backends: {tags}"


def test_source_hash_spreads(ferry, servers):
    backends = [servers.tag(n) for n in "abc"]
    f = balanced(ferry, backends, "source_hash")
    counts = Counter(hash_map(f).values())
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) >= 5, counts


def test_source_hash_ignores_backend_order(ferry, servers):
    """Two instances listing the same backends in different orders send every client
    to the same backend."""
    a, b, c = (servers.tag(n) for n in "abc")
    f1 = balanced(ferry, [a, b, c], "source_hash")
    f2 = balanced(ferry, [c, a, b], "source_hash")
    m1, m2 = hash_map(f1), hash_map(f2)
    diff = {s: (m1[s], m2[s]) for s in SOURCES if m1[s] != m2[s]}
    assert not diff, f"clients sent to different backends: {diff}"


def test_source_hash_removal_moves_few(ferry, servers):
    """Removing backend c moves the clients that were on c; the others stay (Maglev
    allows a little extra movement, so up to 10% of them may move)."""
    a, b, c = (servers.tag(n) for n in "abc")
    before = hash_map(balanced(ferry, [a, b, c], "source_hash"))
    after = hash_map(balanced(ferry, [a, b], "source_hash"))
    assert all(after[s] in ("a", "b") for s in SOURCES)
    stayed = [s for s in SOURCES if before[s] != "c"]
    moved = [s for s in stayed if after[s] != before[s]]
    assert len(moved) <= max(1, len(stayed) // 10), \
        f"{len(moved)} of {len(stayed)} clients not on c moved: {moved}"


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "source_hash"])
def test_every_algorithm_serves(ferry, servers, balance):
    """Smoke test: each algorithm serves connections and logs the backend it used."""
    a, b = servers.tag("a"), servers.tag("b")
    f = balanced(ferry, [a, b], balance)
    tags = sequential_tags(f, 6)
    lines = f.wait_access(6)
    addr = {"a": a.addr, "b": b.addr}
    assert sorted(addr[t] for t in tags) == sorted(l["backend"] for l in lines)


def test_quick_mode_balance_and_flags(ferry, servers):
    """Quick mode with several backends and every common flag."""
    a, b = servers.tag("a"), servers.tag("b")
    f = ferry(args=["--listen", "127.0.0.1:0", "--backend", a.addr, "--backend", b.addr,
                    "--balance", "round_robin", "--workers", "1", "--log-level", "debug",
                    "--log-format", "text"])
    tags = sequential_tags(f, 6)
    assert all(x != y for x, y in zip(tags, tags[1:])), tags
    assert {l["service"] for l in f.wait_access(6)} == {"default"}
