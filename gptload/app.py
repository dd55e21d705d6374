"""Composition root: ``build_services(config)`` wires store, vault, pool and proxy together. No I/O at import."""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from gptload import logscrub, proxyurl
from gptload.access.admin import AccessAdmin
from gptload.access.gate import AccessGate
from gptload.admin import Admin
from gptload.cipher import Cipher, load_master_key
from gptload.config import Config
from gptload.insights import Insights
from gptload.metrics import Metrics
from gptload.pool import KeyPool
from gptload.proxy.affinity import AffinityMap
from gptload.proxy.forwarder import Forwarder
from gptload.proxy.live import LiveSessions
from gptload.proxy.upstream import Sessions, make_session
from gptload.store import open_store
from gptload.store.base import Store
from gptload.usage import UsageBuffer
from gptload.validation import Validator
from gptload.vault import open_vault
from gptload.vault.base import Vault


@dataclass
class Services:
    config: Config
    store: Store
    vault: Vault
    pool: KeyPool
    affinity: AffinityMap
    usage: UsageBuffer
    forwarder: Forwarder
    admin: Admin
    insights: Insights
    validator: Validator
    session: requests.Session
    started_at: float
    live: LiveSessions  # Live API (WebSocket) sessions: gptload/proxy/live.py
    access: AccessGate
    access_admin: AccessAdmin
    sessions: Sessions | None = None  # the direct session plus one per egress proxy (a group's proxy_url)
    metrics: Metrics = field(default_factory=Metrics)  # this instance's counters, for GET /metrics

    def shutdown(self) -> None:
        """End Live sessions (close 1001, their usage rows added: up to 3 s), flush what is buffered and release
        clients; safe to call twice. At exit this is what ends Live sessions under a server that has no stop hook of
        ours (functions-framework's own gunicorn on Cloud Run)."""
        self.live.shutdown(wait=3.0)
        self.usage.flush()
        if self.sessions is not None:
            self.sessions.close()
        self.session.close()
        self.store.close()


def build_services(
    config: Config, *, store: Store | None = None, vault: Vault | None = None, session: requests.Session | None = None
) -> Services:
    """Create every long-lived object once per process. Tests pass fakes for ``store``, ``vault``, ``session``."""
    logscrub.install()  # no proxy credentials in any log line, whatever echoes them
    master_key: Future[bytes] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="gptload-master-key") as aside:
        # the cipher also seals proxy_url credentials at rest (proxyurl.seal): with VAULT=secretmanager, when an
        # ENCRYPTION_KEY is given
        if (config.vault == "store" and vault is None) or config.encryption_key:
            # scrypt (ENCRYPTION_KEY) releases the GIL: the key is derived while the store's SDK is imported
            master_key = aside.submit(load_master_key, config.encryption_key, config.data_dir)
        store = store or open_store(config)
    cipher = Cipher(master_key.result()) if master_key is not None else None
    vault = vault or open_vault(config, store, cipher)
    pool = KeyPool(
        store,
        vault,
        refresh_seconds=config.state_refresh_seconds,
        background_refresh=config.store != "sqlite",
        unseal=functools.partial(proxyurl.unseal, decrypt=cipher.decrypt) if cipher is not None else None,
    )
    access = AccessGate(store, store.salt(), timezone=lambda: pool.cached_settings().limits_timezone)
    pool.on_markers(access.on_markers)
    pool.reload()
    affinity = AffinityMap(store)
    usage = UsageBuffer(
        store,
        flush_seconds=config.usage_flush_seconds,
        min_events=config.usage_flush_min_events,
        max_seconds=config.usage_flush_max_seconds,
        max_events=config.usage_buffer_max,
    )
    usage.hurry = access.has_daily_limits
    session = session or make_session(config.threads * 2)
    sessions = Sessions(session, config.threads * 2)

    def prune_sessions(_markers: dict[str, int]) -> None:  # the sessions of edited or deleted groups' proxies
        sessions.prune(pool.proxy_urls())

    pool.on_markers(prune_sessions)
    metrics = Metrics()
    usage.observer = metrics.observe
    forwarder = Forwarder(pool, affinity, usage, session, sessions=sessions, metrics=metrics)
    return Services(
        config=config,
        store=store,
        vault=vault,
        pool=pool,
        affinity=affinity,
        usage=usage,
        forwarder=forwarder,
        admin=Admin(
            store, vault, pool, usage, seal=functools.partial(proxyurl.seal, encrypt=cipher.encrypt) if cipher else None
        ),
        insights=Insights(store, pool, usage, forwarder.breakers),
        validator=Validator(store, pool, session, sessions),
        session=session,
        started_at=time.time(),
        live=LiveSessions(pool, affinity, usage, forwarder.breakers, max_sessions=config.live_session_limit()),
        access=access,
        access_admin=AccessAdmin(store, pool, usage),
        sessions=sessions,
        metrics=metrics,
    )
