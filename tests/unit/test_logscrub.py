"""``logscrub``: every log record loses URL credentials, and a log call never raises because of the scrubber."""

from __future__ import annotations

import io
import logging

import pytest

from gptload import logscrub


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.fixture
def captured():
    logscrub.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_logscrub")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_a_bad_format_never_raises_from_the_log_call_and_its_traceback_is_still_scrubbed(captured, monkeypatch):
    logger, _stream = captured
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: reported.append(record))
    logger.info("%(missing)s", {"other": 1})  # KeyError: logging reports it as it always did, the caller goes on
    logger.info("value %s", _Unprintable())  # RuntimeError from __str__
    assert len(reported) == 2
    try:
        raise ConnectionError("Cannot connect to proxy http://bob:s3cr3t@proxy:3128")
    except ConnectionError:
        logger.exception("%(missing)s", {"other": 1})
    assert reported[2].exc_text and "s3cr3t" not in reported[2].exc_text


def test_records_keep_their_text_unless_a_url_carries_credentials(captured):
    logger, stream = captured
    logger.info("%d%% of %s to bob@example.com via http://proxy:3128/a@b", 50, ("k", 1))
    try:
        raise OSError("socks5h://u:pw-7@h:1080 refused")
    except OSError:
        logger.warning("attempt %d via %s failed", 2, "socks5h://u:pw-7@h:1080", exc_info=True)
    out = stream.getvalue()
    assert "50% of ('k', 1) to bob@example.com via http://proxy:3128/a@b" in out
    assert "pw-7" not in out and "attempt 2 via socks5h://****@h:1080 failed" in out
    assert "OSError: socks5h://****@h:1080 refused" in out


def test_logging_s_own_report_of_a_bad_format_shows_no_credentials(captured, capsys):
    logger, _stream = captured
    password = "pw-" + "8812"  # not in the source lines the report's traceback shows
    logger.info("%(missing)s", {"proxy": f"http://bob:{password}@proxy:3128"})
    logger.info("%d via %s", "not a number", f"socks5://bob:{password}@proxy:1080")
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "pw-8812" not in err and "socks5://****@proxy:1080" in err
