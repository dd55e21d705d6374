"""Log pages (gptload/store/firestore/logpages.py): packing, tags and the row filter, without Firestore."""

from __future__ import annotations

import hashlib

from gptload.models import LogQuery, UsageEvent
from gptload.store.firestore import logpages
from gptload.store.rollup import hour_of


def _row(i: int, **kw) -> dict:
    e = UsageEvent("g1", f"k{i % 3}", 7200.0 + i, i % 4 != 0, status_code=200 if i % 4 else 503, id=f"r{i}", **kw)
    return {**e.log_row(), "request_body": None}


def test_rows_are_packed_per_group_and_hour_and_split_at_the_row_limit():
    rows = [_row(i) for i in range(1200)] + [{**_row(5000), "group": "g2"}]
    pages = logpages.pack(rows, hour_of)
    assert [(p.group, p.hour, len(p.rows)) for p in pages] == [
        ("g1", 7200.0, 500),
        ("g1", 7200.0, 500),
        ("g1", 7200.0, 200),
        ("g2", 10800.0, 1),
    ]
    assert [r["id"] for p in pages[:3] for r in logpages.decode_rows(p.blob)] == [f"r{i}" for i in range(1200)]
    f = pages[2].fields()
    assert (f["first_at"], f["last_at"], f["count"]) == (7200.0 + 1000, 7200.0 + 1199, 200)
    assert f["ids"] == [f"r{i}" for i in range(1000, 1200)]
    assert {"k:k0", "k:k1", "k:k2", "s:200", "s:503", "ok:1", "ok:0", "st:0"} <= set(f["tags"])
    assert "st:1" not in f["tags"]


def test_a_page_over_the_byte_limit_is_halved_until_it_fits(monkeypatch):
    monkeypatch.setattr(logpages, "PAGE_BYTES", 2000)
    noise = [hashlib.sha256(f"{i}-{j}".encode()).hexdigest() for i in range(64) for j in range(4)]
    rows = [{**_row(i), "request_body": "".join(noise[4 * i : 4 * i + 4])} for i in range(64)]  # ~10 KiB zipped
    pages = logpages.pack(rows, hour_of)
    assert len(pages) > 1 and all(len(p.blob) <= 2000 for p in pages)
    assert [r["id"] for p in pages for r in p.rows] == [f"r{i}" for i in range(64)]


def test_new_row_fields_pass_through_and_the_body_stays_out_of_lists():
    stored = {**_row(1), "request_body": "{}", "access_key": "ak-1"}
    listed = logpages.list_row(logpages.decode_rows(logpages.encode_rows([stored]))[0])
    assert listed["access_key"] == "ak-1" and "request_body" not in listed and listed["id"] == "r1"


def test_one_tag_per_query_and_every_filter_judged_on_rows():
    q = LogQuery(group="g1", model="m", status_code=503, success=False, since=7201, until=7203, text="BOOM")
    assert logpages.query_tag(q) == "s:503"  # key_id absent; the model is a prefix filter, which no tag serves
    assert logpages.query_tag(LogQuery(success=True)) == "ok:1"
    assert logpages.query_tag(LogQuery(group="g1", since=1.0)) is None
    match = logpages.row_matches(q)
    row = {"group": "g1", "model": "m", "status_code": 503, "success": False, "at": 7202.0, "error": "a boom"}
    assert match(row)
    assert match({**row, "model": "m-2.5"})  # the model filter matches a prefix of the name
    assert logpages.query_tag(LogQuery(model="gemini")) is None
    for change in (
        {"group": "g2"},
        {"model": "n"},
        {"model": "xm"},
        {"status_code": 500},
        {"success": True},
        {"at": 7203.0},
    ):
        assert not match({**row, **change})
    assert not match({**row, "at": 7200.5}) and not match({**row, "error": ""})
    assert logpages.has_row_filters(q) and not logpages.has_row_filters(LogQuery(group="g1"))


def test_a_page_fits_firestore_with_its_tags_and_ids_not_only_its_rows():
    # A client names the model (path or OpenAI body): 400 distinct 3,000-character names. Pages carry no model tag
    # (1.2 MB of ``m:`` tags before), and the whole document (rows, tags, ids) stays within the page limit.
    rows = [_row(i, model=hashlib.sha256(str(i).encode()).hexdigest() * 47) for i in range(400)]
    pages = logpages.pack(rows, hour_of)
    assert sum(len(p.rows) for p in pages) == 400
    for p in pages:
        f = p.fields()
        assert not any(t.startswith("m:") for t in f["tags"])
        size = len(f["rows"]) + sum(len(t) + 1 for t in f["tags"]) + sum(len(i) + 1 for i in f["ids"])
        assert size <= logpages.PAGE_BYTES


def _one(attr: str):
    return {"key_id": "k1", "access_key": "ak_1", "status_code": 503, "success": False, "stream": True}[attr]


def test_pages_carry_only_tags_a_query_asks_for():
    # Every tag prefix written is the one query_tag produces for its filter, and each is asked for by some query.
    rows = [{**_row(i), "access_key": f"ak_{i % 2}", "stream": i % 2 == 0} for i in range(20)]
    written = {t.split(":", 1)[0] for t in logpages.page_tags(rows)}
    asked = set()
    for attr, prefix, _field in logpages.FILTER_TAGS:
        wanted = logpages.query_tag(LogQuery(**{attr: _one(attr)}))
        assert wanted is not None and wanted.startswith(f"{prefix}:"), (attr, wanted)
        asked.add(prefix)
    assert written == asked == {"k", "a", "s", "ok", "st"}
    # the model filter is a prefix: no tag, judged on the rows (and it still makes the query a row filter)
    assert [a for a, _f in logpages.PREFIX_FILTERS] == ["model"]
    assert logpages.query_tag(LogQuery(model="gemini-2.5")) is None
    assert logpages.has_row_filters(LogQuery(model="gemini-2.5"))
    assert not set(logpages.LEGACY_TAG_PREFIXES) & written


def test_a_page_written_with_model_tags_reads_the_same():
    # Pages of earlier versions carry ``m:{model}`` tags: the tag a query asks for and the row judgement ignore them.
    rows = [_row(i, model="gemini-2.5-pro" if i % 2 else "gemini-2.5-flash") for i in range(8)]
    legacy_tags = [*logpages.page_tags(rows), "m:gemini-2.5-pro", "m:gemini-2.5-flash"]
    q = LogQuery(model="gemini-2.5-p", status_code=200)
    assert logpages.query_tag(q) == "s:200" and "s:200" in legacy_tags
    match = logpages.row_matches(q)
    assert [r["id"] for r in rows if match(r)] == [
        r["id"] for r in rows if r["model"] == "gemini-2.5-pro" and r["status_code"] == 200
    ]
