"""Secret Manager vault (``VAULT=secretmanager``): real keys in sharded JSON secrets, one set per group.

Layout, for group ``g`` and prefix ``p``::

    p-g-keys-0   {"keys": {key_id: key, ...}, "shards": [<version name of shard 1>, <of shard 2>, ...]}
    p-g-keys-n   {"keys": {key_id: key, ...}}                                   (n >= 1)

Shard 0 is the manifest and the commit point: a change writes new versions of the changed shards first, then a
new version of shard 0 naming the exact versions that belong together, then destroys the superseded versions.
A reader therefore sees one consistent set, and an unchanged group costs exactly **one** access call (shard 0's
``latest``), because payloads are cached by version name, and a version's payload never changes.

Why an access call and not a metadata call (``get_secret_version``) to detect changes: metadata reads share a
600 requests/minute project quota, which a handful of instances reloading every few seconds would exhaust;
access calls have a 90,000/minute quota. Shard 0's payload is at most 64 KiB, and the other shards are read
only when the manifest names a version this instance has not seen.

Writers are admin operations (imports, deletes). Two instances writing the same group at the same moment can
lose one write (Secret Manager has no compare-and-set on versions); a reader that finds a manifest naming a
destroyed version falls back to that shard's latest version. Secrets never appear in logs or error messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gptload.config import Config
from gptload.errors import StoreUnavailable

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024  # Secret Manager's limit per version
SHARD_BUDGET = 60 * 1024  # bytes of keys per shard, leaving room for the manifest in shard 0
KEYS_PER_SHARD = 300
TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 3.0


@dataclass
class _Shard:
    secret: str  # projects/{p}/secrets/{id}
    version: str | None  # the version read (None: the secret has no version yet)
    keys: dict[str, str] = field(default_factory=dict)
    changed: bool = False


class SecretManagerVault:
    kind = "secretmanager"

    def __init__(self, client: Any, project: str, prefix: str = "gptload") -> None:
        from google.api_core import exceptions as api_exceptions
        from google.api_core import retry as api_retry

        self._client = client
        self._project = project
        self._prefix = prefix
        self._api = api_exceptions
        self._retry = api_retry.Retry(
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=RETRY_SECONDS,
            predicate=api_retry.if_exception_type(
                api_exceptions.ServiceUnavailable, api_exceptions.InternalServerError, api_exceptions.DeadlineExceeded
            ),
        )
        # version name -> (keys, manifest); a version's payload is immutable, so entries never go stale
        self._payloads: dict[str, tuple[dict[str, str], list[str]]] = {}
        self._heads: dict[str, str] = {}  # group -> the shard-0 version last read or written

    @classmethod
    def from_config(cls, config: Config) -> SecretManagerVault:
        from google.cloud import secretmanager  # imported only when this vault is chosen

        try:
            client = secretmanager.SecretManagerServiceClient()
        except Exception as exc:  # credentials or transport setup: no vault
            raise StoreUnavailable(f"cannot create the Secret Manager client: {type(exc).__name__}") from exc
        return cls(client, config.google_cloud_project or "", config.secret_prefix)

    # -- names ----------------------------------------------------------------------------------------------
    def secret_name(self, group: str, n: int) -> str:
        return f"projects/{self._project}/secrets/{self._prefix}-{group}-keys-{n}"

    @contextmanager
    def _boundary(self, what: str) -> Iterator[None]:
        """API errors become StoreUnavailable naming the operation and error type only (never a payload)."""
        try:
            yield
        except (self._api.GoogleAPICallError, self._api.RetryError) as exc:
            raise StoreUnavailable(f"Secret Manager {what} failed: {type(exc).__name__}") from exc

    def _call(self, method: str, request: dict[str, Any]) -> Any:
        return getattr(self._client, method)(request=request, retry=self._retry, timeout=TIMEOUT_SECONDS)

    # -- reading --------------------------------------------------------------------------------------------
    def load(self, group: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for shard in self._read(group):
            out.update(shard.keys)
        return out

    def _read(self, group: str) -> list[_Shard]:
        """The group's shards as of shard 0's latest version; [] when the group has no secrets."""
        head = self.secret_name(group, 0)
        with self._boundary("read"):
            try:
                response = self._call("access_secret_version", {"name": f"{head}/versions/latest"})
            except self._api.NotFound:
                return []
            keys, manifest = self._remember(response.name, response.payload.data)
            shards = [_Shard(head, response.name, dict(keys))]
            for n, version in enumerate(manifest, start=1):
                shards.append(self._read_shard(self.secret_name(group, n), version))
        self._retire(group, response.name)
        return shards

    def _read_shard(self, secret: str, version: str) -> _Shard:
        hit = self._payloads.get(version)
        if hit is not None:
            return _Shard(secret, version, dict(hit[0]))
        try:
            response = self._call("access_secret_version", {"name": version})
        except (self._api.FailedPrecondition, self._api.NotFound):
            # a concurrent writer destroyed it after we read the manifest: the shard's latest is the best we have
            log.warning("secret version %s is gone; reading the latest version of %s", version, secret)
            response = self._call("access_secret_version", {"name": f"{secret}/versions/latest"})
        keys, _ = self._remember(response.name, response.payload.data)
        return _Shard(secret, response.name, dict(keys))

    def _remember(self, version: str, data: bytes) -> tuple[dict[str, str], list[str]]:
        hit = self._payloads.get(version)
        if hit is None:
            doc = json.loads(data)
            hit = (dict(doc.get("keys", {})), list(doc.get("shards", [])))
            self._payloads[version] = hit
        return hit

    def _retire(self, group: str, head: str) -> None:
        """Keep the cache to what the group's current manifest names (plus other groups' entries)."""
        previous = self._heads.get(group)
        self._heads[group] = head
        if previous is None or previous == head or previous not in self._payloads:
            return
        keep = {head, *self._payloads[head][1]} if head in self._payloads else {head}
        for version in {previous, *self._payloads[previous][1]} - keep:
            self._payloads.pop(version, None)

    # -- writing --------------------------------------------------------------------------------------------
    def add(self, group: str, secrets: dict[str, str]) -> dict[str, bytes]:
        """Write new keys into shards with room (new shards as needed); nothing for the store to keep."""
        if not secrets:
            return {}
        shards = self._read(group) or [_Shard(self.secret_name(group, 0), None)]
        where = {key_id: s for s in shards for key_id in s.keys}
        for key_id, secret in secrets.items():
            shard = where.get(key_id)
            if shard is not None and shard.keys[key_id] == secret:
                continue
            if shard is None:
                shard = next((s for s in shards if _fits(s.keys, key_id, secret)), None)
            if shard is None:
                shard = _Shard(self.secret_name(group, len(shards)), None)
                shards.append(shard)
            shard.keys[key_id] = secret
            shard.changed = True
            where[key_id] = shard
        if any(s.changed for s in shards):
            self._commit(group, shards)
        return {}

    def remove(self, group: str, ids: list[str]) -> None:
        shards = self._read(group)
        gone = set(ids)
        for shard in shards:
            if gone & shard.keys.keys():
                shard.keys = {k: v for k, v in shard.keys.items() if k not in gone}
                shard.changed = True
        if any(s.changed for s in shards):
            self._commit(group, shards)

    def drop_group(self, group: str) -> None:
        """Delete every shard secret of the group (with all their versions)."""
        shards = self._read(group)
        with self._boundary("delete"):
            for shard in reversed(shards):  # shard 0 (the manifest) last
                try:
                    self._call("delete_secret", {"name": shard.secret})
                except self._api.NotFound:
                    continue
        self._heads.pop(group, None)

    def _commit(self, group: str, shards: list[_Shard]) -> None:
        """Changed shards first, then shard 0 naming the new set, then destroy what was superseded."""
        superseded: list[str] = []
        with self._boundary("write"):
            for shard in shards[1:]:
                if shard.changed:
                    old = shard.version
                    shard.version = self._add_version(shard, {"keys": shard.keys})
                    if old:
                        superseded.append(old)
            head = shards[0]
            manifest = [s.version for s in shards[1:]]
            old = head.version
            head.version = self._add_version(head, {"keys": head.keys, "shards": manifest})
            if old:
                superseded.append(old)
            for version in superseded:
                try:
                    self._call("destroy_secret_version", {"name": version})
                except (self._api.FailedPrecondition, self._api.NotFound):
                    continue  # already destroyed (a concurrent writer superseded it too)
                self._payloads.pop(version, None)
        self._heads[group] = head.version

    def _add_version(self, shard: _Shard, doc: dict[str, Any]) -> str:
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        if shard.version is None:
            try:
                secret_id = shard.secret.rsplit("/", 1)[1]
                parent = shard.secret.split("/secrets/", 1)[0]
                self._call(
                    "create_secret",
                    {
                        "parent": parent,
                        "secret_id": secret_id,
                        "secret": {"replication": {"automatic": {}}, "labels": {"managed-by": "gptload"}},
                    },
                )
            except self._api.AlreadyExists:
                pass  # left by an earlier, interrupted write: reuse it
        version = str(self._call("add_secret_version", {"parent": shard.secret, "payload": {"data": data}}).name)
        self._remember(version, data)
        return version


def _fits(keys: dict[str, str], key_id: str, secret: str) -> bool:
    if len(keys) >= KEYS_PER_SHARD:
        return False
    size = len(json.dumps({"keys": {**keys, key_id: secret}}, separators=(",", ":")).encode())
    return size <= SHARD_BUDGET
