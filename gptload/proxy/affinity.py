"""Resource affinity: which key created a file, cache, batch, operation or upload session.

Bindings are written through to the store (so every instance sees them) and cached per instance; a lookup that
misses the cache reads the store once, and the answer (including "none") is cached briefly. Only requests that
name a resource pay for that read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from gptload.errors import StoreUnavailable
from gptload.store.base import Binding, Store

log = logging.getLogger(__name__)
_NEGATIVE_TTL = 5.0


class AffinityMap:
    def __init__(self, store: Store, *, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._capacity = capacity
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[Binding | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def bind(self, binding: Binding) -> None:
        self._remember((binding.kind, binding.name), binding, binding.expires_at)
        try:
            self._store.put_binding(binding)
        except StoreUnavailable as exc:
            log.warning("affinity for %s kept in this instance only: %s", binding.name, exc)

    def lookup(self, kind: str, name: str) -> Binding | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get((kind, name))
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            binding = self._store.get_binding(kind, name, now)
        except StoreUnavailable as exc:
            log.warning("affinity lookup for %s failed: %s", name, exc)
            return None
        self._remember((kind, name), binding, binding.expires_at if binding else now + _NEGATIVE_TTL)
        return binding

    def _remember(self, slot: tuple[str, str], binding: Binding | None, until: float) -> None:
        with self._lock:
            self._cache[slot] = (binding, until)
            self._cache.move_to_end(slot)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
