"""Admin operations on groups, keys and settings: validation and orchestration of store, vault and pool.

Framework-free; ``web.router`` maps HTTP onto these methods. Every method that changes what the proxy serves
reloads this instance's pool at once; other instances catch up through the store's version marker.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gptload import proxyurl
from gptload import settings as settings_schema
from gptload.cipher import fingerprint
from gptload.errors import Conflict, GroupNotFound, NotFound, ValidationFailed
from gptload.keypool.keytext import KEY_PATTERN, ParsedKeys, mask, parse_keys, scrub
from gptload.models import (
    AGGREGATE,
    DISABLED,
    GROUP_TYPES,
    INVALID,
    KEY_SORTS,
    KEY_STATUSES,
    STANDARD,
    Group,
    KeyQuery,
    KeyRecord,
    KeyState,
    Upstream,
)
from gptload.pool import KeyPool
from gptload.proxy import group_rules
from gptload.store.base import Store, chunks
from gptload.usage import UsageBuffer
from gptload.vault.base import Vault

GROUP_NAME = re.compile(r"[a-z0-9_-]{1,100}")  # always .fullmatch: "$" would also match before a final "\n"
DEFAULT_UPSTREAM = "https://generativelanguage.googleapis.com"
_GROUP_FIELDS = {
    "name",
    "display_name",
    "description",
    "upstreams",
    "proxy_keys",
    "test_model",
    "settings",
    "sort",
    "group_type",
    "sub_groups",
}
MAX_SUB_GROUPS = 100
SUB_GROUP_WEIGHT_MAX = 1000
# The request rules (gptload/proxy/group_rules.py), each with its check (ValueError -> 400 naming the field).
_RULE_FIELDS = {
    "model_redirect_rules": group_rules.check_redirects,
    "model_redirect_strict": group_rules.check_strict,
    "param_overrides": group_rules.check_overrides,
    "header_rules": group_rules.check_header_rules,
}
_GROUP_FIELDS |= set(_RULE_FIELDS)
SORT_MIN, SORT_MAX = -(2**31), 2**31 - 1
IMPORT_TASK_THRESHOLD = 1000  # an import of more valid keys runs as a task (202 + GET /api/tasks/{id})
IMPORT_CHUNK = 1000  # keys encrypted and written per step of an import (bounds memory and store calls)
REJECTED_SHOWN = 20  # rejected import lines listed in an answer
SEARCH_MAX = 200  # characters of a key search
log = logging.getLogger(__name__)


class Admin:
    def __init__(
        self, store: Store, vault: Vault, pool: KeyPool, usage: UsageBuffer, *, seal: Callable[[str], str] | None = None
    ) -> None:
        """``seal``: a proxy_url with its credentials encrypted (``proxyurl.seal`` with the cipher); None when no
        cipher is configured (VAULT=secretmanager without ENCRYPTION_KEY): credentials are then refused."""
        self._seal = seal
        self._store = store
        self._vault = vault
        self._pool = pool
        self._usage = usage
        self._salt = store.salt()

    # -- groups ---------------------------------------------------------------------------------------------
    def create_group(self, payload: Any) -> dict[str, Any]:
        fields = _group_fields(payload, creating=True)
        fields = self._aggregate_fields(fields, payload, current=None)
        now = time.time()
        if "settings" in fields:
            fields["settings"] = self._sealed(fields["settings"])
        group = Group.from_dict({"sort": self._next_sort(), **fields, "created_at": now, "updated_at": now})
        _check_rules(group)
        self._store.create_group(group)
        self._pool.reload()
        return self.group_dict(group)

    def update_group(self, name: str, payload: Any) -> dict[str, Any]:
        current = self._require(name)
        fields = _group_fields(payload, creating=False)
        if "name" in fields and fields["name"] != name:
            raise ValidationFailed("a group cannot be renamed", details={"fields": {"name": "cannot change"}})
        if "settings" in fields:  # a masked secret sent back (proxy_url) keeps the stored one
            fields["settings"] = self._sealed(settings_schema.keep_stored(fields["settings"], current.settings))
        fields = self._aggregate_fields(fields, payload, current=current)
        merged = {**current.to_dict(), **fields, "updated_at": time.time()}
        group = Group.from_dict(merged)
        _check_rules(group)
        self._store.update_group(group)
        self._pool.reload()
        return self.group_dict(group)

    def delete_group(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Delete a group, its keys and secrets. A member of aggregates is refused (409 naming them) unless
        ``force``, which first removes it from those aggregates."""
        self._require(name)
        users = [g for g in self._store.list_groups() if any(m.name == name for m in g.sub_groups)]
        if users and not force:
            names = ", ".join(g.name for g in users)
            raise Conflict(
                f"group {name!r} is a member of the aggregate group(s) {names}; remove it from them first, "
                "or delete with ?force=true to remove it from them",
                details={"aggregates": [g.name for g in users]},
            )
        for aggregate in users:
            kept = [m.to_dict() for m in aggregate.sub_groups if m.name != name]
            self._store.update_group(
                Group.from_dict({**aggregate.to_dict(), "sub_groups": kept, "updated_at": time.time()})
            )
        deleted = self._store.delete_group(name)
        self._vault.drop_group(name)
        self._pool.reload()
        out: dict[str, Any] = {"deleted": name, "keys_deleted": deleted}
        if users:
            out["removed_from_aggregates"] = [g.name for g in users]
        return out

    def list_groups(self) -> list[dict[str, Any]]:
        groups = self._store.list_groups()
        return [{**self.group_dict(g), "used_by": _used_by(g.name, groups)} for g in groups]

    def get_group(self, name: str) -> dict[str, Any]:
        group = self._require(name)
        return {**self.group_dict(group), "used_by": _used_by(name, self._store.list_groups())}

    def require_standard(self, name: str) -> None:
        """Refuse key operations on an aggregate group (it has no keys: its members do)."""
        group = self._require(name)
        if group.is_aggregate:
            members = ", ".join(m.name for m in group.sub_groups) or "none yet"
            raise ValidationFailed(
                f"group {name!r} is an aggregate: it has no keys of its own; manage the keys of its member "
                f"groups ({members})",
                details={"fields": {"group_type": "aggregate groups have no keys"}},
            )

    def _aggregate_fields(
        self, fields: dict[str, Any], payload: dict[str, Any], current: Group | None
    ) -> dict[str, Any]:
        """Check ``group_type`` and ``sub_groups`` against the other groups: an aggregate's members are existing
        standard groups, each once, not the aggregate itself; an aggregate has no upstreams. 400 naming the field."""
        kind = fields.get("group_type", current.group_type if current is not None else STANDARD)
        name = fields.get("name") or (current.name if current is not None else "")
        errors: dict[str, str] = {}
        if current is not None and kind != current.group_type:
            errors["group_type"] = "cannot change after creation; create a new group instead"
        if kind == AGGREGATE:
            if "upstreams" in payload:
                errors["upstreams"] = "an aggregate group has no upstreams: its members' upstreams serve it"
            fields.pop("upstreams", None)
            for rule in _RULE_FIELDS:  # each member applies its own rules: an aggregate's would never be used
                if fields.get(rule):
                    errors[rule] = "an aggregate group applies its members' rules: set them on the member groups"
            if (fields.get("settings") or {}).get("proxy_url"):
                errors["settings"] = "proxy_url: an aggregate group's traffic goes out through its members' proxy_url"
            if current is None:
                fields["upstreams"] = []
                if "sub_groups" not in fields:
                    errors.setdefault("sub_groups", "an aggregate group needs at least one member")
            members = fields.get("sub_groups")
            if members is not None:
                groups = {g.name: g for g in self._store.list_groups()}
                problems = []
                seen: set[str] = set()
                for m in members:
                    member = groups.get(m["name"])
                    if m["name"] == name:
                        problems.append(f"{m['name']!r} is this group itself")
                    elif m["name"] in seen:
                        problems.append(f"{m['name']!r} is listed twice")
                    elif member is None:
                        problems.append(f"no group named {m['name']!r}")
                    elif member.is_aggregate:
                        problems.append(f"{m['name']!r} is an aggregate (aggregates cannot contain aggregates)")
                    seen.add(m["name"])
                if not members:
                    problems.append("an aggregate group needs at least one member")
                if problems:
                    errors["sub_groups"] = "; ".join(problems)
        elif fields.get("sub_groups"):
            errors["sub_groups"] = "only an aggregate group (group_type: aggregate) has members"
        if errors:
            raise ValidationFailed("invalid group", details={"fields": errors})
        return fields

    def group_dict(self, group: Group) -> dict[str, Any]:
        counts = self._key_counts(group.name)
        # Overrides as they apply: a stored value this version refuses (logged) is not shown as if it did.
        settings = settings_schema.masked(settings_schema.valid_stored(group.settings, for_group=True))
        return {**group.to_dict(), "settings": settings, "key_counts": counts}

    def _key_counts(self, name: str) -> dict[str, int]:
        """Keys per display status and in all, from the pool's cached view (kept in step with the store through
        its markers): no store scan, which on Firestore would cost a read per key for every group listed."""
        now = time.time()
        counts = dict.fromkeys(KEY_STATUSES, 0)
        try:
            states = [k.state for k in self._pool.view(name).keys]
        except GroupNotFound:  # created by another instance a moment ago: read it
            states = [r.state for r in self._store.list_keys(name)]
        for state in states:
            counts[state.display_status(now)] += 1
        counts["total"] = len(states)
        return counts

    def copy_group(self, name: str, payload: Any) -> dict[str, Any]:
        """Copy settings and upstreams (and keys, with ``with_keys``) into a new group; proxy keys only if given."""
        source = self._require(name)
        if not isinstance(payload, dict):
            raise ValidationFailed("body must be a JSON object")
        fields = _group_fields(
            {"name": payload.get("name"), "proxy_keys": payload.get("proxy_keys", [])}, creating=True
        )
        now = time.time()
        copied = source.settings if self._seal is None else self._sealed(source.settings)  # an older clear value
        copy = Group.from_dict(
            {
                **source.to_dict(),
                **fields,
                "settings": copied,
                "sort": self._next_sort(),
                "created_at": now,
                "updated_at": now,
            }
        )
        self._store.create_group(copy)
        if payload.get("with_keys"):
            secrets = self._vault.load(name)
            records = [r for r in self._store.list_keys(name) if r.id in secrets]
            fresh = {r.id: secrets[r.id] for r in records}
            ciphertexts = self._vault.add(copy.name, fresh)
            self._store.add_keys(
                copy.name,
                [KeyRecord(id=r.id, group=copy.name, masked=r.masked, created_at=now, notes=r.notes) for r in records],
                ciphertexts,
            )
        self._pool.reload()
        return self.group_dict(copy)

    def reorder(self, payload: Any) -> dict[str, Any]:
        names = payload.get("names") if isinstance(payload, dict) else None
        groups = {g.name: g for g in self._store.list_groups()}
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or sorted(names) != sorted(groups):
            raise ValidationFailed("names must list every group exactly once")
        now = time.time()
        for position, name in enumerate(names):
            if groups[name].sort != position:
                self._store.update_group(
                    Group.from_dict({**groups[name].to_dict(), "sort": position, "updated_at": now})
                )
        self._pool.reload()
        return {"groups": self.list_groups()}

    def _next_sort(self) -> int:
        """New groups go to the end of the list (ties at SORT_MAX are ordered by name)."""
        return min(max((g.sort for g in self._store.list_groups()), default=-1) + 1, SORT_MAX)

    def _require(self, name: str) -> Group:
        group = self._store.get_group(name)
        if group is None:
            raise GroupNotFound(f"no group named {name!r}")
        return group

    # -- keys -----------------------------------------------------------------------------------------------
    def add_keys(self, name: str, payload: Any) -> dict[str, Any] | tuple[dict[str, Any], int]:
        """Import keys from text. Up to ``IMPORT_TASK_THRESHOLD`` valid keys: at once, the counts in the answer.
        More: as a background task (``202 {"task": ...}``) whose progress and counts ``GET /api/tasks/{id}``
        reports; either way the keys go in steps of ``IMPORT_CHUNK``."""
        self._require(name)
        text = _field(payload, "keys", str)
        parsed = parse_keys(text)
        if len(parsed.valid) <= IMPORT_TASK_THRESHOLD:
            return self._import(name, parsed)
        task = {
            "id": secrets.token_hex(8),
            "kind": "import",
            "group": name,
            "status": "running",
            "total": len(parsed.valid),
            "done": 0,
            "started_at": time.time(),
            "finished_at": None,
            "message": "",
            **_import_counts(parsed, 0, 0),
        }
        self._store.put_task(task)
        threading.Thread(
            target=self._import_task, args=(name, parsed, task), name="gptload-import", daemon=True
        ).start()
        return {"task": task}, 202

    def _import(self, name: str, parsed: ParsedKeys, progress: Any = None) -> dict[str, Any]:
        """Fingerprint, encrypt and store ``parsed.valid`` in steps of ``IMPORT_CHUNK``; ``progress(done, added)``
        after each step. The pool reloads once, at the end."""
        now = time.time()
        existing = {r.id for r in self._store.list_keys(name)}
        added = 0
        done = 0
        for chunk in chunks(list(parsed.valid), IMPORT_CHUNK):
            by_id = {fingerprint(self._salt, k): k for k in chunk}
            fresh = {i: k for i, k in by_id.items() if i not in existing}
            if fresh:
                ciphertexts = self._vault.add(name, fresh)
                records = [
                    KeyRecord(id=i, group=name, masked=mask(k), state=KeyState(), created_at=now)
                    for i, k in fresh.items()
                ]
                added += len(self._store.add_keys(name, records, ciphertexts))
                existing.update(fresh)
            done += len(chunk)
            if progress is not None:
                progress(done, added)
        if added:
            self._pool.reload()
        return _import_counts(parsed, added)

    def _import_task(self, name: str, parsed: ParsedKeys, task: dict[str, Any]) -> None:
        last_write = 0.0

        def progress(done: int, added: int) -> None:
            nonlocal last_write
            task.update(_import_counts(parsed, added, done), done=done)
            if time.monotonic() - last_write > 0.5:  # bound store writes
                last_write = time.monotonic()
                self._store.put_task(dict(task))

        try:
            task.update(self._import(name, parsed, progress), status="done")
        except Exception as exc:
            log.exception("import task %s failed", task["id"])
            task.update(status="failed", message=f"{type(exc).__name__}: {exc}"[:300])
        task["finished_at"] = time.time()
        self._store.put_task(dict(task))

    def list_keys(
        self,
        name: str,
        status: str | None,
        page: int,
        page_size: int,
        q: str | None = None,
        sort: str | None = None,
        order: str | None = None,
    ) -> dict[str, Any]:
        """A page of the group's keys, filtered and sorted by the store. ``q``: a full key finds its own row (by
        fingerprint, one lookup); anything else is a case-insensitive substring of the masked key, notes or last
        error. ``sort``: ``KEY_SORTS`` (default created); ``order``: asc (default) or desc."""
        self._require(name)
        errors: dict[str, str] = {}
        if status and status not in KEY_STATUSES:
            errors["status"] = f"one of {', '.join(KEY_STATUSES)}"
        if sort and sort not in KEY_SORTS:
            errors["sort"] = f"one of {', '.join(KEY_SORTS)}"
        if order and order not in ("asc", "desc"):
            errors["order"] = "asc or desc"
        q = (q or "").strip()
        if len(q) > SEARCH_MAX:
            errors["q"] = f"at most {SEARCH_MAX} characters"
        if errors:
            raise ValidationFailed("invalid key list query", details={"fields": errors})
        if page < 1 or not 1 <= page_size <= 500:
            raise ValidationFailed("page must be >= 1 and page_size between 1 and 500")
        self._usage.flush()  # so that counters include this instance's latest requests
        now = time.time()
        full_key = bool(KEY_PATTERN.fullmatch(q))
        query = KeyQuery(
            key_id=fingerprint(self._salt, q) if full_key else None,
            text=None if full_key else (q or None),
            status=status or None,
            sort=sort or "created",
            descending=order == "desc",
            now=now,
        )
        records, total = self._store.query_keys(name, query, (page - 1) * page_size, page_size)
        return {
            "keys": [r.to_public(now) for r in records],
            "total": total,
            "page": page,
            "page_size": page_size,
            "sort": query.sort,
            "order": "desc" if query.descending else "asc",
        }

    def search_keys(self, name: str, payload: Any) -> dict[str, Any]:
        """``POST .../keys/search``: ``list_keys`` with its parameters in a JSON body, so that a full key searched
        for never sits in a URL (URLs end up in access logs, e.g. Cloud Run's request log)."""
        if not isinstance(payload, dict):
            raise ValidationFailed("body must be a JSON object")
        fields = {"q": str, "status": str, "sort": str, "order": str, "page": int, "page_size": int}
        errors = {
            k: "unknown field" if k not in fields else f"must be {fields[k].__name__}"
            for k, v in payload.items()
            if k not in fields or not isinstance(v, fields[k]) or isinstance(v, bool)
        }
        if errors:
            raise ValidationFailed("invalid key search", details={"fields": errors})
        return self.list_keys(
            name,
            payload.get("status") or None,
            payload.get("page", 1),
            payload.get("page_size", 50),
            q=payload.get("q"),
            sort=payload.get("sort") or None,
            order=payload.get("order") or None,
        )

    def update_key(self, name: str, key_id: str, payload: Any) -> dict[str, Any]:
        """``PUT .../keys/{id}``: ``{"notes": "..."}`` and/or ``{"status": "disabled" | "active"}``."""
        self._require(name)
        if not isinstance(payload, dict) or not payload:
            raise ValidationFailed('body must be a JSON object with "notes" and/or "status"')
        unknown = set(payload) - {"notes", "status"}
        if unknown:
            raise ValidationFailed("unknown field", details={"fields": dict.fromkeys(unknown, "unknown field")})
        status = payload.get("status")
        if "status" in payload and status not in ("active", DISABLED):
            raise ValidationFailed(
                'status must be "disabled" or "active"', details={"fields": {"status": "disabled or active"}}
            )
        if "notes" in payload:
            self.set_notes(name, key_id, {"notes": payload["notes"]})
        if status is not None:
            self._store.set_disabled(name, [key_id], status == DISABLED)
            self._pool.reload()
        records, _ = self._store.query_keys(name, KeyQuery(key_id=key_id), 0, 1)
        if not records:
            raise NotFound(f"no key {key_id!r} in group {name!r}")
        return records[0].to_public(time.time())

    def disable_keys(self, name: str, payload: Any, disable: bool) -> dict[str, Any]:
        """Bulk ``POST .../keys/disable`` (or ``/enable``) with ``{"ids": [...]}`` (or ``{"keys": "text"}``)."""
        self._require(name)
        ids = self._ids_from(payload)
        changed = self._store.set_disabled(name, ids, disable)
        if changed:
            self._pool.reload()
        return {"disabled" if disable else "enabled": changed}

    def delete_keys(self, name: str, payload: Any) -> dict[str, Any]:
        self._require(name)
        ids = self._ids_from(payload)
        deleted = self._store.delete_keys(name, ids)
        self._vault.remove(name, ids)
        self._pool.reload()
        return {"deleted": deleted}

    def restore_keys(self, name: str, payload: Any) -> dict[str, Any]:
        """``{}`` (or an empty body) restores every invalid and cooling key; ``{"ids": [...]}`` or
        ``{"keys": "text"}`` (exactly one of them) restores those. Any other body is refused."""
        self._require(name)
        if not isinstance(payload, dict):
            raise ValidationFailed('body must be a JSON object: {}, {"ids": [...]} or {"keys": "text"}')
        unknown = set(payload) - {"ids", "keys"}
        if unknown:
            raise ValidationFailed("unknown field", details={"fields": dict.fromkeys(unknown, "unknown field")})
        if len(payload) > 1:
            raise ValidationFailed("give 'ids' or 'keys', not both", details={"fields": {"keys": "with ids"}})
        ids = self._ids_from(payload) if payload else None
        restored = self._store.restore_keys(name, ids)
        self._pool.reload()
        return {"restored": restored}

    def export_keys(self, name: str, status: str, ids: list[str] | None = None) -> str:
        """The group's real keys as text, one per line (all, those of one status, or the given ``ids``). The only
        place real keys leave the service."""
        self._require(name)
        if status not in ("all", *KEY_STATUSES):
            raise ValidationFailed(f"status must be all, {', '.join(KEY_STATUSES)}")
        now = time.time()
        records = self._store.list_keys(name)  # first: a store vault's load then reuses what this read (Firestore)
        secrets_ = self._vault.load(name)
        wanted = set(ids) if ids is not None else None
        lines = [
            secrets_[r.id]
            for r in records
            if r.id in secrets_
            and (wanted is None or r.id in wanted)
            and (status == "all" or r.state.display_status(now) == status)
        ]
        return "\n".join(lines) + ("\n" if lines else "")

    def export_selected(self, name: str, payload: Any) -> str:
        """``POST .../keys/export`` with ``{"ids": [...]}``: those keys only."""
        self._require(name)
        return self.export_keys(name, "all", self._ids_from(payload))

    def clear_invalid(self, name: str) -> dict[str, Any]:
        self._require(name)
        ids = [r.id for r in self._store.list_keys(name) if r.state.status == INVALID]
        deleted = self._store.delete_keys(name, ids)
        self._vault.remove(name, ids)
        self._pool.reload()
        return {"deleted": deleted}

    def set_notes(self, name: str, key_id: str, payload: Any) -> dict[str, Any]:
        self._require(name)
        notes = _field(payload, "notes", str)
        if len(notes) > 500:
            raise ValidationFailed("notes must be at most 500 characters", details={"fields": {"notes": "too long"}})
        record = self._store.set_key_notes(name, key_id, scrub(notes.strip()))
        if record is None:
            raise NotFound(f"no key {key_id!r} in group {name!r}")
        return record.to_public(time.time())

    def _ids_from(self, payload: Any) -> list[str]:
        if not isinstance(payload, dict):
            raise ValidationFailed("body must be a JSON object with 'ids' or 'keys'")
        if "ids" in payload:
            ids = payload["ids"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValidationFailed("ids must be a list of key ids", details={"fields": {"ids": "list of strings"}})
            return ids
        if "keys" in payload:
            parsed = parse_keys(_field(payload, "keys", str))
            return [fingerprint(self._salt, k) for k in parsed.valid]
        raise ValidationFailed("body must name 'ids' or 'keys'")

    # -- settings -------------------------------------------------------------------------------------------
    def get_settings(self) -> dict[str, Any]:
        return {
            "settings": settings_schema.masked(settings_schema.effective(self._store.get_settings())),
            "schema": [s.to_dict() for s in settings_schema.SCHEMA],
        }

    def put_settings(self, payload: Any) -> dict[str, Any]:
        clean = settings_schema.keep_stored(settings_schema.validate(payload), self._store.get_settings())
        self._store.put_settings(self._sealed(clean))
        self._pool.reload()
        return self.get_settings()

    def seal_stored_proxy_urls(self) -> int:
        """Seal the ``proxy_url`` credentials an older version stored in clear (system settings and groups); returns
        how many values it sealed. A maintenance step: after the first round it finds nothing and writes nothing."""
        if self._seal is None:
            return 0
        sealed = 0
        system = self._store.get_settings()
        if proxyurl.has_credentials(str(system.get("proxy_url") or "")):
            self._store.put_settings({"proxy_url": self._seal(system["proxy_url"])})
            sealed += 1
        for group in self._store.list_groups():
            value = group.settings.get("proxy_url")
            if isinstance(value, str) and proxyurl.has_credentials(value):
                settings = {**group.settings, "proxy_url": self._seal(value)}
                self._store.update_group(Group.from_dict({**group.to_dict(), "settings": settings}))
                sealed += 1
        if sealed:
            log.info("sealed %d proxy_url value(s) stored in clear by an older version", sealed)
            self._pool.reload()
        return sealed

    def _sealed(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` (validated) as stored: a ``proxy_url`` with credentials sealed (never stored in clear), or
        refused (400) when no cipher is configured."""
        value = settings.get("proxy_url")
        if not isinstance(value, str) or not proxyurl.has_credentials(value):
            return settings
        if self._seal is None:
            raise ValidationFailed(
                "proxy_url: its credentials are encrypted at rest with ENCRYPTION_KEY, which is not set "
                "(VAULT=secretmanager): set ENCRYPTION_KEY, or use a proxy without credentials",
                details={"fields": {"proxy_url": "credentials need ENCRYPTION_KEY to be stored encrypted"}},
            )
        return {**settings, "proxy_url": self._seal(value)}


def _import_counts(parsed: ParsedKeys, added: int, done: int | None = None) -> dict[str, Any]:
    """The counts of an import answer (or task) after ``done`` valid keys (all by default) of which ``added``
    were new."""
    done = len(parsed.valid) if done is None else done
    return {
        "added": added,
        "duplicate": done - added + parsed.duplicates_in_text,
        "rejected": len(parsed.rejected),
        "rejected_samples": list(parsed.rejected[:5]),
        "rejected_lines": [{"line": n, "text": t} for n, t in parsed.rejected_lines[:REJECTED_SHOWN]],
    }


def _field(payload: Any, name: str, kind: type) -> Any:
    if not isinstance(payload, dict) or not isinstance(payload.get(name), kind):
        raise ValidationFailed(f"'{name}' is required", details={"fields": {name: f"required {kind.__name__}"}})
    return payload[name]


def _group_fields(payload: Any, *, creating: bool) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValidationFailed("body must be a JSON object")
    errors: dict[str, str] = {}
    unknown = set(payload) - _GROUP_FIELDS
    for name in unknown:
        errors[name] = "unknown field"
    out: dict[str, Any] = {}
    if creating or "name" in payload:
        name = payload.get("name")
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            errors["name"] = "must match ^[a-z0-9_-]{1,100}$"
        else:
            out["name"] = name
    for text in ("display_name", "description", "test_model"):
        if text in payload:
            value = payload[text]
            if not isinstance(value, str) or len(value) > (2000 if text == "description" else 200):
                errors[text] = "must be a short string"
            else:
                out[text] = value.strip()
    if "upstreams" in payload or creating:
        raw = payload.get("upstreams", [{"url": DEFAULT_UPSTREAM, "weight": 1}])
        upstreams = _upstreams(raw)
        if upstreams is None:
            errors["upstreams"] = "must be a non-empty list of {url: http(s) URL, weight: 1..1000}"
        else:
            out["upstreams"] = [u.to_dict() for u in upstreams]
    if "proxy_keys" in payload or creating:
        keys = payload.get("proxy_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and 8 <= len(k.strip()) <= 256 for k in keys):
            errors["proxy_keys"] = "must be a list of strings of 8 to 256 characters"
        elif any(k.strip().startswith("AIza") for k in keys):
            errors["proxy_keys"] = "looks like a real Gemini key; proxy keys must be your own secrets"
        else:
            out["proxy_keys"] = list(dict.fromkeys(k.strip() for k in keys))
    if "settings" in payload:
        try:
            out["settings"] = settings_schema.validate(payload["settings"] or {}, for_group=True)
        except ValidationFailed as exc:
            errors["settings"] = "; ".join(f"{k}: {v}" for k, v in exc.details.get("fields", {}).items())
    for rule_field, check in _RULE_FIELDS.items():
        if rule_field in payload:
            try:
                out[rule_field] = check(payload[rule_field])
            except ValueError as exc:
                errors[rule_field] = str(exc)
    if "group_type" in payload:
        if payload["group_type"] not in GROUP_TYPES:
            errors["group_type"] = "must be standard or aggregate"
        else:
            out["group_type"] = payload["group_type"]
    if "sub_groups" in payload:
        members = _sub_groups(payload["sub_groups"])
        if members is None:
            errors["sub_groups"] = (
                f"must be a list of at most {MAX_SUB_GROUPS} {{name: group name, weight: 0..{SUB_GROUP_WEIGHT_MAX}}} "
                "(weight 0 pauses a member)"
            )
        else:
            out["sub_groups"] = members
    if "sort" in payload:
        sort = payload["sort"]
        if isinstance(sort, bool) or not isinstance(sort, int) or not SORT_MIN <= sort <= SORT_MAX:
            errors["sort"] = f"must be an integer from {SORT_MIN} to {SORT_MAX}"
        else:
            out["sort"] = sort
    if errors:
        raise ValidationFailed("invalid group", details={"fields": errors})
    return out


def _sub_groups(raw: Any) -> list[dict[str, Any]] | None:
    """Shape check of an aggregate's members (whether they exist is checked against the store by Admin)."""
    if not isinstance(raw, list) or len(raw) > MAX_SUB_GROUPS:
        return None
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"name", "weight"}:
            return None
        name, weight = item.get("name"), item.get("weight", 1)
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            return None
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= SUB_GROUP_WEIGHT_MAX:
            return None
        out.append({"name": name, "weight": weight})
    return out


def _used_by(name: str, groups: list[Group]) -> list[str]:
    """The aggregate groups that have ``name`` as a member."""
    return [g.name for g in groups if any(m.name == name for m in g.sub_groups)]


def _check_rules(group: Group) -> None:
    """Rules that only make sense together: strict mode offers only the redirect sources, so it needs one."""
    if group.model_redirect_strict and not group.model_redirect_rules:
        raise ValidationFailed(
            "invalid group",
            details={"fields": {"model_redirect_strict": "needs at least one redirect (it would refuse every model)"}},
        )


def _upstreams(raw: Any) -> list[Upstream] | None:
    if not isinstance(raw, list) or not raw or len(raw) > 50:
        return None
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            return None
        url = item["url"].strip().rstrip("/")
        parts = urlsplit(url)
        weight = item.get("weight", 1)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            return None
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
            return None
        out.append(Upstream(url, weight))
    return out
