"""Log records without URL credentials: a proxy URL's user info (``http://user:pass@host:port``) may be echoed by
an exception (requests, urllib3, PySocks, websockets) or a message; ``install`` makes every log record of the process
carry ``scheme://****@host:port`` instead, in its message and in its formatted traceback.

It wraps the log record factory (``logging.setLogRecordFactory``), so it holds for every logger and handler,
whoever configured them (``python main.py``, functions-framework on Cloud Run, pytest's caplog). Idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from gptload import proxyurl

_lock = threading.Lock()
_installed = False
_formatter = logging.Formatter()


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def scrub_record(record: logging.LogRecord) -> None:
    """``record`` with URL user info replaced in its message and traceback (only when one may be there: "@"). Never
    raises: it runs inside every log call."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format/args pair (KeyError, a failing __str__...): logging reports it
        message = ""  # itself when the record is emitted, as without the scrubber; the log call never raises
        _scrub_parts(record)  # that report prints the message and its arguments as they are
    if "://" in message and "@" in message:
        record.msg, record.args = proxyurl.scrub(message), None
    if record.exc_info and record.exc_info[1] is not None:
        text = _formatter.formatException(record.exc_info)
        if "@" in text:
            record.exc_text = proxyurl.scrub(text)


def _scrub_parts(record: logging.LogRecord) -> None:
    """``record``'s message and string arguments scrubbed one by one (its format is broken: they stay apart)."""
    if isinstance(record.msg, str):
        record.msg = proxyurl.scrub(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(proxyurl.scrub(a) if isinstance(a, str) else a for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: proxyurl.scrub(v) if isinstance(v, str) else v for k, v in args.items()}
