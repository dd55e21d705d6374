"""``invalid_request``: which failed usage commit means "this write can never be accepted" (StoreRejected, the
buffer then isolates and drops the bad events). Only INVALID_ARGUMENT counts; an outage, a timeout, contention,
quota or a permission problem must keep the batch for a retry, or events would be dropped for a passing fault."""

from __future__ import annotations

import pytest

api = pytest.importorskip("google.api_core.exceptions")

from google.api_core.exceptions import RetryError  # noqa: E402

from gptload.errors import StoreUnavailable  # noqa: E402
from gptload.store.firestore.client import invalid_request  # noqa: E402


def _failed(cause: BaseException) -> StoreUnavailable:
    try:
        raise StoreUnavailable("Firestore usage write failed") from cause
    except StoreUnavailable as exc:
        return exc


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
