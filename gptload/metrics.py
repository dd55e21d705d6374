"""Per-instance metrics for the operator's own monitoring, rendered in the Prometheus text format (``GET /metrics``).

Two kinds of figures:

- *counted* on the way (``Metrics``): every usage event the proxy records (``observe``: requests, failures,
  attempts, retries, tokens) and the time each upstream attempt took to its response headers (``upstream_answered``).
  Recording is a lock and a few integer increments (about 1 us per request), so the proxy path does not get
  measurably slower (bench/hotpath.py);
- *read* when scraped (``gptload/web/metrics_view.py``, with ``gauge`` and ``process_families``): keys by state per
  group, open breakers, the usage buffer's depth and drops, open streams, the process's memory, CPU and threads.

Counters live in memory and start at zero when the instance starts; Prometheus (or Google Cloud Managed Service for
Prometheus) keeps one series per instance and sums them (``sum(rate(...))``). Nothing here holds a key or a secret;
label values are group names, upstream URLs, models and status codes.
"""

from __future__ import annotations

import bisect
import math
import os
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gptload.models import UsageEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds to the upstream's response headers: Gemini answers in tens of ms (errors) to minutes (long generations).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

Labels = tuple[tuple[str, str], ...]
# Per-group counters, as ``Metrics.group_totals`` names them (and the metrics log lines, gptload.metrics_log).
COUNTED = ("requests", "failures", "attempts", "retries", "prompt_tokens", "candidates_tokens", "total_tokens")


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: ``name{labels} value``."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    """A metric family: name, type (counter, gauge, histogram), help text and its samples."""

    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]


class Histogram:
    """Cumulative buckets (``le``), a sum and a count per label set, as Prometheus histograms are."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # per label set: one count per bucket, +Inf, then the sum

    def observe(self, labels: Labels, value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.buckets) + 2)
        series[bisect.bisect_left(self.buckets, value)] += 1  # the first bucket whose bound is >= value
        series[-1] += value

    def samples(self, name: str) -> list[Sample]:
        out: list[Sample] = []
        for labels, series in sorted(self._series.items()):
            running = 0.0
            for bound, count in zip((*self.buckets, math.inf), series[:-1], strict=True):
                running += count
                out.append(Sample(f"{name}_bucket", (*labels, ("le", _number(bound))), running))
            out.append(Sample(f"{name}_sum", labels, series[-1]))
            out.append(Sample(f"{name}_count", labels, running))
        return out


class _GroupCounts:
    """The counters of one group (plain attributes: the hot path does a few increments, labels are built when
    scraped)."""

    __slots__ = (
        "attempt_failures",
        "attempt_successes",
        "candidates",
        "codes",
        "failures",
        "prompt",
        "retries",
        "total",
    )

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}  # final status code -> requests
        self.failures: dict[int, int] = {}  # final status code -> requests that did not succeed
        self.attempt_successes = self.attempt_failures = self.retries = 0
        self.prompt = self.candidates = self.total = 0


