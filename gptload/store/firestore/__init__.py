"""Firestore adapter of the Store port (``STORE=firestore``); data model, indexes and costs: ``docs/firestore.md``.

- ``store.py``: ``FirestoreStore``, the Store methods;
- ``client.py``: ``FirestoreConnection``, SDK plumbing (deadlines, error boundary, transaction retries);
- ``mappers.py``: documents <-> models;
- ``logpages.py``: request-log rows packed into page documents (pure: packing, tags, the row filter);
- ``writes.py``: the usage flush's ``Write`` messages, built on the SDK's raw protobuf classes;
- ``schema.py``: what a deployment must provision (``FIRESTORE_INDEXES``, ``FIRESTORE_TTL_FIELDS``), document lifetimes.

Importing this package does not import google-cloud-firestore: the SDK is loaded when a store is created.
"""

from gptload.store.firestore.store import FirestoreStore

__all__ = ["FirestoreStore"]
