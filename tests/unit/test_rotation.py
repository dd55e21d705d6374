from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from gptload.keypool.balancer import Balancer
from gptload.keypool.rotation import Rotation


@dataclass
class K:
    id: str
    blocked: frozenset = frozenset()

    def can_serve(self, model, now):
        return model not in self.blocked and "*" not in self.blocked


KEYS = [K(f"k{i}") for i in range(5)]


def test_round_robin_from_the_given_offset():
    r = Rotation(rng=lambda n: 3)
    assert [r.pick(KEYS, "m", 0).id for _ in range(6)] == ["k3", "k4", "k0", "k1", "k2", "k3"]


def test_random_offsets_differ_between_instances():
    starts = {Rotation().pick(KEYS, "m", 0).id for _ in range(50)}
    assert len(starts) > 1


def test_skips_blocked_and_excluded_keys_without_piling_on_the_next_one():
    keys = [K("a", frozenset({"m"})), K("b", frozenset({"m"})), K("c"), K("d")]
    r = Rotation(rng=lambda n: 0)
    picks = Counter(r.pick(keys, "m", 0).id for _ in range(100))
    assert picks == {"c": 50, "d": 50}
    assert r.pick(keys, "other", 0) is not None
    assert r.pick(keys, "m", 0, exclude={"c", "d"}) is None


def test_empty_and_all_blocked():
    r = Rotation()
    assert r.pick([], "m", 0) is None
    assert r.pick([K("a", frozenset({"*"}))], "m", 0) is None


def test_even_spread_under_threads():
    r = Rotation(rng=lambda n: 0)
    counts: Counter = Counter()
    lock = threading.Lock()

    def work():
        local = Counter(r.pick(KEYS, "m", 0).id for _ in range(1000))
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(counts.values()) == {1600}


def test_balancer_is_smooth_and_weighted():
    b = Balancer([("a", 5), ("b", 1), ("c", 1)])
    seq = [b.next() for _ in range(7)]
    assert Counter(seq) == {"a": 5, "b": 1, "c": 1}
    assert seq[:2] != ["a", "a"] or seq[2] != "a"  # interleaved, not a run of five
    assert Balancer([("only", 3)]).next() == "only"
