"""The access gate: which access key a presented secret is, and whether it may make this request now.

Hot path contract: ``identify``, ``admit`` and ``check_model`` make no store call. The gate keeps

- the access keys, by digest: loaded at start and re-read only when the ``access`` change marker moves (the pool
  reads the markers every ``STATE_REFRESH_SECONDS`` and tells the gate: ``KeyPool.on_markers``);
- the live instance count, from heartbeats this instance publishes every ``HEARTBEAT_SECONDS`` while it serves
  keys with an ``rpm_limit`` (an idle instance stops publishing and drops out after ``LIVE_SECONDS``);
- the deployment's usage of today, re-read every ``SYNC_SECONDS`` while it serves keys with daily limits, from the
  hourly access counters every instance's usage flush writes.

The last two run in one long-lived helper thread that a request wakes when they are due (single flight), never on
the request itself. The limits and the error bounds that follow from these intervals are in docs/api.md, "Access keys".
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable

from gptload.access import rules
from gptload.access.limiter import QUOTA_EXCEEDED, Limiter, Refusal
from gptload.cipher import digest
from gptload.errors import AccessDenied, InvalidProxyKey, QuotaExceeded, RateLimited, StoreUnavailable
from gptload.models import AccessKey
from gptload.store.base import Store
from gptload.store.rollup import hour_of

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
LIVE_SECONDS = 3 * HEARTBEAT_SECONDS  # an instance counts as live this long after its last heartbeat
SYNC_SECONDS = 1.0  # reads 1-2 documents (the current hour's counters) per sync, only while daily limits are in use
FIRST_REPEAT_SECONDS = 1.0  # the second heartbeat follows the first sooner: instances that started together meet
FROZEN_AFTER_SECONDS = 600.0  # an hour ended this long ago is complete (flushes are seconds late), read once


class AccessGate:
    def __init__(
        self,
        store: Store,
        salt: bytes,
        *,
        timezone: Callable[[], str] = lambda: "UTC",
        clock: Callable[[], float] = time.time,
        instance_id: str | None = None,
    ) -> None:
        self._store = store
        self._salt = salt
        self._timezone = timezone
        self._clock = clock
        self.instance_id = instance_id or secrets.token_hex(8)
        self._by_digest: dict[bytes, tuple[bytes, AccessKey]] = {}  # digest -> (the stored digest, the key)
        self._by_id: dict[str, AccessKey] = {}
        self._daily = False
        self._marker: int | None = None
        self._limiter = Limiter()
        self._lock = threading.Lock()  # the limiter's state; held for microseconds, never across I/O
        self._instances = 1
        self._beat_at = float("-inf")  # monotonic
        self._synced_at = float("-inf")
        self._busy = threading.Lock()  # single flight of heartbeats and readings
        self._wake = threading.Event()
        self._helper: threading.Thread | None = None  # one long-lived thread (and one SQLite connection), woken
        self._frozen_day = -1.0
        self._frozen_until = -1.0  # hours before this are complete and summed in _frozen
        self._frozen: dict[str, tuple[int, int]] = {}
        self._day_cache: tuple[str, float, float] = ("", 0.0, float("-inf"))  # (zone, day start, next reset)

    # -- the cached keys ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Read every access key from the store (at start, and when the ``access`` marker moved)."""
        keys = self._store.list_access_keys()
        self._by_digest = {bytes.fromhex(k.digest): (bytes.fromhex(k.digest), k) for k in keys}
        self._by_id = {k.id: k for k in keys}
        self._daily = any(k.enabled and (k.daily_request_limit or k.daily_token_limit) for k in keys)
        with self._lock:
            self._limiter.forget(set(self._by_id))
        never = float("-inf")
        first_beat = self._beat_at == never and any(k.rpm_limit for k in keys)
        first_sync = self._synced_at == never and any(k.daily_request_limit or k.daily_token_limit for k in keys)
        if first_beat or first_sync:
            self._background()  # first heartbeat and usage reading before serving limited keys

    def on_markers(self, markers: dict[str, int]) -> None:
        """The pool read the store's change markers: re-read the keys when ``access`` moved."""
        current = markers.get("access", 0)
        if self._marker is None or current != self._marker:
            try:
                self.load()
            except StoreUnavailable as exc:
                log.warning("cannot re-read access keys, keeping the cached ones: %s", exc)
                return
            self._marker = current

    def has_daily_limits(self) -> bool:
        """Is a daily budget in force? Then the usage buffer flushes every ``USAGE_FLUSH_SECONDS`` even with few
        events (``UsageBuffer.hurry``): the budgets are read from the flushed counters."""
        return self._daily

    def keys(self) -> list[AccessKey]:
        return list(self._by_id.values())

    def get(self, key_id: str) -> AccessKey | None:
        return self._by_id.get(key_id)

    @property
    def instances(self) -> int:
        return self._instances

    # -- hot path -------------------------------------------------------------------------------------------
    def identify(self, presented: str | None) -> AccessKey | None:
        """The access key whose secret is ``presented`` (any status), or None. The lookup is by HMAC digest (a
        hash of a secret keyed with the deployment's salt: its timing tells nothing about the secret), and the
        found digest is compared again in constant time."""
        if not presented or not self._by_digest:
            return None
        return self.lookup(digest(self._salt, presented))

    def digest_of(self, presented: str | None) -> bytes | None:
        """The HMAC digest of a presented secret (None without one): computed once per request, for ``lookup``
        and the legacy proxy-key check alike."""
        return digest(self._salt, presented) if presented else None

    def lookup(self, d: bytes | None) -> AccessKey | None:
        """``identify`` from the presented secret's digest."""
        if d is None:
            return None
        found = self._by_digest.get(d)
        if found is None or not hmac.compare_digest(d, found[0]):
            return None
        return found[1]

    def check(self, key: AccessKey, group: str) -> None:
        """Refuse a disabled or expired key (401) and a group it may not use (403)."""
        status = key.status(self._clock())
        if status != "active":
            raise InvalidProxyKey(f"access key {key.name!r} is {status}")
        if not rules.group_allowed(key, group):
            raise AccessDenied(f"access key {key.name!r} may not use group {group!r}")

    def check_model(self, key: AccessKey, model: str) -> None:
        if not rules.model_allowed(key.models, model):
            raise AccessDenied(f"access key {key.name!r} may not use model {rules.model_name(model)!r}")

    def admit(self, key: AccessKey, model: str = "") -> None:
        """Check ``model`` against the key's models (AccessDenied), then count one request of ``key`` against its
        limits, or raise RateLimited / QuotaExceeded with the seconds to wait (``details["retry_after"]``)."""
        if key.models and not rules.model_allowed(key.models, model):
            self.check_model(key, model)
        if not (key.rpm_limit or key.daily_request_limit or key.daily_token_limit):
            return
        now = self._clock()
        self._tick(key)
        day, reset_at = self._day(now)
        with self._lock:
            refusal = self._limiter.admit(key, now, instances=self._instances, day=day, reset_at=reset_at)
        if refusal is not None:
            raise _error(refusal)

    def allowed_groups(self, presented: str | None, groups: list[str]) -> list[str] | None:
        """The names among ``groups`` an active access key ``presented`` may use; None when it is no active access
        key. (For callers that answer "which groups may this key use", such as an integration endpoint.)"""
        key = self.identify(presented)
        if key is None or key.status(self._clock()) != "active":
            return None
        return rules.allowed_groups(key, groups)

    def used_today(self, key_id: str) -> tuple[int, int]:
        """(requests, tokens) this instance counts for ``key_id`` today."""
        day, _ = self._day(self._clock())
        with self._lock:
            return self._limiter.used_today(key_id, day)

    # -- heartbeats and usage sync (helper thread) ----------------------------------------------------------
    def _day(self, now: float) -> tuple[float, float]:
        """(start of today, next reset) in the limits' time zone, recomputed only when the day or the zone changes."""
        name = self._timezone()
        zone_name, day, reset_at = self._day_cache
        if name != zone_name or not day <= now < reset_at:
            tz = self._zone()
            day, reset_at = rules.day_start(now, tz), rules.next_reset(now, tz)
            self._day_cache = (name, day, reset_at)
        return day, reset_at

    def _zone(self) -> rules.tzinfo:
        try:
            return rules.zone(self._timezone())
        except ValueError:
            return rules.zone("UTC")

    def _tick(self, key: AccessKey) -> None:
        mono = time.monotonic()
        beat_due = key.rpm_limit and mono - self._beat_at >= HEARTBEAT_SECONDS
        sync_due = (key.daily_request_limit or key.daily_token_limit) and mono - self._synced_at >= SYNC_SECONDS
        if (beat_due or sync_due) and not self._wake.is_set() and not self._busy.locked():
            if self._helper is None:
                with self._lock:
                    if self._helper is None:
                        self._helper = threading.Thread(target=self._helper_loop, name="gptload-access", daemon=True)
                        self._helper.start()
            self._wake.set()

    def _helper_loop(self) -> None:
        while True:
            self._wake.wait()
            self._background()
            self._wake.clear()

    def _background(self) -> None:
        if not self._busy.acquire(blocking=False):
            return
        try:
            keys = list(self._by_id.values())
            mono = time.monotonic()
            if any(k.rpm_limit for k in keys) and mono - self._beat_at >= HEARTBEAT_SECONDS:
                first = self._beat_at == float("-inf")
                self._beat_at = mono - (HEARTBEAT_SECONDS - FIRST_REPEAT_SECONDS if first else 0.0)
                self.heartbeat()
            daily = any(k.daily_request_limit or k.daily_token_limit for k in keys)
            if daily and mono - self._synced_at >= SYNC_SECONDS:
                self._synced_at = mono
                self.sync_usage()
        except StoreUnavailable as exc:
            log.warning("access limits: store unavailable, keeping the last readings: %s", exc)
        except Exception:
            log.exception("access limits: heartbeat or usage sync failed")
        finally:
            self._busy.release()

    def heartbeat(self) -> int:
        """Publish this instance and re-count the live ones."""
        now = self._clock()
        self._instances = self._store.heartbeat(self.instance_id, now, now - LIVE_SECONDS)
        return self._instances

    def sync_usage(self) -> None:
        """Re-read the deployment's flushed usage of today for every key with a daily limit. Hours that ended
        ``FROZEN_AFTER_SECONDS`` ago are read once per day and kept; each sync reads the hours after them."""
        now = self._clock()
        day, _ = self._day(now)
        # An hour bucket that began before the local midnight (zones with a :30 or :45 offset) counts for the
        # new day: the budget errs on the strict side by at most that part of an hour.
        first_hour = hour_of(day)
        if self._frozen_day != day:
            self._frozen_day, self._frozen_until, self._frozen = day, first_hour, {}
        frozen_target = max(first_hour, hour_of(now - FROZEN_AFTER_SECONDS))
        fresh: dict[str, tuple[int, int]] = {}
        for row in self._store.access_usage(self._frozen_until):
            target = self._frozen if row["hour"] < frozen_target else fresh
            requests, tokens = target.get(row["access_key"], (0, 0))
            target[row["access_key"]] = (requests + row["requests"] - row["refused"], tokens + row["total_tokens"])
        self._frozen_until = frozen_target
        totals = dict(self._frozen)
        for key_id, (requests, tokens) in fresh.items():
            r0, t0 = totals.get(key_id, (0, 0))
            totals[key_id] = (r0 + requests, t0 + tokens)
        with self._lock:
            for key in self._by_id.values():
                if key.daily_request_limit or key.daily_token_limit:
                    requests, tokens = totals.get(key.id, (0, 0))
                    self._limiter.synced(key.id, day, requests, tokens)


def _error(refusal: Refusal) -> RateLimited | QuotaExceeded:
    kind = QuotaExceeded if refusal.reason == QUOTA_EXCEEDED else RateLimited
    return kind(refusal.message, details={"retry_after": refusal.retry_after})
