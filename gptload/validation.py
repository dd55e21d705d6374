"""Key validation: one minimal request per key (``maxOutputTokens: 1``, the group's test model).

Outcomes, from ``classify``:

- SUCCESS -> the key works: back to active (restore);
- KEY_INVALID -> invalid;
- QUOTA_* -> the key works but is out of quota: active, cooling for that model;
- TRANSIENT, REQUEST_ERROR, network errors -> *inconclusive*: a fault of the probe (our network, Google's
  overload, a wrong test model) is never taken as the key's; nothing changes.

Validation runs as a task whose progress is stored, so any instance can report it (``GET /api/tasks/{id}``).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from gptload.errors import NotFound, ValidationFailed
from gptload.keypool.classify import Kind, Verdict, classify, network_error
from gptload.models import DISABLED, INVALID
from gptload.pool import GroupView, KeyPool, LiveKey
from gptload.proxy import group_rules, upstream_io
from gptload.proxy.upstream import Sessions
from gptload.store.base import Store

log = logging.getLogger(__name__)
PROBE_BODY = json.dumps(
    {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 1}}
).encode()
SCOPES = ("all", "invalid", "selected")
MARK_BATCH = 500  # validation marks stored per write (one Firestore batch)


def probe(session: requests.Session, view: GroupView, key: LiveKey, timeout: float) -> Verdict:
    """Send the minimal request with ``key``; return what the answer means. ``timeout`` bounds the whole probe,
    and at most 1 MiB of the answer is read (decoded): an upstream cannot make a probe hang or fill memory."""
    url = f"{view.balancer.next().rstrip('/')}/v1beta/models/{view.group.test_model}:generateContent"
    try:
        resp = session.post(
            url,
            data=PROBE_BODY,
            timeout=upstream_io.Timeouts(timeout, timeout, total=timeout),
            headers=group_rules.probe_headers(
                view.rules,
                {"Content-Type": "application/json", "x-goog-api-key": key.secret, "Accept-Encoding": "identity"},
                time.time(),
            ),
            stream=True,
            allow_redirects=False,
        )
        try:
            body = upstream_io.read_capped(resp)
        finally:
            resp.close()
    except requests.RequestException as exc:
        return network_error(exc)
    if resp.status_code == 407 and view.settings.proxy_url:  # the egress proxy refused us, not Google (as forwarder)
        return Verdict(Kind.TRANSIENT, reason="network: egress proxy answered 407", network=True)
    return classify(resp.status_code, body)


class Validator:
    def __init__(
        self, store: Store, pool: KeyPool, session: requests.Session, sessions: Sessions | None = None
    ) -> None:
        self._store = store
        self._pool = pool
        self._session = session
        self._sessions = sessions or Sessions(session)  # a group's proxy_url: probes go through it too

    def start(self, group: str, payload: Any) -> dict[str, Any]:
        """Begin validating a group's keys in the background; return the task as first stored."""
        if not isinstance(payload, dict) or payload.get("scope", "all") not in SCOPES:
            raise ValidationFailed(f"scope must be one of {', '.join(SCOPES)}")
        view = self._pool.view(group)
        keys = self.select(view, payload.get("scope", "all"), payload.get("ids"))
        task = {
            "id": secrets.token_hex(8),
            "kind": "validate",
            "group": group,
            "status": "running",
            "total": len(keys),
            "done": 0,
            "valid": 0,
            "invalid": 0,
            "inconclusive": 0,
            "started_at": time.time(),
            "finished_at": None,
            "message": "",
        }
        self._store.put_task(task)
        threading.Thread(target=self._run_task, args=(view, keys, task), name="gptload-validate", daemon=True).start()
        return task

    def task(self, task_id: str) -> dict[str, Any]:
        task = self._store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    @staticmethod
    def select(view: GroupView, scope: str, ids: Any = None) -> list[LiveKey]:
        """The keys a validation of ``scope`` probes; never a disabled key (an admin took it out of use)."""
        if scope == "invalid":
            return [k for k in view.keys if k.state.status == INVALID]
        if scope == "selected":
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ValidationFailed("scope 'selected' needs a non-empty 'ids' list of key ids")
            wanted = set(ids)
            return [k for k in view.keys if k.id in wanted and k.state.status != DISABLED]
        return [k for k in view.keys if k.state.status != DISABLED]

    def validate(self, view: GroupView, keys: list[LiveKey], progress: Any = None) -> dict[str, int]:
        """Probe ``keys`` with bounded concurrency and apply the outcomes; return counts."""
        s = view.settings
        counts = {"valid": 0, "invalid": 0, "inconclusive": 0}
        outcomes: dict[str, str] = {}  # marks not yet stored (validation, validated_at)
        lock = threading.Lock()

        def store_marks() -> None:
            with lock:
                batch = dict(outcomes)
                outcomes.clear()
            self._store.record_validations(view.name, batch, time.time())

        def one(key: LiveKey) -> None:
            verdict = probe(self._sessions.for_proxy(s.proxy_url), view, key, s.key_validation_timeout_seconds)
            outcome = self._apply(view, key, verdict)
            with lock:
                counts[outcome] += 1
                outcomes[key.id] = outcome
                full = len(outcomes) >= MARK_BATCH
                if progress is not None:
                    progress(dict(counts))
            if full:
                store_marks()

        if keys:
            with ThreadPoolExecutor(max_workers=min(s.key_validation_concurrency, len(keys))) as pool:
                list(pool.map(one, keys))
            store_marks()
            self._pool.reload()
        return counts

    def _apply(self, view: GroupView, key: LiveKey, verdict: Verdict) -> str:
        now = time.time()
        if verdict.kind is Kind.SUCCESS:
            self._store.restore_keys(view.name, [key.id])
            return "valid"
        if verdict.kind is Kind.KEY_INVALID:
            self._store.apply_verdict(view.name, key.id, verdict, view.group.test_model, now, view.policy)
            return "invalid"
        if verdict.kind in (Kind.QUOTA_DAY, Kind.QUOTA_MINUTE, Kind.QUOTA_BARE):
            self._store.restore_keys(view.name, [key.id])
            self._store.apply_verdict(view.name, key.id, verdict, view.group.test_model, now, view.policy)
            return "valid"
        return "inconclusive"

    def _run_task(self, view: GroupView, keys: list[LiveKey], task: dict[str, Any]) -> None:
        last_write = 0.0

        def progress(counts: dict[str, int]) -> None:
            nonlocal last_write
            task.update(counts, done=sum(counts.values()))
            if time.monotonic() - last_write > 0.5:  # bound store writes on big groups
                last_write = time.monotonic()
                self._store.put_task(dict(task))

        try:
            counts = self.validate(view, keys, progress)
            task.update(counts, done=sum(counts.values()), status="done")
        except Exception as exc:
            log.exception("validation task %s failed", task["id"])
            task.update(status="failed", message=f"{type(exc).__name__}")
        task["finished_at"] = time.time()
        self._store.put_task(dict(task))
