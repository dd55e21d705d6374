"""What an access key may use, and when its day starts: pure functions (no I/O, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gptload.models import AccessKey

ALL_GROUPS = "*"


def model_name(model: str) -> str:
    """``models/gemini-2.5-flash`` -> ``gemini-2.5-flash`` (both spellings name the same model)."""
    return model.removeprefix("models/")


def model_allowed(patterns: tuple[str, ...], model: str) -> bool:
    """Does ``model`` match one of ``patterns`` (exact names or ``prefix*`` globs)? No patterns: every model.
    A request that names no model (file uploads, listing models) is allowed: there is nothing to restrict."""
    if not patterns or not model:
        return True
    exact, prefixes = _compiled(patterns)
    name = model_name(model)
    return name in exact or name.startswith(prefixes)


@lru_cache(maxsize=1024)
def _compiled(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact names, glob prefixes) of a key's patterns, computed once per distinct tuple (the hot path)."""
    names = [model_name(p) for p in patterns]
    return frozenset(n for n in names if not n.endswith("*")), tuple(n[:-1] for n in names if n.endswith("*"))


def group_allowed(key: AccessKey, group: str) -> bool:
    return ALL_GROUPS in key.groups or group in key.groups


def allowed_groups(key: AccessKey, all_groups: list[str]) -> list[str]:
    """The names among ``all_groups`` that ``key`` may use, in their order."""
    return [g for g in all_groups if group_allowed(key, g)]


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The time zone ``name`` (IANA, e.g. ``Europe/Berlin``; ``UTC``); ValueError when unknown."""
    if name in ("", "UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def day_start(now: float, tz: tzinfo) -> float:
    """Epoch seconds of the local midnight that began the day ``now`` falls in (in ``tz``)."""
    local = datetime.fromtimestamp(now, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return _resolve(midnight, tz).timestamp()


def next_reset(now: float, tz: tzinfo) -> float:
    """Epoch seconds of the next local midnight after ``now`` (when daily limits reset)."""
    local = datetime.fromtimestamp(now, tz)
    tomorrow = (local.replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=1)).replace(hour=0)
    return _resolve(tomorrow, tz).timestamp()


def _resolve(local: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time that a DST change skips (midnight in a few zones) resolves to the first instant after it."""
    aware = local.replace(tzinfo=tz)
    back = datetime.fromtimestamp(aware.timestamp(), tz)
    if back.replace(tzinfo=None) != local.replace(tzinfo=None):  # skipped: move forward by the gap
        aware = aware + (back.utcoffset() or timedelta()) - (aware.utcoffset() or timedelta())
    return aware
