"""Weighted member choice of aggregate groups (gptload.keypool.members): plain values only."""

from __future__ import annotations

import threading
from collections import Counter

from gptload.keypool.members import MemberChoice


def everyone(name: str) -> bool:
    return True


def test_spread_follows_the_weights_within_a_few_percent_over_300_picks():
    choice = MemberChoice([("a", 5), ("b", 3), ("c", 2)])
    picks = Counter(choice.pick(everyone) for _ in range(300))
    for name, share in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(picks[name] / 300 - share) <= 0.02, picks


def test_picks_interleave_rather_than_run():
    choice = MemberChoice([("a", 3), ("b", 1)])
    assert [choice.pick(everyone) for _ in range(8)] == ["a", "a", "b", "a", "a", "a", "b", "a"]


def test_the_sequence_is_deterministic():
    def run() -> list[str | None]:
        choice = MemberChoice([("a", 7), ("b", 2), ("c", 1)])
        return [choice.pick(lambda n, i=i: not (n == "b" and i % 5 == 0)) for i in range(50)]

    assert run() == run()


def test_weight_zero_is_paused_and_never_asked_about():
    asked: list[str] = []
    choice = MemberChoice([("a", 0), ("b", 1)])

    def eligible(name: str) -> bool:
        asked.append(name)
        return True

    assert {choice.pick(eligible) for _ in range(20)} == {"b"}
    assert "a" not in asked
    assert choice.names == ["b"]


def test_an_ineligible_member_is_skipped_and_the_rest_keep_their_proportions():
    choice = MemberChoice([("a", 2), ("b", 1), ("c", 1)])
    picks = Counter(choice.pick(lambda n: n != "a") for _ in range(200))
    assert picks == {"b": 100, "c": 100}


def test_a_skipped_member_returns_to_its_share_when_eligible_again():
    choice = MemberChoice([("a", 1), ("b", 1)])
    for _ in range(10):
        assert choice.pick(lambda n: n == "b") == "b"
    picks = Counter(choice.pick(everyone) for _ in range(100))
    assert picks == {"a": 50, "b": 50}


def test_none_when_no_member_is_eligible():
    choice = MemberChoice([("a", 1), ("b", 0)])
    assert choice.pick(lambda n: False) is None
    assert MemberChoice([]).pick(everyone) is None


def test_thread_safe_counts_add_up():
    choice = MemberChoice([("a", 1), ("b", 1)])
    results: list[str | None] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [choice.pick(everyone) for _ in range(500)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(results) == {"a": 1000, "b": 1000}
