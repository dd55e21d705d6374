"""Access keys: named client keys with group/model scopes, a per-minute rate and daily budgets.

- ``rules.py`` and ``limiter.py``: pure (no I/O, no clock: time comes in as ``now``), unit-tested with plain values.
- ``gate.py``: the per-instance gate on the hot path (cached keys, heartbeats, flushed daily usage).
- ``admin.py``: the admin use cases (create with a one-time reveal, update, rotate, delete, usage).
"""
