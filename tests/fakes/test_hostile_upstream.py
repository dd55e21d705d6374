"""The hostile upstream fake does what it says (real sockets, small sizes)."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import requests

from tests.fakes.hostile_upstream import (
    Echo,
    GzipBomb,
    HostileUpstream,
    Huge,
    Redirect,
    Reset,
    Trickle,
    UploadStart,
    gzip_bomb,
)


@pytest.fixture
def up():
    with HostileUpstream() as server:
        yield server


def test_routes_default_and_recording(up):
    up.on("/a", Redirect("http://elsewhere.invalid/x", status=307), times=1)
    r = requests.post(f"{up.url}/a?x=1", data=b"hi", allow_redirects=False, timeout=5)
    assert r.status_code == 307 and r.headers["Location"] == "http://elsewhere.invalid/x"
    assert requests.get(f"{up.url}/a", timeout=5).json() == {}  # the route was used up: default answer
    first, second = up.wait_until_ended(2)
    assert (first.method, first.target, first.body) == ("POST", "/a?x=1", b"hi")
    assert second.path == "/a"


def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_its_size(up):
    assert len(gzip_bomb(16 << 20)) < 64 << 10
    up.on("/", GzipBomb(status=500, inflated=16 << 20))
    r = requests.get(f"{up.url}/", stream=True, timeout=5)
    assert r.status_code == 500 and r.headers["Content-Encoding"] == "gzip"
    wire = r.raw.read(decode_content=False)
    assert len(wire) == int(r.headers["Content-Length"]) and len(gzip.decompress(wire)) == 16 << 20


@pytest.mark.parametrize("chunked", [False, True])
def test_huge_body_is_generated_in_pieces(up, chunked):
    up.on("/", Huge(3 << 20, status=503, chunked=chunked))
    r = requests.get(f"{up.url}/", timeout=5)
    assert r.status_code == 503 and len(r.content) == 3 << 20 and r.content.startswith(b'{"filler": "x')
    assert ("Content-Length" in r.headers) is not chunked


def test_trickle_sends_a_byte_per_interval(up):
    up.on("/", Trickle(body=b"abcd", interval=0.04))
    started = time.monotonic()
    r = requests.get(f"{up.url}/", timeout=5)
    assert r.content == b"abcd" and time.monotonic() - started >= 0.12


def test_reset_mid_body(up):
    up.on("/", Reset(declared=10_000, send=100))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{up.url}/", timeout=5)


def test_upload_start_and_echo(up):
    up.on("/upload", UploadStart("http://127.0.0.1:9/upload?upload_id=u"))
    up.on("/echo", Echo(status=400))
    assert requests.post(f"{up.url}/upload", timeout=5).headers["X-Goog-Upload-URL"].endswith("upload_id=u")
    r = requests.post(f"{up.url}/echo", headers={"x-goog-api-key": "AIzaSECRET"}, data=b"body", timeout=5)
    assert r.status_code == 400
    echoed = json.loads(r.content)["error"]["request"]
    assert echoed["headers"]["x-goog-api-key"] == "AIzaSECRET" and echoed["body"] == "body"
