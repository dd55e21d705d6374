"""Maintenance: the scheduler's authentication and one round of upkeep, in process."""

from __future__ import annotations

import time

import pytest

from gptload.errors import Unauthorized
from gptload.web.auth import SchedulerAuth

AUD = "https://gptload-abc.a.run.app/api/tasks/run"
SA = "gptload-scheduler@proj.iam.gserviceaccount.com"


def verifier(claims=None, error=None):
    calls = []

    def verify(token, audience):
        calls.append((token, audience))
        if error:
            raise error
        return claims

    verify.calls = calls
    return verify


def test_oidc_token_of_the_scheduler_account_is_accepted():
    v = verifier({"email": SA, "email_verified": True, "aud": AUD})
    SchedulerAuth(AUD, SA, v).check("Bearer header.payload.sig")
    assert v.calls == [("header.payload.sig", AUD)]


@pytest.mark.parametrize(
    "claims, error",
    [
        ({"email": "someone@else.iam.gserviceaccount.com", "email_verified": True}, None),
        ({"email": SA, "email_verified": False}, None),
        (None, ValueError("Token has wrong audience")),
        (None, ValueError("Token expired")),
    ],
)
def test_other_tokens_are_refused(claims, error):
    with pytest.raises(Unauthorized):
        SchedulerAuth(AUD, SA, verifier(claims, error)).check("Bearer t")


def test_oidc_is_off_unless_configured():
    v = verifier({"email": SA, "email_verified": True})
    with pytest.raises(Unauthorized):
        SchedulerAuth(None, SA, v).check("Bearer t")
    with pytest.raises(Unauthorized):
        SchedulerAuth(AUD, SA, v).check(None)
    assert v.calls == []


def test_purge_respects_retention(sqlite_store):
    from gptload.models import LogQuery, UsageEvent

    now = time.time()
    sqlite_store.record_usage(
        [UsageEvent("g", "k", now - 10 * 86400, True, id="old"), UsageEvent("g", "k", now - 60, False, id="new")]
    )
    assert sqlite_store.purge_logs(now - 7 * 86400) == 1
    rows, total = sqlite_store.query_logs(LogQuery(), 0, 10)
    assert total == 1 and rows[0]["id"] == "new"


def test_validation_never_blames_a_key_for_the_probes_own_network_error(sqlite_store):
    """An unreachable upstream (our network) leaves an invalid key invalid and an active key active."""
    import socket

    import requests

    from gptload.cipher import Cipher
    from gptload.keypool.classify import Kind, Verdict
    from gptload.keypool.state import Policy
    from gptload.models import Group, KeyRecord, Upstream
    from gptload.pool import KeyPool
    from gptload.validation import Validator
    from gptload.vault.store_vault import StoreVault
    from tests.fakes.fake_gemini import make_key

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    vault = StoreVault(sqlite_store, Cipher(b"v" * 32))
    sqlite_store.create_group(Group("g", (Upstream(f"http://127.0.0.1:{closed_port}"),)))
    secrets = {"k1": make_key(1), "k2": make_key(2)}
    sqlite_store.add_keys("g", [KeyRecord(i, "g", "AIza...") for i in secrets], vault.add("g", secrets))
    sqlite_store.apply_verdict("g", "k1", Verdict(Kind.KEY_INVALID, "x"), "m", time.time(), Policy())
    pool = KeyPool(sqlite_store, vault)
    view = pool.view("g")
    counts = Validator(sqlite_store, pool, requests.Session()).validate(view, list(view.keys))
    assert counts == {"valid": 0, "invalid": 0, "inconclusive": 2}
    states = {k.id: k.state.status for k in sqlite_store.list_keys("g")}
    assert states == {"k1": "invalid", "k2": "active"}
