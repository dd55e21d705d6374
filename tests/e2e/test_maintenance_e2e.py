"""The maintenance endpoint through the real server."""

from __future__ import annotations

import requests

from tests.e2e.conftest import start_server
from tests.fakes.fake_gemini import errors


def test_maintenance_endpoint_revalidates_invalid_keys(tmp_path, fake):
    keys = [fake.add_key() for _ in range(3)]
    srv = start_server(tmp_path, {"STATE_REFRESH_SECONDS": "0"})
    try:
        group = srv.make_group(fake.url, keys)
        fake.set_behavior(keys[0], errors.invalid_key())
        fake.set_behavior(keys[1], errors.internal())
        url = f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent"
        for _ in range(12):
            requests.post(
                url,
                headers={"x-goog-api-key": group.proxy_key},
                json={"contents": [{"parts": [{"text": "hi"}]}]},
                timeout=10,
            )
        # key 0 on key evidence; key 1 after failing while other keys served (blacklist_threshold = 3)
        assert {r["status"] for r in group.key_rows()} == {"invalid", "active"}
        assert sum(r["status"] == "invalid" for r in group.key_rows()) == 2
        assert group.row_of(keys[1])["last_error"].startswith("failing: 3 failures")
        # key 0 is revived at Google (e.g. billing fixed); key 1 still failing: inconclusive, stays invalid
        fake.set_behavior(keys[0], None)
        assert requests.post(f"{srv.url}/api/tasks/run", timeout=10).status_code == 401
        r = srv.api("POST", "/api/tasks/run")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["validated"][group.name] == {"valid": 1, "invalid": 0, "inconclusive": 1}
        assert group.row_of(keys[0])["status"] == "active"
        assert group.row_of(keys[1])["status"] == "invalid"
        # within the validation interval only the key disabled for failing (not on key evidence) is probed again
        before = len(fake.requests)
        assert srv.api("POST", "/api/tasks/run").json()["validated"] == {
            group.name: {"valid": 0, "invalid": 0, "inconclusive": 1}
        }
        assert [r.key for r in fake.requests[before:]] == [keys[1]]
        fake.set_behavior(keys[1], None)  # it recovers: the next round brings it back at once
        assert srv.api("POST", "/api/tasks/run").json()["validated"][group.name]["valid"] == 1
        assert group.row_of(keys[1])["status"] == "active"
    finally:
        srv.stop()
