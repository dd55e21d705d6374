"""X-Forwarded-* through the real server: believed only for TRUSTED_PROXY_HOPS trusted proxies, and never able to
make the rewritten upload URL anything but http(s)://valid-host[:port]."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.conftest import start_server, wait_for

START_HEADERS = {
    "X-Goog-Upload-Protocol": "resumable",
    "X-Goog-Upload-Command": "start",
    "X-Goog-Upload-Header-Content-Length": "5",
    "X-Goog-Upload-Header-Content-Type": "text/plain",
    "Content-Type": "application/json",
}


def _upload_url(group, headers: dict) -> str:
    r = requests.post(
        f"{group.base}/upload/v1beta/files",
        params={"key": group.proxy_key},
        headers={**START_HEADERS, **headers},
        json={"file": {"display_name": "five"}},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.headers["X-Goog-Upload-URL"]


def _logged_source_ip(group, headers: dict) -> str:
    r = requests.post(
        f"{group.base}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": group.proxy_key, **headers},
        json={"contents": [{"parts": [{"text": "hello"}]}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text

    def generation_rows():
        logs = group.server.api("GET", f"/api/logs?group={group.name}").json()["logs"]
        return [row for row in logs if row["path"].endswith(":generateContent")]

    (row,) = wait_for(generation_rows, what="the generation's log row")  # written just after its last byte came
    return row["source_ip"]


SPOOFED = {
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "javascript",
    "X-Forwarded-For": "6.6.6.6",
}


def test_by_default_forwarded_headers_from_anyone_are_ignored(group):
    assert _upload_url(group, SPOOFED).startswith(f"{group.base}/upload/v1beta/files?")
    assert _logged_source_ip(group, SPOOFED) == "127.0.0.1"
    # gunicorn's own trust of X-Forwarded-Proto from 127.0.0.1 is off too
    assert _upload_url(group, {"X-Forwarded-Proto": "https"}).startswith("http://127.0.0.1:")


@pytest.fixture(scope="module")
def behind_one_proxy(tmp_path_factory):
    """As on Cloud Run: one trusted hop (Google's front end appends the client's address, sets the scheme)."""
    srv = start_server(tmp_path_factory.mktemp("hops"), {"TRUSTED_PROXY_HOPS": "1"})
    yield srv
    srv.stop()


def test_one_trusted_hop_takes_the_right_most_address_and_the_scheme(behind_one_proxy, fake):
    group = behind_one_proxy.make_group(fake.url, [fake.add_key()])
    # the client wrote 6.6.6.6 itself; the front end appended the address it saw
    assert _logged_source_ip(group, {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}) == "203.0.113.9"
    host = behind_one_proxy.url.removeprefix("http://")
    url = _upload_url(group, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert url.startswith(f"https://{host}/proxy/{group.name}/upload/v1beta/files?")  # X-Forwarded-Host: never


@pytest.mark.parametrize("proto", ["javascript", "https://evil.example/#", "data"])
def test_a_trusted_hop_still_cannot_make_the_scheme_anything_but_http_or_https(behind_one_proxy, fake, proto):
    group = behind_one_proxy.make_group(fake.url, [fake.add_key()])
    assert _upload_url(group, {"X-Forwarded-Proto": proto}).startswith(f"{behind_one_proxy.url}/proxy/")


def test_an_invalid_host_header_falls_back_to_the_servers_own_address(group):
    url = _upload_url(group, {"Host": "evil.example/phish?x="})
    assert url.startswith(f"{group.base}/upload/v1beta/files?"), url
