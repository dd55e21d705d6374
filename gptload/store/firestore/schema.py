"""What a Firestore deployment must provision for this store, and the lifetimes of the documents it expires.

Imported by ``infra/indexes.py`` (Terraform and gcloud renderings) and ``tests/infra``; keep in step with
``docs/firestore.md``. Standard library only.
"""

from __future__ import annotations

DAY = 86400.0
MINUTE_STATS_TTL = DAY  # stats_minute buckets serve requests_since (requests per minute) only
TASK_TTL = 30 * DAY  # task documents (maintenance markers, validation jobs)
USAGE_BATCH_TTL = DAY  # usage_batches markers: a retried flush within a day is recognised
INSTANCE_TTL = DAY  # instances heartbeats: only the last few seconds count; stale documents are collected

# Composite indexes of every query this adapter runs that single-field indexes cannot serve. The request-log
# list filters on any subset of six equality fields, ordered by ``at`` (and ranged on it): one (field, at DESC)
# index per field, which Firestore merges (zig-zag join) for any combination of equalities, instead of 2^6 indexes.
_LOG_EQUALITY_FIELDS = ("group", "key_id", "model", "status_code", "success", "stream")
FIRESTORE_INDEXES: list[dict] = [
    *(
        {
            "collection": "request_logs",
            "query_scope": "COLLECTION",
            "fields": [(f, "ASCENDING"), ("at", "DESCENDING")],
        }
        for f in _LOG_EQUALITY_FIELDS
    ),
    # query_keys (the key list in import order, of one status): status == s ordered by created_at, either way
    *(
        {
            "collection": "keys",
            "query_scope": "COLLECTION",
            "fields": [("status", "ASCENDING"), ("created_at", order)],
        }
        for order in ("ASCENDING", "DESCENDING")
    ),
    # query_logs on log pages: [group ==] [tags array-contains] [last_at range], ordered by last_at desc
    {
        "collection": "log_pages",
        "query_scope": "COLLECTION",
        "fields": [("group", "ASCENDING"), ("last_at", "DESCENDING")],
    },
    {
        "collection": "log_pages",
        "query_scope": "COLLECTION",
        "fields": [("tags", "CONTAINS"), ("last_at", "DESCENDING")],
    },
    {
        "collection": "log_pages",
        "query_scope": "COLLECTION",
        "fields": [("group", "ASCENDING"), ("tags", "CONTAINS"), ("last_at", "DESCENDING")],
    },
    # hourly_stats(group, since): group == g and hour >= since, ordered by hour
    {
        "collection": "stats_hourly",
        "query_scope": "COLLECTION",
        "fields": [("group", "ASCENDING"), ("hour", "ASCENDING")],
    },
]
# (collection, field) pairs holding a Timestamp after which the document may be deleted (Firestore TTL policies).
# "keys" is the collection id of the subcollection groups/{name}/keys (TTL policies apply per collection id).
FIRESTORE_TTL_FIELDS: list[tuple[str, str]] = [
    ("bindings", "expires_at"),
    ("instances", "expires_at"),
    ("log_pages", "expires_at"),
    ("request_logs", "expires_at"),
    ("stats_minute", "expires_at"),
    ("tasks", "expires_at"),
    ("usage_batches", "expires_at"),
]
