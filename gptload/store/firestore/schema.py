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

# Composite indexes of every query this adapter runs that single-field indexes cannot serve, and nothing else:
# tests/e2e/test_firestore_indexes.py runs every query shape of the adapter on the emulator, derives the index each
# one needs (tests/firestore_indexes.py models Firestore's rules) and requires this list to be exactly those.
FIRESTORE_INDEXES: list[dict] = [
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

# Indexes earlier versions declared that no query of this version uses (kept so that ``infra/indexes.py`` can name
# them for deletion in deployments made with ``deploy.sh``; Terraform drops them on its own). Request-log rows are
# read from ``log_pages`` since log pages; legacy ``request_logs`` documents are only read by id and purged by ``at``.
RETIRED_INDEXES: list[dict] = [
    {
        "collection": "request_logs",
        "query_scope": "COLLECTION",
        "fields": [(f, "ASCENDING"), ("at", "DESCENDING")],
    }
    for f in ("group", "key_id", "model", "status_code", "success", "stream")
]

# (collection id, field path) whose single-field indexes are disabled. Firestore indexes every field and every map
# subfield of every document (ascending and descending; arrays: array-contains) unless exempted: index entries cost
# write latency and storage, and a document may have at most 40,000. An exemption on a map applies to its subfields.
# Exempted: what no query filters, orders or aggregates on (tests/e2e/test_firestore_indexes.py cross-checks every
# query field) and that is big or grows with the data. The TTL fields below are exempted too (declared there).
# At most 200 exemptions per database (TTL fields included).
FIRESTORE_INDEX_EXEMPTIONS: list[tuple[str, str]] = [
    ("log_pages", "rows"),  # the compressed rows, up to ~900 KB (``ids`` stays indexed: ``get_log`` queries it)
    ("key_usage", "k"),  # key id -> {n, f, tok, at}: 8 index entries per key, 40,000 reached at 5,000 keys
    ("stats_hourly", "m"),  # epoch minute -> requests: up to 120 entries per hour document
    ("access_hourly", "k"),  # access key id -> 7 counters: 14 entries per access key per hour document
    ("meta", "m"),  # the change markers: 2 per group
    ("groups", "data"),  # a group's configuration (redirect rules, header rules, proxy keys, ...)
    ("keys", "secret"),  # the key's ciphertext
    ("keys", "cooldowns"),  # one map per cooling model
    ("keys", "last_error"),  # error text
    ("keys", "notes"),  # free text
    ("keys", "masked"),  # the masked key, shown only
    ("tasks", "data"),  # a task as JSON text
]


def index_exempt_fields() -> set[tuple[str, str]]:
    """Every (collection, field) without single-field indexes: the exemptions and the TTL fields."""
    return set(FIRESTORE_INDEX_EXEMPTIONS) | set(FIRESTORE_TTL_FIELDS)
