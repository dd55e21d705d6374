"""What a failed usage commit means (gptload/store/firestore/client.py).

- ``already_applied``: "this batch was written before" (its batch marker's create() met ALREADY_EXISTS). Any other
  failure must be retried, or the batch's counters and log rows are lost.
- ``invalid_request``: "this write can never be accepted" (StoreRejected, the buffer then isolates and drops the bad
  events). Only INVALID_ARGUMENT counts; an outage, a timeout, contention, quota or a permission problem must keep
  the batch for a retry, or events would be dropped for a passing fault."""

from __future__ import annotations

import pytest

api = pytest.importorskip("google.api_core.exceptions")

from google.api_core.exceptions import RetryError  # noqa: E402

from gptload.errors import StoreUnavailable  # noqa: E402
from gptload.store.firestore.client import already_applied, invalid_request  # noqa: E402


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


def test_invalid_argument_is_a_rejection():
    assert invalid_request(_failed(api.InvalidArgument('The value of property "rows" is longer than 1048487')), api)
    assert invalid_request(_failed(RetryError("gave up", api.InvalidArgument("too big"))), api)


@pytest.mark.parametrize(
    "cause",
    [
        api.ServiceUnavailable("down"),
        api.DeadlineExceeded("slow"),
        api.Aborted("contention"),
        api.ResourceExhausted("gRPC message exceeds maximum size 4194304: 5762062"),  # the emulator's size answer
        api.PermissionDenied("no access"),
        api.Unauthenticated("token"),
        api.InternalServerError("oops"),
        api.AlreadyExists("marker"),
        api.FailedPrecondition("index"),
        RetryError("Timeout of 3.0s exceeded", api.ResourceExhausted("quota")),
        RetryError("Timeout of 3.0s exceeded", None),
        TimeoutError("socket"),
    ],
)
def test_outages_timeouts_quota_and_permissions_are_not(cause):
    assert not invalid_request(_failed(cause), api)
