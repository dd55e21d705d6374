"""The figures of ``/metrics`` as structured log lines, for deployments nothing scrapes (a Cloud Run function).

With ``METRICS_LOG_SECONDS`` > 0 each instance writes, every that many seconds, one JSON line per group and one for
the instance to stdout. Cloud Run (and Cloud Logging's agents) turn a JSON line on stdout into a structured entry
(``jsonPayload``, with ``severity`` and ``message``), so Cloud Monitoring's log-based metrics can sum them across
instances (a distribution metric whose value extractor is e.g. ``EXTRACT(jsonPayload.requests)``, with a ``group``
label extracted from ``jsonPayload.group``), and a log sink can send them to BigQuery. Counters are *deltas* since
the instance's previous line (so summing lines over any window and any number of instances is right); gauges are
the value at that moment. A group line is written only when its counters moved, or its keys changed state.

    {"severity": "INFO", "message": "gptload metrics", "group": "main", "interval_seconds": 60.0,
     "requests": 120, "failures": 2, "attempts": 125, "retries": 5, "prompt_tokens": 9000,
     "candidates_tokens": 30000, "total_tokens": 39000, "keys_active": 8, "keys_cooling": 1, "keys_invalid": 1,
     "keys_disabled": 0}
    {"severity": "INFO", "message": "gptload instance metrics", "interval_seconds": 60.0, "streams_open": 3,
     "usage_buffer_events": 40, "usage_dropped": 0, "usage_rejected": 0, "breakers_open": 0, "rss_bytes": 140000000,
     "threads": 1012}
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gptload.metrics import COUNTED, rss_bytes
from gptload.models import KEY_STATUSES

if TYPE_CHECKING:
    from gptload.app import Services

log = logging.getLogger(__name__)


def key_states(services: Services, now: float) -> dict[str, dict[str, int]]:
    """Keys by display state (active, cooling, invalid...) per group, from this instance's cached view."""
    out: dict[str, dict[str, int]] = {}
    for view in services.pool.views():
        counts = dict.fromkeys(KEY_STATUSES, 0)
        for key in view.keys:
            status = key.state.display_status(now)
            counts[status] = counts.get(status, 0) + 1
        out[view.name] = counts
    return out


class MetricsLog:
    """Builds the lines; ``lines()`` returns the ones due now and remembers what it reported."""

    def __init__(self, services: Services, clock: Callable[[], float] = time.monotonic) -> None:
        self._services = services
        self._clock = clock
        self._last_at = clock()
        self._last: dict[str, dict[str, int]] = {}
        self._last_keys: dict[str, dict[str, int]] = {}

    def lines(self) -> list[dict[str, Any]]:
        services = self._services
        now = self._clock()
        interval = round(now - self._last_at, 1)
        self._last_at = now
        totals = services.metrics.group_totals()
        keys = key_states(services, time.time())
        out: list[dict[str, Any]] = []
        for group in sorted(set(totals) | set(keys)):
            current = totals.get(group, dict.fromkeys(COUNTED, 0))
            before = self._last.get(group, dict.fromkeys(COUNTED, 0))
            delta = {name: current[name] - before.get(name, 0) for name in COUNTED}
            states = keys.get(group, {})
            if any(delta.values()) or states != self._last_keys.get(group):
                line: dict[str, Any] = {"severity": "INFO", "message": "gptload metrics", "group": group}
                line["interval_seconds"] = interval
                line.update(delta)
                line.update({f"keys_{state}": n for state, n in states.items()})
                out.append(line)
        self._last, self._last_keys = totals, keys
        out.append(
            {
                "severity": "INFO",
                "message": "gptload instance metrics",
                "interval_seconds": interval,
                "streams_open": services.forwarder.open_streams(),
                "usage_buffer_events": len(services.usage),
                "usage_dropped": services.usage.dropped,
                "usage_rejected": services.usage.rejected,
                "breakers_open": len(services.forwarder.breakers.open_circuits(time.monotonic())),
                "rss_bytes": rss_bytes(),
                "threads": threading.active_count(),
            }
        )
        return out


def start_metrics_log(services: Services, write: Callable[[str], Any] | None = None) -> threading.Thread | None:
    """Write the lines every METRICS_LOG_SECONDS (0: off) from a daemon thread; returns it."""
    interval = services.config.metrics_log_seconds
    if interval <= 0:
        return None
    emit = write or _stdout
    builder = MetricsLog(services)

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                for line in builder.lines():
                    emit(json.dumps(line, separators=(",", ":")))
            except Exception:
                log.exception("writing the metrics log failed")

    thread = threading.Thread(target=loop, name="gptload-metrics-log", daemon=True)
    thread.start()
    return thread


def _stdout(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
