"""Streaming relay details and resumable uploads through the proxy."""

from __future__ import annotations

import json
import socket
import time

import requests

BODY = {"contents": [{"parts": [{"text": "alpha beta gamma delta"}]}]}


def test_json_array_stream_is_relayed_incrementally(group, fake):
    fake.stream_chunks, fake.stream_interval = 4, 0.2
    r = requests.post(
        f"{group.base}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        headers={"x-goog-api-key": group.proxy_key},
        json=BODY,
        stream=True,
        timeout=10,
    )
    assert r.status_code == 200
    arrivals, body = [], b""
    for piece in r.iter_content(chunk_size=None):
        arrivals.append(time.monotonic())
        body += piece
    assert body.lstrip().startswith(b"[") and body.rstrip().endswith(b"]")
    assert arrivals[-1] - arrivals[0] > 0.45  # four chunks 0.2 s apart did not arrive at once


def test_client_going_away_closes_the_upstream_stream(group, fake):
    fake.stream_chunks, fake.stream_interval = 30, 0.05
    host, port = group.server.url.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /proxy/{group.name}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1\r\n"
            f"Host: {host}\r\nx-goog-api-key: {group.proxy_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data: " not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
    # the client hung up after the first event, as a closed browser tab or a killed process does
    (seen,) = fake.requests
    deadline = time.monotonic() + 5
    while seen.completed_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen.completed_at is not None, "upstream stream was not closed"
    assert len(seen.chunk_times) < 30  # the proxy stopped reading instead of draining the whole answer
    assert group.row_of(seen.key)["failure_count"] == 0  # no penalty for the client's hang-up


def test_upload_start_url_points_at_the_proxy_without_any_key(group, fake):
    r = requests.post(
        f"{group.base}/upload/v1beta/files",
        params={"key": group.proxy_key},
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "5",
            "X-Goog-Upload-Header-Content-Type": "text/plain",
            "Content-Type": "application/json",
        },
        json={"file": {"display_name": "five"}},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    url = r.headers["X-Goog-Upload-URL"]
    assert url.startswith(f"{group.base}/upload/v1beta/files?")
    assert "key=" not in url and "upload_id=" in url
    assert all(k not in url for k in group.keys)
    (start,) = fake.requests
    # the chunk request carries no key at all, like the SDKs' chunk requests to Google's URL
    done = requests.post(
        url,
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
        data=b"hello",
        timeout=10,
    )
    assert done.status_code == 200, done.text
    name = done.json()["file"]["name"]
    assert fake.file_owner(name) == start.key
    assert fake.requests[-1].effective_key == start.key
    # an upload id that this proxy never issued is not a capability
    forged = requests.post(
        f"{group.base}/upload/v1beta/files?upload_id=forged&upload_protocol=resumable",
        headers={"X-Goog-Upload-Command": "upload, finalize"},
        data=b"x",
        timeout=10,
    )
    assert forged.status_code == 401
    assert len(fake.requests) == 2
