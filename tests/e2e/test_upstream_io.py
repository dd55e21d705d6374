"""Capped reads, deadlines and no redirects, against the hostile upstream on a real socket (the pure decoding
and the watchdog are tests/unit/test_upstream_decoding.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import requests

from gptload.errors import UpstreamTimeout, UpstreamUnreachable
from gptload.keypool.classify import Kind
from gptload.proxy import upstream_io
from gptload.proxy.upstream import make_session, prepare
from gptload.validation import probe
from tests.fakes.hostile_upstream import (
    GzipBomb,
    HostileUpstream,
    Huge,
    Redirect,
    Reset,
    Trickle,
    gzip_bomb,
    peak_bytes,
)

MiB = 1 << 20
BOMB = 64 * MiB  # inflated size of the bombs here: big enough to see, small enough to be quick
MARGIN = 1.0


@pytest.fixture
def up():
    with HostileUpstream() as server:
        yield server


@pytest.fixture
def session():
    s = make_session(4)
    yield s
    s.close()


def send(session, url, timeout, method="POST", body=b"{}"):
    return session.send(prepare(method, url, {}, body), stream=True, timeout=timeout, allow_redirects=False)


# -- reading from a socket --------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", [GzipBomb(status=500, inflated=BOMB), Huge(40 * MiB, status=500, chunked=True)])
def test_read_capped_keeps_one_mib_and_leaves_the_rest_unread(up, session, act):
    up.on("/", act)
    gzip_bomb(BOMB)

    def read():
        resp = send(session, f"{up.url}/x", upstream_io.Timeouts(5, 5, total=10))
        try:
            return upstream_io.read_capped(resp)
        finally:
            resp.close()

    body, peak = peak_bytes(read)
    assert len(body) == upstream_io.ERROR_BODY_CAP and peak < 8 * MiB
    (seen,) = up.wait_until_ended(1)
    assert seen.peer_gone or isinstance(act, GzipBomb)  # closed, not drained (a bomb is small enough to be sent)


def test_a_redirect_is_returned_not_followed(up, session):
    with HostileUpstream() as elsewhere:
        up.on("/", Redirect(f"{elsewhere.url}/stolen", status=307))
        resp = send(session, f"{up.url}/x", upstream_io.Timeouts(5, 5, total=10))
        assert resp.status_code == 307 and resp.headers["Location"] == f"{elsewhere.url}/stolen"
        assert upstream_io.read_capped(resp) == b'{"moved": true}'
        resp = session.post(f"{up.url}/x", data=b"{}", timeout=5)  # the validation probe's way in
        assert resp.status_code == 307 and resp.content == b'{"moved": true}'
        assert elsewhere.requests == []


def test_the_whole_call_deadline_cuts_a_trickled_body(up, session):
    up.on("/", Trickle(body=b"x" * 100, interval=0.05))
    started = time.monotonic()
    resp = send(session, f"{up.url}/x", upstream_io.Timeouts(5, 5, total=0.2))
    got = b""
    with pytest.raises(upstream_io.UpstreamDeadline):
        for chunk in upstream_io.body_chunks(resp):
            got += chunk
    assert 0 < len(got) < 100 and time.monotonic() - started < 0.2 + MARGIN


def test_the_deadline_interrupts_a_read_that_is_blocked(up, session):
    up.on("/", Trickle(body=b"x", interval=0.05, body_delay=10))
    started = time.monotonic()
    resp = send(session, f"{up.url}/x", upstream_io.Timeouts(5, 30, total=0.2))  # per-read timeout: 30 s
    with pytest.raises(upstream_io.UpstreamDeadline):
        list(upstream_io.body_chunks(resp))
    assert time.monotonic() - started < 0.2 + MARGIN


@pytest.mark.parametrize("timeouts", [upstream_io.Timeouts(5, 0.2, total=30), upstream_io.Timeouts(5, 30, total=0.2)])
def test_trickled_headers_end_at_the_first_byte_bound(up, session, timeouts):
    up.on("/", Trickle(headers_too=True, interval=0.02))  # each byte well within any per-read timeout
    started = time.monotonic()
    with pytest.raises(upstream_io.UpstreamDeadline):
        send(session, f"{up.url}/x", timeouts)
    assert time.monotonic() - started < 0.2 + MARGIN


def test_a_stream_is_bound_by_its_idle_gap_only(up, session):
    up.on("/fast", Trickle(body=b"x" * 10, interval=0.03, chunked=True))
    resp = send(session, f"{up.url}/fast", upstream_io.Timeouts(5, 5, idle=0.2))  # longer than 0.2 s in all
    assert b"".join(upstream_io.body_chunks(resp)) == b"x" * 10
    up.on("/slow", Trickle(body=b"xy", interval=2, chunked=True))
    resp = send(session, f"{up.url}/slow", upstream_io.Timeouts(5, 5, idle=0.2))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        list(upstream_io.body_chunks(resp))
    assert time.monotonic() - started < 0.2 + MARGIN


def test_primed_turns_a_failure_before_the_first_byte_into_an_error_answer(up, session):
    up.on("/late", Trickle(body=b"x", interval=0.05, body_delay=10))
    up.on("/reset", Reset(declared=100, send=0))
    resp = send(session, f"{up.url}/late", upstream_io.Timeouts(5, 5, total=0.2))
    with pytest.raises(UpstreamTimeout) as info:
        upstream_io.Primed(upstream_io.body_chunks(resp))
    assert info.value.status == 504 and info.value.code == "UPSTREAM_TIMEOUT"
    resp = send(session, f"{up.url}/reset", upstream_io.Timeouts(5, 5, total=5))
    with pytest.raises(UpstreamUnreachable) as info:
        upstream_io.Primed(upstream_io.body_chunks(resp))
    assert info.value.status == 502
    resp = send(session, f"{up.url}/ok", upstream_io.Timeouts(5, 5, total=5))
    assert b"".join(upstream_io.Primed(upstream_io.body_chunks(resp))) == b"{}"


# -- the validation probe ---------------------------------------------------------------------------------------
def probe_view(url: str):
    return SimpleNamespace(
        balancer=SimpleNamespace(next=lambda: url), group=SimpleNamespace(test_model="m"), rules=None
    )


def test_the_probe_reads_at_most_one_mib_of_a_bomb(up, session):
    up.on(":generateContent", GzipBomb(status=400, inflated=BOMB))
    gzip_bomb(BOMB)
    verdict, peak = peak_bytes(lambda: probe(session, probe_view(up.url), SimpleNamespace(secret="AIzaX"), 5))
    assert verdict.kind is Kind.REQUEST_ERROR and peak < 8 * MiB


def test_the_probe_timeout_bounds_the_whole_probe(up, session):
    up.on(":generateContent", Trickle(body=b"{}" + b" " * 100, interval=0.05))
    started = time.monotonic()
    verdict = probe(session, probe_view(up.url), SimpleNamespace(secret="AIzaX"), 0.3)
    assert verdict.kind is Kind.TRANSIENT and time.monotonic() - started < 0.3 + MARGIN
