"""``already_applied``: which failed usage commit means "this batch was written before" (its batch marker's
create() met ALREADY_EXISTS). Any other failure must be retried, or the batch's counters and log rows are lost."""

from __future__ import annotations

import pytest

api = pytest.importorskip("google.api_core.exceptions")

from google.api_core.exceptions import RetryError  # noqa: E402

from gptload.errors import StoreUnavailable  # noqa: E402
from gptload.store.firestore.client import already_applied  # noqa: E402


def _failed(cause: BaseException) -> StoreUnavailable:
    try:
        raise StoreUnavailable("Firestore usage write failed") from cause
    except StoreUnavailable as exc:
        return exc


def test_only_already_exists_means_applied():
    assert already_applied(_failed(api.AlreadyExists("marker exists")), api)
    assert already_applied(_failed(RetryError("gave up", api.AlreadyExists("marker exists"))), api)
    # ABORTED is a Conflict (409) too, but says the commit was NOT applied (contention): it must be retried
    assert not already_applied(_failed(api.Aborted("Too much contention on these documents")), api)
    assert not already_applied(_failed(RetryError("gave up", api.Aborted("contention"))), api)
    assert not already_applied(_failed(api.ServiceUnavailable("down")), api)
