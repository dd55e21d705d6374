"""Resource affinity: which key created a file, cache, batch, operation or upload session.

Bindings are written through to the store (so every instance sees them) and cached per instance; a lookup that
misses the cache reads the store once, and the answer (including "none") is cached briefly. Only requests that
name a resource pay for that read.

An ephemeral token (``auth_tokens/...``, Live API) calls Google by itself, like a key: it is bound, cached, stored and
logged under a digest of it (``stored_name``), never in clear.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from gptload.errors import StoreUnavailable
from gptload.store.base import Binding, Store

log = logging.getLogger(__name__)
_NEGATIVE_TTL = 5.0
# Longest name bound or looked up: Google's resource names and Live resumption handles are far shorter; a longer one
# (a client's choice: a Live setup may carry a 16 MiB handle) is never bound, so it is not looked up, cached or logged.
MAX_NAME = 4096
_TOKEN_PREFIX = "auth_tokens/"  # noqa: S105 - a name prefix, not a secret


def stored_name(name: str) -> str:
    """The name a binding is kept under: an ephemeral token's SHA-256 (a random 128-bit token: no salt needed to
    keep it from being recovered), anything else as it is."""
    if name.startswith(_TOKEN_PREFIX):
        return f"{_TOKEN_PREFIX}sha256-{hashlib.sha256(name.encode()).hexdigest()}"
    return name


class AffinityMap:
    def __init__(self, store: Store, *, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._capacity = capacity
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[Binding | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def bind(self, binding: Binding) -> None:
        if len(binding.name) > MAX_NAME:
            return
        binding = replace(binding, name=stored_name(binding.name))
        self._remember((binding.kind, binding.name), binding, binding.expires_at)
        try:
            self._store.put_binding(binding)
        except StoreUnavailable as exc:
            log.warning("affinity for %s kept in this instance only: %s", binding.name, exc)

    def lookup(self, kind: str, name: str) -> Binding | None:
        if len(name) > MAX_NAME:
            return None
        name = stored_name(name)
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
