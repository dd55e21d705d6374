"""Log rows a hostile client shapes (long model names it chooses, odd characters) are stored and read back on both
stores: a flush that can never commit would hold every later usage event of the instance behind it."""

from __future__ import annotations

import hashlib

import pytest

from gptload.models import LogQuery, UsageEvent
from tests.contract.test_store_contract import group, records
from tests.contract.test_store_contract_usage import T0


def test_many_long_distinct_model_names_in_one_flush(store):
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    events = [
        UsageEvent(
            group="g1",
            key_id="k0000",
            at=T0 + i,
            success=False,
            status_code=404,
            model=hashlib.sha256(str(i).encode()).hexdigest() * 47,  # 3,008 characters, all distinct
            id=f"r{i:04d}",
        )
        for i in range(400)
    ]
    store.record_usage(events)
    rows, total = store.query_logs(LogQuery(group="g1"), 0, 5)
    assert total == 400 and [r["id"] for r in rows] == [f"r{i:04d}" for i in range(399, 394, -1)]
    assert store.get_log("r0007")["model"] == events[7].model


@pytest.mark.parametrize("log_id", ["__x__", "..", ".", "x" * 2000, "a b", "\u00e9", "no-such-row"])
def test_the_detail_of_an_id_no_row_has_is_none(store, log_id):
    # the admin API passes the id from its URL: a 404, not a "store unavailable" for ids Firestore cannot name
    assert store.get_log(log_id) is None


def test_the_text_filter_folds_the_same_case_on_both_stores(store):
    # SQLite's lower() folds ASCII letters only; the Firestore adapter judges rows in Python, whose lower() folds
    # every letter: the same search must find the same rows on both.
    store.create_group(group("g1"))
    store.add_keys("g1", records("g1", 1), {})
    errors = ["429 QUOTA exceeded", "Modèle ÉCHEC", "modèle échec"]
    store.record_usage(
        [
            UsageEvent(group="g1", key_id="k0000", at=T0 + i, success=False, status_code=500, error=e, id=f"t{i}")
            for i, e in enumerate(errors)
        ]
    )
    found = {
        t: sorted(r["id"] for r in store.query_logs(LogQuery(text=t), 0, 10)[0])
        for t in ("quota", "échec", "ÉCHEC", "MODÈLE")
    }
    assert found == {"quota": ["t0"], "échec": ["t2"], "ÉCHEC": ["t1"], "MODÈLE": []}  # ASCII folding only
