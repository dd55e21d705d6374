"""Log pages written by earlier versions on the Firestore emulator: they carry ``m:{model}`` tags, which this version
neither writes nor asks for. Such pages must list, filter, count, open and purge exactly like new ones."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from gptload.models import LogQuery, UsageEvent
from gptload.store.firestore import logpages
from gptload.store.firestore.store import timestamp
from gptload.store.rollup import hour_of
from tests.conftest import require
from tests.contract.test_store_contract import group, records
from tests.firestore_support import firestore_store

pytestmark = pytest.mark.firestore


@pytest.fixture
def store():
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    s = firestore_store(host, f"legacy-{uuid.uuid4().hex[:10]}")  # a project of its own
    yield s
    s.close()


def _events(now: float, prefix: str, n: int) -> list[UsageEvent]:
    return [
        UsageEvent(
            "g1",
            f"k{i % 2:04d}",
            now - 900 + i,
            i % 4 != 0,
            status_code=200 if i % 4 else 503,
            model="gemini-2.5-pro" if i % 3 == 0 else "gemini-2.5-flash",
            id=f"{prefix}-{i:03d}",
        )
        for i in range(n)
    ]


def _write_legacy_page(store, events: list[UsageEvent]) -> str:
    """A page as versions before this one wrote it: the same fields, plus one ``m:`` tag per distinct model."""
    rows = [{**e.log_row(), "request_body": e.request_body} for e in events]
    (page,) = logpages.pack(rows, hour_of)
    fields = page.fields()
    fields["tags"] += [f"m:{m}" for m in dict.fromkeys(r["model"] for r in rows)]
    fields["expires_at"] = timestamp(fields["last_at"] + 7 * 86400)
    name = f"g1:{int(page.hour)}:legacybatch-0"
    store._client.collection("log_pages").document(name).set(fields)
    return name


def test_pages_with_model_tags_read_like_new_ones(store):
    now = time.time()
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 2), {})
    old = _events(now, "old", 24)
    new = _events(now + 30, "new", 24)
    name = _write_legacy_page(store, old)
    store.record_usage(new)
    pages = {s.id: s.to_dict() for s in store._client.collection("log_pages").stream()}
    assert any(t.startswith("m:") for t in pages[name]["tags"])
    assert [p for n, p in pages.items() if n != name and not any(t.startswith("m:") for t in p["tags"])]

    everything = old + new

    def expect(keep) -> list[str]:
        return [e.id for e in sorted((e for e in everything if keep(e)), key=lambda e: (-e.at, e.id))]

    cases = [
        (LogQuery(), lambda e: True),
        (LogQuery(group="g1"), lambda e: True),
        (LogQuery(model="gemini-2.5-p"), lambda e: e.model.startswith("gemini-2.5-p")),
        (LogQuery(model="gemini-2.5-pro", status_code=503), lambda e: e.model == "gemini-2.5-pro" and e.status_code == 503),
        (LogQuery(group="g1", key_id="k0001", model="gemini"), lambda e: e.key_id == "k0001"),
        (LogQuery(success=False), lambda e: not e.success),
        (LogQuery(model="gemini-2.5-flash", since=now - 890, until=now - 860), lambda e: (
            e.model == "gemini-2.5-flash" and now - 890 <= e.at < now - 860
        )),
    ]  # fmt: skip
    for query, keep in cases:
        rows, total = store.query_logs(query, 0, 100)
        assert ([r["id"] for r in rows], total) == (expect(keep), len(expect(keep))), query
    detail = store.get_log("old-007")
    assert detail is not None and detail["model"] == "gemini-2.5-flash" and detail["key_id"] == "k0001"

    # a purge that cuts through the old page rewrites it in this version's layout: its newer rows, no model tags
    assert store.purge_logs(now - 890) == 10
    rewritten = store._client.collection("log_pages").document(name).get().to_dict()
    assert rewritten["count"] == 14 and not any(t.startswith("m:") for t in rewritten["tags"])
    rows, total = store.query_logs(LogQuery(model="gemini-2.5-pro"), 0, 100)
    assert total == len(expect(lambda e: e.model == "gemini-2.5-pro" and e.at >= now - 890))
