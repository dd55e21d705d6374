"""Which member of an aggregate group serves the next request: smooth weighted round robin (nginx's algorithm)
over the members that can serve it now. Pure and thread-safe: no I/O, no clock.

The caller says which members are *eligible* for this request (a key able to serve the model it will send, not
yet tried by this request; see ``proxy.forwarder``); a member that is not eligible is skipped without touching
its running weight, exactly as nginx skips a peer that is down, so the others keep their proportions among
themselves and the skipped one comes back into the rotation where it left off. Weight 0 = paused: never picked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


class MemberChoice:
    """``pick(eligible)`` returns the next member's name by weight among the eligible ones, or None if none is.

    Weights 3/1 give a a b a a a b a..., interleaved rather than in runs; over 300 picks each member's share is
    within one pick of its weight's share. The sequence depends only on the weights and the eligibility answers
    (deterministic)."""

    def __init__(self, members: Sequence[tuple[str, int]]) -> None:
        self._names = [name for name, _ in members]
        self._weights = [max(0, int(w)) for _, w in members]
        self._current = [0] * len(self._names)
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Every member with a weight above 0, in the aggregate's order."""
        return [n for n, w in zip(self._names, self._weights, strict=True) if w > 0]

    def pick(self, eligible: Callable[[str], bool]) -> str | None:
        """The next member among those ``eligible(name)`` accepts (asked once per active member and call)."""
        with self._lock:
            best = -1
            total = 0
            for i, (name, weight) in enumerate(zip(self._names, self._weights, strict=True)):
                if weight <= 0 or not eligible(name):
                    continue
                self._current[i] += weight
                total += weight
                if best < 0 or self._current[i] > self._current[best]:
                    best = i
            if best < 0:
                return None
            self._current[best] -= total
            return self._names[best]