class Metrics:
    """The counters of one instance. Thread-safe; cheap enough to call on every attempt (about a microsecond)."""

    def __init__(self, started_at: float | None = None) -> None:
        self.started_at = time.time() if started_at is None else started_at
        self._lock = threading.Lock()
        self._groups: dict[str, _GroupCounts] = {}
        self._latency = Histogram(LATENCY_BUCKETS)

    def observe(self, event: UsageEvent) -> None:
        """Count one usage event: an attempt (``attempt`` >= 1) and/or the end of a request (``final``)."""
        with self._lock:
            g = self._groups.get(event.group)
            if g is None:
                g = self._groups[event.group] = _GroupCounts()
            if event.attempt:
                if event.success:
                    g.attempt_successes += 1
                else:
                    g.attempt_failures += 1
                if event.attempt > 1:
                    g.retries += 1
            if event.final:
                code = event.status_code
                g.codes[code] = g.codes.get(code, 0) + 1
                if not event.success:
                    g.failures[code] = g.failures.get(code, 0) + 1
                g.prompt += event.prompt_tokens
                g.candidates += event.candidates_tokens
                g.total += event.total_tokens

    def group_totals(self) -> dict[str, dict[str, int]]:
        """Each group's counters since the instance started, named as in ``COUNTED``."""
        with self._lock:
            return {
                name: {
                    "requests": sum(g.codes.values()),
                    "failures": sum(g.failures.values()),
                    "attempts": g.attempt_successes + g.attempt_failures,
                    "retries": g.retries,
                    "prompt_tokens": g.prompt,
                    "candidates_tokens": g.candidates,
                    "total_tokens": g.total,
                }
                for name, g in self._groups.items()
            }

    def upstream_answered(self, group: str, seconds: float) -> None:
        """An upstream attempt got its response headers ``seconds`` after it started."""
        with self._lock:
            self._latency.observe((("group", group),), seconds)

    def families(self) -> list[Family]:
        """The counted families, a consistent snapshot."""
        requests: dict[Labels, float] = {}
        failures: dict[Labels, float] = {}
        attempts: dict[Labels, float] = {}
        retries: dict[Labels, float] = {}
        tokens: dict[Labels, float] = {}
        with self._lock:
            for name, g in self._groups.items():
                group = (("group", name),)
                for code, n in g.codes.items():
                    requests[(*group, ("code", str(code)))] = n
                for code, n in g.failures.items():
                    failures[(*group, ("code", str(code)))] = n
                for outcome, n in (("success", g.attempt_successes), ("failure", g.attempt_failures)):
                    if n:
                        attempts[(*group, ("outcome", outcome))] = n
                if g.retries:
                    retries[group] = g.retries
                for kind, n in (("prompt", g.prompt), ("candidates", g.candidates), ("total", g.total)):
                    if n:
                        tokens[(*group, ("type", kind))] = n
            latency = tuple(self._latency.samples("gptload_upstream_latency_seconds"))
        return [
            _family("gptload_requests_total", "counter", "Proxied requests by final status code", requests),
            _family(
                "gptload_request_failures_total",
                "counter",
                "Proxied requests that did not succeed (error answers, broken streams, refusals)",
                failures,
            ),
            _family("gptload_attempts_total", "counter", "Upstream attempts (one per key tried)", attempts),
            _family("gptload_retries_total", "counter", "Attempts after a request's first (on another key)", retries),
            _family("gptload_tokens_total", "counter", "Tokens from Google's usageMetadata", tokens),
            Family(
                "gptload_upstream_latency_seconds",
                "histogram",
                "Time from the start of an upstream attempt to its response headers",
                latency,
            ),
        ]


def _family(name: str, kind: str, help_text: str, table: dict[Labels, float]) -> Family:
    return Family(name, kind, help_text, tuple(Sample(name, labels, v) for labels, v in sorted(table.items())))


def gauge(name: str, help_text: str, samples: Iterable[tuple[Labels, float]], kind: str = "gauge") -> Family:
    return Family(name, kind, help_text, tuple(Sample(name, labels, value) for labels, value in samples))


def process_families(started_at: float) -> list[Family]:
    """The process's own figures (Prometheus' conventional ``process_*`` names)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = rss_bytes()
    families = [
        gauge(
            "process_cpu_seconds_total", "User and system CPU time", [((), usage.ru_utime + usage.ru_stime)], "counter"
        ),
        gauge("process_start_time_seconds", "When this instance started (Unix time)", [((), started_at)]),
        gauge("process_threads", "Threads of this process", [((), threading.active_count())]),
    ]
    if rss is not None:
        families.append(gauge("process_resident_memory_bytes", "Resident memory", [((), rss)]))
    return families


def rss_bytes() -> float | None:
    """Resident memory of this process (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- the text format --------------------------------------------------------------------------------------------
def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``families``."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for s in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels)
            lines.append(f"{s.name}{{{labels}}} {_number(s.value)}" if labels else f"{s.name} {_number(s.value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
