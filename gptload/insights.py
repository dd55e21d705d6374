"""Read models for the console: dashboard, hourly series, per-group totals, request logs and their CSV export.

Every read first flushes this instance's usage buffer, so what an operator sees includes the requests this
instance just served; other instances' buffers arrive within their flush interval.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

from gptload.errors import NotFound, ValidationFailed
from gptload.keypool.breaker import Breakers
from gptload.models import ACTIVE, ANY_MODEL, KEY_STATUSES, LOG_FIELDS, LogQuery, attempt_log_id, request_id_of
from gptload.pool import GroupView, KeyPool
from gptload.store.base import Store
from gptload.store.rollup import ACCESS_STAT_FIELDS, STAT_FIELDS, hour_of
from gptload.usage import UsageBuffer

HOUR = 3600.0
DAY = 24 * HOUR
CSV_LIMIT = 100_000
MAX_EPOCH = 1e11  # log filters: epoch seconds, year 5138 at most
ATTEMPT_LIMIT = 21  # attempts of one request looked up for a log's detail: 1 + the largest max_retries


class Insights:
    def __init__(self, store: Store, pool: KeyPool, usage: UsageBuffer, breakers: Breakers | None = None) -> None:
        self._store = store
        self._pool = pool
        self._usage = usage
        self._breakers = breakers

    def dashboard(self, now: float | None = None, group: str | None = None, hours: int = 24) -> dict[str, Any]:
        """Key states, traffic and trends of ``group`` (all groups when None) over the last ``hours`` hours (the
        ``range``), compared with the ``hours`` before; ``last_24h``/``previous_24h`` stay the last day's figures.

        ``keys`` counts display statuses, and apart: ``cooling_all`` (a key cooling for every model) and ``limited``
        (cooling for some models only). ``unservable_groups`` names the groups with no key that can serve any
        request now (none active, or every active one cooling for all models; an aggregate: none in its members)."""
        if not 1 <= hours <= 720:
            raise ValidationFailed("hours must be between 1 and 720")
        now = now or time.time()
        self._usage.flush()
        keys = dict.fromkeys(KEY_STATUSES, 0)
        keys["cooling_all"] = keys["limited"] = 0
        views = [v for v in self._pool.views() if group is None or v.name == group]
        if group is not None and not views:
            raise NotFound(f"no group {group!r}")
        for view in views:
            for key in view.keys:
                status = key.state.display_status(now)
                keys[status] = keys.get(status, 0) + 1
                live = key.state.live_cooldowns(now)
                if any(c.model == ANY_MODEL for c in live):
                    keys["cooling_all"] += 1
                elif live:
                    keys["limited"] += 1
        every = {v.name: v for v in self._pool.views()}
        unservable = [v.name for v in views if not _can_serve(v, now, every)]
        keys["total"] = sum(len(v.keys) for v in views)
        this_hour = hour_of(now)
        span = max(2 * hours, 48)
        series = self._store.hourly_stats(group, this_hour - (span - 1) * HOUR)
        current = _window(series, this_hour - 23 * HOUR, this_hour)
        previous = _window(series, this_hour - 47 * HOUR, this_hour - 24 * HOUR)
        in_range = _window(series, this_hour - (hours - 1) * HOUR, this_hour)
        before = _window(series, this_hour - (2 * hours - 1) * HOUR, this_hour - hours * HOUR)
        breakers = self._breakers.open_circuits(time.monotonic()) if self._breakers is not None else []
        return {
            "group": group,
            "keys": keys,
            "groups": len(views),
            "unservable_groups": unservable,
            "rpm": self._store.requests_since(now - 60, group),
            "last_24h": current,
            "previous_24h": previous,
            "trend": {
                "requests": _pct(current["requests"], previous["requests"]),
                "error_rate": round(current["error_rate"] - previous["error_rate"], 2),
                "total_tokens": _pct(current["total_tokens"], previous["total_tokens"]),
            },
            "range": {
                "hours": hours,
                "current": in_range,
                "previous": before,
                "trend": {
                    "requests": _pct(in_range["requests"], before["requests"]),
                    "error_rate": round(in_range["error_rate"] - before["error_rate"], 2),
                    "total_tokens": _pct(in_range["total_tokens"], before["total_tokens"]),
                },
            },
            # this instance's breakers that hold requests back now (per instance: see docs/api.md, "Outages")
            "breakers": [b for b in breakers if group is None or b["group"] == group],
            "top_access_keys": self.top_access_keys(now),
        }

    def top_access_keys(self, now: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
        """The access keys with the most requests and the most tokens in the last 24 hours (whole hours), each
        ``{id, name, requests, failures, refused, total_tokens}``; legacy proxy keys appear as ``anonymous``."""
        names = {k.id: k.name for k in self._store.list_access_keys()}
        totals: dict[str, dict[str, Any]] = {}
        for row in self._store.access_usage(hour_of(now) - 23 * HOUR):
            t = totals.setdefault(
                row["access_key"],
                {
                    "id": row["access_key"],
                    "name": names.get(row["access_key"], row["access_key"]),
                    "requests": 0,
                    "failures": 0,
                    "refused": 0,
                    "total_tokens": 0,
                },
            )
            for f in ("requests", "failures", "refused", "total_tokens"):
                t[f] += int(row[f])
        rows = list(totals.values())
        return {
            "by_requests": sorted(rows, key=lambda t: (-t["requests"], t["id"]))[:limit],
            "by_tokens": sorted(rows, key=lambda t: (-t["total_tokens"], t["id"]))[:limit],
        }

    def hourly(
        self, group: str | None, hours: int, now: float | None = None, *, access_key: str | None = None
    ) -> dict[str, Any]:
        """The hourly series of a group (or all), or with ``access_key`` of that access key ("anonymous": legacy
        proxy keys), over all groups."""
        if not 1 <= hours <= 720:
            raise ValidationFailed("hours must be between 1 and 720")
        if group is not None and access_key is not None:
            raise ValidationFailed("give group or access_key, not both")
        now = now or time.time()
        self._usage.flush()
        first = hour_of(now) - (hours - 1) * HOUR
        if access_key is not None:
            rows = self._store.access_usage(first, access_key)
            series = [{"hour": first + i * HOUR, **dict.fromkeys(ACCESS_STAT_FIELDS, 0)} for i in range(hours)]
            for row in rows:
                index = int((row["hour"] - first) // HOUR)
                if 0 <= index < hours:
                    for f in ACCESS_STAT_FIELDS:
                        series[index][f] += int(row[f])
            return {"access_key": access_key, "series": series}
        by_hour = {row["hour"]: row for row in self._store.hourly_stats(group, first)}
        series = []
        for i in range(hours):
            hour = first + i * HOUR
            row = by_hour.get(hour, {})
            series.append({"hour": hour, **{f: int(row.get(f, 0)) for f in STAT_FIELDS}})
        return {"group": group, "series": series}

    def group_totals(self, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        self._usage.flush()
        windows = {"24h": now - DAY, "7d": now - 7 * DAY, "30d": now - 30 * DAY}
        totals = {label: self._store.group_totals(hour_of(since)) for label, since in windows.items()}
        out = []
        for view in self._pool.views():
            entry: dict[str, Any] = {"name": view.name}
            for label in windows:
                t = totals[label].get(view.name, {})
                entry[label] = {f: int(t.get(f, 0)) for f in ("requests", "failures", "total_tokens")}
            out.append(entry)
        return {"groups": out}

    def logs(self, query: LogQuery, page: int, page_size: int) -> dict[str, Any]:
        if page < 1 or not 1 <= page_size <= 500:
            raise ValidationFailed("page must be >= 1 and page_size between 1 and 500")
        self._usage.flush()
        rows, total = self._store.query_logs(query, (page - 1) * page_size, page_size)
        return {"logs": [_with_request(r) for r in rows], "total": total, "page": page, "page_size": page_size}

    def log(self, log_id: str) -> dict[str, Any]:
        """One row (with its request body) and ``attempts``: every logged attempt of the same request, first to
        last (each a list row), found by id from the row's request id (one read per attempt, at most
        ``ATTEMPT_LIMIT``)."""
        self._usage.flush()
        row = self._store.get_log(log_id)
        if row is None:
            raise NotFound(f"no request log {log_id!r}")
        row = _with_request(row)
        attempts = []
        if row["id"] != row["request_id"]:  # an id of attempt_log_id's form
            last = max(int(row.get("attempt") or 0), 1)
            for n in range(0, ATTEMPT_LIMIT + 1):
                other_id = attempt_log_id(row["request_id"], n)
                other = row if other_id == row["id"] else self._store.get_log(other_id)
                if other is not None:
                    other = _with_request(other)
                    other.pop("request_body", None)
                    attempts.append(other)
                elif n > last:
                    break  # attempts are numbered 1, 2, ...: the first one missing after this row ends them
        return {"log": row, "attempts": attempts}

    def logs_csv(self, query: LogQuery) -> str:
        """The matching rows as CSV: ``at`` in ISO 8601 (UTC), ``at_epoch`` in seconds, booleans as true/false,
        then the remaining fields and ``request_id``."""
        self._usage.flush()
        rows, _ = self._store.query_logs(query, 0, CSV_LIMIT)
        out = io.StringIO()
        fields = ["at", "at_epoch", *(f for f in LOG_FIELDS if f != "at"), "request_id"]
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            row = _with_request(row)
            at = float(row.get("at") or 0)
            row["at_epoch"] = f"{at:.3f}"
            row["at"] = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        return out.getvalue()


def parse_log_query(args: Any) -> LogQuery:
    """Build a LogQuery from request arguments (a mapping of strings); raise ValidationFailed on bad values."""

    def text(name: str) -> str | None:
        value = args.get(name)
        return value.strip() or None if isinstance(value, str) else None

    def number(name: str, kind: type, lo: float, hi: float) -> Any:
        value = text(name)
        if value is None:
            return None
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:  # also refuses nan (every comparison is false) and inf
            raise ValidationFailed(
                f"{name} must be a number from {lo:g} to {hi:g}", details={"fields": {name: f"number {lo:g}..{hi:g}"}}
            )
        return number

    def flag(name: str) -> bool | None:
        value = text(name)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise ValidationFailed(f"{name} must be true or false", details={"fields": {name: "true or false"}})
        return value.lower() == "true"

    return LogQuery(
        group=text("group"),
        key_id=text("key_id"),
        model=text("model"),
        status_code=number("status_code", int, 0, 999),
        success=flag("success"),
        stream=flag("stream"),
        since=number("since", float, 0, MAX_EPOCH),
        until=number("until", float, 0, MAX_EPOCH),
        text=text("q"),
        access_key=text("access_key"),
    )


def _can_serve(view: GroupView, now: float, views: dict[str, GroupView]) -> bool:
    """Whether some key could serve a request now: an active key not cooling for every model; for an aggregate,
    such a key in one of its members (``views``: every group by name)."""
    if view.is_aggregate:
        members = (views.get(m.name) for m in view.group.sub_groups)
        return any(m is not None and not m.is_aggregate and _can_serve(m, now, views) for m in members)
    return any(
        k.state.status == ACTIVE and not any(c.model == ANY_MODEL for c in k.state.live_cooldowns(now))
        for k in view.keys
    )


def _window(series: list[dict[str, Any]], first_hour: float, last_hour: float) -> dict[str, Any]:
    """Sums of the hourly buckets from ``first_hour`` to ``last_hour`` inclusive (24 buckets = one day)."""
    sums = dict.fromkeys(STAT_FIELDS, 0)
    for row in series:
        if first_hour <= row["hour"] <= last_hour:
            for f in STAT_FIELDS:
                sums[f] += int(row[f])
    rate = round(100.0 * sums["failures"] / sums["requests"], 2) if sums["requests"] else 0.0
    return {**sums, "error_rate": rate}


def _pct(current: int, previous: int) -> float | None:
    if previous == 0:
        return None
    return round(100.0 * (current - previous) / previous, 1)


def _with_request(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its ``request_id`` (shared by every attempt of one request)."""
    return {**row, "request_id": request_id_of(str(row.get("id") or ""))}


def _csv_value(value: Any) -> Any:
    """A CSV cell: booleans as ``true``/``false``, free text neutralised (``_csv_safe``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _csv_safe(value)


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free text (CSV injection), including those behind a tab or CR."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
