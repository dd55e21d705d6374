"""What the real server does when its upstream is hostile or broken: redirects, decompression bombs, endless
bodies, trickles, resets, foreign upload URLs. The upstream is ``tests.fakes.hostile_upstream`` on a real socket."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import start_server
from tests.fakes.fake_gemini import make_key
from tests.fakes.hostile_upstream import GzipBomb, HostileUpstream, Huge, Redirect, Reset, Trickle, UploadStart

BODY = {"contents": [{"parts": [{"text": "hello"}]}]}
MiB = 1 << 20
MARGIN = 1.5  # seconds a request may take past its timeout (server and client scheduling on a shared machine)


@pytest.fixture
def hostile():
    with HostileUpstream() as up:
        yield up


@pytest.fixture
def elsewhere():
    """A second host: nothing may ever reach it."""
    with HostileUpstream() as up:
        yield up


def reason_of(r) -> str:
    """gptload's own errors on proxy routes: Google's envelope, the code as the ErrorInfo reason."""
    (info,) = [d for d in r.json()["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def one_key_group(server, upstream: str, **settings):
    return server.make_group(upstream, [make_key(secrets.randbelow(10**9))], settings={"max_retries": 0, **settings})


def post(group, path: str, **kw) -> requests.Response:
    kw.setdefault("json", BODY)
    kw.setdefault("timeout", 30)
    headers = {"x-goog-api-key": group.proxy_key, **kw.pop("headers", {})}
    return requests.post(f"{group.base}/{path}", headers=headers, **kw)


# -- 1. redirects ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "status"), [("GET", 302), ("GET", 301), ("POST", 307), ("POST", 308)])
def test_a_redirect_is_passed_through_and_never_followed(server, hostile, elsewhere, method, status):
    location = f"{elsewhere.url}/v1beta/models?from=redirect"
    hostile.on("v1beta/models", Redirect(location, status=status, body=b'{"moved": "there"}'))
    group = one_key_group(server, hostile.url)
    r = requests.request(
        method,
        f"{group.base}/v1beta/models",
        headers={"x-goog-api-key": group.proxy_key},
        json=BODY if method == "POST" else None,
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == status, r.text
    assert r.headers["Location"] == location
    assert r.content == b'{"moved": "there"}'
    assert len(hostile.requests) == 1
    assert elsewhere.requests == []


# -- 2. bombs and endless bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 500])
def test_a_gzip_bomb_error_is_cut_to_one_mib(server, hostile, status):
    hostile.on(":generateContent", GzipBomb(status=status, inflated=1 << 30))
    group = one_key_group(server, hostile.url)
    r = post(group, "v1beta/models/gemini-2.5-flash:generateContent", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == status
    assert len(r.content) <= MiB


@pytest.mark.parametrize("chunked", [False, True])
def test_a_huge_error_body_is_cut_and_its_connection_closed(server, hostile, chunked):
    hostile.on(":generateContent", Huge(208 * MiB, status=500, chunked=chunked))
    group = one_key_group(server, hostile.url)
    started = time.monotonic()
    r = post(group, "v1beta/models/gemini-2.5-flash:generateContent")
    assert r.status_code == 500
    assert len(r.content) <= MiB
    (seen,) = hostile.wait_until_ended(1, timeout=30)
    assert seen.peer_gone, "the proxy read the whole 208 MB instead of closing the connection"
    assert time.monotonic() - started < 10


def test_a_huge_answer_to_a_captured_call_is_streamed_through(server, hostile):
    size = 300 * MiB
    hostile.on("cachedContents", Huge(size, status=200, chunked=True))
    group = one_key_group(server, hostile.url)
    r = post(group, "v1beta/cachedContents", json={"model": "models/gemini-2.5-flash"}, stream=True)
    assert r.status_code == 200
    total = 0
    for piece in r.raw.stream(MiB, decode_content=False):
        total += len(piece)
    assert total == size


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the worker's RSS")
def test_bombs_and_huge_bodies_leave_the_worker_rss_flat(tmp_path):
    """The server runs gunicorn: a master and one worker. The worker's peak RSS (VmHWM, reset before each case)
    must stay within 100 MiB of its RSS before the case, whatever the upstream sends."""
    server = start_server(tmp_path)
    cases = [
        ("v1beta/models/bomb-ok:generateContent", GzipBomb(status=200)),  # relayed; the token tap inflates it
        ("v1beta/models/bomb-400:generateContent", GzipBomb(status=400)),  # error bodies are decoded
        ("v1beta/models/bomb-500:generateContent", GzipBomb(status=500)),
        ("v1beta/models/huge-500:generateContent", Huge(208 * MiB, status=500)),
        ("v1beta/models/huge-503:generateContent", Huge(208 * MiB, status=503, chunked=True)),
        ("v1beta/cachedContents", Huge(300 * MiB, status=200, chunked=True)),  # captured calls are buffered
        ("v1beta/batches", GzipBomb(status=200)),
    ]
    try:
        with HostileUpstream() as up:
            for path, act in cases:
                up.on(path, act)
            # errors must not disable the one key midway (this test is about memory, not key state)
            group = one_key_group(server, up.url, blacklist_threshold=100)
            assert post(group, "v1beta/models/warm-up:generateContent").status_code == 200
            (worker,) = _children(server.process.pid)
            figures, worst = [], 0.0
            for path, _ in cases:
                before = _status_kib(worker, "VmRSS")
                _reset_peak(worker)
                r = post(group, path, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=300)
                for _ in r.raw.stream(MiB, decode_content=False):
                    pass
                r.close()
                peak = _status_kib(worker, "VmHWM")
                worst = max(worst, (peak - before) / 1024)
                figures.append(
                    f"{path} -> {r.status_code}: RSS before {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
                    f"growth {(peak - before) / 1024:.0f} MiB"
                )
        report = "\n".join(figures)
        print(report)
        if os.environ.get("GPTLOAD_RSS_REPORT"):
            Path(os.environ["GPTLOAD_RSS_REPORT"]).write_text(report + "\n")
        assert worst < 100, report
    finally:
        server.stop()


# -- 3. deadlines ---------------------------------------------------------------------------------------------
def test_request_timeout_is_a_deadline_for_a_trickled_body(server, hostile):
    hostile.on(":generateContent", Trickle(body=b'{"candidates": []}' + b" " * 60, interval=0.5))
    group = one_key_group(server, hostile.url, request_timeout_seconds=2)
    started = time.monotonic()
    with pytest.raises(requests.RequestException):
        post(group, "v1beta/models/gemini-2.5-flash:generateContent").content
    elapsed = time.monotonic() - started
    assert elapsed < 2 + MARGIN, f"ran {elapsed:.1f} s past a 2 s request timeout"
    (seen,) = hostile.wait_until_ended(1, timeout=5)
    assert seen.peer_gone and seen.ended_at - seen.at < 2 + MARGIN  # the proxy closed the upstream


def test_no_body_byte_before_the_deadline_is_a_504(server, hostile):
    late = Trickle(body=b"{}", interval=0.1, body_delay=5)  # headers at once, the body too late
    hostile.on(":generateContent", late)
    hostile.on("cachedContents", late)
    group = one_key_group(server, hostile.url, request_timeout_seconds=1)
    for path in ("v1beta/models/gemini-2.5-flash:generateContent", "v1beta/cachedContents"):
        started = time.monotonic()
        r = post(group, path)
        elapsed = time.monotonic() - started
        assert r.status_code == 504, (path, r.status_code, r.text)
        assert reason_of(r) == "UPSTREAM_TIMEOUT"
        assert elapsed < 1 + MARGIN, (path, elapsed)


@pytest.mark.parametrize(
    "settings",
    [{"first_byte_timeout_seconds": 1, "request_timeout_seconds": 60}, {"request_timeout_seconds": 1}],
)
def test_trickled_headers_end_at_the_first_byte_or_request_timeout(server, hostile, settings):
    hostile.on(":generateContent", Trickle(headers_too=True, interval=0.2))
    group = one_key_group(server, hostile.url, **settings)
    started = time.monotonic()
    r = post(group, "v1beta/models/gemini-2.5-flash:generateContent")
    elapsed = time.monotonic() - started
    assert r.status_code == 502 and reason_of(r) == "UPSTREAM_UNREACHABLE"
    assert elapsed < 1 + MARGIN, elapsed


def test_a_trickled_error_body_ends_at_the_deadline(server, hostile):
    hostile.on(":generateContent", Trickle(status=500, body=b'{"error": {"code": 500}}' + b" " * 60, interval=0.5))
    group = one_key_group(server, hostile.url, request_timeout_seconds=1)
    started = time.monotonic()
    r = post(group, "v1beta/models/gemini-2.5-flash:generateContent")
    assert r.status_code >= 500
    assert time.monotonic() - started < 1 + MARGIN


def test_streams_are_bound_by_the_idle_timeout_not_the_request_timeout(server, hostile):
    body = b"".join(b'data: {"n": %d}\r\n\r\n' % i for i in range(4))
    hostile.on(
        ":streamGenerateContent", Trickle(body=body, interval=0.05, chunked=True, content_type="text/event-stream")
    )
    group = one_key_group(server, hostile.url, request_timeout_seconds=1, stream_idle_timeout_seconds=1)
    started = time.monotonic()
    r = post(group, "v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert r.status_code == 200 and r.content == body
    assert time.monotonic() - started > 1  # a 1 s whole-request timeout did not cut the stream


def test_a_reset_before_any_body_byte_is_a_502_and_after_it_a_broken_body(server, hostile):
    hostile.on("models/none:generateContent", Reset(declared=1000, send=0))
    hostile.on("models/some:generateContent", Reset(declared=1_000_000, send=1000))
    group = one_key_group(server, hostile.url)
    r = post(group, "v1beta/models/none:generateContent")
    assert r.status_code == 502 and reason_of(r) == "UPSTREAM_UNREACHABLE"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        post(group, "v1beta/models/some:generateContent")


# -- 4. upload URLs -------------------------------------------------------------------------------------------
def start_upload(group) -> requests.Response:
    return post(
        group,
        "upload/v1beta/files",
        headers={"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        json={"file": {"display_name": "x"}},
    )


@pytest.mark.parametrize(
    "foreign",
    [
        "{elsewhere}/upload/v1beta/files?upload_id={uid}",  # another port
        "{hostile}/prefix/../upload/v1beta/files?upload_id={uid}",  # escapes the upstream's path prefix
        "{hostile}/prefix/%2e%2E/upload/v1beta/files?upload_id={uid}",  # the same, percent-encoded
        "{hostile}/upload/v1beta/files?upload_id={uid}",  # same host, outside the prefix
    ],
)
def test_a_foreign_upload_url_is_neither_bound_nor_handed_out(server, hostile, elsewhere, foreign):
    uid = f"evil-{secrets.token_hex(6)}"
    url = foreign.format(elsewhere=elsewhere.url, hostile=hostile.url, uid=uid)
    hostile.on("upload/v1beta/files", UploadStart(url), times=1)
    group = one_key_group(server, f"{hostile.url}/prefix")
    r = start_upload(group)
    assert r.status_code == 200
    assert "X-Goog-Upload-URL" not in r.headers
    # the client tries the upload id anyway: without a binding it is an unauthenticated proxy call
    chunk = requests.post(
        f"{group.base}/upload/v1beta/files?upload_id={uid}",
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
        data=b"hello",
        timeout=30,
    )
    assert chunk.status_code == 401 and reason_of(chunk) == "INVALID_PROXY_KEY"
    assert elsewhere.requests == []
    assert [s.path for s in hostile.requests] == ["/prefix/upload/v1beta/files"]
    # this group's own warning: the session server's log holds the other parameters' too
    assert f"dropped an upload URL from the upstream of {group.name}:" in server.log()


def test_an_upload_url_under_a_path_prefixed_upstream_is_followed_there(server, hostile):
    uid = f"ok-{secrets.token_hex(6)}"
    hostile.on("upload/v1beta/files", UploadStart(f"{hostile.url}/prefix/upload/v1beta/files?upload_id={uid}"), times=1)
    group = one_key_group(server, f"{hostile.url}/prefix")
    r = start_upload(group)
    assert r.headers["X-Goog-Upload-URL"] == f"{group.base}/upload/v1beta/files?upload_id={uid}"
    chunk = requests.post(
        r.headers["X-Goog-Upload-URL"],
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
        data=b"hello",
        timeout=30,
    )
    assert chunk.status_code == 200, chunk.text
    start, sent = hostile.requests
    assert sent.target == f"/prefix/upload/v1beta/files?upload_id={uid}"
    assert sent.headers["x-goog-api-key"] == start.headers["x-goog-api-key"]
