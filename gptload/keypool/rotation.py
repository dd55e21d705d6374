"""Round-robin key selection over one instance's view of a group. Pure apart from the random start offset.

Each instance starts at a random offset so that many instances do not hammer the same key first; no shared
pointer is kept in the store (a transactional global pointer was measured and rejected, see docs/architecture.md).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, TypeVar


class Selectable(Protocol):
    @property
    def id(self) -> str: ...

    def can_serve(self, model: str, now: float) -> bool: ...


T = TypeVar("T", bound=Selectable)


class Rotation:
    """Thread-safe round robin: ``pick`` returns the next key that can serve ``model`` and is not excluded.

    The cursor moves past every key it had to skip, so keys after a run of cooling keys are not picked
    more often than the rest.
    """

    def __init__(self, rng: Callable[[int], int] | None = None) -> None:
        self._cursor = (rng or random.randrange)(1 << 30)
        self._lock = threading.Lock()

    def pick(self, keys: Sequence[T], model: str, now: float, exclude: Collection[str] = ()) -> T | None:
        n = len(keys)
        if n == 0:
            return None
        with self._lock:
            start = self._cursor
            for step in range(n):
                key = keys[(start + step) % n]
                if key.id not in exclude and key.can_serve(model, now):
                    self._cursor = start + step + 1
                    return key
            self._cursor = start + 1
        return None
