"""The per-instance key pool: a cached view of groups, keys and settings, plus the I/O around the pure core.

Hot path contract: ``view``, ``authorize``, ``acquire`` touch no store in steady state. The cache is checked
against ``store.version()`` at most every ``refresh_seconds``; with ``background_refresh`` (serverless stores) the
check runs in a helper thread while requests keep using the current view (stale-while-revalidate), so the
staleness bound is ``refresh_seconds`` plus one store round trip. ``report`` writes to the store only when a
key's state actually changes (a failure, a cooldown, or the first success after failures).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gptload import proxyurl
from gptload.cipher import DecryptionFailed, digest
from gptload.errors import GroupNotFound, StoreUnavailable
from gptload.keypool.balancer import Balancer
from gptload.keypool.classify import Verdict
from gptload.keypool.members import MemberChoice
from gptload.keypool.rotation import Rotation
from gptload.keypool.state import Policy, changes_state, transition
from gptload.models import Group, KeyState
from gptload.proxy.group_rules import GroupRules
from gptload.settings import Settings
from gptload.store.base import Store
from gptload.vault.base import Vault

log = logging.getLogger(__name__)
# How far back ``changed_keys`` looks before the last sync: covers clock skew between instances and the store,
# and writes that committed after our read had begun.
STATE_SYNC_MARGIN_SECONDS = 30.0


@dataclass(eq=False)
class LiveKey:
    """A key as one instance sees it. ``state`` is replaced (never mutated) when it changes."""

    id: str
    group: str
    secret: str = field(repr=False)
    state: KeyState
    masked: str = ""

    def can_serve(self, model: str, now: float) -> bool:
        return self.state.can_serve(model, now)


@dataclass(eq=False)
class GroupView:
    group: Group
    settings: Settings
    keys: tuple[LiveKey, ...]
    by_id: dict[str, LiveKey]
    rotation: Rotation
    balancer: Balancer
    proxy_digests: frozenset[bytes]
    secrets: frozenset[str] = frozenset()  # every key's value, to scrub them out of upstream error answers
    rules: GroupRules | None = None  # redirects, overrides, header rules (None: the group uses none of them)
    members: MemberChoice | None = None  # an aggregate's weighted member choice (None: a standard group)

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def is_aggregate(self) -> bool:
        return self.members is not None

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(s.blacklist_threshold, s.bare_429_cooldown_seconds, s.default_quota_cooldown_seconds)


def _rules_of(group: Group) -> GroupRules | None:
    rules = GroupRules.of(group)
    return rules if rules.active else None


class KeyPool:
    def __init__(
        self,
        store: Store,
        vault: Vault,
        *,
        refresh_seconds: float = 5.0,
        background_refresh: bool = False,
        clock: Callable[[], float] = time.time,
        unseal: Callable[[str], str] | None = None,
    ) -> None:
        """``unseal``: the clear form of a sealed ``proxy_url`` (``proxyurl.unseal`` with the cipher); may raise."""
        self._unseal = unseal
        self._store = store
        self._vault = vault
        self._refresh_seconds = refresh_seconds
        self._background = background_refresh
        self._clock = clock
        self._salt = store.salt()
        self._views: dict[str, GroupView] = {}
        self._settings: Settings = Settings()
        self._global_digests: frozenset[bytes] = frozenset()
        self._markers: dict[str, int] | None = None
        self._system: dict[str, Any] = {}
        self._synced_at: dict[str, float] = {}
        self._checked_at = float("-inf")
        self._reload_lock = threading.Lock()  # held across store I/O: never taken on the request path
        self._refresh_flag = threading.Lock()  # guards _refreshing only
        self._refreshing = False
        self._marker_listeners: list[Callable[[dict[str, int]], None]] = []

    def on_markers(self, listener: Callable[[dict[str, int]], None]) -> None:
        """Call ``listener(markers)`` after every reload that found the store's change markers moved (and on the
        first), in the reloading thread: other per-instance caches (access keys) follow the same poll."""
        self._marker_listeners.append(listener)

    # -- cache ----------------------------------------------------------------------------------------------
    def reload(self, *, force: bool = False) -> None:
        """Bring the view up to date with the store, reading only what the markers say changed:
        ``config`` -> settings and groups; ``keys:{g}`` -> that group's keys and secrets; ``state:{g}`` -> the
        keys of that group whose state changed since the last sync. ``force`` re-reads everything."""
        with self._reload_lock:
            self._checked_at = time.monotonic()
            markers = self._store.markers()
            old = self._markers
            if not force and old is not None and markers == old:
                return
            force = force or old is None
            old = old or {}
            started = time.time()
            config_changed = force or markers.get("config", 0) != old.get("config", 0)
            if config_changed:
                self._system = self._store.get_settings()
                groups = self._store.list_groups()
            else:
                groups = [v.group for v in self._views.values()]
            views: dict[str, GroupView] = {}
            for group in groups:
                name = group.name
                previous = self._views.get(name)
                if force or previous is None or markers.get(f"keys:{name}", 0) != old.get(f"keys:{name}", 0):
                    views[name] = self._build_view(group, self._load_keys(group))
                    continue
                if markers.get(f"state:{name}", 0) != old.get(f"state:{name}", 0):
                    since = self._synced_at.get(name, 0.0) - STATE_SYNC_MARGIN_SECONDS
                    for record in self._store.changed_keys(name, since):
                        key = previous.by_id.get(record.id)
                        if key is not None:
                            key.state = record.state
                views[name] = self._build_view(group, previous.keys) if config_changed else previous
            for name in views:
                self._synced_at[name] = started
            self._settings = self._resolve(self._system, None)
            self._global_digests = frozenset(digest(self._salt, k) for k in self._settings.proxy_keys)
            self._views = views
            self._markers = markers
            for listener in self._marker_listeners:
                listener(markers)

    def _load_keys(self, group: Group) -> tuple[LiveKey, ...]:
        if group.is_aggregate:
            return ()  # an aggregate has no keys of its own: its members' views have them
        records = self._store.list_keys(group.name)
        secrets = self._vault.load(group.name)
        return tuple(LiveKey(r.id, group.name, secrets[r.id], r.state, r.masked) for r in records if r.id in secrets)

    def _build_view(self, group: Group, keys: tuple[LiveKey, ...]) -> GroupView:
        previous = self._views.get(group.name)
        members = None
        if group.is_aggregate:
            same = previous is not None and previous.group.sub_groups == group.sub_groups
            members = previous.members if same and previous is not None else None
            members = members or MemberChoice([(m.name, m.weight) for m in group.sub_groups])
        return GroupView(
            group=group,
            settings=self._resolve(self._system, group.settings),
            keys=keys,
            by_id={k.id: k for k in keys},
            rotation=previous.rotation if previous else Rotation(),
            # an aggregate has no upstreams of its own (its members' serve it); its balancer is never asked
            balancer=Balancer([(u.url, u.weight) for u in group.upstreams] or [("", 1)]),
            proxy_digests=frozenset(digest(self._salt, k) for k in group.proxy_keys),
            secrets=frozenset(k.secret for k in keys),
            rules=_rules_of(group),
            members=members,
        )

    def _resolve(self, system: dict[str, Any], group: dict[str, Any] | None) -> Settings:
        """``Settings.resolve`` with a sealed ``proxy_url`` opened: only the resolved view holds the clear URL. One
        that cannot be opened (another ENCRYPTION_KEY) stays sealed: its proxy refuses it (407), nothing goes out
        directly instead."""
        settings = Settings.resolve(system, group)
        if self._unseal is None or not proxyurl.is_sealed(settings.proxy_url):
            return settings
        try:
            return dataclasses.replace(settings, proxy_url=self._unseal(settings.proxy_url))
        except (DecryptionFailed, ValueError) as exc:
            log.error("a sealed proxy_url cannot be decrypted (%s): is ENCRYPTION_KEY the one it was saved with?", exc)
            return settings

    def proxy_urls(self) -> set[str]:
        """The egress proxies the current views use (resolved, "" for direct): ``upstream.Sessions.prune`` keeps
        only their sessions."""
        return {v.settings.proxy_url for v in self._views.values()} | {self._settings.proxy_url}

    def members(self, view: GroupView) -> list[GroupView]:
        """An aggregate's member views with a weight above 0, in its order (members deleted meanwhile are left
        out); ``[]`` for a standard group."""
        if view.members is None:
            return []
        return [self._views[n] for n in view.members.names if n in self._views and not self._views[n].is_aggregate]

    def member_view(self, view: GroupView, name: str) -> GroupView | None:
        """The view of ``name`` if it is ``view`` itself or one of its members (paused ones included)."""
        if name == view.name:
            return view
        if view.members is None or all(m.name != name for m in view.group.sub_groups):
            return None
        member = self._views.get(name)
        return member if member is not None and not member.is_aggregate else None

    def aggregates_of(self, name: str) -> list[str]:
        """Names of the aggregate groups that have ``name`` as a member (from the cached view)."""
        self._ensure_fresh()
        return [v.name for v in self._views.values() if any(m.name == name for m in v.group.sub_groups)]

    def _ensure_fresh(self) -> None:
        if self._markers is None:
            self.reload(force=True)
            return
        if time.monotonic() - self._checked_at < self._refresh_seconds:
            return
        if not self._background:
            self._refresh_quietly()
            return
        with self._refresh_flag:
            if self._refreshing:
                return
            self._refreshing = True
            self._checked_at = time.monotonic()
        threading.Thread(target=self._refresh_quietly, name="gptload-refresh", daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.reload()
        except StoreUnavailable as exc:
            log.warning("store unavailable, serving from cache: %s", exc)
        finally:
            self._refreshing = False

    @property
    def settings(self) -> Settings:
        self._ensure_fresh()
        return self._settings

    def cached_settings(self) -> Settings:
        """The system settings as last loaded, without a freshness check (safe inside a marker listener)."""
        return self._settings

    def views(self) -> list[GroupView]:
        """Every group's cached view, in the groups' display order."""
        self._ensure_fresh()
        return sorted(self._views.values(), key=lambda v: (v.group.sort, v.name))

    # -- hot path -------------------------------------------------------------------------------------------
    def view(self, name: str) -> GroupView:
        self._ensure_fresh()
        view = self._views.get(name)
        if view is None:
            raise GroupNotFound(f"no group named {name!r}")
        return view

    def authorize(self, view: GroupView, presented: str | None, *, presented_digest: bytes | None = None) -> bool:
        """Is ``presented`` one of the group's or the global proxy keys? Compared as HMAC digests, in constant time.
        ``presented_digest``: its digest when the caller already computed it (one HMAC per request)."""
        if not presented:
            return False
        d = presented_digest or digest(self._salt, presented)
        ok = False
        for known in (*view.proxy_digests, *self._global_digests):
            ok |= hmac.compare_digest(d, known)
        return ok

    def authorize_global(self, presented: str | None) -> bool:
        """Is ``presented`` one of the global proxy keys (valid for every group)? Constant time."""
        if not presented:
            return False
        d = digest(self._salt, presented)
        ok = False
        for known in self._global_digests:
            ok |= hmac.compare_digest(d, known)
        return ok

    def acquire(self, view: GroupView, model: str, exclude: set[str]) -> LiveKey | None:
        return view.rotation.pick(view.keys, model, self._clock(), exclude)

    def can_serve(self, view: GroupView, model: str, exclude: set[str]) -> bool:
        """Has ``view`` a key not in ``exclude`` that can serve ``model`` now? (stops at the first one)"""
        now = self._clock()
        return any(k.id not in exclude and k.can_serve(model, now) for k in view.keys)

    def key_by_id(self, view: GroupView, key_id: str) -> LiveKey | None:
        return view.by_id.get(key_id)

    def census(self, view: GroupView, model: str, exclude: set[str]) -> dict[str, int]:
        """How many keys not in ``exclude`` are invalid, disabled (by an admin), cooling for ``model``, or could
        serve it, now."""
        now = self._clock()
        counts = {"invalid": 0, "disabled": 0, "cooling": 0, "available": 0}
        for key in view.keys:
            if key.id in exclude:
                continue
            if key.state.status == "disabled":
                counts["disabled"] += 1
            elif key.state.status != "active":
                counts["invalid"] += 1
            elif not key.can_serve(model, now):
                counts["cooling"] += 1
            else:
                counts["available"] += 1
        return counts

    def retry_after(self, view: GroupView, model: str) -> float | None:
        """Seconds until the first cooling key can serve ``model`` again (None if no key will by itself)."""
        now = self._clock()
        soonest: float | None = None
        for key in view.keys:
            if key.state.status != "active":
                continue
            blocking = [c.until for c in key.state.live_cooldowns(now) if c.model in (model, "*")]
            if blocking:
                until = max(blocking)
                soonest = until if soonest is None else min(soonest, until)
        return None if soonest is None else max(0.0, soonest - now)

    def report(self, view: GroupView, key: LiveKey, verdict: Verdict, model: str) -> None:
        """Apply an attempt's verdict: locally at once, then in the store when the state changes."""
        now = self._clock()
        if not changes_state(key.state, verdict, model, now):
            return
        policy = view.policy
        key.state = transition(key.state, verdict, model, now, policy)
        try:
            record = self._store.apply_verdict(view.name, key.id, verdict, model, now, policy)
        except StoreUnavailable as exc:
            log.warning("could not persist the state of key %s: %s", key.id, exc)
            return
        if record is not None:
            key.state = record.state
