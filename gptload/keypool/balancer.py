"""Smooth weighted round robin over a group's upstreams (nginx's algorithm). Pure, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Sequence


class Balancer:
    """``next()`` yields upstream URLs in proportion to their weights, interleaved rather than in runs:
    weights 5/1/1 give a a b a c a a, not a a a a a b c."""

    def __init__(self, targets: Sequence[tuple[str, int]]) -> None:
        if not targets:
            raise ValueError("a balancer needs at least one target")
        self._urls = [url for url, _ in targets]
        self._weights = [max(1, int(w)) for _, w in targets]
        self._current = [0] * len(targets)
        self._total = sum(self._weights)
        self._lock = threading.Lock()

    def next(self) -> str:
        if len(self._urls) == 1:
            return self._urls[0]
        with self._lock:
            best = 0
            for i, w in enumerate(self._weights):
                self._current[i] += w
                if self._current[i] > self._current[best]:
                    best = i
            self._current[best] -= self._total
            return self._urls[best]
