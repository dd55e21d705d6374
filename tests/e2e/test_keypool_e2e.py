"""Key-pool behaviour through the real server: Gemini's real error bodies in, the right key states out."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

from tests.e2e.conftest import start_server, wait_for
from tests.fakes.fake_gemini import Reply, errors

BODY = {"contents": [{"parts": [{"text": "hello"}]}]}


def generate(group, model="gemini-2.5-flash", **kw) -> requests.Response:
    return requests.post(
        f"{group.base}/v1beta/models/{model}:generateContent",
        headers={"x-goog-api-key": group.proxy_key},
        json=kw.pop("json", BODY),
        timeout=30,
        **kw,
    )


def gen_keys(fake) -> list[str]:
    return [r.key for r in fake.requests if ":generateContent" in r.path]


@pytest.mark.parametrize("error", ["invalid_key", "suspended", "service_disabled"])
def test_dead_keys_are_disabled_after_one_use_and_the_request_still_succeeds(group, fake, error):
    dead = group.keys[0]
    fake.set_behavior(dead, getattr(errors, error)())
    results = [generate(group) for _ in range(6)]
    assert [r.status_code for r in results] == [200] * 6
    assert gen_keys(fake).count(dead) == 1
    row = group.row_of(dead)
    assert row["status"] == "invalid"
    assert dead not in row["last_error"]


def test_per_minute_429_cools_the_key_for_the_retry_delay_then_it_comes_back(group, fake):
    k = group.keys[0]
    fake.script(k, [errors.quota_per_minute("gemini-2.5-flash", retry_delay="1s")])
    for _ in range(6):
        assert generate(group).status_code == 200
    assert gen_keys(fake).count(k) == 1  # used once (the 429), then skipped
    row = group.row_of(k)
    assert row["status"] == "cooling"
    (cd,) = row["cooldowns"]
    assert cd["model"] == "gemini-2.5-flash"
    assert 0 < cd["until"] - time.time() <= 1.0
    # wait for the announced deadline (not for luck): afterwards the key serves again
    time.sleep(max(0.0, cd["until"] - time.time()) + 0.05)
    before = len(gen_keys(fake))
    for _ in range(6):
        assert generate(group).status_code == 200
    assert k in gen_keys(fake)[before:]
    assert group.row_of(k)["status"] == "active"


def test_per_day_429_cools_only_that_model(group, fake):
    from gptload.keypool.state import next_daily_reset

    k = group.keys[0]
    fake.script(k, [errors.quota_per_day("gemini-2.5-pro")])
    before = time.time()
    for _ in range(3):
        assert generate(group, "gemini-2.5-pro").status_code == 200
    after = time.time()
    for _ in range(6):
        assert generate(group, "gemini-2.5-flash").status_code == 200
    pro = [r.key for r in fake.requests if "gemini-2.5-pro" in r.path]
    flash = [r.key for r in fake.requests if "gemini-2.5-flash" in r.path]
    assert pro.count(k) == 1
    assert flash.count(k) == 2  # still in the flash rotation
    (cd,) = group.row_of(k)["cooldowns"]
    assert cd["model"] == "gemini-2.5-pro"
    # until midnight Pacific (not the 13 s RetryInfo); compared with the clock, so the test holds at any hour
    assert cd["until"] in (next_daily_reset(before), next_daily_reset(after)) and cd["until"] > after


def test_503_is_retried_on_another_key_and_never_counts_against_it(group, fake):
    """An overload is the model's state, whatever key asked: retried, never counted (an intermittent overload would
    otherwise disable keys that happened to be asked at the wrong moment)."""
    k = group.keys[0]
    fake.set_behavior(k, errors.overloaded())
    codes = [generate(group).status_code for _ in range(9)]
    assert codes == [200] * 9
    row = group.row_of(k)
    assert row["status"] == "active" and row["failure_count"] == 0


def test_a_500_on_one_key_while_others_serve_counts_toward_the_threshold(group, fake):
    k = group.keys[0]
    fake.set_behavior(k, errors.internal())
    codes = [generate(group).status_code for _ in range(9)]
    assert codes == [200] * 9
    assert gen_keys(fake).count(k) == 3  # blacklist_threshold = 3 consecutive isolated failures, then disabled
    row = group.row_of(k)
    assert row["status"] == "invalid" and row["failure_count"] == 3


def test_a_request_error_passes_through_once_with_no_penalty(group, fake):
    fake.script("*", [errors.bad_request()])
    r = generate(group, json={"content": "wrong field"})
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert len(fake.requests) == 1
    rows = group.key_rows()
    assert all(row["status"] == "active" and row["failure_count"] == 0 for row in rows)


@pytest.mark.parametrize("error", ["region", "other_project_file"])
def test_egress_and_affinity_errors_are_not_the_keys_fault(group, fake, error):
    fake.script("*", [getattr(errors, error)()])
    r = generate(group)
    assert r.status_code in (400, 403)
    assert len(fake.requests) == 1
    assert all(row["status"] == "active" for row in group.key_rows())


def test_when_every_key_fails_the_last_upstream_error_is_returned(group, fake):
    for k in group.keys:
        fake.set_behavior(k, errors.overloaded())
    r = generate(group)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "The model is overloaded. Please try again later."
    assert len(fake.requests) == 3  # 1 + max_retries(3) attempts, but only three keys exist


def test_when_no_key_can_serve_a_clear_503(group, fake):
    for k in group.keys:
        fake.script(k, [errors.quota_per_minute("gemini-2.5-flash", retry_delay="30s")])
    r = generate(group)
    # every key answered 429: that is about the pool's keys, not the client's request
    assert r.status_code == 503 and "3 keys tried" in r.json()["error"]["message"]
    r = generate(group)
    assert r.status_code == 503
    body = r.json()["error"]
    assert body["status"] == "UNAVAILABLE" and body["details"][0]["reason"] == "NO_KEYS_AVAILABLE"
    (retry,) = [d for d in body["details"] if d["@type"].endswith("RetryInfo")]
    assert 0 < int(retry["retryDelay"].rstrip("s")) <= 30
    assert 1 <= int(r.headers["Retry-After"]) <= 30
    assert len(fake.requests) == 3  # the second request never went upstream


def test_max_retries_bounds_the_attempts(server, fake):
    keys = [fake.add_key() for _ in range(6)]
    group = server.make_group(fake.url, keys, settings={"max_retries": 1})
    for k in keys:
        fake.set_behavior(k, errors.internal())
    assert generate(group).status_code == 500
    assert len(fake.requests) == 2


def test_upstream_unreachable_is_a_clear_502(server, fake):
    from tests.e2e.conftest import free_port

    group = server.make_group(f"http://127.0.0.1:{free_port()}", [fake.add_key()], settings={"max_retries": 0})
    r = generate(group)
    assert r.status_code == 502
    assert r.json()["error"]["details"][0]["reason"] == "UPSTREAM_UNREACHABLE"


def test_upstream_reset_mid_stream_breaks_the_client_stream(group, fake):
    fake.stream_chunks, fake.stream_interval = 4, 0.1  # paced, so the first chunk is relayed before the RST
    fake.script("*", [Reply.stream_reset(after_chunks=2)])
    r = requests.post(
        f"{group.base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": group.proxy_key},
        json=BODY,
        stream=True,
        timeout=10,
    )
    assert r.status_code == 200
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in r.iter_content(chunk_size=None):
            got += piece
    # what arrived before the reset (a RST may discard the last unread chunk), and no clean end
    assert 1 <= got.count(b"data: ") <= 2
    assert len(fake.requests) == 1  # never retried after bytes reached the client
    # the broken stream is logged as a failure, not as a success
    deadline = time.monotonic() + 10
    rows: list = []
    while time.monotonic() < deadline and not rows:
        group.server.api("POST", "/api/tasks/run")  # flushes buffered usage
        rows = group.server.api("GET", f"/api/logs?group={group.name}").json()["logs"]
        time.sleep(0.05)
    (row,) = rows
    assert row["success"] is False and row["error"].startswith("upstream stream broke")


def test_sixty_four_concurrent_requests_no_locking_errors(server, fake):
    keys = [fake.add_key() for _ in range(8)]
    group = server.make_group(fake.url, keys)
    fake.set_behavior(keys[0], errors.overloaded())  # failures write to the store concurrently too
    fake.set_behavior(keys[1], errors.quota_per_minute("gemini-2.5-flash", retry_delay="1s"))
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(lambda _: generate(group).status_code, range(64)))
    assert codes == [200] * 64
    assert "database is locked" not in server.log()
    # the last answers' rows are added as their relays end, just after the client read the last byte
    calls = len(fake.requests)
    wait_for(lambda: sum(row["request_count"] for row in group.key_rows()) >= calls, what="every call's usage row")
    total = sum(row["request_count"] for row in group.key_rows())
    assert total == calls


def test_state_survives_a_restart(tmp_path, fake):
    keys = [fake.add_key() for _ in range(3)]
    first = start_server(tmp_path)
    try:
        group = first.make_group(fake.url, keys)
        fake.set_behavior(keys[0], errors.invalid_key())
        for _ in range(4):
            assert generate(group).status_code == 200
    finally:
        first.stop()
    second = start_server(tmp_path, data_dir=first.data_dir)
    try:
        group.server = second
        assert group.row_of(keys[0])["status"] == "invalid"
        assert sum(r["request_count"] for r in group.key_rows()) == 5  # flushed on shutdown
        fake.reset()
        for _ in range(4):
            assert generate(group).status_code == 200
        assert keys[0] not in gen_keys(fake)
    finally:
        second.stop()


def test_no_real_key_in_logs_or_admin_responses(server, fake, group):
    fake.set_behavior(group.keys[0], errors.suspended())
    for _ in range(3):
        generate(group)
    texts = [
        server.log(),
        server.api("GET", f"/api/groups/{group.name}/keys").text,
        server.api("GET", f"/api/groups/{group.name}").text,
        server.api("GET", "/api/groups").text,
    ]
    for secret in group.keys:
        for text in texts:
            assert secret not in text
    db = (server.data_dir / "gptload.db").read_bytes()
    for secret in group.keys:
        assert secret.encode() not in db


def test_upstream_cookies_are_neither_passed_on_nor_replayed(group, fake):
    fake.script("*", [Reply(200, {"candidates": []}, headers={"Set-Cookie": "NID=secret-session; Path=/"})])
    first = generate(group)
    assert first.status_code == 200 and "set-cookie" not in {k.lower() for k in first.headers}
    generate(group)
    assert all("cookie" not in r.headers for r in fake.requests)


def test_usage_is_flushed_from_request_tails_without_any_admin_call(tmp_path, fake):
    """Streamed and buffered answers both end in a flush once one is due (USAGE_FLUSH_SECONDS after the last),
    with no admin read, maintenance round or shutdown involved."""
    import sqlite3

    srv = start_server(tmp_path, {"USAGE_FLUSH_SECONDS": "0.2"})
    try:
        group = srv.make_group(fake.url, [fake.add_key()])
        db = srv.data_dir / "gptload.db"

        def logged(status: int) -> int:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT COUNT(*) FROM request_logs WHERE status_code = ?", (status,)).fetchone()[0]

        deadline = time.monotonic() + 10
        while logged(200) == 0:  # streamed relays (generateContent is relayed as it arrives)
            assert time.monotonic() < deadline, "streamed answers never flushed usage"
            assert generate(group).status_code == 200
            time.sleep(0.05)  # pacing only: the assertion is about what the tails eventually do
        fake.set_behavior(group.keys[0], errors.bad_request())
        while logged(400) == 0:  # buffered error answers
            assert time.monotonic() < deadline, "buffered answers never flushed usage"
            assert generate(group).status_code == 400
            time.sleep(0.05)
    finally:
        srv.stop()
