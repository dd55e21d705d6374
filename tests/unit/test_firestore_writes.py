"""WriteEncoder builds the same Firestore Write messages as the SDK's batch.set / set(merge=True) / create."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

firestore = pytest.importorskip("google.cloud.firestore")

from google.auth.credentials import AnonymousCredentials  # noqa: E402

from gptload.store.firestore.writes import WriteEncoder  # noqa: E402


@pytest.fixture(scope="module")
def sdk():
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    return client, WriteEncoder()


def _sdk_write(client, op, *args, **kw):
    batch = client.batch()
    getattr(batch, op)(*args, **kw)
    (write,) = batch._write_pbs
    return write._pb


def _same(a, b) -> None:
    """Equal messages, transforms compared as a set (their order has no meaning)."""
    ta = sorted(t.SerializeToString() for t in a.update_transforms)
    tb = sorted(t.SerializeToString() for t in b.update_transforms)
    assert ta == tb
    a, b = _copy(a), _copy(b)
    del a.update_transforms[:], b.update_transforms[:]
    assert a == b


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


def test_set_and_create_encode_every_value_kind_like_the_sdk(sdk):
    client, enc = sdk
    ref = client.collection("log_pages").document("g:3600:abc-0")
    fields = {
        "group": "g",
        "hour": 3600.0,
        "count": 3,
        "ok": True,
        "none": None,
        "rows": b"\x00\xffzip",
        "ids": ["a", "b"],
        "nested": {"k": [1, 2.5, "x"], "m": {}},
        "expires_at": datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }
    _same(enc.set(ref._document_path, fields)._pb, _sdk_write(client, "set", ref, fields))
    marker = {"expires_at": fields["expires_at"]}
    _same(enc.create(ref._document_path, marker)._pb, _sdk_write(client, "create", ref, marker))
    _same(enc.as_create(enc.set(ref._document_path, fields))._pb, _sdk_write(client, "create", ref, fields))


def test_merge_with_increments_and_maxima_like_the_sdk(sdk):
    client, enc = sdk
    ref = client.collection("key_usage").document("g")
    sdk_doc = {
        "k": {"ab-1": {"n": firestore.Increment(2), "at": firestore.Maximum(3.5)}, "k2": {"n": firestore.Increment(1)}}
    }
    mine = enc.merge(
        ref._document_path,
        {},
        {enc.path("k", "ab-1", "n"): 2, enc.path("k", "k2", "n"): 1},
        {enc.path("k", "ab-1", "at"): 3.5},
    )
    _same(mine._pb, _sdk_write(client, "set", ref, sdk_doc, merge=True))
    ref = client.collection("stats_hourly").document("g:3600")
    sdk_doc = {"group": "g", "hour": 3600.0, "requests": firestore.Increment(3), "failures": firestore.Increment(0)}
    mine = enc.merge(ref._document_path, {"group": "g", "hour": 3600.0}, {"requests": 3, "failures": 0})
    _same(mine._pb, _sdk_write(client, "set", ref, sdk_doc, merge=True))
