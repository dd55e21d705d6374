"""Capped decoding without a socket: the inflater, decode_capped, the token tap on bombs, and the watchdog's
bookkeeping (the socket side, reads, deadlines and redirects, is tests/e2e/test_upstream_io.py)."""

from __future__ import annotations

import gzip
import time
import zlib

import pytest
import requests

from gptload.proxy import upstream_io
from gptload.proxy.tokens import TokenTap
from tests.fakes.hostile_upstream import gzip_bomb, peak_bytes

MiB = 1 << 20
BOMB = 64 * MiB  # inflated size of the bombs here: big enough to see, small enough for the unit suite


# -- decoding ---------------------------------------------------------------------------------------------------
def test_inflater_never_produces_more_than_a_step():
    bomb = gzip_bomb(BOMB)
    pieces = upstream_io.Inflater("gzip").pieces(bomb, 4096)
    assert all(len(next(pieces)) == 4096 for _ in range(100))
    (total, peak) = peak_bytes(lambda: sum(len(p) for p in upstream_io.Inflater("gzip").pieces(bomb)))
    assert total == BOMB and peak < 2 * MiB


def test_inflater_formats():
    data = b'{"usageMetadata": {"totalTokenCount": 7}}' * 100
    for encoding, blob in [
        ("gzip", gzip.compress(data)),
        ("x-gzip", gzip.compress(data[:50]) + gzip.compress(data[50:])),  # two members
        ("deflate", zlib.compress(data)),  # zlib-wrapped, as the RFC says
        ("deflate", zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("", data),
        ("identity", data),
    ]:
        inflater = upstream_io.Inflater(encoding)
        halves = blob[: len(blob) // 2], blob[len(blob) // 2 :]  # fed as it arrives, in two reads
        assert b"".join(p for half in halves for p in inflater.pieces(half, 100)) == data, encoding
    assert not upstream_io.Inflater("br").supported
    with pytest.raises(requests.exceptions.ContentDecodingError):
        list(upstream_io.Inflater("gzip").pieces(b"not gzip at all"))


def test_decode_capped_gives_nothing_past_the_cap():
    assert upstream_io.decode_capped(gzip.compress(b"x" * 100), "gzip", 100) == b"x" * 100
    assert upstream_io.decode_capped(gzip_bomb(BOMB), "gzip", 2 * MiB) == b""
    assert upstream_io.decode_capped(b"garbage", "gzip", 100) == b""
    assert upstream_io.decode_capped(b"raw", "br", 100) == b""


def test_token_tap_counts_gzip_answers_and_gives_up_on_bombs():
    answer = b'{"candidates": [], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}}'
    tap = TokenTap("gzip")
    blob = gzip.compress(answer)
    for i in range(0, len(blob), 7):
        tap.feed(blob[i : i + 7])
    assert (tap.counts().prompt, tap.counts().total) == (3, 7)

    def bomb():
        tap = TokenTap("gzip", max_decoded=16 * MiB)
        wire = gzip_bomb(BOMB)
        for i in range(0, len(wire), 65536):
            tap.feed(wire[i : i + 65536])
        return tap.counts()

    gzip_bomb(BOMB)  # built before measuring
    counts, peak = peak_bytes(bomb)
    assert counts.total == 0 and peak < 2 * MiB


def test_the_watchdog_forgets_disarmed_tickets():
    dog = upstream_io._Watchdog()
    tickets = [dog.arm(time.monotonic() + 3600, lambda t: True) for _ in range(1000)]
    for ticket in tickets:
        dog.disarm(ticket)
    assert len(dog._heap) < 200
