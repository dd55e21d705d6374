"""``usage_shard``: where a key's usage counters live in a big Firestore group (a stable function of its id)."""

from __future__ import annotations

from gptload.store.firestore.store import USAGE_SHARDS, _add_usage, usage_shard


def test_fingerprint_ids_go_by_their_first_hex_digit_and_others_by_a_stable_crc():
    assert usage_shard("a1b2c3d4e5f60718") == "a"
    assert usage_shard("F00d") == "f"
    other = {usage_shard(f"k{i:04d}") for i in range(200)}
    assert len(other) == USAGE_SHARDS  # non-hex ids spread too
    assert usage_shard("k0001") == usage_shard("k0001") and usage_shard("") in "0123456789abcdef"


def test_entries_from_the_base_document_and_a_shard_add_up_and_keep_the_latest_use():
    usage: dict = {}
    _add_usage(usage, {"a": {"n": 2, "f": 1, "at": 10.0, "tok": 5}})
    _add_usage(usage, {"a": {"n": 3, "at": 7.0}, "b": {"n": 1, "f": 0, "at": 1.0, "tok": 0}})
    assert usage == {"a": {"n": 5, "f": 1, "at": 10.0, "tok": 5}, "b": {"n": 1, "f": 0, "at": 1.0, "tok": 0}}
